"""Faithfulness numbers: hand-made cases and consistency with the evaluator."""
import numpy as np
import pytest

from circuit_core.ablation import NodeSet
from circuit_core.circuit import Circuit, CircuitClass
from circuit_core.criteria import bootstrap_intervals, circuit_node_set, faithfulness, faithfulness_stats


def test_stats_by_hand():
    s = faithfulness_stats(np.array([3.0, 5.0]), np.array([2.0, 4.0]), np.array([0.5, 1.5]))
    assert s["F_model"] == 4.0 and s["F_circuit"] == 3.0 and s["F_empty"] == 1.0
    assert s["gap"] == 1.0 and s["ratio"] == 0.75
    assert s["normalized"] == pytest.approx(2 / 3)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    pp = {"model": rng.normal(3, 1, 200), "circuit": rng.normal(2.5, 1, 200), "empty": rng.normal(0, 1, 200)}
    a = bootstrap_intervals(pp, faithfulness_stats, 300, seed=4)
    assert a == bootstrap_intervals(pp, faithfulness_stats, 300, seed=4)
    point = faithfulness_stats(**pp)
    for k, (lo, hi) in a.items():
        assert lo <= point[k] <= hi
    assert a["F_model"][1] - a["F_model"][0] < 0.5  # about 4 standard errors of 1/sqrt(200)


def test_faithfulness_matches_the_evaluator(tiny_evaluator):
    c = Circuit("t", [CircuitClass("a", "END", [(2, 1), (1, 0)]), CircuitClass("b", "S2", [(0, 3)])])
    f = faithfulness(tiny_evaluator, c)
    fm, fc, fe = tiny_evaluator.F([NodeSet.model(), circuit_node_set(c), NodeSet.empty()])
    assert f.stats["F_model"] == pytest.approx(fm) and f.stats["F_circuit"] == pytest.approx(fc)
    assert f.stats["F_empty"] == pytest.approx(fe)
    assert f.stats["ratio"] == pytest.approx(fc / fm)
    n = {o: s["n"] for o, s in f.by_order.items()}
    assert n["ABBA"] + n["BABA"] == tiny_evaluator.dataset.n
    # positions='all' keeps the heads everywhere: a different node set, a different number
    assert circuit_node_set(c, "all") != circuit_node_set(c)
