"""Comparing circuits: membership and Jaccard, TPR / FPR / AUC against hand computation, the criteria
side by side, and the Compare page on the demo model."""
import math

import numpy as np

import pandas as pd
import pytest

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


