"""Faithfulness numbers: hand-made cases and consistency with the evaluator."""
import numpy as np
import pytest

from circuit_core.ablation import NodeSet
from circuit_core.circuit import Circuit, CircuitClass
from circuit_core.criteria import circuit_node_set, faithfulness, faithfulness_stats
from circuit_core.resampling import bootstrap_intervals


def test_stats_by_hand():
    s = faithfulness_stats(np.array([3.0, 5.0]), np.array([2.0, 4.0]), np.array([0.5, 1.5]))
    assert s["F_model"] == 4.0 and s["F_circuit"] == 3.0 and s["F_empty"] == 1.0
    assert s["gap"] == 1.0 and s["ratio"] == 0.75
    assert s["normalized"] == pytest.approx(2 / 3) and s["F_model_minus_empty"] == 3.0


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
    # a random tiny model: F(M) is noise around 0, so F(C)/F(M) is undefined and says why, not fc / fm
    assert faithfulness_stats(**f.per_prompt)["ratio"] == pytest.approx(fc / fm)
    lo, hi = f.intervals["F_model"]
    assert (lo <= 0 <= hi) == ("ratio" in f.undefined)
    if "ratio" in f.undefined:
        assert np.isnan(f.stats["ratio"]) and f.undefined["ratio"].startswith("F(M) is indistinguishable from 0")
    else:
        assert f.stats["ratio"] == pytest.approx(fc / fm)
    assert f.stats["median_of_ratios_tau"] == pytest.approx(0.1 * np.median(np.abs(f.per_prompt["model"])))
    assert f.stats["median_of_ratios_excluded"] == int((f.per_prompt["model"] <= f.stats["median_of_ratios_tau"]).sum())
    record = f.to_dict()
    assert record["undefined"] == f.undefined and "median_of_ratios_excluded" in record
    for s in [record, *record["by_order"].values()]:  # no figure outside its own interval, none without a reason
        for key, (lo, hi) in s["intervals_95"].items():
            assert key in s["undefined"] or lo <= s[key] <= hi, key
    n = {o: s.n for o, s in f.by_order.items()}
    assert n["ABBA"] + n["BABA"] == tiny_evaluator.dataset.n
    # positions='all' keeps the heads everywhere: a different node set, a different number
    assert circuit_node_set(c, "all") != circuit_node_set(c)


def test_median_of_ratios_spread_and_worst_prompts_by_hand(tiny_dataset):
    import numpy as np

    from circuit_core.criteria import faithfulness_stats, median_of_ratios, spread, worst_prompts

    model = np.array([2.0, 4.0, 0.0, 1.0])
    circuit = np.array([1.0, 4.0, 3.0, 2.0])
    assert median_of_ratios(model, circuit) == 1.0  # τ = 0.15: the f_M = 0 prompt left out; median of 0.5, 1, 2
    assert faithfulness_stats(model, circuit, np.zeros(4))["ratio"] == 10 / 7  # ratio of means differs
    assert spread({"model": model})["model"] == {"q25": 0.75, "median": 1.5, "q75": 2.5}
    n = tiny_dataset.n
    per = {"model": np.arange(n, dtype=float), "circuit": np.zeros(n)}
    worst = worst_prompts(tiny_dataset, per, k=3)
    assert worst["f_M − f_C"].tolist() == [n - 1, n - 2, n - 3]
    assert worst["prompt"].iloc[0] == tiny_dataset.prompts[n - 1]


def test_every_breakdown_carries_an_interval(tiny_evaluator, tiny_dataset):
    import numpy as np

    from circuit_core.circuit import Circuit, CircuitClass
    from circuit_core.criteria import breakdown_by_group, faithfulness

    c = Circuit("t", [CircuitClass("a", "END", [(2, 1), (1, 0)])])
    f = faithfulness(tiny_evaluator, c)
    for order, s in f.by_order.items():
        assert set(s.intervals) >= {"ratio", "normalized", "F_model", "F_circuit", "median_of_ratios"}
        assert all(why for why in s.undefined.values())  # undefined always says why
        for key in ("F_model", "F_circuit"):  # means: the interval holds the estimate
            lo, hi = s.intervals[key]
            assert lo <= getattr(s, key) <= hi
    groups = breakdown_by_group(tiny_dataset, f.per_prompt, n_boot=200)
    assert (groups.lo <= groups.F + 1e-12).all() and (groups.F <= groups.hi + 1e-12).all()
    single = groups[groups.n == 1]  # a one-prompt group: nothing to resample, a zero-width interval
    assert np.allclose(single.lo, single.F) and np.allclose(single.hi, single.F)
    assert "median_of_ratios" in f.intervals
