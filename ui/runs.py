"""Run history: every result computed in the session, with its circuit and methodology.

A run is logged when a page shows a result (faithfulness headline, completeness, minimality,
report). Runs can be pinned and named, compared side by side, saved as run records (the CLI's
`--out` schema) and reopened. Kept in the session; bounded so a long session stays small.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import streamlit as st

from ui.session import Session

MAX_RUNS = 200  # unpinned runs kept per session; the oldest go first


@dataclass
class Run:
    kind: str  # faithfulness / completeness / minimality
    model_key: str
    methodology: object  # Methodology
    circuit: dict  # Circuit.to_dict()
    summary: dict  # the figures shown, with their intervals
    result: dict  # the result's to_dict(), for the saved record
    created: float = field(default_factory=time.time)
    name: str = ""
    pinned: bool = False

    @property
    def key(self) -> tuple:
        return (self.kind, self.model_key, self.methodology, json.dumps(self.circuit, sort_keys=True))


def runs() -> list[Run]:
    return Session.current().runs


def log(kind: str, ctx, summary: dict, result: dict) -> None:
    """Record a shown result once per (kind, model, methodology, circuit); a later, fuller result of
    the same key (joint intervals after prompts-only ones) replaces the earlier one."""
    run = Run(kind, ctx.model_key, ctx.methodology, ctx.circuit.to_dict(), summary, result)
    items = runs()
    for i, r in enumerate(items):
        if r.key == run.key:
            run.name, run.pinned, run.created = r.name, r.pinned, r.created
            items[i] = run
            return
    items.append(run)
    unpinned = [r for r in items if not r.pinned]
    for r in unpinned[:max(0, len(unpinned) - MAX_RUNS)]:
        items.remove(r)


def result_of(run: Run):
    """The run's result as its typed value (`Faithfulness`, `Completeness` or `Minimality`), rebuilt
    from the record it keeps."""
    from circuit_core.completeness import Completeness
    from circuit_core.criteria import Faithfulness
    from circuit_core.minimality import Minimality

    kinds = {"faithfulness": Faithfulness, "completeness": Completeness, "minimality": Minimality}
    return kinds[run.kind].from_dict(run.result)


def faithfulness_summary(f) -> dict:
    """f: `Faithfulness`."""
    from circuit_core.criteria import undefined_reason

    lo, hi = f.interval("ratio")
    return {"F(C)/F(M)": f.ratio, "lo": lo, "hi": hi, "F(C)": f.F_circuit, "F(M)": f.F_model,
            "intervals": f.interval_method, "undefined": undefined_reason(f, "ratio")}


def completeness_summary(c) -> dict:
    from circuit_core.completeness import Cols

    top = c.table.sort_values(Cols.INCOMPLETENESS, ascending=False).iloc[0]
    return {"max incompleteness": float(top[Cols.INCOMPLETENESS]), "lo": float(top[Cols.CI_LOW]),
            "hi": float(top[Cols.CI_HIGH]), "% of F(M)": float(top[Cols.INCOMPLETENESS_PCT]),
            "worst K": top[Cols.NAME], "verdict": c.verdict.value, "intervals": c.interval_method}


def minimality_summary(m) -> dict:
    return {"verdict": m.verdict.value, "fail": len(m.flagged), "undecided": len(m.undecided), "heads": len(m.table),
            "threshold %": m.threshold_pct, "flagged": ", ".join(m.flagged), "intervals": m.interval_method}
