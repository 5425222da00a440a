"""Completeness: knock the same parts out of circuit and model — do they still agree?"""
import pandas as pd
import streamlit as st

from circuit_core.completeness import TOLERANCE_PCT, Cols as CC, completeness, completeness_in_stages
from circuit_core.metrics import Metric
from circuit_core.selection import SELECTION_N, Selection
from circuit_core.verdicts import overall
from ui.charts import completeness_scatter, style, verdict_badge, verdict_cell
from ui import jobs
from ui import runs as run_log
from ui.sidebar import sidebar
from ui.state import circuit_json, methodology_caption, require_evaluator

ctx = sidebar()
ev = require_evaluator(ctx)
st.title("Completeness")
st.caption(methodology_caption(ctx))
st.markdown("For K ⊆ C, **C\\K** ablates K's heads everywhere (on top of everything outside C) and **M\\K** "
            "ablates only K's nodes at their kept positions in the intact model. A complete circuit has "
            "|F(C\\K) − F(M\\K)| small for every K: its points sit on the diagonal. Each K gets a verdict from "
            "the 95% interval of the signed difference: **passes** when it lies within ±tolerance, **fails** when "
            "it lies wholly outside, **undecided** when it straddles the tolerance.")

# what the % figures are a share of: F(M), or under KL (F(M) = 0) F(∅) − F(M)
scale_name = Metric(ctx.methodology.metric).scale_name.strip("|")
c0, c1, c2, c3, c4, c5 = st.columns(6)
tolerance = c0.number_input(f"Tolerance (% of {scale_name})", 0.0, 1000.0, TOLERANCE_PCT, step=1.0, key="cmp_tol")
n_random = c1.number_input("Random K sets", 0, 200, 10, key="cmp_random", help="each head in with probability ½")
k = c2.number_input("Greedy: candidates per step", 1, 50, 10, key="cmp_k")
steps = c3.number_input("Greedy: steps", 1, 30, 10, key="cmp_steps")
runs = c4.number_input("Greedy: runs", 1, 30, 10, key="cmp_runs")
sel_n = c5.number_input("Greedy: selection prompts", 1, 2000, SELECTION_N, key="cmp_sel_n",
                        help="the search chooses K on these prompts (their own seed and reference set); "
                             "the chosen K are then scored on the page's prompts")
selection = Selection(n=int(sel_n))
cj = circuit_json(ctx.circuit)
circuit = ctx.circuit


def fixed_families(job):
    """∅, then the classes, then the random sets, then the reference noise in the intervals: each
    stage's figure is shown while the next runs (the evaluator memoises, so no stage recomputes the one before)."""
    for result in completeness_in_stages(ev, circuit, int(n_random), job.progress, job.should_stop,
                                         tolerance_pct=float(tolerance)):
        job.partial.append(result)
    return result


def draw_partial(job):
    if job.partial:
        st.altair_chart(style(completeness_scatter(job.partial[-1].table)), width="stretch")
        st.caption("Filling in: ∅ first, then each class, then the random sets, then the reference set's noise "
                   f"in the intervals. Intervals so far: {job.partial[-1].interval_method}.")


fixed_job = jobs.start(("completeness", ctx.model_key, ctx.methodology, cj, int(n_random), float(tolerance)),
                       "Evaluating K sets (∅, classes, random), then their reference noise", fixed_families)

greedy_key = ("greedy", ctx.model_key, ctx.methodology, cj, int(k), int(steps), int(runs), selection,
              float(tolerance))
b1, b2 = st.columns([1, 4])
if b1.button("Run greedy search", type="primary") or jobs.get(greedy_key) is not None:
    greedy_job = jobs.start(greedy_key, "Greedy search for the worst K",
                            lambda job: completeness(ev, circuit, classes=False, n_random=0, greedy_k=int(k),
                                                     greedy_steps=int(steps), greedy_runs=int(runs),
                                                     selection=selection, tolerance_pct=float(tolerance),
                                                     progress=job.progress, should_stop=job.should_stop))
else:
    greedy_job = None
b2.caption(f"The paper's search: from K = ∅, every step samples k candidates and moves to the one with the largest "
           f"|F(C\\K) − F(M\\K)|, for all {int(steps)} steps (no early stop): {int(runs)} runs × {int(steps)} steps × "
           f"{int(k)} candidates = {int(runs) * int(steps) * int(k)} sets scored. It chooses on {int(sel_n)} selection "
           f"prompts (seed {selection.seed_for(ctx.methodology)}); each run's best K is reported on the page's prompts.")

greedy = jobs.show(greedy_job) if greedy_job is not None else None
fixed = jobs.show(fixed_job, partial=draw_partial)
if fixed is None:
    st.stop()
run_log.log("completeness", ctx, run_log.completeness_summary(fixed), fixed.to_dict())
drawn = fixed.n_random_drawn if fixed.n_random_drawn is not None else int(n_random)
if drawn < int(n_random):
    st.info(f"The circuit has only {drawn} distinct non-empty subsets: {drawn} random K sets are shown, not {int(n_random)}.")
table = fixed.table
if greedy is not None:
    table = pd.concat([table, greedy.table[greedy.table[CC.FAMILY] == "greedy"]], ignore_index=True)
st.altair_chart(style(completeness_scatter(table)), width="stretch")

f_model = fixed.F_model if scale_name == "F(M)" else fixed.scale
verdict = overall([fixed.verdict] + ([greedy.verdict] if greedy is not None else []))
st.markdown(f"{verdict_badge('Completeness', verdict.value)} at ±{tolerance:g}% of {scale_name} = {f_model:.3f}: "
    + {"passes": "every K's interval lies within the tolerance.",
       "fails": "some K's whole interval lies outside the tolerance.",
       "undecided": fixed.no_verdict or "no K fails, but some K's interval straddles the tolerance."
       }[verdict.value])
worst = table.sort_values(CC.INCOMPLETENESS, ascending=False).head(10)
st.subheader("Worst K sets")
st.caption(f"Intervals (points and table): {fixed.interval_method}. diff = F(C\\K) − F(M\\K), its "
           "interval signed; the verdict follows the interval. Greedy K: the 'on selection prompts' column is the "
           "K's score on the prompts that chose it (biased upward); every other figure is on the page's prompts.")
show = worst.assign(**{CC.K: worst[CC.K].apply(lambda k: ", ".join(k) or "∅"),
                      "95% CI of diff": [f"{lo:.3f} – {hi:.3f}" for lo, hi in zip(worst[CC.D_LO], worst[CC.D_HI])]})[
    [CC.FAMILY, CC.NAME, CC.K, CC.F_C_MINUS_K, CC.F_M_MINUS_K, CC.D, "95% CI of diff", CC.INCOMPLETENESS_PCT, CC.VERDICT,
     CC.SELECTION_INCOMPLETENESS]]
st.dataframe(show.rename(columns={CC.F_C_MINUS_K: "F(C\\K)", CC.F_M_MINUS_K: "F(M\\K)", CC.D: "diff",
                                  CC.INCOMPLETENESS_PCT: f"|diff| % of {scale_name}",
                                  CC.SELECTION_INCOMPLETENESS: "|diff| on selection prompts"}).style.format(
    {"F(C\\K)": "{:.3f}", "F(M\\K)": "{:.3f}", "diff": "{:.3f}", f"|diff| % of {scale_name}": "{:.1f}",
     "|diff| on selection prompts": "{:.3f}"}, na_rep="").map(verdict_cell, subset=[CC.VERDICT]),
    hide_index=True, width="stretch")
top = worst.iloc[0]
st.markdown(f"Largest incompleteness: **{top[CC.INCOMPLETENESS]:.3f}** ({top[CC.INCOMPLETENESS_PCT]:.1f}% of "
            f"{scale_name} = {f_model:.3f}) for K = {', '.join(top[CC.K]) or '∅'} ({top[CC.FAMILY]}; {top[CC.VERDICT]}).")
if greedy is None and greedy_job is None:
    st.info("Greedy sets are not shown yet: run the greedy search above.")
elif greedy is not None and greedy.cancelled:
    st.info("The greedy search was stopped: each run's best K before that is shown.")
