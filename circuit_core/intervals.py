"""A confidence interval as one small value: its ends and its level.

It unpacks and indexes as the (lo, hi) pair it replaces (`lo, hi = iv`, `iv[0]`, `list(iv)`), so
readers written for pairs keep working and a record stores it as `[lo, hi]`. No imports from the
rest of the project: every result type can use it.

    >>> iv = Interval(0.8, 1.1)
    >>> iv.contains(1.0), iv.straddles_zero, round(iv.width, 3), list(iv)
    (True, False, 0.3, [0.8, 1.1])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

NAN = float("nan")


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    level: float = 0.95

    @classmethod
    def of(cls, pair, level: float = 0.95) -> "Interval":
        """From a (lo, hi) pair, a record's [lo, hi] list or an Interval; None gives the NaN interval."""
        if isinstance(pair, Interval):
            return pair
        if pair is None:
            return cls(NAN, NAN, level)
        lo, hi = pair
        return cls(float(lo), float(hi), level)

    @classmethod
    def missing(cls, level: float = 0.95) -> "Interval":
        """No interval (a figure that is undefined, or no bootstrap): NaN at both ends."""
        return cls(NAN, NAN, level)

    @property
    def known(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    def contains(self, x: float) -> bool:
        """lo ≤ x ≤ hi (False for a NaN interval or x)."""
        return self.lo <= x <= self.hi

    @property
    def straddles_zero(self) -> bool:
        """True when the interval includes 0 or is not a number: a ratio over it is undefined."""
        return not (self.lo > 0 or self.hi < 0)

    @property
    def width(self) -> float:
        return self.hi - self.lo

    def scaled(self, factor: float) -> "Interval":
        """Both ends times `factor` (e.g. into % of F(M)); a negative factor swaps them."""
        a, b = self.lo * factor, self.hi * factor
        return Interval(min(a, b), max(a, b), self.level)

    # --- the (lo, hi) pair it replaces ----------------------------------------------------------------
    def __iter__(self):
        yield self.lo
        yield self.hi

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i):
        return (self.lo, self.hi)[i]

    def to_list(self) -> list[float]:
        return [self.lo, self.hi]


__all__ = ["Interval"]
