"""Headline figures shared by the home page and the editor."""
from __future__ import annotations

import streamlit as st

from ui import jobs
from ui.state import Context, circuit_json, faithfulness_result, get_evaluator


def faithfulness_of(ctx: Context, circuit=None) -> dict:
    """The figures at once, with prompts-only intervals (see `with_reference_noise`)."""
    return faithfulness_result(ctx.model_key, ctx.methodology, circuit_json(circuit or ctx.circuit))


def with_reference_noise(ctx: Context, f: dict, wait: float = 1.0) -> dict:
    """`f` with intervals that include the reference set's noise, once a background job has them
    (one evaluation of C and ∅ per reference replicate); until then `f`, with the job's progress."""
    ev = get_evaluator(ctx.model_key, ctx.methodology)
    if not ev.replicates:
        return f
    circuit = ctx.circuit
    key = ("joint", ctx.model_key, ctx.methodology, circuit_json(circuit))
    jobs.stop_others("joint", key)  # an older edit's intervals are not worth the CPU

    def run(job):
        from circuit_core.criteria import faithfulness

        return faithfulness(ev, circuit, progress=job.progress, should_stop=job.should_stop).to_dict()

    job = jobs.start(key, "Adding the reference set's noise to the intervals", run)
    return jobs.show(job, wait) or f


def ci(f: dict, key: str, percent: bool = False) -> str:
    """The 95% interval in the unit of the figure beside it."""
    lo, hi = f["intervals_95"][key]
    return f"95% CI [{lo:.1%}, {hi:.1%}]" if percent else f"95% CI [{lo:.2f}, {hi:.2f}]"


def headline(ctx: Context, f: dict, previous: dict | None = None, preset: dict | None = None) -> None:
    """F(M), F(C), F(C)/F(M) and the normalised score as metrics, with changes when given."""
    cols = st.columns(4)
    cols[0].metric("F(M) — model", f"{f['F_model']:.3f}", help="mean logit[IO] − logit[S] at END, nothing ablated")
    cols[0].caption(ci(f, "F_model"))
    delta = None if previous is None else f"{f['F_circuit'] - previous['F_circuit']:+.3f} since last edit"
    cols[1].metric("F(C) — circuit", f"{f['F_circuit']:.3f}", delta)
    cols[1].caption(ci(f, "F_circuit"))
    delta = None if previous is None else f"{100 * (f['ratio'] - previous['ratio']):+.1f} pts since last edit"
    cols[2].metric("Faithfulness F(C)/F(M)", f"{f['ratio']:.1%}", delta)
    cols[2].caption(ci(f, "ratio", percent=True))
    changed = preset is not None and preset["per_prompt"]["circuit"] != f["per_prompt"]["circuit"]
    delta = f"{100 * (f['normalized'] - preset['normalized']):+.1f} pts vs loaded circuit" if changed else None
    cols[3].metric("Normalised (F(C)−F(∅))/(F(M)−F(∅))", f"{f['normalized']:.1%}", delta)
    cols[3].caption(ci(f, "normalized", percent=True) + f" · F(∅) = {f['F_empty']:.2f}")
    st.caption(f"95% intervals: {f.get('interval_method') or 'paired bootstrap over prompts'}.")
