"""Circuit editor: click heads in and out of a class, edit the table, manage classes, undo, save."""
import json

import altair as alt
import pandas as pd
import streamlit as st

from circuit_core.circuit import Circuit, CircuitError
from circuit_core.selection import SELECTION_N, Selection
from circuit_core.editing import add_class, diff, from_rows, remove_class, rows, toggle_head, update_class
from circuit_core.tasks import get_task, task_roles
from ui.charts import OUT_OF_CIRCUIT, head_grid, style
from ui.headline import faithfulness_of, figures_or_last, headline
from ui import jobs
from circuit_core.attribution import ESTIMATE, EXACT
from ui.background import (PATCH_DENOISE, PATCH_N, PATCH_NOISE, PATCHING, agreement_note, background, background_caption,
                           background_metrics, estimate_unavailable, selection_seed, selection_seed_key, strongest_outside)
from ui.circuits import AlreadySaved, save_circuit
from ui.edges import edge_panel
from ui.sidebar import sidebar
from ui.state import methodology_caption, require_evaluator

ctx = sidebar()
ev = require_evaluator(ctx)
session, hist, circuit, edits = ctx.session, ctx.history, ctx.circuit, ctx.edits
st.title("Circuit editor")
st.caption(methodology_caption(ctx))
f, fresh = figures_or_last(ctx)
before = f if fresh else None  # "since last edit" only against real figures


def commit(new_circuit):
    """Record an edit: check it fits the model, push it with the figures before it, redraw afresh."""
    if new_circuit.to_dict() == circuit.to_dict():
        return
    new_circuit.validate(ctx.model.n_layers, ctx.model.n_heads, task_roles(ctx.methodology.task),
                         task=ctx.methodology.task)
    session.push_edit(ctx.history_key, new_circuit, before)
    st.rerun()



def loaded_figures():
    try:
        return faithfulness_of(ctx, ctx.preset)
    except Exception:  # without them only the "vs loaded circuit" badge goes
        return None


if f is not None:
    headline(ctx, f, edits.before_edit, loaded_figures())

u1, u2, _ = st.columns([1, 1, 6])
if u1.button("↶ Undo", disabled=not hist.can_undo, width="stretch"):
    session.undo(ctx.history_key, before)
    st.rerun()
if u2.button("↷ Redo", disabled=not hist.can_redo, width="stretch"):
    session.redo(ctx.history_key, before)
    st.rerun()

left, right = st.columns([3, 2], gap="large")
with left:
    c1, c2 = st.columns(2)
    class_names = [c.name for c in circuit.classes]
    target = c1.selectbox("A click puts the head in class", class_names, key="edit_class",
                          help="Click a head outside the circuit to add it to this class, a head of this class "
                               "to remove it, a head of another class to move it here.")
    unavailable = estimate_unavailable(ev)  # an architecture blocks.py does not describe
    metrics = background_metrics(ctx.methodology.task, estimate=unavailable is None)
    if session.widget("edit_metric") not in metrics:  # another task's score: start from the first
        session.forget("edit_metric")
    metric = c2.selectbox("Background", metrics, key="edit_metric",
                          help="What colours each cell. The estimate costs one pass and follows every edit; "
                               "exact values and ablation effects run in the background with progress.")
    if unavailable:
        st.caption(unavailable)
    position, patch_n = "*", PATCH_N
    if metric in PATCHING:
        p1, p2 = st.columns(2)
        patch_n = int(p1.number_input("Prompt pairs patched", 4, 1000, PATCH_N, key="patch_n",
                                      help="Selection prompts: the sidebar's task drawn with the selection seed (set "
                                      "under 'Let discovery propose a circuit'), each with its corrupted twin, apart "
                                      "from the report prompts, so heads picked from this map are scored fairly by "
                                      "F(C). Every head and position costs a partial forward pass of them: on a CPU, "
                                      "GPT-2 small takes minutes at 20 (see the README)."))
        if metric in (PATCH_NOISE, PATCH_DENOISE):  # one map per position: the target class's by default
            cls_pos = next(c.position for c in circuit.classes if c.name == target)
            options = list(task_roles(ctx.methodology.task)) + ["*"]
            position = p2.selectbox("Patched position", options,
                                    index=options.index(cls_pos) if cls_pos in options else 0,
                                    key=f"patch_position::{target}", help="Where the head's output is patched: "
                                    "one of the task's positions, or * for every position at once.")
    job, scores = background(ctx, ev, metric, target, position, patch_n)
    if scores is None:  # still computing: the grid stays clickable, on a neutral background
        scores = pd.DataFrame({"layer": [l for l in range(ctx.model.n_layers) for _ in range(ctx.model.n_heads)],
                               "head": [h for _ in range(ctx.model.n_layers) for h in range(ctx.model.n_heads)],
                               "score": 0.0})
    cells = scores[["layer", "head", "score"]].copy()
    where = {h: c for c in circuit.classes for h in c.heads}
    cells["class"] = [where[(l, h)].name if (l, h) in where else OUT_OF_CIRCUIT for l, h in zip(cells["layer"], cells["head"])]
    cells["position"] = [where[(l, h)].position if (l, h) in where else "" for l, h in zip(cells["layer"], cells["head"])]
    cells["label"] = [f"{l}.{h}" for l, h in zip(cells["layer"], cells["head"])]
    pick = alt.selection_point(fields=["layer", "head"], name="cell", on="click", clear=False)
    event = st.altair_chart(style(head_grid(cells, circuit, metric, pick)), on_select="rerun",
                            selection_mode="cell", key=f"grid-{edits.version}",
                            width="stretch")
    picked = (event.selection.get("cell") if event and event.selection else None) or []
    if picked:
        head = (int(picked[0]["layer"]), int(picked[0]["head"]))
        try:
            commit(toggle_head(circuit, head, target))
        except CircuitError as e:
            st.error(str(e))
    if job is not None:
        jobs.show(job, wait=0)
    if metric in PATCHING and job is not None and not job.running and job.result is not None:
        r = job.result
        st.caption(f"F(clean) {r.F_clean:.3f}, F(corrupted) {r.F_corrupted:.3f} on {r.n} prompt pairs (each prompt and its "
                   f"corrupted twin) of the selection prompts, seed {selection_seed(ctx)}: not the report prompts "
                   f"(seed {ctx.methodology.seed}) that F(C) above is measured on, so heads picked here are scored "
                   f"fairly there. Hover a cell for its 95% interval ({r.interval_method}).")
        a1, a2 = st.columns([1, 3])
        k = a1.number_input("Strongest heads", 1, ctx.model.n_layers * ctx.model.n_heads, 3, key="patch_k")
        top = strongest_outside(scores, circuit, int(k))
        names = ", ".join(f"{l}.{h}" for l, h in top)
        if a2.button(f"Add {names} to '{target}'", disabled=not top, key="patch_add",
                     help="The strongest heads of this map (selection prompts) that are not in the circuit yet, into "
                          "the target class (at its position); one edit, so Undo takes them all back. F(C) then "
                          "shows them on the report prompts."):
            new = circuit
            for head in top:
                new = toggle_head(new, head, target)
            try:
                commit(new)
            except CircuitError as e:
                st.error(str(e))
    note = agreement_note(ctx, ev, target) if metric in (ESTIMATE, EXACT) else None
    st.caption("Background: " + background_caption(metric, target, get_task(ctx.methodology.task).metric) + " Squares mark circuit heads in their class colour."
               + (f" {note}" if note else ""))

with right:
    d = diff(ctx.preset, circuit)
    st.subheader("Against the loaded circuit")
    if not any(d.values()):
        st.write("No changes.")
    for label, items in (("Added", d["added"]), ("Removed", d["removed"]), ("Moved", d["moved"])):
        if items:
            st.markdown(f"**{label}:** " + ", ".join(items))

    st.subheader("Heads")
    roles = list(task_roles(ctx.methodology.task)) + ["*"]
    table = st.data_editor(
        pd.DataFrame(rows(circuit), columns=["head", "class", "position"]), num_rows="dynamic",
        key=f"table-{edits.version}", width="stretch", hide_index=True,
        column_config={
            "head": st.column_config.TextColumn("head", help="layer.head, e.g. 9.6"),
            "class": st.column_config.TextColumn("class", help="an existing class, or a new name to create one"),
            "position": st.column_config.SelectboxColumn("position", options=roles,
                                                         help="the class's kept position"),
        })
    if st.button("Apply table edits"):
        try:
            commit(from_rows(circuit, table.fillna("").to_dict("records")))
        except CircuitError as e:
            st.error(f"Not applied: {e} Your table edits are still there; fix them and apply again.")

    with st.expander("Classes: add, rename, move, recolour, remove"):
        cl_name = st.selectbox("Class", class_names, key="cls_pick")
        cl = next(c for c in circuit.classes if c.name == cl_name)
        with st.form(f"edit-class-{cl_name}-{edits.version}"):
            new_name = st.text_input("Name", cl.name)
            pos = st.selectbox("Position", roles, index=roles.index(cl.position) if cl.position in roles else 0)
            color = st.color_picker("Colour", circuit.color_of(cl))
            a, b = st.columns(2)
            apply = a.form_submit_button("Update class")
            drop = b.form_submit_button("Remove class")
        if apply or drop:
            try:
                commit(remove_class(circuit, cl_name) if drop else
                       update_class(circuit, cl_name, new_name=new_name, position=pos, color=color))
            except CircuitError as e:
                st.error(str(e))
        with st.form("add-class"):
            name = st.text_input("New class name")
            pos = st.selectbox("Position", roles, key="new_cls_pos")
            if st.form_submit_button("Add class"):
                try:
                    commit(add_class(circuit, name, pos))
                except CircuitError as e:
                    st.error(str(e))

    with st.expander("Let discovery propose a circuit"):
        st.caption("Greedy pruning (circuit_core/discover.py) on selection prompts: every head at the position "
                   "where it restores F(M) best, or the strongest heads of activation patching, then heads removed "
                   "while F(C)/F(M) stays within the threshold. The proposal is then measured on the sidebar's "
                   "report prompts, which took no part in choosing it. A hypothesis to validate.")
        d1, d2 = st.columns(2)
        threshold = d1.number_input("Threshold", 0.5, 1.0, 0.8, step=0.05, key="disc_threshold",
                                    help="Keep threshold ≤ F(C)/F(M) ≤ 2 − threshold while pruning.")
        start_k = int(d2.number_input("Start from the K strongest patched heads (0: every head)", 0,
                                      ctx.model.n_layers * ctx.model.n_heads, 0, key="disc_start",
                                      help="Activation patching (noise, 20 selection prompt pairs) first: far fewer "
                                           "evaluations on a large model."))
        d3, d4 = st.columns(2)
        sel_n = int(d3.number_input("Selection prompts (N)", 4, 10_000, SELECTION_N, key="disc_sel_n",
                                    help="Prompts the search runs on; the report prompts are the sidebar's."))
        sel_seed = int(d4.number_input("Selection seed", 0, 2**32 - 1, Selection().seed_for(ctx.methodology),
                                       key=selection_seed_key(ctx), help="Must differ from the report seed (the "
                                       "sidebar's); also seeds the patching maps of the grid."))
        try:
            selection = Selection(sel_n, Selection(sel_n, sel_seed).seed_for(ctx.methodology))
        except ValueError as e:
            selection = None
            st.error(f"{e} The patching maps use seed {selection_seed(ctx)} meanwhile.")
        key = ("discover", ctx.model_key, ctx.methodology, threshold, start_k, selection)
        if selection is not None and (st.button("Propose", key="disc_go") or jobs.get(key)):
            from circuit_core.discover import discover_and_report

            def propose(job):
                return discover_and_report(ev, threshold, selection, job.progress, job.should_stop,
                                           start_from_patching=start_k or None, patch_n=PATCH_N)

            found = jobs.show(jobs.start(key, "Discovering a circuit (selection prompts), then measuring it", propose),
                              wait=1.0)
            if found is not None:
                held, (lo, hi) = found.held_out, found.held_out.interval
                st.markdown(f"**{len(found.circuit.heads)} heads** in {len(found.circuit.classes)} classes: "
                            + "; ".join(f"{c.name} at {c.position}: {', '.join(f'{l}.{h}' for l, h in c.heads)}"
                                        for c in found.circuit.classes) + ".")
                st.markdown(f"F(C)/F(M) on the report prompts (N = {held.n}, seed {held.seed}), which took no part "
                            f"in choosing it: **{held.ratio:.3f}** [{lo:.3f}, {hi:.3f}] (95%). On the prompts that "
                            f"chose it (selection, N = {found.selection.n}, seed {found.selection.seed}): "
                            f"{found.ratio:.3f}, a winner's-curse figure ({found.n_node_sets} node sets).")
                if st.button("Edit this circuit", key="disc_take", help="It replaces the circuit being edited as one "
                             "edit: Undo brings the previous one back."):
                    try:
                        commit(found.circuit)
                    except CircuitError as e:
                        st.error(str(e))

    st.subheader("Save")
    name_key = f"save-name-{ctx.circuit_key}"
    name = st.text_input("Name", circuit.name, key=name_key,
                         help="Save writes a copy under this name; the circuit being edited keeps its own "
                              "name unless you rename it (an edit, so Undo reverts it).")

    def save(overwrite: bool) -> None:
        # A callback, so the question and the outcome are drawn in the run that follows the click.
        edits.save_question = None
        wanted = session.widget(name_key, "")
        try:
            path = save_circuit(hist.current, wanted, overwrite=overwrite)
            edits.save_said = ("success", f"Saved as '{path.stem}'; it appears under 'saved:' in the sidebar.")
        except AlreadySaved:
            edits.save_question = wanted.strip()
        except (CircuitError, OSError) as e:
            edits.save_said = ("error", f"Not saved: {e}")

    s1, s2, s3 = st.columns(3)
    s1.button("Save circuit", on_click=save, args=(False,), width="stretch")
    if s2.button("Rename", width="stretch", help="Give the circuit being edited this name."):
        try:
            if not name.strip():
                raise CircuitError("A circuit needs a name.")
            commit(Circuit.from_dict({**circuit.to_dict(), "name": name.strip()}))
        except CircuitError as e:
            st.error(str(e))
    s3.download_button("Download JSON", json.dumps({**circuit.to_dict(), "name": name}, indent=2),
                       file_name=f"{name or 'circuit'}.json", mime="application/json", width="stretch")
    if edits.save_question and edits.save_question == name.strip():
        st.warning(f"A saved circuit named '{name.strip()}' exists. Overwrite it with the circuit being edited?")
        o1, o2 = st.columns(2)
        o1.button("Overwrite", type="primary", on_click=save, args=(True,), width="stretch")
        o2.button("Cancel", on_click=lambda: setattr(edits, "save_question", None), width="stretch")
    if said := edits.save_said:
        edits.save_said = None
        (st.success if said[0] == "success" else st.error)(said[1])
    st.caption(f"{len(circuit.heads)} heads in {len(circuit.classes)} classes: "
               + ", ".join(f"{c.name} ({len(c.heads)})" for c in circuit.classes))

edge_panel(ctx, commit)  # the class diagram with its edges, each weighted by its path-patching effect
