"""Selection prompts apart from report prompts.

A set chosen by a search (the worst K of completeness, a minimality K, a discovered circuit, heads
proposed from patching) scores well partly because the search fitted the noise of the prompts it
looked at: the winner's curse. So every search chooses on *selection* prompts — a small, separately
seeded draw of the task, with its own reference set — and the chosen sets are reported on the page's
*report* prompts, which never took part in the choice. Wang et al.'s code did the same (search on a
few dozen prompts, evaluate on hundreds).

    >>> sel = selection_evaluator(model, report_evaluator.methodology)   # N = 40, seed = report seed + 10,000
    >>> sel.methodology.seed, sel.methodology.n
    (10000, 40)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .ablation import Methodology

SELECTION_N = 40  # the paper's code searched on a few dozen prompts
SELECTION_SEED_OFFSET = 10_000  # the selection seed's default distance from the report seed


@dataclass(frozen=True)
class Selection:
    """Where a search chose its sets: N prompts drawn with their own seed (and their own reference set)."""

    n: int = SELECTION_N
    seed: int | None = None  # None: the report seed + SELECTION_SEED_OFFSET

    def seed_for(self, report: Methodology) -> int:
        seed = (report.seed + SELECTION_SEED_OFFSET) % 2**32 if self.seed is None else self.seed
        if seed == report.seed:
            raise ValueError(f"The selection seed must differ from the report seed ({report.seed}): "
                             "a search scored on the prompts that chose it is a winner's-curse figure.")
        return seed

    def methodology(self, report: Methodology) -> Methodology:
        """The report methodology on the selection prompts. No reference replicates: selection figures
        only rank candidates; the intervals a user reads are the report's."""
        return report.replace(n=self.n, seed=self.seed_for(report), ref_replicates=0)

    def to_dict(self, report: Methodology) -> dict:
        return {**asdict(self), "seed": self.seed_for(report)}


def selection_evaluator(model, report: Methodology, selection: Selection | None = None):
    """The evaluator a search runs on: the report methodology with the selection's N and seed, built
    through the model's evaluator cache when it has one (so the dashboard pays its reference pass once)."""
    meth = (selection or Selection()).methodology(report)
    cache = getattr(model, "evaluators", None)
    if cache is not None:
        return cache.get(meth)
    from .evaluate import build_evaluator

    return build_evaluator(model, meth)


__all__ = ["Selection", "selection_evaluator", "SELECTION_N", "SELECTION_SEED_OFFSET"]
