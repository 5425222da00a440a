"""Minimality: does every head of the circuit matter?"""
import streamlit as st

from circuit_core.metrics import Metric
from circuit_core.minimality import minimality, minimality_in_stages
from circuit_core.selection import SELECTION_N, Selection
from ui.charts import minimality_bars, style, verdict_badge, verdict_cell
from ui import jobs
from ui import runs as run_log
from ui.sidebar import sidebar
from ui.state import circuit_json, methodology_caption, require_evaluator

ctx = sidebar()
ev = require_evaluator(ctx)
st.title("Minimality")
st.caption(methodology_caption(ctx))
# what the % figures are a share of: F(M), or under KL (F(M) = 0) F(∅) − F(M)
scale_name = Metric(ctx.methodology.metric).scale_name.strip("|")
st.markdown("For each head v, some K ⊆ C \\\\ {v} should make **|F(C\\\\(K∪{v})) − F(C\\\\K)|** large: removing v "
            f"matters once K is gone. Shown as % of {scale_name}. Each head gets a verdict from the 95% interval of the "
            "signed difference: **passes** when it lies beyond ±threshold, **fails** (a passenger) when it lies "
            "within, **undecided** when it straddles the threshold.")
c1, c2 = st.columns([3, 1])
labels = {"file": "the circuit file's K (class rule where it has none)", "class": "class rule: K = rest of v's class",
          "search": "search: greedy K maximising the score"}
source = c1.radio("K for each head", list(labels), format_func=labels.get, horizontal=True, key="min_source")
threshold = c2.number_input(f"Threshold (% of {scale_name})", 0.0, 100.0, 1.0, step=0.5, key="min_threshold")
cj = circuit_json(ctx.circuit)
circuit = ctx.circuit
selection = Selection()
if source == "search":
    sel_n = st.number_input("Search: selection prompts", 1, 2000, SELECTION_N, key="min_sel_n",
                            help="the search chooses each head's K on these prompts (their own seed and reference "
                                 "set); the chosen K are then scored on the page's prompts")
    selection = Selection(n=int(sel_n))
    st.caption(f"The paper's greedy search, every step taken (10 steps × 10 candidates per head), on {int(sel_n)} "
               f"selection prompts (seed {selection.seed_for(ctx.methodology)}); the bars are the chosen K on the "
               "page's prompts.")
key = ("minimality", ctx.model_key, ctx.methodology, cj, source, threshold, selection)
if source == "search" and jobs.get(key) is None and not st.button("Run search", type="primary"):
    st.info("The search evaluates many K sets per head; press 'Run search'.")
    st.stop()


def score_heads(job):
    if source == "search":  # one lockstep search over every head
        return minimality(ev, circuit, k_source=source, threshold_pct=threshold, progress=job.progress,
                          should_stop=job.should_stop, selection=selection)
    for result in minimality_in_stages(ev, circuit, job.progress, job.should_stop, k_source=source,
                                       threshold_pct=threshold):
        job.partial.append(result)  # class by class, drawn while the rest runs
    return result


def draw_partial(job):
    if job.partial:
        st.altair_chart(style(minimality_bars(job.partial[-1].table, circuit, threshold, scale_name)), width="stretch")
        st.caption("Filling in class by class, then the reference set's noise in the error bars. "
                   f"Error bars so far: {job.partial[-1].interval_method}.")


job = jobs.start(key, "Searching K for every head" if source == "search" else "Scoring every head, then the reference noise",
                 score_heads)
result = jobs.show(job, partial=draw_partial)
if result is None:
    st.stop()
run_log.log("minimality", ctx, run_log.minimality_summary(result), result.to_dict())
if result.cancelled:
    st.info("The search was stopped: each head shows the best K found before that.")

st.altair_chart(style(minimality_bars(result.table, ctx.circuit, threshold, scale_name)), width="stretch")
st.caption(f"Error bars: 95% intervals, {result.interval_method}.")
flagged, undecided = result.flagged, result.undecided
st.markdown(f"{verdict_badge('Minimality', result.verdict.value)} at {threshold:g}% of {scale_name} = "
            f"{result.F_model if scale_name == 'F(M)' else result.scale:.3f}: "
    + (f"{len(flagged)} head(s) fail — their whole interval lies under the threshold: {', '.join(flagged)}. "
       if flagged else "")
    + (f"{len(undecided)} head(s) undecided — their interval straddles it: {', '.join(undecided)}."
       if undecided else "")
    + ("every head's interval lies beyond the threshold." if not flagged and not undecided else "")
    + (f" {result.no_verdict}." if result.no_verdict else ""))
t = result.table.sort_values("pct_of_F_M", ascending=False)
t = t.assign(K=t.K.apply(lambda k: ", ".join(k) or "∅"),
             **{"95% CI of diff": [f"{lo:.3f} – {hi:.3f}" for lo, hi in zip(t.d_lo, t.d_hi)]})
cols = ["head", "class", "K", "k_source", "F_C_minus_K", "F_C_minus_K_and_v", "d", "95% CI of diff", "pct_of_F_M",
        "verdict"] + (["selection_score"] if source == "search" else [])
st.dataframe(t[cols].rename(
    columns={"F_C_minus_K": "F(C\\K)", "F_C_minus_K_and_v": "F(C\\(K∪{v}))", "d": "diff",
             "pct_of_F_M": f"|diff| % of {scale_name}", "selection_score": "|diff| on selection prompts"}).style.format(
    {"F(C\\K)": "{:.3f}", "F(C\\(K∪{v}))": "{:.3f}", "diff": "{:.3f}", f"|diff| % of {scale_name}": "{:.1f}",
     "|diff| on selection prompts": "{:.3f}"}, na_rep="").map(verdict_cell, subset=["verdict"]),
    hide_index=True, width="stretch")
if source == "search":
    st.caption("'on selection prompts': the K's score on the prompts that chose it (biased upward); every other "
               "figure is on the page's prompts.")
