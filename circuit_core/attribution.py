"""How F(C) would move if one head were toggled: a one-pass estimate and the exact values.

Estimate (attribution patching, as in EAP): run the circuit once with gradients, and for every head
h and position role r take  a[h, r] = mean over prompts of  dF/dz_h(pos_r) · (z_h(pos_r) − value_h(pos_r)),
where z is the head's output computed in the circuit's own run and value its ablation value. Keeping
a head that is ablated at r moves F by about +a[h, r]; ablating one that is kept moves it by about
−a[h, r]. Every head costs nothing extra: one forward and one backward pass score all of them. It is
first order, so it is labelled an estimate wherever it is shown; `exact_toggles` computes the real
F(C with h toggled) − F(C) for every head through the evaluator (sharing layers between them).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from .ablation import NodeSet
from .circuit import ALL_POSITIONS, Circuit, Head
from .criteria import circuit_node_set
from .editing import toggle_head as toggled  # the editor's click: in, out, or moved
from .evaluate import Evaluator, _Chunk, layer_keys
from .progress import Progress, StopCheck, raise_if_stopped

ESTIMATE, EXACT = "toggle effect (estimate)", "toggle effect (exact)"


@dataclass(frozen=True)
class Attribution:
    """a[layer, head, role] (roles in `roles`, the last one '*' = every position) and the run's F."""

    scores: torch.Tensor  # float64 [layer, head, len(roles)]
    roles: tuple[str, ...]
    per_prompt: torch.Tensor  # the node set's logit differences from the same forward pass, [N]

    def at(self, head: Head, role: str) -> float:
        return float(self.scores[head[0], head[1], self.roles.index(role)])


def attribution(ev: Evaluator, node_set: NodeSet, progress: Progress | None = None,
                should_stop: StopCheck | None = None) -> Attribution:
    """One forward and one backward pass over the node set (see module doc).

    progress(done, total) counts prompt chunks; should_stop() is checked between them (Cancelled)."""
    if ev.blocks is None:
        raise NotImplementedError("Attribution needs a model that blocks.py describes.")
    roles = tuple(ev.dataset.positions) + (ALL_POSITIONS,)
    # The estimate is node-level: a circuit's removed edges are left out of it (its exact values keep them).
    key = layer_keys(replace(node_set, removed_edges=frozenset()), ev.n_layers, ev.n_heads)
    scores = torch.zeros(ev.n_layers, ev.n_heads, len(roles), dtype=torch.float64)
    diffs = torch.empty(ev.dataset.n, dtype=torch.float64)
    n = ev.dataset.n
    rows = max(1, ev.max_rows // 4)  # the backward pass keeps every layer's activations: smaller chunks
    starts = range(0, n, rows)
    for i, p0 in enumerate(starts):
        raise_if_stopped(should_stop)
        if progress is not None:
            progress(i, len(starts))
        chunk = _Chunk(ev, -1, torch.arange(p0, min(n, p0 + rows)))
        d, grads, deltas = _forward_with_grads(ev, chunk, key)
        diffs[chunk.prompts] = d.detach().double().cpu()
        for layer, (g, delta) in enumerate(zip(grads, deltas)):
            contrib = (g * delta).sum(-1).double().cpu()  # [P, S, head]
            for j, role in enumerate(roles[:-1]):
                scores[layer, :, j] += contrib[torch.arange(len(chunk.prompts)), chunk.positions[role].cpu()].sum(0)
            scores[layer, :, -1] += contrib.sum((0, 1))
    if progress is not None:
        progress(len(starts), len(starts))
    return Attribution(scores / n, roles, diffs)


def _forward_with_grads(ev: Evaluator, chunk: _Chunk, key: tuple):
    """The metric of one node set per prompt, with dF/dz (z after ablation) and z − value per layer."""
    blocks = ev.blocks
    all_heads = torch.arange(ev.n_heads, device=ev.device)
    used, deltas = [], []
    with torch.enable_grad():
        x = blocks.embed(chunk.tokens).requires_grad_()  # the weights are detached: track from here
        for layer in range(ev.n_layers):
            z = blocks.attend(layer, x, all_heads)
            values = chunk.values(layer)
            z_used = _apply(z, values, key[layer], chunk)
            z_used.retain_grad()
            used.append(z_used)
            deltas.append((z - values).detach())
            x = blocks.after_attn(layer, x, blocks.attn_out(layer, z_used))
        diffs = ev._readout(chunk, x[chunk.rows, chunk.end])  # the methodology's metric (KL, ...) too
        diffs.sum().backward()
    return diffs, [u.grad.detach() for u in used], deltas


def _apply(z, values, lkey, chunk: _Chunk):
    """z with every head outside the layer key replaced by its ablation value."""
    return torch.where(chunk.keep(list(lkey), False)[..., None], z, values)


# --- what the editor shows ------------------------------------------------------------------------------
def toggle_estimates(ev: Evaluator, circuit: Circuit, target_class: str, att: Attribution | None = None):
    """Estimated F(C with the head toggled) − F(C) per head, as a tidy frame (layer, head, metric, score).

    The toggle is the editor's click with `target_class` chosen: a head of that class goes out, a
    head of another class moves to it, any other head comes in at its position.
    """
    att = att or attribution(ev, circuit_node_set(circuit, ev.methodology.positions))
    every = ev.methodology.positions != "circuit"
    target = next(c for c in circuit.classes if c.name == target_class)
    new_role = ALL_POSITIONS if every else target.position
    rows = []
    for l in range(ev.n_layers):
        for h in range(ev.n_heads):
            cls = circuit.class_of((l, h))
            old_role = None if cls is None else (ALL_POSITIONS if every else cls.position)
            if cls is None:
                score = att.at((l, h), new_role)
            elif cls.name == target_class:
                score = -att.at((l, h), old_role)
            else:
                score = att.at((l, h), new_role) - att.at((l, h), old_role)
            rows.append({"layer": l, "head": h, "metric": ESTIMATE, "score": score})
    return pd.DataFrame(rows)


def exact_toggles(ev: Evaluator, circuit: Circuit, target_class: str, progress: Progress | None = None,
                  should_stop: StopCheck | None = None) -> pd.DataFrame:
    """F(C with the head toggled) − F(C) for every head, exactly (one node set per head)."""
    pos = ev.methodology.positions
    heads = [(l, h) for l in range(ev.n_layers) for h in range(ev.n_heads)]
    sets = [circuit_node_set(circuit, pos)] + [circuit_node_set(toggled(circuit, v, target_class), pos)
                                               for v in heads]
    F = ev.logit_diffs(sets, progress, should_stop).mean(1).numpy()
    return pd.DataFrame({"layer": [l for l, _ in heads], "head": [h for _, h in heads], "metric": EXACT,
                         "score": F[1:] - F[0]})


def rank_agreement(estimate: pd.DataFrame, exact: pd.DataFrame) -> float:
    """Spearman rank correlation between two per-head frames (same heads)."""
    a = estimate.set_index(["layer", "head"])["score"]
    b = exact.set_index(["layer", "head"])["score"].reindex(a.index)
    return float(np.corrcoef(a.rank().to_numpy(), b.rank().to_numpy())[0, 1])
