"""F for many node sets: the hot path every criterion stands on.

F(S) = mean over prompts of the methodology's metric at END (metrics.py; by default logit[correct] -
logit[incorrect]), with every head-position outside S replaced by its ablation value (see ablation.py). `Evaluator.logit_diffs` takes a list of
node sets and returns the per-prompt values for all of them; callers use nothing else.

How it avoids work, without changing any result (tests compare it with a plain hooked forward):
- A node set is read as one key per layer: what happens to each head in that layer (kept, ablated,
  or kept / ablated at some roles). Two sets with the same keys below layer L have the same
  residual stream entering L.
- A batch of sets is walked as a prefix tree over those keys (depth first, so memory stays one
  residual per layer): each layer is computed once per distinct prefix, and siblings share that
  layer's attention (its input is the same; only which heads are kept differs).
- Residuals entering each layer are kept for recently evaluated sets (LRU, bounded in bytes), so a
  set that first differs from a kept one at layer L costs the layers from L on.
- Results per set are memoised: F(M), F(∅) and the current circuit are computed once.
- Heads ablated everywhere get no queries, keys or values; the last layer runs at END only; only
  the two answer logits are read (`blocks.py`: GPT-2 and the other decoder families it describes;
  with parallel attention + MLP, siblings share the layer's MLP too). KL and the probability difference
  read every logit at END (still only there); KL against the clean model's log-probabilities, computed
  once per evaluator and shared with its replicates and variants.
- Edge-level sets (NodeSet.removed_edges): a receiver's removed edges are part of its layer's key; the
  senders' (z − value) are carried down the tree per prefix, and the receiver's q, k, v are computed from
  the residual less those (README, "Edges"). Node sets never enter that code.
Prompts are processed in chunks of similar length (`chunks`: sorted by END, fixed for the evaluator, so
cache entries line up across calls), each cut after its last END: positions past a prompt's END cannot
reach its answer (causal attention), so padding is not computed. No [sets, N, seq, layer, head] mask is
ever built.
"""
from __future__ import annotations

import threading
import weakref
from functools import lru_cache
from typing import Sequence

import torch

import numpy as np

from .ablation import Ablation, Methodology, NodeSet, RefNoise, keep_mask, shared_tables, storage_bytes, values_key
from .cache import BoundedCache
from .circuit import ALL_POSITIONS
from .hooks import every_layer, hook_z
from .metrics import Metric, from_logits, log_probs
from .progress import Cancelled, Progress, StopCheck, stop_requested  # noqa: F401  (Cancelled: callers catch it from here)

KEPT, ABLATED = "K", "A"  # a head kept / ablated at every position; else ("k" | "a", roles)

# Bounds of what one evaluator keeps besides its tables (GPT-2 small: a memo key is about 2 KB).
MEMO_BYTES, MEMO_ENTRIES = 128 << 20, 50_000  # results of an evaluator, its replicates and variants
MAX_PREFIXES = 200_000  # prefix ids (about 200 bytes each) before they start over
RECENT_SIBLINGS = 32  # layer keys looked at for a base residual (the latest ones: an edit's circuit among them)
# Prompts the linear reference noise is evaluated on, stratified by group (at least one per group). The
# reference noise is a small part of an interval's width, and its estimate from B replicates is itself
# rough; more prompts cost a backward pass each (README, "Reference noise").
REF_NOISE_PROMPTS = 32


def layer_keys(node_set: NodeSet, n_layers: int, n_heads: int) -> tuple:
    """One hashable key per layer: the state of each head (KEPT, ABLATED, ("k", roles), ("a", roles)).

    With removed edges (NodeSet.removed_edges) a kept receiver's state becomes (EDGED, its state, frozenset
    of (sender, input)), so its layer's key, and every later one's prefix, differ from the node set's; removed
    edges into the logits add one more key after the last layer: (LOGITS, frozenset of senders)."""
    roles: dict[tuple[int, int], set] = {}
    for (l, h, role) in node_set.nodes:
        roles.setdefault((l, h), set()).add(role)
    default = KEPT if node_set.complement else ABLATED
    keys = []
    for l in range(n_layers):
        state = []
        for h in range(n_heads):
            r = roles.get((l, h))
            if not r:
                state.append(default)
            elif ALL_POSITIONS in r:
                state.append(ABLATED if node_set.complement else KEPT)
            else:
                state.append(("a" if node_set.complement else "k", frozenset(r)))
        keys.append(tuple(state))
    if node_set.removed_edges:
        _add_edges(keys, node_set.removed_edges, n_layers, n_heads)
    return tuple(keys)


EDGED, LOGITS_KEY = "e", "logits"  # a kept head with removed incoming edges; removed edges into the logits


def _add_edges(keys: list, removed, n_layers: int, n_heads: int) -> None:
    """Put each removed edge whose ends are both kept somewhere into its receiver's state (in place)."""
    into, logits = {}, set()
    for sender, receiver, x in removed:
        (sl, sh) = sender
        if not (0 <= sl < n_layers and 0 <= sh < n_heads):
            raise ValueError(f"Edge sender {sl}.{sh} does not exist in this model.")
        if keys[sl][sh] == ABLATED:
            continue  # an ablated sender already sends its ablation value everywhere
        if receiver == LOGITS_KEY:
            logits.add(sender)
            continue
        rl, rh = receiver
        if not (0 <= rl < n_layers and 0 <= rh < n_heads) or x not in ("q", "k", "v"):
            raise ValueError(f"Edge {sl}.{sh} -> {rl}.{rh} ({x}) does not exist in this model.")
        if sl < rl and keys[rl][rh] != ABLATED:
            into.setdefault((rl, rh), set()).add((sender, x))
    for (rl, rh), ins in into.items():
        row = list(keys[rl])
        row[rh] = (EDGED, row[rh], frozenset(ins))
        keys[rl] = tuple(row)
    if logits:
        keys.append((LOGITS_KEY, frozenset(logits)))


def _edged(state) -> bool:
    return isinstance(state, tuple) and len(state) == 3 and state[0] == EDGED


def node_state(state):
    """A head's state without its removed edges (what the keep-mask reads)."""
    return state[1] if _edged(state) else state


@lru_cache(maxsize=4096)
def key_senders(key: tuple) -> frozenset:
    """The heads some removed edge of a set's key sends from: their outputs are kept while walking."""
    out = set()
    for lkey in key:
        if lkey and lkey[0] == LOGITS_KEY:
            out.update(lkey[1])
            continue
        for st in lkey:
            if _edged(st):
                out.update(s for s, _ in st[2])
    return frozenset(out)


def has_edges(key: tuple) -> bool:
    return bool(key_senders(key))


class _Chunk:
    """One block of prompts: their ablation values and ablated head outputs, built lazily per layer.

    Both are kept per table row the chunk uses (mean ablation: one per group, not one per prompt) and
    gathered per prompt only where a layer needs them, so a chunk holds little beyond its residuals."""

    def __init__(self, ev: "Evaluator", index: int, prompts: torch.Tensor):
        self.ev, self.index, self.prompts = ev, index, prompts
        dev = ev.device
        self.tokens = ev.dataset.tokens[prompts].to(dev)
        self.end = ev.end[prompts].to(dev)
        self.seq = int(ev.end[prompts].max()) + 1  # positions past every END in the chunk are never computed
        self.tokens = self.tokens[:, : self.seq]
        self.rows = torch.arange(len(prompts), device=dev)
        self.direction, self.bias = ev._direction[prompts].to(dev), ev._bias[prompts].to(dev)
        self.positions = {r: p[prompts].to(dev) for r, p in ev.dataset.positions.items()}
        self.table_rows, row_of = torch.unique(ev._table_index[prompts], return_inverse=True)
        self.row_of = row_of.to(dev)  # each prompt's row among table_rows
        self._values, self._ablated_out = {}, {}

    def row_values(self, layer: int) -> torch.Tensor:
        """Ablation values of every head at this layer, per table row used: [rows, S, head, d_head]."""
        if layer not in self._values:
            self._values[layer] = self.ev._table[self.table_rows, : self.seq, layer].to(self.ev.device)
        return self._values[layer]

    def values(self, layer: int) -> torch.Tensor:
        """Ablation values of every head at this layer, per prompt: [P, S, head, d_head]."""
        return self.row_values(layer)[self.row_of]

    def head_values(self, layer: int, heads: torch.Tensor, at_end: bool) -> torch.Tensor:
        """Some heads' ablation values per prompt: [P, S, heads, d_head], or [P, heads, d_head] at END."""
        v = self.row_values(layer)
        if at_end:
            return v[self.row_of[:, None], self.end[:, None], heads[None, :]]
        return v[self.row_of[:, None], :, heads[None, :]].transpose(1, 2)  # indexed as [P, heads, S, d]

    def ablated_out(self, layer: int, at_end: bool = False) -> torch.Tensor:
        """The attention output with every head ablated (values through W_O, plus b_O): [P, S, d_model],
        or [P, d_model] at END."""
        if layer not in self._ablated_out:
            self._ablated_out[layer] = self.ev.blocks.attn_out(layer, self.row_values(layer))
        out = self._ablated_out[layer]
        return out[self.row_of, self.end] if at_end else out[self.row_of]

    def keep(self, states: list, at_end: bool) -> torch.Tensor:
        """Bool keep-mask of some heads' states: [P, S, heads], or [P, heads] at END only."""
        mask = layer_mask(states, self.positions, len(self.rows), self.tokens.shape[1])
        return mask[self.rows, self.end] if at_end else mask


class Evaluator:
    """Evaluates node sets for one (model, dataset, methodology); ablation values computed once.

    Residuals kept between calls go to the model's shared LRU (512 MB on a CPU, 4 GB on a GPU), or to
    a private one of `cache_bytes`.
    """

    def __init__(self, model, dataset, methodology: Methodology | None = None, max_rows: int | None = None,
                 cache_bytes: int | None = None, use_blocks: bool = True):
        self.model = model
        self.dataset = dataset
        self.methodology = methodology or Methodology()
        self.n_layers, self.n_heads = model.n_layers, model.n_heads
        self.device = model.device
        missing = [n for n in self._hook_names() if n not in model.bridge.hook_dict]
        if missing:
            # The bridge silently skips hook names it cannot resolve: refuse instead.
            raise RuntimeError(f"Model has no hook point(s) {missing[:3]}; per-head ablation is not supported for it.")
        # The tables come from the process's table cache: evaluators with the same values share the
        # tensors. Holding the Table objects keeps them findable there for as long as this evaluator lives.
        self._tables = shared_tables(model, dataset, self.methodology)
        self._table, self._table_index = self._tables[0]
        self._replicate_tables = self._tables[1:]
        self._replicates: list["Evaluator"] | None = None
        self._noise_sample = None  # (prompts, their chunk, the intact residual entering each layer)
        n, self.seq = dataset.tokens.shape
        on_gpu = str(self.device).startswith("cuda")
        # Prompts per chunk: a GPU wants big batches; a CPU gains nothing from them but memory traffic.
        tokens_per_pass = 32768 if on_gpu else 4096
        self.max_rows = max_rows or max(1, tokens_per_pass // self.seq)
        self.end = dataset.positions["END"]
        self.chunks = _length_chunks(self.end, self.max_rows)
        # Residuals live in the model's LRU (shared by its evaluators), keyed by this evaluator too.
        self._residuals = model.residual_cache if cache_bytes is None else BoundedCache(max_bytes=cache_bytes)
        # Per-set results, float64 [N] each, keyed (tag, layer keys): one bounded memo shared with this
        # evaluator's replicates (tag: replicate number) and variants (the same values, the same results).
        self._memo = BoundedCache(MEMO_ENTRIES, MEMO_BYTES, overhead=64 + self.n_layers * (56 + 8 * self.n_heads))
        self._memo_tag = 0
        self._prefix_ids: dict = {}
        self._children: dict = {}  # prefix id -> layer keys seen under it (where to look for a base residual)
        self._id = object()  # this evaluator's part of the shared residual cache
        self._prefix_lock = threading.Lock()
        self.blocks = model.blocks if use_blocks else None
        direction, bias = (self.blocks.answer_direction(dataset.answer_tokens.to(self.device)) if self.blocks
                           else (None, None))
        self._direction, self._bias = (direction.cpu(), bias.cpu()) if self.blocks else (None, None)
        self.metric = Metric(self.methodology.metric)
        self._clean = {}  # "log_probs": the intact model's float32 [N, vocab] at END (KL only); shared by copies

    def _hook_names(self):
        return every_layer(self.n_layers)

    # --- public API ------------------------------------------------------------------------------
    @property
    def values(self) -> torch.Tensor:
        """Ablation values per prompt, float [N, seq, layer, head, d_head] (materialised: for checks)."""
        return self._table[self._table_index]

    def masks(self, node_sets: Sequence[NodeSet], prompts=None) -> torch.Tensor:
        """Bool [K, P, seq, layer, head] keep-masks (for checks and the hook path; small calls only)."""
        ds = self.dataset if prompts is None else self.dataset.subset(prompts)
        return torch.stack([keep_mask(s, ds.positions, ds.n, self.seq, self.n_layers, self.n_heads)
                            for s in node_sets])

    def logit_diffs(self, node_sets: Sequence[NodeSet], progress: Progress | None = None,
                    should_stop: StopCheck | None = None) -> torch.Tensor:
        """Per-prompt values of the methodology's metric (by default the logit difference; the name
        stays for that), float64 [len(node_sets), N]. `metric_values` is the same.

        progress(done, total) counts finished (set, chunk) pairs, chunks being the prompts grouped by
        length (`self.chunks`); should_stop() is checked between them and raises
        Cancelled (what finished before is memoised, so asking again costs only the rest).
        """
        node_sets = list(node_sets)
        out = torch.empty(len(node_sets), self.dataset.n, dtype=torch.float64)
        keys = [(layer_keys(s, self.n_layers, self.n_heads)) for s in node_sets]
        if any(map(has_edges, keys)):
            self._check_edges()
        todo: dict = {}
        for i, k in enumerate(keys):
            if self._memo.get((self._memo_tag, k)) is None:
                todo.setdefault(k, []).append(i)
        total = len(todo)
        if total:
            self._compute(list(todo), progress, should_stop)
        for i, k in enumerate(keys):
            got = self._memo.get((self._memo_tag, k))
            out[i] = got if got is not None else self._recompute(k)
        return out

    metric_values = logit_diffs  # the metric's per-prompt values, whatever the metric

    def _check_edges(self):
        if self.blocks is None:
            raise NotImplementedError(
                "Edge-level circuits (removed edges) need the blocks engine (blocks.py: GPT-2 and the decoder "
                "families it describes); this model runs on hooks, which replace head outputs, not head inputs.")
        if not self.blocks.additive_heads:
            raise NotImplementedError(
                "Edge-level circuits need each head's output to enter the residual as z W_O; this model normalises "
                "the attention output before the residual (Gemma-2's post-attention norm), so one head's part of it "
                "is not defined on its own.")

    def pending(self, node_sets: Sequence[NodeSet]) -> int:
        """How many distinct sets of `node_sets` are not memoised yet (what `logit_diffs` would compute)."""
        keys = {layer_keys(s, self.n_layers, self.n_heads) for s in node_sets}
        return sum(self._memo.get((self._memo_tag, k)) is None for k in keys)

    def F(self, node_sets: Sequence[NodeSet], progress: Progress | None = None) -> list[float]:
        """Mean of the metric for each node set."""
        return self.logit_diffs(node_sets, progress).mean(1).tolist()

    @property
    def model_diffs(self) -> torch.Tensor:
        """Per-prompt logit differences of the intact model (computed once)."""
        return self.logit_diffs([NodeSet.model()])[0]

    @property
    def empty_diffs(self) -> torch.Tensor:
        """Per-prompt logit differences with every head ablated (computed once)."""
        return self.logit_diffs([NodeSet.empty()])[0]

    @property
    def clean_log_probs(self) -> torch.Tensor:
        """The intact model's next-token log-probabilities at END, float32 [N, vocab] (on the CPU;
        computed once, for KL)."""
        if "log_probs" not in self._clean:
            out = None
            for prompts in self.chunks:
                logits = self._intact_logits(prompts)
                out = out if out is not None else torch.empty(self.dataset.n, logits.shape[-1])
                out[prompts] = log_probs(logits).float().cpu()
            self._clean["log_probs"] = out
        return self._clean["log_probs"]

    def _intact_logits(self, prompts: torch.Tensor) -> torch.Tensor:
        """Every logit at END of the unablated model on some prompts: [P, vocab]. Through the blocks as the
        evaluator computes (the last layer at END only), else one plain bridge pass."""
        with torch.no_grad():
            if self.blocks is None:
                tokens = self.dataset.tokens[prompts].to(self.device)
                with self.model.lock:
                    logits = self.model.bridge(tokens)
                return logits[torch.arange(len(prompts)), self.end[prompts].to(logits.device)]
            chunk, b = _Chunk(self, -1, prompts), self.blocks
            x, last = b.embed(chunk.tokens), self.n_layers - 1
            for layer in range(last):
                x = b.layer(layer, x)
            z = b.attend_at(last, x, chunk.end, None)
            x_end = x[chunk.rows, chunk.end]
            x_end = b.after_attn(last, x_end, b.attn_out(last, z), b.parallel_mlp(last, x_end))
            return b.final_logits(x_end)

    def _readout(self, chunk: "_Chunk", x_end: torch.Tensor) -> torch.Tensor:
        """The metric per prompt of a chunk from the final residual at END [P, d_model] (differentiable)."""
        if self.metric is Metric.LOGIT_DIFF:  # two logits: one dot product
            return self.blocks.readout(x_end, chunk.direction, chunk.bias)
        return self._from_logits(self.blocks.final_logits(x_end), chunk.prompts)

    def _from_logits(self, logits: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        clean = self.clean_log_probs[prompts].to(logits.device) if self.metric is Metric.KL else None
        return from_logits(logits, self.dataset.answer_tokens[prompts].to(logits.device), self.metric, clean)

    @property
    def replicates(self) -> list["Evaluator"]:
        """One evaluator per bootstrap replicate of the reference set (methodology.ref_replicates of
        them): the same prompts and model, another draw of the ablation values. For intervals that
        include the reference set's sampling noise."""
        if self._replicates is None:
            import copy

            reps = []
            for b, (table, index) in enumerate(self._replicate_tables, 1):
                rep = copy.copy(self)  # the dataset and answer directions are shared, not copied
                rep._table, rep._table_index = table, index
                rep._memo_tag, rep._id, rep._replicates, rep._replicate_tables = b, object(), [], []
                rep._prefix_ids, rep._children, rep._prefix_lock = {}, {}, threading.Lock()
                # Replicates evaluate whole batches in one call (the prefix tree shares within it); kept out
                # of the model's residual cache so they never evict what makes the next edit fast.
                rep._residuals = BoundedCache(max_bytes=0)
                reps.append(rep)
            self._replicates = reps
        return self._replicates

    @property
    def linear_noise(self) -> bool:
        """Whether the replicates' values come to first order (the methodology's `ref_noise`, for mean
        ablation on the blocks engine) rather than from evaluating every set under each replicate."""
        return (self.methodology.ref_noise == RefNoise.LINEAR.value and self.blocks is not None
                and self.methodology.ablation in (Ablation.MEAN.value, Ablation.MEAN_POOLED.value))

    def replicate_diffs(self, node_sets: Sequence[NodeSet], progress: Progress | None = None,
                        should_stop: StopCheck | None = None) -> list[np.ndarray]:
        """Per-prompt logit differences of `node_sets` under each reference replicate: one float64
        [len(node_sets), N] array per replicate (none without replicates). For joint intervals.

        Exact (`ref_noise="exact"`, resample ablation, models without blocks): every set evaluated again
        under every replicate. Linear: a replicate changes each ablated head's mean by Δ_b (its table minus
        the full set's); a set's logit difference moves by about grad · Δ_b, the gradient taken once per set
        (one backward pass) with respect to the values at its ablated nodes. It is taken on a stratified
        sample of the prompts (`noise_prompts`), and each prompt moves by its group's mean move: a group
        shares its Δ_b, and the joint bootstrap reads only the replicates' spread (resampling.py).
        progress(done, total) counts sets; should_stop() is checked between sets (raises Cancelled)."""
        node_sets = list(node_sets)
        reps = self._replicate_tables
        if not reps or not node_sets:
            return []
        if not self.linear_noise:
            out = []
            for i, rep in enumerate(self.replicates):
                out.append(rep.logit_diffs(node_sets, should_stop=should_stop).numpy())
                if progress is not None:
                    progress(i + 1, len(reps))
            return out
        base = self.logit_diffs(node_sets, should_stop=should_stop)
        shifts = torch.empty(len(reps), len(node_sets), self.dataset.n, dtype=torch.float64)
        for i, s in enumerate(node_sets):
            key = ("linear", layer_keys(s, self.n_layers, self.n_heads))
            got = self._memo.get(key)
            if got is None:
                got = self._linear_shift(key[1])
                self._memo.put(key, got)
            shifts[:, i] = got
            if progress is not None:
                progress(i + 1, len(node_sets))
            if stop_requested(should_stop) and i + 1 < len(node_sets):
                raise Cancelled()
        return list((base[None] + shifts).numpy())

    @property
    def noise_prompts(self) -> torch.Tensor:
        """The prompts the linear reference noise is evaluated on: about REF_NOISE_PROMPTS, each group
        in proportion to its share of the prompts and at least one of each."""
        return self._noise()[0]

    def _noise(self):
        if self._noise_sample is None:
            groups, n = self.dataset.groups, self.dataset.n
            picks = []
            for g in groups.unique().tolist():
                members = torch.nonzero(groups == g).flatten()
                picks.append(members[: min(len(members), max(1, round(REF_NOISE_PROMPTS * len(members) / n)))])
            prompts = torch.sort(torch.cat(picks)).values
            chunk = _Chunk(self, -1, prompts)
            prefix = [self.blocks.embed(chunk.tokens)]  # the intact model's residual entering each layer
            with torch.no_grad():
                for layer in range(self.n_layers - 1):
                    x = prefix[-1]
                    prefix.append(self.blocks.layer(layer, x))
            self._noise_sample = (prompts, chunk, prefix)
        return self._noise_sample

    def _linear_shift(self, key: tuple) -> torch.Tensor:
        """[B, N]: each prompt's first-order move under each replicate, its group's mean over the sample."""
        prompts, chunk, prefix = self._noise()
        B, n, b, L = len(self._replicate_tables), self.dataset.n, self.blocks, self.n_layers
        senders = key_senders(key)
        first = next((l for l, lk in enumerate(key[:L]) if any(st != KEPT for st in lk)), None)
        if senders:  # a removed edge's sender reads the values where it is not kept, even in an intact layer
            first = min(s[0] for s in senders) if first is None else min(first, min(s[0] for s in senders))
        if first is None:  # the intact model ablates nothing: no reference noise
            return torch.zeros(B, n, dtype=torch.float64)
        leaves = []  # (layer, perturbation of the values, at END only)
        deltas = {}  # removed edges' senders: z − (values + eps) where kept
        with torch.enable_grad():
            x = prefix[first]
            for layer in range(first, L):
                lkey, at_end = key[layer], layer == L - 1
                need = sorted(h for l, h in senders if l == layer)
                active = torch.tensor([h for h in range(self.n_heads) if lkey[h] != ABLATED], dtype=torch.long,
                                      device=self.device)
                x_in = x
                if at_end:
                    z = b.attend_at(layer, x, chunk.end, active) if len(active) else None
                    x = x[chunk.rows, chunk.end]
                else:
                    z = b.attend(layer, x, active) if len(active) else None
                if any(map(_edged, lkey)):
                    z = self._edge_z(chunk, layer, x_in, lkey, active, z, deltas, at_end)
                if all(st == KEPT for st in lkey) and not need:
                    zeff = z
                else:
                    values = chunk.row_values(layer)[chunk.row_of]
                    values = values[chunk.rows, chunk.end] if at_end else values
                    eps = torch.zeros_like(values, requires_grad=True)
                    leaves.append((layer, eps, at_end))
                    zeff = values + eps
                    if z is not None:
                        full = torch.zeros_like(values).index_copy(-2, active, z)
                        zeff = torch.where(chunk.keep(list(lkey), at_end)[..., None], full, zeff)
                    if need:
                        deltas.update(self._sender_deltas(chunk, layer, lkey, z, active, need, at_end, values + eps))
                x = b.after_attn(layer, x, b.attn_out(layer, zeff))
            if len(key) > L:  # removed edges into the logits
                at_end = {s: (d if s[0] == L - 1 else d[chunk.rows, chunk.end]) for s, d in deltas.items()}
                x = x - self._removed_sum(key[L][1], at_end)
            self._readout(chunk, x).sum().backward()  # prompts are independent: per-prompt grads
        moves = torch.zeros(B, len(prompts), dtype=torch.float64)
        for layer, eps, at_end in leaves:
            grad = eps.grad
            full = self._table[chunk.table_rows, :, layer]
            for r, (table, _) in enumerate(self._replicate_tables):
                delta = (table[chunk.table_rows, :, layer] - full).to(self.device)[chunk.row_of]
                delta = delta[chunk.rows, chunk.end] if at_end else delta
                moves[r] += (grad * delta).flatten(1).sum(1).double().cpu()
        # each prompt moves by the mean move of its group's sampled prompts
        groups = self.dataset.groups
        sample_groups = groups[prompts]
        out = torch.empty(B, n, dtype=torch.float64)
        for g in sample_groups.unique().tolist():
            out[:, groups == g] = moves[:, sample_groups == g].mean(1, keepdim=True)
        return out

    def variant(self, methodology: Methodology) -> "Evaluator":
        """This evaluator under a methodology with the same ablation values (another position scope
        or bootstrap count): tables, dataset and memoised results shared, nothing recomputed."""
        if values_key(methodology) != values_key(self.methodology):
            raise ValueError("A variant must keep the ablation values: only "
                             "positions and bootstrap may differ.")
        import copy

        other = copy.copy(self)
        other.methodology = methodology
        other._id, other._prefix_ids, other._children, other._prefix_lock = object(), {}, {}, threading.Lock()
        other._replicates = None  # theirs point back at this evaluator's methodology
        return other

    def held_tensors(self) -> list[torch.Tensor]:
        """The tensors this evaluator keeps (tables, dataset, answer directions), not its memo."""
        ds = self.dataset
        out = [t for tb in self._tables for t in tb]
        out += [ds.tokens, ds.reference_tokens, ds.lengths, ds.answer_tokens, ds.groups, *ds.positions.values()]
        out += [t for t in (ds.reference_groups, ds.reference_lengths, self._direction, self._bias) if t is not None]
        out += list(self._clean.values())
        return out

    def memory_bytes(self) -> int:
        """Bytes held: tables (replicates' included), dataset, memo; shared storage counted once."""
        return storage_bytes(self.held_tensors()) + self._memo.bytes

    def clear_cache(self):
        self._id = object()
        self._memo.clear()

    # --- the prefix tree ---------------------------------------------------------------------------
    def _compute(self, keys: list, progress, should_stop):
        """Every chunk of every key. A key's chunks are memoised one by one until all are done, so a
        stop keeps each finished (set, chunk) and asking again computes only the rest."""
        n, chunks, tag = self.dataset.n, self.chunks, self._memo_tag
        todo = [[k for k in keys if self._memo.get((tag, k, ci)) is None] for ci in range(len(chunks))]
        done, total = [0], sum(map(len, todo))

        def finished(key, prompts, diffs):
            self._memo.put((tag, key, chunks_index[0]), diffs.double().cpu())
            done[0] += 1
            if progress is not None:
                progress(done[0], total)
            if stop_requested(should_stop) and done[0] < total:
                raise Cancelled()

        chunks_index = [0]
        with torch.no_grad():
            for ci, prompts in enumerate(chunks):
                if not todo[ci]:
                    continue
                chunks_index[0] = ci
                if self.blocks is None:
                    self._hooked(prompts, todo[ci], finished)
                    continue
                chunk = _Chunk(self, ci, prompts)
                self._visit(chunk, 0, self.blocks.embed(chunk.tokens), 0, todo[ci], finished)
        for k in keys:  # every chunk done: one entry for the set
            parts = [self._memo.get((tag, k, ci)) for ci in range(len(chunks))]
            if all(p is not None for p in parts):
                result = torch.empty(n, dtype=torch.float64)
                for prompts, part in zip(chunks, parts):
                    result[prompts] = part
                self._memo.put((tag, k), result)
                for ci in range(len(chunks)):
                    self._memo.pop((tag, k, ci))

    def _recompute(self, key):  # evicted between compute and read (a tiny memo): compute again
        self._compute([key], None, None)
        return self._memo.get((self._memo_tag, key))

    def _prefix(self, parent: int, layer_key) -> int:
        with self._prefix_lock:
            if len(self._prefix_ids) > MAX_PREFIXES:  # ids are cheap, but not free: start over
                self._prefix_ids.clear()
                self._children.clear()
                self._id = object()  # old residual entries can no longer be hit; the LRU drops them
            pid = self._prefix_ids.get((parent, layer_key))
            if pid is None:
                pid = self._prefix_ids[(parent, layer_key)] = len(self._prefix_ids) + 1
                self._children.setdefault(parent, []).append(layer_key)
            return pid

    def _base(self, chunk: _Chunk, layer: int, pid: int, lkey, inherited):
        """A cached residual leaving `layer` that equals this prefix's (entering `pid`, then `lkey`) at every
        position before some `start`: (base residual, its prefix id, start), the latest start found, or None.

        Causal attention: a set that keeps or ablates other nodes only from position p on computes the
        same residuals before p. Candidates are this prefix's siblings (the same input, another layer key)
        and, when the input itself equals a base's before `start` (`inherited`), that base's children."""
        best = None
        sources = [(pid, chunk.seq)] + ([inherited] if inherited else [])
        for parent, start in sources:
            for other in self._children.get(parent, [])[-RECENT_SIBLINGS:]:
                if parent == pid and other == lkey:
                    continue
                first = _first_difference(chunk, lkey, other, start)
                if first == 0 or (best is not None and first <= best[2]):
                    continue
                oid = self._prefix_ids.get((parent, other))
                x = self._residuals.get((self._id, chunk.index, oid)) if oid is not None else None
                if x is not None:
                    best = (x, oid, first)
        return best

    def _visit(self, chunk: _Chunk, layer: int, x: torch.Tensor, pid: int, keys: list, finished, inherited=None,
               senders=None):
        """Depth first: x is the residual entering `layer`, shared by every set in `keys`; `inherited`:
        (prefix id, start), a cached prefix whose residual entering `layer` equals x before `start`;
        `senders`: (layer, head) -> z minus ablation value where kept, of the heads below `layer` that
        the sets' removed edges send from (the same for every set of this prefix)."""
        senders = senders or {}
        groups: dict = {}
        for k in keys:
            groups.setdefault(k[layer], []).append(k)
        if layer == self.n_layers - 1:
            return self._last_layer(chunk, x, groups, finished, senders)
        union = self._active_heads(groups)
        z = mlp_out = None
        for lkey, members in groups.items():
            cid = self._prefix(pid, lkey)
            x_next, passed, zl = self._residuals.get((self._id, chunk.index, cid)), None, None
            need = sorted({s[1] for k in members for s in key_senders(k) if s[0] == layer})
            edged = any(map(_edged, lkey))
            if x_next is None:
                base = None if edged or need else self._base(chunk, layer, pid, lkey, inherited)
                if base is not None:  # only the positions from `start` on are computed
                    x_base, bid, start = base
                    passed = (bid, start)
                    x_next = x_base.clone()
                    if start < chunk.seq:
                        zs = (None if not len(union) else z[:, start:] if z is not None
                              else self.blocks.attend_from(layer, x, start, union))
                        xs = x[:, start:]
                        part = mlp_out[:, start:] if mlp_out is not None else self.blocks.parallel_mlp(layer, xs)
                        x_next[:, start:] = self.blocks.after_attn(
                            layer, xs, self._attn_out(chunk, layer, lkey, zs, union, False, start), part)
                else:
                    if z is None and len(union):
                        z = self.blocks.attend(layer, x, union)
                    zl = self._edge_z(chunk, layer, x, lkey, union, z, senders) if edged else z
                    if mlp_out is None:  # parallel attention + MLP: the MLP's part is the siblings' too
                        mlp_out = self.blocks.parallel_mlp(layer, x)
                    x_next = self.blocks.after_attn(layer, x, self._attn_out(chunk, layer, lkey, zl, union, False),
                                                    mlp_out)
                self._residuals.put((self._id, chunk.index, cid), x_next)
            child = senders
            if need:  # this layer's senders: their outputs as computed in this prefix
                if zl is None:
                    if z is None:
                        z = self.blocks.attend(layer, x, union)
                    zl = self._edge_z(chunk, layer, x, lkey, union, z, senders) if edged else z
                child = {**senders, **self._sender_deltas(chunk, layer, lkey, zl, union, need, False)}
            self._visit(chunk, layer + 1, x_next, cid, members, finished, passed, child)

    def _last_layer(self, chunk: _Chunk, x, groups: dict, finished, senders=None):
        layer = self.n_layers - 1
        union = self._active_heads(groups)
        z = self.blocks.attend_at(layer, x, chunk.end, union) if len(union) else None
        x_end = x[chunk.rows, chunk.end]
        mlp_out = self.blocks.parallel_mlp(layer, x_end)
        for lkey, members in groups.items():
            zl = self._edge_z(chunk, layer, x, lkey, union, z, senders, True) if any(map(_edged, lkey)) else z
            out = self.blocks.after_attn(layer, x_end, self._attn_out(chunk, layer, lkey, zl, union, True), mlp_out)
            by_logits: dict = {}
            for k in members:
                by_logits.setdefault(k[self.n_layers][1] if len(k) > self.n_layers else None, []).append(k)
            for removed, ks in by_logits.items():
                final = out
                if removed is not None:
                    last = sorted(h for l, h in removed if l == layer)
                    at_end = {**{s: d[chunk.rows, chunk.end] for s, d in senders.items() if s[0] < layer},
                              **(self._sender_deltas(chunk, layer, lkey, zl, union, last, True) if last else {})}
                    final = out - self._removed_sum(removed, at_end)
                diffs = self._zeros(chunk) if self._intact_kl(lkey, ks) else self._readout(chunk, final)
                for k in ks:
                    finished(k, chunk.prompts, diffs)

    # --- removed edges ---------------------------------------------------------------------------
    def _removed_sum(self, senders, deltas: dict) -> torch.Tensor:
        """Σ over `senders` of their (output − ablation value) in the residual: their deltas through W_O."""
        total = 0
        for (l, h) in sorted(senders):
            head = torch.tensor([h], device=self.device)
            total = total + self.blocks.heads_out(l, deltas[(l, h)][..., None, :], head)
        return total

    def _edge_z(self, chunk: _Chunk, layer: int, x: torch.Tensor, lkey: tuple, union: torch.Tensor, z, senders: dict,
                at_end: bool = False, end=None):
        """The union heads' z, with each receiver of removed edges recomputed from its corrected inputs:
        for input c, the residual x minus its removed senders' (output − ablation value)."""
        z = z.clone()
        alike: dict = {}  # receivers with the same removed edges read the same inputs (a class's heads)
        for i, h in enumerate(union.tolist()):
            if _edged(lkey[h]):
                alike.setdefault(lkey[h][2], []).append((i, h))
        at = (chunk.end if end is None else end) if at_end else None
        for removed, members in alike.items():
            inputs = []
            for c in ("q", "k", "v"):
                from_ = [s for s, x_ in removed if x_ == c]
                inputs.append(x - self._removed_sum(from_, senders) if from_ else x)
            heads = torch.tensor([h for _, h in members], device=self.device)
            z[..., [i for i, _ in members], :] = self.blocks.attend_inputs(layer, inputs, heads, at)
        return z

    def _sender_deltas(self, chunk: _Chunk, layer: int, lkey: tuple, z, union: torch.Tensor, heads: list,
                       at_end: bool, values=None) -> dict:
        """(layer, head) -> z − ablation value where the head is kept, 0 elsewhere: [P, S, d_head] (or
        [P, d_head] at END). values: this layer's values of every head (default: the chunk's)."""
        cols = [union.tolist().index(h) for h in heads]
        idx = torch.tensor(heads, dtype=torch.long, device=self.device)
        v = chunk.head_values(layer, idx, at_end) if values is None else values[..., idx, :]
        keep = chunk.keep([lkey[h] for h in heads], at_end)[..., None]
        d = torch.where(keep, z[..., cols, :] - v, 0.0)
        return {(layer, h): d[..., j, :] for j, h in enumerate(heads)}

    def _intact_kl(self, lkey, members) -> bool:
        """KL of the intact model: 0 by definition (P_S is P_model), not a float error away from it."""
        return (self.metric is Metric.KL and all(st == KEPT for st in lkey)
                and all(st == KEPT for k in members for lk in k for st in lk))

    def _zeros(self, chunk: "_Chunk") -> torch.Tensor:
        return torch.zeros(len(chunk.prompts), dtype=torch.float64)

    def _active_heads(self, groups: dict) -> torch.Tensor:
        """Heads not ablated everywhere in at least one group: only they need attention."""
        active = [h for h in range(self.n_heads) if any(g[h] != ABLATED for g in groups)]
        return torch.tensor(active, dtype=torch.long, device=self.device)

    def _attn_out(self, chunk: _Chunk, layer: int, lkey: tuple, z, union: torch.Tensor, at_end: bool,
                  start: int = 0):
        """This layer's attention output for one layer key, from the union heads' z (at the positions
        from `start` on, or at END)."""
        if all(st == KEPT for st in lkey):  # nothing ablated: the plain output
            return self.blocks.attn_out(layer, z)
        base = chunk.ablated_out(layer, at_end)
        base = base if at_end else base[:, start:]
        cols = [i for i, h in enumerate(union.tolist()) if lkey[h] != ABLATED]
        if not cols:
            return base
        heads = union[cols]
        values = chunk.head_values(layer, heads, at_end)
        keep = chunk.keep([lkey[h] for h in heads.tolist()], at_end)[..., None]
        if not at_end:
            values, keep = values[:, start:], keep[:, start:]
        delta = torch.where(keep, z[..., cols, :] - values, 0.0)
        return base + self.blocks.heads_out(layer, delta, heads)

    # --- the hook path (architectures blocks.py does not describe) ------------------------------------
    def _hooked(self, prompts: torch.Tensor, keys: list, finished):
        """One hooked forward pass per set with full logits: slow, but works for any bridge model."""
        tokens = self.dataset.tokens[prompts].to(self.device)
        values = self._table[self._table_index[prompts]]
        ds = self.dataset.subset(prompts)
        rows = torch.arange(len(prompts))
        for key in keys:
            hooks = []
            for layer in range(self.n_layers):
                if all(st == KEPT for st in key[layer]):
                    continue
                keep = layer_mask(key[layer], ds.positions, len(prompts), self.seq)
                hooks.append((hook_z(layer),
                              lambda z, hook, keep=keep.to(self.device)[..., None], v=values[:, :, layer].to(self.device):
                              torch.where(keep, z, v.to(z.dtype))))
            if self.metric is Metric.KL and not hooks:  # the intact model: KL 0 by definition
                finished(key, prompts, torch.zeros(len(prompts), dtype=torch.float64))
                continue
            with self.model.lock:
                logits = self.model.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
            end = logits[rows, self.end[prompts]].cpu()
            finished(key, prompts, self._from_logits(end, prompts))


def _keeps(state) -> tuple[bool, frozenset]:
    """A head's layer-key state as (kept except at roles?, roles): KEPT is (True, {}), ABLATED (False, {})."""
    if state == KEPT:
        return True, frozenset()
    if state == ABLATED:
        return False, frozenset()
    flag, roles = state
    return flag == "a", roles


def _first_difference(chunk, a: tuple, b: tuple, limit: int) -> int:
    """The first position (over the chunk's prompts) where layer keys a and b keep different nodes, at
    most `limit`; a lower bound where roles share positions, which only costs recomputation."""
    first = limit
    for sa, sb in zip(a, b):
        if sa == sb:
            continue
        if _edged(sa) or _edged(sb):  # another input to a head: its output differs wherever it attends
            return 0
        (ea, ra), (eb, rb) = _keeps(sa), _keeps(sb)
        if ea != eb:  # one keeps all but some roles, the other only some: they differ almost everywhere
            return 0
        for role in ra ^ rb:
            first = min(first, int(chunk.positions[role].min()))
            if first == 0:
                return 0
    return first


def _length_chunks(end: torch.Tensor, max_rows: int, waste: float = 0.1) -> list[torch.Tensor]:
    """Prompts in chunks of at most `max_rows`, sorted by END and cut so that padding past a chunk's
    longest prompt stays under `waste` of what the chunk computes."""
    order = torch.argsort(end, stable=True).tolist()
    lengths = (end + 1).tolist()
    chunks, current, summed = [], [], 0
    for i in order:
        longest = lengths[i]  # sorted: the newest prompt is the longest
        count = len(current) + 1
        if current and (count > max_rows or longest * count - (summed + longest) > waste * longest * count):
            chunks.append(current)
            current, summed = [], 0
        current.append(i)
        summed += lengths[i]
    chunks.append(current)
    return [torch.tensor(sorted(c)) for c in chunks if c]


def layer_mask(states, positions: dict, n: int, seq: int) -> torch.Tensor:
    """Bool [n, seq, head] keep-mask of head states (a layer key, or some of its heads)."""
    device = next(iter(positions.values())).device
    rows = torch.arange(n, device=device)
    cols = []
    for st in map(node_state, states):
        if st in (KEPT, ABLATED):
            cols.append(torch.full((n, seq), st == KEPT, device=device))
            continue
        kind, roles = st
        hit = torch.zeros(n, seq, dtype=torch.bool, device=device)
        for role in roles:
            hit[rows, positions[role]] = True
        cols.append(hit if kind == "k" else ~hit)
    return torch.stack(cols, -1)


def build_evaluator(model, methodology: Methodology | None = None, max_rows: int | None = None) -> Evaluator:
    """Dataset for the methodology's task, N and seed on this model's tokenizer, then its evaluator."""
    from .tasks import build_dataset

    methodology = methodology or Methodology()
    dataset = build_dataset(methodology.task, model.tokenizer, **methodology.dataset_kwargs())
    return Evaluator(model, dataset, methodology, max_rows=max_rows)


class EvaluatorCache:
    """A model's evaluators by methodology: least recently used out first, bounded in entries and in
    bytes (what they hold: tables, datasets, memos; storage shared between them counted once; the
    newest one is kept even when it alone is over). A methodology with the same ablation values as a
    cached one (another position scope or bootstrap count) gets a variant of it: no new dataset, no
    new tables, its results shared. Thread-safe; an evaluator is built once however many ask for it.
    """

    def __init__(self, model, max_entries: int = 16, max_bytes: int = 1536 << 20):
        self._model = weakref.ref(model)  # the model holds this cache
        self._d = BoundedCache(max_entries, max_bytes, measure=_evaluators_bytes, keep_newest=True)
        self._lock = threading.Lock()
        self._builds: dict = {}

    @property
    def max_entries(self) -> int:
        return self._d.max_entries

    @property
    def max_bytes(self) -> int:
        return self._d.max_bytes

    def __contains__(self, methodology: Methodology) -> bool:
        return methodology in self._d

    def __len__(self) -> int:
        return len(self._d)

    def get(self, methodology: Methodology) -> Evaluator:
        with self._lock:
            ev = self._d.get(methodology)
            if ev is not None:
                self._d.trim()  # memos grow: measured now
                return ev
            build_lock = self._builds.setdefault(values_key(methodology), threading.Lock())
        with build_lock:
            with self._lock:
                ev = self._d.get(methodology)
                sibling = next((e for e in self._d.values() if values_key(e.methodology) == values_key(methodology)), None)
            if ev is None:
                ev = sibling.variant(methodology) if sibling is not None else build_evaluator(self._model(), methodology)
            with self._lock:
                self._d.put(methodology, ev)
                self._builds.pop(values_key(methodology), None)
        return ev

    @property
    def bytes(self) -> int:
        return self._d.bytes

    def clear(self):
        self._d.clear()


def _evaluators_bytes(evaluators) -> int:
    """What evaluators hold (tables, datasets, memos), storage shared between them counted once."""
    evaluators = list(evaluators)
    memos = {id(e._memo): e._memo.bytes for e in evaluators}
    return storage_bytes(t for e in evaluators for t in e.held_tensors()) + sum(memos.values())
