"""Faithfulness curves (circuit_core/curves.py): MIB's fractions and area rule, the curve's points, intervals
that cover a much larger run, the CLI's record and a reproducible random baseline."""
import json
import math

import numpy as np
import pytest

from circuit_core import curves
from circuit_core.ablation import Methodology, NodeSet
from circuit_core.circuit import load_circuit
from circuit_core.cli import main
from circuit_core.evaluate import build_evaluator
from circuit_core.models import load_model


def mib_areas(percentages, faithfulnesses, log_scale=False):
    """MIB's loop as its evaluation.py writes it (hannamw/MIB-circuit-track, evaluate_area_under_curve), kept
    literal here as the reference the vectorised rule must match."""
    area_under, area_from_1 = 0.0, 0.0
    for i in range(len(faithfulnesses) - 1):
        x_1, x_2 = percentages[i], percentages[i + 1]
        if log_scale:
            x_1, x_2 = math.log(x_1), math.log(x_2)
        area_from_1 += (x_2 - x_1) * ((abs(1.0 - faithfulnesses[i]) + abs(1.0 - faithfulnesses[i + 1])) / 2)
        area_under += (x_2 - x_1) * ((faithfulnesses[i] + faithfulnesses[i + 1]) / 2)
    return area_under, area_from_1


# --- MIB's rules ----------------------------------------------------------------------------------------
def test_fractions_and_k_are_mibs():
    assert curves.FRACTIONS == (.001, .002, .005, .01, .02, .05, .1, .2, .5, 1)
    # int(pct * n): GPT-2 small's 144 heads keep none below 1%, and its 32,491 edges 32 at 0.1%
    assert [curves.mib_k(p, 144) for p in curves.FRACTIONS] == [0, 0, 0, 1, 2, 7, 14, 28, 72, 144]
    assert [curves.mib_k(p, 32491) for p in curves.FRACTIONS][:3] == [32, 64, 162]
    assert [curves.mib_k(p, 16) for p in curves.FRACTIONS] == [0] * 6 + [1, 3, 8, 16]


def test_areas_on_hand_made_curves():
    x = np.array(curves.FRACTIONS)
    span = 1 - 0.001
    # f = 1 everywhere: the whole (unnormalised) x range under it, nothing between it and 1
    assert curves.cpr(np.ones(10)) == pytest.approx(span)
    assert curves.cmd(np.ones(10)) == pytest.approx(0)
    # f = 0: nothing under it; f = x: the trapezoid rule is exact for a line
    assert curves.cpr(np.zeros(10)) == 0 and curves.cmd(np.zeros(10)) == pytest.approx(span)
    assert curves.cpr(x) == pytest.approx((1 - 0.001 ** 2) / 2)
    assert curves.cmd(x) == pytest.approx(span - (1 - 0.001 ** 2) / 2)
    # overshoot counts in CMD on both sides of 1 (|1 - f|), and CPR can exceed the span
    f = np.full(10, 1.5)
    assert curves.cpr(f) == pytest.approx(1.5 * span) and curves.cmd(f) == pytest.approx(0.5 * span)
    # a step at the last interval: only (1 - 0.5) × (0 + 1)/2 under it
    step = np.r_[np.zeros(9), 1.0]
    assert curves.cpr(step) == pytest.approx(0.25) and curves.cmd(step) == pytest.approx(span - 0.25)


def test_areas_match_mibs_loop_on_random_curves_and_on_draws_at_once():
    rng = np.random.default_rng(0)
    fs = rng.normal(0.6, 0.5, (50, 10))
    ref = np.array([mib_areas(curves.FRACTIONS, f) for f in fs])
    np.testing.assert_allclose(curves.cpr(fs), ref[:, 0], rtol=1e-12)  # [draws, points] at once
    np.testing.assert_allclose(curves.cmd(fs), ref[:, 1], rtol=1e-12)
    # the rule is the linear one: MIB's log_scale=True (not its default) gives another number
    assert not np.isclose(mib_areas(curves.FRACTIONS, fs[0], log_scale=True)[0], curves.cpr(fs[0]))


def test_order_by_ranks_signed_or_absolute_with_unscored_last():
    r = curves.order_by({"a": 0.1, "b": -0.9, "c": None, "d": 0.5}, "x")
    assert r.items == ("d", "a", "b", "c")
    assert curves.order_by({"a": 0.1, "b": -0.9, "c": None, "d": 0.5}, "x", absolute=True).items == ("b", "d", "a", "c")


# --- the curve on a model -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ev(tiny_model):
    return build_evaluator(tiny_model, Methodology(n=30, seed=2, bootstrap=200, ref_replicates=4))


def test_points_equal_f_computed_directly_for_the_same_sets(tiny_ev):
    L, H = tiny_ev.n_layers, tiny_ev.n_heads
    where = curves.head_positions(L, H, None, "all")
    rng = np.random.default_rng(1)
    heads = list(where)
    ranking = curves.Ranking("hand", tuple(heads[i] for i in rng.permutation(len(heads))))
    keep = curves.head_keep(where)
    c = curves.faithfulness_curve(tiny_ev, ranking, keep, len(heads), random_orders=0, reference_noise=False)
    fm, fe = tiny_ev.F([NodeSet.model(), NodeSet.empty()])
    for p in c.points:
        kept = NodeSet(frozenset((l, h, "*") for l, h in ranking.items[:p.k]))
        (fc,) = tiny_ev.F([kept])
        assert p.f == pytest.approx((fc - fe) / (fm - fe), rel=1e-9, abs=1e-12)
        assert p.interval.contains(p.f)
    assert c.points[-1].f == pytest.approx(1.0)  # every head everywhere: M
    assert c.cpr.value == pytest.approx(float(curves.cpr([p.f for p in c.points])))
    assert c.cmd.value == pytest.approx(float(curves.cmd([p.f for p in c.points])))
    assert c.cpr.interval.contains(c.cpr.value) and c.cmd.interval.contains(c.cmd.value)


def test_reference_replicates_widen_the_intervals_and_the_record_round_trips(tiny_ev):
    ranking = curves.rank_heads(tiny_ev, "attribution")
    with_refs = curves.head_curve(tiny_ev, ranking, random_orders=2)
    without = curves.faithfulness_curve(
        tiny_ev, ranking, curves.head_keep(curves.head_positions(3, 4, None, "all")), 12, random_orders=2,
        reference_noise=False)
    assert with_refs.cpr.value == pytest.approx(without.cpr.value)
    assert "replicates of the reference set" in with_refs.interval_method
    assert "not yet included" in without.interval_method
    back = curves.Curve.from_dict(json.loads(json.dumps(with_refs.to_dict())))
    assert back.to_dict() == with_refs.to_dict()


def test_random_baseline_is_reproducible_with_a_seed(tiny_ev):
    items = list(range(12))
    a, b = curves.random_rankings(items, 5, 7), curves.random_rankings(items, 5, 7)
    assert [r.items for r in a] == [r.items for r in b]
    assert [r.items for r in a] != [r.items for r in curves.random_rankings(items, 5, 8)]
    assert len({r.items for r in a}) == 5
    ranking = curves.rank_heads(tiny_ev, "attribution")
    one, two = (curves.head_curve(tiny_ev, ranking, random_orders=3) for _ in range(2))
    assert one.baseline.to_dict() == two.baseline.to_dict()
    assert one.baseline.orders == 3 and len(one.baseline.cpr_per_order) == 3
    # the baseline is the mean of the orders' curves
    assert one.baseline.cpr.value == pytest.approx(np.mean(one.baseline.cpr_per_order))


def test_discovery_order_puts_kept_heads_first_then_the_last_removed():
    from types import SimpleNamespace

    from circuit_core.circuit import Circuit, CircuitClass

    d = SimpleNamespace(circuit=Circuit("c", [CircuitClass("x", "END", [(1, 0)])]),
                        steps=[{"action": "start", "head": None}, {"action": "remove", "head": "0.0"},
                               {"action": "remove", "head": "0.1"}])
    r = curves.rank_by_discovery(d, [(0, 0), (0, 1), (1, 0), (1, 1)])
    assert r.items == ((1, 0), (0, 1), (0, 0), (1, 1)) and r.scores[-1] is None


def test_graph_ranking_needs_scores():
    with pytest.raises(ValueError, match="no per-head scores"):
        curves.rank_by_graph({}, [(0, 0)])
    r = curves.rank_by_graph({(0, 1): 0.5, (0, 0): 0.9}, [(0, 0), (0, 1), (1, 0)])
    assert r.items == ((0, 0), (0, 1), (1, 0))


# --- intervals that hold --------------------------------------------------------------------------------
G = np.array([0, 0, 0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8, 1.0])  # the true curve of the simulation
MU_M, MU_E, TAU = 3.0, 0.5, 0.08  # TAU: sd of the shift a drawn reference set gives a set's mean


def simulated_run(rng, n: int = 100, replicates: int = 8):
    """Per-prompt values of M, ∅ and the curve's sets as the engine returns them: a prompt's values move
    together across sets (paired), and the reference set drawn for this run shifts every ablated set's mean
    (correlated across sets, none for M); its replicates shift them again by as much."""
    z, e = rng.normal(size=n), rng.normal(size=(12, n))
    spread = np.r_[1.0, 0.3, 0.3 + 0.7 * G]  # model, empty, points: the prompt factor's weight
    means = np.r_[MU_M, MU_E, MU_E + (MU_M - MU_E) * G]
    values = means[:, None] + spread[:, None] * z + 0.5 * e
    values[-1] = values[0]  # the last set keeps every head everywhere: it is M
    names = ["model", "empty"] + [f"c{i}" for i in range(10)]

    def shift():
        u = rng.normal(size=12)
        s = TAU * (0.7 * u[0] + 0.7 * u[1:])
        s[-1] = 0.0  # the last set keeps every head: nothing ablated, no reference noise
        return np.r_[0.0, s]

    here = values + shift()[:, None]
    per_prompt = dict(zip(names, here))
    reps = [dict(zip(names[1:], (here + shift()[:, None])[1:])) for _ in range(replicates)]
    return per_prompt, reps


def test_intervals_cover_the_truth_with_reference_noise_and_miss_it_without():
    """Runs simulated as the engine's output (`simulated_run`): the joint intervals of CPR, CMD and each
    point cover the true values in at least 90% of 200 runs (measured: CPR and CMD 184, the points 1,094 of
    1,200); dropping the reference replicates (prompts only) covers CPR in 158, as a reference set's noise,
    here as large as the prompts', is then left out."""
    truth_cpr, truth_cmd = float(curves.cpr(G)), float(curves.cmd(G))
    rng = np.random.default_rng(0)
    runs, hits, hits_prompts_only = 200, {"cpr": 0, "cmd": 0, "points": 0}, 0
    for seed in range(runs):
        per_prompt, reps = simulated_run(rng)
        est, iv = curves.curve_figures(per_prompt, reps, 0, n_boot=200, seed=seed)
        hits["cpr"] += iv["cpr"].contains(truth_cpr)
        hits["cmd"] += iv["cmd"].contains(truth_cmd)
        hits["points"] += sum(iv[f"f{i}"].contains(G[i]) for i in range(3, 9))
        hits_prompts_only += curves.curve_figures(per_prompt, [], 0, n_boot=200, seed=seed)[1]["cpr"].contains(truth_cpr)
    assert hits["cpr"] >= 0.9 * runs and hits["cmd"] >= 0.9 * runs, hits
    assert hits["points"] >= 0.9 * 6 * runs, hits
    assert hits_prompts_only <= hits["cpr"] - 0.05 * runs, (hits_prompts_only, hits)


# --- the CLI --------------------------------------------------------------------------------------------
def test_cli_writes_results_curve(tmp_path, capsys):
    out = tmp_path / "curve.json"
    rc = main(["curve", "--model", "demo", "--circuit", "data/circuits/ioi-demo.json", "--n", "30",
               "--bootstrap", "50", "--ref-replicates", "0", "--random-orders", "2", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Ranking heads by attribution (the default" in text and "CPR" in text and "CMD" in text
    rec = json.loads(out.read_text())
    cur = rec["results"]["curve"]
    assert cur["ranking"] == "attribution" and len(cur["points"]) == len(curves.FRACTIONS)
    assert set(cur["points"][0]) == {"fraction", "k", "f", "interval"}
    assert set(cur["cpr"]) == {"value", "interval"} and set(cur["cmd"]) == {"value", "interval"}
    assert cur["baseline"]["orders"] == 2 and len(cur["baseline"]["points"]) == len(curves.FRACTIONS)
    lo, hi = cur["cpr"]["interval"]
    assert lo <= cur["cpr"]["value"] <= hi
    assert curves.Curve.from_dict(cur).cpr.value == cur["cpr"]["value"]


def test_cli_refuses_graph_ranking_without_a_graph(capsys):
    assert main(["curve", "--model", "demo", "--ranking", "graph"]) == 2
    assert "needs an EAP-IG graph" in capsys.readouterr().err
    assert main(["curve", "--model", "demo", "--circuit", "data/circuits/ioi-demo.json", "--ranking", "graph"]) == 2
    assert "no per-head scores" in capsys.readouterr().err


def test_cli_ranks_by_the_scores_of_an_eap_graph(tmp_path, capsys):
    from circuit_core.interchange import to_eap_graph

    circuit = load_circuit("data/circuits/ioi-demo.json")
    scores = {(l, h): float(l * 4 + h) for l in range(4) for h in range(4)}  # 3.3 first, 0.0 last
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps(to_eap_graph(circuit, {"n_layers": 4, "n_heads": 4, "d_model": 64,
                                                       "parallel_attn_mlp": False}, edges=False, head_scores=scores)))
    out = tmp_path / "curve.json"
    assert main(["curve", "--model", "demo", "--ranking", "graph", "--graph", str(graph), "--n", "20",
                 "--bootstrap", "20", "--ref-replicates", "0", "--random-orders", "0", "--out", str(out)]) == 0
    cur = json.loads(out.read_text())["results"]["curve"]
    assert cur["ranking"] == "graph" and cur["order"][:3] == ["3.3", "3.2", "3.1"] and cur["baseline"] is None
    assert "Ranking heads by graph" in capsys.readouterr().out


def test_activation_ranking_scores_each_head_at_its_kept_position(tiny_ev):
    from circuit_core.circuit import Circuit, CircuitClass

    circuit = Circuit("c", [CircuitClass("x", "END", [(2, 1)])])
    r = curves.rank_heads(tiny_ev, "activation", circuit)
    assert sorted(r.items) == sorted((l, h) for l in range(3) for h in range(4)) and r.source == "activation"
    where = curves.head_positions(3, 4, circuit, "circuit")
    assert where[(2, 1)] == "END" and where[(0, 0)] == "*"
    finite = [s for s in r.scores if s is not None]
    assert finite == sorted(finite, reverse=True)


def test_attribution_ranking_under_kl_is_taken_at_the_empty_circuit(tiny_ev):
    """KL's gradient is 0 at the full model, so attribution there would score every head 0 and rank them in
    their given order; under KL the ranking is each head's first-order drop in KL when restored at ∅."""
    from circuit_core.attribution import attribution

    where = curves.head_positions(tiny_ev.n_layers, tiny_ev.n_heads, None, "all")
    kl_ev = tiny_ev.model.evaluators.get(tiny_ev.methodology.replace(metric="kl"))
    at_m = attribution(kl_ev, NodeSet.model())
    assert all(abs(at_m.at(h, r)) < 1e-6 for h, r in where.items())  # the reason
    r = curves.rank_by_attribution(kl_ev, where)
    att = attribution(kl_ev, NodeSet.empty())
    want = sorted(where, key=lambda h: att.at(h, where[h]))  # most negative dKL first: restoring it helps most
    assert list(r.items) == want and "∅" in r.note and max(map(abs, r.scores)) > 1e-3


# --- edges ----------------------------------------------------------------------------------------------
def test_an_edge_curve_point_is_the_circuit_of_its_top_edges(tiny_ev):
    """The top-k edges kept are the circuit whose classes hold their ends and whose edge list is them: the same
    F as evaluating that circuit, and the full edge list is M."""
    from circuit_core.circuit import Circuit, CircuitClass, Edge, head_name
    from circuit_core.criteria import circuit_node_set

    L, H = tiny_ev.n_layers, tiny_ev.n_heads
    where = curves.head_positions(L, H, None, "all")
    every = curves.model_edges(L, H)
    assert len(every) == sum(3 * H * H * (L - 1 - l) for l in range(L)) + L * H
    rng = np.random.default_rng(4)
    top = [every[i] for i in rng.permutation(len(every))[:15]]
    ends = sorted({s for s, _, _ in top} | {r for _, r, _ in top if r != "logits"})
    circuit = Circuit("top", [CircuitClass(head_name(h), "*", [h]) for h in ends],
                      edges=[Edge(head_name(s), r if r == "logits" else head_name(r), x) for s, r, x in top])
    keep = curves.edge_keep(where)
    got, want = tiny_ev.F([keep(top), circuit_node_set(circuit, "all")])
    assert got == pytest.approx(want, abs=1e-9)
    assert not keep(every).removed_edges and tiny_ev.F([keep(every)]) == pytest.approx(tiny_ev.F([NodeSet.model()]))


def test_cli_edge_curve_ranks_by_a_graphs_edge_scores(tmp_path, capsys):
    from circuit_core.interchange import edge_name, from_eap_graph, to_eap_graph

    circuit = load_circuit("data/circuits/ioi-demo.json")
    graph = to_eap_graph(circuit, {"n_layers": 4, "n_heads": 4, "d_model": 64, "parallel_attn_mlp": False})
    graph["edges"][edge_name("a2.h2", "logits")]["score"] = 5.0
    graph["edges"][edge_name("a1.h1", "a2.h2", "q")]["score"] = -3.0
    imported = from_eap_graph(graph)
    assert imported.edge_scores[((2, 2), "logits", "out")] == 5.0 and imported.edge_scores[((1, 1), (2, 2), "q")] == -3.0
    path, out = tmp_path / "graph.json", tmp_path / "curve.json"
    path.write_text(json.dumps(graph))
    assert main(["curve", "--model", "demo", "--items", "edges", "--graph", str(path), "--absolute", "--n", "20",
                 "--bootstrap", "20", "--ref-replicates", "0", "--random-orders", "1", "--out", str(out)]) == 0
    cur = json.loads(out.read_text())["results"]["curve"]
    assert cur["items"] == "edges" and cur["order"][:2] == ["2.2→logits", "1.1→2.2<q>"]
    assert cur["n_items"] == len(curves.model_edges(4, 4)) and cur["points"][-1]["f"] == pytest.approx(1.0, abs=0.05)
    assert main(["curve", "--model", "demo", "--items", "edges", "--ranking", "attribution"]) == 2
    assert "--ranking graph" in capsys.readouterr().err
