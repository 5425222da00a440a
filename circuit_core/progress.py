"""Progress reports and stopping: the one contract every long computation follows.

- `progress(done, total)` (a `Progress`) is called as work finishes; `total` may shrink as a search
  narrows (circuit discovery), never grow past what was said.
- `should_stop()` (a `StopCheck`) is asked between units of work (a node set, a greedy step, a batch);
  a unit under way always finishes, and whatever finished is kept (the evaluator memoises it).

When it says stop, one rule:
- a function with a partial result returns what it finished, marked `cancelled=True`: the greedy
  searches (`search.greedy_search`) and the criteria built on them (`completeness`, `minimality`),
  which show the sets scored so far; `formal_tests.formal_tests` returns the tests it finished (a
  shorter list);
- a function with nothing to return until it is done raises `Cancelled`: the evaluator's
  `logit_diffs` (and so faithfulness, the baseline, head scores), attribution, activation and path
  patching, and circuit discovery. Asking again costs only the rest, since finished node sets are
  memoised.

A caller (ui/jobs.py) therefore keeps a returned result even when it says cancelled, and treats
`Cancelled` as a stop with no result.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable

Progress = Callable[[int, int], None]
StopCheck = Callable[[], bool]


class Cancelled(Exception):
    """Raised when `should_stop()` says so and the function has no partial result to return."""


def share(progress: Progress | None, start: int, size: int, total: int) -> Progress | None:
    """A `Progress` for one stage of a longer job: the stage's (done, of) is reported as
    start + size·done/of out of `total`, so one bar runs over every stage and is full only at the end."""
    if progress is None:
        return None
    return lambda done, of: progress(start + (size * done // of if of else size), total)


_AMBIENT: ContextVar = ContextVar("progress", default=None)


@contextmanager
def reporting(progress: Progress | None):
    """Within the block, work that is started deep inside a call with no progress argument of its own
    (the reference means, built when an evaluator is) reports to `progress`."""
    token = _AMBIENT.set(progress)
    try:
        yield
    finally:
        _AMBIENT.reset(token)


def ambient() -> Progress | None:
    """The `Progress` set by the innermost `reporting` block, or None."""
    return _AMBIENT.get()


def stop_requested(should_stop: StopCheck | None) -> bool:
    """True when there is a stop check and it says stop."""
    return should_stop is not None and bool(should_stop())


def raise_if_stopped(should_stop: StopCheck | None, what: str = "") -> None:
    """Raise `Cancelled(what)` when `should_stop()` says stop (for functions with no partial result)."""
    if stop_requested(should_stop):
        raise Cancelled(what)


__all__ = ["Progress", "StopCheck", "Cancelled", "share", "reporting", "ambient", "stop_requested", "raise_if_stopped"]
