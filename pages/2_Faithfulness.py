"""Faithfulness: does the circuit alone reproduce the model?"""
import numpy as np
import pandas as pd
import streamlit as st

from circuit_core.ablation import Ablation, PositionScope
from circuit_core.criteria import breakdown_by_group
from ui.charts import by_group, distribution, intervals, style
from ui.headline import faithfulness_of, headline
from ui.state import faithfulness_result, circuit_json, methodology_caption, require_evaluator, sidebar

ctx = sidebar()
ev = require_evaluator(ctx)
st.title("Faithfulness")
st.caption(methodology_caption(ctx))
f = faithfulness_of(ctx)
headline(ctx, f)
st.markdown(f"The circuit keeps **{f['ratio']:.1%}** of the model's logit difference "
            f"(gap F(M) − F(C) = {f['gap']:.3f}, 95% CI [{f['intervals_95']['gap'][0]:.3f}, "
            f"{f['intervals_95']['gap'][1]:.3f}]). With every head ablated F(∅) = {f['F_empty']:.3f}.")

st.altair_chart(style(distribution(f["per_prompt"])), width="stretch")
st.caption("Each prompt's logit difference: the model, the circuit alone, and every head ablated. "
           "A faithful circuit's distribution lies on the model's, not only its mean.")

st.subheader("By template and order")
per_prompt = {k: np.array(v) for k, v in f["per_prompt"].items()}
st.altair_chart(style(by_group(breakdown_by_group(ev.dataset, per_prompt))), width="stretch")
orders = pd.DataFrame([{"order": o, "n": s["n"], "F(M)": s["F_model"], "F(C)": s["F_circuit"],
                        "F(C)/F(M)": s["ratio"], "normalised": s["normalized"]} for o, s in f["by_order"].items()])
st.dataframe(orders.style.format({"F(M)": "{:.3f}", "F(C)": "{:.3f}", "F(C)/F(M)": "{:.1%}", "normalised": "{:.1%}"}),
             hide_index=True, width="stretch")
st.caption(f"Groups hold {ev.dataset.meta['min_group_size']}+ prompts each; per-group means rest on them.")

st.subheader("Sensitivity to methodology")
st.markdown("The same circuit under every ablation kind and position scope (Miller et al. 2024 show these "
            "choices move the number a lot).")
if st.toggle("Compute the sensitivity panel", key="sens_on", help="8 evaluations of M, C and ∅"):
    rows = []
    choices = [(a.value, p.value) for p in PositionScope for a in Ablation]
    bar = st.progress(0.0, text="Recomputing under other methodologies…")
    for i, (abl, pos) in enumerate(choices):
        m = ctx.methodology.replace(ablation=abl, positions=pos)
        r = faithfulness_result(ctx.model_key, m, circuit_json(ctx.circuit))
        lo, hi = r["intervals_95"]["ratio"]
        rows.append({"methodology": f"{abl} · {pos} positions" + (" (current)" if m == ctx.methodology else ""),
                     "F(C)/F(M)": r["ratio"], "lo": lo, "hi": hi, "F(C)": r["F_circuit"], "F(M)": r["F_model"]})
        bar.progress((i + 1) / len(choices), text=f"{abl} · {pos}")
    bar.empty()
    table = pd.DataFrame(rows)
    st.altair_chart(style(intervals(table, "F(C)/F(M)", "lo", "hi", "methodology",
                                    "Faithfulness F(C)/F(M) under each methodology", "F(C)/F(M) with 95% CI")),
                    width="stretch")
    st.dataframe(table.style.format({"F(C)/F(M)": "{:.1%}", "lo": "{:.1%}", "hi": "{:.1%}", "F(C)": "{:.3f}",
                                     "F(M)": "{:.3f}"}), hide_index=True, width="stretch")
