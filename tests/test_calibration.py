r"""Intervals that hold: the N = 100 interval covers what a much larger run finds.

On the bundled demo (a trained model), for 20 seeds: F(C)/F(M) of `ioi-demo.json` at N = 100 under the
default methodology (50 reference prompts per group, a joint bootstrap over prompts × 8 reference
replicates) must cover the estimate at N = 2000 with 100 reference prompts per group in at least 85%
of the seeds; so must the completeness intervals of F(C\K) and F(M\K) for K = ∅ and each class.
"""
import numpy as np
import pytest
import torch

from circuit_core.ablation import Methodology
from circuit_core.circuit import load_circuit
from circuit_core.completeness import completeness
from circuit_core.criteria import faithfulness
from circuit_core.evaluate import build_evaluator
from circuit_core.minimality import minimality
from circuit_core.models import load_model


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu"), load_circuit("data/circuits/ioi-demo.json")


def test_joint_interval_covers_the_large_run(demo):
    model, circuit = demo
    truth = faithfulness(build_evaluator(model, Methodology(n=2000, seed=1000, ref_per_group=100, bootstrap=10)),
                         circuit).ratio
    covered = []
    for seed in range(20):
        meth = Methodology(n=100, seed=seed, bootstrap=400)
        assert (meth.ref_per_group, meth.ref_replicates) == (50, 8)  # the default regime is what is calibrated
        f = faithfulness(build_evaluator(model, meth), circuit)
        lo, hi = f.intervals["ratio"]
        covered.append(lo <= truth <= hi)
    assert sum(covered) >= 17, (truth, covered)  # at least 85% of 20 seeds


def test_completeness_and_minimality_intervals_cover_the_large_run(demo):
    model, circuit = demo
    big_ev = build_evaluator(model, Methodology(n=2000, seed=1000, ref_per_group=100, ref_replicates=0, bootstrap=10))
    big, big_min = completeness(big_ev, circuit, n_random=0, greedy_runs=0).table, minimality(big_ev, circuit).table
    covered = []
    for seed in range(20):
        ev = build_evaluator(model, Methodology(n=100, seed=seed, bootstrap=400))
        t, mt = completeness(ev, circuit, n_random=0, greedy_runs=0).table, minimality(ev, circuit).table
        for lo, hi, truth in [(t.F_C_lo, t.F_C_hi, big.F_C_minus_K), (t.F_M_lo, t.F_M_hi, big.F_M_minus_K),
                              (t.ci_low, t.ci_high, big.incompleteness), (mt.ci_low, mt.ci_high, big_min.score)]:
            covered += list((lo.to_numpy() <= truth.to_numpy()) & (truth.to_numpy() <= hi.to_numpy()))
    assert np.mean(covered) >= 0.85, np.mean(covered)  # every point, both axes, each head's bar


def test_reference_replicates_widen_the_interval_by_the_reference_noise(demo):
    model, circuit = demo
    base = Methodology(n=100, seed=0, ref_per_group=5, ref_replicates=0, bootstrap=400)
    plain = faithfulness(build_evaluator(model, base), circuit)
    ev = build_evaluator(model, base.replace(ref_replicates=8))
    joint = faithfulness(ev, circuit)
    assert joint.ratio == plain.ratio  # the point estimate is the full reference set's
    width = lambda f: f.intervals["ratio"][1] - f.intervals["ratio"][0]
    assert width(joint) > width(plain)  # 5 references per group: their noise is real
    assert "replicates" in joint.interval_method and "not included" in plain.interval_method
    # each replicate is another draw of the means: same prompts, different values
    reps = ev.replicates
    assert len(reps) == 8 and not torch.equal(reps[0]._table, ev._table)
    assert torch.equal(reps[0].model_diffs, ev.model_diffs)  # the intact model ablates nothing
