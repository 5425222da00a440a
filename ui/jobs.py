"""Long computations off the page's thread, so the dashboard never blocks.

A job runs a core function in a worker thread with `progress(done, total)` and `should_stop()`
callbacks; the page keeps working meanwhile. Jobs live in the session (one per key: a key names what
is computed, e.g. ("minimality", model, methodology, circuit)), so a finished result is shown again
for free and a click never waits behind a job. `show` waits about a second (short jobs appear at
once), else draws a progress bar with a Stop button in a fragment that polls the job and reruns the
page when it is done. Stopping keeps what was computed: the core functions return their partial
result (or the evaluator keeps what it finished).

A job the user stopped stays stopped: the page shows what it has, with a Resume button (the evaluator
memoises finished sets, so resuming redoes none of them). A job stopped on the user's behalf (its page was left,
or `stop_others` found it stale) starts again when a page asks for it. Each job remembers the pages
that asked for it; a page that starts a job stops the running jobs of pages not on screen, so jobs of a
page left behind do not slow the one in view (a job shown on several pages, like the headline's
intervals, goes on while any of them is shown). `leave_other_pages` does the same for a page without jobs.
"""
from __future__ import annotations

import atexit
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from circuit_core.evaluate import Cancelled
from ui.format import progress_text

MAX_JOBS = 64  # finished jobs kept per session (their results); the oldest go first
_RUNNING: "weakref.WeakSet[Job]" = weakref.WeakSet()  # every session's running jobs


@dataclass(eq=False)
class Job:
    label: str
    done: int = 0
    total: int = 0
    result: Any = None
    partial: list = field(default_factory=list)  # rows a job publishes while it runs
    error: str | None = None
    cancelled: bool = False
    finished: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)
    stopped_by_user: bool = False  # the Stop button: kept stopped until Resume
    key: Any = None
    fn: Callable[["Job"], Any] | None = None  # the latest page's closure: Resume runs it
    pages: set = field(default_factory=set)  # script hashes of the pages that asked for it

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def stop(self, by_user: bool = False) -> None:
        self.stopped_by_user = self.stopped_by_user or by_user
        self._stop.set()

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    @property
    def stopped(self) -> bool:
        """Finished short of its end because a stop was asked for (the result, if any, is partial)."""
        if self.running or not self._stop.is_set() or self.error is not None:
            return False
        return self.cancelled or self.result is None or bool(getattr(self.result, "cancelled", True))

    def wait(self, seconds: float) -> bool:
        return self.finished.wait(seconds)


def _jobs() -> dict:
    from ui.session import Session

    return Session.current().jobs


def _page() -> str | None:
    """The script hash of the page this run draws (None outside a Streamlit run)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    return ctx.page_script_hash if ctx is not None else None


def leave_other_pages(keep=None) -> None:
    """Stop the running jobs that no page on screen asked for (all but `keep`'s); a page that asks for
    one again starts it again, and the evaluator's memo makes that cheap."""
    page = _page()
    if page is None:
        return
    for key, job in list(_jobs().items()):
        if key != keep and job.running and job.pages and page not in job.pages and not job.should_stop():
            job.stop()


def start(key, label: str, fn: Callable[[Job], Any]) -> Job:
    """The job for `key`, started now if there is none, the last one failed, or it was stopped other than
    by the user (a job the user stopped waits for Resume, see `show`)."""
    page = _page()
    leave_other_pages(keep=key)
    job = _jobs().get(key)
    if job is not None:
        job.fn = fn
        if page is not None:
            job.pages.add(page)
        if job.running or (job.error is None and (not job.stopped or job.stopped_by_user)):
            return job
    return _launch(key, label, fn, {page} if page is not None else set())


def resume(job: Job) -> Job:
    """Start a stopped job's computation again, under its key (finished sets come from the memo)."""
    jobs = _jobs()
    if job.running or job.fn is None or jobs.get(job.key) is not job:
        return jobs.get(job.key) or job
    return _launch(job.key, job.label, job.fn, set(job.pages))


def _launch(key, label: str, fn: Callable[[Job], Any], pages: set) -> Job:
    jobs = _jobs()
    job = Job(label, key=key, fn=fn, pages=pages)

    def work():
        try:
            job.result = fn(job)
        except Cancelled:
            job.cancelled = True
        except Exception as e:  # shown on the page, never a traceback
            job.error = f"{type(e).__name__}: {e}"
        finally:
            _RUNNING.discard(job)
            job.finished.set()

    jobs[key] = job
    while len(jobs) > MAX_JOBS:
        oldest = next((k for k, j in jobs.items() if not j.running), None)
        if oldest is None:
            break
        jobs.pop(oldest)
    _RUNNING.add(job)
    threading.Thread(target=work, daemon=True, name=f"job:{label}").start()
    return job


@atexit.register
def stop_all(timeout: float = 30.0) -> None:
    """Stop every session's running jobs and wait for them: at the interpreter's exit a worker thread
    still inside a torch call aborts the process (the server's shutdown, a test run's end)."""
    for job in list(_RUNNING):
        job.stop()
    deadline = time.monotonic() + timeout
    for job in list(_RUNNING):
        job.wait(max(0.0, deadline - time.monotonic()))


def stop_others(kind: str, keep) -> None:
    """Stop running jobs whose key starts with `kind`, except `keep` (e.g. estimates of an older edit)."""
    for key, job in list(_jobs().items()):
        if key != keep and isinstance(key, tuple) and key[:1] == (kind,) and job.running:
            job.stop()


def get(key) -> Job | None:
    return _jobs().get(key)


def show(job: Job, wait: float = 1.0, partial: Callable[[Job], None] | None = None) -> Any:
    """The job's result once it is done; until then a progress bar (and `partial(job)` drawn live).

    Returns None while the job runs or when it failed. A stopped job returns its partial result (None
    when it has none: `partial(job)` then draws what it published) beside a Resume button.
    """
    job.wait(wait)
    if not job.running:
        if job.error:
            st.error(f"{job.label} failed: {job.error}")
        elif job.stopped:
            if job.result is None and partial is not None:
                partial(job)
            c1, c2 = st.columns([5, 1], vertical_alignment="center")
            c1.info(f"{job.label}: stopped at {job.done}/{job.total or '?'}; shown: what was computed before that. "
                    "Resume goes on from there (finished sets are not recomputed).")
            if c2.button("Resume", key=f"resume-{id(job)}", type="primary"):
                resume(job)
                st.rerun()
        return job.result
    _watch(job, partial)
    return None


@st.fragment(run_every=0.7)
def _watch(job: Job, partial=None):
    if not job.running:
        st.rerun(scope="app")
    c1, c2 = st.columns([5, 1])
    frac, text = progress_text(job.label, job.done, job.total, time.time() - job.started)
    c1.progress(frac, text=text)
    if c2.button("Stop", key=f"stop-{id(job)}", help="Stop and keep what was computed; Resume goes on"):
        job.stop(by_user=True)
    if partial is not None:
        partial(job)
