"""Minimality (Wang et al. 2022, §4 and App. K): does every head of C matter?

For each head v there should be some K ⊆ C\\{v} with a large |F(C\\(K∪{v})) − F(C\\K)|: knocking v
out on top of K must move F. The score is shown as % of F(M); against a threshold (default 1%) each head
gets a verdict from the interval of the signed difference: passes (beyond ±threshold throughout),
fails (within throughout) or undecided. K per head comes from:
- "file":   the circuit file's minimality_k (the paper's Fig. 20 sets for the IOI circuit); a head the
            file does not list falls back to the class rule, and `k_source` says which rule each used;
- "class":  K = the rest of v's class (the paper's choice for most classes);
- "search": the paper's greedy search for the K maximising the score (`search.py`): from K = ∅,
            each step samples k candidates from C\\(K∪{v}) and moves to the best, for every step
            (no early stop); all heads searched in lockstep with one evaluator call per step; the best
            K visited per head is kept. It chooses on selection prompts and is scored on the report's.

A search reports progress(done, total) per step and checks should_stop() between steps; on stop it
returns the partial result (each head's best K so far) with `cancelled=True` rather than raising.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from .ablation import NodeSet
from .circuit import Circuit, Head, head_name
from .completeness import (FCache, SettingsFigures, _frame, _rows_per_prompt, abs_columns, c_minus, frame_records, heads_label,
                           metric_scale, pct_of, relative_threshold, replicate_values, trace_frame)
from .criteria import interval_method
from .resampling import STUDENTISED, diff_intervals
from .progress import Progress, StopCheck, share
from .search import Search, best_per_run, budget, greedy_search
from .selection import Selection, selection_evaluator
from .verdicts import Verdict, at_least, overall

K_SOURCES = ("file", "class", "search")


def class_rule_k(circuit: Circuit, v: Head) -> frozenset[Head]:
    """K = the rest of v's class."""
    return frozenset(circuit.class_of(v).heads) - {v}


def minimality_k(circuit: Circuit, source: str = "file") -> dict[Head, tuple[frozenset[Head], str]]:
    """v -> (K, the rule that gave it) for 'file' (falling back to 'class' per head) or 'class'."""
    if source not in ("file", "class"):
        raise ValueError(f"K source '{source}' has no fixed K; use 'file', 'class' (or minimality(..., 'search')).")
    return {v: (frozenset(circuit.minimality_k[v]), "file") if source == "file" and v in circuit.minimality_k
            else (class_rule_k(circuit, v), "class") for v in circuit.heads}


def minimality_sets(circuit: Circuit, v: Head, K: Iterable[Head], positions: str = "circuit") -> list[NodeSet]:
    """[C\\K, C\\(K∪{v})]."""
    K = frozenset(K)
    return [c_minus(circuit, K, positions), c_minus(circuit, K | {v}, positions)]


class Cols:
    """The columns of `Minimality.table`, which are also the keys of a record's heads rows."""

    HEAD = "head"
    CLASS = "class"
    K = "K"
    K_SOURCE = "k_source"  # file / class / search
    F_C_MINUS_K = "F_C_minus_K"
    F_C_MINUS_K_AND_V = "F_C_minus_K_and_v"
    D, D_LO, D_HI = "d", "d_lo", "d_hi"  # F(C\(K∪{v})) − F(C\K), signed, and its interval
    SCORE = "score"  # |d|
    PCT_OF_F_M = "pct_of_F_M"  # |d| as % of |F(M)|
    CI_LOW, CI_HIGH = "ci_low", "ci_high"  # |d|'s display interval
    CI_LOW_PCT, CI_HIGH_PCT = "ci_low_pct", "ci_high_pct"
    VERDICT = "verdict"
    BELOW_THRESHOLD = "below_threshold"  # the point estimate alone: not a verdict
    SELECTION_SCORE = "selection_score"  # searched K: |d| on the prompts that chose it


@dataclass(frozen=True, eq=False)
class Minimality(SettingsFigures):
    """One row per head in `table`; per_prompt arrays are row-aligned with it.

    Columns: d = F(C\\(K∪{v})) − F(C\\K) (signed) with its 95% interval d_lo, d_hi; score = |d| (also
    as % of |F(M)|) with the display interval ci_low, ci_high; verdict against threshold_pct % of
    |F(M)|: passes when the whole interval of d lies beyond ±threshold, fails when it lies within,
    else undecided. With a searched K, `selection_score` is the K's score on the selection prompts
    that chose it (a winner's-curse figure); every other column is on the report prompts.
    """

    table: pd.DataFrame
    per_prompt: dict[str, np.ndarray]  # C_minus_K / C_minus_K_and_v: [heads, N]; model: [N]
    F_model: float
    threshold_pct: float
    settings: dict = field(default_factory=dict)
    search_trace: pd.DataFrame = field(default_factory=pd.DataFrame)
    cancelled: bool = False

    @property
    def flagged(self) -> list[str]:
        """Heads that fail: their whole interval lies under the threshold."""
        return self.table.loc[self.table[Cols.VERDICT] == Verdict.FAILS.value, Cols.HEAD].tolist()

    @property
    def undecided(self) -> list[str]:
        """Heads whose interval straddles the threshold."""
        return self.table.loc[self.table[Cols.VERDICT] == Verdict.UNDECIDED.value, Cols.HEAD].tolist()

    @property
    def verdict(self) -> Verdict:
        return overall(self.table[Cols.VERDICT]) if len(self.table) else Verdict.UNDECIDED


    def to_dict(self) -> dict:
        rows = frame_records(self.table)
        for i, row in enumerate(rows):
            row["per_prompt"] = {"C_minus_K": self.per_prompt["C_minus_K"][i].tolist(),
                                 "C_minus_K_and_v": self.per_prompt["C_minus_K_and_v"][i].tolist()}
        return {"F_model": self.F_model, "threshold_pct": self.threshold_pct, "settings": self.settings,
                "cancelled": self.cancelled, "verdict": self.verdict.value, "heads": rows, "flagged": self.flagged,
                "undecided": self.undecided, "search_trace": frame_records(self.search_trace),
                "per_prompt_model": self.per_prompt["model"].tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Minimality":
        """A result from its `to_dict()` (a run record's results.minimality)."""
        rows, model = d.get("heads", []), np.asarray(d.get("per_prompt_model", []), dtype=float)
        per_prompt = {**_rows_per_prompt(rows, ("C_minus_K", "C_minus_K_and_v"), len(model)), "model": model}
        table = _frame(rows)
        if Cols.BELOW_THRESHOLD in table:
            table[Cols.BELOW_THRESHOLD] = table[Cols.BELOW_THRESHOLD].astype(bool)
        return cls(table, per_prompt, float(d.get("F_model", np.nan)), float(d.get("threshold_pct", 1.0)),
                   dict(d.get("settings", {})), pd.DataFrame(d.get("search_trace", [])), bool(d.get("cancelled", False)))


def searched_k(selection_ev, circuit: Circuit, heads: list[Head], k: int, steps: int, runs: int, seed: int,
               progress: Progress | None = None, should_stop: StopCheck | None = None):
    """For each head v, the K ⊆ C\\{v} that makes knocking v out matter most, searched greedily on the
    selection evaluator's prompts. Returns ({v: (K, selection score)}, trace, cancelled)."""
    pos = selection_ev.methodology.positions
    searches = [Search(pool=[h for h in circuit.heads if h != v], sets=lambda K, v=v: minimality_sets(circuit, v, K, pos),
                       score=lambda m: abs(m[1] - m[0]), columns=("F_C_minus_K", "F_C_minus_K_and_v"))
                for v in heads]
    trace, cancelled = greedy_search(FCache(selection_ev), searches, k, steps, runs, seed, progress, should_stop)
    ks = {}
    for (i, _), row in best_per_run(trace, include_start=True).items():  # the best K over a head's runs (∅ counts)
        v = heads[i]
        if v not in ks or row["score"] > ks[v][1]:
            ks[v] = (row["K"], row["score"])
    return ks, trace, cancelled


def minimality(evaluator, circuit: Circuit, *, k_source: str = "file", threshold_pct: float = 1.0,
               search_k: int = 10, search_steps: int = 10, search_runs: int = 1, seed: int | None = None,
               progress: Progress | None = None, should_stop: StopCheck | None = None,
               only: Iterable[Head] | None = None, reference_noise: bool = True,
               selection: Selection | None = None, selection_ev=None) -> Minimality:
    """d = F(C\\(K∪{v})) − F(C\\K) for every head v, its |d| as a value and as % of |F(M)|, and a verdict.

    k_source: 'file' (default; the class rule for heads the file does not list, or for a circuit
    without minimality_k), 'class' or 'search'. A search chooses each head's K on selection prompts
    (`selection_ev`, or one built from `selection`: by default N = 40 at the report seed + 10,000),
    never stops early, and its K are then scored here on the report prompts.
    only: score just these heads of the circuit (K still ranges over the whole circuit).
    reference_noise: with the methodology's reference replicates, the intervals include the reference
    set's noise (each replicate evaluates the scored sets again); False: prompts-only intervals.
    Without a search, all sets go to the evaluator in one call and progress is the evaluator's own.
    """
    if k_source not in K_SOURCES:
        raise ValueError(f"Unknown K source '{k_source}'; choose one of {', '.join(K_SOURCES)}.")
    meth = evaluator.methodology
    pos = meth.positions
    seed = meth.seed if seed is None else seed
    heads = circuit.heads if only is None else [h for h in circuit.heads if h in set(only)]
    cache = FCache(evaluator)
    trace, cancelled, sel_scores, sel_info = [], False, {}, None

    if k_source == "search":
        sel_ev = selection_ev if selection_ev is not None else selection_evaluator(evaluator.model, meth, selection)
        if sel_ev.methodology.seed == meth.seed:
            raise ValueError("The minimality search must choose on prompts apart from the report prompts "
                             f"(selection seed {sel_ev.methodology.seed} = report seed).")
        found, trace, cancelled = searched_k(sel_ev, circuit, heads, search_k, search_steps, search_runs, seed,
                                             progress, should_stop)
        ks = {v: (found[v][0], "search") for v in heads}
        sel_scores = {v: s for v, (_, s) in found.items()}
        sel_info = {"n": sel_ev.methodology.n, "seed": sel_ev.methodology.seed,
                    "budget_per_head": budget(search_k, search_steps, search_runs)}
    else:
        ks = minimality_k(circuit, k_source)
    # Without a search, one bar in node sets: the scored sets, then (reference noise) each of them again.
    scored = [NodeSet.model()] + [s for v in heads for s in minimality_sets(circuit, v, ks[v][0], pos)]
    n_sets, pending = len(scored), evaluator.pending(scored)
    n_noise = 2 * len(heads) if reference_noise and evaluator.replicates and not cancelled else 0
    own = progress if k_source != "search" else None
    if own is not None:
        own(n_sets - pending, n_sets + n_noise)
    cache.get(scored, share(own, n_sets - pending, pending, n_sets + n_noise))

    model = cache.get([NodeSet.model()])[0]
    f_model = float(model.mean())
    scale, scale_settings = metric_scale(evaluator, cache, model)
    f_scale = scale_settings["scale_value"]
    base = cache.get([c_minus(circuit, ks[v][0], pos) for v in heads])
    knocked = cache.get([c_minus(circuit, ks[v][0] | {v}, pos) for v in heads])
    d = knocked.mean(1) - base.mean(1)
    reps = []
    if reference_noise and evaluator.replicates and not cancelled:  # a stopped run returns at once
        sets = [c_minus(circuit, ks[v][0], pos) for v in heads] + [c_minus(circuit, ks[v][0] | {v}, pos) for v in heads]
        reps = [(r[len(heads):], r[:len(heads)])
                for r in replicate_values(evaluator, sets, share(own, n_sets, n_noise, n_sets + n_noise), should_stop)]
    d_lo, d_hi = diff_intervals(knocked, base, meth.bootstrap, meth.seed, replicates=reps)
    lo, hi = abs_columns(d_lo, d_hi)
    thr, thr_hi, why = relative_threshold(threshold_pct, scale, meth.bootstrap, meth.seed,
                                          scale_settings["scale"].strip("|"))
    table = pd.DataFrame({
        Cols.HEAD: [head_name(v) for v in heads],
        Cols.CLASS: [circuit.class_of(v).name for v in heads],
        Cols.K: [heads_label(ks[v][0], circuit) for v in heads],
        Cols.K_SOURCE: [ks[v][1] for v in heads],
        Cols.F_C_MINUS_K: base.mean(1),
        Cols.F_C_MINUS_K_AND_V: knocked.mean(1),
        Cols.D: d, Cols.D_LO: d_lo, Cols.D_HI: d_hi,
        Cols.SCORE: np.abs(d),
        Cols.PCT_OF_F_M: pct_of(np.abs(d), f_scale),  # under KL: % of F(∅) − F(M) (the column keeps its name)
        Cols.CI_LOW: lo,
        Cols.CI_HIGH: hi,
        Cols.CI_LOW_PCT: pct_of(lo, f_scale),
        Cols.CI_HIGH_PCT: pct_of(hi, f_scale),
        Cols.VERDICT: [at_least(a, b, thr, thr_hi).value for a, b in zip(d_lo, d_hi)],
        Cols.BELOW_THRESHOLD: pct_of(np.abs(d), f_scale) < threshold_pct,  # the point estimate alone: not a verdict
        Cols.SELECTION_SCORE: [sel_scores.get(v, np.nan) for v in heads],
    })
    tr = trace_frame(trace, circuit)
    if len(tr):
        tr.insert(0, "head", [head_name(heads[i]) for i in tr.pop("search")])
        tr["run"] += 1
    settings = {"k_source": k_source, "threshold_pct": threshold_pct, "no_verdict": why, "threshold_abs": [thr, thr_hi], "seed": seed,
                **scale_settings,
                "bootstrap": meth.bootstrap,
                "interval_method": interval_method(meth, bool(reps) or not evaluator.replicates) + STUDENTISED}
    if k_source == "search":
        settings.update(search_k=search_k, search_steps=search_steps, search_runs=search_runs, selection=sel_info)
    return Minimality(table, {"C_minus_K": base, "C_minus_K_and_v": knocked, "model": model},
                      f_model, threshold_pct, settings, tr, cancelled)


def minimality_in_stages(evaluator, circuit: Circuit, progress: Progress | None = None,
                         should_stop: StopCheck | None = None, **options):
    """Minimality filling in class by class: yields the result for the first class's heads, then the
    first two classes', ..., then (with reference replicates) all heads with the reference noise in the
    intervals (the evaluator memoises, so no stage recomputes the one before)."""
    done: list[Head] = []
    # every stage reports against the whole job's total: all heads' sets and M, then their reference noise
    last = 1 + 2 * len(circuit.heads)
    grand = last + (last - 1 if evaluator.replicates else 0)
    whole = (lambda d, t: progress(d, max(t, grand))) if progress is not None else None
    for cls in circuit.classes:
        done += cls.heads
        result = minimality(evaluator, circuit, progress=whole, should_stop=should_stop, only=list(done),
                            reference_noise=False, **options)
        yield result
        if result.cancelled:
            return
    if evaluator.replicates:
        yield minimality(evaluator, circuit, progress=whole, should_stop=should_stop, reference_noise=True, **options)


__all__ = ["Minimality", "Cols", "minimality", "searched_k", "minimality_in_stages", "minimality_k", "minimality_sets", "class_rule_k", "K_SOURCES"]
