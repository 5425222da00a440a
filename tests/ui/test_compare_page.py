"""The Compare page: circuits side by side on the demo and a two-task model, in AppTest sessions."""
import math

import numpy as np
import pandas as pd
import pytest

from circuit_core import compare
from circuit_core.circuit import Circuit, CircuitClass


# --- the page ------------------------------------------------------------------------------------------
def page(dash, compare_uploads=(), compare_choice=None, view=None):
    """The Compare page in a new session, with circuits already uploaded and chosen."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(dash.ROOT / "pages/5_Compare.py"), default_timeout=300)
    at.query_params.update((view or dash.view()).to_query())
    session = dash.session(at)
    session.compare_uploads.update(dict(compare_uploads))
    if compare_choice:
        session.request(compare_choice=compare_choice)
    return at.run()


def test_compare_page_runs_on_the_demo_and_shows_the_tables(dash):
    at = page(dash)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.multiselect(key="compare_choice").value[:2] == ["current edit", "as loaded"]
    at = dash.finish_jobs(at)
    assert not at.exception and not at.error
    frames = [d.value for d in at.dataframe]
    overlap = next(f for f in frames if "jaccard" in getattr(f, "columns", []))
    assert (overlap.jaccard == 1.0).all()  # the edit is the loaded circuit: same heads
    criteria = next(f for f in frames if "F(C)/F(M)" in getattr(f, "columns", []))
    assert len(criteria) == 2 and "…" not in criteria.iloc[0].tolist()  # all three criteria, with intervals
    assert "%" in criteria.loc[0, "F(C)/F(M) 95% CI"] and " – " in criteria.loc[0, "incompleteness 95% CI"]
    assert any(h.value == "Agreement with a reference circuit" for h in at.header)


def test_compare_page_scores_heads_and_draws_the_roc(dash):
    at = page(dash)
    at.toggle(key="compare_effects").set_value(True).run()
    at = dash.finish_jobs(at)
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "AUC" in getattr(d.value, "columns", []))
    auc = float(table.set_index("circuit").loc["ablation effect", "AUC"])  # shown as text, 3 decimals
    assert 0 <= auc <= 1


def test_compare_page_takes_an_imported_eap_ig_graph(dash):
    from circuit_core.interchange import from_eap_graph, to_eap_graph
    from circuit_core.circuit import load_circuit

    demo = load_circuit("data/circuits/ioi-demo.json")
    graph = to_eap_graph(demo, {"n_layers": 4, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 64},
                         head_scores={(l, h): float(l == 3) for l in range(4) for h in range(4)}, keep_circuit=False)
    graph["nodes"]["a1.h0"]["in_graph"] = True  # a head the demo circuit lacks
    imported = from_eap_graph(graph, name="eap")
    at = page(dash, compare_uploads={"uploaded: eap": imported},
              compare_choice=["current edit", "uploaded: eap"])
    assert not at.exception and not at.error
    at = dash.finish_jobs(at)
    overlap = next(d.value for d in at.dataframe if "jaccard" in getattr(d.value, "columns", []))
    everything = overlap[overlap["class"] == compare.ALL_HEADS].iloc[0]
    n = len(demo.heads)
    assert everything.added == "1.0" and everything.jaccard == pytest.approx(n / (n + 1))
    table = next(d.value for d in at.dataframe if "AUC" in getattr(d.value, "columns", []))
    assert float(table.set_index("circuit").loc["B", "AUC"]) == pytest.approx(compare.roc(
        demo, imported.head_scores, 4, 4).auc, abs=5e-4)
    assert any("every position" in c.value for c in at.caption)


def test_compare_page_says_why_auc_is_missing_keeps_its_backslashes_and_imports_at_end(dash):
    from ui.circuits import WHOLE_MODEL

    at = page(dash, view=dash.view(circuit_from=WHOLE_MODEL))  # the reference holds every head: no AUC exists
    at.toggle(key="compare_effects").set_value(True).run()
    job = dash.job(at, "ablation-effects")
    assert job.wait(240) and job.error is None, job.error
    at.run()
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "AUC" in getattr(d.value, "columns", []))
    assert table.set_index("circuit").loc["ablation effect", "AUC"] == "n/a (the reference holds every head)"
    # Markdown eats a backslash before "(": the string must hold two for C\(K∪{v}) to show one
    assert any("F(C\\\\(K∪{v}))" in c.value for c in at.caption)
    assert at.selectbox(key="compare_position").value == "END"  # as the README and interchange say
    for j in dash.session(at).jobs.values():
        j.stop()


@pytest.fixture(scope="module")
def two_task_model_dir(tmp_path_factory):
    """A random toy model whose vocabulary covers IOI and Colored Objects."""
    from circuit_core.toy import save_random_gpt2, task_vocabulary

    folder = tmp_path_factory.mktemp("two-tasks")
    save_random_gpt2(folder, n_layer=2, n_head=4, n_embd=32, words=task_vocabulary("ioi", "colored-objects"),
                     n_positions=96, seed=1)
    return folder


def test_compare_page_puts_circuits_of_two_tasks_side_by_side(dash, two_task_model_dir):
    from circuit_core.interchange import Imported

    ioi = Circuit("IOI", [CircuitClass("name mover", "END", [(1, 0), (1, 1)]),
                          CircuitClass("s-inhibition", "END", [(0, 2)])], task="ioi")
    colours = Circuit("CO", [CircuitClass("colour mover", "END", [(1, 0), (1, 3)]),
                             CircuitClass("finder", "QUERY", [(0, 2), (0, 0)])], task="colored-objects")
    at = page(dash, {"uploaded: ioi": Imported(ioi), "uploaded: co": Imported(colours)},
              ["uploaded: ioi", "uploaded: co"],
              dash.view(folder=str(two_task_model_dir), n=20, ref_per_group=5, ref_replicates=0))
    assert not at.exception and not at.error, [e.value for e in at.error]
    at = dash.finish_jobs(at)
    assert not at.exception and not at.error
    assert any(s.value == "Across tasks" for s in at.subheader)
    cross = next(d.value for d in at.dataframe if "share_of_A" in getattr(d.value, "columns", []))
    rows = cross.set_index("class")
    assert rows.loc["name mover", "share_of_A"] == 0.5 and rows.loc["s-inhibition", "B_classes"] == "finder (QUERY)"
    assert rows.loc[compare.ALL_HEADS, "jaccard"] == pytest.approx(2 / 5)  # {1.0, 0.2} of five heads
    listed = next(d.value for d in at.dataframe if "task" in getattr(d.value, "columns", []))
    assert list(listed.task) == ["ioi", "colored-objects"]
    criteria = next(d.value for d in at.dataframe if "F(C)/F(M)" in getattr(d.value, "columns", []))
    assert len(criteria) == 2  # each on its own task's prompts
