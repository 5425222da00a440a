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
    # An independent reference set (its own size per group): its groups and lengths. None: the
    # reference prompts are the clean prompts' ABC twins, one each (the paper's regime).
    reference_groups: torch.Tensor | None = None
    reference_lengths: torch.Tensor | None = None

    @property
    def paired(self) -> bool:
        return self.reference_groups is None

    @property
    def ref_groups(self) -> torch.Tensor:
        return self.groups if self.paired else self.reference_groups

    @property
    def ref_lengths(self) -> torch.Tensor:
        return self.lengths if self.paired else self.reference_lengths

    @property
    def n(self) -> int:
        return len(self.prompts)

    @property
    def roles(self) -> list[str]:
        return list(self.positions)

    def token_lists(self, reference: bool = False) -> list[list[int]]:
        toks, lengths = (self.reference_tokens, self.ref_lengths) if reference else (self.tokens, self.lengths)
        return [toks[i, : lengths[i]].tolist() for i in range(len(toks))]

    def subset(self, idx) -> "TaskDataset":
        """The prompts at `idx` (a list or tensor of indices), same fields; an independent reference
        set is kept whole (paired references follow their prompts)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        ref = idx if self.paired else torch.arange(len(self.reference_tokens))
        return TaskDataset(
            task=self.task,
            prompts=[self.prompts[i] for i in idx.tolist()],
            reference_prompts=[self.reference_prompts[i] for i in ref.tolist()],
            tokens=self.tokens[idx],
            reference_tokens=self.reference_tokens[ref],
            lengths=self.lengths[idx],
            positions={r: p[idx] for r, p in self.positions.items()},
            answer_tokens=self.answer_tokens[idx],
            groups=self.groups[idx],
            group_names=self.group_names,
            meta=dict(self.meta),
            reference_groups=self.reference_groups,
            reference_lengths=self.reference_lengths,
        )
