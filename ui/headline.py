"""Headline figures shared by the home page and the editor."""
from __future__ import annotations

import logging

import numpy as np
import streamlit as st

from circuit_core.criteria import Faithfulness, FaithfulnessFigures, undefined_reason
from circuit_core.tasks import TaskError
from ui import format as fmt
from ui import jobs, runs
from ui.state import Context, circuit_json, faithfulness_result, get_evaluator


def faithfulness_of(ctx: Context, circuit=None) -> Faithfulness:
    """The figures at once, with prompts-only intervals (see `with_reference_noise`)."""
    return faithfulness_result(ctx.model_key, ctx.methodology, circuit_json(circuit or ctx.circuit))


def with_reference_noise(ctx: Context, f: Faithfulness, wait: float = 1.0) -> Faithfulness:
    """`f` with intervals that include the reference set's noise, once a background job has them
    (one evaluation of C and ∅ per reference replicate); until then `f`, with the job's progress."""
    ev = get_evaluator(ctx.model_key, ctx.methodology)
    if not ev.replicates:
        runs.log("faithfulness", ctx, runs.faithfulness_summary(f), f.to_dict())
        return f
    circuit = ctx.circuit
    key = ("joint", ctx.model_key, ctx.methodology, circuit_json(circuit))
    jobs.stop_others("joint", key)  # an older edit's intervals are not worth the CPU

    def run(job):
        from circuit_core.criteria import faithfulness

        return faithfulness(ev, circuit, progress=job.progress, should_stop=job.should_stop)

    job = jobs.start(key, "Adding the reference set's noise to the intervals", run)
    f = jobs.show(job, wait) or f
    runs.log("faithfulness", ctx, runs.faithfulness_summary(f), f.to_dict())
    return f


ci = fmt.ci  # the report prints intervals the same way


def ratio_figure(f: FaithfulnessFigures, key: str) -> tuple[str, str]:
    """(value, caption) of a ratio in percent with its interval, or ("undefined", why): a ratio whose
    denominator is indistinguishable from 0 has no number to show, not even a wrong one."""
    why = undefined_reason(f, key)
    return ("undefined", why) if why else (fmt.pct(getattr(f, key)), ci(f, key, percent=True))


def _change(f: Faithfulness, before: Faithfulness | None, key: str, text: str) -> str | None:
    """The change in points since `before`, when both figures are numbers."""
    if before is None or undefined_reason(f, key) or undefined_reason(before, key):
        return None
    return f"{100 * (getattr(f, key) - getattr(before, key)):+.1f} pts {text}"


def headline(ctx: Context, f: Faithfulness, previous: Faithfulness | None = None,
             preset: Faithfulness | None = None) -> None:
    """F(M), F(C), F(C)/F(M) and the normalised score as metrics, with changes when given."""
    cols = st.columns(4)
    from circuit_core.tasks import get_task

    from circuit_core.metrics import Metric

    what = Metric(ctx.methodology.metric).what(get_task(ctx.methodology.task).metric)
    cols[0].metric("F(M) — model", f"{f.F_model:.3f}", help=f"mean {what}, nothing ablated")
    cols[0].caption(ci(f, "F_model"))
    delta = None if previous is None else f"{f.F_circuit - previous.F_circuit:+.3f} since last edit"
    cols[1].metric("F(C) — circuit", f"{f.F_circuit:.3f}", delta)
    cols[1].caption(ci(f, "F_circuit"))
    value, caption = ratio_figure(f, "ratio")
    cols[2].metric("Faithfulness F(C)/F(M)", value, _change(f, previous, "ratio", "since last edit"))
    cols[2].caption(caption)
    changed = preset is not None and not np.array_equal(preset.per_prompt["circuit"], f.per_prompt["circuit"])
    value, caption = ratio_figure(f, "normalized")
    cols[3].metric("Normalised (F(C)−F(∅))/(F(M)−F(∅))", value,
                   _change(f, preset if changed else None, "normalized", "vs loaded circuit"))
    cols[3].caption(caption + f" · F(∅) = {f.F_empty:.2f}")
    st.caption(f"95% intervals: {f.interval_method or 'paired bootstrap over prompts'}.")


def figures_or_last(ctx: Context) -> tuple[Faithfulness | None, bool]:
    """(figures, fresh): the current circuit's figures; when computing them fails, an error saying why
    and the last figures this session had for this circuit entry (None if none), so a failed
    computation leaves the figures on screen with the error beside them instead of a blank page."""
    try:
        f = with_reference_noise(ctx, faithfulness_of(ctx))
    except Exception as e:  # Streamlit's stop and rerun are BaseExceptions: they pass through
        logging.getLogger(__name__).exception("headline figures failed")
        why = str(e) if isinstance(e, (ValueError, TaskError)) else f"{type(e).__name__} (details in the server's log)"
        last = ctx.edits.last_figures
        st.error(f"The figures for this circuit could not be computed: {why}"
                 + ("  \nShown: the last figures that could be computed, for an earlier circuit or setting." if last else ""))
        return last, False
    ctx.edits.last_figures = f
    return f, True
