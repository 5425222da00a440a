"""Intervals that hold: the N = 100 interval covers what a much larger run finds.

On the bundled demo (a trained model), for 20 seeds: F(C)/F(M) of `ioi-demo.json` at N = 100 with
50 reference prompts per group and a joint bootstrap (prompts × 8 reference replicates) must cover
the estimate at N = 2000 with 100 reference prompts per group in at least 85% of the seeds.
"""
import pytest
import torch

from circuit_core.ablation import Methodology
from circuit_core.circuit import load_circuit
from circuit_core.criteria import faithfulness
from circuit_core.evaluate import build_evaluator
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
        meth = Methodology(n=100, seed=seed, ref_per_group=50, ref_replicates=8, bootstrap=400)
        f = faithfulness(build_evaluator(model, meth), circuit)
        lo, hi = f.intervals["ratio"]
        covered.append(lo <= truth <= hi)
    assert sum(covered) >= 17, (truth, covered)  # at least 85% of 20 seeds


def test_reference_replicates_widen_the_interval_by_the_reference_noise(demo):
    model, circuit = demo
    base = Methodology(n=100, seed=0, ref_per_group=5, bootstrap=400)
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
