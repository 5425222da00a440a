"""Ratios that cannot blow up: the median of per-prompt ratios over f_M > τ, ratios over a
denominator indistinguishable from 0 marked undefined, and no estimate outside its own interval."""
import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuit_core.criteria import (DENOMINATORS, Faithfulness, faithfulness_figures, faithfulness_stats,
                                   median_of_ratios, ratio_threshold, undefined_reason)
from circuit_core.resampling import bootstrap_draws


def test_median_of_ratios_by_hand():
    model = np.array([2.0, 4.0, 0.0, 1.0, -3.0, 0.05, 5.0])
    circuit = np.array([1.0, 4.0, 3.0, 2.0, 6.0, 9.0, 5.0])
    # |f_M| sorted: 0, 0.05, 1, 2, 3, 4, 5 -> median 2 -> τ = 0.2; kept: f_M = 2, 4, 1, 5
    assert ratio_threshold(model) == pytest.approx(0.2)
    assert median_of_ratios(model, circuit) == 1.0  # median of 0.5, 1, 2, 1
    fig = faithfulness_figures({"model": model, "circuit": circuit, "empty": np.zeros(7)}, n_boot=200)
    assert fig.stats["median_of_ratios_excluded"] == 3  # f_M = 0, −3 and 0.05
    assert fig.stats["median_of_ratios_tau"] == pytest.approx(0.2)
    # the old mean of ratios (only f_M = 0 left out) was ruled by the f_M = 0.05 prompt: 9 / 0.05 = 180
    ok = model != 0
    assert np.mean(circuit[ok] / model[ok]) > 30


def test_no_prompt_over_tau_is_undefined():
    model = np.array([-1.0, -2.0, 0.0])
    fig = faithfulness_figures({"model": model, "circuit": np.ones(3), "empty": np.zeros(3)}, n_boot=50)
    assert math.isnan(fig.stats["median_of_ratios"]) and "no prompt has f_M > τ" in fig.undefined["median_of_ratios"]
    assert fig.stats["median_of_ratios_excluded"] == 3


def near_zero_denominator(n=50, seed=0):
    """Shaped like BABA's prompts on an untrained GPT-2-shaped model: F(M) and F(∅) differ by noise only."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.3, n)
    return {"model": base + rng.normal(0, 0.1, n), "empty": base + rng.normal(0, 0.1, n),
            "circuit": base + rng.normal(0.1, 0.1, n)}


def test_a_denominator_indistinguishable_from_zero_makes_the_ratio_undefined():
    pp = near_zero_denominator()
    plug_in = faithfulness_stats(**pp)["normalized"]
    # the page used to print this: an estimate (here ~13000%) outside its own percentile interval
    lo, hi = np.nanpercentile(bootstrap_draws(pp, faithfulness_stats, 1000, 0)["normalized"], [2.5, 97.5])
    assert not lo <= plug_in <= hi
    fig = faithfulness_figures(pp, n_boot=1000)
    why, den = fig.undefined["normalized"], fig.intervals["F_model_minus_empty"]
    assert den[0] < 0 < den[1]
    assert why == f"F(M) − F(∅) is indistinguishable from 0: 95% interval [{den[0]:.3f}, {den[1]:.3f}]".replace("-", "−")
    assert math.isnan(fig.stats["normalized"]) and all(map(math.isnan, fig.intervals["normalized"]))
    assert "ratio" in fig.undefined and "F(M) is indistinguishable from 0" in fig.undefined["ratio"]


def test_the_denominator_interval_includes_the_reference_noise():
    rng = np.random.default_rng(1)
    n = 200
    pp = {"model": rng.normal(1.0, 0.5, n), "circuit": rng.normal(0.8, 0.5, n), "empty": rng.normal(0.85, 0.5, n)}
    pp["empty"] += pp["model"].mean() - 0.15 - pp["empty"].mean()  # F(M) − F(∅) = 0.15
    alone = faithfulness_figures(pp, n_boot=400)
    assert "normalized" not in alone.undefined and alone.intervals["F_model_minus_empty"][0] > 0  # ±~0.1
    # replicates whose F(∅) moves by ±0.3: the joint interval of F(M) − F(∅) now includes 0
    reps = [{"circuit": pp["circuit"], "empty": pp["empty"] + s} for s in (-0.3, 0.3, -0.2, 0.2)]
    joint = faithfulness_figures(pp, n_boot=400, replicates=reps)
    assert "F(M) − F(∅) is indistinguishable from 0" in joint.undefined["normalized"]
    assert "ratio" not in joint.undefined  # F(M) ablates nothing: no reference noise in it


def test_a_clear_ratio_is_defined_and_inside_its_interval():
    rng = np.random.default_rng(2)
    pp = {"model": rng.normal(3, 1, 100), "circuit": rng.normal(2.4, 1, 100), "empty": rng.normal(0.2, 1, 100)}
    fig = faithfulness_figures(pp, n_boot=400)
    assert not fig.undefined
    for key in ("ratio", "normalized", "median_of_ratios"):
        lo, hi = fig.intervals[key]
        assert lo <= fig.stats[key] <= hi


def values(n):
    """Logit differences as they come: ordinary, near zero, exactly zero and negative."""
    one = st.one_of(st.floats(-5, 5), st.floats(-1e-3, 1e-3), st.just(0.0), st.sampled_from([-1.0, 0.5, 2.0]))
    return st.lists(one, min_size=n, max_size=n).map(np.array)


@st.composite
def per_prompt_arrays(draw):
    n = draw(st.integers(1, 25))
    pp = {"model": draw(values(n)), "circuit": draw(values(n)), "empty": draw(values(n))}
    reps = [{"circuit": draw(values(n)), "empty": draw(values(n))} for _ in range(draw(st.sampled_from([0, 1, 3])))]
    return pp, reps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(per_prompt_arrays())
def test_every_figure_is_undefined_or_inside_its_own_interval(arrays):
    pp, reps = arrays
    fig = faithfulness_figures(pp, n_boot=100, replicates=reps)
    assert set(fig.intervals) == set(faithfulness_stats(**pp))  # every figure has its interval
    for key, (lo, hi) in fig.intervals.items():
        if key in fig.undefined:
            assert fig.undefined[key] and math.isnan(fig.stats[key]) and math.isnan(lo) and math.isnan(hi)
        else:
            assert lo <= fig.stats[key] <= hi, (key, fig.stats[key], lo, hi)
    for key, (den, _) in DENOMINATORS.items():  # a ratio over a denominator that may be 0 is never a number
        lo, hi = fig.intervals[den]
        if lo <= 0 <= hi:  # (an undefined denominator's NaN interval compares False)
            assert key in fig.undefined


def undefined_result():
    pp = near_zero_denominator()
    fig = faithfulness_figures(pp, n_boot=200)
    return Faithfulness.of({**fig.stats, "accuracy_model": 0.5, "accuracy_circuit": 0.5}, fig.intervals, pp,
                           {"BABA": {**fig.stats, "n": 50, "intervals_95": {k: list(v) for k, v in fig.intervals.items()},
                                     "undefined": fig.undefined}}, undefined=fig.undefined)


def test_the_record_says_why_and_readers_print_undefined():
    from circuit_core.cli import print_faithfulness
    from circuit_core.compare import criteria_table, summarize

    f = undefined_result()
    d = f.to_dict()
    assert d["undefined"]["normalized"].startswith("F(M) − F(∅) is indistinguishable from 0")
    assert {"median_of_ratios", "median_of_ratios_tau", "median_of_ratios_excluded"} <= set(d)
    assert undefined_reason(f, "normalized") == d["undefined"]["normalized"]
    assert undefined_reason(f, "F_model") is None
    assert undefined_reason(Faithfulness.from_dict({"ratio": float("nan")}), "ratio") == "not a number"  # a record from before
    out = io.StringIO()
    print_faithfulness(f, out)
    text = out.getvalue()
    assert "undefined" in text and "F(M) − F(∅) is indistinguishable from 0" in text and "nan" not in text
    row = criteria_table({"c": summarize(f)}).iloc[0]
    assert row["normalised"] == "undefined" and "indistinguishable" in row["normalised 95% CI"]


def test_the_report_prints_undefined_with_its_reason():
    from ui.report import headline_rows

    class R:
        faithfulness = undefined_result()

    rows = {label: (value, ci) for label, value, ci in headline_rows(R)}
    value, ci = rows["Normalised (F(C)−F(∅))/(F(M)−F(∅))"]
    assert value == "undefined" and ci.startswith("F(M) − F(∅) is indistinguishable from 0")


@pytest.mark.parametrize("with_replicates", [False, True])
def test_batched_bootstrap_draws_equal_the_loop(with_replicates):
    """The figures' intervals come from every draw at once (faithfulness_stats_many); they must be the
    very draws of the one-at-a-time loop over faithfulness_stats, replicates and NaN draws included."""
    from circuit_core.criteria import faithfulness_stats_many

    rng = np.random.default_rng(5)
    pp = {"model": rng.normal(1, 1, 40), "circuit": rng.normal(0.8, 1, 40), "empty": rng.normal(0, 0.3, 40)}
    pp["model"][:30] = -1.0  # few prompts over τ: some draws have none, their median of ratios is NaN
    reps = [{"circuit": pp["circuit"] + rng.normal(0, 0.1, 40), "empty": pp["empty"] + rng.normal(0, 0.1, 40)}
            for _ in range(3)] if with_replicates else []
    tau = 0.5
    loop = bootstrap_draws(pp, lambda **a: faithfulness_stats(**a, tau=tau), 300, 7, reps)
    fast = bootstrap_draws(pp, None, 300, 7, reps, batched=lambda **a: faithfulness_stats_many(**a, tau=tau))
    assert set(loop) == set(fast)
    assert np.isnan(loop["median_of_ratios"]).any()
    for k in loop:
        np.testing.assert_allclose(fast[k], loop[k], rtol=1e-12, atol=1e-12, err_msg=k)
