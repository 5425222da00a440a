"""Minimality (Wang et al. 2022, §4 and App. K): does every head of C matter?

For each head v there should be some K ⊆ C\\{v} with a large |F(C\\(K∪{v})) − F(C\\K)|: knocking v
out on top of K must move F. The score is shown as % of F(M); heads under a threshold (default 1%)
are flagged. K per head comes from:
- "file":   the circuit file's minimality_k (the paper's Fig. 20 sets for the IOI circuit); a head the
            file does not list falls back to the class rule, and `k_source` says which rule each used;
- "class":  K = the rest of v's class (the paper's choice for most classes);
- "search": a greedy search for the K maximising the score (see `greedy_search` in completeness.py):
            from K = ∅, each step samples k candidates from C\\(K∪{v}), moves to the best if it raises
            the score, else stops; bounded by steps and runs, seeded, all heads searched in lockstep
            with one evaluator call per step. The best K seen (accepted) per head is kept.

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
from .completeness import (FCache, Progress, Search, StopCheck, abs_diff_intervals, c_minus, frame_records,
                           greedy_search, heads_label, pct_of, replicate_values, trace_frame)
from .criteria import interval_method

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


@dataclass
class Minimality:
    """One row per head in `table`; per_prompt arrays are row-aligned with it."""

    table: pd.DataFrame
    per_prompt: dict[str, np.ndarray]  # C_minus_K / C_minus_K_and_v: [heads, N]; model: [N]
    F_model: float
    threshold_pct: float
    settings: dict = field(default_factory=dict)
    search_trace: pd.DataFrame = field(default_factory=pd.DataFrame)
    cancelled: bool = False

    @property
    def flagged(self) -> list[str]:
        """Heads whose score is under the threshold."""
        return self.table.loc[self.table.below_threshold, "head"].tolist()

    def to_dict(self) -> dict:
        rows = frame_records(self.table)
        for i, row in enumerate(rows):
            row["per_prompt"] = {"C_minus_K": self.per_prompt["C_minus_K"][i].tolist(),
                                 "C_minus_K_and_v": self.per_prompt["C_minus_K_and_v"][i].tolist()}
        return {"F_model": self.F_model, "threshold_pct": self.threshold_pct, "settings": self.settings,
                "cancelled": self.cancelled, "heads": rows, "flagged": self.flagged,
                "search_trace": frame_records(self.search_trace), "per_prompt_model": self.per_prompt["model"].tolist()}


def minimality(evaluator, circuit: Circuit, *, k_source: str = "file", threshold_pct: float = 1.0,
               search_k: int = 10, search_steps: int = 10, search_runs: int = 1, seed: int | None = None,
               progress: Progress | None = None, should_stop: StopCheck | None = None,
               only: Iterable[Head] | None = None, reference_noise: bool = True) -> Minimality:
    """|F(C\\(K∪{v})) − F(C\\K)| for every head v, as a value and as % of |F(M)|.

    k_source: 'file' (default; the class rule for heads the file does not list, or for a circuit
    without minimality_k), 'class' or 'search'. Heads scoring under threshold_pct % of F(M) are flagged.
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
    trace, cancelled = [], False

    if k_source == "search":
        searches = [Search(pool=[h for h in heads if h != v], sets=lambda K, v=v: minimality_sets(circuit, v, K, pos),
                           score=lambda m: abs(m[1] - m[0]), columns=("F_C_minus_K", "F_C_minus_K_and_v"))
                    for v in heads]
        cache.get([NodeSet.model()] + [s for srch in searches for s in srch.sets(frozenset())])  # step 0, one call
        trace, cancelled = greedy_search(cache, searches, search_k, search_steps, search_runs, seed, progress,
                                         should_stop)
        ks = {}
        for row in trace:  # best accepted K per head; ties keep the earliest (smallest) one
            v = heads[row["search"]]
            if row["accepted"] and (v not in ks or row["score"] > ks[v][2]):
                ks[v] = (row["K"], "search", row["score"])
        ks = {v: (K, src) for v, (K, src, _) in ks.items()}
    else:
        ks = minimality_k(circuit, k_source)
        cache.get([NodeSet.model()] + [s for v in heads for s in minimality_sets(circuit, v, ks[v][0], pos)],
                  progress)

    f_model = float(cache.get([NodeSet.model()])[0].mean())
    base = cache.get([c_minus(circuit, ks[v][0], pos) for v in heads])
    knocked = cache.get([c_minus(circuit, ks[v][0] | {v}, pos) for v in heads])
    score = np.abs(knocked.mean(1) - base.mean(1))
    pct = pct_of(score, f_model)
    reps = []
    if reference_noise and evaluator.replicates:
        sets = [c_minus(circuit, ks[v][0], pos) for v in heads] + [c_minus(circuit, ks[v][0] | {v}, pos) for v in heads]
        reps = [(r[len(heads):], r[:len(heads)]) for r in replicate_values(evaluator, sets, should_stop=should_stop)]
    lo, hi = abs_diff_intervals(knocked, base, meth.bootstrap, meth.seed, replicates=reps)
    table = pd.DataFrame({
        "head": [head_name(v) for v in heads],
        "class": [circuit.class_of(v).name for v in heads],
        "K": [heads_label(ks[v][0], circuit) for v in heads],
        "k_source": [ks[v][1] for v in heads],
        "F_C_minus_K": base.mean(1),
        "F_C_minus_K_and_v": knocked.mean(1),
        "score": score,
        "pct_of_F_M": pct,
        "ci_low": lo,
        "ci_high": hi,
        "ci_low_pct": pct_of(lo, f_model),
        "ci_high_pct": pct_of(hi, f_model),
        "below_threshold": pct < threshold_pct,
    })
    tr = trace_frame(trace, circuit)
    if len(tr):
        tr.insert(0, "head", [head_name(heads[i]) for i in tr.pop("search")])
        tr["run"] += 1
    settings = {"k_source": k_source, "threshold_pct": threshold_pct, "seed": seed, "bootstrap": meth.bootstrap,
                "interval_method": interval_method(meth, bool(reps) or not evaluator.replicates)}
    if k_source == "search":
        settings.update(search_k=search_k, search_steps=search_steps, search_runs=search_runs)
    return Minimality(table, {"C_minus_K": base, "C_minus_K_and_v": knocked, "model": cache.get([NodeSet.model()])[0]},
                      f_model, threshold_pct, settings, tr, cancelled)


def minimality_in_stages(evaluator, circuit: Circuit, progress: Progress | None = None,
                         should_stop: StopCheck | None = None, **options):
    """Minimality filling in class by class: yields the result for the first class's heads, then the
    first two classes', ..., then (with reference replicates) all heads with the reference noise in the
    intervals (the evaluator memoises, so no stage recomputes the one before)."""
    done: list[Head] = []
    for cls in circuit.classes:
        done += cls.heads
        result = minimality(evaluator, circuit, progress=progress, should_stop=should_stop, only=list(done),
                            reference_noise=False, **options)
        yield result
        if result.cancelled:
            return
    if evaluator.replicates:
        yield minimality(evaluator, circuit, progress=progress, should_stop=should_stop, reference_noise=True, **options)


__all__ = ["Minimality", "minimality", "minimality_in_stages", "minimality_k", "minimality_sets", "class_rule_k", "K_SOURCES"]
