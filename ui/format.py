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


def progress_text(label: str, done: int, total: int, elapsed: float) -> tuple[float, str]:
    """The bar's fill and words for a running job: done/total, seconds so far and, once something is
    done, an estimate of the time left (at the rate so far). A running job's bar is never full: the
    last unit's result is still being put together."""
    frac = min(done / total, 0.99) if total else 0.0
    text = f"{label}: {done}/{total or '?'} · {elapsed:.0f} s"
    if total and 0 < done < total:
        left = elapsed * (total - done) / done
        text += f" · about {left:.0f} s left" if left < 90 else f" · about {left / 60:.0f} min left"
    return frac, text + " (the page stays usable)"
