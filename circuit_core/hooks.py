"""TransformerLens hook point names, built in one place.

Per-layer points are "blocks.{layer}.{point}", e.g. hook_name(9, "attn.hook_z") ==
"blocks.9.attn.hook_z"; model-wide ones (LN_FINAL_SCALE) have no layer.
"""
from __future__ import annotations

LN_FINAL_SCALE = "ln_final.hook_scale"  # the final layer norm's scale per position


def hook_name(layer: int, point: str) -> str:
    """The hook point `point` ("attn.hook_z", "attn.hook_pattern", "hook_resid_pre", ...) of one layer."""
    return f"blocks.{int(layer)}.{point}"


def hook_z(layer: int) -> str:
    """Every head's attention-weighted values before W_O: [batch, pos, head, d_head]."""
    return hook_name(layer, "attn.hook_z")


def hook_pattern(layer: int) -> str:
    """Attention probabilities: [batch, head, query, key]."""
    return hook_name(layer, "attn.hook_pattern")


def hook_qkv(layer: int, which: str) -> str:
    """The queries, keys or values (`which`: "q", "k" or "v"): [batch, pos, head, d_head]."""
    if which not in ("q", "k", "v"):
        raise ValueError(f"which must be q, k or v (got {which!r})")
    return hook_name(layer, f"attn.hook_{which}")


def hook_layer(name: str) -> int:
    """The layer of a per-layer hook point's name."""
    return int(name.split(".")[1])


def every_layer(n_layers: int, point: str = "attn.hook_z") -> list[str]:
    """`point` of layers 0 .. n_layers − 1."""
    return [hook_name(l, point) for l in range(n_layers)]


__all__ = ["hook_name", "hook_z", "hook_pattern", "hook_qkv", "hook_layer", "every_layer", "LN_FINAL_SCALE"]
