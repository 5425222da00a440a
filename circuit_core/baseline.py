"""The baseline a reviewer asks for: how does C compare with random circuits of the same shape?

A random circuit keeps as many heads in each layer as C does, drawn uniformly from that layer, each
at the position of one of C's heads in that layer (the same positions, shuffled). If C's F is no
better than such circuits', its heads are not what makes it faithful.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ablation import NodeSet
from .circuit import ALL_POSITIONS, Circuit
from .criteria import circuit_node_set
from .progress import Progress, StopCheck


@dataclass(frozen=True)
class Baseline:
    F_random: np.ndarray  # F of each random circuit
    F_circuit: float
    F_model: float
    lower_is_better: bool = False  # KL: a random circuit is as good as C when its F is at most F(C)

    @property
    def share_at_least_as_good(self) -> float:
        """Fraction of random circuits with F ≥ F(C) (F ≤ F(C) under KL): an empirical p-value; small is
        good for C."""
        if self.lower_is_better:
            return float(np.mean(self.F_random <= self.F_circuit))
        return float(np.mean(self.F_random >= self.F_circuit))

    def to_dict(self) -> dict:
        return {"F_random": self.F_random.tolist(), "F_circuit": self.F_circuit, "F_model": self.F_model,
                "share_at_least_as_good": self.share_at_least_as_good, "n": int(len(self.F_random)),
                "rule": "same number of heads per layer, C's positions in that layer shuffled"}


def random_circuits(circuit: Circuit, n_layers: int, n_heads: int, count: int, seed: int,
                    positions: str = "circuit") -> list[NodeSet]:
    rng = np.random.default_rng([seed, 5])
    by_layer: dict[int, list[str]] = {}
    for (l, _, role) in circuit.nodes(positions):
        by_layer.setdefault(l, []).append(role if positions == "circuit" else ALL_POSITIONS)
    sets = []
    for j in range(count):
        nodes = set()
        for l, roles in sorted(by_layer.items()):
            heads = rng.choice(n_heads, size=len(roles), replace=False)
            nodes |= {(l, int(h), r) for h, r in zip(heads, rng.permutation(roles))}
        sets.append(NodeSet(frozenset(nodes), label=f"random {j + 1}"))
    return sets


def random_circuit_baseline(ev, circuit: Circuit, count: int = 50, seed: int | None = None,
                            progress: Progress | None = None, should_stop: StopCheck | None = None) -> Baseline:
    meth = ev.methodology
    seed = meth.seed if seed is None else seed
    sets = random_circuits(circuit, ev.n_layers, ev.n_heads, count, seed, meth.positions)
    F = ev.logit_diffs([NodeSet.model(), circuit_node_set(circuit, meth.positions)] + sets, progress,
                       should_stop).mean(1).numpy()
    return Baseline(F[2:], float(F[1]), float(F[0]), getattr(meth, "metric", "logit_diff") == "kl")
