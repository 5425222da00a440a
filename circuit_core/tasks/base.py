"""What every task hands to the evaluator: clean and reference prompts, aligned and tokenized."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


class TaskError(ValueError):
    """The task cannot be built as asked (too few usable words, unknown mode, ...)."""


@dataclass
class TaskDataset:
    """N clean prompts and N reference prompts whose positions align one-to-one.

    tokens / reference_tokens are right-padded to a common length; `lengths` holds each prompt's
    true length. `positions[role]` is the index of that role in each prompt (a LongTensor [N]).
    `answer_tokens[i] = [correct, incorrect]`; the metric is their logit difference at END.
    `groups[i]` is the prompt's group for per-group means (prompts of one group share length and
    layout).
    """

    task: str
    prompts: list[str]
    reference_prompts: list[str]
    tokens: torch.Tensor
    reference_tokens: torch.Tensor
    lengths: torch.Tensor
    positions: dict[str, torch.Tensor]
    answer_tokens: torch.Tensor
    groups: torch.Tensor
    group_names: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.prompts)

    @property
    def roles(self) -> list[str]:
        return list(self.positions)

    def token_lists(self, reference: bool = False) -> list[list[int]]:
        toks = self.reference_tokens if reference else self.tokens
        return [toks[i, : self.lengths[i]].tolist() for i in range(self.n)]

    def subset(self, idx) -> "TaskDataset":
        """The prompts at `idx` (a list or tensor of indices), same fields."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        return TaskDataset(
            task=self.task,
            prompts=[self.prompts[i] for i in idx.tolist()],
            reference_prompts=[self.reference_prompts[i] for i in idx.tolist()],
            tokens=self.tokens[idx],
            reference_tokens=self.reference_tokens[idx],
            lengths=self.lengths[idx],
            positions={r: p[idx] for r, p in self.positions.items()},
            answer_tokens=self.answer_tokens[idx],
            groups=self.groups[idx],
            group_names=self.group_names,
            meta=dict(self.meta),
        )
