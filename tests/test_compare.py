"""Comparing circuits: membership and Jaccard, TPR / FPR / AUC against hand computation, the criteria
side by side, and the Compare page on the demo model."""
import math

import numpy as np

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from circuit_core import compare
from circuit_core.circuit import Circuit, CircuitClass

A = Circuit("A", [CircuitClass("name mover", "END", [(9, 9), (9, 6), (10, 0)]),
                  CircuitClass("s-inhibition", "END", [(7, 3), (8, 6)])])
B = Circuit("B", [CircuitClass("name mover", "END", [(9, 9), (10, 0), (10, 7)]),
                  CircuitClass("s-inhibition", "S2", [(7, 3)]),
                  CircuitClass("backup", "END", [(8, 6), (10, 10)])])


def test_jaccard():
    assert compare.jaccard({1, 2, 3}, {2, 3, 4}) == 2 / 4
    assert compare.jaccard({1}, {1}) == 1.0 and compare.jaccard({1}, {2}) == 0.0
    assert math.isnan(compare.jaccard(set(), set()))


def test_class_overlap_across_tasks_matches_heads_not_class_names():
    other_task = Circuit("CO", [CircuitClass("colour mover", "END", [(9, 9), (10, 7)]),
                                CircuitClass("object finder", "QUERY", [(7, 3), (2, 2)])], task="ioi")
    t = compare.class_overlap(A, other_task).set_index("class")
    nm, si, every = t.loc["name mover"], t.loc["s-inhibition"], t.loc[compare.ALL_HEADS]
    assert nm.n_A == 3 and nm.in_B == "9.9" and nm.share_of_A == 1 / 3 and nm.B_classes == "colour mover (END)"
    assert si.in_B == "7.3" and si.share_of_A == 1 / 2 and si.B_classes == "object finder (QUERY)"
    # all heads: A 5, B 4, shared 9.9 and 7.3
    assert every.share_of_A == 2 / 5 and every.share_of_B == 2 / 4 and every.jaccard == 2 / 7
    assert math.isnan(nm.jaccard)  # only the all-heads row has one


def test_added_removed_shared_per_class_and_for_all_heads():
    d = {x.name: x for x in compare.diff(A, B)}
    assert list(d) == ["name mover", "s-inhibition", "backup", compare.ALL_HEADS]  # A's classes, then B's new
    nm = d["name mover"]
    assert nm.shared == {(9, 9), (10, 0)} and nm.added == {(10, 7)} and nm.removed == {(9, 6)}
    assert nm.jaccard == 2 / 4
    si = d["s-inhibition"]
    assert si.shared == {(7, 3)} and si.removed == {(8, 6)} and si.added == frozenset()
    assert (si.position_a, si.position_b) == ("END", "S2")
    assert d["backup"].added == {(8, 6), (10, 10)} and d["backup"].jaccard == 0.0
    everything = d[compare.ALL_HEADS]
    # heads: A has 5, B has 6; shared 9.9, 10.0, 7.3, 8.6 -> 4 of 7
    assert everything.shared == {(9, 9), (10, 0), (7, 3), (8, 6)} and everything.jaccard == 4 / 7
    assert compare.moved(A, B) == [(8, 6)]  # shared, but under another class name


def test_overlap_table_and_pairwise_jaccard():
    t = compare.overlap_table({"A": A, "B": B, "C": A})
    assert set(t.circuit) == {"B", "C"} and len(t) == 4 + 3  # B: 3 classes + all; C (= A): 2 classes + all
    row = t[(t.circuit == "B") & (t["class"] == "s-inhibition")].iloc[0]
    assert row.position == "END → S2" and row.removed == "8.6" and (row.n_A, row.n_B) == (2, 1)
    assert t[t.circuit == "C"].jaccard.tolist() == [1.0, 1.0, 1.0]
    m = compare.pairwise_jaccard({"A": A, "B": B})
    assert m.loc["A", "B"] == m.loc["B", "A"] == 4 / 7 and m.loc["A", "A"] == 1.0


def test_head_table_says_who_holds_each_head():
    t = compare.head_table({"A": A, "B": B}, 12, 12).set_index("label")
    assert len(t) == 144
    assert t.loc["9.6", "membership"] == "only A" and t.loc["10.7", "membership"] == "only B"
    assert t.loc["9.9", "membership"] == "both" and t.loc["0.0", "membership"] == "neither"
    assert t.loc["8.6", "A"] == "s-inhibition" and t.loc["8.6", "B"] == "backup" and t.loc["8.6", "class_differs"]
    assert not t.loc["9.9", "class_differs"]
    assert set(t.membership) <= set(compare.membership_order(["A", "B"]))
    three = compare.head_table({"A": A, "B": B, "C": A}, 12, 12).set_index("label")
    assert three.loc["9.9", "membership"] == "all" and three.loc["9.6", "membership"] == compare.SOME
    assert three.loc["10.7", "membership"] == "only B"


def test_tpr_and_fpr_by_hand():
    # 3 layers x 4 heads = 12 heads; reference 3, candidate 4 (2 right, 2 wrong)
    ref = Circuit("ref", [CircuitClass("x", "END", [(0, 0), (1, 1), (2, 2)])])
    cand = Circuit("cand", [CircuitClass("y", "END", [(0, 0), (1, 1), (2, 3), (2, 0)])])
    a = compare.agreement(ref, cand, 3, 4)
    assert (a.tp, a.fp, a.fn, a.tn) == (2, 2, 1, 7)
    assert a.tpr == 2 / 3 and a.fpr == 2 / 9


def test_roc_and_auc_by_hand():
    # 2 x 2 heads; positives (0,0) and (1,1) score 0.9 and 0.5, negatives 0.8 and 0.1.
    ref = Circuit("ref", [CircuitClass("x", "END", [(0, 0), (1, 1)])])
    scores = {(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.1, (1, 1): 0.5}
    r = compare.roc(ref, scores, 2, 2)
    # positive-negative pairs ranked right: 0.9>0.8, 0.9>0.1, 0.5>0.1, not 0.5>0.8 -> 3 of 4
    assert r.auc == pytest.approx(0.75)
    assert list(zip(r.points.fpr, r.points.tpr)) == [(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)]
    # an unscored head ranks below every scored one (ties count half): 1>f, 1>f, f~f, f~f -> (2 + 1) / 4
    assert compare.roc(ref, {(0, 0): 1.0}, 2, 2).auc == pytest.approx(0.75)
    everything = Circuit("all", [CircuitClass("x", "END", [(0, 0), (0, 1), (1, 0), (1, 1)])])
    assert math.isnan(compare.roc(everything, scores, 2, 2).auc)  # one class only: no ROC


def test_agreement_table_and_roc_curves():
    ref = Circuit("ref", [CircuitClass("x", "END", [(0, 0), (1, 1)])])
    cand = Circuit("cand", [CircuitClass("y", "END", [(0, 0), (0, 1)])])
    scores = {"B": {(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.1, (1, 1): 0.5}, "ablation effect": {(1, 1): 1.0}}
    t = compare.agreement_table(ref, {"B": cand}, 2, 2, scores).set_index("circuit")
    assert (t.loc["B", "TP"], t.loc["B", "FP"], t.loc["B", "FN"], t.loc["B", "TN"]) == (1, 1, 1, 1)
    assert t.loc["B", "TPR"] == 0.5 and t.loc["B", "AUC"] == pytest.approx(0.75)
    assert pd.isna(t.loc["ablation effect", "TPR"]) and t.loc["ablation effect", "AUC"] == pytest.approx(0.75)
    curves = compare.roc_curves(ref, scores, 2, 2)
    assert set(curves.source) == {"B", "ablation effect"} and {"fpr", "tpr", "order"} <= set(curves.columns)


def test_auc_is_shown_as_a_number_a_reason_or_a_dash_never_none():
    ref = Circuit("ref", [CircuitClass("x", "END", [(0, 0), (1, 1)])])
    everything = Circuit("all", [CircuitClass("x", "END", [(0, 0), (0, 1), (1, 0), (1, 1)])])
    cand = Circuit("cand", [CircuitClass("y", "END", [(0, 0), (0, 1)])])
    scores = {"B": {(0, 0): 0.9, (0, 1): 0.8, (1, 0): 0.1, (1, 1): 0.5}, "ablation effect": {(1, 1): 1.0}}
    t = compare.agreement_table(ref, {"B": cand, "C": cand}, 2, 2, scores)
    assert compare.auc_text(t, ref, 2, 2, scores) == ["0.750", "—", "0.750"]  # C has no head scores
    t = compare.agreement_table(everything, {"B": cand}, 2, 2, scores)
    assert compare.auc_text(t, everything, 2, 2, scores) == ["n/a (the reference holds every head)"] * 2
    nothing = Circuit("none", [CircuitClass("x", "END", [])])
    assert compare.auc_undefined(nothing, 2, 2) == "the reference holds no head"


def test_effect_scores_are_magnitudes():
    frame = pd.DataFrame({"layer": [0, 1], "head": [0, 1], "metric": "ablation effect", "score": [-2.0, 0.5]})
    assert compare.effect_scores(frame) == {(0, 0): 2.0, (1, 1): 0.5}


def test_summary_of_the_three_criteria_matches_their_tables(tiny_evaluator):
    from circuit_core.completeness import completeness
    from circuit_core.criteria import faithfulness
    from circuit_core.minimality import minimality

    c = Circuit("tiny", [CircuitClass("late", "END", [(2, 0), (2, 1)]), CircuitClass("early", "END", [(0, 3)])])
    f = faithfulness(tiny_evaluator, c, reference_noise=False)
    comp = completeness(tiny_evaluator, c, n_random=0, greedy_runs=0, reference_noise=False)
    mini = minimality(tiny_evaluator, c, threshold_pct=5.0, reference_noise=False)
    s = compare.summarize(f, comp, mini)
    np.testing.assert_equal((s.ratio, s.ratio_ci), (f.ratio, tuple(f.intervals["ratio"])))  # NaN if undefined
    assert bool(s.ratio_undefined) == bool(f.undefined.get("ratio"))
    assert s.incompleteness_pct == pytest.approx(comp.table.incompleteness_pct.max())
    worst = comp.table.loc[comp.table.incompleteness.idxmax()]
    assert s.incompleteness_ci == pytest.approx((100 * worst.ci_low / abs(comp.F_model),
                                                 100 * worst.ci_high / abs(comp.F_model)))
    assert set(comp.table.family) == {"empty", "class"}  # K = ∅ and the classes only
    assert s.under_threshold == len(mini.flagged) and s.n_heads == 3
    lo, hi = s.under_threshold_range
    assert lo <= s.under_threshold <= hi
    table = compare.criteria_table({"A": s, "B": compare.summarize(f)})
    cell = table.loc[0, "F(C)/F(M)"]  # this tiny model's F(M) may be indistinguishable from 0
    assert cell.startswith("undefined") if f.undefined.get("ratio") else cell == f"{f.ratio:.1%}"
    assert table.loc[1, "max incompleteness (% of F(M))"] == "…"  # not computed yet


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
