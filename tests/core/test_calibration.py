r"""Intervals that hold: the N = 100 interval covers what a much larger run finds.

On the bundled demo (a trained model) with `ioi-demo.json`, under the default methodology at N = 100 (50
reference prompts per group, a joint bootstrap over prompts × 8 reference replicates, 400 resamples):
- F(C)/F(M): the interval covers the large-run value in at least 17 of seeds 0-19;
- completeness, K = ∅ and each class: the intervals of F(C\K), F(M\K) and d = F(C\K) − F(M\K) cover
  theirs in at least 85% of cases over seeds 0-19;
- minimality: the 95% interval of each head's d = F(C\(K∪{v})) − F(C\K) covers the large-run d in at least
  95% of the 360 bars of seeds 0-59 (6 heads × 60 seeds), and in at least 85% for every head.

The large-run value ("the truth") is N = 2000 with 100 reference prompts per group, AVERAGED over seeds
1000-1003: one seed's value carries its own sampling error (for head 3.3, seed 1000 alone sits 2 of its
standard errors above the mean of 24 such seeds), and the old single-seed truth made a calibrated interval
look short.

Why 60 seeds for minimality: a calibrated 95% interval covers 95% on average, so over 120 bars (20 seeds)
one or two bars decide whether ≥ 95% holds. Over these 360 bars the studentised intervals cover 347 (the
percentile intervals they replaced: 340, fewer than the 342 that 95% needs). Still, a calibrated interval
sits near 95%, so no affordable sample makes "≥ 95%" certain: over 1,200 bars (seeds 0-199 against
seeds 1000-1007, `python -m bench.references --criteria-only --seeds 200`) the studentised intervals
cover 95.2%, the percentile ones 93.6%.
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

TRUTH_SEEDS = range(1000, 1004)
LARGE = dict(n=2000, ref_per_group=100, ref_replicates=0, bootstrap=10)
SEEDS = range(20)  # faithfulness and completeness
MINIMALITY_SEEDS = range(60)


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu"), load_circuit("data/circuits/ioi-demo.json")


def signed(table):
    """(d, d_lo, d_hi) of a completeness or minimality table: the signed difference and its interval
    (older tables: |d| and its interval)."""
    if "d" in table:
        return table.d.to_numpy(), table.d_lo.to_numpy(), table.d_hi.to_numpy()
    d = table["score"] if "score" in table else table["incompleteness"]
    return d.to_numpy(), table.ci_low.to_numpy(), table.ci_high.to_numpy()


@pytest.fixture(scope="module")
def truth(demo):
    """The large-run values, each the mean over TRUTH_SEEDS (each seed its own prompts and references)."""
    model, circuit = demo
    ratio, comp, mini = [], [], []
    for seed in TRUTH_SEEDS:
        ev = build_evaluator(model, Methodology(seed=seed, **LARGE))
        c = completeness(ev, circuit, n_random=0, greedy_runs=0)
        t = c.table
        assert t.name[0] == "∅"  # C\∅ = C: F(C)/F(M) without a faithfulness run
        ratio.append(c.per_prompt["C_minus_K"][0].mean() / c.F_model)
        comp.append([t.F_C_minus_K.to_numpy(), t.F_M_minus_K.to_numpy(), signed(t)[0]])
        mini.append(signed(minimality(ev, circuit).table)[0])
    return {"ratio": float(np.mean(ratio)), "completeness": np.mean(comp, axis=0), "minimality": np.mean(mini, axis=0)}


@pytest.fixture(scope="module")
def small(demo):
    """Per seed at N = 100 under the default methodology: the ratio's interval and the completeness table
    (seeds 0-19), the minimality table (seeds 0-59); one evaluator per seed serves all three."""
    model, circuit = demo
    out = {"ratio": [], "completeness": [], "minimality": []}
    for seed in MINIMALITY_SEEDS:
        meth = Methodology(n=100, seed=seed, bootstrap=400)
        assert (meth.ref_per_group, meth.ref_replicates) == (50, 8)  # the default regime is what is calibrated
        ev = build_evaluator(model, meth)
        if seed in SEEDS:
            out["ratio"].append(faithfulness(ev, circuit).intervals["ratio"])
            out["completeness"].append(completeness(ev, circuit, n_random=0, greedy_runs=0).table)
        out["minimality"].append(minimality(ev, circuit).table)
    return out


def test_joint_interval_covers_the_large_run(truth, small):
    covered = [lo <= truth["ratio"] <= hi for lo, hi in small["ratio"]]
    assert sum(covered) >= 17, (truth["ratio"], covered)  # at least 85% of 20 seeds


def test_completeness_intervals_cover_the_large_run(truth, small):
    true_c, true_m, true_d = truth["completeness"]
    covered = []
    for t in small["completeness"]:
        _, d_lo, d_hi = signed(t)
        for lo, hi, value in [(t.F_C_lo, t.F_C_hi, true_c), (t.F_M_lo, t.F_M_hi, true_m), (d_lo, d_hi, true_d)]:
            covered += list((np.asarray(lo) <= value) & (value <= np.asarray(hi)))
    assert np.mean(covered) >= 0.85, np.mean(covered)  # every point, both axes, and their difference


def test_minimality_intervals_cover_the_large_run(truth, small):
    value = truth["minimality"]
    covered = np.array([(lo <= value) & (value <= hi) for _, lo, hi in map(signed, small["minimality"])])
    heads = list(small["minimality"][0]["head"])
    by_head = dict(zip(heads, covered.mean(0).round(3)))
    assert covered.size == 360 and covered.mean() >= 0.95, (covered.sum(), by_head)
    assert covered.mean(0).min() >= 0.85, by_head  # no head far short (1.1 was at 75% over seeds 0-19)


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
