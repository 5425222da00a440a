"""The evidence for each class of a circuit: what its heads attend to, what they copy, which roles they
score on, and how much of the task flows along each edge into the class.

Per class (`ClassEvidence`):
- Attention between the task's named positions: the probability from each role's position (query) to
  each role's position (key), per head, on a few chosen prompts and as a mean over all prompts with a 95%
  bootstrap interval over prompts. A key after its query is masked by causal attention: 0.
- Copy scores (Wang et al. 2022, §3.3 and Fig. 4; ARENA 1.4.1 `get_copying_scores`): for each name
  token t (the task's answer tokens: for IOI the names), the residual after the first MLP,
  x = e_t + MLP0(e_t) (the token embedding through layer 0's MLP, attention left out, no position); then
  the head's OV circuit, o = ±(LN1(x) W_V + b_V) W_O (the head's own input norm and value bias, as the
  paper's code `check_copy_circuit` applies them; b_O is the layer's, not the head's); then the final
  norm and the unembedding, logits = W_U LN_final(o) + b_U. The copy score is the share of names t among
  the top-5 logits of +OV; the negative copy score the same with −OV (the sign flipped before the final
  norm, where b_U makes it matter). 95% Wilson interval over names. The paper: name movers > 95% (an
  average head < 20%); negative name movers' negative copy score 98%. Computed for every class: cheap,
  and a class's name is a claim, not a proof.
- Previous-token, duplicate-token and induction scores on repeated random tokens (heads.py's definitions),
  with a 95% bootstrap interval over the random sequences. Shown for every class and every task: they
  are properties of the heads, not of the task's prompts.
- Each incoming edge's path-patching effect (Wang et al.'s path patching, patching.py's normalisation):
  the share of F(clean) − F(corrupted) lost when the sender's heads' outputs, all at once (a joint patch,
  every other head frozen to its clean output, MLPs recomputed), reach only the receiver class's chosen
  input or the logits: its queries at its position (where the class is kept), its keys or values at every
  position (a head kept at END reads the keys and values of the positions it attends to, not END's). 95% bootstrap interval over prompt pairs. The joint
  patch runs through hooked passes (patching.py's fast path patches one sender head at a time); for a
  one-head sender it gives patching.path_patching's number (tests/core/test_evidence.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .circuit import ALL_POSITIONS, LOGITS, OUT, Circuit, Edge, Head, head_name, parse_head
from .hooks import hook_pattern
from .intervals import Interval
from .metrics import Metric

COPY_K = 5  # the paper's top-5
DEFAULT_PROMPTS = (0, 1, 2)  # prompts whose attention is shown one by one
EVIDENCE_PAIRS = 20  # prompt pairs path-patched per edge by default (hooked passes: a few forwards per edge)
ROLE_SCORES = ("previous token", "duplicate token", "induction")


# --- typed results ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionCell:
    """Attention probability of one head from the query role's position to the key role's position."""
    head: str
    query: str
    key: str
    mean: float  # over every prompt
    interval: Interval
    chosen: tuple[float, ...]  # on each chosen prompt, in order

    def to_dict(self) -> dict:
        return {"head": self.head, "query": self.query, "key": self.key, "mean": self.mean,
                "interval": self.interval.to_list(), "chosen": list(self.chosen)}

    @classmethod
    def from_dict(cls, d: dict) -> "AttentionCell":
        return cls(d["head"], d["query"], d["key"], float(d["mean"]), Interval.of(d["interval"]),
                   tuple(float(x) for x in d["chosen"]))


@dataclass(frozen=True)
class CopyScore:
    """Share of name tokens a head's OV circuit (sign +1) or its negative (sign −1) puts in the top k."""
    head: str
    sign: int
    copied: int
    n_tokens: int
    interval: Interval  # Wilson, over tokens
    k: int = COPY_K

    @property
    def score(self) -> float:
        return self.copied / self.n_tokens if self.n_tokens else float("nan")

    @property
    def label(self) -> str:
        return "copy score" if self.sign > 0 else "negative copy score"

    def to_dict(self) -> dict:
        return {"head": self.head, "sign": self.sign, "copied": self.copied, "n_tokens": self.n_tokens,
                "score": self.score, "interval": self.interval.to_list(), "k": self.k}

    @classmethod
    def from_dict(cls, d: dict) -> "CopyScore":
        return cls(d["head"], int(d["sign"]), int(d["copied"]), int(d["n_tokens"]), Interval.of(d["interval"]),
                   int(d.get("k", COPY_K)))


@dataclass(frozen=True)
class RoleScore:
    """A head's previous-token, duplicate-token or induction score on repeated random tokens."""
    head: str
    metric: str
    score: float
    interval: Interval  # bootstrap over the random sequences

    def to_dict(self) -> dict:
        return {"head": self.head, "metric": self.metric, "score": self.score, "interval": self.interval.to_list()}

    @classmethod
    def from_dict(cls, d: dict) -> "RoleScore":
        return cls(d["head"], d["metric"], float(d["score"]), Interval.of(d["interval"]))


@dataclass(frozen=True)
class EdgeEffect:
    """The share of F(clean) − F(corrupted) that flows along one edge (see the module doc)."""
    edge: Edge
    effect: float
    interval: Interval  # bootstrap over prompt pairs
    senders: tuple[str, ...]  # the sender heads patched together
    receivers: tuple[str, ...]  # the receiving heads ("logits": none)

    def to_dict(self) -> dict:
        return {"edge": self.edge.to_dict() | {"input": self.edge.input}, "effect": self.effect,
                "interval": self.interval.to_list(), "senders": list(self.senders), "receivers": list(self.receivers)}

    @classmethod
    def from_dict(cls, d: dict) -> "EdgeEffect":
        e = d["edge"]
        return cls(Edge(e["from"], e["to"], e.get("input", OUT)), float(d["effect"]), Interval.of(d["interval"]),
                   tuple(d["senders"]), tuple(d["receivers"]))


@dataclass(frozen=True)
class EdgeEffects:
    """Every edge's effect on one set of prompt pairs, with what they are measured against."""
    edges: tuple[EdgeEffect, ...]
    F_clean: float
    F_corrupted: float
    n: int
    method: str = "joint path patching (sender heads together), hooked passes"
    interval_method: str = "bootstrap over prompt pairs"

    def of(self, edge: Edge) -> EdgeEffect | None:
        return next((e for e in self.edges if e.edge == edge), None)

    def to_dict(self) -> dict:
        return {"edges": [e.to_dict() for e in self.edges], "F_clean": self.F_clean, "F_corrupted": self.F_corrupted,
                "n": self.n, "method": self.method, "interval_method": self.interval_method}

    @classmethod
    def from_dict(cls, d: dict) -> "EdgeEffects":
        return cls(tuple(EdgeEffect.from_dict(e) for e in d["edges"]), float(d["F_clean"]), float(d["F_corrupted"]),
                   int(d["n"]), d.get("method", cls.method), d.get("interval_method", cls.interval_method))


@dataclass(frozen=True)
class ClassEvidence:
    name: str
    position: str
    heads: tuple[str, ...]
    attention: tuple[AttentionCell, ...]
    copy: tuple[CopyScore, ...]
    roles: tuple[RoleScore, ...]
    incoming: tuple[EdgeEffect, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "position": self.position, "heads": list(self.heads),
                "attention": [a.to_dict() for a in self.attention], "copy": [c.to_dict() for c in self.copy],
                "roles": [r.to_dict() for r in self.roles], "incoming": [e.to_dict() for e in self.incoming]}

    @classmethod
    def from_dict(cls, d: dict) -> "ClassEvidence":
        return cls(d["name"], d["position"], tuple(d["heads"]),
                   tuple(AttentionCell.from_dict(a) for a in d["attention"]),
                   tuple(CopyScore.from_dict(c) for c in d["copy"]), tuple(RoleScore.from_dict(r) for r in d["roles"]),
                   tuple(EdgeEffect.from_dict(e) for e in d["incoming"]))


@dataclass(frozen=True)
class CircuitEvidence:
    """Evidence for every class of a circuit (the run record's results.evidence)."""
    circuit: str
    classes: tuple[ClassEvidence, ...]
    edges: EdgeEffects | None
    prompts: tuple[int, ...]  # the chosen prompts' indices
    prompt_texts: tuple[str, ...]
    n_prompts: int  # prompts behind the attention means
    n_tokens: int  # name tokens behind the copy scores
    n_sequences: int  # random sequences behind the role scores
    settings: dict = field(default_factory=dict)

    def of(self, name: str) -> ClassEvidence | None:
        return next((c for c in self.classes if c.name == name), None)

    def to_dict(self) -> dict:
        return {"circuit": self.circuit, "classes": [c.to_dict() for c in self.classes],
                "edges": self.edges.to_dict() if self.edges is not None else None, "prompts": list(self.prompts),
                "prompt_texts": list(self.prompt_texts), "n_prompts": self.n_prompts, "n_tokens": self.n_tokens,
                "n_sequences": self.n_sequences, "settings": self.settings}

    @classmethod
    def from_dict(cls, d: dict) -> "CircuitEvidence":
        return cls(d["circuit"], tuple(ClassEvidence.from_dict(c) for c in d["classes"]),
                   EdgeEffects.from_dict(d["edges"]) if d.get("edges") else None, tuple(d["prompts"]),
                   tuple(d["prompt_texts"]), int(d["n_prompts"]), int(d["n_tokens"]), int(d["n_sequences"]),
                   dict(d.get("settings", {})))


# --- intervals ---------------------------------------------------------------------------------------------
def wilson(successes: int, n: int, z: float = 1.959964) -> Interval:
    """95% Wilson score interval for a proportion (sound at 0 and 1, where the normal one collapses)."""
    if n == 0:
        return Interval.missing()
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(max(0.0, centre - half), min(1.0, centre + half))


def _bootstrap_means(values: torch.Tensor, draws: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """95% percentile intervals of the mean over the last axis of values [..., n] (resampling that axis)."""
    from .resampling import prompt_counts_torch

    n = values.shape[-1]
    W = prompt_counts_torch(n, draws, seed) / n  # [B, n]
    boots = values.double() @ W.T  # [..., B]
    return torch.quantile(boots, 0.025, dim=-1), torch.quantile(boots, 0.975, dim=-1)


# --- attention between named positions -------------------------------------------------------------------
def attention_evidence(model, dataset, heads: list[Head], prompts=DEFAULT_PROMPTS, bootstrap: int = 1000,
                       seed: int = 0, batch_size: int = 64) -> dict[Head, list[AttentionCell]]:
    """Per head, the attention probability from each role's position to each role's position (see the
    module doc), read from the model's own `hook_pattern`."""
    from .heads import _check_hooks

    roles = [r for r in dataset.positions]
    layers = sorted({l for l, _ in heads})
    names = {l: hook_pattern(l) for l in layers}
    _check_hooks(model, list(names.values()))
    R, n = len(roles), dataset.n
    values = torch.zeros(len(heads), R, R, n, dtype=torch.float64)  # [head, query, key, prompt]
    pos = torch.stack([dataset.positions[r] for r in roles])  # [R, n]
    with model.lock, torch.no_grad():
        for start in range(0, n, batch_size):
            rows = torch.arange(start, min(n, start + batch_size))
            store = {}
            grab = lambda p, hook: store.__setitem__(hook.name, p.detach().double().cpu())
            model.bridge.run_with_hooks(dataset.tokens[rows].to(model.device),
                                        fwd_hooks=[(name, grab) for name in names.values()])
            b = torch.arange(len(rows))
            for i, (l, h) in enumerate(heads):
                p = store[names[l]][:, h]  # [b, q, k]
                for a in range(R):
                    values[i, a, :, rows] = p[b[None, :], pos[a, rows][None, :], pos[:, rows]]
    chosen = [i for i in prompts if 0 <= i < n]
    lo, hi = _bootstrap_means(values, bootstrap, seed)
    mean = values.mean(-1)
    return {head: [AttentionCell(head_name(head), roles[a], roles[c], float(mean[i, a, c]),
                                 Interval(float(lo[i, a, c]), float(hi[i, a, c])),
                                 tuple(float(values[i, a, c, j]) for j in chosen))
                   for a in range(R) for c in range(R)]
            for i, head in enumerate(heads)}


# --- copy scores -------------------------------------------------------------------------------------------
def name_tokens(dataset) -> list[int]:
    """The tokens a copy score checks: every distinct answer token (IOI: the names; correct and wrong)."""
    return sorted(set(dataset.answer_tokens.flatten().tolist()))


def _values(blocks, layer: int, x: torch.Tensor, head: int) -> torch.Tensor:
    """The head's value vector (its input norm, W_V and b_V) of residuals x [n, d_model]: [n, d_head]."""
    from .blocks import GPT2Blocks

    idx = torch.tensor([head], device=x.device)
    if isinstance(blocks, GPT2Blocks):
        return blocks.qkv(layer, x, idx)[:, 2, 0]  # (q, k, v)
    return blocks._project(layer, blocks.layers[layer].ln1(x), idx)[:, 1, 0]  # DecoderBlocks: (k, v)


def copy_scores(model, heads: list[Head], tokens: list[int], k: int = COPY_K) -> dict[Head, tuple[CopyScore, CopyScore]]:
    """(copy score, negative copy score) per head: see the module doc for the procedure."""
    b = model.blocks
    if b is None:
        raise ValueError("copy scores read the weights through blocks.py, which does not describe this model")
    with torch.no_grad():
        t = torch.tensor(tokens, device=model.device)
        e = b.embed(t[:, None])[:, 0]
        if getattr(b, "W_pos", None) is not None:  # the token's embedding alone, as in the paper
            e = e - b.W_pos[0]
        x = b.after_attn(0, e, torch.zeros_like(e))  # e + MLP0(e): layer 0 without its attention
        out = {}
        for l, h in heads:
            o = b.heads_out(l, _values(b, l, x, h)[:, None, :], torch.tensor([h], device=x.device))
            pair = []
            for sign in (1, -1):
                top = b.final_logits(sign * o).topk(k, dim=-1).indices  # [n, k]
                copied = int((top == t[:, None]).any(-1).sum())
                pair.append(CopyScore(head_name((l, h)), sign, copied, len(tokens), wilson(copied, len(tokens)), k))
            out[(l, h)] = tuple(pair)
    return out


# --- role scores on repeated random tokens ----------------------------------------------------------------
def role_scores(model, heads: list[Head], n_seqs: int = 20, seed: int = 0, bootstrap: int = 1000
                ) -> dict[Head, list[RoleScore]]:
    """heads.py's previous-token, duplicate-token and induction scores per random sequence, then the mean
    and a bootstrap interval over sequences (the means equal heads.repeated_token_scores')."""
    from .heads import _check_hooks, repeated_tokens, role_diagonals

    tokens = repeated_tokens(model, n_seqs, None, seed)
    first = 1 if model.tokenizer.bos_token_id is not None else 0
    T = (tokens.shape[1] - first) // 2
    layers = sorted({l for l, _ in heads})
    names = {l: hook_pattern(l) for l in layers}
    _check_hooks(model, list(names.values()))
    store = {}
    with model.lock, torch.no_grad():
        model.bridge.run_with_hooks(tokens.to(model.device), fwd_hooks=[
            (name, lambda p, hook: store.__setitem__(hook.name, p.detach().double().cpu())) for name in names.values()])
    out = {}
    for l, h in heads:
        per_seq = role_diagonals(store[names[l]][:, h], first, T)  # [seq] each
        out[(l, h)] = []
        for metric, v in per_seq.items():
            lo, hi = _bootstrap_means(v, bootstrap, seed)
            out[(l, h)].append(RoleScore(head_name((l, h)), metric, float(v.mean()), Interval(float(lo), float(hi))))
    return out


# --- edges: joint path patching ------------------------------------------------------------------------------
def edge_effects(model, dataset, circuit: Circuit, edges: list[Edge] | None = None, bootstrap: int = 1000,
                 seed: int = 0, batch_size: int = 256, progress=None, should_stop=None,
                 hooked: bool = False, metric: str = "logit_diff") -> EdgeEffects:
    """Every edge's effect (circuit.edges, or all_edges() when it has none), on the dataset's prompt pairs:
    see the module doc. Each sender's heads are patched together; edges with no sender head below a
    receiver head carry nothing (NaN). GPT-2-style models run through blocks.py (no hooks, no unembedding:
    (b) only recomputes MLPs, every head being frozen; (c) runs from the first receiver's layer on); other
    architectures, or hooked=True, take hooked bridge passes, which give the same numbers more slowly.
    batch_size: rows (senders × prompts) per pass."""
    from .patching import _check_paired, _chunks, _fast, _Readout as _FullReadout, _result, _Steps

    _check_paired(dataset)
    edges = list(edges if edges is not None else (circuit.edges if circuit.edges is not None else circuit.all_edges()))
    senders = sorted({e.sender for e in edges})
    groups = _edge_groups(circuit, edges)
    fast = _fast(model) and not hooked
    S_len, V = dataset.tokens.shape[1], int(getattr(model.bridge.cfg, "d_vocab", 50257))
    rows_per_pass = batch_size if fast else min(batch_size, (1 << 26) // (S_len * V))  # hooked: full logits
    per = max(1, rows_per_pass // max(1, len(senders)))
    sender_runs, receiver_run = (_sender_runs_blocks, _receiver_run_blocks) if fast else (_sender_runs, _receiver_run)
    steps = _Steps(progress, should_stop)
    steps.total = len(range(0, dataset.n, per)) * (1 + len(groups))
    patched = torch.full((len(edges), dataset.n), float("nan"), dtype=torch.float64)
    clean_m = torch.zeros(dataset.n, dtype=torch.float64)
    corr_m = torch.zeros(dataset.n, dtype=torch.float64)
    readout = _FullReadout(metric, dataset)  # the metric from logits; under KL it keeps the clean log-probs
    for rows in _chunks(dataset.n, per):
        clean_m[rows], corr_m[rows], from_b, seen = sender_runs(model, dataset, circuit, senders, groups, rows, steps,
                                                                readout)
        for i, e in enumerate(edges):
            if e.receiver == LOGITS:
                patched[i, rows] = from_b[senders.index(e.sender)]
        for (receiver, x), members in groups.items():
            steps.before()
            m = receiver_run(model, dataset, circuit, receiver, x, [edges[i] for i in members], senders, seen, rows,
                             readout)
            for j, i in enumerate(members):
                patched[i, rows] = m[j]
            steps.after()
    result = _result("path", "noise", [], patched, clean_m, corr_m, dataset, bootstrap, seed, settings={})
    out = tuple(EdgeEffect(e, float(result.effects[i]), Interval(float(result.lo[i]), float(result.hi[i])),
                           tuple(map(head_name, circuit.heads_of(e.sender))),
                           () if e.receiver == LOGITS else tuple(map(head_name, circuit.heads_of(e.receiver))))
                for i, e in enumerate(edges))
    how = "blocks" if fast else "hooked passes"
    of = "" if metric == "logit_diff" else f"; metric {Metric(metric).label}"
    return EdgeEffects(out, result.F_clean, result.F_corrupted, dataset.n,
                       f"joint path patching (a sender's heads together), {how}{of}")


def _reaches(circuit: Circuit, e: Edge) -> bool:
    if e.receiver == LOGITS:
        return bool(circuit.heads_of(e.sender))
    return any(s[0] < r[0] for s in circuit.heads_of(e.sender) for r in circuit.heads_of(e.receiver))


def _edge_groups(circuit: Circuit, edges: list[Edge]) -> dict[tuple[str, str], list[int]]:
    """Edges into heads grouped by (receiver, input): one patched pass serves a group."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(edges):
        if e.receiver != LOGITS and _reaches(circuit, e):
            groups.setdefault((e.receiver, e.input), []).append(i)
    return groups


def _receiver_role(circuit: Circuit, receiver: str) -> str | None:
    cls = next((c for c in circuit.classes if c.name == receiver), None) or circuit.class_of(parse_head(receiver))
    return None if cls is None or cls.position == ALL_POSITIONS else cls.position


def _sender_runs(model, dataset, circuit, senders, groups, rows, steps, readout):
    """Clean and corrupted metrics, then run (b) for every sender at once (block g: sender g's heads take
    their corrupted z, every other head its clean z): its metric (the logits edges) and the receivers'
    inputs it produced (hook_q / hook_k / hook_v of the receiver layers)."""
    from .hooks import every_layer, hook_qkv
    from .patching import _hook_names, _hooked_run

    L, H, G, P = model.n_layers, model.n_heads, len(senders), len(rows)
    z_names = _hook_names(model, every_layer(L))
    wanted = sorted({hook_qkv(l, x) for (receiver, x) in groups for l, _ in circuit.heads_of(receiver)})
    _hook_names(model, wanted)
    steps.before()
    tokens = dataset.tokens[rows]
    clean, clean_z = _hooked_run(model, dataset, tokens, rows, grab=z_names, readout=readout, clean=True)
    corr, corr_z = _hooked_run(model, dataset, dataset.reference_tokens[rows], rows, grab=z_names, readout=readout)
    mask = torch.zeros(G, 1, 1, L, H, 1, dtype=torch.bool, device=model.device)  # [sender, P, S, layer, head, 1]
    for g, s in enumerate(senders):
        for l, h in circuit.heads_of(s):
            mask[g, 0, 0, l, h] = True
    hooks = [(z_names[l], lambda z, hook, l=l: torch.where(
        mask[:, :, :, l].expand(G, P, *z.shape[1:3], 1).flatten(0, 1),
        corr_z[z_names[l]].repeat(G, 1, 1, 1), clean_z[z_names[l]].repeat(G, 1, 1, 1)).to(z.dtype)) for l in range(L)]
    from_b, seen = _hooked_run(model, dataset, tokens.repeat(G, 1), rows, hooks, grab=wanted, readout=readout)
    steps.after()
    return clean, corr, from_b.view(G, P), seen


def _receiver_run(model, dataset, circuit, receiver, x, edges, senders, seen, rows, readout) -> torch.Tensor:
    """(c): the clean run with only the receiver's input x (q: at its position) taken from (b), one block per
    edge (its sender's block of (b)); the metric [edges, P]."""
    from .hooks import hook_qkv
    from .patching import _hooked_run, _positions_mask, _put_heads

    H, P, G = model.n_heads, len(rows), len(edges)
    heads = circuit.heads_of(receiver)
    # A query is read where the receiver is kept; its keys and values wherever it attends: every position
    role = _receiver_role(circuit, receiver) if x == "q" else None
    tokens = dataset.tokens[rows]
    where = None if role is None else _positions_mask(dataset, role, rows, tokens.shape[1], model.device).repeat(G, 1)
    blocks = [senders.index(e.sender) for e in edges]
    hooks = []
    for l in sorted({l for l, _ in heads}):
        name = hook_qkv(l, x)
        sent = seen[name].view(len(senders), P, *seen[name].shape[1:])[blocks].flatten(0, 1)
        hooks.append((name, _put_heads(sent, [h for l2, h in heads if l2 == l], where, H)))
    m, _ = _hooked_run(model, dataset, tokens.repeat(G, 1), rows, hooks, readout=readout)
    return m.view(G, P)


def _clean_runs(b, tokens: torch.Tensor) -> tuple[list, list]:
    """The residual entering each layer (and the final one, L + 1 entries) and every head's z per layer."""
    x, xs, zs = b.embed(tokens), [], []
    for layer in range(b.n_layers):
        z = b.attend(layer, x, None)
        xs.append(x)
        zs.append(z)
        x = b.mlp(layer, x + b.attn_out(layer, z))
    return xs + [x], zs


class _Readout:
    """The methodology's metric from final residuals [G * P, S, d] of prompts `rows` repeated G times: the
    logit difference as one dot product, other metrics from every logit at END (`full`, patching's readout;
    the clean run is read first, through `clean`)."""

    def __init__(self, b, dataset, rows, device, full=None):
        self.b, self.end, self.rows, self.full = b, dataset.positions["END"][rows].to(device), rows, full
        self.direction, self.bias = (t.to(device) for t in b.answer_direction(dataset.answer_tokens[rows].to(device)))

    def _at(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        reps = len(x) // len(self.end)
        return x[torch.arange(len(x), device=x.device), self.end.repeat(reps)], reps

    def clean(self, x: torch.Tensor) -> torch.Tensor:
        if self.full is None or self.full.metric is Metric.LOGIT_DIFF:
            return self(x)
        at, _ = self._at(x)
        return self.full.clean(self.b.final_logits(at).double(), self.rows).double().cpu()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        at, reps = self._at(x)
        if self.full is None or self.full.metric is Metric.LOGIT_DIFF:
            return self.b.readout(at, self.direction.repeat(reps, 1), self.bias.repeat(reps)).double().cpu()
        return self.full(self.b.final_logits(at).double(), self.rows).double().cpu()  # blocks of P: from_logits


def _sender_runs_blocks(model, dataset, circuit, senders, groups, rows, steps, readout):
    """_sender_runs through GPT2Blocks: with every head frozen, (b) is the clean residual plus the senders'
    output differences, each layer's MLP recomputed; no attention runs at all."""
    b, dev, G, P = model.blocks, model.device, len(senders), len(rows)
    steps.before()
    with torch.no_grad():
        clean_x, clean_z = _clean_runs(b, dataset.tokens[rows].to(dev))
        corr_x, corr_z = _clean_runs(b, dataset.reference_tokens[rows].to(dev))
        read = _Readout(b, dataset, rows, dev, readout)
        mask = torch.zeros(G, b.n_layers, b.n_heads, dtype=clean_x[0].dtype, device=dev)
        for g, s in enumerate(senders):
            for l, h in circuit.heads_of(s):
                mask[g, l, h] = 1.0
        x, seen = clean_x[0].repeat(G, 1, 1), []
        for layer in range(b.n_layers):
            seen.append(x)
            z = clean_z[layer][None] + mask[:, layer, None, None, :, None] * (corr_z[layer] - clean_z[layer])[None]
            x = b.mlp(layer, x + b.attn_out(layer, z.flatten(0, 1)))
        out = read.clean(clean_x[-1]), read(corr_x[-1]), read(x).view(G, P), {"b": seen, "clean": clean_x, "read": read}
    steps.after()
    return out


def _receiver_run_blocks(model, dataset, circuit, receiver, x_in, edges, senders, seen, rows, readout) -> torch.Tensor:
    """_receiver_run through GPT2Blocks: the clean run from the receiver's first layer on, its input x_in
    (q: at its position) taken from (b)'s residual entering its layer."""
    import torch.nn.functional as F

    b, dev, P, G = model.blocks, model.device, len(rows), len(edges)
    heads = circuit.heads_of(receiver)
    role = _receiver_role(circuit, receiver) if x_in == "q" else None
    where = None if role is None else (torch.arange(dataset.tokens.shape[1], device=dev)[None, :]
                                       == dataset.positions[role][rows].to(dev)[:, None]).repeat(G, 1)
    pick, which = torch.tensor([senders.index(e.sender) for e in edges], device=dev), "qkv".index(x_in)
    first = min(l for l, _ in heads)
    with torch.no_grad():
        x = seen["clean"][first].repeat(G, 1, 1)
        for layer in range(first, b.n_layers):
            qkv = b.qkv(layer, x, None)  # [G * P, S, 3, H, d]
            hs = [h for l, h in heads if l == layer]
            if hs:
                idx = torch.tensor(hs, device=dev)
                sent_x = seen["b"][layer].view(len(senders), P, *x.shape[1:])[pick].flatten(0, 1)
                sent = b.qkv(layer, sent_x, idx)[:, :, which]  # [G * P, S, len(hs), d]
                now = qkv[:, :, which][:, :, idx]
                qkv[:, :, which, idx] = sent if where is None else torch.where(where[:, :, None, None], sent, now)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [G * P, H, S, d]
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=b.scale).transpose(1, 2)
            x = b.mlp(layer, x + b.attn_out(layer, z))
        return seen["read"](x).view(G, P)


# --- everything for a circuit ----------------------------------------------------------------------------
def circuit_evidence(model, dataset, circuit: Circuit, prompts=DEFAULT_PROMPTS, edges: bool = True,
                     n_seqs: int = 20, bootstrap: int = 1000, seed: int = 0, progress=None,
                     should_stop=None, metric: str = "logit_diff") -> CircuitEvidence:
    """Every class's evidence (module doc) on `dataset` (paired with its corrupted twins when `edges`)."""
    heads = circuit.heads
    attention = attention_evidence(model, dataset, heads, prompts, bootstrap, seed)
    tokens = name_tokens(dataset)
    try:
        copies = copy_scores(model, heads, tokens)
    except ValueError:  # an architecture blocks.py does not describe: no copy scores, said in settings
        copies = {}
    roles = role_scores(model, heads, n_seqs, seed, bootstrap)
    effects = edge_effects(model, dataset, circuit, bootstrap=bootstrap, seed=seed, progress=progress,
                           should_stop=should_stop, metric=metric) if edges else None
    classes = tuple(ClassEvidence(
        c.name, c.position, tuple(map(head_name, c.heads)),
        tuple(a for h in c.heads for a in attention[h]), tuple(s for h in c.heads for s in copies.get(h, ())),
        tuple(r for h in c.heads for r in roles[h]),
        tuple(e for e in (effects.edges if effects else ()) if e.edge.receiver == c.name))
        for c in circuit.classes)
    chosen = tuple(i for i in prompts if 0 <= i < dataset.n)
    return CircuitEvidence(circuit.name, classes, effects, chosen, tuple(dataset.prompts[i] for i in chosen),
                           dataset.n, len(tokens), n_seqs,
                           {"bootstrap": bootstrap, "seed": seed, "copy_k": COPY_K, "copy_scores": bool(copies),
                            "task": dataset.task})


__all__ = ["AttentionCell", "CopyScore", "RoleScore", "EdgeEffect", "EdgeEffects", "ClassEvidence",
           "CircuitEvidence", "attention_evidence", "copy_scores", "role_scores", "edge_effects",
           "circuit_evidence", "name_tokens", "wilson", "COPY_K", "DEFAULT_PROMPTS", "EVIDENCE_PAIRS"]
