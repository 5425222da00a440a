"""Evidence per class (circuit_core/evidence.py) against independent computations."""
import json

import pytest
import torch

from circuit_core.metrics import Metric
from circuit_core.circuit import LOGITS, Circuit, CircuitClass, Edge
from circuit_core.evidence import (CircuitEvidence, attention_evidence, circuit_evidence, copy_scores, edge_effects,
                                   name_tokens, role_scores, wilson)
from circuit_core.heads import repeated_token_scores
from circuit_core.models import load_model
from circuit_core.patching import path_patching
from circuit_core.tasks import build_dataset


@pytest.fixture(scope="module")
def paired(tiny_model):
    return build_dataset("ioi", tiny_model.tokenizer, n=12, seed=3, ref_per_group=0)


def _hand_copy(hf, layer, head, tokens, sign, k=5):
    """The copy score from the Hugging Face weights: wte -> + MLP0(ln_2) -> ln_1 of the head's layer ->
    its value slice of c_attn -> its rows of c_proj -> ±, ln_f, lm_head -> name in the top k."""
    tr, n_embd = hf.transformer, hf.config.n_embd
    d = n_embd // hf.config.n_head
    with torch.no_grad():
        e = tr.wte.weight[tokens]
        x = e + tr.h[0].mlp(tr.h[0].ln_2(e))
        att = tr.h[layer].attn
        W, b = att.c_attn.weight, att.c_attn.bias  # Conv1D: [d_model, 3 d_model]
        cols = slice(2 * n_embd + head * d, 2 * n_embd + (head + 1) * d)
        v = tr.h[layer].ln_1(x) @ W[:, cols] + b[cols]
        o = sign * (v @ att.c_proj.weight[head * d:(head + 1) * d])
        logits = hf.lm_head(tr.ln_f(o))
        return int((logits.topk(k, -1).indices == torch.tensor(tokens)[:, None]).any(-1).sum())


def test_copy_scores_equal_a_hand_computation_from_the_hf_weights(tiny_model, tiny_hf, paired):
    tokens = name_tokens(paired)
    heads = [(l, h) for l in range(3) for h in range(4)]
    scores = copy_scores(tiny_model, heads, tokens)
    for (l, h), (pos, neg) in scores.items():
        assert pos.copied == _hand_copy(tiny_hf, l, h, tokens, 1), (l, h)
        assert neg.copied == _hand_copy(tiny_hf, l, h, tokens, -1), (l, h)
        assert pos.n_tokens == len(tokens) and pos.interval.contains(pos.score)


@pytest.fixture(scope="module")
def copier(tmp_path_factory):
    """A 2-layer, one-head GPT-2 whose layer-1 head copies: MLP0 off, norms plain, W_V = W_O = I; and the same
    with W_O = −I (a negative copier). With W_E random in 32 dimensions, e_t · e_t beats every e_t · e_j."""
    from transformers import GPT2LMHeadModel
    from circuit_core.toy import save_random_gpt2

    out = {}
    for sign in (1, -1):
        folder = tmp_path_factory.mktemp(f"copier{sign}")
        save_random_gpt2(folder, n_layer=2, n_head=1, n_embd=32, seed=0, init_std=0.3, random_biases=False)
        hf = GPT2LMHeadModel.from_pretrained(folder)
        with torch.no_grad():
            h0, h1, d = hf.transformer.h[0], hf.transformer.h[1], 32
            h0.mlp.c_proj.weight.zero_(), h0.mlp.c_proj.bias.zero_()
            for ln in (h1.ln_1, hf.transformer.ln_f):
                ln.weight.fill_(1.0), ln.bias.zero_()
            h1.attn.c_attn.weight[:, 2 * d:] = torch.eye(d)
            h1.attn.c_attn.bias[2 * d:] = 0
            h1.attn.c_proj.weight.copy_(sign * torch.eye(d))
        hf.save_pretrained(folder)
        out[sign] = load_model(str(folder), device="cpu")
    return out


def test_an_identity_ov_head_copies_every_name_and_its_negative_copies_none(copier):
    model = copier[1]
    tokens = name_tokens(build_dataset("ioi", model.tokenizer, n=30, seed=0, ref_per_group=0))
    pos, neg = copy_scores(model, [(1, 0)], tokens)[(1, 0)]
    assert pos.score == 1.0 and neg.score == 0.0
    assert pos.interval.hi == 1.0 and pos.interval.lo > 0.8  # Wilson: not the degenerate [1, 1]
    pos, neg = copy_scores(copier[-1], [(1, 0)], tokens)[(1, 0)]
    assert pos.score == 0.0 and neg.score == 1.0


def test_wilson_interval_matches_the_formula():
    iv = wilson(8, 10)
    assert iv.lo == pytest.approx(0.4902, abs=1e-4) and iv.hi == pytest.approx(0.9433, abs=1e-4)


def test_attention_values_are_the_models_own_attention_probabilities(tiny_model, tiny_dir, paired):
    from transformers import GPT2LMHeadModel

    tiny_hf = GPT2LMHeadModel.from_pretrained(tiny_dir, attn_implementation="eager").eval()  # returns its attention
    heads = [(0, 1), (2, 3)]
    cells = attention_evidence(tiny_model, paired, heads, prompts=(0, 2), bootstrap=200)
    with torch.no_grad():
        att = tiny_hf(paired.tokens[[0, 2]], output_attentions=True).attentions  # per layer [b, head, q, k]
    for (l, h) in heads:
        for c in cells[(l, h)]:
            for j, prompt in enumerate((0, 2)):
                q, k = int(paired.positions[c.query][prompt]), int(paired.positions[c.key][prompt])
                assert c.chosen[j] == pytest.approx(float(att[l][j, h, q, k]), abs=1e-5)
            assert c.interval.lo - 1e-9 <= c.mean <= c.interval.hi + 1e-9
    end_to_io = next(c for c in cells[(2, 3)] if c.query == "END" and c.key == "IO")
    with torch.no_grad():
        every = tiny_hf(paired.tokens, output_attentions=True).attentions[2][:, 3]
    rows = torch.arange(paired.n)
    assert end_to_io.mean == pytest.approx(float(every[rows, paired.positions["END"], paired.positions["IO"]].mean()),
                                           abs=1e-5)


def test_role_scores_have_heads_py_means(tiny_model):
    scores = role_scores(tiny_model, [(1, 2), (2, 0)], n_seqs=6, seed=1, bootstrap=200)
    table = repeated_token_scores(tiny_model, n_seqs=6, seed=1)
    for (l, h), rows in scores.items():
        for r in rows:
            ref = table[(table.layer == l) & (table["head"] == h) & (table.metric == r.metric)].score.item()
            assert r.score == pytest.approx(ref, abs=1e-5) and r.interval.contains(r.score)


def _two_classes(a, b, position="END"):
    return Circuit("two", [CircuitClass("A", "END", [a]), CircuitClass("B", position, [b])],
                   edges=[Edge("A", "B", "q"), Edge("A", "B", "v"), Edge("A", LOGITS, "out")])


def test_an_edge_from_a_one_head_class_equals_path_patching(tiny_model, paired):
    circuit = _two_classes((0, 1), (2, 3))
    effects = edge_effects(tiny_model, paired, circuit, bootstrap=200)
    for x in ("q", "v"):
        # the query where the class is kept; the values wherever it attends
        ref = path_patching(tiny_model, paired, [(2, 3)], x, "END" if x == "q" else None, bootstrap=200)
        got = effects.of(Edge("A", "B", x))
        assert got.effect == pytest.approx(float(ref.effects[0, 1]), rel=1e-3)  # hooked vs fast path: float32 sums
        assert got.interval.lo == pytest.approx(float(ref.lo[0, 1]), abs=1e-3)
    ref = path_patching(tiny_model, paired, "logits", bootstrap=200)
    assert effects.of(Edge("A", LOGITS, "out")).effect == pytest.approx(float(ref.effects[0, 1]), rel=1e-3)
    assert effects.F_clean == pytest.approx(ref.F_clean, abs=1e-5)


def test_a_joint_patch_of_two_heads_is_near_the_sum_of_their_single_effects(tiny_model, paired):
    """Two heads of one class patched together: near the sum of their single effects, not exactly it (the
    MLPs between them and the logits are not linear), which is why an edge's effect is a joint patch."""
    circuit = Circuit("pair", [CircuitClass("A", "END", [(1, 0), (1, 2)])], edges=[Edge("A", LOGITS, "out")])
    joint = edge_effects(tiny_model, paired, circuit, bootstrap=100).edges[0].effect
    ref = path_patching(tiny_model, paired, "logits", bootstrap=100)
    one, two = float(ref.effects[1, 0]), float(ref.effects[1, 2])
    assert joint == pytest.approx(one + two, abs=0.25 * (abs(one) + abs(two)) + 1e-3)


def test_circuit_evidence_round_trips_through_json(tiny_model, paired):
    circuit = _two_classes((0, 1), (2, 3))
    ev = circuit_evidence(tiny_model, paired, circuit, prompts=(0, 1, 99), n_seqs=4, bootstrap=100)
    assert ev.prompts == (0, 1)  # 99 is past the prompts
    b = ev.of("B")
    assert [e.edge.input for e in b.incoming] == ["q", "v"] and len(b.copy) == 2 and len(b.roles) == 3
    assert len(b.attention) == len(paired.roles) ** 2
    back = CircuitEvidence.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert back == ev


def test_the_blocks_path_gives_the_hooked_passes_numbers(tiny_model, paired):
    circuit = Circuit("three", [CircuitClass("A", "S2", [(0, 1), (1, 3)]), CircuitClass("B", "END", [(1, 0), (2, 2)]),
                                CircuitClass("C", "END", [(2, 3)])])
    fast = edge_effects(tiny_model, paired, circuit, bootstrap=100)
    slow = edge_effects(tiny_model, paired, circuit, bootstrap=100, hooked=True, batch_size=20)
    assert "blocks" in fast.method and "hooked" in slow.method
    assert len(fast.edges) == len(circuit.all_edges()) and fast.F_clean == pytest.approx(slow.F_clean, abs=1e-5)
    for a, b in zip(fast.edges, slow.edges):
        assert a.edge == b.edge
        assert a.effect == pytest.approx(b.effect, rel=1e-3, abs=1e-5), a.edge.label()


@pytest.mark.parametrize("metric", ["kl", "prob_diff"])
def test_edge_effects_follow_the_metric_on_both_paths(tiny_model, paired, metric):
    """Under KL or the probability difference an edge's effect is path patching's under that metric, through
    the blocks and through hooked passes alike."""
    circuit = _two_classes((0, 1), (2, 3))
    fast = edge_effects(tiny_model, paired, circuit, bootstrap=100, metric=metric)
    slow = edge_effects(tiny_model, paired, circuit, bootstrap=100, metric=metric, hooked=True, batch_size=20)
    ref = path_patching(tiny_model, paired, [(2, 3)], "v", None, bootstrap=100, metric=metric)
    logits = path_patching(tiny_model, paired, "logits", bootstrap=100, metric=metric)
    for got in (fast, slow):
        assert got.F_clean == pytest.approx(ref.F_clean, abs=1e-5) and Metric(metric).label in got.method
        assert got.of(Edge("A", "B", "v")).effect == pytest.approx(float(ref.effects[0, 1]), rel=1e-3, abs=1e-5)
        assert got.of(Edge("A", LOGITS, "out")).effect == pytest.approx(float(logits.effects[0, 1]), rel=1e-3, abs=1e-5)
    if metric == "kl":
        assert fast.F_clean == pytest.approx(0.0, abs=1e-6)
    assert fast.F_clean != pytest.approx(edge_effects(tiny_model, paired, circuit, bootstrap=100).F_clean)
