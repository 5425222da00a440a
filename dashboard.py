"""Circuit validation dashboard — home: the headline figures and what each criterion asks.

Run with `make run` (or `streamlit run dashboard.py`).
"""
import streamlit as st

from circuit_core.tasks import get_task
from ui import jobs
from ui.headline import figures_or_last, headline
from ui.sidebar import sidebar
from ui.state import methodology_caption, require_evaluator

ctx = sidebar()
require_evaluator(ctx)
st.title("Circuit validation")
st.caption(methodology_caption(ctx))
f, _ = figures_or_last(ctx)
if f is not None:
    headline(ctx, f)

st.markdown(
    """
A circuit claim says: *these heads, in these classes, at these positions, do the task.* Wang et al.
(2022) test it by **mean-ablating everything outside the circuit** and asking three questions.
"""
)
c1, c2, c3 = st.columns(3)
with c1:
    st.subheader("Faithfulness")
    st.markdown("Does the circuit alone reproduce the model? Compare F(C) with F(M); the paper's IOI "
                "circuit keeps 87% of GPT-2 small's logit difference.")
    st.page_link("pages/2_Faithfulness.py", label="Faithfulness →")
with c2:
    st.subheader("Completeness")
    st.markdown("Does it behave like the model when parts are knocked out of both? For K ⊆ C, "
                "|F(C\\\\K) − F(M\\\\K)| should be small for every K.")
    st.page_link("pages/3_Completeness.py", label="Completeness →")
with c3:
    st.subheader("Minimality")
    st.markdown("Does every head matter? For each head v some K should make "
                "|F(C\\\\(K∪{v})) − F(C\\\\K)| large.")
    st.page_link("pages/4_Minimality.py", label="Minimality →")
st.divider()
st.page_link("pages/1_Circuit_editor.py", label="Edit the circuit: click heads in and out, change classes →")
if f is not None:
    acc = (f"{f.accuracy_model:.0%} of prompts have {get_task(ctx.methodology.task).accuracy_label} in the model, "
           f"{f.accuracy_circuit:.0%} in the circuit.")
    st.caption(acc + " Faithfulness is a ratio of means.")

jobs.leave_other_pages()  # when the headline started no job here, those of pages left behind stop too
