"""Edge-level circuits: the engine against an independent Hugging Face computation.

The reference below is the definition written out on a plain Hugging Face model (GPT-2 and Llama, tiny and
random; no TransformerLens, no project code but the ablation values and keep-masks the evaluator reports):
layer by layer, each head's query, key and value are computed from its own residual input, which is the
residual minus, for every removed edge into that input, the sender's (z − ablation value) through its rows
of the output projection where the sender is kept; the logits read the final residual minus the same for
removed edges into the logits. Heads outside the set are replaced by their values as in test_architectures.
"""
from __future__ import annotations

import random

import pytest
import torch

from circuit_core.ablation import Ablation, Methodology, NodeSet, PositionScope
from circuit_core.circuit import LOGITS, Circuit, Edge, head_name
from circuit_core.completeness import c_minus
from circuit_core.criteria import circuit_node_set, edge_effects, removed_edges
from circuit_core.evaluate import Evaluator
from circuit_core.tasks import build_dataset

from test_architectures import build, hf_logit_diffs

METH = Methodology(n=16, seed=3, ref_per_group=4, ref_replicates=0)
CIRCUIT = {"classes": [
    {"name": "early", "position": "S2", "heads": ["0.1", "0.3"]},
    {"name": "mid", "position": "END", "heads": ["1.2", "1.0"]},
    {"name": "late", "position": "END", "heads": ["2.0", "2.3"]},
]}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def arch(request, tmp_path_factory):
    if request.param == "gpt2":  # the session's tiny GPT-2 (conftest), shared with the other tests
        return "gpt2", request.getfixturevalue("tiny_model"), request.getfixturevalue("tiny_hf")
    return build(tmp_path_factory, request.param)


# --- the independent computation ---------------------------------------------------------------------
def _attention(q, k, v, scale):
    """q, k, v [N, S, d] of one head: causal softmax attention, written out."""
    scores = (q @ k.transpose(-1, -2)) * scale
    S = q.shape[1]
    scores = scores.masked_fill(torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(scores, -1) @ v


class GPT2Parts:
    def __init__(self, hf):
        self.hf, self.t = hf, hf.transformer
        self.H = hf.config.n_head
        self.dh = hf.config.n_embd // self.H
        self.layers = self.t.h

    def embed(self, tokens):
        return self.t.wte(tokens) + self.t.wpe(torch.arange(tokens.shape[1]))

    def head_z(self, l, h, xq, xk, xv):
        block, d, dh = self.layers[l], self.hf.config.n_embd, self.dh
        q = block.attn.c_attn(block.ln_1(xq))[..., h * dh:(h + 1) * dh]
        k = block.attn.c_attn(block.ln_1(xk))[..., d + h * dh:d + (h + 1) * dh]
        v = block.attn.c_attn(block.ln_1(xv))[..., 2 * d + h * dh:2 * d + (h + 1) * dh]
        return _attention(q, k, v, dh ** -0.5)

    def head_out(self, l, h, z):  # z [..., d_head] through head h's rows of c_proj (no bias)
        return z @ self.layers[l].attn.c_proj.weight[h * self.dh:(h + 1) * self.dh]

    def attn_out(self, l, z):
        return self.layers[l].attn.c_proj(z.flatten(-2))

    def after(self, l, x, attn):
        x = x + attn
        return x + self.layers[l].mlp(self.layers[l].ln_2(x))

    def logits(self, x):
        return self.hf.lm_head(self.t.ln_f(x))


class LlamaParts:
    def __init__(self, hf):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        self.hf, self.m, self.rope = hf, hf.model, apply_rotary_pos_emb
        self.layers = self.m.layers
        self.H = hf.config.num_attention_heads
        self.dh = self.layers[0].self_attn.head_dim

    def embed(self, tokens):
        x = self.m.embed_tokens(tokens)
        self.cos, self.sin = self.m.rotary_emb(x, torch.arange(tokens.shape[1])[None])
        return x

    def head_z(self, l, h, xq, xk, xv):
        layer, dh = self.layers[l], self.dh
        a, kv = layer.self_attn, h // layer.self_attn.num_key_value_groups
        q = a.q_proj(layer.input_layernorm(xq))[..., h * dh:(h + 1) * dh]
        k = a.k_proj(layer.input_layernorm(xk))[..., kv * dh:(kv + 1) * dh]
        v = a.v_proj(layer.input_layernorm(xv))[..., kv * dh:(kv + 1) * dh]
        q, k = self.rope(q[:, None], k[:, None], self.cos, self.sin)
        return _attention(q[:, 0], k[:, 0], v, a.scaling)

    def head_out(self, l, h, z):
        return z @ self.layers[l].self_attn.o_proj.weight[:, h * self.dh:(h + 1) * self.dh].T

    def attn_out(self, l, z):
        return self.layers[l].self_attn.o_proj(z.flatten(-2))

    def after(self, l, x, attn):
        layer = self.layers[l]
        x = x + attn
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def logits(self, x):
        return self.hf.lm_head(self.m.norm(x))


def reference_diffs(parts, tokens, end, answers, keep, values, removed) -> torch.Tensor:
    """logit[correct] − logit[wrong] at END with z replaced by `values` where not `keep` [N, seq, layer,
    head] and the `removed` edges (sender, receiver or "logits", input) carrying the sender's value."""
    removed = {e for e in removed if keep[:, :, e[0][0], e[0][1]].any()
               and (e[1] == LOGITS or keep[:, :, e[1][0], e[1][1]].any())}
    sent = {}  # sender -> its (output − value) in the residual
    with torch.no_grad():
        x = parts.embed(tokens)
        for l in range(len(parts.layers)):
            zs = []
            for h in range(parts.H):
                inputs = [x - sum(sent[s] for s, r, c in removed if r == (l, h) and c == x_)
                          if any(r == (l, h) and c == x_ for _, r, c in removed) else x for x_ in "qkv"]
                zs.append(parts.head_z(l, h, *inputs))
            z = torch.stack(zs, 2)
            k, v = keep[:, :, l, :, None], values[:, :, l].to(z.dtype)
            for h in range(parts.H):
                sent[(l, h)] = parts.head_out(l, h, torch.where(k[:, :, h], z[:, :, h] - v[:, :, h], 0.0))
            x = parts.after(l, x, parts.attn_out(l, torch.where(k, z, v)))
        x = x - sum((sent[s] for s, r, _ in removed if r == LOGITS), torch.zeros_like(x))
        logits = parts.logits(x)
    rows = torch.arange(len(tokens))
    at_end = logits[rows, end]
    return (at_end[rows, answers[:, 0]] - at_end[rows, answers[:, 1]]).double()


def parts_of(name, hf):
    return GPT2Parts(hf) if name == "gpt2" else LlamaParts(hf)


def reference(name, hf, ev, sets):
    ds = ev.dataset
    return torch.stack([reference_diffs(parts_of(name, hf), ds.tokens, ds.positions["END"], ds.answer_tokens, keep,
                                        ev.values, s.removed_edges) for s, keep in zip(sets, ev.masks(sets))])


# --- circuits with edge lists ------------------------------------------------------------------------
def every_edge(c: Circuit) -> list[Edge]:
    """Every head-level edge among the circuit's heads."""
    heads = c.heads
    out = [Edge(head_name(s), head_name(r), x) for s in heads for r in heads if s[0] < r[0] for x in "qkv"]
    return out + [Edge(head_name(s), LOGITS, "out") for s in heads]


def with_edges(c: Circuit, edges) -> Circuit:
    """c with this edge list (None: none, the node-level circuit)."""
    d = {k: v for k, v in c.to_dict().items() if k != "edges"}
    return Circuit.from_dict(d if edges is None else {**d, "edges": [e.to_dict() for e in edges]})


def random_edge_circuits(count: int, seed: int) -> list[Circuit]:
    rng, c = random.Random(seed), Circuit.from_dict(CIRCUIT)
    edges = every_edge(c)
    return [with_edges(c, [e for e in edges if rng.random() < p]) for p in [0.5, 0.8, 0.2, 0.0][:count]]


def test_the_reference_without_edges_is_the_plain_models_ablation(arch):
    """The written-out forward pass is the model's own: with no removed edge it gives what replacing z at
    the output projection's input gives."""
    name, model, hf = arch
    ds = build_dataset("ioi", model.tokenizer, **METH.dataset_kwargs())
    ev = Evaluator(model, ds, METH)
    s = circuit_node_set(Circuit.from_dict(CIRCUIT))
    keep = ev.masks([s])[0]
    plain = hf_logit_diffs(hf, ds.tokens, ds.positions["END"], ds.answer_tokens, keep, ev.values, model.n_heads)
    ours = reference_diffs(parts_of(name, hf), ds.tokens, ds.positions["END"], ds.answer_tokens, keep, ev.values, ())
    assert (plain - ours).abs().max() < 1e-4


@pytest.mark.parametrize("ablation", [a.value for a in Ablation])
def test_edge_sets_equal_the_independent_computation(arch, ablation):
    """Random edge lists in both position scopes, node-level sets among them (the prefix tree shares
    layers between them), chunks that cut the prompts unevenly."""
    name, model, hf = arch
    meth = METH.replace(ablation=ablation)
    ds = build_dataset("ioi", model.tokenizer, **meth.dataset_kwargs())
    ev = Evaluator(model, ds, meth, max_rows=7)
    circuits = random_edge_circuits(4, seed=len(ablation))
    sets = [NodeSet.model(), circuit_node_set(Circuit.from_dict(CIRCUIT))]
    sets += [circuit_node_set(c, scope) for c, scope in zip(circuits, ["circuit", "all", "all", "circuit"])]
    got = ev.logit_diffs(sets)
    want = reference(name, hf, ev, sets[2:])  # the node sets are held to Hugging Face in test_architectures
    assert (got[2:] - want).abs().max() < 1e-4, name
    assert (got[2:] - got[1]).abs().max() > 1e-3  # removed edges move F: not a comparison of equal numbers


def test_removing_one_edge_changes_f_as_the_independent_computation(arch):
    """One edge between two kept heads at a time, after the circuit itself (from its cached residuals, as
    the editor asks), for every input: the change F(C) − F(C less the edge) is the reference's."""
    name, model, hf = arch
    ds = build_dataset("ioi", model.tokenizer, **METH.dataset_kwargs())
    ev = Evaluator(model, ds, METH)
    c = with_edges(Circuit.from_dict(CIRCUIT), every_edge(Circuit.from_dict(CIRCUIT)))
    full = circuit_node_set(c)
    f_full, ref_full = ev.logit_diffs([full])[0], reference(name, hf, ev, [full])[0]
    for edge in [Edge("1.2", "2.0", "q"), Edge("1.0", "2.3", "k"), Edge("0.1", "1.2", "v"), Edge("0.3", "2.0", "v"),
                 Edge("2.3", LOGITS, "out"), Edge("1.2", LOGITS, "out")]:
        s = circuit_node_set(with_edges(c, [e for e in c.edges if e != edge]))
        got = f_full - ev.logit_diffs([s])[0]
        want = ref_full - reference(name, hf, ev, [s])[0]
        assert (got - want).abs().max() < 1e-4, (name, edge)
        assert got.abs().max() > 1e-4, (name, edge)  # each of these edges matters on some prompt


def test_all_edges_is_exactly_the_node_level_circuit(arch):
    name, model, _ = arch
    ds = build_dataset("ioi", model.tokenizer, **METH.dataset_kwargs())
    ev = Evaluator(model, ds, METH)
    c = Circuit.from_dict(CIRCUIT)
    for scope in PositionScope:
        for edges in (c.all_edges(), every_edge(c)):
            assert removed_edges(with_edges(c, edges)) == frozenset()
            got = ev.logit_diffs([circuit_node_set(c, scope.value), circuit_node_set(with_edges(c, edges), scope.value)])
            assert torch.equal(got[0], got[1])


def test_an_empty_edge_list_is_not_no_edge_list(tiny_model):
    ds = build_dataset("ioi", tiny_model.tokenizer, **METH.dataset_kwargs())
    ev = Evaluator(tiny_model, ds, METH)
    c = Circuit.from_dict(CIRCUIT)
    none, empty = circuit_node_set(c), circuit_node_set(with_edges(c, []))
    assert none.removed_edges == frozenset() and len(empty.removed_edges) == len(every_edge(c))
    f = ev.logit_diffs([none, empty]).mean(1)
    assert abs(float(f[0] - f[1])) > 1e-3


def test_c_minus_k_removes_ks_edges_with_it(tiny_model):
    c = with_edges(Circuit.from_dict(CIRCUIT), [Edge("early", "late", "v"), Edge("late", LOGITS, "out")])
    s = c_minus(c, {(0, 1)})
    assert all((0, 1) not in e[:2] for e in s.removed_edges)
    assert ((0, 3), (2, 0), "k") in s.removed_edges and ((0, 3), (2, 0), "v") not in s.removed_edges
    ds = build_dataset("ioi", tiny_model.tokenizer, **METH.dataset_kwargs())
    ev = Evaluator(tiny_model, ds, METH)
    assert ev.logit_diffs([s])[0].isfinite().all()


def test_the_hook_path_refuses_edge_sets_clearly(tiny_model):
    ds = build_dataset("ioi", tiny_model.tokenizer, **METH.dataset_kwargs())
    ev = Evaluator(tiny_model, ds, METH, use_blocks=False)
    c = Circuit.from_dict(CIRCUIT)
    ev.logit_diffs([circuit_node_set(c)])  # node sets still run there
    with pytest.raises(NotImplementedError, match="blocks engine"):
        ev.logit_diffs([circuit_node_set(with_edges(c, []))])


def test_linear_reference_noise_follows_the_exact_replicates_for_edge_sets(tiny_model):
    """The backward pass through the engine carries the edges: with each replicate's change of the means
    scaled by 0.01, the linear moves of edge sets agree with evaluating them under every replicate."""
    from test_architectures import shrunk

    meth = METH.replace(ref_replicates=2)
    ds = build_dataset("ioi", tiny_model.tokenizer, **meth.dataset_kwargs())
    c = Circuit.from_dict(CIRCUIT)
    sets = [circuit_node_set(x) for x in random_edge_circuits(1, seed=1)] + [circuit_node_set(with_edges(
        c, [e for e in every_edge(c) if e.receiver != LOGITS]))]
    linear = shrunk(Evaluator(tiny_model, ds, meth), 0.01)
    exact = shrunk(Evaluator(tiny_model, ds, meth.replace(ref_noise="exact")), 0.01)
    assert linear.linear_noise and not exact.linear_noise
    base = exact.logit_diffs(sets).numpy()
    # the linear noise is read on a sample of prompts and spread over each group: compare group-level means
    lin = [r - base for r in linear.replicate_diffs(sets)]
    exa = [r - base for r in exact.replicate_diffs(sets)]
    for a, b in zip(lin, exa):
        assert abs(a.mean(1) - b.mean(1)).max() < 0.05 * max(1e-6, abs(b.mean(1)).max()) + 1e-6


def test_edge_effects_have_intervals(tiny_model):
    ds = build_dataset("ioi", tiny_model.tokenizer, **METH.replace(ref_replicates=2).dataset_kwargs())
    ev = Evaluator(tiny_model, ds, METH.replace(ref_replicates=2, bootstrap=200))
    c = with_edges(Circuit.from_dict(CIRCUIT), [Edge("early", "mid", "v"), Edge("mid", "late", "q"),
                                                Edge("late", LOGITS, "out")])
    table = edge_effects(ev, c)
    assert list(table["edge"]) == [e.label() for e in c.edges]
    assert (table["ci_low"] <= table["effect"]).all() and (table["effect"] <= table["ci_high"]).all()
    f_c = ev.logit_diffs([circuit_node_set(c)]).mean()
    assert abs(float(table["F_C"].iloc[0]) - float(f_c)) < 1e-9


# --- EAP-IG / MIB graphs ---------------------------------------------------------------------------
def test_an_eap_ig_graph_with_edges_round_trips_and_evaluates_with_them(tiny_model):
    from circuit_core.interchange import from_eap_graph, graph_cfg, to_eap_graph

    cfg = graph_cfg(tiny_model)
    c = Circuit.from_dict(CIRCUIT)
    graph = to_eap_graph(c, cfg, keep_circuit=False)  # node-level: every edge among the heads in the graph
    out = ["a0.h1->a1.h2<v>", "a1.h2->a2.h0<q>", "a0.h3->a2.h3<k>", "a2.h3->logits", "input->a1.h0<q>", "m0->a2.h0<k>"]
    for name in out:
        graph["edges"][name]["in_graph"] = False
    imported = from_eap_graph(graph, position="END")
    got = imported.circuit
    assert got.edges is not None
    assert removed_edges(got) == {((0, 1), (1, 2), "v"), ((1, 2), (2, 0), "q"), ((0, 3), (2, 3), "k"),
                                  ((2, 3), LOGITS, "out")}
    assert any("2 edge(s) from the input or an MLP" in w for w in imported.warnings)
    for keep_circuit in (False, True):
        again = from_eap_graph(to_eap_graph(got, cfg, keep_circuit=keep_circuit), position="END").circuit
        assert again.head_edges() == got.head_edges()
    ds = build_dataset("ioi", tiny_model.tokenizer, **METH.dataset_kwargs())
    ev = Evaluator(tiny_model, ds, METH.replace(positions="all"))
    node_level = with_edges(got, None)
    f = ev.logit_diffs([circuit_node_set(got, "all"), circuit_node_set(node_level, "all")]).mean(1)
    assert abs(float(f[0] - f[1])) > 1e-4


def test_a_node_level_graph_imports_without_an_edge_list(tiny_model):
    from circuit_core.interchange import from_eap_graph, graph_cfg, to_eap_graph

    c = Circuit.from_dict(CIRCUIT)
    assert from_eap_graph(to_eap_graph(c, graph_cfg(tiny_model), keep_circuit=False)).circuit.edges is None


def test_the_demo_edge_preset_runs_in_the_cli(capsys):
    from circuit_core.cli import main

    assert main(["faithfulness", "--model", "demo", "--circuit", "data/circuits/ioi-demo-edges.json", "--n", "20",
                 "--bootstrap", "50", "--ref-per-group", "4", "--ref-replicates", "2"]) == 0
    out = capsys.readouterr().out
    assert "6 heads, 18 of 42 edges between them kept" in out and "F(C) / F(M)" in out


def test_a_post_attention_norm_refuses_edge_sets(tiny_model, monkeypatch):
    ds = build_dataset("ioi", tiny_model.tokenizer, **METH.dataset_kwargs())
    ev = Evaluator(tiny_model, ds, METH)
    monkeypatch.setattr(ev.blocks, "additive_heads", False)
    with pytest.raises(NotImplementedError, match="post-attention norm"):
        ev.logit_diffs([circuit_node_set(with_edges(Circuit.from_dict(CIRCUIT), []))])
