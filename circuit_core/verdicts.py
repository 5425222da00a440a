"""Verdicts decided by intervals, not point estimates.

A criterion compares a signed difference d (with its 95% interval [lo, hi]) to a threshold t:
- "at most t" (completeness: F(C\\K) and F(M\\K) agree; faithfulness: the gap is small):
  passes when the whole interval lies inside [−t, t], fails when it lies wholly outside, else undecided;
- "at least t" (minimality: knocking v out moves F): passes when the whole interval lies outside
  [−t, t] (|d| > t for every value in it), fails when it lies wholly inside, else undecided.
An interval that is not there (no bootstrap, NaN) decides nothing: undecided.

    >>> at_least(0.5, 3.0, 1.0).value, at_least(2.0, 3.0, 1.0).value, at_most(-0.2, 0.3, 1.0).value
    ('undecided', 'passes', 'passes')
"""
from __future__ import annotations

import math
from enum import Enum
from typing import Iterable

from .metrics import Metric


class Verdict(str, Enum):
    PASSES = "passes"
    FAILS = "fails"
    UNDECIDED = "undecided"

    @property
    def colour(self) -> str:
        return {"passes": "#2e7d32", "fails": "#c62828", "undecided": "#9e9e9e"}[self.value]

    @property
    def words(self) -> str:
        return {"passes": "passes: the whole 95% interval is on the good side of the threshold",
                "fails": "fails: the whole 95% interval is on the wrong side of the threshold",
                "undecided": "undecided: the 95% interval straddles the threshold"}[self.value]


def _known(*xs) -> bool:
    return all(x is not None and not math.isnan(float(x)) for x in xs)


def at_most(lo: float, hi: float, t: float, t_hi: float | None = None) -> Verdict:
    """|d| ≤ t: passes if [lo, hi] ⊆ [−t, t], fails if [lo, hi] misses [−t, t] entirely. A threshold
    known only to lie in [t, t_hi] decides only what holds for every value in it."""
    t_hi = t if t_hi is None else t_hi
    if not _known(lo, hi, t, t_hi):
        return Verdict.UNDECIDED
    if -t <= lo and hi <= t:
        return Verdict.PASSES
    if lo > t_hi or hi < -t_hi:
        return Verdict.FAILS
    return Verdict.UNDECIDED


def at_least(lo: float, hi: float, t: float, t_hi: float | None = None) -> Verdict:
    """|d| > t: passes if [lo, hi] misses [−t, t] entirely, fails if [lo, hi] ⊆ [−t, t] (with a
    threshold in [t, t_hi]: passes beyond ±t_hi, fails within ±t)."""
    t_hi = t if t_hi is None else t_hi
    if not _known(lo, hi, t, t_hi):
        return Verdict.UNDECIDED
    if lo > t_hi or hi < -t_hi:
        return Verdict.PASSES
    if -t <= lo and hi <= t:
        return Verdict.FAILS
    return Verdict.UNDECIDED


def overall(verdicts: Iterable[Verdict | str]) -> Verdict:
    """A criterion over many parts: fails if any part fails, passes if every part passes, else undecided."""
    vs = [Verdict(v) for v in verdicts]
    if any(v is Verdict.FAILS for v in vs):
        return Verdict.FAILS
    if vs and all(v is Verdict.PASSES for v in vs):
        return Verdict.PASSES
    return Verdict.UNDECIDED


def abs_interval(lo: float, hi: float) -> tuple[float, float]:
    """The interval of |d| implied by d's interval [lo, hi] (for display: the decisions use d's)."""
    if not _known(lo, hi):
        return float("nan"), float("nan")
    if lo <= 0 <= hi:
        return 0.0, max(-lo, hi)
    return min(abs(lo), abs(hi)), max(abs(lo), abs(hi))


FAITHFULNESS_TOLERANCE_PCT = 20.0  # the gap F(M) − F(C) must stay within this % of |F(M)| to pass


def faithfulness_verdict(f, tolerance_pct: float = FAITHFULNESS_TOLERANCE_PCT, metric: str = "logit_diff") -> Verdict:
    """Faithfulness from the interval of the gap F(M) − F(C) against ±tolerance_pct % of |F(M)|
    (20%: F(C)/F(M) between 0.8 and 1.2 throughout the interval). Under KL (F(M) = 0) the scale is
    F(∅) − F(M): the circuit's KL within 20% of the empty circuit's, a normalised score of at least 0.8."""
    lo, hi = f.intervals["gap"]
    scale = f.stats["F_model_minus_empty"] if metric == "kl" else f.stats["F_model"]
    return at_most(lo, hi, tolerance_pct / 100 * abs(scale))


def verdict_summary(faithfulness=None, completeness=None, minimality=None,
                    faithfulness_tolerance_pct: float = FAITHFULNESS_TOLERANCE_PCT, metric: str = "logit_diff") -> dict:
    """{criterion: {"verdict", "rule"}} for the criteria given, and "overall" (for records and --strict)."""
    out, scale = {}, Metric(metric).scale_name
    if faithfulness is not None:
        out["faithfulness"] = {"verdict": faithfulness_verdict(faithfulness, faithfulness_tolerance_pct, metric).value,
                               "rule": f"95% interval of F(M) − F(C) within ±{faithfulness_tolerance_pct:g}% of {scale}"}
    if completeness is not None:
        tol = completeness.settings.get("tolerance_pct")
        out["completeness"] = {"verdict": completeness.verdict.value,
                               "rule": f"every K: 95% interval of F(C\\K) − F(M\\K) within ±{tol:g}% of {scale}"}
    if minimality is not None:
        out["minimality"] = {"verdict": minimality.verdict.value,
                             "rule": f"every head: 95% interval of F(C\\(K∪v)) − F(C\\K) beyond "
                                     f"±{minimality.threshold_pct:g}% of {scale}"}
    out["overall"] = overall(v["verdict"] for v in out.values()).value
    return out


__all__ = ["Verdict", "at_most", "at_least", "overall", "abs_interval", "faithfulness_verdict", "verdict_summary",
           "FAITHFULNESS_TOLERANCE_PCT"]
