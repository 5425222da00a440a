"""The evaluation engine against a plain hooked forward pass, and the work it must not redo.

The reference here is `Evaluator(use_blocks=False)`: one hooked TransformerBridge pass per node set
with full logits, nothing shared or cached (and itself checked against plain Hugging Face code in
test_evaluate.py).
"""
import random

import pytest
import torch

from circuit_core.ablation import Ablation, Methodology, NodeSet, PositionScope
from circuit_core.circuit import Circuit, CircuitClass
from circuit_core.criteria import circuit_node_set
from circuit_core.evaluate import Evaluator, layer_keys
from circuit_core.progress import Cancelled

ROLES = ["IO", "S1", "S1+1", "S2", "END", "*"]


def random_sets(n_layers, n_heads, count, seed):
    rng = random.Random(seed)
    sets = []
    for _ in range(count):
        nodes = frozenset((rng.randrange(n_layers), rng.randrange(n_heads), rng.choice(ROLES))
                          for _ in range(rng.randrange(0, 2 * n_layers * n_heads)))
        sets.append(NodeSet(nodes, complement=rng.random() < 0.4))
    return sets


def circuit():
    return Circuit("t", [CircuitClass("a", "END", [(2, 1), (1, 0)]), CircuitClass("b", "S2", [(0, 3), (1, 2)]),
                         CircuitClass("c", "S1+1", [(0, 2)])])


@pytest.mark.parametrize("ablation", [a.value for a in Ablation])
@pytest.mark.parametrize("positions", [p.value for p in PositionScope])
def test_engine_equals_hooked_forward(tiny_model, tiny_dataset, ablation, positions):
    meth = Methodology(n=40, seed=3, ablation=ablation, positions=positions)
    c = circuit()
    sets = [NodeSet.model(), NodeSet.empty(), circuit_node_set(c, positions)]
    sets += [NodeSet(frozenset(n for n in c.nodes(positions) if n[:2] != h)) for h in c.heads]
    sets += random_sets(tiny_model.n_layers, tiny_model.n_heads, 12, seed=hash((ablation, positions)) % 1000)
    hooked = Evaluator(tiny_model, tiny_dataset, meth, use_blocks=False).logit_diffs(sets)
    for max_rows in (None, 7):  # one chunk, and chunks that cut the prompts unevenly
        ev = Evaluator(tiny_model, tiny_dataset, meth, max_rows=max_rows)
        assert ev.blocks is not None
        got = ev.logit_diffs(sets)
        assert (got - hooked).abs().max() < 1e-4
        again = ev.logit_diffs(list(reversed(sets)))  # from the residual cache and memo
        assert torch.equal(again.flip(0), got)


def test_equivalent_node_sets_share_one_key(tiny_model):
    L, H = tiny_model.n_layers, tiny_model.n_heads
    every = NodeSet(frozenset((l, h, "*") for l in range(L) for h in range(H)))
    assert layer_keys(every, L, H) == layer_keys(NodeSet.model(), L, H)
    none_removed = NodeSet(frozenset(), complement=True)
    assert layer_keys(none_removed, L, H) == layer_keys(NodeSet.model(), L, H)
    assert layer_keys(NodeSet(frozenset({(1, 1, "END")})), L, H) != layer_keys(NodeSet.empty(), L, H)


class CountingBlocks:
    """Counts the MLP calls per layer (one per layer computed) of an evaluator's blocks."""

    def __init__(self, ev):
        import copy

        self.calls = []
        ev.blocks = copy.copy(ev.blocks)  # the model's blocks are shared: count on this evaluator's copy
        inner = ev.blocks.mlp
        ev.blocks.mlp = lambda layer, x: (self.calls.append(layer), inner(layer, x))[1]


def test_prefix_tree_computes_each_distinct_prefix_once(tiny_model, tiny_dataset):
    ev = Evaluator(tiny_model, tiny_dataset, Methodology(n=40, seed=3), cache_bytes=0)
    count = CountingBlocks(ev)
    base = frozenset({(0, 1, "END"), (1, 2, "S2")})
    sets = [NodeSet(base), NodeSet(base | {(2, 0, "END")}), NodeSet(base | {(2, 3, "*")}),
            NodeSet(base | {(1, 3, "END")}), NodeSet(base | {(1, 3, "END"), (2, 0, "END")})]
    ev.logit_diffs(sets)
    # per chunk of prompts: layer 0 one prefix; layer 1 base vs +1.3; layer 2 five distinct sets
    chunks = len(ev.chunks)
    assert sorted(count.calls) == [0] * chunks + [1, 1] * chunks + [2] * 5 * chunks


def test_residual_cache_makes_a_late_edit_cost_one_layer(tiny_model, tiny_dataset):
    ev = Evaluator(tiny_model, tiny_dataset, Methodology(n=40, seed=3))
    c = circuit()
    ev.logit_diffs([circuit_node_set(c)])
    count = CountingBlocks(ev)
    edited = NodeSet(circuit_node_set(c).nodes | {(2, 3, "END")})  # a head added in the last layer
    got = ev.logit_diffs([edited])
    assert count.calls == [2] * len(ev.chunks)
    fresh = Evaluator(tiny_model, tiny_dataset, Methodology(n=40, seed=3), use_blocks=False).logit_diffs([edited])
    assert (got - fresh).abs().max() < 1e-4


def test_results_are_memoised(tiny_model, tiny_dataset):
    ev = Evaluator(tiny_model, tiny_dataset, Methodology(n=40, seed=3))
    first = ev.model_diffs
    count = CountingBlocks(ev)
    assert torch.equal(ev.model_diffs, first) and torch.equal(ev.logit_diffs([NodeSet.model()])[0], first)
    assert count.calls == []


def test_stopping_keeps_what_was_computed(tiny_model, tiny_dataset):
    ev = Evaluator(tiny_model, tiny_dataset, Methodology(n=40, seed=3))
    sets = random_sets(tiny_model.n_layers, tiny_model.n_heads, 6, seed=1)
    done = []
    with pytest.raises(Cancelled):
        ev.logit_diffs(sets, progress=lambda d, t: done.append(d), should_stop=lambda: len(done) >= 2)
    count = CountingBlocks(ev)
    full = ev.logit_diffs(sets)
    reference = Evaluator(tiny_model, tiny_dataset, Methodology(n=40, seed=3)).logit_diffs(sets)
    assert torch.allclose(full, reference, atol=1e-6)
    # two (set, chunk of prompts) results were kept: the rest is computed, not those
    assert count.calls.count(2) <= len(set(layer_keys(s, 3, 4) for s in sets)) * len(ev.chunks) - 2


def test_values_are_stored_once_per_group(tiny_evaluator, tiny_dataset):
    assert len(tiny_evaluator._table) == len(tiny_dataset.groups.unique())


def test_prompts_are_chunked_by_length_with_little_padding_and_each_once():
    from circuit_core.evaluate import _length_chunks

    end = torch.tensor([13, 19, 14, 13, 18, 19, 14, 16, 13, 19] * 7)
    chunks = _length_chunks(end, max_rows=16)
    assert sorted(torch.cat(chunks).tolist()) == list(range(len(end)))  # every prompt, once
    for c in chunks:
        longest = int(end[c].max()) + 1
        assert len(c) <= 16 and (longest - (end[c] + 1)).sum() <= 0.1 * longest * len(c)
    computed = sum(len(c) * (int(end[c].max()) + 1) for c in chunks)
    assert computed < 0.9 * len(end) * (int(end.max()) + 1)  # padding to the longest prompt is mostly gone


@pytest.mark.parametrize("positions", [p.value for p in PositionScope])
def test_edits_one_at_a_time_compute_only_the_positions_they_change(tiny_model, tiny_dataset, positions):
    """A click keeps or drops one head at its class's position: before that position nothing changes
    (causal attention), so the engine starts from the circuit's cached residuals there. Every edit,
    one call at a time as the editor makes them (heads in and out, a class moved, every position),
    must equal the hooked pass; and an edit at END must compute the layers' MLPs at END's positions only."""
    meth = Methodology(n=40, seed=3, positions=positions)
    c = circuit()
    ev = Evaluator(tiny_model, tiny_dataset, meth)
    hooked = Evaluator(tiny_model, tiny_dataset, meth, use_blocks=False)
    base = circuit_node_set(c, positions)
    ev.logit_diffs([base])
    nodes = set(base.nodes)
    edits = [NodeSet(frozenset(nodes | {(0, 0, "END")})), NodeSet(frozenset(nodes | {(1, 3, "S2")})),
             NodeSet(frozenset(nodes - {n for n in nodes if n[:2] == (0, 3)})),
             NodeSet(frozenset(nodes | {(0, 1, "IO"), (2, 2, "S1+1")})), NodeSet(frozenset(nodes | {(1, 1, "*")})),
             NodeSet(frozenset({(l, h, "END" if r == "S2" else r) for l, h, r in nodes}))]
    widths = []
    mlp = ev.blocks.mlp
    ev.blocks.mlp = lambda layer, x: widths.append(x.shape[-2] if x.dim() == 3 else 1) or mlp(layer, x)
    try:
        for i, s in enumerate(edits):
            widths.clear()
            got = ev.logit_diffs([s])
            assert (got - hooked.logit_diffs([s])).abs().max() < 1e-4, i
            if i == 0:  # (0, 0) kept at END only: the first layers' MLPs run from the chunk's earliest END
                starts = {int(tiny_dataset.positions["END"][p].min()) for p in ev.chunks}
                seqs = {int(ev.end[p].max()) + 1 for p in ev.chunks}
                assert widths and max(widths[:-1]) <= max(seqs) - min(starts) < min(seqs)
    finally:
        del ev.blocks.mlp  # the class's method again
