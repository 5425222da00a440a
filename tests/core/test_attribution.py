"""Attribution estimates against autograd-free checks, and exact toggles against the evaluator."""
import numpy as np
import torch

from circuit_core.ablation import Methodology, NodeSet
from circuit_core.attribution import attribution, exact_toggles, rank_agreement, toggle_estimates, toggled
from circuit_core.circuit import Circuit, CircuitClass
from circuit_core.criteria import circuit_node_set
from circuit_core.evaluate import Evaluator


def circuit():
    return Circuit("t", [CircuitClass("a", "END", [(2, 1), (1, 0)]), CircuitClass("b", "S2", [(0, 3)])])


def test_forward_of_attribution_is_the_evaluators(tiny_evaluator):
    c = circuit_node_set(circuit())
    att = attribution(tiny_evaluator, c)
    assert torch.allclose(att.per_prompt, tiny_evaluator.logit_diffs([c])[0], atol=1e-4)


def test_estimate_is_the_first_order_term(tiny_model, tiny_dataset):
    """Moving one head's value a little towards its computed output at one position changes F by
    about eps * a[h, r]: checked by a finite difference through the evaluator's own ablation values."""
    ev = Evaluator(tiny_model, tiny_dataset, Methodology(n=40, seed=3))
    c = circuit_node_set(circuit())
    att = attribution(ev, c)
    base = ev.logit_diffs([c])[0].mean().item()
    head, role = (1, 2), "S2"
    eps = 1e-3
    # z computed in the circuit's run (the head is ablated, so its computed z is what keeping it would give)
    kept = NodeSet(c.nodes | {(1, 2, role)})
    diff_full = ev.logit_diffs([kept])[0].mean().item() - base
    fd = _nudged(ev, c, head, role, eps) - base
    assert abs(fd / eps - att.at(head, role)) < 0.02 * max(1.0, abs(att.at(head, role)))
    assert np.sign(att.at(head, role)) == np.sign(diff_full) or abs(diff_full) < 0.05


def _nudged(ev, node_set, head, role, eps):
    """F with the head's ablation value moved eps of the way to its computed z at `role` (fresh evaluator)."""
    from circuit_core.attribution import _Chunk
    from circuit_core.evaluate import layer_keys

    chunk = _Chunk(ev, -1, torch.arange(ev.dataset.n))
    key = layer_keys(node_set, ev.n_layers, ev.n_heads)
    l, h = head
    rows = torch.arange(ev.dataset.n)
    pos = ev.dataset.positions[role]
    # z of the head in the node set's own run, at its role position
    blocks = ev.blocks
    with torch.no_grad():
        x = blocks.embed(chunk.tokens)
        from circuit_core.attribution import _apply
        for layer in range(l + 1):
            z = blocks.attend(layer, x, torch.arange(ev.n_heads))
            if layer == l:
                break
            x = blocks.mlp(layer, x + blocks.attn_out(layer, _apply(z, chunk.values(layer), key[layer], chunk)))
        target = z[rows, pos, h]
    table = ev._table.clone()
    nudged = Evaluator.__new__(Evaluator)
    nudged.__dict__.update(ev.__dict__)
    new_table = table[ev._table_index].clone()
    new_table[rows, pos, l, h] += eps * (target - new_table[rows, pos, l, h])
    nudged._table, nudged._table_index = new_table, torch.arange(ev.dataset.n)
    from circuit_core.cache import BoundedCache
    nudged._residuals, nudged._memo, nudged._prefix_ids = BoundedCache(max_bytes=0), BoundedCache(max_bytes=1 << 30), {}
    return nudged.logit_diffs([node_set])[0].mean().item()


def test_exact_toggles_are_the_edited_circuits(tiny_evaluator):
    c = circuit()
    exact = exact_toggles(tiny_evaluator, c, "a")
    f_c = tiny_evaluator.F([circuit_node_set(c)])[0]
    for (l, h) in [(0, 0), (2, 1), (0, 3)]:  # out of C, in the target class, in another class
        want = tiny_evaluator.F([circuit_node_set(toggled(c, (l, h), "a"))])[0] - f_c
        got = exact[(exact["layer"] == l) & (exact["head"] == h)].score.item()
        assert abs(got - want) < 1e-9
    est = toggle_estimates(tiny_evaluator, c, "a")
    assert len(est) == len(exact) == 12
    assert rank_agreement(est, exact) > 0.3  # a first-order estimate ranks heads like the truth
