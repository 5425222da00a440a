"""Head-role scores: a hand-planted previous-token head is found; ablation effects match the
evaluator one set at a time; direct effects add up to the clean logit difference."""
from __future__ import annotations

import math

import pytest
import torch

from circuit_core import heads as hs
from circuit_core.ablation import NodeSet
from circuit_core.models import load_model
from circuit_core.tasks import get_task
from circuit_core.toy import save_random_gpt2

PLANTED = (1, 2)  # (layer, head)


@pytest.fixture(scope="module")
def planted_model(tmp_path_factory):
    """A 2-layer GPT-2 whose head 1.2 attends from every position to the one before it.

    Positions are embedded on a circle in dims 0-3 (as (cos, sin, -cos, -sin), so layer norm keeps
    them on the circle); the head's query is the key rotated back by one step, so q_i . k_j peaks
    at j = i - 1 and falls off by >= 20 logits elsewhere. Layer 0 writes nothing, so layer 1 sees
    exactly token + position embeddings.
    """
    folder = tmp_path_factory.mktemp("planted")
    hf = save_random_gpt2(folder, n_layer=2, n_head=4, n_embd=32, random_biases=False, seed=1)
    d, dh, n_pos = 32, 8, hf.config.n_positions
    theta = math.pi / n_pos  # d * theta < pi for every distance in the context: no wrap-around
    beta = 20 / (1 - math.cos(theta))
    p = torch.arange(n_pos) * theta
    with torch.no_grad():
        tr = hf.transformer
        tr.wte.weight[:, :4] = 0
        tr.wpe.weight.zero_()
        tr.wpe.weight[:, :4] = 10 * torch.stack([p.cos(), p.sin(), -p.cos(), -p.sin()], 1)
        tr.h[0].attn.c_proj.weight.zero_()
        tr.h[0].mlp.c_proj.weight.zero_()
        w = tr.h[1].attn.c_attn.weight  # Conv1D [d_in, q | k | v]; after layer norm dims 0,1 = 4 (cos, sin)
        layer, head = PLANTED
        q, k = slice(head * dh, (head + 1) * dh), slice(d + head * dh, d + (head + 1) * dh)
        w[:, q] = 0
        w[:, k] = 0
        rot = torch.tensor([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])  # R(-theta)
        w[:2, q.start : q.start + 2] = math.sqrt(dh) * beta / 4 * rot.T
        w[:2, k.start : k.start + 2] = torch.eye(2) / 4
    hf.save_pretrained(folder)
    return load_model(str(folder), device="cpu")


def test_repeated_tokens_are_seeded_copies(tiny_model):
    a = hs.repeated_tokens(tiny_model, n_seqs=3, length=10, seed=1)
    assert a.shape == (3, 21) and (a[:, 0] == tiny_model.tokenizer.bos_token_id).all()
    assert torch.equal(a[:, 1:11], a[:, 11:])
    assert all(len(set(row[1:11].tolist())) == 10 for row in a)  # no repeats within a copy
    assert not set(a[:, 1:].flatten().tolist()) & set(tiny_model.tokenizer.all_special_ids)
    assert torch.equal(a, hs.repeated_tokens(tiny_model, n_seqs=3, length=10, seed=1))
    assert not torch.equal(a, hs.repeated_tokens(tiny_model, n_seqs=3, length=10, seed=2))


def test_planted_previous_token_head_ranks_first(planted_model):
    scores = hs.repeated_token_scores(planted_model, seed=0)
    prev = hs.wide(scores)[hs.PREV].sort_values(ascending=False)
    assert prev.index[0] == PLANTED
    assert prev.iloc[0] > 0.95
    assert prev.loc[(0, 1)] < 0.5 and prev.iloc[1] < 0.5  # a random head, and the runner-up
    # A previous-token head is not an induction or duplicate-token head.
    w = hs.wide(scores).loc[PLANTED]
    assert w[hs.IND] < 0.1 and w[hs.DUP] < 0.1


def test_ablation_effects_match_evaluator_one_by_one(tiny_evaluator, tiny_model):
    table = hs.ablation_effects(tiny_evaluator)
    assert len(table) == tiny_model.n_layers * tiny_model.n_heads and set(table.metric) == {hs.ABLATION}
    f_model = tiny_evaluator.F([NodeSet.model()])[0]
    for r in table.iloc[[0, 5, 11]].itertuples():  # first, middle and last head: indexing, not all 12 calls
        alone = tiny_evaluator.F([NodeSet(frozenset({(r.layer, r.head, "*")}), complement=True)])[0]
        assert r.score == pytest.approx(alone - f_model, abs=1e-5)


def test_task_scores_and_direct_effects_add_up(tiny_model, tiny_dataset, tiny_evaluator):
    table = hs.task_scores(tiny_model, tiny_dataset)
    w = hs.wide(table)
    pairs = get_task("ioi").attention_pairs
    assert set(w.columns) == {*pairs, hs.DIRECT} and len(w) == 12
    attn = w[list(pairs)]
    assert ((attn >= 0) & (attn <= 1)).all().all()
    # With ln_final's scale frozen the readout is linear: the heads' direct effects plus embeddings,
    # MLPs, output biases and the unembedding bias give back the clean logit difference exactly.
    b, ds = tiny_model.bridge, tiny_dataset
    with torch.no_grad():
        _, cache = b.run_with_cache(ds.tokens)
        rest = cache["hook_embed"] + cache["hook_pos_embed"]
        for l in range(tiny_model.n_layers):
            rest = rest + cache[f"blocks.{l}.hook_mlp_out"] + b.b_O[l]
        rows, end, ans = torch.arange(ds.n), ds.positions["END"], ds.answer_tokens
        r = rest[rows, end].double()
        r = (r - r.mean(-1, keepdim=True)) / cache["ln_final.hook_scale"][rows, end].double()
        direction = (b.W_U[:, ans[:, 0]] - b.W_U[:, ans[:, 1]]).T.double()
        rest_effect = ((r * direction).sum(-1) + (b.b_U[ans[:, 0]] - b.b_U[ans[:, 1]]).double()).mean()
    total = float(rest_effect) + w[hs.DIRECT].sum()
    assert total == pytest.approx(tiny_evaluator.F([NodeSet.model()])[0], abs=1e-4)
