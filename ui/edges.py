"""The editor's edges: the class diagram with every candidate edge weighted by its path-patching effect
(a background job), and clicks or a list that keep or remove edges as edits (so Undo takes them back)."""
from __future__ import annotations

import json

import streamlit as st

from circuit_core.circuit import CircuitError
from circuit_core.criteria import edge_effects as removal_effects
from circuit_core.editing import toggle_edge
from circuit_core.evidence import EVIDENCE_PAIRS, edge_effects
from ui import jobs
from ui.charts import style
from ui.diagram import candidate_edges, edge_diagram, edge_id, kept_edges
from ui.state import Context, circuit_json, get_evaluator


def edges_job(ctx: Context, n: int = EVIDENCE_PAIRS) -> jobs.Job:
    """Every candidate edge's effect on n prompt pairs of the selection prompts (as the patching maps: edges
    chosen by their effect are then scored on the report prompts). An edge's effect does not depend on which
    edges are kept, so keeping or removing edges reuses the job; adding a head starts a new one."""
    from circuit_core import patching as pt
    from circuit_core.selection import Selection
    from ui.background import selection_seed

    model, circuit = ctx.model, ctx.circuit
    meth = Selection(n, selection_seed(ctx)).methodology(ctx.methodology)
    candidates = candidate_edges(circuit)
    classes = json.dumps([[c.name, c.position, sorted(c.heads)] for c in circuit.classes])
    key = ("edges", ctx.model_key, (meth.task, meth.n, meth.seed, meth.mode, meth.prepend_bos, meth.metric), classes,
           tuple(map(edge_id, candidates)))
    jobs.stop_others("edges", key)
    return jobs.start(key, "Path patching every edge", lambda job: edge_effects(
        model, pt.paired_dataset(model, meth), circuit, candidates, seed=meth.seed, progress=job.progress,
        should_stop=job.should_stop, metric=meth.metric))


def evidence_job(ctx: Context, circuit, prompts_text: str = "0, 1, 2", n: int = EVIDENCE_PAIRS) -> jobs.Job:
    """Each class's evidence (circuit_core.evidence) on n prompt pairs of the report's seed, the prompts in
    `prompts_text` (indices, up to 6) shown one by one: the Report page's section."""
    from circuit_core.evidence import circuit_evidence
    from circuit_core import patching as pt
    from ui.state import circuit_json

    prompts = tuple(dict.fromkeys(int(x) for x in str(prompts_text).replace(",", " ").split() if x.isdigit()))[:6]
    meth = ctx.methodology.replace(n=min(ctx.methodology.n, n))
    key = ("evidence", ctx.model_key, meth, circuit_json(circuit), prompts or (0,))
    jobs.stop_others("evidence", key)
    model = ctx.model
    return jobs.start(key, "Gathering the evidence for each class", lambda job: circuit_evidence(
        model, pt.paired_dataset(model, meth), circuit, prompts or (0,), seed=meth.seed, progress=job.progress,
        should_stop=job.should_stop, metric=meth.metric))


def edge_panel(ctx: Context, commit) -> None:
    """The diagram (click an edge to keep or remove it) and, beside it, the same as a list."""
    circuit, edits = ctx.circuit, ctx.edits
    st.subheader("Edges")
    candidates = candidate_edges(circuit)
    if not candidates:
        st.caption("No edges: the circuit needs classes with heads.")
        return
    job = edges_job(ctx)
    job.wait(1.0)
    effects = job.result if not job.running else None
    by_id = {edge_id(e): e for e in candidates}
    left, right = st.columns([3, 2], gap="large")
    with left:
        import altair as alt

        pick = alt.selection_point(fields=["id"], name="edge", on="click", clear=False)
        event = st.altair_chart(style(edge_diagram(circuit, effects, pick, ctx.model.n_layers)), on_select="rerun",
                                selection_mode="edge", key=f"edges-{edits.version}", width="stretch")
        picked = (event.selection.get("edge") if event and event.selection else None) or []
        if picked and picked[0].get("id") in by_id:
            _apply(commit, toggle_edge(circuit, by_id[picked[0]["id"]]))
        if job.running or effects is None:
            jobs.show(job, wait=0)
        else:
            st.caption(f"Width: the share of F(clean) − F(corrupted) lost when the sender class's heads, patched "
                       f"together from the corrupted twin (every other head frozen), reach only the receiver's "
                       f"queries at its position, its keys or values at every position, or the logits: Wang et al.'s path patching. "
                       f"F(clean) {effects.F_clean:.3f}, F(corrupted) {effects.F_corrupted:.3f} on {effects.n} "
                       "prompt pairs of the selection prompts; hover an edge for its 95% interval "
                       f"({effects.interval_method}). Dashed grey: removed. A click keeps or removes an edge.")
    with right:
        kept = kept_edges(circuit)
        labels = {e.label(): e for e in candidates}
        effect_of = (lambda e: "" if effects is None or effects.of(e) is None else
                     f"  {effects.of(e).effect:+.2f} [{effects.of(e).interval.lo:+.2f}, {effects.of(e).interval.hi:+.2f}]")
        chosen = st.multiselect("Kept edges", list(labels), default=[l for l, e in labels.items() if e in kept],
                                key=f"edge-list-{edits.version}", format_func=lambda l: l + effect_of(labels[l]),
                                help="The circuit's edges: remove one to ablate it (its sender's ablation value "
                                     "reaches that receiver), add it back to keep it. Without an edge list every "
                                     "edge among the circuit's classes is kept.")
        wanted = {labels[l] for l in chosen}
        if wanted != kept:
            new = circuit
            for e in [e for e in candidates if (e in wanted) != (e in kept)]:
                new = toggle_edge(new, e)
            _apply(commit, new)
        st.caption(f"{len(kept)} of {len(candidates)} edges kept" + (" (no edge list: every edge)"
                                                                     if circuit.edges is None else "") + ".")
        if circuit.edges:
            removal_table(ctx)


def removal_job(ctx: Context) -> jobs.Job:
    """criteria.edge_effects on the report prompts: what removing each kept edge does to F(C)."""
    circuit, meth = ctx.circuit, ctx.methodology
    key = ("edge-removal", ctx.model_key, meth, circuit_json(circuit))
    jobs.stop_others("edge-removal", key)
    ev = get_evaluator(ctx.model_key, meth)
    return jobs.start(key, "Removing each kept edge", lambda job: removal_effects(
        ev, circuit, progress=job.progress, should_stop=job.should_stop))


def removal_table(ctx: Context) -> None:
    """Each kept edge's F(C) − F(C without it), with its 95% interval: the change a click on it would make."""
    job = removal_job(ctx)
    job.wait(1.0)
    if job.running or job.result is None:
        jobs.show(job, wait=0)
        return
    table = job.result
    shown = table.assign(**{"F(C) − F(C without it)": [
        f"{e:+.3f} [{lo:+.3f}, {hi:+.3f}]" for e, lo, hi in zip(table.effect, table.ci_low, table.ci_high)]})
    st.dataframe(shown[["edge", "F(C) − F(C without it)"]], hide_index=True, width="stretch")
    st.caption("Removing one kept edge at a time, on the report prompts: the change in F(C) with its 95% interval "
               "(prompts resampled, paired, with the reference set's replicates). An interval that excludes 0 "
               "says the circuit needs that edge.")


def _apply(commit, new) -> None:
    try:
        commit(new)
    except CircuitError as e:
        st.error(str(e))
