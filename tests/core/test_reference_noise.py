"""The linear reference noise (evaluate.py, `ref_noise="linear"`) against the exact replicates.

Exact: every set evaluated again under each of the 8 bootstrap replicates of the reference set. Linear:
one backward pass per set gives each prompt's move, to first order, under each replicate's change of the
means. Stated tolerances (README, "Reference noise"):
- on every prompt, the replicates' moves of F agree with the exact ones: their spread over the
  replicates within 20% (1.25×), and the moves correlated above 0.85 replicate by replicate (the joint
  bootstrap reads only the spread: replicates are recentred on the full set);
- on the default stratified sample (about 32 prompts), the intervals users see (F(C)/F(M), every
  completeness interval) have both ends within 15% of the exact interval's width.
"""
import numpy as np
import pytest

import circuit_core.evaluate as evaluate
from circuit_core.ablation import Methodology, NodeSet
from circuit_core.circuit import Circuit, load_circuit
from circuit_core.completeness import completeness, incompleteness_sets, random_subsets
from circuit_core.criteria import circuit_node_set, faithfulness
from circuit_core.evaluate import build_evaluator
from circuit_core.models import load_model


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu"), load_circuit("data/circuits/ioi-demo.json")


@pytest.fixture(scope="module")
def tiny(tiny_model):
    circuit = Circuit.from_dict({"classes": [
        {"name": "early", "position": "S2", "heads": ["0.1", "0.3"]},
        {"name": "late", "position": "END", "heads": ["1.2", "2.0", "2.3"]},
    ]})
    return tiny_model, circuit


def node_sets(circuit):
    sets = [circuit_node_set(circuit, "circuit"), NodeSet.empty()]
    ks = [frozenset(c.heads) for c in circuit.classes] + random_subsets(circuit.heads, 2, 0)
    return sets + [s for K in ks for s in incompleteness_sets(circuit, K, "circuit")]


def moves(ev, sets):
    """[sets, replicates]: each replicate's move of F, centred over the replicates."""
    base = ev.logit_diffs(sets).numpy().mean(1)
    reps = np.stack([r.mean(1) for r in ev.replicate_diffs(sets)], 1) - base[:, None]
    return reps - reps.mean(1, keepdims=True)


@pytest.mark.parametrize("which", ["demo", "tiny"])
def test_linear_moves_match_the_exact_replicates_on_every_prompt(which, demo, tiny, monkeypatch):
    model, circuit = demo if which == "demo" else tiny
    meth = Methodology(n=60, seed=1)
    sets = node_sets(circuit)
    exact = moves(build_evaluator(model, meth.replace(ref_noise="exact")), sets)
    monkeypatch.setattr(evaluate, "REF_NOISE_PROMPTS", 10**9)  # every prompt in the sample
    linear_ev = build_evaluator(model, meth)
    assert len(linear_ev.noise_prompts) == 60
    linear = moves(linear_ev, sets)
    spread = exact.std(1)
    noisy = spread > 1e-6 * np.abs(linear_ev.logit_diffs(sets).numpy().mean(1)).max()
    assert noisy.sum() >= len(sets) // 2, spread  # most sets ablate something that the references move
    ratio = linear.std(1)[noisy] / spread[noisy]
    assert np.all((ratio > 0.8) & (ratio < 1.25)), ratio
    corr = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(linear[noisy], exact[noisy])])
    assert np.all(corr > 0.85), corr.round(3)  # the same replicates move F the same way
    assert np.all(np.abs(linear[~noisy]) <= 1e-3 * np.abs(exact).max() + 1e-9)


def test_intervals_on_the_default_sample_match_the_exact_ones(demo):
    model, circuit = demo
    meth = Methodology(n=100, seed=0, bootstrap=400)
    exact_ev, linear_ev = build_evaluator(model, meth.replace(ref_noise="exact")), build_evaluator(model, meth)
    assert 30 <= len(linear_ev.noise_prompts) <= 40  # one or two per group: the default sample

    def ends(ev):
        f = faithfulness(ev, circuit)
        t = completeness(ev, circuit, n_random=3, greedy_runs=0).table
        cols = [("F_C_lo", "F_C_hi"), ("F_M_lo", "F_M_hi"), ("d_lo", "d_hi")]
        lo = np.concatenate([[f.intervals["ratio"][0]]] + [t[a].to_numpy() for a, _ in cols])
        hi = np.concatenate([[f.intervals["ratio"][1]]] + [t[b].to_numpy() for _, b in cols])
        return lo, hi, f.interval_method

    (lo_x, hi_x, _), (lo_l, hi_l, method) = ends(exact_ev), ends(linear_ev)
    width = hi_x - lo_x
    assert np.all(np.abs(lo_l - lo_x) <= 0.15 * width), (np.abs(lo_l - lo_x) / width).round(3)
    assert np.all(np.abs(hi_l - hi_x) <= 0.15 * width), (np.abs(hi_l - hi_x) / width).round(3)
    assert "first order" in method


def test_linear_noise_is_memoised_and_costs_no_evaluation_of_the_replicates(demo):
    model, circuit = demo
    ev = build_evaluator(model, Methodology(n=40, seed=2))
    sets = node_sets(circuit)[:4]
    first = ev.replicate_diffs(sets)
    assert len(first) == 8 and first[0].shape == (4, 40)
    assert ev._replicates is None  # the replicate evaluators were never built: no set evaluated under them
    again = ev.replicate_diffs(sets)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    # the intact model ablates nothing: its values do not move under any replicate
    assert all(np.array_equal(r[0], ev.model_diffs.numpy()) for r in ev.replicate_diffs([NodeSet.model()]))


def test_progress_counts_the_reference_noise(demo):
    model, circuit = demo
    ev = build_evaluator(model, Methodology(n=40, seed=4))
    seen = []
    completeness(ev, circuit, n_random=2, greedy_runs=0, progress=lambda d, t: seen.append((d, t)))
    totals = {t for _, t in seen}
    assert len(totals) == 1, totals  # one bar for the whole run
    total = totals.pop()
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == total
    # the last stage, the reference noise, is counted: the bar is not full once the sets are evaluated
    n_sets = 1 + 2 * (1 + len(circuit.classes) + 2)
    assert total == n_sets + (n_sets - 1) and sum(d < total for d in done) > n_sets // 2
