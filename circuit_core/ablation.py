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
    # Reference (ABC) prompts per group, drawn apart from the clean ones; 0: each prompt's ABC twin (the
    # paper's regime). 50: where faithfulness stops moving with the reference size (the README's curve).
    ref_per_group: int = 50
    # Bootstrap replicates of the reference set, so intervals include its noise; 0: clean prompts only.
    ref_replicates: int = 8

    def __post_init__(self):
        # Validate early so a typo never silently falls back to a default.
        Ablation(self.ablation)
        PositionScope(self.positions)
        for name in ("ref_per_group", "ref_replicates"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a whole number ≥ 0 (got {getattr(self, name)!r}).")

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
    return ablation_tables(model, dataset, methodology, 0)[0]


def ablation_tables(model, dataset, methodology: Methodology, replicates: int = 0) -> list[tuple]:
    """The table above, then `replicates` bootstrap replicates of it (one pass over the references).

    A replicate redraws what the reference set is a sample of: for means, the reference prompts
    resampled with replacement within each group (pooled: over all); for resample ablation, a new
    draw of each prompt's reference prompt. Zero ablation has no reference noise: no replicates.
    """
    kind = Ablation(methodology.ablation)
    n, seq = dataset.tokens.shape
    if kind is Ablation.ZERO:
        return [(torch.zeros(1, seq, model.n_layers, model.n_heads, model.d_head), torch.zeros(n, dtype=torch.long))]
    weights = [torch.ones(len(dataset.reference_tokens))] + [
        _bootstrap_weights(dataset.ref_groups, torch.Generator().manual_seed(methodology.seed * 1000 + 7 + b))
        for b in range(replicates if kind is not Ablation.RESAMPLE else 0)]
    if kind is Ablation.MEAN:  # streamed: per-group sums, never every reference prompt's z at once
        groups, ref_index = torch.unique(dataset.ref_groups, return_inverse=True)
        tables = [torch.zeros(len(groups), seq, model.n_layers, model.n_heads, model.d_head) for _ in weights]
        for start, z in reference_z_batches(model, dataset.reference_tokens):
            rows = ref_index[start : start + len(z)]
            for table, w in zip(tables, weights):
                table.index_add_(0, rows, z * w[start : start + len(z), None, None, None, None])
        index = _row_of(dataset.groups, groups)
        out = []
        for table, w in zip(tables, weights):
            totals = torch.zeros(len(groups)).index_add_(0, ref_index, w)
            out.append((table / totals[:, None, None, None, None], index))
        return out
    z_ref = reference_z(model, dataset.reference_tokens)
    if kind is Ablation.MEAN_POOLED:
        valid = (torch.arange(seq)[None, :] < dataset.ref_lengths[:, None]).float()
        out = []
        for w in weights:
            mask = (valid * w[:, None])[:, :, None, None, None]
            out.append((((z_ref * mask).sum(0) / mask.sum(0).clamp(min=1e-9))[None], torch.zeros(n, dtype=torch.long)))
        return out
    return [(z_ref, _resample_sources(dataset, torch.Generator().manual_seed(methodology.seed if b == 0 else
                                                                              methodology.seed * 1000 + 7 + b)))
            for b in range(1 + replicates)]


def _bootstrap_weights(groups: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Multinomial counts: each group's members resampled with replacement, as many as it has."""
    w = torch.zeros(len(groups))
    for g in groups.unique():
        members = torch.nonzero(groups == g).flatten()
        picks = members[torch.randint(len(members), (len(members),), generator=gen)]
        w.index_add_(0, picks, torch.ones(len(picks)))
    return w


def _resample_sources(dataset, gen: torch.Generator) -> torch.Tensor:
    """RESAMPLE: each prompt takes a different reference prompt of its own group when there is one."""
    n = dataset.n
    source = torch.empty(n, dtype=torch.long)
    if not dataset.paired:  # an independent set: any reference prompt of the group, drawn uniformly
        for g in dataset.groups.unique():
            members = torch.nonzero(dataset.groups == g).flatten()
            pool = torch.nonzero(dataset.ref_groups == g).flatten()
            source[members] = pool[torch.randint(len(pool), (len(members),), generator=gen)]
        return source
    for g in dataset.groups.unique():
        members = torch.nonzero(dataset.groups == g).flatten()
        if len(members) == 1:
            source[members] = members
            continue
        shift = torch.randint(1, len(members), (len(members),), generator=gen)
        source[members] = members[(torch.arange(len(members)) + shift) % len(members)]
    return source


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
