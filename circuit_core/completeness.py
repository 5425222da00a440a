"""Completeness (Wang et al. 2022, §4 and App. M): is anything that matters left out of C?

For K ⊆ C the incompleteness score is |F(C\\K) − F(M\\K)|:
- C\\K keeps the circuit minus K's heads, so K joins the ablated set (ablated at every position);
- M\\K is the intact model with only K's nodes ablated, each at its kept class position.
A complete circuit scores low for every K. K is drawn from: ∅, each whole class, random subsets
(each head in with probability ½), the paper's greedy search, and any sets the user gives.

Also here, because minimality uses them too: the node-set cache (`FCache`); the bootstrap of
differences is in `resampling.py`. The greedy search lives in `search.py`; it chooses on selection prompts
(`selection.py`) and the sets it chose are reported on the page's prompts.

Long runs report progress(done, total) in greedy steps and check should_stop() between steps; when
it says stop they return the partial result with `cancelled=True` (progress.py's contract).

    >>> c = completeness(evaluator, circuit, n_random=10, greedy_runs=10)
    >>> c.table.sort_values("incompleteness").tail()
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .ablation import NodeSet
from .metrics import Metric, scale_values
from .circuit import Circuit, CircuitError, Head, head_name, parse_head, snippet
from .criteria import interval_method, removed_edges
from .resampling import STUDENTISED, diff_intervals, mean_intervals
from .progress import Progress, StopCheck, share
from .search import Search, best_per_run, budget, greedy_search
from .selection import Selection, selection_evaluator
from .verdicts import Verdict, abs_interval, at_most, overall


# --- node sets -------------------------------------------------------------------------------------
def heads_label(K: Iterable[Head], circuit: Circuit | None = None) -> list[str]:
    """K as 'l.h' strings, in circuit order when a circuit is given (else sorted)."""
    K = set(K)
    order = [h for h in circuit.heads if h in K] if circuit is not None else []
    return [head_name(h) for h in order + sorted(K - set(order))]


def c_minus(circuit: Circuit, K: Iterable[Head], positions: str = "circuit") -> NodeSet:
    """C\\K: the circuit's nodes except K's heads, so K is ablated at every position."""
    K = set(K)
    label = "C\\{" + ",".join(heads_label(K, circuit)) + "}"
    return NodeSet(frozenset(n for n in circuit.nodes(positions) if n[:2] not in K), label=label,
                   removed_edges=frozenset(e for e in removed_edges(circuit) if e[0] not in K and e[1] not in K))


def m_minus(circuit: Circuit, K: Iterable[Head], positions: str = "circuit") -> NodeSet:
    """M\\K: the whole model except K's nodes, each ablated only at its kept class position."""
    K = set(K)
    label = "M\\{" + ",".join(heads_label(K, circuit)) + "}"
    return NodeSet(frozenset(n for n in circuit.nodes(positions) if n[:2] in K), complement=True, label=label)


def incompleteness_sets(circuit: Circuit, K: Iterable[Head], positions: str = "circuit") -> list[NodeSet]:
    """[C\\K, M\\K]."""
    K = frozenset(K)
    return [c_minus(circuit, K, positions), m_minus(circuit, K, positions)]


def parse_heads(text: str | Sequence, circuit: Circuit | None = None) -> frozenset[Head]:
    """'9.9, 10.0' (or a list of heads) -> {(9, 9), (10, 0)}; with a circuit, every head must be in it.
    Anything malformed raises CircuitError naming the K."""
    if isinstance(text, str):
        items = [t.strip() for t in text.split(",") if t.strip()]
    elif isinstance(text, (list, tuple, set, frozenset)):
        items = list(text)
    else:
        raise CircuitError(f"K must be heads like '9.9, 10.0', not {snippet(text)}.")
    try:
        K = frozenset(parse_head(t) for t in items)
    except CircuitError as e:
        raise CircuitError(f"K {snippet(text, 60)}: {e}") from None
    if circuit is not None:
        outside = [head_name(h) for h in K if h not in circuit.heads]
        if outside:
            raise CircuitError(f"K must be a subset of the circuit; not in it: {', '.join(sorted(outside))}.")
    return K


def random_subsets(heads: Sequence[Head], count: int, seed: int) -> list[frozenset]:
    """Up to `count` distinct, non-empty subsets of `heads`, each head in with probability ½ (seeded).

    A small circuit has fewer such subsets (2^|C| − 1) than may be asked: then every one is returned
    once and the caller sees fewer than `count`.
    """
    rng = np.random.default_rng([seed, 1])
    possible = 2 ** len(heads) - 1 if len(heads) < 60 else count
    out: list[frozenset] = []
    seen: set = set()
    while len(out) < min(count, possible):
        K = frozenset(h for h, t in zip(heads, rng.random(len(heads)) < 0.5) if t)
        if K and K not in seen:
            seen.add(K)
            out.append(K)
    return out


# --- evaluation --------------------------------------------------------------------------------------
class FCache:
    """Per-prompt logit differences of node sets, as float64 numpy [len(node_sets), N].

    The evaluator memoises every set it has computed, so sets that recur (∅, a class that a random
    draw repeats, greedy revisits) cost nothing; `get` sends each call's sets in ONE `logit_diffs`
    call, so a step's sets share the prefix tree.
    """

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def get(self, node_sets: Sequence[NodeSet], progress: Progress | None = None) -> np.ndarray:
        return self.evaluator.logit_diffs(list(node_sets), progress).numpy()


def abs_columns(d_lo: np.ndarray, d_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Display intervals of |d| row by row, from the signed ones."""
    pairs = [abs_interval(lo, hi) for lo, hi in zip(d_lo, d_hi)]
    return np.array([p[0] for p in pairs], dtype=float), np.array([p[1] for p in pairs], dtype=float)


def relative_threshold(pct: float, model: np.ndarray, n_boot: int, seed: int,
                       name: str = "F(M)") -> tuple[float, float, str]:
    """pct % of |F(M)| as an absolute threshold (t, t, ""). When F(M)'s 95% interval includes 0, |F(M)| is
    known only to lie in [0, max(|lo|, |hi|)], so the threshold lies in [0, t_hi]: (0, t_hi, why), and a
    verdict stands only if it holds for every threshold in that range (`verdicts.at_least` / `at_most`)."""
    lo, hi = mean_intervals(model[None, :], n_boot, seed)
    if lo[0] <= 0 <= hi[0]:
        return 0.0, pct / 100 * max(-lo[0], hi[0]), (
            f"{name} is indistinguishable from 0 (95% interval [{lo[0]:.3f}, {hi[0]:.3f}]), so a threshold in % of {name} "
            "is known only up to a range: verdicts hold for every threshold in it")
    t = pct / 100 * abs(float(model.mean()))
    return t, t, ""


def replicate_values(evaluator, node_sets: Sequence[NodeSet], progress: Progress | None = None,
                     should_stop: StopCheck | None = None) -> list[np.ndarray]:
    """[rows, N] per-prompt values of `node_sets` under each reference replicate of the evaluator (none
    when the methodology has no replicates): `Evaluator.replicate_diffs`."""
    return evaluator.replicate_diffs(node_sets, progress, should_stop)


def pct_of(value, f_model: float):
    """value as % of |F(M)| (|·| so a sign flip of F(M) does not flip the scale); or of any scale given."""
    return 100 * np.asarray(value) / abs(f_model) if f_model != 0 else np.full(np.shape(value), np.nan)


def metric_scale(evaluator, cache: "FCache", model: np.ndarray) -> tuple[np.ndarray, dict]:
    """Per-prompt values whose mean's magnitude thresholds in % refer to (f_M; under KL, where F(M) = 0,
    f_∅ − f_M), and the settings that say so (`scale`: its name, `scale_value`: |mean|)."""
    metric = getattr(evaluator.methodology, "metric", Metric.LOGIT_DIFF.value)
    empty = cache.get([NodeSet.empty()])[0] if Metric(metric) is Metric.KL else None
    values = scale_values(metric, model, empty)
    return values, {"metric": metric, "scale": Metric(metric).scale_name, "scale_value": abs(float(values.mean()))}


# --- greedy search: search.py; the trace as a table -------------------------------------------
def trace_frame(trace: list[dict], circuit: Circuit) -> pd.DataFrame:
    df = pd.DataFrame(trace)
    if len(df):
        df["size"] = df["K"].map(len)
        df["K"] = df["K"].map(lambda K: heads_label(K, circuit))
    return df


def frame_records(df: pd.DataFrame) -> list[dict]:
    """JSON-ready rows (numpy types, NaN and <NA> become plain values / null)."""
    return json.loads(df.to_json(orient="records", double_precision=15, force_ascii=False))


# --- completeness ------------------------------------------------------------------------------------
TOLERANCE_PCT = 10.0  # a K passes when |F(C\K) − F(M\K)| stays within this % of |F(M)| over its whole interval


class Cols:
    """The columns of `Completeness.table`, which are also the keys of a record's K_sets rows."""

    FAMILY = "family"  # empty / class / random / greedy / user
    NAME = "name"
    K = "K"  # the heads, as 'l.h' labels
    SIZE = "size"
    F_C_MINUS_K = "F_C_minus_K"
    F_C_LO, F_C_HI = "F_C_lo", "F_C_hi"
    F_M_MINUS_K = "F_M_minus_K"
    F_M_LO, F_M_HI = "F_M_lo", "F_M_hi"
    D, D_LO, D_HI = "d", "d_lo", "d_hi"  # F(C\K) − F(M\K), signed, and its interval
    INCOMPLETENESS = "incompleteness"  # |d|
    INCOMPLETENESS_PCT = "incompleteness_pct"  # |d| as % of |F(M)|
    CI_LOW, CI_HIGH = "ci_low", "ci_high"  # |d|'s display interval
    VERDICT = "verdict"
    SELECTION_INCOMPLETENESS = "selection_incompleteness"  # greedy K: |d| on the prompts that chose it
    RUN, STEP = "run", "step"
    INT = (RUN, STEP)  # nullable integers


def _frame(rows: list[dict], int_cols=()) -> pd.DataFrame:
    """A table back from its record rows (`frame_records`): heads lists kept, NaN for null."""
    df = pd.DataFrame([{k: v for k, v in r.items() if k != "per_prompt"} for r in rows])
    for c in df.columns:
        if c in int_cols:
            df[c] = pd.array(df[c], dtype="Int64")
        elif df[c].dtype == object and df[c].map(lambda v: v is None or isinstance(v, (int, float))).all():
            df[c] = df[c].astype(float)
    return df


def _rows_per_prompt(rows: list[dict], names: tuple[str, ...], n: int) -> dict[str, np.ndarray]:
    return {k: np.asarray([r.get("per_prompt", {}).get(k, []) for r in rows], dtype=float).reshape(len(rows), -1)
            if rows else np.zeros((0, n)) for k in names}


class SettingsFigures:
    """What a criterion's `settings` say, by name (Completeness and Minimality share them)."""

    settings: dict

    @property
    def interval_method(self) -> str:
        return self.settings.get("interval_method", "")

    @property
    def metric(self) -> str:
        return self.settings.get("metric", Metric.LOGIT_DIFF.value)

    @property
    def scale(self) -> float:
        """What % figures are a share of: |F(M)|, or under KL F(∅) − F(M) (a record without it: |F(M)|)."""
        return float(self.settings.get("scale_value", abs(self.F_model)))

    @property
    def scale_name(self) -> str:
        return self.settings.get("scale", "|F(M)|")

    @property
    def no_verdict(self) -> str:
        """Why the tolerance or threshold in % of F(M) is known only up to a range ("" when it is a number)."""
        return self.settings.get("no_verdict", "")


@dataclass(frozen=True, eq=False)
class Completeness(SettingsFigures):
    """One row per K in `table`; per_prompt['C_minus_K'][i], ['M_minus_K'][i] belong to table row i.

    Columns: d = F(C\\K) − F(M\\K) (signed) with its 95% interval d_lo, d_hi; incompleteness = |d|
    with the display interval ci_low, ci_high; verdict against tolerance_pct % of |F(M)| (passes /
    fails / undecided, from the interval). Greedy rows were chosen on selection prompts: their score
    there is `selection_incompleteness` (a winner's-curse figure, shown as such); every other column is
    on the report prompts.
    """

    table: pd.DataFrame
    per_prompt: dict[str, np.ndarray]  # C_minus_K / M_minus_K: [rows, N]; model: [N]
    F_model: float
    greedy_trace: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: dict = field(default_factory=dict)
    cancelled: bool = False

    def best(self, family: str | None = None) -> pd.Series | None:
        """The row with the largest incompleteness (within one family if given); None if there is none."""
        t = self.table if family is None else self.table[self.table[Cols.FAMILY] == family]
        return t.loc[t[Cols.INCOMPLETENESS].idxmax()] if len(t) else None

    @property
    def verdict(self) -> Verdict:
        """Fails if any K fails, passes if every K passes, else undecided."""
        return overall(self.table[Cols.VERDICT]) if len(self.table) else Verdict.UNDECIDED

    @property
    def tolerance_pct(self) -> float:
        return self.settings.get("tolerance_pct", TOLERANCE_PCT)

    @property
    def n_random_drawn(self) -> int | None:
        """Random K sets drawn (fewer than asked when the circuit has fewer distinct subsets)."""
        return self.settings.get("n_random_drawn")

    def to_dict(self) -> dict:
        rows = frame_records(self.table)
        for i, row in enumerate(rows):
            row["per_prompt"] = {"C_minus_K": self.per_prompt["C_minus_K"][i].tolist(),
                                 "M_minus_K": self.per_prompt["M_minus_K"][i].tolist()}
        return {"F_model": self.F_model, "settings": self.settings, "cancelled": self.cancelled,
                "verdict": self.verdict.value, "K_sets": rows, "greedy_trace": frame_records(self.greedy_trace),
                "per_prompt_model": self.per_prompt["model"].tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Completeness":
        """A result from its `to_dict()` (a run record's results.completeness)."""
        rows, model = d.get("K_sets", []), np.asarray(d.get("per_prompt_model", []), dtype=float)
        per_prompt = {**_rows_per_prompt(rows, ("C_minus_K", "M_minus_K"), len(model)), "model": model}
        return cls(_frame(rows, Cols.INT), per_prompt, float(d.get("F_model", np.nan)),
                   pd.DataFrame(d.get("greedy_trace", [])), dict(d.get("settings", {})), bool(d.get("cancelled", False)))


def greedy_k_sets(selection_ev, circuit: Circuit, k: int, steps: int, runs: int, seed: int,
                  progress: Progress | None = None, should_stop: StopCheck | None = None):
    """The paper's greedy search for the worst K, run on the selection evaluator's prompts.
    Returns ([(run, step, K, selection score)] — each run's best K, deduplicated — , trace, cancelled)."""
    pos = selection_ev.methodology.positions
    search = Search(pool=list(circuit.heads), sets=lambda K: incompleteness_sets(circuit, K, pos),
                    score=lambda m: abs(m[0] - m[1]), columns=("F_C_minus_K", "F_M_minus_K"))
    trace, cancelled = greedy_search(FCache(selection_ev), [search], k, steps, runs, seed, progress, should_stop)
    chosen, seen = [], set()
    for (_, run), row in sorted(best_per_run(trace).items()):
        if row["K"] not in seen:
            seen.add(row["K"])
            chosen.append((run, row["step"], row["K"], row["score"]))
    return chosen, trace, cancelled


def completeness(evaluator, circuit: Circuit, *, classes: bool = True, n_random: int = 10,
                 user_k: Sequence = (), greedy_k: int = 10, greedy_steps: int = 10, greedy_runs: int = 10,
                 seed: int | None = None, progress: Progress | None = None,
                 should_stop: StopCheck | None = None, reference_noise: bool = True,
                 selection: Selection | None = None, selection_ev=None,
                 tolerance_pct: float = TOLERANCE_PCT) -> Completeness:
    """d = F(C\\K) − F(M\\K) for K = ∅, each class (classes=True), n_random random subsets, the greedy
    search's sets (greedy_runs=0 turns it off) and each K in user_k ('l.h,l.h' strings or head lists).

    The greedy search chooses on selection prompts (`selection_ev`, or one built from `selection`:
    by default N = 40 at the report seed + 10,000) and never stops early; each run's best K is then
    evaluated here, on the report prompts. Its full trace (every K scored, on selection prompts) is in
    `greedy_trace`. seed (the search's draws) defaults to the methodology's seed.
    progress(done, total) counts steps: 1 for the fixed families, then one per greedy step.
    """
    meth = evaluator.methodology
    pos = meth.positions
    seed = meth.seed if seed is None else seed
    heads = circuit.heads
    cache = FCache(evaluator)

    # Fixed families: every K known up front, evaluated in one batched call with M.
    ks = [("empty", "∅", frozenset(), None, None, np.nan)]
    if classes:
        ks += [("class", c.name, frozenset(c.heads), None, None, np.nan) for c in circuit.classes]
    for j, K in enumerate(random_subsets(heads, n_random, seed)):
        ks.append(("random", f"random {j + 1}", K, None, None, np.nan))
    for j, K in enumerate(user_k):
        ks.append(("user", f"user {j + 1}", parse_heads(K, circuit), None, None, np.nan))

    do_greedy = greedy_runs > 0 and greedy_steps > 0
    # One bar over every stage, in node sets: the fixed families, one unit per greedy step, then the
    # reference noise (each set again, under the replicates).
    fixed_sets = [NodeSet.model()] + [s for _, _, K, *_ in ks for s in incompleteness_sets(circuit, K, pos)]
    n_fixed, pending = len(fixed_sets), evaluator.pending(fixed_sets)
    n_greedy = greedy_steps if do_greedy else 0
    n_noise = 2 * (len(ks) + (greedy_runs if do_greedy else 0)) if reference_noise and evaluator.replicates else 0
    total = n_fixed + n_greedy + n_noise
    if progress is not None:
        progress(n_fixed - pending, total)
    cache.get(fixed_sets, share(progress, n_fixed - pending, pending, total))
    if progress is not None:
        progress(n_fixed, total)

    trace, cancelled, sel_info = [], False, None
    if do_greedy:
        sel_ev = selection_ev if selection_ev is not None else selection_evaluator(evaluator.model, meth, selection)
        if sel_ev.methodology.seed == meth.seed:
            raise ValueError("The greedy search must choose on prompts apart from the report prompts "
                             f"(selection seed {sel_ev.methodology.seed} = report seed).")
        chosen, trace, cancelled = greedy_k_sets(
            sel_ev, circuit, greedy_k, greedy_steps, greedy_runs, seed,
            progress=(lambda d, t: progress(n_fixed + d, n_fixed + t + n_noise)) if progress else None,
            should_stop=should_stop)
        ks += [("greedy", f"greedy run {run + 1}", K, run + 1, step, score) for run, step, K, score in chosen]
        sel_info = {"n": sel_ev.methodology.n, "seed": sel_ev.methodology.seed,
                    "budget": budget(greedy_k, greedy_steps, greedy_runs)}

    model = cache.get([NodeSet.model()])[0]
    f_model = float(model.mean())
    scale, scale_settings = metric_scale(evaluator, cache, model)
    c = cache.get([c_minus(circuit, K, pos) for _, _, K, *_ in ks])
    m = cache.get([m_minus(circuit, K, pos) for _, _, K, *_ in ks])
    d = c.mean(1) - m.mean(1)
    reps = []
    if reference_noise and evaluator.replicates and not cancelled:  # a stopped run returns at once
        sets = [c_minus(circuit, K, pos) for _, _, K, *_ in ks] + [m_minus(circuit, K, pos) for _, _, K, *_ in ks]
        noise_progress = share(progress, n_fixed + n_greedy, len(sets), max(total, n_fixed + n_greedy + len(sets)))
        reps = [(r[:len(ks)], r[len(ks):]) for r in replicate_values(evaluator, sets, noise_progress, should_stop)]
    d_lo, d_hi = diff_intervals(c, m, meth.bootstrap, meth.seed, replicates=reps)
    lo, hi = abs_columns(d_lo, d_hi)
    c_lo, c_hi = mean_intervals(c, meth.bootstrap, meth.seed, replicates=[a for a, _ in reps])
    m_lo, m_hi = mean_intervals(m, meth.bootstrap, meth.seed, replicates=[b for _, b in reps])
    tol, tol_hi, why = relative_threshold(tolerance_pct, scale, meth.bootstrap, meth.seed,
                                          scale_settings["scale"].strip("|"))
    table = pd.DataFrame({
        Cols.FAMILY: [f for f, *_ in ks],
        Cols.NAME: [name for _, name, *_ in ks],
        Cols.K: [heads_label(K, circuit) for _, _, K, *_ in ks],
        Cols.SIZE: [len(K) for _, _, K, *_ in ks],
        Cols.F_C_MINUS_K: c.mean(1),
        Cols.F_C_LO: c_lo, Cols.F_C_HI: c_hi,
        Cols.F_M_MINUS_K: m.mean(1),
        Cols.F_M_LO: m_lo, Cols.F_M_HI: m_hi,
        Cols.D: d, Cols.D_LO: d_lo, Cols.D_HI: d_hi,
        Cols.INCOMPLETENESS: np.abs(d),
        Cols.INCOMPLETENESS_PCT: pct_of(np.abs(d), scale_settings["scale_value"]),
        Cols.CI_LOW: lo,
        Cols.CI_HIGH: hi,
        Cols.VERDICT: [at_most(a, b, tol, tol_hi).value for a, b in zip(d_lo, d_hi)],
        Cols.SELECTION_INCOMPLETENESS: [s for *_, s in ks],
        Cols.RUN: pd.array([r for *_, r, _, _ in ks], dtype="Int64"),
        Cols.STEP: pd.array([s for *_, s, _ in ks], dtype="Int64"),
    })
    tr = trace_frame(trace, circuit)
    if len(tr):
        tr = tr.drop(columns="search").rename(columns={"score": "incompleteness"})
        tr["run"] += 1
    settings = {"classes": classes, "n_random": n_random, "n_random_drawn": sum(f == "random" for f, *_ in ks),
                "user_k": [heads_label(parse_heads(K), circuit) for K in user_k],
                "greedy_k": greedy_k, "greedy_steps": greedy_steps, "greedy_runs": greedy_runs, "seed": seed,
                "selection": sel_info, "tolerance_pct": tolerance_pct, "no_verdict": why,
                "tolerance_abs": [tol, tol_hi], **scale_settings,
                "bootstrap": meth.bootstrap, "interval_method": interval_method(meth, bool(reps)) + STUDENTISED}
    return Completeness(table, {"C_minus_K": c, "M_minus_K": m, "model": model},
                        f_model, tr, settings, cancelled)


def completeness_in_stages(evaluator, circuit: Circuit, n_random: int = 10, progress: Progress | None = None,
                           should_stop: StopCheck | None = None, tolerance_pct: float = TOLERANCE_PCT):
    """The fixed families as they fill in: yields the result for ∅, then ∅ and each class, then with
    the random sets too, then (with reference replicates) the same with the reference noise in the
    intervals. The evaluator memoises node sets, so no stage recomputes the one before."""
    stages = [dict(classes=False, n_random=0), dict(classes=True, n_random=0), dict(classes=True, n_random=n_random)]
    # every stage reports against the whole job's total: the last stage's sets, then their reference noise
    last = 1 + 2 * (1 + len(circuit.classes) + len(random_subsets(circuit.heads, n_random, evaluator.methodology.seed)))
    grand = last + (last - 1 if evaluator.replicates else 0)
    whole = (lambda d, t: progress(d, max(t, grand))) if progress is not None else None
    for stage in stages:
        result = completeness(evaluator, circuit, greedy_runs=0, progress=whole, should_stop=should_stop,
                              reference_noise=False, tolerance_pct=tolerance_pct, **stage)
        yield result
        if result.cancelled:
            return
    if evaluator.replicates:
        yield completeness(evaluator, circuit, greedy_runs=0, progress=whole, should_stop=should_stop,
                           reference_noise=True, tolerance_pct=tolerance_pct, **stages[-1])


__all__ = ["Completeness", "Cols", "completeness", "completeness_in_stages", "c_minus", "m_minus", "incompleteness_sets", "parse_heads",
           "heads_label", "random_subsets", "FCache", "Search", "greedy_search", "greedy_k_sets",
           "abs_columns", "TOLERANCE_PCT",
           "replicate_values"]
