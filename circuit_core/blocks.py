"""GPT-2-style transformer blocks as plain tensors: the one seam the evaluator computes through.

`Blocks.from_model` reads the weights the TransformerBridge exposes in TransformerLens' convention
(W_Q [layer, head, d_model, d_head], ...). Running the blocks ourselves, instead of through hooks,
lets the evaluator do less work than a hooked forward pass:
- queries, keys and values only for heads that are not ablated everywhere (an ablated head's output
  is its stored value);
- at the last layer, attention and MLP only at the answer position;
- no unembedding: the logit difference is one dot product with W_U[:, correct] - W_U[:, wrong].
A head's z (`hook_z`) is its attention-weighted values, value bias included, before W_O.

`from_model` returns None for architectures this file does not describe (rotary embeddings,
parallel attention and MLP, grouped-query attention, ...); the evaluator then uses hooks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


class Blocks:
    """Embedding, per-layer attention / MLP pieces and the final norm of a GPT-2-style model."""

    def __init__(self, W_E, W_pos, layers: list[Layer], ln_final, W_U, b_U, eps: float, act, scale: float):
        self.W_E, self.W_pos, self.layers = W_E, W_pos, layers
        self.ln_final, self.W_U, self.b_U = ln_final, W_U, b_U
        self.eps, self.act, self.scale = eps, act, scale
        self.n_layers = len(layers)
        self.n_heads, self.d_head = layers[0].W_O.shape[:2]

    # --- construction -----------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model) -> "Blocks | None":
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
                W_Q, W_K, W_V = (getattr(bridge, n).detach() for n in ("W_Q", "W_K", "W_V"))
                b_Q, b_K, b_V = (getattr(bridge, n).detach() for n in ("b_Q", "b_K", "b_V"))
                W_O, b_O = bridge.W_O.detach(), bridge.b_O.detach()
                W_in, b_in, W_out, b_out = (getattr(bridge, n).detach() for n in ("W_in", "b_in", "W_out", "b_out"))
                layers = []
                for l, block in enumerate(bridge.blocks):
                    layers.append(Layer(
                        ln1=_norm_params(block.ln1), ln2=_norm_params(block.ln2),
                        W_qkv=torch.stack([W_Q[l], W_K[l], W_V[l]], 1).permute(2, 1, 0, 3).contiguous(),
                        b_qkv=torch.stack([b_Q[l], b_K[l], b_V[l]]).contiguous(),
                        W_O=W_O[l].contiguous(), b_O=b_O[l].contiguous(),
                        W_in=W_in[l].contiguous(), b_in=b_in[l].contiguous(),
                        W_out=W_out[l].contiguous(), b_out=b_out[l].contiguous()))
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

    def readout(self, x_end: torch.Tensor, direction: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return (self.norm(x_end, self.ln_final) * direction).sum(-1) + bias

    def head_outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """z of every head at every layer on clean tokens: [B, S, layer, head, d_head] (no unembedding)."""
        x, out = self.embed(tokens), []
        for layer in range(self.n_layers):
            z = self.attend(layer, x, None)
            out.append(z)
            if layer < self.n_layers - 1:
                x = self.mlp(layer, x + self.attn_out(layer, z))
        return torch.stack(out, 2)

    def agrees_with(self, bridge, tokens: torch.Tensor) -> bool:
        """Whether these blocks give the bridge's own logits on `tokens` (up to float error)."""
        logits = bridge(tokens).float()
        x = self.embed(tokens)
        for layer in range(self.n_layers):
            x = self.mlp(layer, x + self.attn_out(layer, self.attend(layer, x, None)))
        ours = self.norm(x, self.ln_final) @ self.W_U + (self.b_U if self.b_U is not None else 0)
        # logits may be centred by the bridge: compare differences from the mean over the vocabulary
        d = (ours - ours.mean(-1, keepdim=True)) - (logits - logits.mean(-1, keepdim=True))
        return bool(d.abs().max() < 1e-3 * max(1.0, float(logits.abs().max())))

    def to(self, device) -> "Blocks":
        move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t
        for lw in self.layers:
            for name, value in vars(lw).items():
                setattr(lw, name, tuple(map(move, value)) if isinstance(value, tuple) else move(value))
        self.W_E, self.W_pos, self.W_U, self.b_U = map(move, (self.W_E, self.W_pos, self.W_U, self.b_U))
        self.ln_final = tuple(map(move, self.ln_final))
        return self


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
