"""Verdicts follow intervals: hand-made cases on both sides of each threshold, and the display interval of |d|."""
import math

import pytest

from circuit_core.verdicts import Verdict, abs_interval, at_least, at_most, overall


@pytest.mark.parametrize("lo, hi, expected", [
    (-0.5, 0.5, "passes"),    # inside ±1 throughout
    (1.5, 3.0, "fails"),      # wholly above +1
    (-3.0, -1.5, "fails"),    # wholly below −1
    (0.5, 1.5, "undecided"),  # straddles +1
    (-2.0, 2.0, "undecided"), # straddles both bounds
])
def test_at_most(lo, hi, expected):
    assert at_most(lo, hi, 1.0).value == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (1.5, 3.0, "passes"),     # |d| > 1 throughout, positive
    (-3.0, -1.5, "passes"),   # and negative
    (-0.5, 0.5, "fails"),     # |d| < 1 throughout
    (0.5, 1.5, "undecided"),  # the point estimate (1.0) may sit on either side: the interval decides
    (-2.0, 2.0, "undecided"),
])
def test_at_least(lo, hi, expected):
    assert at_least(lo, hi, 1.0).value == expected


def test_missing_intervals_decide_nothing():
    assert at_most(math.nan, math.nan, 1.0) is Verdict.UNDECIDED
    assert at_least(0.0, 1.0, math.nan) is Verdict.UNDECIDED


def test_a_criterion_fails_if_any_part_fails_and_passes_only_if_all_pass():
    assert overall(["passes", "passes"]) is Verdict.PASSES
    assert overall(["passes", "undecided"]) is Verdict.UNDECIDED
    assert overall(["undecided", "fails", "passes"]) is Verdict.FAILS
    assert overall([]) is Verdict.UNDECIDED


def test_abs_interval_of_a_signed_interval():
    assert abs_interval(1.0, 2.0) == (1.0, 2.0)
    assert abs_interval(-2.0, -1.0) == (1.0, 2.0)
    assert abs_interval(-0.5, 2.0) == (0.0, 2.0)  # contains 0: |d| may be 0
