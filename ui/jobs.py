"""Long computations off the page's thread, so the dashboard never blocks.

A job runs a core function in a worker thread with `progress(done, total)` and `should_stop()`
callbacks; the page keeps working meanwhile. Jobs live in the session (one per key: a key names what
is computed, e.g. ("minimality", model, methodology, circuit)), so a finished result is shown again
for free and a click never waits behind a job. `show` waits about a second (short jobs appear at
once), else draws a progress bar with a Stop button in a fragment that polls the job and reruns the
page when it is done. Stopping keeps what was computed: the core functions return their partial
result (or the evaluator keeps what it finished).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from circuit_core.evaluate import Cancelled

MAX_JOBS = 64  # finished jobs kept per session (their results); the oldest go first


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

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    def wait(self, seconds: float) -> bool:
        return self.finished.wait(seconds)


def _jobs() -> dict:
    from ui.session import Session

    return Session.current().jobs


def start(key, label: str, fn: Callable[[Job], Any]) -> Job:
    """The job for `key`, started now if there is none (or the last one failed or was stopped)."""
    jobs = _jobs()
    job = jobs.get(key)
    if job is not None and (job.running or (job.error is None and not job.cancelled)):
        return job
    job = Job(label)

    def work():
        try:
            job.result = fn(job)
        except Cancelled:
            job.cancelled = True
        except Exception as e:  # shown on the page, never a traceback
            job.error = f"{type(e).__name__}: {e}"
        finally:
            job.finished.set()

    jobs[key] = job
    while len(jobs) > MAX_JOBS:
        oldest = next((k for k, j in jobs.items() if not j.running), None)
        if oldest is None:
            break
        jobs.pop(oldest)
    threading.Thread(target=work, daemon=True, name=f"job:{label}").start()
    return job


def stop_others(kind: str, keep) -> None:
    """Stop running jobs whose key starts with `kind`, except `keep` (e.g. estimates of an older edit)."""
    for key, job in list(_jobs().items()):
        if key != keep and isinstance(key, tuple) and key[:1] == (kind,) and job.running:
            job.stop()


def get(key) -> Job | None:
    return _jobs().get(key)


def show(job: Job, wait: float = 1.0, partial: Callable[[Job], None] | None = None) -> Any:
    """The job's result once it is done; until then a progress bar (and `partial(job)` drawn live).

    Returns None while the job runs or when it failed / was stopped (the message is on the page).
    """
    job.wait(wait)
    if not job.running:
        if job.error:
            st.error(f"{job.label} failed: {job.error}")
        elif job.cancelled and job.result is None:
            st.info(f"{job.label}: stopped.")
        return job.result
    _watch(job, partial)
    return None


@st.fragment(run_every=0.7)
def _watch(job: Job, partial=None):
    if not job.running:
        st.rerun(scope="app")
    frac = job.done / job.total if job.total else 0.0
    c1, c2 = st.columns([5, 1])
    elapsed = time.time() - job.started
    c1.progress(min(1.0, frac), text=f"{job.label}: {job.done}/{job.total or '?'} · {elapsed:.0f} s "
                                     "(the page stays usable)")
    if c2.button("Stop", key=f"stop-{id(job)}", help="Stop and keep what was computed"):
        job.stop()
    if partial is not None:
        partial(job)
