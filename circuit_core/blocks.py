"""Transformer blocks as plain tensors: the one seam the evaluator computes through.

Running the blocks ourselves, instead of through hooks, lets the evaluator do less work than a hooked
forward pass:
- queries, keys and values only for heads that are not ablated everywhere (an ablated head's output
  is its stored value);
- at the last layer, attention and MLP only at the answer position;
- no unembedding: only the two answer logits (one dot product with W_U[:, correct] - W_U[:, wrong]
  where the logits are linear in the final residual).
A head's z (`hook_z`) is its attention-weighted values, value bias included, before the output
projection (o_proj / dense / c_proj input), [..., head, d_head]; with grouped-query attention every
query head has its own z (its group's keys and values).

The seam (every architecture): `embed`, `attend`, `attend_at`, `attn_out`, `heads_out`, `after_attn`
(the layer's output from its input and its attention output: sequential or parallel attention + MLP,
extra norms), `answer_direction` / `readout`, `head_outputs`. Two implementations:
- `GPT2Blocks`: GPT-2-style models, from the TransformerLens weights, with the older per-piece methods
  (`qkv`, `mlp`, `scale`, `layers[l].W_O`) that patching.py uses;
- `DecoderBlocks`: every other decoder the bridge loads in the families below: rotary positions
  (partial, GPT-J's interleaved pairs, the model's own rope scaling), grouped-query attention, LayerNorm
  or RMSNorm (Gemma's 1 + w), parallel attention and MLP (GPT-NeoX, GPT-J), gated MLPs, Gemma-2's extra
  norms, attention and final logit soft-capping, query_pre_attn_scalar, sliding windows, embedding
  scaling and a head dimension other than d_model / n_heads.
`Blocks.from_model` picks one, or returns None for what neither describes; `LoadedModel.blocks` checks
the result against the model's own logits once, so a wrong description means hooks, not wrong numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


class Blocks:
    """The seam the evaluator computes through (see the module doc). Subclasses give the pieces;
    this class gives what follows from them."""

    n_layers: int
    n_heads: int
    d_head: int
    parallel: bool = False  # attention and MLP read the same input (the MLP's part: `parallel_mlp`)
    final_softcap: float | None = None  # logits = cap * tanh(logits / cap): not linear in the residual
    additive_heads: bool = True  # each head's output enters the residual as z W_O (no norm after attention)

    # --- construction -----------------------------------------------------------------------------
    @staticmethod
    def from_model(model) -> "Blocks | None":
        """The model's blocks, or None for an architecture neither implementation describes (the
        caller checks them against the model's own logits: `agrees_with`)."""
        blocks = GPT2Blocks.from_model(model)
        return blocks if blocks is not None else DecoderBlocks.from_model(model)

    def held_tensors(self) -> list[torch.Tensor]:
        """Every tensor these blocks hold (in attributes, lists and the small objects they keep), for
        counting the weights' storage once (bench.memory, tests/core/test_memory.py)."""
        out = []

        def walk(obj, depth=0):
            if isinstance(obj, torch.Tensor):
                out.append(obj)
            elif isinstance(obj, (list, tuple)):
                for x in obj:
                    walk(x, depth)
            elif hasattr(obj, "__dict__") and depth < 3:
                for x in vars(obj).values():
                    walk(x, depth + 1)

        walk(self)
        return out

    # --- what every implementation gives ------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def attend(self, layer: int, x: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor:
        """z of `heads` (None: all) at every position: [P, S, heads, d_head] (causal attention)."""
        raise NotImplementedError

    def attend_from(self, layer: int, x: torch.Tensor, start: int, heads: torch.Tensor | None) -> torch.Tensor:
        """z of `heads` at the query positions from `start` on (keys and values at every position):
        [P, S - start, heads, d_head]. Here all of it, then cut; subclasses compute only those queries."""
        return self.attend(layer, x, heads)[:, start:]

    def attend_at(self, layer: int, x: torch.Tensor, end: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor:
        """z of `heads` at one query position per row (`end`): [P, heads, d_head]."""
        raise NotImplementedError

    def attn_out(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Every head's z [..., head, d_head] through the output projection, plus its bias."""
        raise NotImplementedError

    def attend_inputs(self, layer: int, inputs, heads: torch.Tensor, end: torch.Tensor | None = None) -> torch.Tensor:
        """z of `heads` whose queries, keys and values read three residuals (inputs: x_q, x_k, x_v, each
        [P, S, d_model], normalised apart): [P, S, heads, d_head], or [P, heads, d_head] at one query
        position per row (`end`). For edge-level circuits: a receiver's input without some senders."""
        raise NotImplementedError

    def heads_out(self, layer: int, z: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """Some heads' z [..., len(heads), d_head] through their rows of the output projection (no bias)."""
        raise NotImplementedError

    def parallel_mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        """Parallel attention + MLP: the MLP's output on the layer's input x, the same whatever the
        attention does (so siblings in the evaluator's prefix tree share it); None otherwise."""
        return None

    def after_attn(self, layer: int, x: torch.Tensor, attn_out: torch.Tensor,
                   mlp_out: torch.Tensor | None = None) -> torch.Tensor:
        """The layer's output from its input x and its attention output (`attn_out`'s result);
        mlp_out: `parallel_mlp(layer, x)` when already computed."""
        raise NotImplementedError

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every logit [..., vocab] from the final residual (for checks: the evaluator reads two)."""
        raise NotImplementedError

    def answer_direction(self, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per prompt, what `readout` needs to give logit[correct] - logit[wrong]: the direction in the
        final normalised residual and its bias, [N, d_model] and [N]; with a final logit soft-cap the two
        answers' unembedding columns and biases, [N, 2, d_model] and [N, 2]."""
        raise NotImplementedError

    def readout(self, x_end: torch.Tensor, direction: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """logit[correct] - logit[wrong] from the final residual [P, d_model] (`answer_direction`'s terms)."""
        h = self.final_norm(x_end)
        if direction.dim() == h.dim() + 1:  # the two logits, soft-capped, then their difference
            logits = (h[:, None, :] * direction).sum(-1) + bias
            if self.final_softcap:
                logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
            return logits[:, 0] - logits[:, 1]
        return (h * direction).sum(-1) + bias

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- what follows from the pieces -------------------------------------------------------------------
    def layer(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """One intact layer on x [P, S, d_model]."""
        return self.after_attn(layer, x, self.attn_out(layer, self.attend(layer, x, None)))

    def head_outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """z of every head at every layer on clean tokens: [B, S, layer, head, d_head] (no unembedding)."""
        x, out = self.embed(tokens), []
        for layer in range(self.n_layers):
            z = self.attend(layer, x, None)
            out.append(z)
            if layer < self.n_layers - 1:
                x = self.after_attn(layer, x, self.attn_out(layer, z))
        return torch.stack(out, 2)

    def agrees_with(self, bridge, tokens: torch.Tensor, tol: float = 1e-3) -> bool:
        """Whether these blocks give the bridge's own logits on `tokens` (up to float error: `tol` of the
        largest logit; a wrong description is off by far more)."""
        logits = bridge(tokens).float()
        x = self.embed(tokens)
        for layer in range(self.n_layers):
            x = self.layer(layer, x)
        ours = self.final_logits(x).float()
        # logits may be centred by the bridge: compare differences from the mean over the vocabulary
        d = (ours - ours.mean(-1, keepdim=True)) - (logits - logits.mean(-1, keepdim=True))
        return bool(d.abs().max() < tol * max(1.0, float(logits.abs().max())))

    # --- one copy of the weights ---------------------------------------------------------------------
    def weight_pairs(self, bridge) -> list[tuple]:
        """(module, parameter name, this object's tensor in [in, out] layout, force) for every bridge
        parameter these blocks hold the values of; force: the parameter is a stale copy nothing reads
        (GPT-2's fused c_attn, which the bridge split into q / k / v at load and processed apart)."""
        return []

    def share_weights(self, bridge) -> int:
        """Make the bridge's parameters views of these blocks' tensors wherever both hold the same values
        (in either layout), so the weights are held once; the hooked path then computes with the same
        numbers, read through a view. Nothing writes into either (blocks.py and the bridge's forward
        pass only read). Returns the number of parameters rebound."""
        n = 0
        with torch.no_grad():
            for module, name, tensor, force in self.weight_pairs(bridge):
                n += _rebind(module, name, tensor, force)
        return n


@dataclass
class Layer:
    ln1: tuple[torch.Tensor, torch.Tensor]
    W_qkv: torch.Tensor  # [d_model, 3, head, d_head]
    b_qkv: torch.Tensor  # [3, head, d_head]
    W_O: torch.Tensor  # [head, d_head, d_model]
    b_O: torch.Tensor  # [d_model]
    ln2: tuple[torch.Tensor, torch.Tensor]
    W_in: torch.Tensor
    b_in: torch.Tensor
    W_out: torch.Tensor
    b_out: torch.Tensor


class GPT2Blocks(Blocks):
    """Embedding, per-layer attention / MLP pieces and the final norm of a GPT-2-style model, from the
    TransformerLens weights (W_Q [layer, head, d_model, d_head], ...). Also the per-piece methods
    patching.py uses: `qkv`, `mlp`, `scale`, `norm` and `layers[l]`."""

    def __init__(self, W_E, W_pos, layers: list[Layer], ln_final, W_U, b_U, eps: float, act, scale: float):
        self.W_E, self.W_pos, self.layers = W_E, W_pos, layers
        self.ln_final, self.W_U, self.b_U = ln_final, W_U, b_U
        self.eps, self.act, self.scale = eps, act, scale
        self.n_layers = len(layers)
        self.n_heads, self.d_head = layers[0].W_O.shape[:2]

    # --- construction -----------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model) -> "GPT2Blocks | None":
        from transformers.activations import ACT2FN

        bridge, cfg = model.bridge, model.bridge.cfg
        plain = (str(getattr(cfg, "normalization_type", "")) in ("LN", "LNPre")
                 and getattr(cfg, "positional_embedding_type", "") == "standard"
                 and not getattr(cfg, "parallel_attn_mlp", False) and not getattr(cfg, "attn_only", False)
                 and getattr(cfg, "n_key_value_heads", None) in (None, cfg.n_heads)
                 and not getattr(cfg, "scale_attn_by_inverse_layer_idx", False)
                 and getattr(cfg, "act_fn", None) in ACT2FN and getattr(cfg, "use_attn_scale", True))
        if not plain:
            return None
        try:
            with torch.no_grad():
                # Layer by layer from the bridge's own modules (not the stacked bridge.W_Q, ...: each of
                # those is a fresh copy of every layer): W_O and the MLP's weights are then views of the
                # bridge's parameters where their layout is already this one; W_qkv is the one new tensor,
                # and `share_weights` makes the bridge's q / k / v views of it.
                names = ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V", "W_O", "b_O", "W_in", "b_in", "W_out", "b_out")
                W = {n: _per_layer(bridge, n) for n in names}
                layers = []
                for l, block in enumerate(bridge.blocks):
                    layers.append(Layer(
                        ln1=_norm_params(block.ln1), ln2=_norm_params(block.ln2),
                        W_qkv=torch.stack([W["W_Q"][l], W["W_K"][l], W["W_V"][l]], 1).permute(2, 1, 0, 3).contiguous(),
                        b_qkv=torch.stack([W["b_Q"][l], W["b_K"][l], W["b_V"][l]]).contiguous(),
                        W_O=W["W_O"][l].contiguous(), b_O=W["b_O"][l].contiguous(),
                        W_in=W["W_in"][l].contiguous(), b_in=W["b_in"][l].contiguous(),
                        W_out=W["W_out"][l].contiguous(), b_out=W["b_out"][l].contiguous()))
                b_U = getattr(bridge, "b_U", None)
                return cls(bridge.W_E.detach(), bridge.W_pos.detach(), layers, _norm_params(bridge.ln_final),
                           bridge.W_U.detach(), None if b_U is None else b_U.detach(), float(cfg.eps),
                           _activation(cfg.act_fn), 1.0 / float(cfg.d_head) ** 0.5)
        except Exception:  # a bridge without these attributes: the evaluator falls back to hooks
            return None

    # --- pieces -------------------------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.W_E[tokens] + self.W_pos[: tokens.shape[1]]

    def norm(self, x, params):
        w, b = params
        return F.layer_norm(x, (x.shape[-1],), w, b, self.eps)

    def qkv(self, layer: int, x: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor:
        """Queries, keys and values of `heads` (None: all): [..., 3, heads, d_head]."""
        lw = self.layers[layer]
        W, b = (lw.W_qkv, lw.b_qkv) if heads is None else (lw.W_qkv[:, :, heads], lw.b_qkv[:, heads])
        h = self.norm(x, lw.ln1)
        return (h @ W.reshape(W.shape[0], -1)).view(*x.shape[:-1], *b.shape) + b

    def attend(self, layer: int, x: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor:
        """z of `heads` at every position: [P, S, heads, d_head] (causal attention)."""
        q, k, v = self.qkv(layer, x, heads).permute(2, 0, 3, 1, 4)  # each [P, heads, S, d_head]
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return z.transpose(1, 2)

    def attend_from(self, layer: int, x: torch.Tensor, start: int, heads: torch.Tensor | None) -> torch.Tensor:
        """z of `heads` at the query positions from `start` on, attending to every earlier position:
        [P, S - start, heads, d_head]."""
        q, k, v = self.qkv(layer, x, heads).permute(2, 0, 3, 1, 4)  # each [P, heads, S, d_head]
        S = x.shape[1]
        visible = torch.arange(S, device=x.device)[None, :] <= torch.arange(start, S, device=x.device)[:, None]
        z = F.scaled_dot_product_attention(q[:, :, start:], k, v, attn_mask=visible, scale=self.scale)
        return z.transpose(1, 2)

    def attend_at(self, layer: int, x: torch.Tensor, end: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor:
        """z of `heads` at one query position per row (`end`): [P, heads, d_head]."""
        rows = torch.arange(len(x), device=x.device)
        lw = self.layers[layer]
        W, b = (lw.W_qkv, lw.b_qkv) if heads is None else (lw.W_qkv[:, :, heads], lw.b_qkv[:, heads])
        h = self.norm(x, lw.ln1)
        kv = (h @ W[:, 1:].reshape(W.shape[0], -1)).view(*x.shape[:-1], *b[1:].shape) + b[1:]
        q = (h[rows, end] @ W[:, 0].reshape(W.shape[0], -1)).view(len(x), *b.shape[1:]) + b[0]
        k, v = kv.permute(2, 0, 3, 1, 4)  # [P, heads, S, d_head]
        visible = torch.arange(x.shape[1], device=x.device)[None, :] <= end[:, None]  # [P, S]
        z = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=visible[:, None, None, :], scale=self.scale)
        return z[:, :, 0]

    def attend_inputs(self, layer: int, inputs, heads: torch.Tensor, end: torch.Tensor | None = None) -> torch.Tensor:
        lw = self.layers[layer]
        W, b = lw.W_qkv[:, :, heads], lw.b_qkv[:, heads]
        normed = _normed(inputs, lambda x: self.norm(x, lw.ln1))
        q, k, v = ((h @ W[:, i].reshape(W.shape[0], -1)).view(*h.shape[:-1], *b.shape[1:]) + b[i]
                   for i, h in enumerate(normed))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [P, heads, S, d_head]
        if end is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale).transpose(1, 2)
        rows = torch.arange(len(q), device=q.device)
        visible = torch.arange(k.shape[2], device=q.device)[None, :] <= end[:, None]
        z = F.scaled_dot_product_attention(q[rows, :, end][:, :, None], k, v, attn_mask=visible[:, None, None, :],
                                           scale=self.scale)
        return z[:, :, 0]

    def attn_out(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Every head's z [..., head, d_head] through W_O, plus b_O."""
        lw = self.layers[layer]
        return z.flatten(-2) @ lw.W_O.flatten(0, 1) + lw.b_O

    def heads_out(self, layer: int, z: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        """Some heads' z [..., len(heads), d_head] through their rows of W_O (no bias)."""
        return z.flatten(-2) @ self.layers[layer].W_O[heads].flatten(0, 1)

    def mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """x plus the MLP's output on it."""
        lw = self.layers[layer]
        return x + self.act(self.norm(x, lw.ln2) @ lw.W_in + lw.b_in) @ lw.W_out + lw.b_out

    def answer_direction(self, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per prompt, the direction and bias in the final normalised residual whose dot product
        is logit[correct] - logit[wrong]: [N, d_model], [N]."""
        correct, wrong = answers[:, 0], answers[:, 1]
        direction = (self.W_U[:, correct] - self.W_U[:, wrong]).T.contiguous()
        bias = self.b_U[correct] - self.b_U[wrong] if self.b_U is not None else torch.zeros(len(answers))
        return direction, bias

    def after_attn(self, layer: int, x: torch.Tensor, attn_out: torch.Tensor,
                   mlp_out: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlp(layer, x + attn_out)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x, self.ln_final)

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(x) @ self.W_U + (self.b_U if self.b_U is not None else 0)

    def weight_pairs(self, bridge) -> list[tuple]:
        out = []
        for lw, block in zip(self.layers, bridge.blocks):
            d = lw.W_qkv.shape[0]
            attn, mlp = block.attn, block.mlp
            for i, part in enumerate(("q", "k", "v")):
                out += _linear_pairs(getattr(attn, part, None), lw.W_qkv[:, i].reshape(d, -1), lw.b_qkv[i].reshape(-1))
            out += _linear_pairs(getattr(attn, "o", None), lw.W_O.reshape(-1, lw.W_O.shape[-1]), lw.b_O)
            out += _linear_pairs(getattr(mlp, "in", None), lw.W_in, lw.b_in)
            out += _linear_pairs(getattr(mlp, "out", None), lw.W_out, lw.b_out)
            fused = getattr(_original(attn), "c_attn", None)  # split at load: stale, read by nothing
            if fused is not None:
                out += [(fused, "weight", lw.W_qkv.reshape(d, -1), True), (fused, "bias", lw.b_qkv.reshape(-1), True)]
        return out

    def to(self, device) -> "GPT2Blocks":
        move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t
        for lw in self.layers:
            for name, value in vars(lw).items():
                setattr(lw, name, tuple(map(move, value)) if isinstance(value, tuple) else move(value))
        self.W_E, self.W_pos, self.W_U, self.b_U = map(move, (self.W_E, self.W_pos, self.W_U, self.b_U))
        self.ln_final = tuple(map(move, self.ln_final))
        return self


@dataclass
class Norm:
    """A LayerNorm (bias may be zero) or an RMSNorm (`offset`: Gemma's x * (1 + w))."""

    kind: str  # "ln" or "rms"
    weight: torch.Tensor
    bias: torch.Tensor | None
    eps: float
    offset: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "ln":
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        w = self.weight.float()
        return (h * (1.0 + w) if self.offset else h * w).to(x.dtype)


@dataclass
class DecoderLayer:
    ln1: Norm  # the attention's input norm
    W_Q: torch.Tensor  # [d_model, head, d_head]
    b_Q: torch.Tensor  # [head, d_head]
    W_KV: torch.Tensor  # [d_model, 2, kv_head, d_head]
    b_KV: torch.Tensor  # [2, kv_head, d_head]
    W_O: torch.Tensor  # [head, d_head, d_model]
    b_O: torch.Tensor | None  # [d_model]
    ln2: Norm  # the MLP's input norm (parallel: on the layer's input; GPT-J: ln1 again)
    W_in: torch.Tensor  # [d_model, d_mlp]
    b_in: torch.Tensor | None
    W_gate: torch.Tensor | None  # gated MLPs: act(x W_gate) * (x W_in)
    W_out: torch.Tensor  # [d_mlp, d_model]
    b_out: torch.Tensor | None
    ln1_post: Norm | None = None  # Gemma-2: on the attention output before the residual
    ln2_post: Norm | None = None  # Gemma-2: on the MLP output before the residual
    window: int | None = None  # sliding-window attention: a query sees the last `window` positions
    softcap: float | None = None  # attention scores: cap * tanh(scores / cap)


class DecoderBlocks(Blocks):
    """Any decoder of the families in the module doc, from the bridge's (processed) TransformerLens
    weights, the norms' own parameters and the Hugging Face model's configuration (rotary tables from
    its own rotary module, scaling, soft-caps, windows)."""

    def __init__(self, W_E, embed_scale: float, W_pos, layers: list[DecoderLayer], ln_final: Norm, W_U, b_U,
                 act, scale: float, rotary: tuple | None, parallel: bool, final_softcap: float | None):
        self.W_E, self.embed_scale, self.W_pos, self.layers = W_E, embed_scale, W_pos, layers
        self.ln_final, self.W_U, self.b_U, self.act, self.scale = ln_final, W_U, b_U, act, scale
        self.rotary = rotary  # (cos [S, rot], sin [S, rot], interleaved) or None
        self.parallel, self.final_softcap = parallel, final_softcap
        self.n_layers = len(layers)
        self.n_heads, self.d_head = layers[0].W_O.shape[:2]
        self.group = self.n_heads // layers[0].W_KV.shape[2]  # query heads per key/value head
        self.additive_heads = all(lw.ln1_post is None for lw in layers)

    # --- construction -----------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model) -> "DecoderBlocks | None":
        bridge = model.bridge
        hf = getattr(bridge, "original_model", None)
        if hf is None or getattr(bridge.cfg, "attn_only", False):
            return None
        try:
            with torch.no_grad():
                return cls._build(bridge, hf)
        except Exception:  # an architecture this class does not describe: the evaluator uses hooks
            return None

    @classmethod
    def _build(cls, bridge, hf) -> "DecoderBlocks | None":
        cfg, hcfg = bridge.cfg, getattr(hf.config, "text_config", None) or hf.config
        if getattr(hcfg, "is_encoder_decoder", False) or getattr(cfg, "use_qk_norm", False):
            return None
        # Per layer, views of the bridge's parameters (not the stacked bridge.W_Q, ...: fresh copies of
        # every layer); `.contiguous()` below copies only where the layout differs, and `share_weights`
        # then makes the bridge's parameters views of those copies.
        W = lambda name: _per_layer(bridge, name)
        W_Q, W_K, W_V, W_O = W("W_Q"), W("W_K"), W("W_V"), W("W_O")
        if any(t is None for t in (W_Q, W_K, W_V, W_O)):
            return None
        H, d, dh = W_Q[0].shape
        zeros = lambda *shape: torch.zeros(*shape, dtype=W_Q[0].dtype, device=W_Q[0].device)
        b_Q, b_K, b_V = (W(n) if W(n) is not None else list(zeros(len(t), t[0].shape[0], dh))
                         for n, t in (("b_Q", W_Q), ("b_K", W_K), ("b_V", W_V)))
        b_O, W_in, b_in, W_gate, W_out, b_out = (W(n) for n in ("b_O", "W_in", "b_in", "W_gate", "W_out", "b_out"))
        if W_in is None or W_out is None:
            return None
        parallel = bool(getattr(cfg, "parallel_attn_mlp", False))
        layers = []
        for l, block in enumerate(bridge.blocks):
            attn = _original(block.attn)
            ln1 = _norm(block.ln1)
            ln2 = _norm(block.ln2) if hasattr(block, "ln2") else (ln1 if parallel else None)
            if ln2 is None:
                return None
            post = lambda name: _norm(getattr(block, name)) if hasattr(block, name) else None
            cap = getattr(attn, "attn_logit_softcapping", None) or getattr(hcfg, "attn_logit_softcapping", None)
            window = getattr(attn, "sliding_window", None)
            layers.append(DecoderLayer(
                ln1=ln1, W_Q=W_Q[l].permute(1, 0, 2).contiguous(), b_Q=b_Q[l].contiguous(),
                W_KV=torch.stack([W_K[l], W_V[l]]).permute(2, 0, 1, 3).contiguous(),
                b_KV=torch.stack([b_K[l], b_V[l]]).contiguous(), W_O=W_O[l].contiguous(),
                b_O=None if b_O is None else b_O[l].contiguous(), ln2=ln2,
                W_in=W_in[l].contiguous(), b_in=None if b_in is None else b_in[l].contiguous(),
                W_gate=None if W_gate is None else W_gate[l].contiguous(), W_out=W_out[l].contiguous(),
                b_out=None if b_out is None else b_out[l].contiguous(),
                ln1_post=post("ln1_post"), ln2_post=post("ln2_post"),
                window=int(window) if window else None, softcap=float(cap) if cap else None))
        attn0 = _original(bridge.blocks[0].attn)
        scale = getattr(attn0, "scaling", None)
        if scale is None:
            scale = 1.0 / float(getattr(attn0, "scale_attn", dh ** 0.5))
        embed = _original(bridge.embed)
        embed_scale = float(getattr(embed, "embed_scale", 1.0))
        W_pos = _original(bridge.pos_embed).weight.detach() if hasattr(bridge, "pos_embed") else None
        final_cap = getattr(hcfg, "final_logit_softcapping", None)
        b_U = getattr(bridge, "b_U", None)
        act_name = (getattr(hcfg, "hidden_activation", None) or getattr(hcfg, "hidden_act", None)
                    or getattr(hcfg, "activation_function", None) or cfg.act_fn)
        n_pos = int(getattr(hcfg, "max_position_embeddings", 0) or getattr(hcfg, "n_positions", 0) or 2048)
        rotary = _rotary(bridge, attn0, n_pos, W_Q[0].dtype, W_Q[0].device) if W_pos is None else None
        if W_pos is None and rotary is None:
            return None
        return cls(embed.weight.detach(), embed_scale, W_pos, layers, _norm(bridge.ln_final),
                   bridge.W_U.detach(), None if b_U is None else b_U.detach(), _activation(act_name),
                   float(scale), rotary, parallel, float(final_cap) if final_cap else None)

    # --- pieces -------------------------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.W_E[tokens]
        if self.embed_scale != 1.0:
            x = x * torch.tensor(self.embed_scale, dtype=x.dtype)
        return x + self.W_pos[: tokens.shape[1]] if self.W_pos is not None else x

    def _rotate(self, t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotary positions on queries or keys t [..., positions, heads, d_head] (positions: [S] or [P])."""
        if self.rotary is None:
            return t
        cos, sin, interleaved = self.rotary
        cos, sin = cos[positions][..., None, :], sin[positions][..., None, :]  # [(P,) S, 1, rot]
        rot = cos.shape[-1]
        t_rot, t_pass = t[..., :rot], t[..., rot:]
        if interleaved:  # GPT-J: pairs of adjacent dimensions
            x1, x2 = t_rot[..., ::2], t_rot[..., 1::2]
            turned = torch.stack((-x2, x1), -1).flatten(-2)
        else:
            x1, x2 = t_rot[..., : rot // 2], t_rot[..., rot // 2:]
            turned = torch.cat((-x2, x1), -1)
        return torch.cat([t_rot * cos + turned * sin, t_pass], -1)

    def _project(self, layer: int, h: torch.Tensor, heads: torch.Tensor | None):
        """Keys and values of the key/value heads `heads` need, one per query head: [..., 2, heads, d_head]."""
        lw = self.layers[layer]
        kv_heads = None if heads is None else heads // self.group
        if kv_heads is None and self.group == 1:
            W, b, pick = lw.W_KV, lw.b_KV, None
        else:
            kv_heads = torch.arange(self.n_heads, device=h.device) // self.group if kv_heads is None else kv_heads
            needed, pick = torch.unique(kv_heads, return_inverse=True)
            W, b = lw.W_KV[:, :, needed], lw.b_KV[:, needed]
        kv = (h @ W.reshape(W.shape[0], -1)).view(*h.shape[:-1], *b.shape) + b
        return kv if pick is None else kv[..., pick, :]

    def _queries(self, layer: int, h: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor:
        lw = self.layers[layer]
        W, b = (lw.W_Q, lw.b_Q) if heads is None else (lw.W_Q[:, heads], lw.b_Q[heads])
        return (h @ W.reshape(W.shape[0], -1)).view(*h.shape[:-1], *b.shape) + b

    def _attention(self, layer: int, q, k, v, visible) -> torch.Tensor:
        """softmax(scores) v with q [P, h, Q, d], k and v [P, h, S, d], visible [(P, 1,) Q, S] bool."""
        cap = self.layers[layer].softcap
        if cap is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=visible, scale=self.scale)
        scores = (q @ k.transpose(-1, -2)) * self.scale
        scores = torch.tanh(scores / cap) * cap
        scores = scores.masked_fill(~visible, float("-inf"))
        return torch.softmax(scores.float(), -1).to(q.dtype) @ v

    def _visible(self, layer: int, query: torch.Tensor, S: int) -> torch.Tensor:
        """Which keys each query position sees: causal, and within the layer's sliding window."""
        keys = torch.arange(S, device=query.device)
        seen = keys <= query[..., None]
        window = self.layers[layer].window
        return seen & (keys > query[..., None] - window) if window else seen

    def attend(self, layer: int, x: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor:
        h = self.layers[layer].ln1(x)
        S = x.shape[1]
        positions = torch.arange(S, device=x.device)
        q = self._rotate(self._queries(layer, h, heads), positions)
        k, v = self._project(layer, h, heads).unbind(-3)
        k = self._rotate(k, positions)
        z = self._attention(layer, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                            self._visible(layer, positions, S))
        return z.transpose(1, 2)

    def attend_from(self, layer: int, x: torch.Tensor, start: int, heads: torch.Tensor | None) -> torch.Tensor:
        h = self.layers[layer].ln1(x)
        S = x.shape[1]
        positions = torch.arange(S, device=x.device)
        q = self._rotate(self._queries(layer, h[:, start:], heads), positions[start:])
        k, v = self._project(layer, h, heads).unbind(-3)
        k = self._rotate(k, positions)
        z = self._attention(layer, q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                            self._visible(layer, positions[start:], S))
        return z.transpose(1, 2)

    def attend_at(self, layer: int, x: torch.Tensor, end: torch.Tensor, heads: torch.Tensor | None) -> torch.Tensor:
        rows = torch.arange(len(x), device=x.device)
        h = self.layers[layer].ln1(x)
        S = x.shape[1]
        q = self._rotate(self._queries(layer, h[rows, end], heads), end)  # [P, heads, d]
        k, v = self._project(layer, h, heads).unbind(-3)  # [P, S, heads, d]
        k = self._rotate(k, torch.arange(S, device=x.device))
        z = self._attention(layer, q[:, :, None], k.transpose(1, 2), v.transpose(1, 2),
                            self._visible(layer, end, S)[:, None, None, :])
        return z[:, :, 0]

    def attend_inputs(self, layer: int, inputs, heads: torch.Tensor, end: torch.Tensor | None = None) -> torch.Tensor:
        h_q, h_k, h_v = _normed(inputs, self.layers[layer].ln1)
        S = h_k.shape[1]
        positions = torch.arange(S, device=h_k.device)
        k = self._rotate(self._project(layer, h_k, heads)[..., 0, :, :], positions).transpose(1, 2)
        v = self._project(layer, h_v, heads)[..., 1, :, :].transpose(1, 2)
        if end is None:
            q = self._rotate(self._queries(layer, h_q, heads), positions)
            return self._attention(layer, q.transpose(1, 2), k, v, self._visible(layer, positions, S)).transpose(1, 2)
        rows = torch.arange(len(h_q), device=h_q.device)
        q = self._rotate(self._queries(layer, h_q[rows, end], heads), end)  # [P, heads, d]
        z = self._attention(layer, q[:, :, None], k, v, self._visible(layer, end, S)[:, None, None, :])
        return z[:, :, 0]

    def attn_out(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        lw = self.layers[layer]
        out = z.flatten(-2) @ lw.W_O.flatten(0, 1)
        return out + lw.b_O if lw.b_O is not None else out

    def heads_out(self, layer: int, z: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        return z.flatten(-2) @ self.layers[layer].W_O[heads].flatten(0, 1)

    def _mlp(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """The MLP on its normalised input h."""
        lw = self.layers[layer]
        pre = h @ lw.W_in
        if lw.b_in is not None:
            pre = pre + lw.b_in
        mid = self.act(h @ lw.W_gate) * pre if lw.W_gate is not None else self.act(pre)
        out = mid @ lw.W_out
        out = out + lw.b_out if lw.b_out is not None else out
        return lw.ln2_post(out) if lw.ln2_post is not None else out

    def parallel_mlp(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        return self._mlp(layer, self.layers[layer].ln2(x)) if self.parallel else None

    def after_attn(self, layer: int, x: torch.Tensor, attn_out: torch.Tensor,
                   mlp_out: torch.Tensor | None = None) -> torch.Tensor:
        lw = self.layers[layer]
        if self.parallel:
            return x + attn_out + (mlp_out if mlp_out is not None else self.parallel_mlp(layer, x))
        x = x + (lw.ln1_post(attn_out) if lw.ln1_post is not None else attn_out)
        return x + self._mlp(layer, lw.ln2(x))

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln_final(x)

    def final_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.final_norm(x) @ self.W_U + (self.b_U if self.b_U is not None else 0)
        if self.final_softcap:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def answer_direction(self, answers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        correct, wrong = answers[:, 0], answers[:, 1]
        b_U = self.b_U if self.b_U is not None else torch.zeros(self.W_U.shape[1], device=self.W_U.device)
        if self.final_softcap:  # not linear: both logits
            return self.W_U[:, answers].permute(1, 2, 0).contiguous(), b_U[answers]
        return (self.W_U[:, correct] - self.W_U[:, wrong]).T.contiguous(), b_U[correct] - b_U[wrong]

    def weight_pairs(self, bridge) -> list[tuple]:
        out = []
        for lw, block in zip(self.layers, bridge.blocks):
            d = lw.W_Q.shape[0]
            attn, mlp = block.attn, block.mlp
            out += _linear_pairs(getattr(attn, "q", None), lw.W_Q.reshape(d, -1), lw.b_Q.reshape(-1))
            for i, part in enumerate(("k", "v")):
                out += _linear_pairs(getattr(attn, part, None), lw.W_KV[:, i].reshape(d, -1), lw.b_KV[i].reshape(-1))
            out += _linear_pairs(getattr(attn, "o", None), lw.W_O.reshape(-1, lw.W_O.shape[-1]), lw.b_O)
            out += _linear_pairs(getattr(mlp, "in", None), lw.W_in, lw.b_in)
            out += _linear_pairs(getattr(mlp, "gate", None), lw.W_gate, None)
            out += _linear_pairs(getattr(mlp, "out", None), lw.W_out, lw.b_out)
        return out

    def to(self, device) -> "DecoderBlocks":
        move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t

        def move_all(obj):
            for name, value in vars(obj).items():
                if isinstance(value, Norm):
                    move_all(value)
                else:
                    setattr(obj, name, move(value))

        for lw in self.layers:
            move_all(lw)
        move_all(self.ln_final)
        self.W_E, self.W_pos, self.W_U, self.b_U = map(move, (self.W_E, self.W_pos, self.W_U, self.b_U))
        if self.rotary is not None:
            self.rotary = (move(self.rotary[0]), move(self.rotary[1]), self.rotary[2])
        return self

    # --- the per-piece methods of GPT2Blocks, which cannot carry these architectures -------------------
    def _older_seam(self, *args, **kwargs):
        raise NotImplementedError(
            "This model's blocks are not GPT-2-style: qkv / mlp / scale do not describe rotary positions, "
            "parallel attention + MLP or extra norms; use attend / attend_at / after_attn (blocks.py).")

    qkv = mlp = _older_seam


def _normed(inputs, norm) -> list[torch.Tensor]:
    """norm of each input, computed once for inputs that are the same tensor (an input with no removed edge
    is the residual itself)."""
    out = []
    for i, x in enumerate(inputs):
        same = next((j for j in range(i) if inputs[j] is x), None)
        out.append(out[same] if same is not None else norm(x))
    return out


def _linear_pairs(component, weight: torch.Tensor | None, bias: torch.Tensor | None) -> list[tuple]:
    """weight_pairs entries for a bridge component wrapping a linear map (nn.Linear or Conv1D)."""
    module = _original(component) if component is not None else None
    if module is None or weight is None:
        return []
    return [(module, "weight", weight, False)] + ([(module, "bias", bias, False)] if bias is not None else [])


def _rebind(module, name: str, tensor: torch.Tensor, force: bool) -> int:
    """Point module.<name> at `tensor` ([in, out]) or its transpose, whichever has the parameter's shape
    and (unless force) its values: 1 when rebound, 0 when nothing fits or it is already that storage."""
    current = getattr(module, name, None)
    if not isinstance(current, torch.nn.Parameter) or current.dtype != tensor.dtype or current.device != tensor.device:
        return 0
    for candidate in ((tensor, tensor.T) if tensor.dim() == 2 else (tensor,)):
        if candidate.shape != current.shape:
            continue
        if candidate.data_ptr() == current.data_ptr() and candidate.stride() == current.stride():
            return 0
        if force or torch.equal(candidate, current):
            setattr(module, name, torch.nn.Parameter(candidate, requires_grad=current.requires_grad))
            return 1
        if force:
            break
    return 0


def _original(component):
    """The Hugging Face module a bridge component wraps (itself when it wraps none)."""
    return getattr(component, "_original_component", component)


def _stacked(bridge, name: str) -> torch.Tensor | None:
    """A TransformerLens weight stacked over layers (W_Q, b_K, W_gate, ...), detached; None when absent."""
    try:
        value = getattr(bridge, name)
    except AttributeError:
        return None
    return None if value is None else value.detach()


_WHERE = {"W_Q": "attn", "W_K": "attn", "W_V": "attn", "W_O": "attn", "b_Q": "attn", "b_K": "attn", "b_V": "attn",
          "b_O": "attn", "W_in": "mlp", "b_in": "mlp", "W_gate": "mlp", "W_out": "mlp", "b_out": "mlp"}


def _per_layer(bridge, name: str) -> list[torch.Tensor] | None:
    """A TransformerLens weight (W_Q, b_K, W_gate, ...) layer by layer, each what `bridge.<name>[l]` holds
    but read from the layer's own module: a view of the bridge's parameter, not a stacked copy; None when
    some layer lacks it (the stacked accessor raises or gives None then too)."""
    if name == "W_gate" and not getattr(bridge.cfg, "gated_mlp", False):
        return None
    reshape = {"W_Q": "_reshape_qkv", "W_K": "_reshape_qkv", "W_V": "_reshape_qkv", "W_O": "_reshape_o"}.get(name)
    reshape = getattr(bridge, reshape, None) if reshape else None
    out = []
    for block in bridge.blocks:
        try:
            value = getattr(getattr(block, _WHERE[name]), name)
        except AttributeError:
            return None
        if value is None:
            return None
        value = value.detach()
        out.append(reshape(value) if reshape is not None else value)
    return out


def _norm(bridge_norm) -> Norm:
    """A bridge's norm as plain parameters: nn.LayerNorm, or an RMSNorm (weight and eps attributes)."""
    m = _original(bridge_norm)
    if isinstance(m, torch.nn.LayerNorm):
        d = m.normalized_shape[0]
        w = m.weight.detach() if m.weight is not None else torch.ones(d)
        b = m.bias.detach() if m.bias is not None else None
        return Norm("ln", w, b, float(m.eps))
    if list(m.children()) or not hasattr(m, "weight"):
        raise TypeError(f"not a norm this file knows: {type(m).__name__}")
    eps = getattr(m, "variance_epsilon", None) or getattr(m, "eps")
    offset = type(m).__name__.startswith("Gemma")
    return Norm("rms", m.weight.detach(), None, float(eps), offset)


def _rotary(bridge, attn, n_pos: int, dtype, device):
    """(cos, sin, interleaved) tables [n_pos, rotary dims] in the layout the queries use, from the model's
    own rotary module (its rope scaling included); None when there is none."""
    positions = torch.arange(n_pos, device=device)
    if hasattr(attn, "embed_positions") and getattr(attn, "rotary_dim", None):  # GPT-J
        sincos = attn.embed_positions.to(device)[positions].float()
        sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)
        return (cos.repeat_interleave(2, -1).to(dtype), sin.repeat_interleave(2, -1).to(dtype), True)
    module = getattr(bridge, "rotary_emb", None)
    if module is None:
        return None
    module = _original(module)
    probe = torch.zeros(1, dtype=torch.float32, device=device)
    cos, sin = module(probe, positions[None])
    return cos[0].to(dtype), sin[0].to(dtype), False


def _activation(name: str):
    """The MLP's activation; GELU's tanh form as torch's fused kernel (about 8× faster on a CPU than
    the elementwise Python version, equal within 1e-6; the blocks are checked against the bridge)."""
    import torch.nn.functional as F
    from transformers.activations import ACT2FN

    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu
    return ACT2FN[name]


def _norm_params(bridge_norm) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a bridge's LayerNorm (the bridge folds them to 1 and 0 in compatibility mode)."""
    ln = next(m for m in bridge_norm.modules() if isinstance(m, torch.nn.LayerNorm))
    d = ln.normalized_shape[0]
    w = ln.weight.detach() if ln.weight is not None else torch.ones(d)
    b = ln.bias.detach() if ln.bias is not None else torch.zeros(d)
    return w, b
