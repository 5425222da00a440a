"""The metric as a methodology choice (circuit_core/metrics.py): logit_diff, kl and prob_diff.

The engine's per-prompt KL(P_model || P_S) and prob[correct] − prob[incorrect] are held to a plain Hugging
Face computation (per-head z replaced at the input of the attention's output projection, the whole
vocabulary's softmax taken in float64) on the bundled demo model and on a Gemma-2 (final logit soft-cap)
and a Llama; then the hooked path, the linear reference noise, the criteria under KL, the record, the
address, the CLI and patching.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import circuit_core.evaluate as evaluate
from circuit_core.ablation import Methodology, NodeSet
from circuit_core.circuit import load_circuit
from circuit_core.cli import main
from circuit_core.criteria import circuit_node_set, faithfulness
from circuit_core.evaluate import Evaluator, build_evaluator
from circuit_core.metrics import Metric, from_logits
from circuit_core.models import DEMO_MODEL_DIR, load_model
from circuit_core.patching import activation_patching, paired_dataset, path_patching
from circuit_core.tasks import build_dataset

from test_architectures import CIRCUIT, build, hf_end_logits, shrunk
from test_engine import random_sets
from test_reference_noise import moves, node_sets

ATOL = 1e-4  # as the engine's other tests: float32 against float64 on KL of a few nats
DEMO_CIRCUIT = "data/circuits/ioi-demo.json"


@pytest.fixture(scope="module")
def demo():
    from transformers import AutoModelForCausalLM

    return ("demo", load_model("demo", device="cpu"), AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR).eval(),
            load_circuit(DEMO_CIRCUIT))


@pytest.fixture(scope="module", params=["demo", "gemma2", "llama"])
def family(request, tmp_path_factory):
    if request.param == "demo":
        return request.getfixturevalue("demo")
    return (*build(tmp_path_factory, request.param), CIRCUIT)


def plain_metric(metric: str, logits: torch.Tensor, clean: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """The definitions, written out: KL(P_clean || P) in nats, softmax p[correct] − p[wrong]."""
    rows = torch.arange(len(logits))
    if metric == "kl":
        p, logp, logq = clean.softmax(-1), clean.log_softmax(-1), logits.log_softmax(-1)
        return (p * (logp - logq)).sum(-1)
    prob = logits.softmax(-1)
    return prob[rows, answers[:, 0]] - prob[rows, answers[:, 1]]


def the_sets(model, circuit):
    """F(M), F(C), F(∅) and random sets (roles and "*", plain and complemented)."""
    return [NodeSet.model(), circuit_node_set(circuit, "circuit"), NodeSet.empty()] + \
        random_sets(model.n_layers, model.n_heads, 3, seed=5)


@pytest.mark.parametrize("metric", ["kl", "prob_diff"])
def test_engine_equals_plain_hugging_face(family, metric):
    name, model, hf, circuit = family
    meth = Methodology(n=16, seed=3, ref_per_group=4, ref_replicates=0, metric=metric)
    ds = build_dataset("ioi", model.tokenizer, **meth.dataset_kwargs())
    sets = the_sets(model, circuit)
    ev = Evaluator(model, ds, meth, max_rows=7)  # chunks that cut the prompts unevenly
    assert ev.blocks is not None
    got = ev.logit_diffs(sets)
    end, answers = ds.positions["END"], ds.answer_tokens
    clean = hf_end_logits(hf, ds.tokens, end)
    plain = torch.stack([plain_metric(metric, hf_end_logits(hf, ds.tokens, end, keep, ev.values, model.n_heads),
                                      clean, answers) for keep in ev.masks(sets)])
    assert (got - plain).abs().max() < ATOL, (name, (got - plain).abs().max())
    assert (got[2] - got[0]).abs().max() > 1e-3  # ablation moves the metric: the comparison means something
    hooked = Evaluator(model, ds, meth, use_blocks=False).logit_diffs(sets)
    assert (got - hooked).abs().max() < ATOL, name


def test_kl_of_the_model_is_exactly_zero_and_the_others_positive(family):
    name, model, _, circuit = family
    ev = build_evaluator(model, Methodology(n=16, seed=3, ref_per_group=4, metric="kl"))
    values = ev.logit_diffs(the_sets(model, circuit))
    assert torch.equal(values[0], torch.zeros_like(values[0]))
    assert (values[1:] >= -1e-6).all() and (values[2] > 0).all(), name
    everything = NodeSet(frozenset((l, h, "*") for l in range(model.n_layers) for h in range(model.n_heads)))
    assert torch.equal(ev.logit_diffs([everything])[0], values[0])
    assert torch.equal(ev.clean_log_probs, ev.replicates[0].clean_log_probs)  # computed once, shared


def test_logit_diff_keeps_its_fast_path(demo, monkeypatch):
    """The default reads two logits by one dot product: no full unembedding, the same numbers as before."""
    _, model, _, circuit = demo
    sets = the_sets(model, circuit)
    expected = build_evaluator(model, Methodology(n=16, seed=3)).logit_diffs(sets)

    def refuse(*a, **k):
        raise AssertionError("the logit difference must not compute every logit")

    monkeypatch.setattr(type(model.blocks), "final_logits", refuse)
    ev = build_evaluator(model, Methodology(n=16, seed=3, metric="logit_diff"))
    assert torch.equal(ev.logit_diffs(sets), expected)
    assert "metric" not in ev._clean and not ev._clean


@pytest.mark.parametrize("metric", ["kl", "prob_diff"])
def test_linear_reference_noise_is_the_exact_replicates_first_order(demo, metric, monkeypatch):
    """Gradients of KL and of the probability difference, through autograd: with each replicate's change of
    the means scaled by 0.01 the linear moves agree with the exact ones within 5% and correlate above 0.99."""
    _, model, _, circuit = demo
    meth = Methodology(n=20, seed=1, ref_per_group=8, ref_replicates=6, metric=metric)
    sets = node_sets(circuit)[:8]
    exact = moves(shrunk(build_evaluator(model, meth.replace(ref_noise="exact")), 0.01), sets)
    monkeypatch.setattr(evaluate, "REF_NOISE_PROMPTS", 10**9)
    linear_ev = shrunk(build_evaluator(model, meth), 0.01)
    assert linear_ev.linear_noise
    linear = moves(linear_ev, sets)
    spread = exact.std(1)
    noisy = spread > 1e-3 * spread.max()
    assert noisy.sum() >= len(sets) // 2, spread
    ratio = linear.std(1)[noisy] / spread[noisy]
    assert np.all((ratio > 0.95) & (ratio < 1.05)), ratio
    corr = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(linear[noisy], exact[noisy])])
    assert np.all(corr > 0.99), corr.round(3)


def test_faithfulness_under_kl_reads_the_normalised_score(demo):
    from circuit_core.completeness import completeness
    from circuit_core.minimality import minimality
    from circuit_core.verdicts import verdict_summary

    _, model, _, circuit = demo
    ev = build_evaluator(model, Methodology(n=30, seed=2, ref_replicates=2, bootstrap=200, metric="kl"))
    f = faithfulness(ev, circuit)
    assert f.F_model == 0 and f.F_empty > f.F_circuit > 0
    assert np.isnan(f.ratio) and "under KL" in f.undefined["ratio"] and "under KL" in f.undefined["median_of_ratios"]
    assert f.normalized == pytest.approx((f.F_circuit - f.F_empty) / (0 - f.F_empty))
    assert "normalized" not in f.undefined and np.isnan(f.accuracy_model)
    c = completeness(ev, circuit, n_random=2, greedy_runs=0)
    m = minimality(ev, circuit, k_source="class")
    assert c.scale == pytest.approx(f.F_empty) and m.scale == pytest.approx(f.F_empty)  # F(∅) − F(M), F(M) = 0
    row = c.table.iloc[0]
    assert row["incompleteness_pct"] == pytest.approx(100 * row["incompleteness"] / f.F_empty)
    rules = verdict_summary(f, c, m, metric="kl")
    assert all("F(∅) − F(M)" in rules[k]["rule"] for k in ("faithfulness", "completeness", "minimality"))
    # faithfulness passes when F(C) stays within 20% of F(∅) of the model's 0, i.e. a normalised score ≥ 0.8
    lo, hi = f.intervals["gap"]
    expected = "passes" if max(abs(lo), abs(hi)) <= 0.2 * f.F_empty else rules["faithfulness"]["verdict"]
    assert rules["faithfulness"]["verdict"] == expected


def test_records_and_addresses_carry_the_metric(demo):
    from circuit_core.report import run_record
    from ui.view import View

    _, model, _, circuit = demo
    meth = Methodology(n=20, seed=2, metric="prob_diff")
    rec = json.loads(json.dumps(run_record(build_evaluator(model, meth), circuit, {})))
    assert rec["methodology"]["metric"] == "prob_diff" and Methodology(**rec["methodology"]) == meth
    old = {k: v for k, v in rec["methodology"].items() if k != "metric"}  # a record from before the choice
    assert Methodology(**old).metric == "logit_diff"
    view = View(methodology=meth)
    assert view.to_query()["metric"] == "prob_diff" and View.from_query(view.to_query()) == (view, [])
    assert View.from_query({"metric": "kl"})[0].methodology.metric == "kl"
    assert View.from_query({})[0].methodology.metric == "logit_diff"
    assert View.from_query({"metric": "bogus"})[1] == ["metric=bogus"]
    with pytest.raises(ValueError):
        Methodology(metric="kl-divergence")


@pytest.mark.parametrize("command", ["faithfulness", "completeness", "minimality"])
def test_cli_metric_kl_runs_and_is_recorded(tmp_path, capsys, command):
    out = tmp_path / "run.json"
    extra = {"completeness": ["--random", "1", "--greedy-runs", "0"], "minimality": ["--k-source", "class"]}
    rc = main([command, "--model", "demo", "--circuit", DEMO_CIRCUIT, "--n", "20", "--bootstrap", "50",
               "--ref-replicates", "0", "--metric", "kl", "--out", str(out), *extra.get(command, [])])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    rec = json.loads(out.read_text())
    assert rec["methodology"]["metric"] == "kl"
    assert "F = KL (nats)" in printed
    if command == "faithfulness":
        assert rec["results"]["F_model"] == 0 and "under KL" in printed
    else:
        assert "F(∅) − F(M)" in printed


@pytest.mark.parametrize("metric", ["kl", "prob_diff"])
def test_patching_with_the_metric(demo, metric):
    """Fast path = hooked path; F(clean) and F(corrupted) = the plain definitions; KL(clean) = 0."""
    import circuit_core.patching as patching

    _, model, hf, _ = demo
    ds = paired_dataset(model, Methodology(n=12, seed=3, metric=metric))
    fast = activation_patching(model, ds, "noise", roles=["END", "S2"], bootstrap=50, metric=metric)
    assert fast.metric == metric and fast.settings["engine"] == "blocks"
    end, answers = ds.positions["END"], ds.answer_tokens
    clean = hf_end_logits(hf, ds.tokens, end)
    corrupted = hf_end_logits(hf, ds.reference_tokens, end)
    assert fast.F_clean == pytest.approx(plain_metric(metric, clean, clean, answers).mean().item(), abs=ATOL)
    assert fast.F_corrupted == pytest.approx(plain_metric(metric, corrupted, clean, answers).mean().item(), abs=ATOL)
    if metric == "kl":
        assert fast.F_clean == 0
    fast_path = path_patching(model, ds, "logits", bootstrap=50, metric=metric)
    original = patching._fast
    try:
        patching._fast = lambda m: False
        hooked = activation_patching(model, ds, "noise", roles=["END", "S2"], bootstrap=50, metric=metric)
        hooked_path = path_patching(model, ds, "logits", bootstrap=50, metric=metric)
    finally:
        patching._fast = original
    assert hooked.settings["engine"] == "hooks"
    assert torch.allclose(fast.effects, hooked.effects, atol=1e-3, equal_nan=True)
    assert torch.allclose(fast_path.effects, hooked_path.effects, atol=1e-3, equal_nan=True)
    assert torch.isfinite(fast.effects).all() and fast.effects.abs().max() > 1e-3


def test_from_logits_definitions():
    logits = torch.randn(6, 11, dtype=torch.float64)  # 2 patches × 3 prompts
    answers = torch.tensor([[1, 2], [3, 4], [5, 0]])
    clean = torch.randn(3, 11, dtype=torch.float64).log_softmax(-1)
    kl = from_logits(logits, answers, Metric.KL, clean)
    expected = F.kl_div(logits.log_softmax(-1), clean.repeat(2, 1), log_target=True, reduction="none").sum(-1)
    assert torch.allclose(kl, expected)
    ld = from_logits(logits, answers, "logit_diff")
    assert torch.allclose(ld, logits[torch.arange(6), answers.repeat(2, 1)[:, 0]] - logits[torch.arange(6), answers.repeat(2, 1)[:, 1]])
