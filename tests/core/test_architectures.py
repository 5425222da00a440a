"""The fast engine on every decoder family blocks.py describes, against two independent references.

Tiny random models of each architecture are built from `transformers` configs (toy.decoder_config: each
family's features switched on: partial rotary and parallel attention + MLP for GPT-NeoX, grouped-query
attention and a head dimension other than d / H for Llama, q/k/v biases for Qwen2, Gemma-2's extra norms,
soft-caps, query_pre_attn_scalar and a sliding window shorter than a prompt, GPT-J's interleaved partial
rotary) and loaded through `load_model` like any model. The engine (`Evaluator` on `model.blocks`) is held
- to the hooked path (`use_blocks=False`: one bridge pass per set, `hook_z` replaced), and
- to a plain Hugging Face computation on a fresh copy of the weights, with per-head z replaced at the input
  of the attention's output projection (`c_proj`, `dense`, `o_proj`, `out_proj`),
within 1e-4, for random node sets, every ablation kind and both position scopes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import circuit_core.evaluate as evaluate
from circuit_core.ablation import Ablation, Methodology, NodeSet, PositionScope
from circuit_core.blocks import DecoderBlocks, GPT2Blocks
from circuit_core.circuit import Circuit
from circuit_core.criteria import circuit_node_set
from circuit_core.evaluate import Evaluator, build_evaluator
from circuit_core.models import load_model
from circuit_core.tasks import build_dataset
from circuit_core.toy import save_random_decoder

from test_engine import random_sets
from test_reference_noise import moves, node_sets

ARCHS = ["gpt2", "gpt-neox", "llama", "qwen2", "gemma2", "gptj"]
SHAPE = dict(n_layer=3, n_head=4, n_embd=32, init_std=0.3, seed=0)
METH = Methodology(n=16, seed=3, ref_per_group=4)
CIRCUIT = Circuit.from_dict({"classes": [
    {"name": "early", "position": "S2", "heads": ["0.1", "0.3"]},
    {"name": "late", "position": "END", "heads": ["1.2", "2.0", "2.3"]},
]})


def build(tmp_path_factory, name: str, **changes):
    """(name, bridge-loaded model, plain Hugging Face model of the same weights)."""
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp(f"tiny-{name}")
    save_random_decoder(folder, name, **{**SHAPE, **changes})
    return name, load_model(str(folder), device="cpu"), AutoModelForCausalLM.from_pretrained(folder).eval()


@pytest.fixture(scope="module", params=ARCHS)
def arch(request, tmp_path_factory):
    return build(tmp_path_factory, request.param)


def output_projections(hf) -> list[torch.nn.Module]:
    """Each layer's attention output projection, whose input is the heads' z side by side."""
    names = ("attn.c_proj", "attention.dense", "self_attn.o_proj", "attn.out_proj")
    found = [m for n, m in hf.named_modules() if n.endswith(names)]
    assert len(found) == hf.config.num_hidden_layers
    return found


def hf_head_outputs(hf, tokens: torch.Tensor, n_heads: int) -> torch.Tensor:
    """z of every head from the plain model: [N, seq, layer, head, d_head]."""
    store = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, l=l: store.__setitem__(l, args[0].detach().clone()))
               for l, m in enumerate(output_projections(hf))]
    try:
        with torch.no_grad():
            hf(tokens)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([store[l].view(*tokens.shape, n_heads, -1) for l in range(len(store))], 2)


def hf_end_logits(hf, tokens, end, keep=None, values=None, n_heads: int = 0) -> torch.Tensor:
    """Every logit at END, float64, with z replaced by `values` where not `keep` [N, seq, layer, head]."""
    handles = []
    if keep is not None:
        def replace(mod, args, l):
            z = args[0].view(*tokens.shape, n_heads, -1)
            z = torch.where(keep[:, :, l, :, None], z, values[:, :, l].to(z.dtype))
            return (z.reshape(*tokens.shape, -1),)

        handles = [m.register_forward_pre_hook(lambda mod, args, l=l: replace(mod, args, l))
                   for l, m in enumerate(output_projections(hf))]
    try:
        with torch.no_grad():
            logits = hf(tokens).logits
    finally:
        for h in handles:
            h.remove()
    return logits[torch.arange(len(tokens)), end].double()


def hf_logit_diffs(hf, tokens, end, answers, keep, values, n_heads: int) -> torch.Tensor:
    """logit[correct] - logit[wrong] at END with z replaced by `values` where not `keep` [N, seq, layer, head]."""
    at_end = hf_end_logits(hf, tokens, end, keep, values, n_heads)
    rows = torch.arange(len(tokens))
    return at_end[rows, answers[:, 0]] - at_end[rows, answers[:, 1]]


def test_the_fast_engine_is_used(arch):
    name, model, _ = arch
    assert model.blocks is not None, f"{name}: blocks.py does not describe it; the evaluator would use hooks"
    assert isinstance(model.blocks, GPT2Blocks if name == "gpt2" else DecoderBlocks)


def test_features_are_switched_on(arch):
    """The test models really have what the engine must get right (else agreement proves little)."""
    name, model, hf = arch
    b, cfg = model.blocks, hf.config
    if name == "gpt-neox":
        assert b.parallel and b.rotary[0].shape[-1] == model.d_head // 2  # partial rotary
    if name == "gptj":
        assert b.parallel and b.rotary[2] and b.rotary[0].shape[-1] < model.d_head  # interleaved, partial
    if name in ("llama", "qwen2", "gemma2"):
        assert b.group == 2  # grouped-query attention
    if name in ("llama", "gemma2"):
        assert model.d_head != cfg.hidden_size // cfg.num_attention_heads
    if name == "gemma2":
        assert b.final_softcap == 3.0 and b.layers[0].softcap == 2.0 and abs(b.embed_scale - 32 ** 0.5) < 1e-6
        assert [lw.window for lw in b.layers] == [4, None, 4] and b.layers[0].ln1_post is not None
        assert b.scale == 24 ** -0.5 and b.layers[0].ln1.offset


def test_z_is_the_output_projections_input(arch):
    name, model, hf = arch
    ds = build_dataset("ioi", model.tokenizer, **METH.dataset_kwargs())
    with torch.no_grad():
        ours = model.blocks.head_outputs(ds.tokens)
    assert (ours - hf_head_outputs(hf, ds.tokens, model.n_heads)).abs().max() < 1e-4


def sets_for(model, seed: int, positions=tuple(p.value for p in PositionScope)) -> list[NodeSet]:
    """The intact model, the empty circuit, the circuit and the circuit less each head in each position
    scope, and random sets (roles and "*", plain and complemented)."""
    sets = [NodeSet.model(), NodeSet.empty()]
    for scope in positions:
        sets.append(circuit_node_set(CIRCUIT, scope))
        sets += [NodeSet(frozenset(n for n in CIRCUIT.nodes(scope) if n[:2] != h)) for h in CIRCUIT.heads[:2]]
    return sets + random_sets(model.n_layers, model.n_heads, 8, seed=seed)


@pytest.mark.parametrize("ablation", [a.value for a in Ablation])
def test_engine_equals_hooked_path_and_plain_hugging_face(arch, ablation):
    """Both position scopes' sets in one call: the scope only decides which nodes a circuit's set holds."""
    name, model, hf = arch
    meth = METH.replace(ablation=ablation, ref_replicates=0)
    ds = build_dataset("ioi", model.tokenizer, **meth.dataset_kwargs())
    sets = sets_for(model, seed=len(ablation) * 7)
    ev = Evaluator(model, ds, meth, max_rows=7)  # chunks that cut the prompts unevenly
    assert ev.blocks is not None
    got = ev.logit_diffs(sets)
    hooked = Evaluator(model, ds, meth, use_blocks=False).logit_diffs(sets)
    assert (got - hooked).abs().max() < 1e-4, name
    plain = torch.stack([hf_logit_diffs(hf, ds.tokens, ds.positions["END"], ds.answer_tokens, keep, ev.values,
                                        model.n_heads) for keep in ev.masks(sets)])
    assert (got - plain).abs().max() < 1e-4, name
    # the ablations move F: the comparison is not between numbers that nothing changes
    assert (got[1] - got[0]).abs().max() > 1e-2


def test_edits_one_at_a_time_from_the_circuits_residuals(arch):
    """An edit that changes nodes only from some position on starts from the circuit's cached residuals
    (rotary at absolute positions, windows, parallel MLPs: attend_from and after_attn on a slice). One
    call per edit, as the editor makes them, against the hooked pass."""
    name, model, _ = arch
    meth = METH.replace(ref_replicates=0)
    ds = build_dataset("ioi", model.tokenizer, **meth.dataset_kwargs())
    ev, hooked = Evaluator(model, ds, meth), Evaluator(model, ds, meth, use_blocks=False)
    base = circuit_node_set(CIRCUIT, "circuit")
    ev.logit_diffs([base])
    nodes = set(base.nodes)
    for edit in ({(0, 0, "END")}, {(0, 2, "S2")}, {(1, 1, "S1+1")}, {(1, 3, "*")}):
        s = NodeSet(frozenset(nodes | edit))
        assert (ev.logit_diffs([s]) - hooked.logit_diffs([s])).abs().max() < 1e-4, (name, edit)


def test_prepended_bos_shifts_positions_by_one_and_still_agrees(arch):
    name, model, hf = arch
    meth = METH.replace(prepend_bos=True, ref_replicates=0)
    plain_ds = build_dataset("ioi", model.tokenizer, **METH.dataset_kwargs())
    ds = build_dataset("ioi", model.tokenizer, **meth.dataset_kwargs())
    assert (ds.tokens[:, 0] == model.tokenizer.bos_token_id).all()
    for role, pos in ds.positions.items():
        assert torch.equal(pos, plain_ds.positions[role] + 1), role
    sets = sets_for(model, seed=5, positions=("circuit",))
    ev = Evaluator(model, ds, meth)
    got = ev.logit_diffs(sets)
    plain = torch.stack([hf_logit_diffs(hf, ds.tokens, ds.positions["END"], ds.answer_tokens, keep, ev.values,
                                        model.n_heads) for keep in ev.masks(sets)])
    assert (got - plain).abs().max() < 1e-4, name


def shrunk(ev, eps: float):
    """The evaluator with each replicate's change of the ablation values scaled by eps."""
    full = ev._table
    ev._replicate_tables = [(full + eps * (table - full), index) for table, index in ev._replicate_tables]
    return ev


def test_linear_reference_noise_is_the_exact_replicates_first_order(arch, monkeypatch):
    """The linear reference noise (one backward pass per set) is the derivative of the exact replicates'
    moves: with each replicate's change of the means scaled by 0.01, the two agree within 5% (spread over
    the replicates) and correlate above 0.99, set by set. At full scale the agreement is the model's
    linearity in the means, not the engine's: tests/core/test_reference_noise.py holds it for GPT-2; on
    these tiny random models (init_std 0.3) it ranges from 1.0× (GPT-2) to 2× (Llama; 0.1: 1.06×), and
    Gemma-2's tight soft-caps give 1.27× at 0.1."""
    name, model, _ = arch
    meth = Methodology(n=40, seed=1, ref_per_group=8)
    sets = node_sets(CIRCUIT)
    exact = moves(shrunk(build_evaluator(model, meth.replace(ref_noise="exact")), 0.01), sets)
    monkeypatch.setattr(evaluate, "REF_NOISE_PROMPTS", 10**9)  # every prompt in the sample
    linear_ev = shrunk(build_evaluator(model, meth), 0.01)
    assert linear_ev.linear_noise
    linear = moves(linear_ev, sets)
    spread = exact.std(1)
    noisy = spread > 1e-3 * spread.max()
    assert noisy.sum() >= len(sets) // 2, spread
    ratio = linear.std(1)[noisy] / spread[noisy]
    assert np.all((ratio > 0.95) & (ratio < 1.05)), (name, ratio)
    corr = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(linear[noisy], exact[noisy])])
    assert np.all(corr > 0.99), (name, corr.round(3))


def test_attribution_runs_on_the_blocks_and_reads_the_same_forward(arch):
    """Attribution patching (attribution.py) goes through the same seam: its forward pass gives the engine's
    logit differences."""
    from circuit_core.attribution import attribution

    name, model, _ = arch
    ds = build_dataset("ioi", model.tokenizer, **METH.dataset_kwargs())
    ev = Evaluator(model, ds, METH.replace(ref_replicates=0))
    s = circuit_node_set(CIRCUIT, "circuit")
    att = attribution(ev, s)
    assert (att.per_prompt - ev.logit_diffs([s])[0]).abs().max() < 1e-4, name
    assert torch.isfinite(att.scores).all() and att.scores.abs().sum() > 0


def test_patching_runs_on_every_family(arch):
    """Patching's fast path is written for GPT-2's blocks; the other families take the hooked passes
    (the same numbers, more slowly) instead of failing."""
    from circuit_core.patching import activation_patching, paired_dataset, path_patching

    name, model, _ = arch
    ds = paired_dataset(model, Methodology(n=8, seed=3))
    act = activation_patching(model, ds, "noise", roles=["END"])
    assert act.effects.shape == (model.n_layers, model.n_heads, len(act.roles)) and torch.isfinite(act.effects).all(), name
    path = path_patching(model, ds, "logits")
    assert path.effects.shape == (model.n_layers, model.n_heads), name
