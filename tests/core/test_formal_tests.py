"""Formal tests (circuit_core/formal_tests.py): known answers on the tiny model (C = M passes equivalence,
C = ∅ fails it and fails independence, a head the answer cannot see fails minimality), uniform p-values
under simulated nulls (Kolmogorov–Smirnov, loose level), Holm on a hand-made example, the CLI."""
import itertools
import json

import numpy as np
import pytest

from circuit_core.ablation import NodeSet
from circuit_core.baseline import random_circuits
from circuit_core.circuit import Circuit, CircuitClass
from circuit_core.cli import main
from circuit_core.formal_tests import (TESTS, FormalTest, beats_random_test, equivalence_test, formal_tests,
                                       formal_tests_to_json, holm, hsic_test, independence_test, minimality_test,
                                       rank_p_value, tost_paired)

TOY = Circuit("toy", [CircuitClass("movers", "END", [(2, 1), (1, 0)]), CircuitClass("dup", "S2", [(0, 3)])])


def ks_uniform(p) -> float:
    """sup_u |F_n(u) − u|: the Kolmogorov–Smirnov distance of the p-values from Uniform(0, 1)."""
    p = np.sort(np.asarray(p))
    n = len(p)
    return float(max(np.max(np.arange(1, n + 1) / n - p), np.max(p - np.arange(n) / n)))


def ks_bound(n: int, grid: float = 0.0) -> float:
    """Loose: the KS critical value at level 0.001 (1.95/√n), plus the step of a discrete p-value."""
    return 1.95 / np.sqrt(n) + grid


# --- statistics on synthetic data ------------------------------------------------------------------------
def test_holm_on_a_hand_made_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert np.allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(holm([0.5, 0.4]), [0.8, 0.8])  # capped at 1 only where it must be
    assert np.allclose(holm([0.6, 0.9]), [1.0, 1.0])
    assert np.allclose(holm([0.02]), [0.02])


def test_rank_p_value_counts_ties_against_the_observed():
    assert rank_p_value(5.0, np.array([1.0, 2.0, 3.0])) == pytest.approx(1 / 4)
    assert rank_p_value(2.0, np.array([1.0, 2.0, 3.0])) == pytest.approx(3 / 4)
    assert rank_p_value(0.0, np.zeros(9)) == 1.0


def test_rank_p_values_are_uniform_under_exchangeability():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(2000, 100))  # column 0 is the "circuit", the rest its reference
    p = [rank_p_value(row[0], row[1:]) for row in draws]
    assert ks_uniform(p) < ks_bound(len(p), 1 / 100)


def test_hsic_p_values_are_uniform_for_independent_variables():
    rng = np.random.default_rng(1)
    p = [hsic_test(rng.normal(size=30), rng.exponential(size=30), n_permutations=99, seed=s)["p"] for s in range(300)]
    assert ks_uniform(p) < ks_bound(len(p), 1 / 100)


def test_hsic_sees_a_dependence_that_is_not_linear():
    rng = np.random.default_rng(2)
    x = rng.normal(size=80)
    r = hsic_test(x, x**2 + 0.1 * rng.normal(size=80), n_permutations=200, seed=0)
    assert r["p"] <= 1 / 201 + 1e-12 and abs(np.corrcoef(x, x**2)[0, 1]) < 0.3
    assert hsic_test(np.ones(20), x[:20])["p"] == 1.0  # a constant is independent of anything


def test_tost_p_values_are_uniform_on_the_boundary_of_the_null():
    rng = np.random.default_rng(3)
    p = [tost_paired(rng.normal(0.5, 1.0, size=40), margin=0.5)["p"] for _ in range(1000)]
    assert ks_uniform(p) < ks_bound(len(p))


def test_tost_known_answers():
    assert tost_paired(np.zeros(50), margin=0.1)["p"] == 0.0  # C = M: no difference at all
    assert tost_paired(np.full(50, 0.2), margin=0.1)["p"] == 1.0
    assert tost_paired(np.random.default_rng(4).normal(0, 0.1, 400), margin=0.1)["p"] < 1e-6
    assert tost_paired(np.random.default_rng(5).normal(0, 1, 50), margin=0.0)["p"] == 1.0


# --- known answers on the tiny model ------------------------------------------------------------------------
def everything(model) -> Circuit:
    return Circuit("M", [CircuitClass("all", "END", [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)])])


def test_circuit_equal_to_the_model_passes_equivalence(tiny_evaluator, tiny_model):
    ev = tiny_evaluator.variant(tiny_evaluator.methodology.replace(positions="all"))  # every head everywhere: C = M
    t = equivalence_test(ev, everything(tiny_model))
    assert (t.verdict, t.passes, t.p_value) == ("reject", True, 0.0)
    assert t.details["mean_difference"] == 0.0


def test_empty_circuit_fails_equivalence_and_independence(tiny_evaluator):
    empty = Circuit("empty", [])
    f = tiny_evaluator.logit_diffs([NodeSet.model(), NodeSet.empty()]).numpy()
    assert abs(f[1].mean() - f[0].mean()) > 0.5 * abs(f[0].mean())  # the model does something ∅ does not
    eq = equivalence_test(tiny_evaluator, empty)
    assert (eq.verdict, eq.passes) == ("not rejected", False) and eq.p_value > 0.5
    ind = independence_test(tiny_evaluator, empty, n_permutations=199)  # M\∅ = M: its own output
    assert (ind.verdict, ind.passes) == ("reject", False) and ind.p_value == pytest.approx(1 / 200)


def test_a_head_the_answer_cannot_see_fails_minimality(tiny_evaluator):
    # The last layer runs at END only: a head kept there at S2 changes nothing, exactly.
    c = Circuit("c", [CircuitClass("movers", "END", [(2, 1), (1, 0)]), CircuitClass("blind", "S2", [(2, 3)])])
    t = minimality_test(tiny_evaluator, c, n_random=30, seed=1)
    rows = {r["head"]: r for r in t.details["heads"]}
    # 0 up to float noise: sets evaluated in another batch order (a shared evaluator's memo) differ at 1e-8
    assert rows["2.3"]["effect"] < 1e-6 and rows["2.3"]["p_raw"] > 0.5 and not rows["2.3"]["needed"]
    assert (t.verdict, t.passes) == ("not rejected", False) and "2.3" in t.meaning
    # raw and Holm p-values both reported; enough inflations that Holm could reject all three heads
    assert t.details["n_inflations"] >= 3 / 0.05 and t.details["min_attainable_holm_p"] < 0.05
    assert np.allclose([r["p_holm"] for r in t.details["heads"]], holm([r["p_raw"] for r in t.details["heads"]]))


def test_minimality_cannot_run_without_heads_outside_the_circuit(tiny_evaluator, tiny_model):
    t = minimality_test(tiny_evaluator, everything(tiny_model))
    assert t.passes is None and "not run" in t.meaning


def as_circuit(node_set: NodeSet) -> Circuit:
    by_role: dict[str, list] = {}
    for l, h, role in sorted(node_set.nodes):
        by_role.setdefault(role, []).append((l, h))
    return Circuit("draw", [CircuitClass(role, role, heads) for role, heads in by_role.items()])


def test_beats_random_p_values_are_uniform_when_the_circuit_is_a_random_draw(tiny_evaluator, tiny_model):
    # The "circuit" is itself a random circuit of the shape: under this null the p-values are uniform
    # (ties between equal draws make them a little conservative). One head per layer: 64 possible
    # circuits, all evaluated first in one call, so the 200 tests below read the evaluator's memo.
    shape = Circuit("shape", [CircuitClass("a", "END", [(0, 0), (2, 0)]), CircuitClass("b", "S2", [(1, 0)])])
    roles = {0: "END", 1: "S2", 2: "END"}
    every = [NodeSet(frozenset((l, h, roles[l]) for l, h in enumerate(hs)))
             for hs in itertools.product(range(tiny_model.n_heads), repeat=3)]
    tiny_evaluator.logit_diffs(every)
    draws = random_circuits(shape, tiny_model.n_layers, tiny_model.n_heads, 200, seed=99)
    p = [beats_random_test(tiny_evaluator, as_circuit(d), n_random=19, seed=s).p_value for s, d in enumerate(draws)]
    assert ks_uniform(p) < ks_bound(len(p), 1 / 20)


# --- the battery, the record, the CLI ---------------------------------------------------------------------
def test_formal_tests_runs_all_four_with_progress_and_json(tiny_evaluator):
    seen = []
    tests = formal_tests(tiny_evaluator, TOY, n_random=10, n_permutations=99, progress=lambda d, t: seen.append((d, t)))
    assert [t.name for t in tests] == list(TESTS)
    assert seen[-1][0] == seen[-1][1] and all(d <= t for d, t in seen)
    for t, d in zip(tests, json.loads(json.dumps(formal_tests_to_json(tests)))):
        assert {"name", "null", "statistic", "p_value", "verdict", "alpha", "details", "passes"} <= set(d)
        assert d["verdict"] in ("reject", "not rejected") and 0 < d["p_value"] <= 1
        assert FormalTest.from_dict(d).p_value == t.p_value
    again = formal_tests(tiny_evaluator, TOY, n_random=10, n_permutations=99)  # seeded: the same numbers
    assert [t.p_value for t in again] == [t.p_value for t in tests]


def test_formal_tests_stop_keeps_the_tests_already_done(tiny_evaluator):
    assert formal_tests(tiny_evaluator, TOY, n_random=10, should_stop=lambda: True) == []
    done = [0]  # stop once the first test (2 node sets) is done
    partial = formal_tests(tiny_evaluator, TOY, n_random=10, n_permutations=99,
                           progress=lambda d, t: done.__setitem__(0, d), should_stop=lambda: done[0] >= 2)
    assert [t.name for t in partial] == ["equivalence"]


def test_cli_test_prints_each_verdict_and_writes_the_record(tmp_path, tiny_dir, capsys):
    cpath, out = tmp_path / "c.json", tmp_path / "run.json"
    cpath.write_text(json.dumps(TOY.to_dict()))
    rc = main(["test", "--model", str(tiny_dir), "--circuit", str(cpath), "--n", "30", "--seed", "1",
               "--n-random", "10", "--permutations", "99", "--ref-replicates", "0", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("H0: ") == 4 and "p = " in printed and "Holm" in printed
    tests = json.loads(out.read_text())["results"]["tests"]
    assert [t["name"] for t in tests] == list(TESTS)
