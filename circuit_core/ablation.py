"""How nodes outside a node set are knocked out: methodology, means, keep-masks.

A node is (layer, head, position role). `position` "*" stands for every position.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

import torch

from .circuit import ALL_POSITIONS

Node = tuple[int, int, str]


class Ablation(str, Enum):
    MEAN = "mean"  # mean of the reference prompts of the prompt's own group (template and order)
    MEAN_POOLED = "mean-pooled"  # mean of all reference prompts at the same token index
    RESAMPLE = "resample"  # the activation of one reference prompt of the same group (seeded)
    ZERO = "zero"  # hook_z set to zero


class PositionScope(str, Enum):
    CIRCUIT = "circuit"  # a circuit head is kept only at its class's position (the paper)
    ALL = "all"  # a circuit head is kept at every position


@dataclass(frozen=True)
class Methodology:
    """Every choice that moves the numbers. A run record stores it whole."""

    task: str = "ioi"
    n: int = 100
    seed: int = 0
    mode: str = "mixed"
    prepend_bos: bool = False
    ablation: str = Ablation.MEAN.value
    positions: str = PositionScope.CIRCUIT.value
    bootstrap: int = 1000  # resamples for 95% intervals
    ref_per_group: int = 0  # reference (ABC) prompts per group; 0: each prompt's ABC twin (the paper)

    def __post_init__(self):
        # Validate early so a typo never silently falls back to a default.
        Ablation(self.ablation)
        PositionScope(self.positions)

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> "Methodology":
        return Methodology(**{**self.to_dict(), **changes})

    def dataset_kwargs(self) -> dict:
        return {"n": self.n, "seed": self.seed, "mode": self.mode, "prepend_bos": self.prepend_bos,
                "ref_per_group": self.ref_per_group}


@dataclass(frozen=True)
class NodeSet:
    """The nodes kept intact; every other head-position is ablated.

    With complement=True the meaning flips: every node is kept except `nodes`. So the full
    model M is NodeSet(complement=True), the empty circuit is NodeSet(), and M\\K is
    NodeSet(K, complement=True).
    """

    nodes: frozenset = field(default_factory=frozenset)
    complement: bool = False
    label: str = ""

    @classmethod
    def model(cls, label: str = "M") -> "NodeSet":
        return cls(frozenset(), True, label)

    @classmethod
    def empty(cls, label: str = "∅") -> "NodeSet":
        return cls(frozenset(), False, label)


def keep_mask(node_set: NodeSet, positions: dict[str, torch.Tensor], n_prompts: int, seq_len: int,
              n_layers: int, n_heads: int) -> torch.Tensor:
    """Bool [N, seq, layer, head]: True where the head's output is left intact.

    Rows are indexed prompt by prompt (arange(N), positions[role]); indexing with the position
    vector alone would keep every prompt's head at the union of all prompts' positions.
    """
    mask = torch.full((n_prompts, seq_len, n_layers, n_heads), node_set.complement, dtype=torch.bool)
    rows = torch.arange(n_prompts)
    value = not node_set.complement
    for (layer, head, role) in node_set.nodes:
        if role == ALL_POSITIONS:
            mask[:, :, layer, head] = value
        else:
            mask[rows, positions[role], layer, head] = value
    return mask


def reference_z_batches(model, tokens: torch.Tensor, batch_size: int = 64):
    """Yields (start, hook_z of every layer on tokens[start:start+batch]) as float [B, seq, layer, head, d_head].

    Through the model's blocks when it has them (no unembedding), else hooked bridge passes."""
    blocks = model.blocks
    if blocks is not None:
        with torch.no_grad():
            for start in range(0, len(tokens), batch_size):
                yield start, blocks.head_outputs(tokens[start : start + batch_size].to(model.device)).cpu()
        return
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.n_layers)]
    for start in range(0, len(tokens), batch_size):
        store = {}

        def grab(z, hook):
            store[hook.name] = z.detach()
            return z

        with model.lock, torch.no_grad():
            model.bridge.run_with_hooks(tokens[start : start + batch_size].to(model.device),
                                        fwd_hooks=[(n, grab) for n in names])
        yield start, torch.stack([store[n] for n in names], dim=2).cpu()


def reference_z(model, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """hook_z of every layer on `tokens`: float [N, seq, layer, head, d_head]."""
    return torch.cat([z for _, z in reference_z_batches(model, tokens, batch_size)])


def ablation_table(model, dataset, methodology: Methodology) -> tuple[torch.Tensor, torch.Tensor]:
    """What replaces an ablated head's output, stored once per distinct value: (table, index).

    table: float [V, seq, layer, head, d_head]; prompt i takes table[index[i]]. Mean ablation keeps
    one row per group (30 rows whatever N), pooled mean and zero one row, resample one per reference
    prompt. Computed once per (model, dataset, methodology) and reused by every node set.
    """
    kind = Ablation(methodology.ablation)
    n, seq = dataset.tokens.shape
    if kind is Ablation.ZERO:
        return torch.zeros(1, seq, model.n_layers, model.n_heads, model.d_head), torch.zeros(n, dtype=torch.long)
    if kind is Ablation.MEAN:  # streamed: per-group sums, never every reference prompt's z at once
        groups, ref_index = torch.unique(dataset.ref_groups, return_inverse=True)
        table = torch.zeros(len(groups), seq, model.n_layers, model.n_heads, model.d_head)
        for start, z in reference_z_batches(model, dataset.reference_tokens):
            table.index_add_(0, ref_index[start : start + len(z)], z)
        table /= torch.bincount(ref_index, minlength=len(groups)).float()[:, None, None, None, None]
        return table, _row_of(dataset.groups, groups)
    z_ref = reference_z(model, dataset.reference_tokens)
    if kind is Ablation.MEAN_POOLED:
        valid = torch.arange(seq)[None, :] < dataset.ref_lengths[:, None]
        w = valid.float()[:, :, None, None, None]
        pooled = (z_ref * w).sum(0) / w.sum(0).clamp(min=1)
        return pooled[None], torch.zeros(n, dtype=torch.long)
    # RESAMPLE: each prompt takes a different reference prompt of its own group when there is one.
    gen = torch.Generator().manual_seed(methodology.seed)
    source = torch.empty(n, dtype=torch.long)
    if not dataset.paired:  # an independent set: any reference prompt of the group, drawn uniformly
        for g in dataset.groups.unique():
            members = torch.nonzero(dataset.groups == g).flatten()
            pool = torch.nonzero(dataset.ref_groups == g).flatten()
            source[members] = pool[torch.randint(len(pool), (len(members),), generator=gen)]
        return z_ref, source
    for g in dataset.groups.unique():
        members = torch.nonzero(dataset.groups == g).flatten()
        if len(members) == 1:
            source[members] = members
            continue
        shift = torch.randint(1, len(members), (len(members),), generator=gen)
        source[members] = members[(torch.arange(len(members)) + shift) % len(members)]
    return z_ref, source


def _row_of(groups: torch.Tensor, table_groups: torch.Tensor) -> torch.Tensor:
    """For each prompt, the row of its group in a table of per-group values."""
    row = {int(g): i for i, g in enumerate(table_groups.tolist())}
    missing = sorted({int(g) for g in groups.tolist()} - set(row))
    if missing:
        raise ValueError(f"No reference prompts for group(s) {missing}.")
    return torch.tensor([row[int(g)] for g in groups.tolist()])


def ablation_values(model, dataset, methodology: Methodology) -> torch.Tensor:
    """Per-prompt ablation values, float [N, seq, layer, head, d_head] (the table expanded)."""
    table, index = ablation_table(model, dataset, methodology)
    return table[index]
