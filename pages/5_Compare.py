"""Compare: two or more circuits side by side — their heads, their criteria, their agreement."""
import json
import string
from pathlib import Path

from dataclasses import replace

import streamlit as st

from circuit_core import compare
from circuit_core.circuit import ALL_POSITIONS, CircuitError, load_circuit
from circuit_core.interchange import Imported, graph_cfg, read_circuit, to_eap_graph
from circuit_core.tasks import TaskError, get_task, task_roles
from circuit_core.validate import ValidationSpec
from ui import jobs
from ui.charts import membership_grid, roc_chart, style
from ui.circuits import circuit_files
from ui.sidebar import sidebar
from ui.state import circuit_json, faithfulness_result, get_evaluator, methodology_caption, require_evaluator

ctx = sidebar()
ev = require_evaluator(ctx)
L, H = ctx.model.n_layers, ctx.model.n_heads
st.title("Compare circuits")
st.caption(methodology_caption(ctx))
st.markdown("Circuits side by side on this model: which heads they share, how each fares on the three criteria, "
            "and how well each recovers a reference circuit.")


def offered() -> dict:
    """Every circuit on offer by display name (an Imported, or the CircuitError that kept it out)."""
    out = {"current edit": Imported(ctx.circuit), "as loaded": Imported(ctx.preset)}  # stable names: kept selected
    for key, path in circuit_files().items():
        try:
            out[key] = Imported(load_circuit(path))
        except CircuitError as e:
            out[key] = e
    return {**out, **ctx.session.compare_uploads}


def take_upload() -> None:
    c1, c2 = st.columns([3, 1])
    f = c1.file_uploader("Add a circuit: ours, or an EAP-IG / MIB graph JSON", type=["json"], key="compare_upload")
    positions = list(task_roles(ctx.methodology.task)) + [ALL_POSITIONS]
    position = c2.selectbox("Position of imported EAP-IG heads", positions, key="compare_position",
                            index=positions.index("END") if "END" in positions else 0,  # interchange's default
                            help="EAP-IG graphs keep a node at every position ('*'); the paper's classes act at one.")
    seen = ctx.session.compare_seen
    if f is None or f.file_id in seen:
        return
    seen.add(f.file_id)
    try:
        ctx.session.compare_uploads[f"uploaded: {Path(f.name).stem}"] = read_circuit(
            f.getvalue(), position=position, name=Path(f.name).stem)
    except CircuitError as e:
        st.error(f"{f.name}: {e}")


def fitting(names: list[str], items: dict) -> dict[str, tuple[str, Imported]]:
    """letter -> (source, Imported) for the chosen circuits that fit this model; a warning for the rest."""
    out = {}
    for source in names:
        item = items[source]
        try:
            if isinstance(item, CircuitError):
                raise item
            item.check_fits(L, H)
            # each circuit against its own task's positions: circuits of two tasks compare on one model
            item.circuit.validate(L, H, task_roles(item.circuit.task), task=item.circuit.task)
        except (CircuitError, TaskError) as e:
            st.warning(f"'{source}' is left out: {e}")
            continue
        out[string.ascii_uppercase[len(out)]] = (source, item)
    return out


take_upload()
items = offered()
chosen = st.multiselect("Circuits (the first is A, the base the others are compared with)", list(items),
                        default=list(items)[:2], key="compare_choice", max_selections=len(string.ascii_uppercase))
picked = fitting(chosen, items)
if len(picked) < 2:
    st.info("Choose two or more circuits that fit this model.")
    st.stop()
circuits = {k: item.circuit for k, (_, item) in picked.items()}
sidebar_choice = ctx.view.circuit_from
st.dataframe([{"": k, "source": f"{src} ({sidebar_choice})" if src in ("current edit", "as loaded") else src,
               "circuit": item.circuit.name, "task": item.circuit.task, "heads": len(item.circuit.heads), "classes": len(item.circuit.classes),
               "head scores": "yes" if item.head_scores else ""} for k, (src, item) in picked.items()], hide_index=True)
for k, (_, item) in picked.items():
    for w in item.warnings:
        st.caption(f"{k}: {w}")

# --- membership ----------------------------------------------------------------------------------------
st.header("Membership")
cells = compare.head_table(circuits, L, H)
st.altair_chart(style(membership_grid(cells, compare.membership_order(list(circuits)), list(circuits))), width="content")
overlap = compare.overlap_table(circuits)
for k, c in list(circuits.items())[1:]:
    d = compare.diff(circuits["A"], c)[-1]
    moved = compare.moved(circuits["A"], c)
    st.markdown(f"**{k}** shares {len(d.shared)} of A's {len(d.shared | d.removed)} heads, adds {len(d.added)} and "
                f"drops {len(d.removed)}: head overlap (Jaccard) **{d.jaccard:.0%}**"
                + (f"; {len(moved)} shared head(s) sit in another class: "
                   f"{', '.join(f'{l}.{h}' for l, h in moved)}." if moved else "."))
st.dataframe(overlap.style.format({"jaccard": "{:.0%}"}, na_rep="—"), hide_index=True, width="stretch")
st.caption("Classes are matched by name; 'added' and 'removed' are the other circuit against A. Jaccard = "
           "|A ∩ B| / |A ∪ B| of the head sets (Merullo et al. report 78% between GPT-2's IOI and Colored "
           "Objects circuits). Counts of heads: no sampling, so no interval.")
tasks = {k: c.task for k, c in circuits.items()}
if len(set(tasks.values())) > 1:  # class names differ across tasks: match heads, not names
    st.subheader("Across tasks")
    for k, c in list(circuits.items())[1:]:
        if c.task == circuits["A"].task:
            continue
        st.markdown(f"**A ({tasks['A']}) against {k} ({c.task})**: where A's classes' heads sit in {k}.")
        st.dataframe(compare.class_overlap(circuits["A"], c).style.format(
            {"share_of_A": "{:.0%}", "share_of_B": "{:.0%}", "jaccard": "{:.0%}"}, na_rep="—"),
            hide_index=True, width="stretch")
    st.caption("share_of_A: the part of a class of A whose heads the other circuit holds, in any class (Merullo et "
               "al. compare GPT-2 medium's IOI and Colored Objects circuits this way). The criteria below evaluate "
               "each circuit on its own task's prompts.")
if len(circuits) > 2:
    st.dataframe(compare.pairwise_jaccard(circuits).style.format("{:.0%}"), width="content")
    st.caption("Head-level Jaccard of every pair.")

# --- the criteria ----------------------------------------------------------------------------------------
st.header("Faithfulness, completeness, minimality")
threshold = st.number_input("Minimality threshold (% of F(M))", 0.0, 100.0, 1.0, step=0.5, key="compare_threshold")


SPEC = ValidationSpec(n_baseline=0, formal_tests=False)  # the report's K sets and thresholds; no baseline, no tests


def criteria_job(circuit, ev):
    """`validate` as the report and the CLI run it: faithfulness with the reference set's noise in its
    intervals, completeness (K = ∅, each class, the random sets) and minimality."""
    from circuit_core.validate import validate

    spec = replace(SPEC, threshold_pct=float(threshold))
    return lambda job: validate(ev, circuit, spec, progress=job.progress, should_stop=job.should_stop)


def task_methodology(task: str):
    """The sidebar's methodology on another task's prompts (all of its groups when the mode is not its)."""
    m = ctx.methodology
    return m if task == m.task else m.replace(task=task, mode=m.mode if m.mode in get_task(task).modes else "mixed")


summaries, methods, shown = {}, set(), {}
for k, c in circuits.items():
    cj, meth = circuit_json(c), task_methodology(c.task)
    job = jobs.start(("compare", ctx.model_key, meth, cj, threshold),
                     f"Criteria of {k} (faithfulness with reference noise, completeness, minimality)",
                     criteria_job(c, get_evaluator(ctx.model_key, meth)))
    if id(job) not in shown:  # identical circuits share a job: one progress bar
        shown[id(job)] = jobs.show(job, wait=0.5)
    done = shown[id(job)]
    f = done.faithfulness if done else faithfulness_result(ctx.model_key, meth, cj)  # figures at once
    summaries[k] = compare.summarize(done or f)
    methods |= {f"faithfulness: {f.interval_method}"} | ({
        f"completeness: {done.completeness.interval_method}", f"minimality: {done.minimality.interval_method}"}
        if done else set())
st.dataframe(compare.criteria_table(summaries), hide_index=True, width="stretch")
st.caption(f"Completeness: the largest |F(C\\K) − F(M\\K)| over K = ∅, each class and {SPEC.n_random} random subsets "
           "(the report's and the CLI's validate's K sets), as % of F(M). Minimality: heads "
           f"whose |F(C\\\\(K∪{{v}})) − F(C\\K)| is under {threshold:g}% of F(M) (K from the circuit file, else the "
           "rest of the head's class); its range counts heads whose interval lies wholly under the threshold, then "
           "those whose interval reaches under it. 95% intervals — " + "; ".join(sorted(methods)) + ".")

# --- agreement with a reference ---------------------------------------------------------------------------
st.header("Agreement with a reference circuit")
reference = st.selectbox("Reference", list(circuits), key="compare_reference",
                         format_func=lambda k: f"{k}: {circuits[k].name}")
candidates = {k: c for k, c in circuits.items() if k != reference}
scores = {k: picked[k][1].head_scores for k in candidates if picked[k][1].head_scores}
if st.toggle("Score every head by its ablation effect |F(M without the head) − F(M)|", key="compare_effects",
             help="One evaluation per head (the model without it, at every position), in the background."):
    from circuit_core.heads import ablation_effects

    job = jobs.start(("ablation-effects", ctx.model_key, ctx.methodology), "Ablating each head",
                     lambda job: ablation_effects(ev, job.progress, job.should_stop))
    effects = jobs.show(job)
    if effects is not None:
        scores["ablation effect"] = compare.effect_scores(effects)
table = compare.agreement_table(circuits[reference], candidates, L, H, scores)
st.dataframe(table.assign(AUC=compare.auc_text(table, circuits[reference], L, H, scores)).style.format(
    {"TPR": "{:.0%}", "FPR": "{:.0%}"}, na_rep="—"), hide_index=True, width="stretch")
st.caption(f"The reference's {len(circuits[reference].heads)} heads are the positives among all {L * H} heads "
           "(as ACDC and auto-circuit score discovered circuits): TPR = share of them a circuit holds, FPR = share "
           "of the other heads it holds. AUC: the area under the ROC of a circuit's head scores (from an imported "
           "graph) or of the ablation effects (—: no head scores; n/a: undefined, as when the reference holds every head "
           "or none). Counts over heads: no interval.")
if scores:
    points = table.dropna(subset=["TPR"]).rename(columns={"TPR": "tpr", "FPR": "fpr"})
    st.altair_chart(style(roc_chart(compare.roc_curves(circuits[reference], scores, L, H), points)), width="content")

# --- export ---------------------------------------------------------------------------------------------
with st.expander("Export the current edit for EAP-IG / MIB"):
    st.markdown("The graph JSON of EAP-IG's `Graph.to_json`: every head, in_graph for the circuit's; input, MLPs "
                "and logits in the graph; every edge, in the graph when both its ends are (edge scores 0). EAP-IG "
                "keeps nodes at every position, so it evaluates this circuit with positions 'all'.")
    edit = ctx.circuit
    st.download_button("Download EAP-IG graph JSON", lambda: json.dumps(to_eap_graph(edit, graph_cfg(ctx.model))),
                       file_name=f"{edit.name}.eap-graph.json", mime="application/json", on_click="ignore")
