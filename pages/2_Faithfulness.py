"""Faithfulness: does the circuit alone reproduce the model?"""
import numpy as np
import pandas as pd
import streamlit as st

from circuit_core.ablation import Ablation, PositionScope
from circuit_core.criteria import TAU_SHARE, breakdown_by_group, undefined_reason, worst_prompts
from circuit_core.metrics import Metric
from circuit_core.baseline import random_circuit_baseline
from circuit_core.tasks import get_task
from ui.charts import baseline_histogram, by_group, distribution, intervals, style
from ui import jobs
from ui.headline import faithfulness_of, headline, ratio_figure, with_reference_noise
from ui.sidebar import sidebar
from ui.state import circuit_json, methodology_caption, require_evaluator



def sensitivity_job(ctx):
    """A job body: rows as they come. Evaluators from the model's bounded cache: the current one is
    reused, and the two position scopes of an ablation are variants of one evaluator (same tables,
    M and ∅ computed once)."""
    from circuit_core.criteria import faithfulness

    model, circuit, current = ctx.model, ctx.circuit, ctx.methodology

    def run(job):
        job.progress(0, len(Ablation) * len(PositionScope))
        for a in Ablation:
            for p in PositionScope:
                m = current.replace(ablation=a.value, positions=p.value)
                r = faithfulness(model.evaluators.get(m), circuit)
                lo, hi = r.interval("ratio")  # NaN where undefined: the table shows the word and the reason
                job.partial.append({"methodology": f"{a.value} · {p.value} positions" + (" (current)" if m == current else ""),
                                    "F(C)/F(M)": r.ratio, "lo": lo, "hi": hi, "F(C)": r.F_circuit, "F(M)": r.F_model,
                                    "undefined because": undefined_reason(r, "ratio") or ""})
                job.progress(len(job.partial), job.total)
        return list(job.partial)

    return run


def draw_sensitivity(rows):
    if not rows:
        return
    table = pd.DataFrame(rows)
    defined = table[table["F(C)/F(M)"].notna()]  # an undefined ratio has no point to draw
    if len(defined):
        st.altair_chart(style(intervals(defined, "F(C)/F(M)", "lo", "hi", "methodology",
                                        "Faithfulness F(C)/F(M) under each methodology", "F(C)/F(M) with 95% CI")),
                        width="stretch")
    st.dataframe(table.style.format({"F(C)/F(M)": "{:.1%}", "lo": "{:.1%}", "hi": "{:.1%}", "F(C)": "{:.3f}",
                                     "F(M)": "{:.3f}"}, na_rep="undefined"), hide_index=True, width="stretch")


ctx = sidebar()
ev = require_evaluator(ctx)
st.title("Faithfulness")
st.caption(methodology_caption(ctx))
f = with_reference_noise(ctx, faithfulness_of(ctx))
headline(ctx, f)


def _said(key: str, what: str) -> str:
    """A ratio in a sentence: its value and interval, or that it is undefined and why."""
    value, caption = ratio_figure(f, key)
    return f"{what} is **undefined** ({caption})" if value == "undefined" else f"{what} is **{value}** ({caption})"


n_prompts = f.n
metric = Metric(ctx.methodology.metric)
if metric is Metric.KL:  # F(M) = 0: the normalised score is the faithfulness figure
    st.markdown(f"{_said('normalized', 'The normalised score (F(C) − F(∅))/(F(M) − F(∅)) = 1 − F(C)/F(∅)')}; "
                f"{_said('ratio', 'the ratio F(C)/F(M)')}. The circuit's KL from the model is F(C) = {f.F_circuit:.3f} "
                f"nats (95% CI {f.interval('F_circuit').lo:.3f} – {f.interval('F_circuit').hi:.3f}); with every head "
                f"ablated F(∅) = {f.F_empty:.3f} nats.")
else:
    st.markdown(f"{_said('ratio', 'The ratio of means F(C)/F(M)')}. Per prompt, "
                f"{_said('median_of_ratios', 'the median of f_C / f_M')}, "
                f"over the prompts where the model's own {metric.short} clears τ = {f.median_of_ratios_tau:.3f} "
                f"({TAU_SHARE:.0%} of the median |f_M|): **{f.median_of_ratios_excluded} of {n_prompts} prompts excluded** "
                f"(f_M ≤ τ: near zero or wrong, where a ratio is noise). "
                f"Gap F(M) − F(C) = {f.gap:.3f} (95% CI {f.interval('gap').lo:.3f} – {f.interval('gap').hi:.3f}). "
                f"With every head ablated F(∅) = {f.F_empty:.3f}.")

st.altair_chart(style(distribution(f.per_prompt, metric.what(get_task(ctx.methodology.task).metric), metric.unit,
                                   metric.short)), width="stretch")
st.caption(f"Each prompt's {metric.short}: the model, the circuit alone, and every head ablated. "
           "A faithful circuit's distribution lies on the model's, not only its mean.")
q = pd.DataFrame(f.quartiles(), columns=["run", "25%", "median", "75%"])
if len(q):
    st.dataframe(q.style.format({"25%": "{:.3f}", "median": "{:.3f}", "75%": "{:.3f}"}), hide_index=True)

per_prompt = f.per_prompt
st.subheader("Worst prompts")
st.dataframe(worst_prompts(ev.dataset, per_prompt, metric=metric.value).style.format({"f_M": "{:.3f}", "f_C": "{:.3f}", "f_M − f_C": "{:.3f}"}),
             hide_index=True, width="stretch")
st.caption(f"The prompts where the circuit falls furthest from the model ({metric.label}).")

task = get_task(ctx.methodology.task)
st.subheader(task.breakdown_label)
reps = f.replicates
st.altair_chart(style(by_group(breakdown_by_group(ev.dataset, per_prompt, ctx.methodology.bootstrap,
                                                  ctx.methodology.seed, reps), task.group_label[0],
                               f"mean {metric.abbr} ({metric.unit})")), width="stretch")
st.caption("Intervals per group: bootstrap over the group's prompts"
           + (f", jointly with {len(reps)} replicates of the reference set." if reps else
              " (reference-set noise not included)."))


if f.by_order:  # only a task whose prompts come in orders (IOI: ABBA, BABA)
    orders = pd.DataFrame([{"order": o, "n": s.n, "F(M)": s.F_model, "F(C)": s.F_circuit,
                            **dict(zip(("F(C)/F(M)", "95% CI"), ratio_figure(s, "ratio"))),
                            **dict(zip(("normalised", "95% CI "), ratio_figure(s, "normalized")))}
                           for o, s in f.by_order.items()])  # an undefined ratio: the word, the reason beside it
    st.dataframe(orders.style.format({"F(M)": "{:.3f}", "F(C)": "{:.3f}"}), hide_index=True, width="stretch")
st.caption(f"Each {task.group_label[0]} holds {ev.dataset.min_group_size}+ prompts; per-{task.group_label[0]} means rest on them.")

st.subheader("Against random circuits of the same shape")
n_random = st.number_input("Random circuits", 0, 500, 50, step=10, key="baseline_n",
                           help="Each keeps as many heads per layer as C, drawn at random, at C's positions.")
if n_random:
    circuit, key = ctx.circuit, ("baseline", ctx.model_key, ctx.methodology, circuit_json(ctx.circuit), int(n_random))
    jobs.stop_others("baseline", key)  # a baseline for a circuit no longer shown is not worth the CPU
    job = jobs.start(key,
                     "Evaluating random circuits",
                     lambda job: random_circuit_baseline(ev, circuit, int(n_random), progress=job.progress,
                                                         should_stop=job.should_stop))
    b = jobs.show(job)
    if b is not None:
        if f.interval("F_model").straddles_zero:  # the same F(M): over an F(M) that may be 0, no ratio
            median = "undefined, F(M) is indistinguishable from 0"
            st.info(f"No histogram of F/F(M): {f.undefined.get('ratio') or 'F(M) is indistinguishable from 0'}.")
        else:
            median = f"{np.median(b.F_random) / b.F_model:.1%}"
            st.altair_chart(style(baseline_histogram(b.F_random, b.F_circuit, b.F_model)), width="stretch")
        st.caption(f"{b.share_at_least_as_good:.0%} of {len(b.F_random)} random circuits with C's number of heads "
                   f"per layer are at least as faithful as C (median F/F(M) of the random ones: {median}).")

st.subheader("Sensitivity to methodology")
st.markdown("The same circuit under every ablation kind and position scope (Miller et al. 2024 show these "
            "choices move the number a lot).")
if st.toggle("Compute the sensitivity panel", key="sens_on", help="M, C and ∅ under 4 ablations × 2 position scopes"):
    job = jobs.start(("sensitivity", ctx.model_key, ctx.methodology, circuit_json(ctx.circuit)),
                     "Recomputing under other methodologies", sensitivity_job(ctx))
    done = jobs.show(job, partial=lambda j: draw_sensitivity(j.partial))
    if done is not None:
        draw_sensitivity(done)
