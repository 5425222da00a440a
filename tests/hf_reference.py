"""Independent computations on a plain Hugging Face GPT-2: no TransformerLens, no project code.

Per-head outputs are read and replaced at the input of each attention block's output projection
(`attn.c_proj`), where the heads' outputs sit side by side as [batch, pos, head * d_head].
"""
from __future__ import annotations

import torch


def head_outputs(hf, tokens: torch.Tensor) -> torch.Tensor:
    """z of every head: [N, seq, layer, head, d_head]."""
    cfg = hf.config
    store = {}
    handles = [
        block.attn.c_proj.register_forward_pre_hook(
            lambda mod, args, l=l: store.__setitem__(l, args[0].detach().clone()))
        for l, block in enumerate(hf.transformer.h)
    ]
    try:
        with torch.no_grad():
            hf(tokens)
    finally:
        for h in handles:
            h.remove()
    d_head = cfg.n_embd // cfg.n_head
    return torch.stack([store[l].view(*tokens.shape, cfg.n_head, d_head) for l in range(cfg.n_layer)], dim=2)


def logit_diffs(hf, tokens, end, answers, keep=None, values=None) -> torch.Tensor:
    """logit[answers[:,0]] - logit[answers[:,1]] at `end`, with z replaced by `values` where not `keep`.

    keep: bool [N, seq, layer, head] (None: no ablation); values: [N, seq, layer, head, d_head].
    """
    cfg = hf.config
    d_head = cfg.n_embd // cfg.n_head
    handles = []
    if keep is not None:
        for l, block in enumerate(hf.transformer.h):
            def replace(mod, args, l=l):
                z = args[0].view(*tokens.shape, cfg.n_head, d_head)
                z = torch.where(keep[:, :, l, :, None], z, values[:, :, l].to(z.dtype))
                return (z.reshape(*tokens.shape, cfg.n_embd),)

            handles.append(block.attn.c_proj.register_forward_pre_hook(replace))
    try:
        with torch.no_grad():
            logits = hf(tokens).logits
    finally:
        for h in handles:
            h.remove()
    rows = torch.arange(len(tokens))
    at_end = logits[rows, end]
    return (at_end[rows, answers[:, 0]] - at_end[rows, answers[:, 1]]).double()


def group_means(z_ref: torch.Tensor, groups: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each prompt gets, at each position, the mean of z over the reference prompts of its own group
    long enough to have that position (zero where none is): a plain loop."""
    out = torch.zeros_like(z_ref)
    for i in range(len(groups)):
        for p in range(z_ref.shape[1]):
            members = [j for j in range(len(groups)) if groups[j] == groups[i] and lengths[j] > p]
            if members:
                out[i, p] = z_ref[members, p].mean(0)
    return out
