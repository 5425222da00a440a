"""What every task hands to the evaluator: clean and reference prompts, aligned and tokenized."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

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
    def min_group_size(self) -> int:
        """Prompts in the smallest group used (per-group means rest on at least this many)."""
        sizes = torch.bincount(self.groups)
        return int(sizes[sizes > 0].min())

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


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def in_text_ids(tokenizer, piece: str, start: bool = False) -> list[int] | None:
    """The token ids `piece` becomes inside a prompt: after other text (start=False), or as the prompt's
    first words after any BOS (start=True). A leading space in `piece` is the space before a word, as in
    " Mary"; the tokenizer marks it its own way (GPT-2's "Ġ", SentencePiece's "▁").

    Encoding the piece alone is not enough for SentencePiece tokenizers that add a dummy prefix
    (Llama 1/2, Mistral): alone, " Mary" becomes "▁▁Mary" (two tokens) and "K" becomes "▁K", while in
    running text they are "▁Mary" and "K". So the piece is encoded after a short text and that text's
    tokens are cut off; None when no such text splits cleanly from the piece.
    """
    if start:
        return _encode(tokenizer, piece)
    for before in ("\n", ".", "The"):
        head, ids = _encode(tokenizer, before), _encode(tokenizer, before + piece)
        if ids[: len(head)] == head and len(ids) > len(head):
            return ids[len(head):]
    return None


def single_token_id(tokenizer, word: str, start: bool = False) -> int | None:
    """The token id of `word` if the tokenizer encodes it as exactly one known token where a prompt has
    it (see in_text_ids: " Mary" after other text, "The" at the start with start=True)."""
    ids = in_text_ids(tokenizer, word, start)
    if ids is None or len(ids) != 1 or (tokenizer.unk_token_id is not None and ids[0] == tokenizer.unk_token_id):
        return None
    return ids[0]


def adds_own_bos(tokenizer) -> bool:
    """Whether the tokenizer starts every text with a BOS token of its own: Llama's <s> or
    <|begin_of_text|>, Gemma's <bos>. Those models are trained with it, so every prompt gets it,
    whatever prepend_bos says. A BOS that is also the EOS (GPT-2's, Pythia's and Qwen's
    <|endoftext|>) does not count, even where the tokenizer adds it (TransformerLens sets every
    tokenizer to): those models are run without BOS unless asked, as in the IOI paper."""
    bos = tokenizer.bos_token_id
    if bos is None or bos == tokenizer.eos_token_id:
        return False
    plain, full = _encode(tokenizer, "a"), tokenizer.encode("a")
    return full[:1] == [bos] and plain[:1] != [bos]


def lead_tokens(tokenizer, prepend_bos: bool = False) -> list[int]:
    """The tokens before every prompt's text: [BOS] when the tokenizer adds its own (adds_own_bos) or
    prepend_bos asks for it, never twice; else none. Positions count from the first of these."""
    if adds_own_bos(tokenizer) or prepend_bos:
        if tokenizer.bos_token_id is None:
            raise TaskError("This tokenizer has no BOS token to prepend; run without --prepend-bos.")
        return [tokenizer.bos_token_id]
    return []


def encode_prompt(tokenizer, text: str, lead: list[int]) -> list[int]:
    """The ids the model is fed for a prompt: the lead tokens (BOS or none), then the text's tokens with
    no special tokens added (so BOS is never doubled)."""
    return list(lead) + _encode(tokenizer, text)


def too_few_words(what: str, needs: str, not_single: dict[str, list[str]]) -> TaskError:
    """The error for word lists that leave too few single-token words: `needs` says what the task needs
    and has; not_single names, by list, the words that are not single tokens for this tokenizer."""
    bad = "; ".join(f"{name}: " + ", ".join(words[:120]) + (f" and {len(words) - 120} more" if len(words) > 120 else "")
                    for name, words in not_single.items() if words)
    return TaskError(
        f"{what} cannot be built with this tokenizer: it needs {needs}. Not single tokens here: {bad or 'none'}. "
        "Neither --prepend-bos nor a smaller N changes which words are single tokens: choose a model whose "
        "tokenizer keeps these words whole, or another task."
    )


def top_choice_accuracy(model, dataset: TaskDataset, choices: list[int], batch_size: int = 64) -> float:
    """Share of prompts whose top prediction at END among the token ids `choices` is the right answer
    (answer_tokens[:, 0]): a task's accuracy when its answers come from a closed set."""
    ids = torch.tensor(choices)
    right = 0
    with model.lock, torch.no_grad():
        for start in range(0, dataset.n, batch_size):
            rows = torch.arange(start, min(dataset.n, start + batch_size))
            logits = model.bridge(dataset.tokens[rows].to(model.device))
            at = logits[torch.arange(len(rows)), dataset.positions["END"][rows].to(logits.device)][:, ids.to(logits.device)]
            right += int((ids[at.argmax(-1).cpu()] == dataset.answer_tokens[rows, 0]).sum())
    return right / dataset.n


@dataclass(frozen=True)
class Task:
    """A task, declared once as `TASK` in its own module (tasks/<name>.py) and registered by name in
    tasks/__init__.py. Everything else — the CLI, the dashboard, circuit files, run records — only
    ever sees the name, the roles and the TaskDataset that `build` returns.

    build(tokenizer, n, seed, mode, prepend_bos, ref_per_group) -> TaskDataset, where
    - prompts come in groups that share a token layout (per-group means need aligned positions);
    - reference_tokens[i] is prompt i's corrupted twin when ref_per_group == 0 (same length and
      positions: what patching needs), else ref_per_group reference prompts drawn per group;
    - answer_tokens[i] = [correct, incorrect]: the metric is their logit difference at END;
    - positions[role][i] for every role in `roles` (END last).
    """

    name: str  # in circuit files, the CLI (--task) and links
    title: str
    roles: tuple[str, ...]  # positions a circuit can keep heads at
    build: Callable[..., TaskDataset]
    modes: tuple[str, ...] = ("mixed",)  # which groups of prompts to use; "mixed": all of them
    metric: str = ""  # one line: what the logit difference compares
    reference: str = ""  # one line: what the reference (corrupted) prompts are
    example: str = ""  # one clean prompt and its answer, for the UI
    vocabulary: Callable[[], list[str]] | None = None  # words a word-level toy tokenizer needs
    source: str = ""  # where the task comes from
    # Words generic code (criteria, CLI, pages) uses for this task:
    accuracy_label: str = "the correct answer above the incorrect one"  # "N% of prompts have <this>" (f > 0)
    breakdown_label: str = "By group"  # the heading of the per-group (and per-order) breakdown
    group_label: tuple[str, str] = ("group", "groups")  # a group of prompts, singular and plural
    twin_label: str = "twin"  # a prompt's paired reference (corrupted) prompt
    # The orders a prompt comes in (IOI: ABBA, BABA), each a prefix of its groups' names; faithfulness
    # is also broken down by order. (): no orders.
    orders: tuple[str, ...] = ()
    # Attention scores worth a head-score column: name -> (query role, key role); {}: END → each role.
    attention_pairs: dict = field(default_factory=dict)
    # The task's own class names for discovered heads: label_head(position, score, floor, prefer) -> a
    # name or None (then the generic names apply), where score(metric) reads the head's row of
    # heads.wide and floor / prefer are discover.py's attention thresholds; the
    # colours of those names; and, where the paper found inhibition heads by path patching to the
    # movers' queries, the movers' and the inhibitors' names (discover.py, step 5).
    label_head: Callable[..., str | None] | None = None
    class_colors: dict = field(default_factory=dict)
    mover_class: str = ""
    inhibition_class: str = ""

    def order_of(self, group_name: str) -> str | None:
        """The order a group's prompts come in (None for a task without orders)."""
        return next((o for o in self.orders if group_name.split("-")[0] == o), None)

    def __post_init__(self):
        if not self.roles or self.roles[-1] != "END":
            raise ValueError(f"Task {self.name}: roles must end with END (got {self.roles}).")
        if "mixed" not in self.modes:
            raise ValueError(f"Task {self.name}: 'mixed' (every group) must be one of its modes.")
