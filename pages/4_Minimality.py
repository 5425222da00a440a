"""Minimality: does every head of the circuit matter?"""
import streamlit as st

from circuit_core.minimality import minimality
from ui.charts import minimality_bars, style
from ui.state import (circuit_json, methodology_caption, minimality_result, progress_callback, require_evaluator,
                      sidebar)

ctx = sidebar()
ev = require_evaluator(ctx)
st.title("Minimality")
st.caption(methodology_caption(ctx))
st.markdown("For each head v, some K ⊆ C \\ {v} should make **|F(C\\(K∪{v})) − F(C\\K)|** large: removing v "
            "matters once K is gone. Shown as % of F(M); heads under the threshold are passengers.")
c1, c2 = st.columns([3, 1])
labels = {"file": "the circuit file's K (class rule where it has none)", "class": "class rule: K = rest of v's class",
          "search": "search: greedy K maximising the score"}
source = c1.radio("K for each head", list(labels), format_func=labels.get, horizontal=True, key="min_source")
threshold = c2.number_input("Threshold (% of F(M))", 0.0, 100.0, 1.0, step=0.5, key="min_threshold")
cj = circuit_json(ctx.circuit)
if source == "search":
    store = st.session_state.setdefault("min_search", {})
    key = (ctx.model_key, ctx.methodology, cj, threshold)
    if st.button("Run search", type="primary") or key in store:
        if key not in store:
            bar, update = progress_callback("Searching K for every head (any click stops it)")
            store[key] = minimality(ev, ctx.circuit, k_source="search", threshold_pct=threshold, progress=update)
            bar.empty()
        result = store[key]
    else:
        st.info("The search evaluates many K sets per head; press 'Run search'.")
        st.stop()
else:
    result = minimality_result(ctx.model_key, ctx.methodology, cj, source, threshold)

st.altair_chart(style(minimality_bars(result.table, ctx.circuit, threshold)), width="stretch")
flagged = result.flagged
if flagged:
    st.warning(f"{len(flagged)} head(s) under {threshold:g}% of F(M): {', '.join(flagged)}")
else:
    st.success(f"Every head scores at least {threshold:g}% of F(M) = {result.F_model:.3f}.")
t = result.table.sort_values("pct_of_F_M", ascending=False)
t = t.assign(K=t.K.apply(lambda k: ", ".join(k) or "∅"))
st.dataframe(t[["head", "class", "K", "k_source", "F_C_minus_K", "F_C_minus_K_and_v", "score", "pct_of_F_M"]].rename(
    columns={"F_C_minus_K": "F(C\\K)", "F_C_minus_K_and_v": "F(C\\(K∪{v}))", "pct_of_F_M": "% of F(M)"}).style.format(
    {"F(C\\K)": "{:.3f}", "F(C\\(K∪{v}))": "{:.3f}", "score": "{:.3f}", "% of F(M)": "{:.1f}"}),
    hide_index=True, width="stretch")
