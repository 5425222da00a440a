"""Completeness (Wang et al. 2022, §4 and App. M): is anything that matters left out of C?

For K ⊆ C the incompleteness score is |F(C\\K) − F(M\\K)|:
- C\\K keeps the circuit minus K's heads, so K joins the ablated set (ablated at every position);
- M\\K is the intact model with only K's nodes ablated, each at its kept class position.
A complete circuit scores low for every K. K is drawn from: ∅, each whole class, random subsets
(each head in with probability ½), the paper's greedy search, and any sets the user gives.

Also here, because minimality uses them too: the node-set cache (`FCache`) and the lockstep greedy
search (`Search`, `greedy_search`).

Long runs report progress(done, total) in greedy steps and check should_stop() between steps; when
it says stop they return the partial result with `cancelled=True` (they do not raise).

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
from .circuit import Circuit, CircuitError, Head, head_name, parse_head, snippet
from .criteria import interval_method

Progress = Callable[[int, int], None]
StopCheck = Callable[[], bool]


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
    return NodeSet(frozenset(n for n in circuit.nodes(positions) if n[:2] not in K), label=label)


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


def _resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n]: each row the share of each prompt in one bootstrap resample."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)]) / n


def _boot_means(arrays: Sequence[np.ndarray], n_boot: int, seed: int, replicates: Sequence[Sequence[np.ndarray]] = ()):
    """Bootstrap draws of the row means of each [rows, N] array: [rows, n_boot] each.

    One draw = one weight vector over prompts, shared by every array and row (paired). With reference
    `replicates` (one tuple of arrays per replicate, the same sets under another draw of the ablation
    values), draw j takes its values from replicate j mod B: a joint bootstrap over prompts and
    reference set. Replicates are shifted together so their average matches the full reference set's
    (resampling leaves fewer distinct references, which lowers F); they keep their spread, the noise.
    """
    rows, n = arrays[0].shape
    weights = _resample_weights(n, n_boot, seed)
    if not replicates:
        return [a @ weights.T for a in arrays]
    shift = [np.mean([r[i].mean(1) for r in replicates], axis=0) - a.mean(1) for i, a in enumerate(arrays)]
    out = [np.empty((rows, n_boot)) for _ in arrays]
    for k, rep in enumerate(replicates):
        w = weights[k::len(replicates)]
        for i, r in enumerate(rep):
            out[i][:, k::len(replicates)] = (r - shift[i][:, None]) @ w.T
    return out


def abs_diff_intervals(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int, level: float = 0.95,
                       replicates: Sequence[tuple[np.ndarray, np.ndarray]] = ()):
    """95% percentile intervals of |mean(a) − mean(b)| per row, resampling prompts (paired) and, with
    `replicates` [(a_k, b_k)], the reference set too (see `_boot_means`).

    a, b: [rows, N] per-prompt values. One resample = one weight vector over prompts, shared by rows.
    """
    rows, n = a.shape
    if n_boot <= 0 or rows == 0:
        return np.full(rows, np.nan), np.full(rows, np.nan)
    ma, mb = _boot_means([a, b], n_boot, seed, replicates)
    lo, hi = np.percentile(np.abs(ma - mb), [(1 - level) / 2 * 100, (1 + level) / 2 * 100], axis=1)
    return lo, hi


def mean_intervals(a: np.ndarray, n_boot: int, seed: int, level: float = 0.95, replicates: Sequence[np.ndarray] = ()):
    """95% percentile intervals of mean(a) per row, resampling prompts (the same draws as above) and,
    with `replicates` [a_k], the reference set."""
    rows, n = a.shape
    if n_boot <= 0 or rows == 0:
        return np.full(rows, np.nan), np.full(rows, np.nan)
    (stat,) = _boot_means([a], n_boot, seed, [(r,) for r in replicates])
    return tuple(np.percentile(stat, [(1 - level) / 2 * 100, (1 + level) / 2 * 100], axis=1))


def replicate_values(evaluator, node_sets: Sequence[NodeSet], progress: Progress | None = None,
                     should_stop: StopCheck | None = None) -> list[np.ndarray]:
    """[rows, N] per-prompt values of `node_sets` under each reference replicate of the evaluator (none
    when the methodology has no replicates). Each replicate costs one more evaluation of the sets."""
    reps = evaluator.replicates
    out = []
    for i, rep in enumerate(reps):
        out.append(rep.logit_diffs(list(node_sets), should_stop=should_stop).numpy())
        if progress is not None:
            progress(i + 1, len(reps))
    return out


def pct_of(value, f_model: float):
    """value as % of |F(M)| (|·| so a sign flip of F(M) does not flip the scale)."""
    return 100 * np.asarray(value) / abs(f_model) if f_model != 0 else np.full(np.shape(value), np.nan)


# --- greedy search -----------------------------------------------------------------------------------
@dataclass
class Search:
    """One greedy search: K grows from ∅ with heads from `pool`.

    sets(K) lists the node sets the score needs; score(means) turns their mean F into the score
    (e.g. |F(C\\K) − F(M\\K)|); columns names those means in the trace.
    """

    pool: list[Head]
    sets: Callable[[frozenset], list[NodeSet]]
    score: Callable[[np.ndarray], float]
    columns: tuple[str, ...]


@dataclass(eq=False)  # eq=False: hashable by identity, one dict key per run
class _Run:
    search: int
    run: int
    rng: np.random.Generator
    K: frozenset
    score: float


def greedy_search(cache: FCache, searches: Sequence[Search], k: int = 10, steps: int = 10, runs: int = 10,
                  seed: int = 0, progress: Progress | None = None, should_stop: StopCheck | None = None):
    """The paper's greedy search (App. M), every (search, run) in lockstep.

    Each run starts at K = ∅. Each step samples k candidates v from pool \\ K, scores K ∪ {v} for all of
    them and moves to the best if it beats the run's current score; otherwise the run stops. All
    candidates of all live runs of a step go to the evaluator in one call. Run r of search i draws
    from np.random.default_rng([seed, i, r]), so results do not depend on batching.

    Returns (trace, cancelled). trace: one row per scored K (search, run, step, K, means, score,
    accepted); step 0 is ∅. Along each run the accepted scores strictly increase, so the last
    accepted K of a run scores at least as high as every K that run saw.
    """
    trace: list[dict] = []

    def score_all(proposals):  # [(search index, K)] -> [(means of its sets, score)], one evaluator call
        means = cache.get([s for i, K in proposals for s in searches[i].sets(K)]).mean(1)
        out, at = [], 0
        for i, _ in proposals:
            m = means[at : at + len(searches[i].columns)]
            at += len(m)
            out.append((m, float(searches[i].score(m))))
        return out

    def record(run, step, K, m, score, accepted):
        trace.append({"search": run.search, "run": run.run, "step": step, "K": K,
                      **dict(zip(searches[run.search].columns, map(float, m))), "score": score, "accepted": accepted})

    live = []
    for i, (m, score) in enumerate(score_all([(i, frozenset()) for i in range(len(searches))])):
        for r in range(runs):
            live.append(_Run(i, r, np.random.default_rng([seed, i, r]), frozenset(), score))
            record(live[-1], 0, frozenset(), m, score, True)
    cancelled = False
    for step in range(1, steps + 1):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        proposals = []  # (run, K ∪ {v})
        for run in live:
            rest = [h for h in searches[run.search].pool if h not in run.K]
            picks = run.rng.choice(len(rest), size=min(k, len(rest)), replace=False)
            proposals += [(run, run.K | {rest[j]}) for j in picks]
        results = score_all([(run.search, K) for run, K in proposals])
        best: dict[_Run, tuple] = {}  # each run's best candidate (the first one on ties)
        for (run, K), (_, score) in zip(proposals, results):
            if run not in best or score > best[run][1]:
                best[run] = (K, score)
        for (run, K), (m, score) in zip(proposals, results):
            record(run, step, K, m, score, best[run][0] == K and score > run.score)
        live = []
        for run, (K, score) in best.items():
            if score > run.score:  # moves on; a run whose best does not beat its score stops
                run.K, run.score = K, score
                live.append(run)
        if progress is not None:
            progress(step if live else steps, steps)
        if not live:
            break
    return trace, cancelled


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
@dataclass
class Completeness:
    """One row per K in `table`; per_prompt['C_minus_K'][i], ['M_minus_K'][i] belong to table row i."""

    table: pd.DataFrame
    per_prompt: dict[str, np.ndarray]  # C_minus_K / M_minus_K: [rows, N]; model: [N]
    F_model: float
    greedy_trace: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: dict = field(default_factory=dict)
    cancelled: bool = False

    def best(self, family: str | None = None) -> pd.Series | None:
        """The row with the largest incompleteness (within one family if given); None if there is none."""
        t = self.table if family is None else self.table[self.table.family == family]
        return t.loc[t.incompleteness.idxmax()] if len(t) else None

    def to_dict(self) -> dict:
        rows = frame_records(self.table)
        for i, row in enumerate(rows):
            row["per_prompt"] = {"C_minus_K": self.per_prompt["C_minus_K"][i].tolist(),
                                 "M_minus_K": self.per_prompt["M_minus_K"][i].tolist()}
        return {"F_model": self.F_model, "settings": self.settings, "cancelled": self.cancelled,
                "K_sets": rows, "greedy_trace": frame_records(self.greedy_trace),
                "per_prompt_model": self.per_prompt["model"].tolist()}


def completeness(evaluator, circuit: Circuit, *, classes: bool = True, n_random: int = 10,
                 user_k: Sequence = (), greedy_k: int = 10, greedy_steps: int = 10, greedy_runs: int = 10,
                 seed: int | None = None, progress: Progress | None = None,
                 should_stop: StopCheck | None = None, reference_noise: bool = True) -> Completeness:
    """|F(C\\K) − F(M\\K)| for K = ∅, each class (classes=True), n_random random subsets, the greedy
    search's sets (greedy_runs=0 turns it off) and each K in user_k ('l.h,l.h' strings or head lists).

    Greedy keeps every K a run accepted (intermediate ones included), deduplicated; its full trace
    (every K scored) is in `greedy_trace`. seed defaults to the methodology's seed.
    progress(done, total) counts steps: 1 for the fixed families, then one per greedy step.
    """
    meth = evaluator.methodology
    pos = meth.positions
    seed = meth.seed if seed is None else seed
    heads = circuit.heads
    cache = FCache(evaluator)

    # Fixed families: every K known up front, evaluated in one batched call with M.
    ks = [("empty", "∅", frozenset(), None, None)]
    if classes:
        ks += [("class", c.name, frozenset(c.heads), None, None) for c in circuit.classes]
    for j, K in enumerate(random_subsets(heads, n_random, seed)):
        ks.append(("random", f"random {j + 1}", K, None, None))
    for j, K in enumerate(user_k):
        ks.append(("user", f"user {j + 1}", parse_heads(K, circuit), None, None))

    do_greedy = greedy_runs > 0 and greedy_steps > 0
    total = 1 + (greedy_steps if do_greedy else 0)
    if progress is not None:
        progress(0, total)
    cache.get([NodeSet.model()] + [s for _, _, K, _, _ in ks for s in incompleteness_sets(circuit, K, pos)])
    if progress is not None:
        progress(1, total)

    trace, cancelled = [], False
    if do_greedy:
        search = Search(pool=list(heads), sets=lambda K: incompleteness_sets(circuit, K, pos),
                        score=lambda m: abs(m[0] - m[1]), columns=("F_C_minus_K", "F_M_minus_K"))
        trace, cancelled = greedy_search(cache, [search], greedy_k, greedy_steps, greedy_runs, seed,
                                         progress=(lambda d, t: progress(1 + d, 1 + t)) if progress else None,
                                         should_stop=should_stop)
        seen = set()
        for row in trace:  # the best sets are the accepted ones, intermediates included
            if row["accepted"] and row["step"] > 0 and row["K"] not in seen:
                seen.add(row["K"])
                ks.append(("greedy", f"greedy run {row['run'] + 1} step {row['step']}", row["K"],
                           row["run"] + 1, row["step"]))

    f_model = float(cache.get([NodeSet.model()])[0].mean())
    c = cache.get([c_minus(circuit, K, pos) for _, _, K, _, _ in ks])
    m = cache.get([m_minus(circuit, K, pos) for _, _, K, _, _ in ks])
    inc = np.abs(c.mean(1) - m.mean(1))
    reps = []
    if reference_noise and evaluator.replicates:
        sets = [c_minus(circuit, K, pos) for _, _, K, _, _ in ks] + [m_minus(circuit, K, pos) for _, _, K, _, _ in ks]
        reps = [(r[:len(ks)], r[len(ks):]) for r in replicate_values(evaluator, sets, should_stop=should_stop)]
    lo, hi = abs_diff_intervals(c, m, meth.bootstrap, meth.seed, replicates=reps)
    c_lo, c_hi = mean_intervals(c, meth.bootstrap, meth.seed, replicates=[a for a, _ in reps])
    m_lo, m_hi = mean_intervals(m, meth.bootstrap, meth.seed, replicates=[b for _, b in reps])
    table = pd.DataFrame({
        "family": [f for f, *_ in ks],
        "name": [name for _, name, *_ in ks],
        "K": [heads_label(K, circuit) for _, _, K, _, _ in ks],
        "size": [len(K) for _, _, K, _, _ in ks],
        "F_C_minus_K": c.mean(1),
        "F_C_lo": c_lo, "F_C_hi": c_hi,
        "F_M_minus_K": m.mean(1),
        "F_M_lo": m_lo, "F_M_hi": m_hi,
        "incompleteness": inc,
        "incompleteness_pct": pct_of(inc, f_model),
        "ci_low": lo,
        "ci_high": hi,
        "run": pd.array([r for *_, r, _ in ks], dtype="Int64"),
        "step": pd.array([s for *_, s in ks], dtype="Int64"),
    })
    tr = trace_frame(trace, circuit)
    if len(tr):
        tr = tr.drop(columns="search").rename(columns={"score": "incompleteness"})
        tr["run"] += 1
    settings = {"classes": classes, "n_random": n_random, "n_random_drawn": sum(f == "random" for f, *_ in ks),
                "user_k": [heads_label(parse_heads(K), circuit) for K in user_k],
                "greedy_k": greedy_k, "greedy_steps": greedy_steps, "greedy_runs": greedy_runs, "seed": seed,
                "bootstrap": meth.bootstrap, "interval_method": interval_method(meth, bool(reps))}
    return Completeness(table, {"C_minus_K": c, "M_minus_K": m, "model": cache.get([NodeSet.model()])[0]},
                        f_model, tr, settings, cancelled)


def completeness_in_stages(evaluator, circuit: Circuit, n_random: int = 10, progress: Progress | None = None,
                           should_stop: StopCheck | None = None):
    """The fixed families as they fill in: yields the result for ∅, then ∅ and each class, then with
    the random sets too, then (with reference replicates) the same with the reference noise in the
    intervals. The evaluator memoises node sets, so no stage recomputes the one before."""
    stages = [dict(classes=False, n_random=0), dict(classes=True, n_random=0), dict(classes=True, n_random=n_random)]
    for stage in stages:
        yield completeness(evaluator, circuit, greedy_runs=0, progress=progress, should_stop=should_stop,
                           reference_noise=False, **stage)
    if evaluator.replicates:
        yield completeness(evaluator, circuit, greedy_runs=0, progress=progress, should_stop=should_stop,
                           reference_noise=True, **stages[-1])


__all__ = ["Completeness", "completeness", "completeness_in_stages", "c_minus", "m_minus", "incompleteness_sets", "parse_heads",
           "heads_label", "random_subsets", "FCache", "Search", "greedy_search", "abs_diff_intervals", "mean_intervals",
           "replicate_values"]
