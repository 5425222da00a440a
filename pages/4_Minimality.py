"""Minimality: does every head of the circuit matter?"""
import streamlit as st

from circuit_core.minimality import minimality, minimality_in_stages
from ui.charts import minimality_bars, style
from ui import jobs
from ui import runs as run_log
from ui.state import circuit_json, methodology_caption, require_evaluator, sidebar

ctx = sidebar()
ev = require_evaluator(ctx)
st.title("Minimality")
st.caption(methodology_caption(ctx))
st.markdown("For each head v, some K ⊆ C \\\\ {v} should make **|F(C\\\\(K∪{v})) − F(C\\\\K)|** large: removing v "
            "matters once K is gone. Shown as % of F(M); heads under the threshold are passengers.")
c1, c2 = st.columns([3, 1])
labels = {"file": "the circuit file's K (class rule where it has none)", "class": "class rule: K = rest of v's class",
          "search": "search: greedy K maximising the score"}
source = c1.radio("K for each head", list(labels), format_func=labels.get, horizontal=True, key="min_source")
threshold = c2.number_input("Threshold (% of F(M))", 0.0, 100.0, 1.0, step=0.5, key="min_threshold")
cj = circuit_json(ctx.circuit)
circuit = ctx.circuit
key = ("minimality", ctx.model_key, ctx.methodology, cj, source, threshold)
if source == "search" and jobs.get(key) is None and not st.button("Run search", type="primary"):
    st.info("The search evaluates many K sets per head; press 'Run search'.")
    st.stop()


def score_heads(job):
    if source == "search":  # one lockstep search over every head
        return minimality(ev, circuit, k_source=source, threshold_pct=threshold, progress=job.progress,
                          should_stop=job.should_stop)
    for result in minimality_in_stages(ev, circuit, job.progress, job.should_stop, k_source=source,
                                       threshold_pct=threshold):
        job.partial.append(result)  # class by class, drawn while the rest runs
    return result


def draw_partial(job):
    if job.partial:
        st.altair_chart(style(minimality_bars(job.partial[-1].table, circuit, threshold)), width="stretch")
        st.caption("Filling in class by class, then the reference set's noise in the error bars. "
                   f"Error bars so far: {job.partial[-1].settings['interval_method']}.")


job = jobs.start(key, "Searching K for every head" if source == "search" else "Scoring every head", score_heads)
result = jobs.show(job, partial=draw_partial)
if result is None:
    st.stop()
run_log.log("minimality", ctx, run_log.minimality_summary(result), result.to_dict())
if result.cancelled:
    st.info("The search was stopped: each head shows the best K found before that.")

st.altair_chart(style(minimality_bars(result.table, ctx.circuit, threshold)), width="stretch")
st.caption(f"Error bars: 95% intervals, {result.settings['interval_method']}.")
flagged = result.flagged
if flagged:
    st.warning(f"{len(flagged)} head(s) under {threshold:g}% of F(M): {', '.join(flagged)}")
else:
    st.success(f"Every head scores at least {threshold:g}% of F(M) = {result.F_model:.3f}.")
t = result.table.sort_values("pct_of_F_M", ascending=False)
t = t.assign(K=t.K.apply(lambda k: ", ".join(k) or "∅"),
             **{"95% CI (% of F(M))": [f"{lo:.1f} – {hi:.1f}" for lo, hi in zip(t.ci_low_pct, t.ci_high_pct)]})
st.dataframe(t[["head", "class", "K", "k_source", "F_C_minus_K", "F_C_minus_K_and_v", "score", "pct_of_F_M", "95% CI (% of F(M))"]].rename(
    columns={"F_C_minus_K": "F(C\\K)", "F_C_minus_K_and_v": "F(C\\(K∪{v}))", "pct_of_F_M": "% of F(M)"}).style.format(
    {"F(C\\K)": "{:.3f}", "F(C\\(K∪{v}))": "{:.3f}", "score": "{:.3f}", "% of F(M)": "{:.1f}"}),
    hide_index=True, width="stretch")
