"""Finding candidate heads by patching (Wang et al. 2022; the ARENA IOI notebook), on any task.

Each clean prompt is paired with its corrupted twin (the task's reference prompt built with
`ref_per_group=0`: for IOI the paper's p_ABC, aligned token for token). The metric is the task's
logit difference at END; F_clean and F_corrupted are its means on the two prompt sets.

- Activation patching, per head and position role (and "*": every position):
  - "denoise" runs the corrupted prompts and puts in one head's clean output z at that position:
    effect = (F_patched − F_corrupted) / (F_clean − F_corrupted); 1 = that alone restores the
    clean behaviour.
  - "noise" runs the clean prompts and puts in the corrupted z:
    effect = (F_clean − F_patched) / (F_clean − F_corrupted); 1 = that alone destroys it.
- Path patching to receivers (Wang et al.'s method): sender h's output is taken from the corrupted
  run while every other head is frozen to its clean output (MLPs recomputed); only the receivers'
  inputs (queries, keys and/or values of chosen heads, or the final residual read by the unembedding:
  "logits") see the change, and the model runs on from there. effect = (F_clean − F_patched) /
  (F_clean − F_corrupted): the share of the clean − corrupted gap that flows along sender → receivers.

Every cell has a 95% interval from a bootstrap over prompt pairs (numerator and denominator resampled
together). The fast path runs the model's blocks (blocks.py) from the residual entering the patched
layer, all heads of a layer stacked in one batch; models without blocks take hooked bridge passes
(activation patching only).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from .circuit import ALL_POSITIONS, Head, head_name
from .evaluate import Cancelled

DIRECTIONS = ("denoise", "noise")
INPUTS = ("q", "k", "v", "qkv")


class PatchingError(ValueError):
    """Patching cannot be done as asked (no twin, no gap between clean and corrupted, bad receiver)."""


@dataclass
class PatchingResult:
    """Effects per head (and position role for activation patching), with 95% intervals."""

    kind: str  # "activation" or "path"
    direction: str
    roles: list[str]  # the last axis of `effects` (activation patching); [] for path patching
    effects: torch.Tensor  # [L, H, R] or [L, H]
    lo: torch.Tensor
    hi: torch.Tensor
    F_clean: float
    F_corrupted: float
    F_intervals: dict  # "clean" / "corrupted" -> (lo, hi)
    n: int
    task: str
    receivers: str = ""  # path patching: what the senders were patched into
    settings: dict = field(default_factory=dict)

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


# --- data and intervals ------------------------------------------------------------------------------
def paired_dataset(model, methodology):
    """The methodology's prompts, each with its aligned corrupted twin (ref_per_group = 0)."""
    from .tasks import build_dataset

    return build_dataset(methodology.task, model.tokenizer, **{**methodology.dataset_kwargs(), "ref_per_group": 0})


def _check_paired(dataset):
    if not dataset.paired:
        raise PatchingError("patching needs each prompt's corrupted twin: build the dataset with ref_per_group=0")
    if not torch.equal(dataset.tokens.ne(dataset.reference_tokens).any(1), torch.ones(dataset.n, dtype=torch.bool)):
        raise PatchingError("some corrupted twins equal their clean prompts: nothing to patch")


def _boot_counts(n: int, draws: int, seed: int) -> torch.Tensor:
    """[draws, n] multinomial counts: each row one bootstrap resample of the prompt pairs."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (draws, n), generator=gen)
    return torch.zeros(draws, n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(draws, n, dtype=torch.float64))


def _effects(patched: torch.Tensor, clean: torch.Tensor, corrupted: torch.Tensor, direction: str,
             draws: int, seed: int):
    """Point effects [cells] and 95% intervals from per-prompt metrics: patched [cells, N]."""
    n = clean.numel()
    sign = 1.0 if direction == "denoise" else -1.0
    base = corrupted if direction == "denoise" else clean

    def ratio(p, c, k, b):
        gap = c - k
        return sign * (p - b) / gap

    point = ratio(patched.mean(1), clean.mean(), corrupted.mean(), base.mean())
    W = _boot_counts(n, draws, seed) / n  # [B, N]
    pb, cb, kb = patched @ W.T, W @ clean, W @ corrupted  # [cells, B], [B], [B]
    bb = kb if direction == "denoise" else cb
    boots = ratio(pb, cb[None], kb[None], bb[None])
    lo, hi = torch.nanquantile(boots, 0.025, dim=1), torch.nanquantile(boots, 0.975, dim=1)
    F_int = {"clean": tuple(torch.quantile(cb, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()),
             "corrupted": tuple(torch.quantile(kb, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist())}
    return point, lo, hi, F_int


# --- the model, run from any layer ---------------------------------------------------------------------
class _Runner:
    """Forward passes of the model's blocks, on CPU or GPU, with the pieces patching needs."""

    def __init__(self, model, dataset):
        self.model, self.blocks = model, model.blocks
        self.device = model.device
        self.L, self.H = model.n_layers, model.n_heads
        ds = dataset
        self.end = ds.positions["END"].to(self.device)
        self.direction, self.bias = (t.to(self.device) for t in self.blocks.answer_direction(ds.answer_tokens.to(self.device)))

    def run(self, tokens: torch.Tensor) -> dict:
        """Residual entering each layer, every head's z and attention output, and the metric."""
        b = self.blocks
        x = b.embed(tokens)
        resid, zs, outs = [], [], []
        for layer in range(self.L):
            resid.append(x)
            z = b.attend(layer, x, None)
            out = b.attn_out(layer, z)
            zs.append(z)
            outs.append(out)
            x = b.mlp(layer, x + out)
        return {"resid": resid, "z": zs, "attn_out": outs, "final": x}

    def _ends(self, x: torch.Tensor, rows) -> torch.Tensor:
        """END of each row of x [P', ...] holding prompts `rows` once or repeated in blocks."""
        return self.end[rows].repeat(len(x) // len(self.end[rows]))

    def metric(self, x: torch.Tensor, rows, at_end: bool = False) -> torch.Tensor:
        """Logit difference at END of each prompt: x [P, S, d] (or [P, d] at END already) for prompts
        `rows` (repeated blocks ok)."""
        reps = len(x) // len(self.end[rows])
        direction, bias = self.direction[rows].repeat(reps, 1), self.bias[rows].repeat(reps)
        x_end = x if at_end else x[torch.arange(len(x), device=x.device), self._ends(x, rows)]
        return self.blocks.readout(x_end, direction, bias).double()

    def onward(self, x: torch.Tensor, start: int, rows) -> torch.Tensor:
        """Run layers start.. on residual x [P, S, d]; returns the final residual at END, [P, d]. The last
        layer runs at END only: nothing else reaches the metric."""
        b = self.blocks
        for layer in range(start, self.L - 1):
            x = b.mlp(layer, x + b.attn_out(layer, b.attend(layer, x, None)))
        if start == self.L:
            return x[torch.arange(len(x), device=x.device), self._ends(x, rows)]
        end = self._ends(x, rows)
        z = b.attend_at(self.L - 1, x, end, None)  # [P, H, d]
        return b.mlp(self.L - 1, x[torch.arange(len(x), device=x.device), end] + b.attn_out(self.L - 1, z))


def _positions_mask(dataset, role: str, rows, seq: int, device) -> torch.Tensor:
    """[P, S] bool: where role sits in each prompt ("*": everywhere)."""
    if role == ALL_POSITIONS:
        return torch.ones(len(rows), seq, dtype=torch.bool, device=device)
    pos = dataset.positions[role][rows].to(device)
    return torch.arange(seq, device=device)[None, :] == pos[:, None]


def _chunks(n: int, per: int):
    for start in range(0, n, per):
        yield torch.arange(start, min(n, start + per))


# --- activation patching -------------------------------------------------------------------------------
def activation_patching(model, dataset, direction: str = "denoise", roles: list[str] | None = None,
                        max_batch: int = 512, bootstrap: int = 1000, seed: int = 0,
                        progress=None, should_stop=None) -> PatchingResult:
    """Every head at every role (and "*"), patched alone; see the module doc."""
    if direction not in DIRECTIONS:
        raise PatchingError(f"direction must be one of {', '.join(DIRECTIONS)} (got {direction!r})")
    _check_paired(dataset)
    roles = list(roles or dataset.roles) + [ALL_POSITIONS]
    unknown = [r for r in roles if r != ALL_POSITIONS and r not in dataset.positions]
    if unknown:
        raise PatchingError(f"unknown position(s) {unknown}; this task has {', '.join(dataset.roles)}")
    L, H, n = model.n_layers, model.n_heads, dataset.n
    if model.blocks is None:
        patched, clean, corrupted = _activation_hooked(model, dataset, direction, roles, progress, should_stop)
    else:
        patched, clean, corrupted = _activation_blocks(model, dataset, direction, roles, max_batch, progress,
                                                       should_stop)
    if (clean.mean() - corrupted.mean()).abs() < 1e-9:
        raise PatchingError("F(clean) equals F(corrupted): the corruption changes nothing, so no effect can be normalised")
    point, lo, hi, F_int = _effects(patched.view(-1, n), clean, corrupted, direction, bootstrap, seed)
    shape = (L, H, len(roles))
    return PatchingResult("activation", direction, roles, point.view(shape).float(), lo.view(shape).float(),
                          hi.view(shape).float(), float(clean.mean()), float(corrupted.mean()), F_int, n,
                          dataset.task, settings={"bootstrap": bootstrap, "seed": seed,
                                                  "interval_method": "bootstrap over prompt pairs"})


def _activation_blocks(model, dataset, direction, roles, max_batch, progress, should_stop):
    L, H, n = model.n_layers, model.n_heads, dataset.n
    r = _Runner(model, dataset)
    patched = torch.zeros(L, H, len(roles), n, dtype=torch.float64)
    per = max(1, max_batch // H)  # prompts per batch: all H heads of a layer stacked
    total, done = L * len(roles) * ((n + per - 1) // per), 0
    clean_m, corr_m = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    with torch.no_grad():
        for rows in _chunks(n, per):
            dev_rows = rows.to(r.device)
            clean = r.run(dataset.tokens[rows].to(r.device))
            corr = r.run(dataset.reference_tokens[rows].to(r.device))
            clean_m[rows], corr_m[rows] = r.metric(clean["final"], dev_rows).cpu(), r.metric(corr["final"], dev_rows).cpu()
            base, source = (corr, clean) if direction == "denoise" else (clean, corr)
            P, S = len(rows), dataset.tokens.shape[1]
            eye = torch.eye(H, dtype=torch.bool, device=r.device)
            for layer in range(L):
                z_base, z_src = base["z"][layer], source["z"][layer]  # [P, S, H, d]
                for i, role in enumerate(roles):
                    where = _positions_mask(dataset, role, rows, S, r.device)  # [P, S]
                    # batch k patches head k only: mask [H(batch), P, S, H(head)]
                    mask = eye[:, None, None, :] & where[None, :, :, None]
                    z = torch.where(mask[..., None], z_src[None], z_base[None]).flatten(0, 1)  # [H*P, S, H, d]
                    x = base["resid"][layer].repeat(H, 1, 1) + model.blocks.attn_out(layer, z)
                    if layer == L - 1:  # the last layer: only END reaches the metric
                        x = model.blocks.mlp(layer, x[torch.arange(len(x), device=r.device), r._ends(x, dev_rows)])
                    else:
                        x = r.onward(model.blocks.mlp(layer, x), layer + 1, dev_rows)
                    patched[layer, :, i, rows] = r.metric(x, dev_rows, at_end=True).view(H, P).cpu()
                    done += 1
                    if progress is not None:
                        progress(done, total)
                    if should_stop is not None and should_stop():
                        raise Cancelled()
    return patched, clean_m, corr_m


def _activation_hooked(model, dataset, direction, roles, progress, should_stop):
    """The same through hooked bridge passes (any architecture TransformerLens hooks per head)."""
    L, H, n = model.n_layers, model.n_heads, dataset.n
    bridge, dev = model.bridge, model.device
    names = [f"blocks.{l}.attn.hook_z" for l in range(L)]
    missing = [x for x in names if x not in bridge.hook_dict]
    if missing:
        raise PatchingError(f"the model has no hook point(s) {missing[:2]}; per-head patching is not supported for it")
    rows = torch.arange(n)
    end, ans = dataset.positions["END"], dataset.answer_tokens

    def metric(logits):
        at = logits[torch.arange(len(logits)), end.repeat(len(logits) // n).to(logits.device)].double().cpu()
        a = ans.repeat(len(logits) // n, 1)
        return at.gather(1, a[:, :1]).squeeze(1) - at.gather(1, a[:, 1:]).squeeze(1)

    def cache(tokens):
        store = {}
        grab = lambda act, hook: store.__setitem__(hook.name, act.detach().clone())
        with model.lock, torch.no_grad():
            logits = bridge.run_with_hooks(tokens.to(dev), fwd_hooks=[(x, grab) for x in names])
        return store, metric(logits)

    clean_z, clean = cache(dataset.tokens)
    corr_z, corr = cache(dataset.reference_tokens)
    base_tokens, source = (dataset.reference_tokens, clean_z) if direction == "denoise" else (dataset.tokens, corr_z)
    patched = torch.zeros(L, H, len(roles), n, dtype=torch.float64)
    S, eye = dataset.tokens.shape[1], torch.eye(H, dtype=torch.bool, device=dev)
    done, total = 0, L * len(roles)
    for layer in range(L):
        for i, role in enumerate(roles):
            where = _positions_mask(dataset, role, rows, S, dev)
            mask = (eye[:, None, None, :] & where[None, :, :, None]).flatten(0, 1)[..., None]  # [H*N, S, H, 1]
            src = source[names[layer]].repeat(H, 1, 1, 1)

            def put(z, hook, src=src, mask=mask):
                return torch.where(mask, src, z)

            with model.lock, torch.no_grad():
                logits = bridge.run_with_hooks(base_tokens.repeat(H, 1).to(dev), fwd_hooks=[(names[layer], put)])
            patched[layer, :, i] = metric(logits).view(H, n)
            done += 1
            if progress is not None:
                progress(done, total)
            if should_stop is not None and should_stop():
                raise Cancelled()
    return patched, clean, corr


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
                  max_batch: int = 512, bootstrap: int = 1000, seed: int = 0, progress=None,
                  should_stop=None) -> PatchingResult:
    """Each sender head's effect through `receivers` only ("logits" or a list of (layer, head)); see the
    module doc. Senders in or after the earliest receiver's layer have no path: NaN."""
    _check_paired(dataset)
    if model.blocks is None:
        raise PatchingError("path patching runs the model's blocks, which this architecture does not provide "
                            "(GPT-2-style models do); activation patching works on it")
    L, H, n = model.n_layers, model.n_heads, dataset.n
    to_logits = receivers == "logits"
    if not to_logits:
        receivers = sorted(set(map(tuple, receivers)))
        bad = [h for h in receivers if not (0 <= h[0] < L and 0 <= h[1] < H)]
        if bad:
            raise PatchingError(f"receiver(s) {', '.join(map(head_name, bad))} not in this {L}×{H} model")
        if receiver_input not in INPUTS:
            raise PatchingError(f"receiver input must be one of {', '.join(INPUTS)} (got {receiver_input!r})")
        if receiver_role is not None and receiver_role not in dataset.positions:
            raise PatchingError(f"unknown receiver position {receiver_role!r}; this task has {', '.join(dataset.roles)}")
    first = L if to_logits else min(l for l, _ in receivers)
    b, r = model.blocks, _Runner(model, dataset)
    which = [i for i, c in enumerate("qkv") if c in receiver_input]
    patched = torch.full((L, H, n), float("nan"), dtype=torch.float64)
    clean_m, corr_m = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    per = max(1, max_batch // H)
    total, done = first * ((n + per - 1) // per), 0
    S = dataset.tokens.shape[1]
    eye = torch.eye(H, device=r.device)
    with torch.no_grad():
        for rows in _chunks(n, per):
            dev_rows, P = rows.to(r.device), len(rows)
            clean = r.run(dataset.tokens[rows].to(r.device))
            corr = r.run(dataset.reference_tokens[rows].to(r.device))
            clean_m[rows], corr_m[rows] = r.metric(clean["final"], dev_rows).cpu(), r.metric(corr["final"], dev_rows).cpu()
            where = (None if receiver_role is None or to_logits else
                     _positions_mask(dataset, receiver_role, rows, S, r.device).repeat(H, 1))
            for layer in range(first):
                # (b) batch k: sender (layer, k) corrupted, every other head frozen clean, MLPs recomputed
                dz = (corr["z"][layer] - clean["z"][layer])[None] * eye[:, None, None, :, None]  # [H, P, S, H, d]
                x = clean["resid"][layer].repeat(H, 1, 1) + 0.0
                seen = {}
                for j in range(layer, L):
                    seen[j] = x  # the residual entering layer j, as the receivers there would read it
                    out = clean["attn_out"][j].repeat(H, 1, 1)
                    if j == layer:
                        out = out + b.heads_out(layer, dz.flatten(0, 1), torch.arange(H, device=r.device))
                    x = b.mlp(j, x + out)
                if to_logits:
                    metric = r.metric(x, dev_rows)
                else:
                    # (c) the clean run, with only the receivers' inputs taken from (b)
                    y = clean["resid"][first].repeat(H, 1, 1)
                    for j in range(first, L):  # receivers may sit in the last layer: all positions, kept simple
                        z = b.attend(j, y, None)
                        heads = [h for l, h in receivers if l == j]
                        if heads:
                            idx = torch.tensor(heads, device=r.device)
                            qkv_clean, qkv_sent = b.qkv(j, y, idx), b.qkv(j, seen[j], idx)  # [P, S, 3, h, d]
                            mixed = qkv_clean.clone()
                            for c in which:
                                sent = qkv_sent[:, :, c]
                                if where is not None:
                                    sent = torch.where(where[:, :, None, None], sent, qkv_clean[:, :, c])
                                mixed[:, :, c] = sent
                            q, k, v = mixed.permute(2, 0, 3, 1, 4)
                            zr = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                                   scale=b.scale).transpose(1, 2)
                            z = z.clone()
                            z[:, :, idx] = zr
                        y = b.mlp(j, y + b.attn_out(j, z))
                    metric = r.metric(y, dev_rows)
                patched[layer, :, rows] = metric.view(H, P).cpu()
                done += 1
                if progress is not None:
                    progress(done, total)
                if should_stop is not None and should_stop():
                    raise Cancelled()
    if (clean_m.mean() - corr_m.mean()).abs() < 1e-9:
        raise PatchingError("F(clean) equals F(corrupted): the corruption changes nothing, so no effect can be normalised")
    valid = patched[:first].reshape(-1, n)
    point, lo, hi, F_int = _effects(valid, clean_m, corr_m, "noise", bootstrap, seed)
    full = lambda t: torch.cat([t.view(first, H), torch.full((L - first, H), float("nan"), dtype=t.dtype)]).float()
    label = "logits" if to_logits else f"{receiver_input} of {', '.join(map(head_name, receivers))}" + (
        f" at {receiver_role}" if receiver_role else "")
    return PatchingResult("path", "noise", [], full(point), full(lo), full(hi), float(clean_m.mean()),
                          float(corr_m.mean()), F_int, n, dataset.task, receivers=label,
                          settings={"bootstrap": bootstrap, "seed": seed,
                                    "interval_method": "bootstrap over prompt pairs"})


# --- from a map to a circuit -------------------------------------------------------------------------------
def start_from_patching(result: PatchingResult, top_k: int | None = None,
                        threshold: float | None = None) -> dict[Head, str]:
    """Heads to start a circuit from: each at the role where its effect is largest (activation
    patching; "*" only when no single role comes close), keeping the top k by that effect and/or those
    whose interval lies wholly above `threshold`."""
    eff, lo = result.effects, result.lo
    if result.kind == "activation":
        single = eff[..., :-1] if len(result.roles) > 1 else eff
        best = torch.nan_to_num(single, nan=-float("inf")).argmax(-1)  # [L, H]
        val = single.gather(-1, best[..., None])[..., 0]
        low = lo[..., :-1].gather(-1, best[..., None])[..., 0] if len(result.roles) > 1 else lo[..., 0]
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
