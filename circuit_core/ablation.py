"""How nodes outside a node set are knocked out: methodology, means, keep-masks.

A node is (layer, head, position role). `position` "*" stands for every position.
"""
from __future__ import annotations

import hashlib
import threading
import weakref
from dataclasses import asdict, dataclass, field
from enum import Enum

import torch

from .cache import BoundedCache
from .circuit import ALL_POSITIONS
from .hooks import every_layer
from .metrics import Metric
from .progress import ambient
from .resampling import group_counts, resample_sources

Node = tuple[int, int, str]


class Ablation(str, Enum):
    MEAN = "mean"  # mean of the reference prompts of the prompt's own group (IOI: template and order)
    MEAN_POOLED = "mean-pooled"  # mean of all reference prompts at the same token index
    RESAMPLE = "resample"  # the activation of one reference prompt of the same group (seeded)
    ZERO = "zero"  # hook_z set to zero


class RefNoise(str, Enum):
    LINEAR = "linear"  # first order in the replicates' change of the means, on a stratified sample of prompts
    EXACT = "exact"  # every set evaluated again under every replicate, on every prompt


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
    # Reference prompts per group (IOI: ABC prompts), drawn apart from the clean ones; 0: each prompt's twin (the
    # paper's regime). 50: where faithfulness stops moving with the reference size (the README's curve).
    ref_per_group: int = 50
    # Bootstrap replicates of the reference set, so intervals include its noise; 0: clean prompts only.
    ref_replicates: int = 8
    # How a set's values under a replicate are found (evaluate.py, "Reference noise"): "linear" (one backward
    # pass per set, on about 32 prompts) or "exact" (one more evaluation per set and replicate).
    ref_noise: str = RefNoise.LINEAR.value
    # What F reads at END (metrics.py): "logit_diff", "kl" or "prob_diff". A record without it: logit_diff.
    metric: str = Metric.LOGIT_DIFF.value

    def __post_init__(self):
        # Validate early so a typo never silently falls back to a default.
        from .tasks import get_task

        modes = get_task(self.task).modes
        if self.mode not in modes:
            raise ValueError(f"task '{self.task}' has no mode '{self.mode}' (choose one of: {', '.join(modes)}).")
        Ablation(self.ablation)
        PositionScope(self.positions)
        RefNoise(self.ref_noise)
        Metric(self.metric)
        for name, low in (("n", 1), ("seed", 0), ("bootstrap", 1), ("ref_per_group", 0), ("ref_replicates", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be a whole number ≥ {low} (got {value!r}).")
        if self.seed > 2**32 - 1:  # numpy and torch seeding take no more
            raise ValueError(f"seed must be at most 2^32 - 1 (got {self.seed}).")

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

    removed_edges: head edges (sender (layer, head), receiver (layer, head) or "logits", input "q", "k",
    "v" or "out") that carry the sender's ablation value instead of its output into the receiver while
    both ends are kept (circuit.py, "edges"). An edge with an ablated end changes nothing.
    """

    nodes: frozenset = field(default_factory=frozenset)
    complement: bool = False
    label: str = ""
    removed_edges: frozenset = field(default_factory=frozenset)

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


def head_z(model, tokens: torch.Tensor) -> torch.Tensor:
    """hook_z of every layer on `tokens` (already on the model's device), on that device: float
    [B, seq, layer, head, d_head]. Through the model's blocks when it has them (no unembedding), else
    a hooked bridge pass."""
    blocks = model.blocks
    if blocks is not None:
        with torch.no_grad():
            return blocks.head_outputs(tokens)
    names, store = every_layer(model.n_layers), {}

    def grab(z, hook):
        store[hook.name] = z.detach()
        return z

    with model.lock, torch.no_grad():
        model.bridge.run_with_hooks(tokens, fwd_hooks=[(n, grab) for n in names])
    return torch.stack([store[n] for n in names], dim=2)


def reference_z_batches(model, tokens: torch.Tensor, batch_size: int = 64):
    """Yields (start, hook_z of every layer on tokens[start:start+batch]) on the CPU, in order."""
    for start in range(0, len(tokens), batch_size):
        yield start, head_z(model, tokens[start : start + batch_size].to(model.device)).cpu()


def reference_z(model, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """hook_z of every layer on `tokens`: float [N, seq, layer, head, d_head]."""
    return torch.cat([z for _, z in reference_z_batches(model, tokens, batch_size)])


class Table:
    """One draw of ablation values: `values` float [V, seq, layer, head, d_head], and `index` [N], the
    row each prompt takes. Unpacks as (values, index). Shared between evaluators: read it, never write
    into it."""

    __slots__ = ("values", "index", "__weakref__")

    def __init__(self, values: torch.Tensor, index: torch.Tensor):
        self.values, self.index = values, index

    def __iter__(self):
        return iter((self.values, self.index))


def ablation_table(model, dataset, methodology: Methodology) -> Table:
    """What replaces an ablated head's output, stored once per distinct value: (table, index).

    table: float [V, seq, layer, head, d_head]; prompt i takes table[index[i]]. Mean ablation keeps
    one row per group (30 rows whatever N), pooled mean one row, resample one per reference prompt
    used, zero one broadcast row of a single stored zero. Computed once per (model, dataset,
    methodology) and reused by every node set.
    """
    return ablation_tables(model, dataset, methodology, 0)[0]


def ablation_tables(model, dataset, methodology: Methodology, replicates: int = 0) -> list[Table]:
    """The table above, then `replicates` bootstrap replicates of it (one pass over the references).

    A replicate redraws what the reference set is a sample of: for means, the reference prompts
    resampled with replacement within each group (pooled: over all); for resample ablation, a new
    draw of each prompt's reference prompt. Zero ablation has no reference noise: no replicates.
    """
    kind = Ablation(methodology.ablation)
    draws = [0] if kind is Ablation.ZERO else list(range(1 + replicates))
    return _compute(model, dataset, kind, methodology.seed, draws)


def _compute(model, dataset, kind: Ablation, seed: int, draws: list[int]) -> list[Table]:
    """The tables of `draws` (0: the reference set itself; b ≥ 1: bootstrap replicate b)."""
    n, seq = dataset.tokens.shape
    dtype = model_dtype(model)  # tables in the model's own floating-point type (means summed in float32)
    if kind is Ablation.ZERO:  # one stored zero, broadcast: nothing per group or per prompt
        zero = torch.zeros((), dtype=dtype).expand(1, seq, model.n_layers, model.n_heads, model.d_head)
        return [Table(zero, torch.zeros(n, dtype=torch.long)) for _ in draws]
    if kind is Ablation.RESAMPLE:
        return _resample_tables(model, dataset, seed, draws)
    weights = [torch.ones(len(dataset.reference_tokens)) if b == 0 else
               group_counts(dataset.ref_groups, torch.Generator().manual_seed(seed * 1000 + 6 + b))
               for b in draws]
    pooled = kind is Ablation.MEAN_POOLED
    groups, ref_group = ((torch.zeros(1, dtype=torch.long), torch.zeros(len(weights[0]), dtype=torch.long))
                         if pooled else torch.unique(dataset.ref_groups, return_inverse=True))
    sums, counts = _weighted_means(model, dataset.reference_tokens, dataset.ref_lengths, ref_group, len(groups),
                                   torch.stack(weights))
    index = torch.zeros(n, dtype=torch.long) if pooled else _row_of(dataset.groups, groups)
    # a group's mean at a position is over its reference prompts long enough to have it (none: zero)
    shape = (len(groups), seq, model.n_layers, model.n_heads, model.d_head)
    return [Table((s / c.clamp(min=1e-9)[..., None]).view(shape).to(dtype), index) for s, c in zip(sums, counts)]


def model_dtype(model) -> torch.dtype:
    """The floating-point type a loaded model computes in (models.DTYPES; float32 for anything else)."""
    from .models import DTYPES

    return DTYPES.get(getattr(model, "dtype", None), torch.float32)


MEANS_BATCH_TOKENS = 2048  # reference tokens per pass: large enough for efficient matmuls, small in memory


def _weighted_means(model, tokens, lengths, group, n_groups: int, weights: torch.Tensor):
    """Per draw d, group g and position p, the weighted sum of hook_z over the reference prompts of g
    long enough to have p, and the summed weights: float [D, G, seq, layer·head·d_head], [D, G, seq].

    One pass over the references, sorted by length so that each batch is cut after its longest prompt
    (no positions past any prompt's end are computed); every draw's sums are one matrix product per
    batch, over only the groups in that batch."""
    seq, dev = tokens.shape[1], model.device
    width = model.n_layers * model.n_heads * model.d_head
    D = len(weights)
    sums = torch.zeros(D, n_groups, seq, width, device=dev)
    counts = torch.zeros(D, n_groups, seq, device=dev)
    order = torch.argsort(lengths * n_groups + group, stable=True)  # by length, then group
    per = max(1, MEANS_BATCH_TOKENS // max(1, int(lengths.max())))
    progress, done = ambient(), 0  # the dashboard's bar while an evaluator is built (progress.reporting)
    for rows in order.split(per):
        S = int(lengths[rows].max())
        z = head_z(model, tokens[rows, :S].to(dev)).reshape(len(rows), S, width).float()
        present, local = torch.unique(group[rows], return_inverse=True)
        member = torch.zeros(len(present), len(rows))
        member[local, torch.arange(len(rows))] = 1.0
        w = (weights[:, rows][:, None, :] * member[None]).to(dev)  # [D, P, B]: draw weights by group
        valid = (torch.arange(S)[None, :] < lengths[rows][:, None]).float().to(dev)  # [B, S]
        counts[:, present, :S] += w @ valid
        z = z * valid[..., None] if not bool(valid.all()) else z
        sums[:, present, :S] += (w.reshape(-1, len(rows)) @ z.reshape(len(rows), -1)).view(D, len(present), S, width)
        done += len(rows)
        if progress is not None:
            progress(done, len(tokens))
    return sums.cpu(), counts.cpu()


def _resample_tables(model, dataset, seed: int, draws: list[int]) -> list[Table]:
    """RESAMPLE: the z of only the reference prompts some draw uses, in one table all draws share."""
    sources = [resample_sources(dataset, torch.Generator().manual_seed(seed if b == 0 else seed * 1000 + 7 + b))
               for b in draws]
    used, rows = torch.unique(torch.cat(sources), return_inverse=True)
    values = reference_z(model, dataset.reference_tokens[used])
    return [Table(values, r) for r in rows.split(dataset.n)]


# --- sharing ---------------------------------------------------------------------------------------
# Methodology fields that change how values are read, not the values: evaluators that differ only in
# them share their tables (and, through EvaluatorCache, the evaluator itself). Not `metric`: a variant
# shares its sibling's memoised results, which hold the metric's values.
READOUT_FIELDS = frozenset({"positions", "bootstrap", "ref_noise"})


def values_key(methodology: Methodology) -> tuple:
    """The methodology without its read-out fields: equal keys, equal ablation values. A field added
    later counts as changing the values until it is listed in READOUT_FIELDS (the safe default)."""
    return tuple((k, v) for k, v in methodology.to_dict().items() if k not in READOUT_FIELDS)


def dataset_fingerprint(dataset) -> bytes:
    """A digest of everything the tables depend on: the reference prompts, their groups and lengths,
    the clean prompts' groups and the padded length."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((tuple(dataset.tokens.shape), dataset.paired)).encode())
    for t in (dataset.reference_tokens, dataset.ref_groups, dataset.ref_lengths, dataset.groups):
        h.update(t.contiguous().numpy().tobytes())
    return h.digest()


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (views and shared tables counted once)."""
    seen = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            s = t.untyped_storage()
            seen[(s.device.type, s.data_ptr())] = s.nbytes()
    return sum(seen.values())


class TableCache:
    """Ablation tables by (model, dataset, kind, seed, draw), so evaluators that share values share
    the tensors. Two tiers: every table some evaluator still holds is found through a weak map (it
    costs nothing extra to hand out again); the most recent ones are also kept after their last
    evaluator is gone (LRU bounded in bytes and entries), so switching back costs no reference pass.
    """

    def __init__(self, max_bytes: int = 256 << 20, max_entries: int = 32):
        self._live: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._recent = BoundedCache(max_entries, max_bytes, measure=lambda tables: storage_bytes(t.values for t in tables))
        self._lock = threading.Lock()
        self._builds: dict = {}  # one build at a time per (model, dataset, kind)
        self._models: dict = {}  # id(model) -> finalizer recording that it has gone
        self._dead: list = []

    def tables(self, model, dataset, methodology: Methodology) -> list[Table]:
        """The tables an evaluator of `methodology` needs (its draw, then its replicates)."""
        kind = Ablation(methodology.ablation)
        mid, seed = self._model_id(model), methodology.seed
        if kind is Ablation.ZERO:
            draws, base = [0], (mid, kind.value, tuple(dataset.tokens.shape))
        else:
            draws, base = list(range(1 + methodology.ref_replicates)), (mid, kind.value, dataset_fingerprint(dataset))
        # A mean draw depends on the seed only through its bootstrap weights; resample draws come as one set.
        keys = {b: base + ((seed, len(draws), b) if kind is Ablation.RESAMPLE else (seed if b else None, b))
                for b in draws}
        found = self._get(keys.values())
        if len(found) < len(keys):
            with self._build_lock(base):
                found = self._get(keys.values())
                missing = [b for b in draws if keys[b] not in found]
                if kind is Ablation.RESAMPLE:  # shares one table among its draws: build them together
                    missing = draws if missing else []
                if missing:
                    from . import means_cache  # the reference pass is paid once per machine

                    tables = means_cache.cached(model, dataset, kind.value, seed, missing,
                                                lambda m: _compute(model, dataset, kind, seed, m))
                    for b, t in zip(missing, tables):
                        found[keys[b]] = t if isinstance(t, Table) else Table(*t)
                    self._put({keys[b]: found[keys[b]] for b in missing})
        return [found[keys[b]] for b in draws]

    def _model_id(self, model) -> int:
        mid = id(model)
        with self._lock:
            self._purge()
            if mid not in self._models:  # ids are reused after a model dies: its entries go with it
                self._models[mid] = weakref.finalize(model, self._dead.append, mid)
        return mid

    def _purge(self):
        # The finalizer only records the id (it may run inside any allocation, lock held or not).
        while self._dead:
            mid = self._dead.pop()
            self._models.pop(mid, None)
            for key in [k for k in self._recent.keys() if k[0] == mid]:
                self._recent.pop(key)
            for key in [k for k in list(self._live.keys()) if k[0] == mid]:
                self._live.pop(key, None)

    def _build_lock(self, base) -> threading.Lock:
        with self._lock:
            if len(self._builds) > 256:
                self._builds = {k: v for k, v in self._builds.items() if v.locked()}
            return self._builds.setdefault(base, threading.Lock())

    def _get(self, keys) -> dict:
        with self._lock:
            self._purge()
            found = {key: t for key in keys if (t := self._live.get(key)) is not None}
            self._keep(found)
            return found

    def _put(self, tables: dict):
        with self._lock:
            for key, t in tables.items():
                self._live[key] = t
            self._keep(tables)

    def _keep(self, tables: dict):
        """Mark as most recently used; drop the oldest while over the bounds."""
        self._recent.put_many(tables)

    @property
    def max_bytes(self) -> int:
        return self._recent.max_bytes

    @property
    def max_entries(self) -> int:
        return self._recent.max_entries

    @property
    def bytes(self) -> int:
        """Bytes of the tables kept beyond their evaluators' lives (shared storage counted once)."""
        return self._recent.bytes

    def clear(self):
        """Forget the kept tables (those evaluators still hold stay shared)."""
        self._recent.clear()


TABLES = TableCache()


def shared_tables(model, dataset, methodology: Methodology) -> list[Table]:
    """`ablation_tables(model, dataset, methodology, methodology.ref_replicates)`, through the process's
    table cache: the same tensors for every evaluator whose values are the same."""
    return TABLES.tables(model, dataset, methodology)


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
