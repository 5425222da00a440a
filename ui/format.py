"""How figures are printed, shared by the pages and the report so both show the same digits."""
from __future__ import annotations


def num(x: float) -> str:
    """A logit difference (nats)."""
    return f"{x:.3f}"


def pct(x: float) -> str:
    """A ratio shown as a percentage."""
    return f"{x:.1%}"


def ci(f, key: str, percent: bool = False) -> str:
    """The 95% interval of figure `key` of a result with `intervals` (`Faithfulness`), in the unit of its figure."""
    lo, hi = f.interval(key)
    return f"95% CI [{lo:.1%}, {hi:.1%}]" if percent else f"95% CI [{lo:.2f}, {hi:.2f}]"
