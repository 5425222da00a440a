"""Finding candidate heads by patching (Wang et al. 2022; the ARENA IOI notebook), on any task.

Each clean prompt is paired with its corrupted twin (the task's reference prompt built with
`ref_per_group=0`: for IOI the paper's p_ABC, aligned token for token). The metric is the
methodology's at END (metrics.py: by default the task's logit difference; under KL each run is held
to the clean run's next-token distribution, so F_clean = 0); F_clean and F_corrupted are its means on
the two prompt sets, and the normalised effects below read the same for every metric.

- Activation patching, per head and position role (and "*": every position):
  - "denoise" runs the corrupted prompts and puts in one head's clean output z at that position:
    effect = (F_patched − F_corrupted) / (F_clean − F_corrupted); 1 = that alone restores the
    clean behaviour.
  - "noise" runs the clean prompts and puts in the corrupted z:
    effect = (F_clean − F_patched) / (F_clean − F_corrupted); 1 = that alone destroys it.
- Path patching to receivers (Wang et al.'s method): (a) clean and corrupted runs; (b) sender h's
  output taken from the corrupted run while every other head is frozen to its clean output (MLPs
  recomputed); (c) the clean run again with only the receivers' inputs (queries, keys and/or values of
  chosen heads, or the final residual read by the unembedding: "logits") taken from (b).
  effect = (F_clean − F_patched) / (F_clean − F_corrupted): the share of the gap that flows along
  sender → receivers. A receiver hears only senders in earlier layers: with receivers in several
  layers, a sender between them reaches the later ones only. Since (b) freezes the earlier receivers
  too, a later receiver reads the sender directly, not through an earlier receiver (another path).
  Senders in or after the last receiver's layer have no such path: NaN.

Every cell has a 95% interval from a bootstrap over prompt pairs (the pair is the unit: numerator and
denominator resampled together). The fast path runs the model's blocks (blocks.py) and reuses the clean
and corrupted runs: a head patched at position p changes nothing before p (causal attention) nor before
its layer, and nothing after END reaches the metric. So its own layer is the unpatched run's plus
W_O[h]·(z_new − z_old) at p (no attention recomputed there, the MLP only at p); each prompt runs only
its positions p..END through the later layers (packed: no padding in the matrix products), with the
unpatched run's keys and values before p and its queries, keys and values where the residual has not
yet changed; the last layer's query and MLP at END only; no unembedding (a dot product with
W_U[:, correct] − W_U[:, wrong]). "*" starts where the twins first differ (before it both runs' z are
the same). Path patching's (b) runs only where (c) reads it (the receivers' position, or from where the
twins differ), and (c) only from the earliest receiver's layer and that position on. The heads of a
layer (senders) are stacked in one batch. Models without blocks take hooked bridge passes, which give
the same numbers more slowly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F

from .circuit import ALL_POSITIONS, Head, head_name
from .hooks import every_layer, hook_qkv
from .progress import raise_if_stopped
from .resampling import prompt_counts_torch
from .intervals import Interval
from .metrics import Metric, from_logits, log_probs

DIRECTIONS = ("denoise", "noise")
INPUTS = ("q", "k", "v", "qkv")
# Rows (positions × patches) per pass of the fast path through the later layers, and per block of its
# position-wise pieces (the MLP hidden: ROWS × 4 d_model floats). Large: on a 2-core CPU shared with other
# work, each operation's thread synchronisation costs more than the cache misses of large tensors (GPT-2 small
# shape, 20 pairs, loaded machine: passes of 1024 rows in blocks of 512 took 30% longer than one pass).
PASS = 8192
ROWS = 4096
LOGITS_BUDGET = 1 << 26  # hooked passes return full logits: at most this many floats (256 MB) per batch


class PatchingError(ValueError):
    """Patching cannot be done as asked (no twin, no gap between clean and corrupted, bad receiver)."""


@dataclass(frozen=True, eq=False)
class Patching:
    """Effects per head (and position role for activation patching), with 95% intervals."""

    kind: str  # "activation" or "path"
    direction: str
    roles: list[str]  # the last axis of `effects` (activation patching); [] for path patching
    effects: torch.Tensor  # [L, H, R] or [L, H]
    lo: torch.Tensor
    hi: torch.Tensor
    F_clean: float
    F_corrupted: float
    F_intervals: dict[str, Interval]  # "clean" / "corrupted"
    n: int
    task: str
    receivers: str = ""  # path patching: what the senders were patched into
    settings: dict = field(default_factory=dict)

    @property
    def interval_method(self) -> str:
        return self.settings.get("interval_method", "")

    @property
    def metric(self) -> str:
        """What F is (metrics.py); a result from before the choice existed: the logit difference."""
        return self.settings.get("metric", Metric.LOGIT_DIFF.value)

    def frame(self) -> pd.DataFrame:
        """Long form for charts: layer, head, name, position, effect, lo, hi."""
        L, H = self.effects.shape[:2]
        rows = []
        for l in range(L):
            for h in range(H):
                for i, role in enumerate(self.roles or [""]):
                    idx = (l, h, i) if self.roles else (l, h)
                    rows.append({"layer": l, "head": h, "name": head_name((l, h)), "position": role,
                                 "effect": float(self.effects[idx]), "lo": float(self.lo[idx]),
                                 "hi": float(self.hi[idx])})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "direction": self.direction, "roles": self.roles, "receivers": self.receivers,
                "task": self.task, "n": self.n, "F_clean": self.F_clean, "F_corrupted": self.F_corrupted,
                "F_intervals": {k: list(v) for k, v in self.F_intervals.items()},
                "settings": self.settings, "cells": self.frame().to_dict("records")}


PatchingResult = Patching  # the earlier name


# --- data, intervals, progress ---------------------------------------------------------------------------
def paired_dataset(model, methodology):
    """The methodology's prompts, each with its aligned corrupted twin (ref_per_group = 0)."""
    from .tasks import build_dataset

    return build_dataset(methodology.task, model.tokenizer, **{**methodology.dataset_kwargs(), "ref_per_group": 0})


def _check_paired(dataset):
    if not dataset.paired:
        raise PatchingError("patching needs each prompt's corrupted twin: build the dataset with ref_per_group=0")
    if not bool(dataset.tokens.ne(dataset.reference_tokens).any(1).all()):
        raise PatchingError("some corrupted twins equal their clean prompts: nothing to patch")


def _effects(patched: torch.Tensor, clean: torch.Tensor, corrupted: torch.Tensor, direction: str,
             draws: int, seed: int):
    """Point effects [cells] and 95% intervals from per-prompt metrics: patched [cells, N]."""
    n = clean.numel()
    sign = 1.0 if direction == "denoise" else -1.0

    def ratio(p, c, k):  # denoise: (p - k) / (c - k); noise: (c - p) / (c - k)
        return sign * (p - (k if direction == "denoise" else c)) / (c - k)

    point = ratio(patched.mean(1), clean.mean(), corrupted.mean())
    W = prompt_counts_torch(n, draws, seed) / n  # [B, N]: the same resampled pairs for every cell and both means
    pb, cb, kb = patched @ W.T, W @ clean, W @ corrupted  # [cells, B], [B], [B]
    boots = ratio(pb, cb[None], kb[None])
    if not len(boots):  # no cells (path patching into layer 0: no sender precedes it)
        return point, point, point, _F_intervals(cb, kb)
    lo, hi = torch.nanquantile(boots, 0.025, dim=1), torch.nanquantile(boots, 0.975, dim=1)
    return point, lo, hi, _F_intervals(cb, kb)


def _F_intervals(cb: torch.Tensor, kb: torch.Tensor) -> dict:
    q = torch.tensor([0.025, 0.975], dtype=torch.float64)
    return {"clean": Interval.of(torch.quantile(cb, q).tolist()), "corrupted": Interval.of(torch.quantile(kb, q).tolist())}


def _result(kind: str, direction: str, roles: list[str], patched: torch.Tensor, clean: torch.Tensor,
            corrupted: torch.Tensor, dataset, bootstrap: int, seed: int, settings: dict,
            receivers: str = "") -> Patching:
    """Effects and intervals of per-prompt metrics patched [L, H, (R,) N]; rows of NaN (no path) stay NaN."""
    if (clean.mean() - corrupted.mean()).abs() < 1e-9:
        raise PatchingError("F(clean) equals F(corrupted): the corruption changes nothing, so no effect can be "
                            "normalised by their difference")
    n, shape = dataset.n, patched.shape[:-1]
    flat = patched.reshape(-1, n)
    has = ~flat.isnan().any(1)
    out = [torch.full((len(flat),), float("nan"), dtype=torch.float64) for _ in range(3)]
    *cells, F_int = _effects(flat[has], clean, corrupted, direction, bootstrap, seed)
    for o, c in zip(out, cells):
        o[has] = c
    effects, lo, hi = (o.view(shape).float() for o in out)
    settings = {"bootstrap": bootstrap, "seed": seed, "interval_method": "bootstrap over prompt pairs", **settings}
    return Patching(kind, direction, roles, effects, lo, hi, float(clean.mean()), float(corrupted.mean()),
                          F_int, n, dataset.task, receivers, settings)


class _Readout:
    """The metric from full logits at END, per prompt; under KL against the clean run's log-probabilities,
    which `clean` records as the clean run is read (it is always read first)."""

    def __init__(self, metric: str, dataset):
        self.metric, self.answers, self.n = Metric(metric), dataset.answer_tokens, dataset.n
        self.clean_lp: torch.Tensor | None = None

    def clean(self, logits: torch.Tensor, rows) -> torch.Tensor:
        if self.metric is Metric.KL:
            lp = log_probs(logits)
            if self.clean_lp is None:
                self.clean_lp = torch.empty(self.n, lp.shape[-1], dtype=lp.dtype, device=lp.device)
            self.clean_lp[rows.to(lp.device)] = lp
        return self(logits, rows)

    def __call__(self, logits: torch.Tensor, rows) -> torch.Tensor:
        """logits [k·P, vocab]: k patches of prompts `rows` stacked in blocks."""
        clean = self.clean_lp[rows.to(self.clean_lp.device)] if self.metric is Metric.KL else None
        return from_logits(logits, self.answers[rows.cpu()].to(logits.device), self.metric, clean)


class _Steps:
    """Progress (done, total) after each batch; Cancelled before a batch once should_stop() says so."""

    def __init__(self, progress, should_stop):
        self.progress, self.should_stop, self.done, self.total = progress, should_stop, 0, 0

    def before(self):
        raise_if_stopped(self.should_stop, "patching cancelled")

    def after(self):
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _chunks(n: int, per: int):
    for start in range(0, n, per):
        yield torch.arange(start, min(n, start + per))


def _positions_mask(dataset, role: str, rows, seq: int, device) -> torch.Tensor:
    """[P, S] bool: where role sits in each prompt ("*": everywhere)."""
    if role == ALL_POSITIONS:
        return torch.ones(len(rows), seq, dtype=torch.bool, device=device)
    pos = dataset.positions[role][rows].to(device)
    return torch.arange(seq, device=device)[None, :] == pos[:, None]


# --- the model's blocks, run from any layer and position ------------------------------------------------
def _attend(b, layer: int, x: torch.Tensor):
    """Every head's z [B, S, H, d] for the residual x [B, S, d] (causal), and the queries, keys and values
    it came from [B, S, 3, H, d]."""
    qkv = b.qkv(layer, x, None)
    q, k, v = qkv.transpose(1, 3).unbind(2)  # each [B, H, S, d]
    z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=b.scale)
    return z.transpose(1, 2), qkv


class _Runner:
    """Forward passes of the model's blocks with the pieces patching needs."""

    def __init__(self, model, dataset, metric: str = Metric.LOGIT_DIFF.value):
        self.b, self.device = model.blocks, model.device
        self.readout = _Readout(metric, dataset)
        self.L, self.H = model.n_layers, model.n_heads
        self.end = dataset.positions["END"].to(self.device)
        answers = dataset.answer_tokens.to(self.device)
        self.direction, self.bias = (t.to(self.device) for t in self.b.answer_direction(answers))
        # where each twin first differs from its clean prompt: before it both runs are the same (causal)
        self.first = dataset.tokens.ne(dataset.reference_tokens).int().argmax(1).to(self.device)

    def run(self, tokens: torch.Tensor) -> dict:
        """Per layer: the residual entering it, every head's z, queries, keys and values, the attention output
        (each [P, S, ...]); "resid" has the final residual last (L + 1 entries)."""
        b, x = self.b, self.b.embed(tokens)
        out = {"resid": [], "z": [], "qkv": [], "attn_out": []}
        for layer in range(self.L):
            z, qkv = _attend(b, layer, x)
            o = b.attn_out(layer, z)
            for key, val in zip(out, (x, z, qkv, o)):
                out[key].append(val)
            x = b.mlp(layer, x + o)
        out["resid"].append(x)
        return out

    def metric(self, x_end: torch.Tensor, rows, clean: bool = False) -> torch.Tensor:
        """The metric from the final residual at END [B, d] of prompts `rows` (repeated in blocks); clean:
        this is the clean run (KL's reference)."""
        if self.readout.metric is Metric.LOGIT_DIFF:  # two logits: one dot product
            reps = len(x_end) // len(rows)
            return self.b.readout(x_end, self.direction[rows].repeat(reps, 1), self.bias[rows].repeat(reps)).double()
        logits = self.b.final_logits(x_end)
        return (self.readout.clean(logits, rows) if clean else self.readout(logits, rows)).double()

    def at_end(self, x: torch.Tensor, rows) -> torch.Tensor:
        return x[torch.arange(len(x), device=x.device), self.end[rows]]

    # The blocks' position-wise pieces over blocks of ROWS rows, biases fused into the matrix products: the
    # same sums as blocks.py's (the tests hold the two to each other), memory bounded however many rows.
    def qkv(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Queries, keys and values of every head [..., 3, H, d] of the residual x [..., d_model]."""
        lw, d = self.b.layers[layer], x.shape[-1]
        W, bias = lw.W_qkv.view(d, -1), lw.b_qkv.flatten()
        x2 = x.reshape(-1, d)
        out = x2.new_empty(len(x2), W.shape[1])
        for i in range(0, len(x2), ROWS):
            torch.addmm(bias, self.b.norm(x2[i:i + ROWS], lw.ln1), W, out=out[i:i + ROWS])
        return out.view(*x.shape[:-1], *lw.b_qkv.shape)

    def post(self, layer: int, x: torch.Tensor, z: torch.Tensor | None = None,
             add: torch.Tensor | None = None) -> torch.Tensor:
        """The residual after the layer's attention and MLP from the residual x [..., d_model] entering it
        and every head's z [..., H, d] (None: x is already past attention); `add` is added first."""
        b, lw, d = self.b, self.b.layers[layer], x.shape[-1]
        x2 = (x if add is None else x + add).reshape(-1, d)
        z2 = None if z is None else z.reshape(len(x2), -1)
        W_O, out = lw.W_O.flatten(0, 1), torch.empty_like(x2)
        for i in range(0, len(x2), ROWS):
            y = x2[i:i + ROWS]
            if z2 is not None:
                y = torch.addmm(y + lw.b_O, z2[i:i + ROWS], W_O)
            hidden = b.act(torch.addmm(lw.b_in, b.norm(y, lw.ln2), lw.W_in))
            torch.addmm(y + lw.b_out, hidden, lw.W_out, out=out[i:i + ROWS])
        return out.view(x.shape)

    def onward(self, x: torch.Tensor, start: int, base: dict, w: "_Window", fresh: torch.Tensor | None = None,
               mix=None) -> torch.Tensor:
        """Layers start.. on the residual x [G, w.n, d] at the window's positions (G patches, each over every
        prompt), reading the unpatched run `base` (see run) for the positions before each window. fresh: the
        packed positions where x differs from base's residual entering `start` (None: maybe everywhere);
        elsewhere that layer's queries, keys and values are base's. mix(layer, qkv [G, w.n, 3, H, d]) may
        change queries, keys and values before attention. The last layer runs its attention query and MLP at
        END only: nothing else reaches the metric. Returns the final residual at END [G, P, d]."""
        b = self.b
        for layer in range(start, self.L):
            if layer == start and fresh is not None and len(fresh) < w.n:
                qkv = w.gather(base["qkv"][layer]).repeat(len(x), 1, 1, 1, 1)
                if len(fresh):
                    qkv[:, fresh] = self.qkv(layer, x[:, fresh])
            else:
                qkv = self.qkv(layer, x)
            if mix is not None:
                qkv = mix(layer, qkv)
            q, k, v = w.pad(qkv).unbind(3)  # each [G, P, T, H, d]
            prefix = base["qkv"][layer][:, :, 1:]
            if layer == self.L - 1:
                x = x[:, w.end]
                q, query = q[:, w.rows, w.length - 1, None], (w.length - 1)[:, None]
                z = w.attention(q, k, v, prefix, b.scale, query)[:, :, 0]  # [G, P, H, d]
            else:
                z = w.pack(w.attention(q, k, v, prefix, b.scale))
            x = self.post(layer, x, z)
        return x


class _Window:
    """Per prompt, the positions start..END (start <= END): the only ones a patch from `start` on changes
    and that reach the metric. Dense pieces (norms, projections, MLPs) run on the window's positions packed
    [G, n, ...] (n: their total over the prompts, no padding); attention runs on them padded to [G, P, T, ...],
    with the unpatched run's keys and values for the positions before each window."""

    def __init__(self, start: torch.Tensor, end: torch.Tensor, S: int):
        device = start.device
        self.start, self.P, self.S = start, len(start), S
        self.length = end - start + 1  # [P]
        self.T = int(self.length.max())
        t = torch.arange(self.T, device=device)
        valid = t[None, :] < self.length[:, None]  # [P, T]
        self.flat = valid.flatten().nonzero()[:, 0]  # packed position -> index into P * T
        self.n = len(self.flat)
        self.rows = torch.arange(self.P, device=device)
        self.row_of = self.flat // self.T  # packed position -> its prompt
        self.pos = start[self.row_of] + self.flat % self.T  # packed position -> position in the prompt
        self.first = torch.cumsum(self.length, 0) - self.length  # packed index of each window's start
        self.end = self.first + self.length - 1  # ... and of its END
        self.before = torch.arange(S, device=device)[None, :] < start[:, None]  # [P, S]: the unchanged prefix

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """x [P, S, ...] at the window's positions, packed: [n, ...]."""
        return x[self.row_of, self.pos]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[G, n, ...] -> [G, P, T, ...] (zeros after each window's END)."""
        out = x.new_zeros(x.shape[0], self.P * self.T, *x.shape[2:])
        out[:, self.flat] = x
        return out.view(x.shape[0], self.P, self.T, *x.shape[2:])

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1, 2)[:, self.flat]

    def attention(self, q, k, v, kv_prefix, scale: float, query: torch.Tensor | None = None) -> torch.Tensor:
        """z [G, P, Tq, H, d] of queries q [G, P, Tq, H, d] at window indices `query` [P, Tq] (None: every
        index) over the prompt's unchanged prefix (kv_prefix [P, S, 2, H, d]: its keys and values before the
        window's start) and
        the window's own keys and values k, v [G, P, T, H, d] up to the query (causal)."""
        Kp, Vp = kv_prefix.unbind(2)
        t = torch.arange(self.T, device=q.device)
        query = t[None, :].expand(self.P, -1) if query is None else query
        own = t[None, None, :] <= query[:, :, None]  # [P, Tq, T]
        mask = torch.cat([self.before[:, None, :].expand(-1, query.shape[1], -1), own], -1)  # [P, Tq, S + T]
        s = torch.cat([torch.einsum("gpthd,pshd->gpths", q, Kp), torch.einsum("gpthd,gpuhd->gpthu", q, k)], -1)
        s = (s * scale).masked_fill(~mask[None, :, :, None, :], float("-inf")).softmax(-1)
        return (torch.einsum("gpths,pshd->gpthd", s[..., :self.S], Vp)
                + torch.einsum("gpthu,gpuhd->gpthd", s[..., self.S:], v))


# --- hooked bridge passes (architectures blocks.py does not describe) ------------------------------------
def _fast(model) -> bool:
    """The fast path is written against GPT-2's blocks (`GPT2Blocks`: its q/k/v, MLP and W_O pieces);
    the other families' blocks take the hooked passes, which give the same numbers more slowly."""
    from .blocks import GPT2Blocks

    return isinstance(model.blocks, GPT2Blocks)


def _hook_names(model, names: list[str]) -> list[str]:
    missing = [x for x in names if x not in model.bridge.hook_dict]
    if missing:  # the bridge would skip them silently
        raise PatchingError(f"the model has no hook point(s) {', '.join(missing[:2])}; per-head patching is not "
                            "supported for it")
    return names


def _hooked_per(model, dataset, batch_size: int) -> int:
    """Prompts per hooked pass: H of them stacked per prompt, and full logits held in LOGITS_BUDGET."""
    S, V = dataset.tokens.shape[1], int(getattr(model.bridge.cfg, "d_vocab", 50257))
    return max(1, min(batch_size, LOGITS_BUDGET // (S * V)) // model.n_heads)


def _hooked_run(model, dataset, tokens: torch.Tensor, rows, hooks=(), grab=(), readout: _Readout | None = None,
                clean: bool = False):
    """Metric per row of tokens (prompts `rows`, repeated in blocks) from one hooked pass, and the
    activations at hook points `grab` (after `hooks` changed them). clean: the clean run (KL's reference)."""
    store = {}
    keep = lambda act, hook: store.__setitem__(hook.name, act.detach().clone())
    with model.lock, torch.no_grad():
        logits = model.bridge.run_with_hooks(tokens.to(model.device), fwd_hooks=list(hooks) + [(g, keep) for g in grab])
    reps = len(tokens) // len(rows)
    end = dataset.positions["END"][rows].repeat(reps)
    at = logits[torch.arange(len(logits)), end.to(logits.device)].double().cpu()
    readout = readout or _Readout(Metric.LOGIT_DIFF.value, dataset)
    return (readout.clean(at, rows) if clean else readout(at, rows)).double(), store


def _one_head_each(H: int, where: torch.Tensor) -> torch.Tensor:
    """[H(batch), P, S, H(head), 1] bool: batch block k patches head k only, at `where` [P, S]."""
    eye = torch.eye(H, dtype=torch.bool, device=where.device)
    return (eye[:, None, None, :] & where[None, :, :, None])[..., None]


# --- activation patching -------------------------------------------------------------------------------
def activation_patching(model, dataset, direction: str = "denoise", roles: list[str] | None = None,
                        batch_size: int = 512, bootstrap: int = 1000, seed: int = 0,
                        progress=None, should_stop=None, metric: str = Metric.LOGIT_DIFF.value) -> Patching:
    """Every head at every role (and "*"), patched alone; see the module doc. batch_size: rows per forward
    pass (heads × prompts). progress(done, total) counts batches; should_stop() -> Cancelled. metric: what F
    is (metrics.py)."""
    Metric(metric)
    if direction not in DIRECTIONS:
        raise PatchingError(f"direction must be one of {', '.join(DIRECTIONS)} (got {direction!r})")
    _check_paired(dataset)
    roles = [r for r in roles or dataset.roles if r != ALL_POSITIONS] + [ALL_POSITIONS]
    unknown = [r for r in roles if r != ALL_POSITIONS and r not in dataset.positions]
    if unknown:
        raise PatchingError(f"unknown position(s) {unknown}; this task has {', '.join(dataset.roles)}")
    steps = _Steps(progress, should_stop)
    fast = _fast(model)
    with torch.no_grad():
        patched, clean, corrupted = (_activation_blocks if fast else _activation_hooked)(
            model, dataset, direction, roles, batch_size, steps, metric)
    return _result("activation", direction, roles, patched, clean, corrupted, dataset, bootstrap, seed,
                   settings={"engine": "blocks" if fast else "hooks", "metric": metric})


def _activation_blocks(model, dataset, direction, roles, batch_size, steps, metric):
    L, H, n = model.n_layers, model.n_heads, dataset.n
    r, b = _Runner(model, dataset, metric), model.blocks
    per = max(1, batch_size // H)  # prompts per batch: all H heads of a layer stacked
    steps.total = L * len(roles) * len(range(0, n, per))
    patched = torch.zeros(L, H, len(roles), n, dtype=torch.float64)
    clean_m, corr_m = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for rows in _chunks(n, per):
        dev_rows, P = rows.to(r.device), len(rows)
        end = r.end[dev_rows]
        S = int(end.max()) + 1  # positions after every END cannot reach the metric
        clean, corr = (r.run(t[rows, :S].to(r.device)) for t in (dataset.tokens, dataset.reference_tokens))
        clean_m[rows] = r.metric(r.at_end(clean["resid"][-1], dev_rows), dev_rows, clean=True).cpu()
        corr_m[rows] = r.metric(r.at_end(corr["resid"][-1], dev_rows), dev_rows).cpu()
        base, source = (corr, clean) if direction == "denoise" else (clean, corr)
        for i, role in enumerate(roles):
            # A head patched at p changes nothing before p (causal), and nothing after END reaches the metric:
            # each prompt's window runs from p (or, for "*", where the twins first differ: before it the clean
            # and corrupted z are the same) to END.
            if role == ALL_POSITIONS:
                w = _Window(torch.minimum(r.first[dev_rows], end), end, S)
                at = torch.arange(w.n, device=r.device)  # patched at every position of the window
            else:
                pos = dataset.positions[role][rows].to(r.device)
                w = _Window(torch.minimum(pos, end), end, S)
                at = w.first[pos <= end]  # a head after END changes nothing
            for layer in range(L):
                steps.before()
                # The patched layer: its attention output is the unpatched one plus W_O[h] (z_new - z_old) at the
                # patched positions `at`; elsewhere the layer's output is the unpatched run's.
                dz = w.gather(source["z"][layer] - base["z"][layer])[at]  # [m, H, d]
                mid = w.gather(base["resid"][layer] + base["attn_out"][layer])[at]
                after = w.gather(base["resid"][layer + 1])  # [n, d]
                for hs in _groups(H, w.n):
                    sent = torch.einsum("mhd,hde->hme", dz[:, hs], b.layers[layer].W_O[hs])
                    x = r.post(layer, mid + sent)  # [g, m, d]
                    if len(at) < w.n:
                        changed, x = x, after.repeat(len(sent), 1, 1)
                        x[:, at] = changed
                    if layer == L - 1:  # only END reaches the metric
                        x = x[:, w.end]
                    else:
                        x = r.onward(x, layer + 1, base, w, fresh=at)
                    patched[layer, hs, i, rows] = r.metric(x.flatten(0, 1), dev_rows).view(len(sent), P).cpu()
                steps.after()
    return patched, clean_m, corr_m


def _groups(G: int, n: int):
    """Slices of G patches (heads, senders) with at most about PASS rows in all, their n positions each."""
    per = max(1, PASS // max(n, 1))
    for start in range(0, G, per):
        yield slice(start, min(G, start + per))


def _activation_hooked(model, dataset, direction, roles, batch_size, steps, metric):
    """The same through hooked bridge passes on `hook_z` (any architecture TransformerLens hooks per head)."""
    L, H, n = model.n_layers, model.n_heads, dataset.n
    names = _hook_names(model, every_layer(L))
    readout = _Readout(metric, dataset)
    per = _hooked_per(model, dataset, batch_size)
    steps.total = L * len(roles) * len(range(0, n, per))
    patched = torch.zeros(L, H, len(roles), n, dtype=torch.float64)
    clean_m, corr_m = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for rows in _chunks(n, per):
        tokens, ref = dataset.tokens[rows], dataset.reference_tokens[rows]
        clean_m[rows], clean_z = _hooked_run(model, dataset, tokens, rows, grab=names, readout=readout, clean=True)
        corr_m[rows], corr_z = _hooked_run(model, dataset, ref, rows, grab=names, readout=readout)
        base_tokens, source = (ref, clean_z) if direction == "denoise" else (tokens, corr_z)
        for i, role in enumerate(roles):
            mask = _one_head_each(H, _positions_mask(dataset, role, rows, tokens.shape[1], model.device)).flatten(0, 1)
            for layer in range(L):
                steps.before()
                src = source[names[layer]].repeat(H, 1, 1, 1)
                put = lambda z, hook, src=src: torch.where(mask, src.to(z.dtype), z)
                m, _ = _hooked_run(model, dataset, base_tokens.repeat(H, 1), rows, [(names[layer], put)], readout=readout)
                patched[layer, :, i, rows] = m.view(H, len(rows))
                steps.after()
    return patched, clean_m, corr_m


# --- path patching ---------------------------------------------------------------------------------------
def parse_receivers(text: str) -> list[Head] | str:
    """"logits", or comma-separated heads "9.9, 10.0"."""
    from .circuit import parse_head

    text = text.strip()
    if text == "logits":
        return "logits"
    try:
        heads = [parse_head(part.strip()) for part in text.split(",") if part.strip()]
    except Exception as exc:
        raise PatchingError(f"receivers: {exc}") from None
    if not heads:
        raise PatchingError("receivers: name 'logits' or at least one head, e.g. 9.9,10.0")
    return heads


def path_patching(model, dataset, receivers, receiver_input: str = "qkv", receiver_role: str | None = None,
                  batch_size: int = 512, bootstrap: int = 1000, seed: int = 0, progress=None,
                  should_stop=None, metric: str = Metric.LOGIT_DIFF.value) -> Patching:
    """Each sender head's effect through `receivers` only: "logits" (the direct path: the final residual at
    END) or a list of (layer, head) whose `receiver_input` (q, k, v or qkv) is patched, at `receiver_role`
    only or (None) every position. See the module doc; each sender reaches the receivers in later layers than
    its own; senders in or after the last receiver's layer: NaN."""
    _check_paired(dataset)
    Metric(metric)
    L, H = model.n_layers, model.n_heads
    to_logits = receivers == "logits"
    if not to_logits:
        receivers = sorted(set(map(tuple, receivers)))
        bad = [h for h in receivers if not (0 <= h[0] < L and 0 <= h[1] < H)]
        if bad or not receivers:
            raise PatchingError(f"receiver(s) {', '.join(map(head_name, bad)) or 'none'} not in this {L}×{H} model")
        if receiver_input not in INPUTS:
            raise PatchingError(f"receiver input must be one of {', '.join(INPUTS)} (got {receiver_input!r})")
        if receiver_role is not None and receiver_role not in dataset.positions:
            raise PatchingError(f"unknown receiver position {receiver_role!r}; this task has {', '.join(dataset.roles)}")
    until = L if to_logits else max(l for l, _ in receivers)  # senders from here on have no path
    steps = _Steps(progress, should_stop)
    fast = _fast(model)
    with torch.no_grad():
        patched, clean, corrupted = (_path_blocks if fast else _path_hooked)(
            model, dataset, receivers, receiver_input, None if to_logits else receiver_role, until, batch_size, steps,
            metric)
    label = "logits" if to_logits else f"{receiver_input} of {', '.join(map(head_name, receivers))}" + (
        f" at {receiver_role}" if receiver_role else "")
    return _result("path", "noise", [], patched, clean, corrupted, dataset, bootstrap, seed, receivers=label,
                   settings={"engine": "blocks" if fast else "hooks", "metric": metric,
                             "receiver_input": "" if to_logits else receiver_input,
                             "receiver_position": receiver_role or ALL_POSITIONS})


def _path_blocks(model, dataset, receivers, receiver_input, receiver_role, until, batch_size, steps, metric):
    L, H, n = model.n_layers, model.n_heads, dataset.n
    b, r = model.blocks, _Runner(model, dataset, metric)
    to_logits = receivers == "logits"
    per = max(1, batch_size // H)  # senders of a layer stacked: H × prompts per batch
    steps.total = until * len(range(0, n, per))
    patched = torch.full((L, H, n), float("nan"), dtype=torch.float64)
    clean_m, corr_m = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for rows in _chunks(n, per):
        dev_rows, P = rows.to(r.device), len(rows)
        end = r.end[dev_rows]
        S = int(end.max()) + 1  # positions after every END cannot reach the metric
        clean, corr = (r.run(t[rows, :S].to(r.device)) for t in (dataset.tokens, dataset.reference_tokens))
        clean_m[rows] = r.metric(r.at_end(clean["resid"][-1], dev_rows), dev_rows, clean=True).cpu()
        corr_m[rows] = r.metric(r.at_end(corr["resid"][-1], dev_rows), dev_rows).cpu()
        if to_logits:  # attention frozen: a position's residual depends on itself only, so END suffices
            w, at = _Window(end, end, S), None
        elif receiver_role is None:  # the receivers' inputs change only where the twins differ, and after
            w = _Window(torch.minimum(r.first[dev_rows], end), end, S)
            at = torch.arange(w.n, device=r.device)
        else:  # (c) changes nothing before the receivers' position; one after END reaches nothing
            pos = dataset.positions[receiver_role][rows].to(r.device)
            w = _Window(torch.minimum(pos, end), end, S)
            at = w.first[pos <= end]
        for layer in range(until):
            steps.before()
            # (b) batch block k: sender (layer, k) corrupted, every other head frozen to its clean output.
            # Attention frozen, each position's residual depends on itself only: (b) runs only where (c) reads it
            where = w.end if to_logits else at
            dz = w.gather(corr["z"][layer] - clean["z"][layer])[where]  # [m, H, d]
            mid = w.gather(clean["resid"][layer] + clean["attn_out"][layer])[where]
            later = [h for h in receivers if h[0] > layer] if not to_logits else []  # those that hear it
            for hs in _groups(H, w.n):
                x = mid + torch.einsum("mhd,hde->hme", dz[:, hs], b.layers[layer].W_O[hs])  # [g, m, d]
                if to_logits:
                    for j in range(layer, L):
                        x = r.post(j, x, add=w.gather(clean["attn_out"][j])[where] if j > layer else None)
                else:
                    seen = {}  # the residual entering each receiver layer in (b), where (c) reads it
                    for j in range(layer, max(l for l, _ in later)):
                        x = r.post(j, x, add=w.gather(clean["attn_out"][j])[at] if j > layer else None)
                        seen[j + 1] = x
                    # (c): the clean run from the earliest receiver's layer on, the receivers' inputs from (b)
                    first = min(l for l, _ in later)
                    x = w.gather(clean["resid"][first]).repeat(len(x), 1, 1)  # [g, n, d]
                    none = torch.zeros(0, dtype=torch.long, device=r.device)  # entering `first`: the clean run
                    x = r.onward(x, first, clean, w, none, _mixer(b, seen, later, receiver_input, at, w.n))
                patched[layer, hs, rows] = r.metric(x.flatten(0, 1), dev_rows).view(len(x), P).cpu()
            steps.after()
    return patched, clean_m, corr_m


def _mixer(b, seen: dict, receivers, receiver_input: str, at: torch.Tensor, n: int):
    """mix(layer, qkv) for _Runner.onward: the receivers' chosen inputs (q, k and/or v) at the packed window
    positions `at` taken from (b), whose residual entering each receiver layer is seen[layer] [H, len(at), d]."""
    take = torch.tensor([c in receiver_input for c in "qkv"], device=at.device)[None, None, :, None, None]

    def mix(layer: int, qkv: torch.Tensor) -> torch.Tensor:
        heads = [h for l, h in receivers if l == layer]
        if not heads:
            return qkv
        idx = torch.tensor(heads, device=qkv.device)
        sent = b.qkv(layer, seen[layer], idx)  # [H, m, 3, h, d]
        every = len(at) == n  # the whole window (then `at` is every packed position in order)
        part = qkv if every else qkv[:, at]
        part[:, :, :, idx] = torch.where(take, sent, part[:, :, :, idx])
        if not every:
            qkv[:, at] = part
        return qkv

    return mix


def _path_hooked(model, dataset, receivers, receiver_input, receiver_role, until, batch_size, steps, metric):
    """The same through hooked bridge passes: (b) freezes every `hook_z` from the sender's layer on, (c)
    patches the `hook_q` / `hook_k` / `hook_v` of the receivers after the sender's layer."""
    L, H, n = model.n_layers, model.n_heads, dataset.n
    z_names = _hook_names(model, every_layer(L))
    to_logits = receivers == "logits"
    inputs = {} if to_logits else {(l, c): hook_qkv(l, c) for l in sorted({l for l, _ in receivers})
                                   for c in "qkv" if c in receiver_input}
    _hook_names(model, list(inputs.values()))
    readout = _Readout(metric, dataset)
    per = _hooked_per(model, dataset, batch_size)
    steps.total = until * len(range(0, n, per))
    patched = torch.full((L, H, n), float("nan"), dtype=torch.float64)
    clean_m, corr_m = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for rows in _chunks(n, per):
        tokens, P = dataset.tokens[rows], len(rows)
        clean_m[rows], clean_z = _hooked_run(model, dataset, tokens, rows, grab=z_names, readout=readout, clean=True)
        corr_m[rows], corr_z = _hooked_run(model, dataset, dataset.reference_tokens[rows], rows, grab=z_names,
                                           readout=readout)
        where = None if receiver_role is None else _positions_mask(dataset, receiver_role, rows, tokens.shape[1],
                                                                    model.device).repeat(H, 1)
        # (b) batch block k: sender (layer, k) corrupted; from its layer on every other head's z clean
        corrupt = _one_head_each(H, torch.ones(P, tokens.shape[1], dtype=torch.bool, device=model.device))
        for layer in range(until):
            steps.before()
            later = {k: name for k, name in inputs.items() if k[0] > layer}  # receivers that hear this sender
            frozen = [torch.where(corrupt.flatten(0, 1), corr_z[z_names[layer]].repeat(H, 1, 1, 1),
                                  clean_z[z_names[layer]].repeat(H, 1, 1, 1))]
            frozen += [clean_z[z_names[j]].repeat(H, 1, 1, 1) for j in range(layer + 1, L)]
            hooks = [(z_names[j], lambda z, hook, v=v: v.to(z.dtype)) for j, v in zip(range(layer, L), frozen)]
            m, seen = _hooked_run(model, dataset, tokens.repeat(H, 1), rows, hooks, grab=list(later.values()),
                                  readout=readout)
            if not to_logits:  # (c) the clean run, only the later receivers' inputs from (b)
                hooks = [(name, _put_heads(seen[name], [h for l2, h in receivers if l2 == l], where, H))
                         for (l, _), name in later.items()]
                m, _ = _hooked_run(model, dataset, tokens.repeat(H, 1), rows, hooks, readout=readout)
            patched[layer, :, rows] = m.view(H, P)
            steps.after()
    return patched, clean_m, corr_m


def _put_heads(sent: torch.Tensor, heads: list[int], where: torch.Tensor | None, H: int):
    """A hook putting `sent` [B, S, H, d] into these heads' slice of hook_q / hook_k / hook_v (at `where`)."""
    def put(act, hook):
        if act.shape[2] != H:  # grouped-query attention: a key or value serves several heads
            raise PatchingError(f"{hook.name} has {act.shape[2]} heads, not {H}: path patching into grouped "
                                "keys or values is not supported; patch the receivers' queries (q)")
        act = act.clone()
        new = sent[:, :, heads].to(act.dtype)
        act[:, :, heads] = new if where is None else torch.where(where[:, :, None, None], new, act[:, :, heads])
        return act

    return put


# --- from a map to a circuit -------------------------------------------------------------------------------
def start_from_patching(result: Patching, top_k: int | None = None,
                        threshold: float | None = None) -> dict[Head, str]:
    """Heads to start a circuit from (discover's `start`): each at the single role where its effect is largest
    (activation patching; "*" only when the task has no other role, since a circuit keeps a head at one
    position; path patching: "*"), keeping the top k by that effect and/or those whose interval lies wholly
    above `threshold`."""
    eff, lo = result.effects, result.lo
    if result.kind == "activation":
        single = slice(None, -1) if len(result.roles) > 1 else slice(None)
        best = torch.nan_to_num(eff[..., single], nan=-float("inf")).argmax(-1, keepdim=True)  # [L, H, 1]
        val, low = eff[..., single].gather(-1, best)[..., 0], lo[..., single].gather(-1, best)[..., 0]
        role = lambda l, h: result.roles[int(best[l, h])]
    else:
        val, low, role = eff, lo, lambda l, h: ALL_POSITIONS
    L, H = val.shape
    order = sorted(((float(val[l, h]), (l, h)) for l in range(L) for h in range(H) if not torch.isnan(val[l, h])),
                   reverse=True)
    keep = [h for _, h in order]
    if threshold is not None:
        keep = [h for h in keep if float(low[h]) > threshold]
    if top_k is not None:
        keep = keep[:top_k]
    return {h: role(*h) for h in keep}
