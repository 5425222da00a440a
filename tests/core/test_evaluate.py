"""The evaluator against independent computations on the plain Hugging Face model."""
import pytest
import torch

import hf_reference as ref
from circuit_core.ablation import Methodology, NodeSet, ablation_values, keep_mask
from circuit_core.circuit import Circuit, CircuitClass
from circuit_core.evaluate import Evaluator

ATOL = 1e-4


def all_heads(model, role="*"):
    return frozenset((l, h, role) for l in range(model.n_layers) for h in range(model.n_heads))


@pytest.fixture(scope="module")
def independent_means(tiny_hf, tiny_dataset):
    z_ref = ref.head_outputs(tiny_hf, tiny_dataset.reference_tokens)
    return ref.group_means(z_ref, tiny_dataset.groups, tiny_dataset.lengths)


def test_model_matches_plain_forward(tiny_evaluator, tiny_hf, tiny_dataset):
    ours = tiny_evaluator.logit_diffs([NodeSet.model()])[0]
    theirs = ref.logit_diffs(tiny_hf, tiny_dataset.tokens, tiny_dataset.positions["END"], tiny_dataset.answer_tokens)
    assert torch.allclose(ours, theirs, atol=ATOL)


def test_keeping_every_node_reproduces_F_M_exactly(tiny_evaluator, tiny_model):
    everything = NodeSet(all_heads(tiny_model))
    d = tiny_evaluator.logit_diffs([NodeSet.model(), everything])
    assert torch.equal(d[0], d[1])


def test_keeping_none_equals_all_heads_ablated(tiny_evaluator, tiny_hf, tiny_dataset, tiny_model, independent_means):
    ours = tiny_evaluator.logit_diffs([NodeSet.empty()])[0]
    keep = torch.zeros(*tiny_dataset.tokens.shape, tiny_model.n_layers, tiny_model.n_heads, dtype=torch.bool)
    theirs = ref.logit_diffs(tiny_hf, tiny_dataset.tokens, tiny_dataset.positions["END"],
                             tiny_dataset.answer_tokens, keep, independent_means)
    assert torch.allclose(ours, theirs, atol=ATOL)
    clean = tiny_evaluator.logit_diffs([NodeSet.model()])[0]
    assert (ours - clean).abs().max() > 0.05  # the ablation really did something


@pytest.mark.parametrize("layer,head", [(0, 1), (1, 3), (2, 0)])
def test_one_head_ablation_matches_independent(tiny_evaluator, tiny_hf, tiny_dataset, tiny_model,
                                               independent_means, layer, head):
    ours = tiny_evaluator.logit_diffs([NodeSet(frozenset({(layer, head, "*")}), complement=True)])[0]
    keep = torch.ones(*tiny_dataset.tokens.shape, tiny_model.n_layers, tiny_model.n_heads, dtype=torch.bool)
    keep[:, :, layer, head] = False
    theirs = ref.logit_diffs(tiny_hf, tiny_dataset.tokens, tiny_dataset.positions["END"],
                             tiny_dataset.answer_tokens, keep, independent_means)
    assert torch.allclose(ours, theirs, atol=ATOL)


def test_circuit_kept_at_each_prompts_own_positions(tiny_evaluator, tiny_hf, tiny_dataset, tiny_model,
                                                    independent_means):
    circuit = Circuit("t", [CircuitClass("a", "END", [(2, 1), (1, 0)]), CircuitClass("b", "S2", [(0, 3)]),
                            CircuitClass("c", "S1+1", [(0, 2)])])
    ours = tiny_evaluator.logit_diffs([NodeSet(circuit.nodes())])[0]
    n, seq = tiny_dataset.tokens.shape
    keep = torch.zeros(n, seq, tiny_model.n_layers, tiny_model.n_heads, dtype=torch.bool)
    for i in range(n):  # a plain loop: prompt i keeps each head at its own role index only
        for (l, h, role) in circuit.nodes():
            keep[i, int(tiny_dataset.positions[role][i]), l, h] = True
    theirs = ref.logit_diffs(tiny_hf, tiny_dataset.tokens, tiny_dataset.positions["END"],
                             tiny_dataset.answer_tokens, keep, independent_means)
    assert torch.allclose(ours, theirs, atol=ATOL)


def test_keep_mask_is_per_prompt_not_union(tiny_dataset):
    s2 = tiny_dataset.positions["S2"]
    assert len(set(s2.tolist())) > 1  # mixed templates put S2 at different indices
    n, seq = tiny_dataset.tokens.shape
    mask = keep_mask(NodeSet(frozenset({(0, 1, "S2")})), tiny_dataset.positions, n, seq, 3, 4)
    assert mask[:, :, 0, 1].sum(1).tolist() == [1] * n
    assert mask[torch.arange(n), s2, 0, 1].all()
    assert mask.sum() == n  # nothing else kept
    # M\K: everything kept except that node, per prompt
    mask = keep_mask(NodeSet(frozenset({(0, 1, "S2")}), complement=True), tiny_dataset.positions, n, seq, 3, 4)
    assert (~mask).sum() == n and not mask[torch.arange(n), s2, 0, 1].any()


def test_means_are_per_group(tiny_evaluator, tiny_dataset, independent_means):
    values = tiny_evaluator.values
    assert torch.allclose(values, independent_means, atol=1e-4)
    g = tiny_dataset.groups
    i, j = 0, int(torch.nonzero(g != g[0])[0])
    same_pos = min(tiny_dataset.lengths[i], tiny_dataset.lengths[j]) - 1
    assert not torch.allclose(values[i, :same_pos], values[j, :same_pos])
    for k in torch.nonzero(g == g[0]).flatten():  # one group, one mean
        assert torch.equal(values[k], values[0])


def test_pooled_mean_and_resample(tiny_model, tiny_dataset, tiny_hf):
    z_ref = ref.head_outputs(tiny_hf, tiny_dataset.reference_tokens)
    pooled = ablation_values(tiny_model, tiny_dataset, Methodology(ablation="mean-pooled"))
    pos = 3  # present in every prompt
    assert torch.allclose(pooled[0, pos], z_ref[:, pos].mean(0), atol=1e-4)
    assert torch.allclose(pooled[5, pos], pooled[0, pos])
    res = ablation_values(tiny_model, tiny_dataset, Methodology(ablation="resample", seed=1))
    again = ablation_values(tiny_model, tiny_dataset, Methodology(ablation="resample", seed=1))
    assert torch.equal(res, again)
    for i in range(tiny_dataset.n):
        L = int(tiny_dataset.lengths[i])
        sources = [j for j in range(tiny_dataset.n) if torch.allclose(res[i, :L], z_ref[j, :L], atol=1e-4)]
        assert sources and all(tiny_dataset.groups[j] == tiny_dataset.groups[i] for j in sources)
        if int((tiny_dataset.groups == tiny_dataset.groups[i]).sum()) > 1:
            assert i not in sources  # another prompt of its group, never its own reference


def test_zero_ablation_matches_independent(tiny_model, tiny_dataset, tiny_hf):
    ev = Evaluator(tiny_model, tiny_dataset, Methodology(ablation="zero"))
    ours = ev.logit_diffs([NodeSet.empty()])[0]
    keep = torch.zeros(*tiny_dataset.tokens.shape, 3, 4, dtype=torch.bool)
    zeros = torch.zeros(*tiny_dataset.tokens.shape, 3, 4, 8)
    theirs = ref.logit_diffs(tiny_hf, tiny_dataset.tokens, tiny_dataset.positions["END"],
                             tiny_dataset.answer_tokens, keep, zeros)
    assert torch.allclose(ours, theirs, atol=ATOL)


def test_batching_and_shared_layers_change_nothing(tiny_model, tiny_dataset, tiny_evaluator):
    sets = [NodeSet.model(), NodeSet.empty(),
            NodeSet(frozenset({(2, 1, "END")})),  # differs from others only at layer 2
            NodeSet(frozenset({(2, 1, "END"), (2, 2, "END")})),
            NodeSet(frozenset({(0, 0, "S2"), (2, 1, "END")})),
            NodeSet(frozenset({(1, 1, "*")}), complement=True)]
    assert tiny_evaluator.blocks is not None  # the block path is the one under test here
    small = Evaluator(tiny_model, tiny_dataset, tiny_evaluator.methodology, max_rows=7)
    together = Evaluator(tiny_model, tiny_dataset, tiny_evaluator.methodology).logit_diffs(sets)
    assert torch.allclose(small.logit_diffs(sets), together, atol=1e-5)
    fresh = Evaluator(tiny_model, tiny_dataset, tiny_evaluator.methodology)
    one_by_one = torch.cat([fresh.logit_diffs([s]) for s in sets])
    assert torch.allclose(one_by_one, together, atol=1e-5)


def test_hooks_do_not_leak(tiny_evaluator, tiny_model, tiny_hf, tiny_dataset):
    tiny_evaluator.logit_diffs([NodeSet.empty()])
    hooked = Evaluator(tiny_model, tiny_dataset, tiny_evaluator.methodology, use_blocks=False)
    hooked.logit_diffs([NodeSet.empty()])
    with torch.no_grad():
        after = tiny_model.bridge(tiny_dataset.tokens)
        clean = tiny_hf(tiny_dataset.tokens).logits
    d = after - clean
    assert (d - d.mean(-1, keepdim=True)).abs().max() < ATOL  # equal up to the centred unembedding


def test_progress_counts_sets(tiny_model, tiny_dataset, tiny_evaluator):
    seen = []
    ev = Evaluator(tiny_model, tiny_dataset, tiny_evaluator.methodology)
    ev.logit_diffs([NodeSet.model(), NodeSet.empty(), NodeSet.empty()], progress=lambda d, t: seen.append((d, t)))
    units = 2 * len(ev.chunks)  # one unit per (set, chunk of similar-length prompts)
    assert seen == [(i, units) for i in range(1, units + 1)]  # the duplicate is evaluated once
