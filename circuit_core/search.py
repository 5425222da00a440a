"""The greedy search of Wang et al. (App. M), as their code ran it: used by completeness (the worst K)
and by minimality (the K that makes each head matter most).

A run starts at K = ∅. Every step samples k candidates v from pool \\ K, scores K ∪ {v} for each and
moves to the best of them, whether or not it beats what the run has seen: a run never stops early
(the way to a high score may cross a dip), only when its pool is used up. Every scored set is kept
in the trace, and a run's answer is the best set it visited. Budget per search:
runs × steps × k scored sets (each costs the node sets `Search.sets(K)` lists).

Searches choose on the prompts they are given; report the chosen sets on other prompts
(`selection.py`): the best of many noisy scores is biased upward on the prompts that chose it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .ablation import NodeSet
from .circuit import Head
from .progress import Progress, StopCheck, stop_requested


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


def budget(k: int, steps: int, runs: int) -> int:
    """Scored sets per search: every run takes every step with k candidates (fewer once the pool runs low)."""
    return runs * steps * k


def greedy_search(cache, searches: Sequence[Search], k: int = 10, steps: int = 10, runs: int = 10,
                  seed: int = 0, progress: Progress | None = None, should_stop: StopCheck | None = None):
    """Every (search, run) in lockstep: all candidates of all runs of a step go to the evaluator in one
    call (`cache.get`), so they share its prefix tree. Run r of search i draws from
    np.random.default_rng([seed, i, r]), so results do not depend on batching.

    Returns (trace, cancelled). trace: one row per scored K (search, run, step, K, means, score,
    accepted); step 0 is ∅; `accepted` marks the candidate the run moved to (the best of its step).
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
            live.append(_Run(i, r, np.random.default_rng([seed, i, r]), frozenset()))
            record(live[-1], 0, frozenset(), m, score, True)
    cancelled = False
    for step in range(1, steps + 1):
        live = [run for run in live if len(searches[run.search].pool) > len(run.K)]
        if not live:
            break
        if stop_requested(should_stop):
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
            record(run, step, K, m, score, best[run][0] == K)
        for run, (K, _) in best.items():
            run.K = K  # always moves on: no early stop
        if progress is not None:
            progress(step, steps)
    return trace, cancelled


def best_per_run(trace: list[dict], include_start: bool = False) -> dict[tuple[int, int], dict]:
    """(search, run) -> the trace row of the best set that run moved through (the earliest on ties;
    the start ∅ only with include_start). A run's answer: the highest score it visited, not where it ended."""
    best: dict[tuple[int, int], dict] = {}
    for row in trace:
        key = (row["search"], row["run"])
        if not row["accepted"] or (row["step"] == 0 and not include_start):
            continue
        if key not in best or row["score"] > best[key]["score"]:
            best[key] = row
    return best


__all__ = ["Search", "greedy_search", "best_per_run", "budget"]
