"""Run history: every result of this session, pinned, named, compared, saved and reopened."""
import json

import pandas as pd
import streamlit as st

from circuit_core.circuit import Circuit, CircuitError
from circuit_core.completeness import Cols as CC
from circuit_core.criteria import undefined_reason
from ui import jobs
from ui.charts import intervals, style
from ui.runs import result_of, runs
from ui.sidebar import open_record, sidebar
from ui.state import get_evaluator

ctx = sidebar()
st.title("Runs")
st.caption("Every result shown in this session, with its circuit and methodology. Pin and name the ones "
           "to keep, compare them, save them as run records, reopen a saved one.")

items = runs()
if not items:
    st.info("No results yet: open the editor or a criterion's page and they appear here.")
else:
    def describe(r):
        m = r.methodology
        return (f"{r.model_key} · N={m.n} seed {m.seed} · {m.ablation} · {m.positions} positions · "
                f"{m.ref_per_group or 'paired'} refs/group")

    def figure(r):
        res = result_of(r)
        if r.kind == "faithfulness":
            if why := undefined_reason(res, "ratio"):
                return f"F(C)/F(M) undefined: {why}"
            lo, hi = res.interval("ratio")
            return f"F(C)/F(M) {res.ratio:.1%} [{lo:.1%}, {hi:.1%}]"
        if r.kind == "completeness":
            top = res.best()
            return (f"max |F(C\\K) − F(M\\K)| {top[CC.INCOMPLETENESS]:.3f} [{top[CC.CI_LOW]:.3f}, "
                    f"{top[CC.CI_HIGH]:.3f}] ({top[CC.NAME]}) · {res.verdict.value}")
        return (f"{res.verdict.value}: {len(res.flagged)} of {len(res.table)} heads fail, {len(res.undecided)} "
                f"undecided at {res.threshold_pct:g}% of F(M)")

    table = pd.DataFrame({"pin": [r.pinned for r in items], "name": [r.name for r in items],
                          "kind": [r.kind for r in items], "circuit": [r.circuit["name"] for r in items],
                          "heads": [sum(len(c["heads"]) for c in r.circuit["classes"]) for r in items],
                          "result (95% CI)": [figure(r) for r in items], "methodology": [describe(r) for r in items],
                          "time": [pd.Timestamp(r.created, unit="s").strftime("%H:%M:%S") for r in items]})
    edited = st.data_editor(table, hide_index=True, width="stretch", key="runs_table",
                            disabled=[c for c in table.columns if c not in ("pin", "name")],
                            column_config={"pin": st.column_config.CheckboxColumn(help="Pinned runs are kept "
                                                                                       "and compared below")})
    for r, pin, name in zip(items, edited["pin"], edited["name"]):
        r.pinned, r.name = bool(pin), str(name or "")

    pinned = [(r, f) for r in items if r.pinned and r.kind == "faithfulness"
              and not undefined_reason(f := result_of(r), "ratio")]
    if len(pinned) >= 2:
        st.subheader("Pinned faithfulness runs side by side")
        frame = pd.DataFrame([{"run": r.name or f"{r.circuit['name']} · {describe(r)}", "F(C)/F(M)": f.ratio,
                               "lo": f.interval("ratio").lo, "hi": f.interval("ratio").hi} for r, f in pinned])
        st.altair_chart(style(intervals(frame, "F(C)/F(M)", "lo", "hi", "run", "Faithfulness of the pinned runs",
                                        "F(C)/F(M) with 95% CI")), width="stretch")

    st.subheader("Save a run")
    labels = [f"{i + 1}. {r.name or r.circuit['name']} · {r.kind} · {figure(r)}" for i, r in enumerate(items)]
    pick = st.selectbox("Run", range(len(items)), format_func=labels.__getitem__, index=len(items) - 1)

    def record():
        from circuit_core.report import run_record

        r = items[pick]
        ev = get_evaluator(r.model_key, r.methodology)
        rec = run_record(ev, Circuit.from_dict(r.circuit), {r.kind: r.result})
        rec["run"] = {"name": r.name, "pinned": r.pinned, "model_key": r.model_key}
        return json.dumps(rec, indent=1, allow_nan=True)

    st.download_button("Download the run record (JSON)", record, file_name=f"run-{pick + 1}.json",
                       mime="application/json")

st.subheader("Reopen a saved run")
up = st.file_uploader("Run record (JSON, from here or the CLI's --out)", type=["json"], key="reopen")
if up is not None and st.button("Open it", type="primary"):
    try:
        rec = json.loads(up.getvalue())
        open_record(ctx, rec)  # sets model, methodology and circuit, then reruns
    except (ValueError, CircuitError, KeyError, TypeError) as e:
        st.error(f"{up.name}: not a run record this dashboard can open ({e}).")

jobs.leave_other_pages()  # a page without jobs of its own: those of pages left behind stop
