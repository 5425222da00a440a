"""F for many node sets at once: the hot path every criterion stands on.

F(S) = mean over prompts of logit[correct] - logit[incorrect] at END, with every head-position
outside S replaced by its ablation value (see ablation.py). `Evaluator.logit_diffs` takes a list
of node sets and returns the per-prompt values for all of them.

Speed, without changing any result:
- node sets are stacked along the batch, many per forward pass;
- layers below the first layer where the node sets of a batch differ are computed once per
  prompt and shared (`start_at_layer`);
- only the END position's logits for the two answer tokens are computed (no full unembedding).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .ablation import Methodology, NodeSet, ablation_values, keep_mask

Progress = Callable[[int, int], None]


class _FinalResidual(Exception):
    """Raised from a hook to stop the forward pass once the final residual is known."""

    def __init__(self, resid):
        self.resid = resid


class Evaluator:
    """Evaluates node sets for one (model, dataset, methodology); ablation values computed once."""

    def __init__(self, model, dataset, methodology: Methodology | None = None, max_rows: int | None = None):
        self.model = model
        self.dataset = dataset
        self.methodology = methodology or Methodology()
        self.n_layers, self.n_heads = model.n_layers, model.n_heads
        missing = [n for n in self._hook_names() if n not in model.bridge.hook_dict]
        if missing:
            # The bridge silently skips hook names it cannot resolve: refuse instead.
            raise RuntimeError(f"Model has no hook point(s) {missing[:3]}; per-head ablation is not supported for it.")
        self._has_ln_final = "ln_final.hook_in" in model.bridge.hook_dict
        self.values = ablation_values(model, dataset, self.methodology)
        n, self.seq = dataset.tokens.shape
        # Tokens per forward pass: big batches pay on a GPU; on a CPU they only add memory traffic.
        tokens_per_pass = 16384 if str(model.device).startswith("cuda") else 2048
        self.max_rows = max_rows or max(1, tokens_per_pass // self.seq)
        self.end = dataset.positions["END"]
        w_u = model.bridge.W_U.detach()
        b_u = getattr(model.bridge, "b_U", None)
        correct, wrong = dataset.answer_tokens[:, 0], dataset.answer_tokens[:, 1]
        # Direction in the final (normalised) residual whose dot product is the logit difference.
        self._answer_dir = (w_u[:, correct] - w_u[:, wrong]).T.contiguous()  # [N, d_model]
        self._answer_bias = (b_u[correct] - b_u[wrong]).detach() if b_u is not None else torch.zeros(n)
        with model.lock, torch.no_grad():
            self._can_split = self._split_works()

    def _hook_names(self):
        return [f"blocks.{l}.attn.hook_z" for l in range(self.n_layers)]

    # --- public API ------------------------------------------------------------------------------
    def masks(self, node_sets: Sequence[NodeSet]) -> torch.Tensor:
        """Bool [K, N, seq, layer, head] keep-masks for the node sets."""
        n = self.dataset.n
        return torch.stack([keep_mask(s, self.dataset.positions, n, self.seq, self.n_layers, self.n_heads)
                            for s in node_sets])

    def logit_diffs(self, node_sets: Sequence[NodeSet], progress: Progress | None = None) -> torch.Tensor:
        """Per-prompt logit differences, float64 [len(node_sets), N]."""
        node_sets = list(node_sets)
        n = self.dataset.n
        out = torch.empty(len(node_sets), n, dtype=torch.float64)
        if not node_sets:
            return out
        masks = self.masks(node_sets)
        prompt_chunk = min(n, self.max_rows)
        sets_per_batch = max(1, self.max_rows // prompt_chunk)
        total = len(node_sets) * ((n + prompt_chunk - 1) // prompt_chunk)
        done = 0
        with self.model.lock, torch.no_grad():
            for p0 in range(0, n, prompt_chunk):
                prompts = torch.arange(p0, min(n, p0 + prompt_chunk))
                m = masks[:, prompts]  # [K, P, seq, L, H]
                common = self._first_difference(m) if self._can_split else 0
                resid = self._forward(self.dataset.tokens[prompts], prompts, m[0], 0, common)
                for k0 in range(0, len(node_sets), sets_per_batch):
                    mk = m[k0 : k0 + sets_per_batch]
                    split = max(common, self._first_difference(mk)) if self._can_split else 0
                    r = resid
                    if split > common:  # layers shared within this batch, run once per prompt
                        r = self._forward(resid, prompts, mk[0], common, split)
                    rows = len(mk) * len(prompts)
                    r = r.repeat(len(mk), *([1] * (r.dim() - 1)))
                    rows_prompt = prompts.repeat(len(mk))
                    flat = mk.reshape(rows, *mk.shape[2:])
                    diffs = self._forward(r, rows_prompt, flat, split, None)
                    out[k0 : k0 + len(mk), prompts] = diffs.view(len(mk), len(prompts)).double()
                    done += len(mk)
                    if progress is not None:
                        progress(done, total)
        return out

    def F(self, node_sets: Sequence[NodeSet], progress: Progress | None = None) -> list[float]:
        """Mean logit difference for each node set."""
        return self.logit_diffs(node_sets, progress).mean(1).tolist()

    # --- internals -------------------------------------------------------------------------------
    def _first_difference(self, m: torch.Tensor) -> int:
        """First layer at which any of the masks m[k] differs from m[0] (n_layers if none)."""
        differs = (m != m[:1]).flatten(0, 2).any(0).any(-1)  # [L]
        idx = torch.nonzero(differs).flatten()
        # Capped so the last block always runs in the final pass, which reads the answer out.
        return int(idx[0]) if len(idx) else self.n_layers - 1

    def _forward(self, x, prompts, mask, start: int, stop: int | None):
        """Run layers [start, stop) with ablation; stop=None runs to the end and returns logit diffs.

        x is tokens when start == 0, else the residual stream entering block `start`.
        mask: bool [rows, seq, L, H]; prompts: which prompt each row is (for its ablation values).
        """
        bridge = self.model.bridge
        device = self.model.device
        last = self.n_layers if stop is None else stop
        hooks = []
        for layer in range(start, last):
            keep = mask[:, :, layer]
            if bool(keep.all()):
                continue
            keep = keep.to(device)[..., None]
            value = self.values[prompts, :, layer].to(device)

            def ablate(z, hook, keep=keep, value=value):
                return torch.where(keep, z, value.to(z.dtype))

            hooks.append((f"blocks.{layer}.attn.hook_z", ablate))
        x = x.to(device)
        if start > 0:  # x is the residual entering block `start`: run the blocks themselves
            x = self._blocks(x, start, last, hooks)
            return x if stop is not None else self._readout(x, prompts)
        if stop is not None:
            return x if stop == 0 else bridge.run_with_hooks(x, fwd_hooks=hooks, stop_at_layer=stop)
        if self._has_ln_final:
            def final(resid, hook):
                raise _FinalResidual(resid)

            try:
                bridge.run_with_hooks(x, fwd_hooks=hooks + [("ln_final.hook_in", final)])
            except _FinalResidual as stop_signal:
                return self._readout(stop_signal.resid, prompts)
            raise RuntimeError("ln_final hook did not fire")  # pragma: no cover
        logits = bridge.run_with_hooks(x, fwd_hooks=hooks)
        rows = torch.arange(len(prompts), device=logits.device)
        end_logits = logits[rows, self.end[prompts].to(logits.device)]
        ans = self.dataset.answer_tokens[prompts].to(logits.device)
        return end_logits.gather(1, ans[:, :1])[:, 0] - end_logits.gather(1, ans[:, 1:])[:, 0]

    def _blocks(self, x, start: int, stop: int, hooks):
        """Blocks [start, stop) on the residual x. The bridge's own start_at_layer path costs about a
        full forward pass, so shared layers would save nothing through it."""
        bridge = self.model.bridge
        with bridge.hooks(fwd_hooks=hooks):
            for layer in range(start, stop):
                out = bridge.blocks[layer](x)
                x = out[0] if isinstance(out, tuple) else out
        return x

    def _split_works(self) -> bool:
        """Check once that running the lower and upper blocks separately gives the one-pass result
        (true for GPT-2-style blocks); if not, every pass starts from the tokens."""
        if self.n_layers < 2 or not self._has_ln_final:
            return False
        prompts = torch.arange(min(2, self.dataset.n))
        mask = self.masks([NodeSet.empty()])[0, prompts]
        try:
            whole = self._forward(self.dataset.tokens[prompts], prompts, mask, 0, None)
            mid = self.n_layers // 2
            resid = self._forward(self.dataset.tokens[prompts], prompts, mask, 0, mid)
            split = self._forward(resid, prompts, mask, mid, None)
        except Exception:
            return False
        return bool(torch.allclose(whole, split, atol=1e-4, rtol=1e-4))

    def _readout(self, resid, prompts):
        """Logit difference at END from the final residual stream [rows, seq, d_model]."""
        device = resid.device
        rows = torch.arange(len(prompts), device=device)
        end_resid = resid[rows, self.end[prompts].to(device)]  # [rows, d_model]
        normed = self.model.bridge.ln_final(end_resid[:, None, :])[:, 0]
        return (normed * self._answer_dir[prompts].to(device)).sum(-1) + self._answer_bias[prompts].to(device)


def build_evaluator(model, methodology: Methodology | None = None, max_rows: int | None = None) -> Evaluator:
    """Dataset for the methodology's task, N and seed on this model's tokenizer, then its evaluator."""
    from .tasks import build_dataset

    methodology = methodology or Methodology()
    dataset = build_dataset(methodology.task, model.tokenizer, **methodology.dataset_kwargs())
    return Evaluator(model, dataset, methodology, max_rows=max_rows)


class Cancelled(Exception):
    """Raised by long searches when their `should_stop()` callback says so (checked between steps)."""
