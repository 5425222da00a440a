"""Acronyms (García-Carrasco, Maté & Trujillo, AISTATS 2024): predict the third letter.

    The Ketchup Lark Wreck (KL  -> "W"

Tokens: The, C1 T1, C2 T2, C3 T3, " (", A1, A2, where each word is two tokens, " " + its capital
letter and the rest (" K" + "etchup"), and A1, A2 are the first two letters without a space. Words
that do not split that way for the loaded tokenizer are dropped and reported; the letters are
tokenised one by one, as the paper's layout has them.

The corrupted twin replaces the three words by words with other capitals (so the letters after " ("
change too). The engine reads out one logit difference, so the metric is logit(third capital) −
logit(the twin's third capital) at END; the paper's metric (the right capital minus the largest of
the other 25) is not linear in the residual stream and is not used. Positions: W1, W2, W3 (each
word's capital token), PAREN, A1 and END (A2). Every prompt has the same layout: one group.
`accuracy` is the share of prompts whose top capital ("A"–"Z") at END is the third letter.
"""
from __future__ import annotations

import random
import string

import torch

from .base import (Task, TaskDataset, TaskError, in_text_ids, lead_tokens, single_token_id, too_few_words,
                   top_choice_accuracy)

# Nouns that GPT-2's tokenizer splits as " " + capital and one more token (60 of 407 tried).
WORDS = """Bamboo Basket Bison Cabbage Cactus Cider Cinder Cottage Dancer Dingo Ditch Dune Eel Fawn Fiddle Fudge
Gable Gopher Gull Gumbo Jigsaw Kale Keg Ketchup Kettle Kite Kitten Lark Lasso Lava Locket Mango Mink Mitten Moth
Mule Nectar Noodle Oar Oasis Oatmeal Paddle Poodle Riddle Trolley Tuna Umpire Vase Vulture Waffle Wagon Wasp
Wombat Wreck Wren Yacht Yarn Zebra Zinc Zither""".split()
ROLES = ("W1", "W2", "W3", "PAREN", "A1", "END")


def vocabulary() -> list[str]:
    """The pieces prompts are built from (a word-level tokenizer then splits words as GPT-2 does)."""
    return sorted({"The", " ("} | set(string.ascii_uppercase) | {" " + w[0] for w in WORDS} | {w[1:] for w in WORDS})


def _pieces(tokenizer, word: str) -> list[int] | None:
    """[" X", "rest"] token ids of `word` in running text, when the tokenizer splits it so (or only knows
    the pieces)."""
    first, rest = single_token_id(tokenizer, " " + word[0]), single_token_id(tokenizer, word[1:])
    if first is None or rest is None:
        return None
    whole = in_text_ids(tokenizer, " " + word) or []
    unk = tokenizer.unk_token_id
    return [first, rest] if whole == [first, rest] or (unk is not None and unk in whole) else None


def make_acronyms_dataset(tokenizer, n: int = 100, seed: int = 0, mode: str = "mixed", prepend_bos: bool = False,
                          ref_per_group: int = 0) -> TaskDataset:
    if mode != "mixed":
        raise TaskError(f"Acronyms has no mode '{mode}'; use 'mixed'.")
    if n < 1:
        raise TaskError(f"N must be at least 1 (got {n}).")
    pieces = {w: p for w in WORDS if (p := _pieces(tokenizer, w)) is not None}
    letters = {c: single_token_id(tokenizer, c) for c in string.ascii_uppercase}
    the, paren = single_token_id(tokenizer, "The", start=True), single_token_id(tokenizer, " (")
    capitals = sorted({w[0] for w in pieces if letters[w[0]] is not None})
    if len(capitals) < 6 or the is None or paren is None:
        missing = [p for p, i in (("'The'", the), ("' ('", paren)) if i is None]
        raise too_few_words(
            "Acronyms", f"words split as ' ' + capital and the rest (as ' K' + 'etchup'), with capitals for 6 "
                        f"letters, and 'The', ' (' and the capitals alone as single tokens; it has "
                        f"{len(capitals)} such letters",
            {"words": [w for w in WORDS if w not in pieces or letters[w[0]] is None], "pieces": missing})
    by_letter = {c: [w for w in pieces if w[0] == c] for c in capitals}
    bos = lead_tokens(tokenizer, prepend_bos)  # BOS once, or none; positions count from it

    def draw(rng, avoid=()):
        """Three words with distinct capitals, each capital unlike the one at its place in `avoid`."""
        while True:
            caps = rng.sample(capitals, 3)
            if all(c != a[0] for c, a in zip(caps, avoid)):
                return [rng.choice(by_letter[c]) for c in caps]

    def encode(words):
        ids = bos + [the] + [i for w in words for i in pieces[w]] + [paren, letters[words[0][0]], letters[words[1][0]]]
        text = f"The {' '.join(words)} ({words[0][0]}{words[1][0]}"
        return text, ids

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = draw(rng)
        twin = draw(rng, avoid=words)
        rows.append((words, twin))
    refs = [encode(t) for _, t in rows]
    if ref_per_group > 0:  # twins of fresh prompts, from a stream of their own
        ref_rng = random.Random(f"{seed}-reference")
        refs = [encode(draw(ref_rng, avoid=draw(ref_rng))) for _ in range(ref_per_group)]
    clean = [encode(w) for w, _ in rows]
    o = len(bos)
    at = {"W1": 1, "W2": 3, "W3": 5, "PAREN": 7, "A1": 8, "END": 9}
    return TaskDataset(
        task="acronyms", prompts=[t for t, _ in clean], reference_prompts=[t for t, _ in refs],
        tokens=torch.tensor([ids for _, ids in clean]), reference_tokens=torch.tensor([ids for _, ids in refs]),
        lengths=torch.full((n,), o + 10), positions={r: torch.full((n,), o + p) for r, p in at.items()},
        answer_tokens=torch.tensor([[letters[w[2][0]], letters[t[2][0]]] for w, t in rows]),
        groups=torch.zeros(n, dtype=torch.long), group_names=["all"],
        reference_groups=None if ref_per_group == 0 else torch.zeros(len(refs), dtype=torch.long),
        reference_lengths=None if ref_per_group == 0 else torch.full((len(refs),), o + 10),
        meta={"n": n, "seed": seed, "mode": mode, "prepend_bos": prepend_bos, "bos": bool(bos), "min_group_size": n,
              "dropped_words": [w for w in WORDS if w not in pieces],
              "reference": "paired twins (other words, other capitals)" if ref_per_group == 0
              else f"{ref_per_group} twins", "answer": "[third capital, the twin's third capital]"})


def accuracy(model, dataset, batch_size: int = 256) -> float:
    """Share of prompts whose top prediction among the capitals "A"–"Z" at END is the third letter
    (the paper's letter-by-letter correctness, at the last position)."""
    ids = [i for c in string.ascii_uppercase if (i := single_token_id(model.tokenizer, c)) is not None]
    return top_choice_accuracy(model, dataset, ids, batch_size)


TASK = Task(
    name="acronyms",
    title="Acronyms",
    roles=ROLES,
    build=make_acronyms_dataset,
    metric="logit(third capital) − logit(the twin's third capital) at END",
    reference="three other words with other capitals (García-Carrasco et al.)",
    example="The Ketchup Lark Wreck (KL → W",
    vocabulary=vocabulary,
    source="García-Carrasco, Maté & Trujillo, AISTATS 2024, arXiv 2405.04156",
    accuracy_label="the third capital above the twin's third capital",
    breakdown_label="By group (one: every prompt shares its layout)",
    group_label=("group", "groups"),
)
