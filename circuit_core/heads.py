"""Per-head scores that say what role a head plays, as tidy tables for heatmaps.

Every function returns a pandas DataFrame with columns layer, head, metric, score (one row per
head and metric); `wide` pivots it to one row per head. The metrics:

On repeated random tokens, [BOS] r_1..r_T r_1..r_T (seeded, no token twice within one copy):
- "previous token": mean attention from position i to i-1 (i inside the random tokens, BOS
  excluded so heads that park attention on BOS do not score).
- "duplicate token": mean attention from each token of the second copy to its first occurrence.
- "induction": mean attention from each token of the second copy to the token after its first
  occurrence.
On the task's prompts (clean run), means over prompts:
- attention probabilities between the task's pairs of positions (`Task.attention_pairs`; IOI: the
  paper's "attn END→IO", "attn END→S1", "attn END→S2", "attn S2→S1"), else END → each position.
- "direct effect": the head's output at END (hook_z @ W_O) read straight through the unembedding
  as logit[correct] - logit[incorrect] (the task's metric). The final layer norm is not linear; we
  freeze its scale at the clean run's value for each prompt (ln_final.hook_scale at END), which
  makes the readout linear, so the heads' direct effects plus the other components' sum to the
  clean logit difference. hook_z includes the value bias (models.py keeps it unfolded), so each
  head's b_V term is its own; b_O is shared by the layer and attributed to no head.
Through the evaluator (one batched call):
- "ablation effect": F(M without the head at every position) - F(M); negative when the head
  helps the task.
"""
from __future__ import annotations

import pandas as pd
import torch

from .hooks import LN_FINAL_SCALE, every_layer, hook_layer

PREV, DUP, IND = "previous token", "duplicate token", "induction"
DIRECT, ABLATION = "direct effect", "ablation effect"


def attention_pairs(roles: list[str], task: str | None = None) -> dict[str, tuple[str, str]]:
    """The attention scores worth a column: the task's own pairs whose roles it has, else END → each role.
    Without a task name, the registered task with exactly these roles (if any)."""
    from .tasks import REGISTRY

    if task is None:
        task = next((name for name, t in REGISTRY.items() if set(t.roles) == set(roles) - {"*"}), None)
    own = REGISTRY[task].attention_pairs if task in REGISTRY else {}
    named = {m: qk for m, qk in own.items() if all(r in roles for r in qk)}
    return named or {f"attn END→{r}": ("END", r) for r in roles if r != "END"}


def _frame(metric: str, scores: torch.Tensor) -> pd.DataFrame:
    """[layer, head] tensor -> tidy rows."""
    n_layers, n_heads = scores.shape
    return pd.DataFrame({"layer": [l for l in range(n_layers) for _ in range(n_heads)],
                         "head": [h for _ in range(n_layers) for h in range(n_heads)],
                         "metric": metric, "score": scores.double().flatten().tolist()})


def wide(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (layer, head), one column per metric."""
    return scores.pivot_table(index=["layer", "head"], columns="metric", values="score").rename_axis(columns=None)


def _check_hooks(model, names):
    missing = [n for n in names if n not in model.bridge.hook_dict]
    if missing:  # the bridge skips unknown hook names silently: refuse instead
        raise RuntimeError(f"Model has no hook point(s) {missing[:3]}; head scores are not supported for it.")


# --- repeated random tokens ------------------------------------------------------------------------
def repeated_tokens(model, n_seqs: int = 20, length: int | None = None, seed: int = 0) -> torch.Tensor:
    """[n_seqs, BOS + 2*length] random tokens repeated once (no special tokens, none twice per copy)."""
    cfg = model.bridge.cfg
    tok = model.tokenizer
    length = length or min(50, (int(cfg.n_ctx) - 1) // 2)
    special = set(tok.all_special_ids)
    vocab = torch.tensor([i for i in range(min(len(tok), int(cfg.d_vocab))) if i not in special])
    gen = torch.Generator().manual_seed(seed)
    if len(vocab) >= length:
        rand = torch.stack([vocab[torch.randperm(len(vocab), generator=gen)[:length]] for _ in range(n_seqs)])
    else:  # tiny vocabularies: allow repeats
        rand = vocab[torch.randint(len(vocab), (n_seqs, length), generator=gen)]
    parts = [rand, rand]
    if tok.bos_token_id is not None:
        parts.insert(0, torch.full((n_seqs, 1), tok.bos_token_id))
    return torch.cat(parts, 1)


def role_diagonals(pattern: torch.Tensor, first: int, T: int) -> dict[str, torch.Tensor]:
    """The three scores per sequence and head [batch, head] from attention [batch, head, query, key] on
    repeated tokens whose first copy starts at `first` and has T tokens (diagonal(-d)[..., k] = pattern[k + d, k])."""
    return {PREV: pattern.diagonal(-1, -2, -1)[..., first:].mean(-1),
            DUP: pattern.diagonal(-T, -2, -1)[..., first:].mean(-1),
            IND: pattern.diagonal(-(T - 1), -2, -1)[..., first + 1:].mean(-1)}


def repeated_token_scores(model, n_seqs: int = 20, length: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Previous-token, duplicate-token and induction scores for every head (see module doc)."""
    tokens = repeated_tokens(model, n_seqs, length, seed)
    first = 1 if model.tokenizer.bos_token_id is not None else 0  # index of r_1
    T = (tokens.shape[1] - first) // 2
    names = every_layer(model.n_layers, "attn.hook_pattern")
    _check_hooks(model, names)
    scores = {m: torch.zeros(model.n_layers, model.n_heads) for m in (PREV, DUP, IND)}

    def grab(pattern, hook):  # pattern [batch, head, query, key]
        layer = hook_layer(hook.name)
        for m, v in role_diagonals(pattern.detach().float().cpu(), first, T).items():
            scores[m][layer] = v.mean(0)
        return pattern

    with model.lock, torch.no_grad():
        model.bridge.run_with_hooks(tokens.to(model.device), fwd_hooks=[(n, grab) for n in names])
    return pd.concat([_frame(m, s) for m, s in scores.items()], ignore_index=True)


# --- the task's prompts ------------------------------------------------------------------------------
def task_scores(model, dataset, batch_size: int = 64) -> pd.DataFrame:
    """Attention between named positions and each head's direct effect at END (see module doc)."""
    bridge = model.bridge
    L, H = model.n_layers, model.n_heads
    pos = dataset.positions
    pairs = attention_pairs(list(pos), dataset.task)
    z_names = every_layer(L)
    p_names = every_layer(L, "attn.hook_pattern")
    has_scale = LN_FINAL_SCALE in bridge.hook_dict
    _check_hooks(model, z_names + p_names)
    center = str(getattr(bridge.cfg, "normalization_type", "LN")).startswith("LN")  # LayerNorm centres, RMSNorm not
    W_O, W_U = bridge.W_O.detach(), bridge.W_U.detach()  # [L, H, d_head, d_model], [d_model, vocab]
    sums = {m: torch.zeros(L, H, dtype=torch.float64) for m in [*pairs, DIRECT]}

    with model.lock, torch.no_grad():
        for start in range(0, dataset.n, batch_size):
            idx = torch.arange(start, min(dataset.n, start + batch_size))
            rows = torch.arange(len(idx))
            end = pos["END"][idx]
            store = {}

            def grab(act, hook):
                store[hook.name] = act.detach()
                return act

            names = z_names + p_names + ([LN_FINAL_SCALE] if has_scale else [])
            bridge.run_with_hooks(dataset.tokens[idx].to(model.device), fwd_hooks=[(n, grab) for n in names])
            ans = dataset.answer_tokens[idx]
            direction = (W_U[:, ans[:, 0]] - W_U[:, ans[:, 1]]).T.cpu().double()  # [b, d_model]
            scale = store[LN_FINAL_SCALE].cpu().double()[rows, end] if has_scale else torch.ones(len(idx), 1)
            for l in range(L):
                pattern = store[p_names[l]].cpu()  # [b, head, q, k]
                for m, (q, k) in pairs.items():
                    sums[m][l] += pattern[rows, :, pos[q][idx], pos[k][idx]].double().sum(0)
                z_end = store[z_names[l]].cpu().double()[rows, end]  # [b, head, d_head]
                out = torch.einsum("bhd,hdm->bhm", z_end, W_O[l].cpu().double())
                if center:
                    out = out - out.mean(-1, keepdim=True)
                sums[DIRECT][l] += torch.einsum("bhm,bm->bh", out / scale[:, :, None], direction).sum(0)
    return pd.concat([_frame(m, s / dataset.n) for m, s in sums.items()], ignore_index=True)


# --- ablation through the evaluator -----------------------------------------------------------------
def head_removals(model):
    """M without each head (at every position), in (layer, head) order."""
    from .ablation import NodeSet
    from .circuit import ALL_POSITIONS

    return [NodeSet(frozenset({(l, h, ALL_POSITIONS)}), complement=True, label=f"M\\{l}.{h}")
            for l in range(model.n_layers) for h in range(model.n_heads)]


def ablation_frame(f_model: float, f_without: list[float], n_layers: int, n_heads: int) -> pd.DataFrame:
    return _frame(ABLATION, torch.tensor(f_without, dtype=torch.float64).view(n_layers, n_heads) - f_model)


def ablation_effects(evaluator, progress=None, should_stop=None) -> pd.DataFrame:
    """F(M without head) - F(M) for every head: M and all single-head removals in one batched call."""
    from .ablation import NodeSet

    sets = [NodeSet.model()] + head_removals(evaluator.model)
    F = evaluator.logit_diffs(sets, progress, should_stop).mean(1).tolist()
    return ablation_frame(F[0], F[1:], evaluator.n_layers, evaluator.n_heads)


def head_scores(evaluator, seed: int | None = None, progress=None, ablation: bool = True) -> pd.DataFrame:
    """All the metrics above for the evaluator's model and dataset, one tidy table. ablation=False
    leaves out the ablation effects (one evaluation per head; the rest is a few forward passes)."""
    seed = evaluator.methodology.seed if seed is None else seed
    model = evaluator.model
    parts = [repeated_token_scores(model, seed=seed), task_scores(model, evaluator.dataset)]
    return pd.concat(parts + ([ablation_effects(evaluator, progress)] if ablation else []), ignore_index=True)


__all__ = ["repeated_tokens", "repeated_token_scores", "task_scores", "ablation_effects", "head_scores", "wide",
           "PREV", "DUP", "IND", "DIRECT", "ABLATION",
           "attention_pairs"]
