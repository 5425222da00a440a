"""Colored Objects (Merullo, Eickhoff & Pavlick, ICLR 2024), in their one-shot format.

    Q: On the table, I see a red pencil, an orange cup, and a blue ball. What color is the cup?
    A: Orange
    Q: On the desk, there is a green pen, a black mug, and a brown jug. What color is the jug?
    A:  -> " Brown"

The solved example and the query share no colour and no object. The corrupted twin is the same
prompt asking about another object of the query's list, so its answer is that object's colour; the
metric is logit(correct colour) − logit(the twin's colour) at END. `accuracy` is the paper's: the
share of prompts whose top prediction among the eight colours is the right one.

Positions: COLOR (the queried object's colour in the query's list), OBJECT (the queried object in
that list), QUERY (the object in the question) and END. Groups for per-group means: (which of the
three items is asked, which one the twin asks), six in all; every word is one token, so a group
shares its layout.
"""
from __future__ import annotations

import random

import torch

from .base import (Task, TaskDataset, TaskError, encode_prompt, lead_tokens, single_token_id, too_few_words,
                   top_choice_accuracy)

COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "brown", "black"]
OBJECTS = ["pencil", "notebook", "pen", "cup", "plate", "jug", "mug", "puzzle", "textbook", "leash", "necklace",
           "bracelet", "bottle", "ball", "envelope", "lighter", "bowl"]
SURFACES = ["table", "desk", "floor"]
SUBJECTS = ["there is", "you see", "I see"]
ROLES = ("COLOR", "OBJECT", "QUERY", "END")
GROUPS = [(q, c) for q in range(3) for c in range(3) if c != q]  # (asked item, the twin's asked item)


def _items(pairs) -> str:
    words = [f"{'an' if color[0] in 'aeiou' else 'a'} {color} {obj}" for color, obj in pairs]
    return f"{words[0]}, {words[1]}, and {words[2]}"


def _question(surface, subject, pairs, asked) -> str:
    return f"Q: On the {surface}, {subject} {_items(pairs)}. What color is the {pairs[asked][1]}?\nA:"


def vocabulary() -> list[str]:
    """Every piece a prompt can contain, as GPT-2 splits it (leading spaces kept)."""
    words = {"Q", ":", " On", " the", ",", " a", " an", " and", ".", " What", " color", " is", "?", "\n", "A",
             " there", " you", " see", " I"}
    words |= {" " + w for w in COLORS + OBJECTS + SURFACES} | {" " + c.capitalize() for c in COLORS}
    return sorted(words)


def _usable(tokenizer):
    # A colour is used when both it and its capitalised answer (" Red") are single tokens; the forms
    # that are not are reported.
    bad = {c: [f for f in (c, c.capitalize()) if single_token_id(tokenizer, " " + f) is None] for c in COLORS}
    colors = [c for c in COLORS if not bad[c]]
    objects = [o for o in OBJECTS if single_token_id(tokenizer, " " + o) is not None]
    dropped = {"colors": [f for c in COLORS for f in bad[c]], "objects": [o for o in OBJECTS if o not in objects]}
    if len(colors) < 6 or len(objects) < 6:
        raise too_few_words(
            "Colored Objects", f"6 colours and 6 objects that are single tokens after a space (as ' cup'; colours "
                               f"capitalised too, as ' Red'); it has {len(colors)} colours and {len(objects)} objects",
            {"colours": dropped["colors"], "objects": dropped["objects"]})
    return colors, objects, dropped


def _draw(rng: random.Random, colors, objects, group: int) -> dict:
    """One prompt of `group` and its twin: six distinct colours and objects, the example's then the query's."""
    cs, os_ = rng.sample(colors, 6), rng.sample(objects, 6)
    example, query = list(zip(cs[:3], os_[:3])), list(zip(cs[3:], os_[3:]))
    asked, twin = GROUPS[group]
    e = rng.randrange(3)  # the solved example asks about one of its own objects
    head = _question(rng.choice(SURFACES), rng.choice(SUBJECTS), example, e) + f" {example[e][0].capitalize()}\n"
    surface, subject = rng.choice(SURFACES), rng.choice(SUBJECTS)
    return {"prompt": head + _question(surface, subject, query, asked),
            "twin": head + _question(surface, subject, query, twin),
            "answer": query[asked][0], "twin_answer": query[twin][0], "object": query[asked][1],
            "twin_object": query[twin][1]}


def make_colored_objects_dataset(tokenizer, n: int = 100, seed: int = 0, mode: str = "mixed",
                                 prepend_bos: bool = False, ref_per_group: int = 0) -> TaskDataset:
    """N one-shot prompts and their twins (ref_per_group = 0), or R twins per group drawn apart."""
    if mode != "mixed":
        raise TaskError(f"Colored Objects has no mode '{mode}'; use 'mixed'.")
    if n < 1:
        raise TaskError(f"N must be at least 1 (got {n}).")
    colors, objects, dropped = _usable(tokenizer)
    rng = random.Random(seed)
    groups = []
    while len(groups) < n:  # seeded shuffled rounds: every group gets N/6 prompts, give or take one
        block = list(range(len(GROUPS)))
        rng.shuffle(block)
        groups += block
    groups = groups[:n]
    bos = lead_tokens(tokenizer, prepend_bos)  # BOS once, or none; positions count from it
    encode = lambda text: encode_prompt(tokenizer, text, bos)
    ids = {w: single_token_id(tokenizer, " " + w) for w in colors + objects + [c.capitalize() for c in colors]}
    one = ids.__getitem__

    rows, toks, twin_toks, pos = [], [], [], {r: [] for r in ROLES}
    for g in groups:
        d = _draw(rng, colors, objects, g)
        t, tt = encode(d["prompt"]), encode(d["twin"])
        obj = one(d["object"])
        at = [i for i, x in enumerate(t) if x == obj]
        if len(at) != 2 or len(tt) != len(t) or t[at[0] - 1] != one(d["answer"]):
            raise TaskError(f"Prompt does not tokenize into aligned positions: {d['prompt']!r}")
        rows.append(d)
        toks.append(t)
        twin_toks.append(tt)
        for role, p in zip(ROLES, (at[0] - 1, at[0], at[1], len(t) - 1)):
            pos[role].append(p)
    for g in set(groups):  # a group's prompts must share their layout
        layout = {(len(toks[i]), *(pos[r][i] for r in ROLES)) for i, gg in enumerate(groups) if gg == g}
        if len(layout) != 1:
            raise TaskError(f"Colored Objects group {GROUPS[g]} tokenizes to different layouts {sorted(layout)}.")
    refs, ref_groups = [d["twin"] for d in rows], None
    if ref_per_group > 0:  # twins of fresh prompts, from a stream of their own
        ref_rng = random.Random(f"{seed}-reference")
        drawn = [(g, _draw(ref_rng, colors, objects, g)) for g in sorted(set(groups)) for _ in range(ref_per_group)]
        refs, ref_groups = [d["twin"] for _, d in drawn], [g for g, _ in drawn]
        twin_toks = [encode(r) for r in refs]
    width = max(len(t) for t in toks + twin_toks)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    padded = lambda seqs: torch.tensor([s + [pad] * (width - len(s)) for s in seqs], dtype=torch.long)
    answers = [[one(d["answer"].capitalize()), one(d["twin_answer"].capitalize())] for d in rows]
    sizes = torch.bincount(torch.tensor(groups), minlength=len(GROUPS))
    return TaskDataset(
        task="colored-objects", prompts=[d["prompt"] for d in rows], reference_prompts=refs,
        tokens=padded(toks), reference_tokens=padded(twin_toks), lengths=torch.tensor([len(t) for t in toks]),
        positions={r: torch.tensor(v) for r, v in pos.items()}, answer_tokens=torch.tensor(answers),
        groups=torch.tensor(groups), group_names=[f"asks {q + 1}, twin asks {c + 1}" for q, c in GROUPS],
        reference_groups=None if ref_groups is None else torch.tensor(ref_groups),
        reference_lengths=None if ref_groups is None else torch.tensor([len(t) for t in twin_toks]),
        meta={"n": n, "seed": seed, "mode": mode, "prepend_bos": prepend_bos, "bos": bool(bos),
              "min_group_size": int(sizes[sizes > 0].min()), "dropped_words": dropped,
              "reference": "paired twins (another object asked)" if ref_groups is None
              else f"{ref_per_group} twins per group", "answer": "[colour asked, colour the twin asks]"})


def accuracy(model, dataset, batch_size: int = 64) -> float:
    """Share of prompts whose top prediction among the eight capitalised colours at END is right."""
    ids = [single_token_id(model.tokenizer, " " + c.capitalize()) for c in COLORS]
    return top_choice_accuracy(model, dataset, [i for i in ids if i is not None], batch_size)


TASK = Task(
    name="colored-objects",
    title="Colored Objects",
    roles=ROLES,
    build=make_colored_objects_dataset,
    metric="logit(colour asked) − logit(colour the twin asks) at END",
    reference="the same prompt asking about another object of the list (Merullo et al.)",
    example="Q: On the desk, there is a green pen, a black mug, and a brown jug. What color is the jug?\nA: → Brown",
    vocabulary=vocabulary,
    source="Merullo, Eickhoff & Pavlick, ICLR 2024, arXiv 2310.08744",
    accuracy_label="the asked colour above the colour the twin asks",
    breakdown_label="By question (item asked, item the twin asks)",
    group_label=("question layout", "question layouts"),
)
