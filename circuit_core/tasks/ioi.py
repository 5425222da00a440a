"""Indirect object identification (Wang et al. 2022): p_IOI prompts and their p_ABC references.

"Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to" -> the model should say [A] (the
indirect object, IO) rather than [B] (the subject, S). The metric is logit[IO] - logit[S] at END.
"""
from __future__ import annotations

import random

import torch

from .base import Task, TaskDataset, TaskError, encode_prompt, lead_tokens, single_token_id, too_few_words

ROLES = ("IO", "S1", "S1+1", "S2", "END")

# The paper's 15 templates in BABA form ([A] = IO, [B] = S). The prompt stops before the last [A].
BABA_TEMPLATES = [
    "Then, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] were working at the [PLACE]. [B] decided to give a [OBJECT] to [A]",
    "Then, [B] and [A] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument, and afterwards [B] said to [A]",
    "After [B] and [A] went to the [PLACE], [B] gave a [OBJECT] to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give it to [A]",
    "When [B] and [A] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to [A]",
    "While [B] and [A] were working at the [PLACE], [B] gave a [OBJECT] to [A]",
    "While [B] and [A] were commuting to the [PLACE], [B] gave a [OBJECT] to [A]",
    "After the lunch, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Afterwards, [B] and [A] went to the [PLACE]. [B] gave a [OBJECT] to [A]",
    "Then, [B] and [A] had a long argument. Afterwards [B] said to [A]",
    "The [PLACE] [B] and [A] went to had a [OBJECT]. [B] gave it to [A]",
    "Friends [B] and [A] found a [OBJECT] at the [PLACE]. [B] gave it to [A]",
]


def _to_abba(template: str) -> str:
    # ABBA swaps the first [B] and the first [A]: "Then, [A] and [B] ... [B] gave ... to [A]".
    i, j = template.index("[B]"), template.index("[A]")
    assert i < j
    return template[:i] + "[A]" + template[i + 3 : j] + "[B]" + template[j + 3 :]


ABBA_TEMPLATES = [_to_abba(t) for t in BABA_TEMPLATES]

# Common English first names; those that are not one token (with a leading space) for the loaded
# tokenizer are dropped at dataset time and reported.
NAMES = """Aaron Adam Alan Alex Alice Amy Anderson Andre Andrew Andy Anna Anthony Arthur Austin
Blake Brandon Brian Carl Caroline Charles Charlie Chris Christian Christina Claire Daniel Danny
David Dean Edward Elizabeth Emily Eric Erica Eva Frank Gary George Grace Henry Ian Jack Jacob
Jake James Jane Jason Jeff Jennifer Jeremy Jessica Jim Joe John Jonathan Jordan Joseph Joshua
Justin Kate Kelly Kevin Kyle Laura Leon Lisa Louis Lucas Luke Marco Maria Mark Martin Mary Matt
Max Michael Michelle Mike Nathan Nicholas Patrick Paul Peter Rachel Richard Robert Roman Rose Ryan
Sam Sarah Scott Sean Simon Stephen Steven Sullivan Thomas Tim Tom Tyler Victoria Warren William""".split()
PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station"]
OBJECTS = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"]
MODES = ("mixed", "ABBA", "BABA")


def template_words() -> list[str]:
    """Every word and punctuation piece of the templates, as it would appear in text."""
    import re

    pieces: set[str] = set()
    for t in BABA_TEMPLATES + ABBA_TEMPLATES:
        text = re.sub(r"\[(A|B|PLACE|OBJECT)\]", "X", t)
        pieces.update(re.findall(r" ?[A-Za-z]+|[^\sA-Za-z]", text))
    pieces.discard("X")
    pieces.discard(" X")
    return sorted(pieces)


def vocabulary() -> list[str]:
    """Every text piece an IOI prompt can contain, as GPT-2 would split it (leading spaces kept)."""
    return sorted(set(template_words()) | {" " + w for w in NAMES + PLACES + OBJECTS})


def usable_words(tokenizer, words: list[str]) -> tuple[list[str], list[str]]:
    """Split `words` into (kept, dropped) by whether " word" is a single token inside a prompt."""
    kept, dropped = [], []
    for w in words:
        (kept if single_token_id(tokenizer, " " + w) is not None else dropped).append(w)
    return kept, dropped


def _fill(template: str, a: str, b: str, place: str, obj: str) -> str:
    prompt = template[: template.rindex(" [A]")]  # stop before the final name
    return prompt.replace("[A]", a).replace("[B]", b).replace("[PLACE]", place).replace("[OBJECT]", obj)


def _fill_reference(template: str, names: tuple[str, str, str], place: str, obj: str) -> str:
    """p_ABC: the same template, with the three name slots (in order) given three fresh names."""
    prompt = template[: template.rindex(" [A]")]
    for name in names:
        i = min(k for k in (prompt.find("[A]"), prompt.find("[B]")) if k >= 0)
        prompt = prompt[:i] + name + prompt[i + 3 :]
    return prompt.replace("[PLACE]", place).replace("[OBJECT]", obj)


def make_ioi_dataset(
    tokenizer,
    n: int = 100,
    seed: int = 0,
    mode: str = "mixed",
    prepend_bos: bool = False,
    names: list[str] | None = None,
    places: list[str] | None = None,
    objects: list[str] | None = None,
    templates: list[int] | None = None,
    ref_per_group: int = 0,
) -> TaskDataset:
    """N IOI prompts and their ABC references, seeded.

    Templates are dealt in seeded shuffled rounds so every (template, order) group gets N/|groups|
    prompts, give or take one: the per-group means then rest on as many prompts as N allows.
    `templates` restricts to some of the 15 template indices (e.g. to hold some out).
    ref_per_group: 0 gives each prompt its ABC twin as its reference (the paper: as many reference
    prompts as clean ones, ~N/30 per group); R > 0 draws R ABC prompts per group on their own (fresh
    names, place and object, a separate seeded stream), so the means rest on R prompts whatever N.
    """
    if mode not in MODES:
        raise TaskError(f"Unknown IOI mode '{mode}'. Choose one of: {', '.join(MODES)}.")
    if n < 1:
        raise TaskError(f"N must be at least 1 (got {n}).")
    names_ok, names_dropped = usable_words(tokenizer, names or NAMES)
    places_ok, places_dropped = usable_words(tokenizer, places or PLACES)
    objects_ok, objects_dropped = usable_words(tokenizer, objects or OBJECTS)
    if len(names_ok) < 5 or not places_ok or not objects_ok:
        raise too_few_words(
            "IOI", f"5 names, a place and an object that are single tokens after a space (as ' Mary'); it has "
                   f"{len(names_ok)} names, {len(places_ok)} places and {len(objects_ok)} objects",
            {"names": names_dropped, "places": places_dropped, "objects": objects_dropped})
    template_ids = list(range(len(BABA_TEMPLATES))) if templates is None else list(templates)
    groups_all = []  # (group name, template string)
    for order in ("BABA", "ABBA"):
        if mode in ("mixed", order):
            src = BABA_TEMPLATES if order == "BABA" else ABBA_TEMPLATES
            groups_all += [(f"{order}-{t:02d}", src[t]) for t in template_ids]

    rng = random.Random(seed)
    group_of_prompt: list[int] = []
    while len(group_of_prompt) < n:
        block = list(range(len(groups_all)))
        rng.shuffle(block)
        group_of_prompt += block
    group_of_prompt = group_of_prompt[:n]

    bos = lead_tokens(tokenizer, prepend_bos)  # BOS once, or none; positions count from it
    prompts, refs, toks, ref_toks, answers = [], [], [], [], []
    pos = {r: [] for r in ROLES}
    for g in group_of_prompt:
        template = groups_all[g][1]
        io, s = rng.sample(names_ok, 2)
        place, obj = rng.choice(places_ok), rng.choice(objects_ok)
        fresh = rng.sample([x for x in names_ok if x not in (io, s)], 3)
        prompt = _fill(template, io, s, place, obj)
        ref = _fill_reference(template, tuple(fresh), place, obj)
        t, rt = encode_prompt(tokenizer, prompt, bos), encode_prompt(tokenizer, ref, bos)
        io_id = single_token_id(tokenizer, " " + io)
        s_id = single_token_id(tokenizer, " " + s)
        io_at = [i for i, x in enumerate(t) if x == io_id]
        s_at = [i for i, x in enumerate(t) if x == s_id]
        if len(io_at) != 1 or len(s_at) != 2 or len(rt) != len(t):
            raise TaskError(f"Prompt does not tokenize into aligned name positions: {prompt!r}")
        prompts.append(prompt)
        refs.append(ref)
        toks.append(t)
        ref_toks.append(rt)
        answers.append([io_id, s_id])
        for role, p in zip(ROLES, (io_at[0], s_at[0], s_at[0] + 1, s_at[1], len(t) - 1)):
            pos[role].append(p)

    lengths = torch.tensor([len(t) for t in toks])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    width = int(lengths.max())
    padded = lambda rows: torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
    # Every prompt of a group must share its layout, or per-group means would mix positions.
    for g in set(group_of_prompt):
        ls = {len(toks[i]) for i, gg in enumerate(group_of_prompt) if gg == g}
        if len(ls) != 1:
            raise TaskError(f"Template {groups_all[g][0]} tokenizes to different lengths {sorted(ls)}.")
    sizes = torch.bincount(torch.tensor(group_of_prompt), minlength=len(groups_all))
    ref = None
    if ref_per_group > 0:
        ref = _reference_set(tokenizer, groups_all, sorted(set(group_of_prompt)), ref_per_group, seed, bos,
                             names_ok, places_ok, objects_ok, {g: len(toks[group_of_prompt.index(g)]) for g in set(group_of_prompt)})
        refs, ref_toks = ref["prompts"], ref["tokens"]
    return TaskDataset(
        task="ioi",
        prompts=prompts,
        reference_prompts=refs,
        tokens=padded(toks),
        reference_tokens=padded(ref_toks),
        reference_groups=None if ref is None else torch.tensor(ref["groups"]),
        reference_lengths=None if ref is None else torch.tensor([len(t) for t in ref_toks]),
        lengths=lengths,
        positions={r: torch.tensor(v) for r, v in pos.items()},
        answer_tokens=torch.tensor(answers),
        groups=torch.tensor(group_of_prompt),
        group_names=[g[0] for g in groups_all],
        meta={
            "n": n,
            "seed": seed,
            "mode": mode,
            "prepend_bos": prepend_bos,
            "bos": bool(bos),  # prompts start with BOS (asked, or the tokenizer's own)
            "templates": template_ids,
            "min_group_size": int(sizes[sizes > 0].min()),
            "reference": "paired ABC twins" if ref is None else f"{ref_per_group} ABC prompts per group",
            "dropped_words": {"names": names_dropped, "places": places_dropped, "objects": objects_dropped},
            "answer": "[IO, S]",
        },
    )


def _reference_set(tokenizer, groups_all, groups, per_group, seed, bos, names, places, objects, length_of):
    """R ABC prompts for each group: the group's template with three fresh distinct names and a random
    place and object, from their own seeded stream (so the clean prompts do not depend on R)."""
    rng = random.Random(f"{seed}-reference")
    out = {"prompts": [], "tokens": [], "groups": []}
    for g in groups:
        template = groups_all[g][1]
        for _ in range(per_group):
            text = _fill_reference(template, tuple(rng.sample(names, 3)), rng.choice(places), rng.choice(objects))
            t = encode_prompt(tokenizer, text, bos)
            if len(t) != length_of[g]:
                raise TaskError(f"Reference prompt does not align with its template: {text!r}")
            out["prompts"].append(text)
            out["tokens"].append(t)
            out["groups"].append(g)
    return out


# The paper's attention scores (heads.py): where the name movers, S-inhibition and duplicate-token heads look.
ATTENTION_PAIRS = {"attn END→IO": ("END", "IO"), "attn END→S1": ("END", "S1"), "attn END→S2": ("END", "S2"),
                   "attn S2→S1": ("S2", "S1")}
# The paper's classes a discovered head can be named after, with their colours.
CLASS_COLORS = {"name mover": "#1f77b4", "negative name mover": "#d62728", "s-inhibition": "#ff7f0e",
                "s-suppression": "#e377c2", "s mover": "#bcbd22"}


def label_head(position: str, score, floor: float, prefer: float) -> str | None:
    """The paper's class for a head kept at `position`, from its scores (discover.label), or None.

    At END, by where the head looks (attention >= floor and >= prefer x its attention to either other
    name) and what it writes (direct effect on logit[IO] - logit[S]):
      looks at IO: "name mover" (direct effect >= 0) or "negative name mover" (< 0);
      looks at S2: "s-inhibition" when its effect is mostly indirect (|direct effect| < half its
      |ablation effect|); when it is mostly direct, "s-suppression" (lowers S's logit itself) or
      "s mover" (raises it);
      else "other".
    At S2: "duplicate token" when it looks back at S1, the same name (attn S2→S1 >= floor, the
    paper's test), whatever it does on random tokens. Elsewhere: None (the generic names).
    """
    if position == "END":
        att = {r: score(f"attn END→{r}") for r in ("IO", "S1", "S2")}
        looks = lambda r: att[r] >= floor and all(att[r] >= prefer * v for k, v in att.items() if k != r)
        direct = score("direct effect")
        if looks("IO"):
            return "name mover" if direct >= 0 else "negative name mover"
        if looks("S2"):
            if abs(direct) < 0.5 * abs(score("ablation effect")):
                return "s-inhibition"
            return "s-suppression" if direct > 0 else "s mover"
        return "other"
    if position == "S2" and score("attn S2→S1") >= floor:
        return "duplicate token"
    return None


TASK = Task(
    name="ioi",
    title="Indirect object identification",
    roles=ROLES,
    build=make_ioi_dataset,
    modes=MODES,
    metric="logit(IO) − logit(S) at END",
    reference="p_ABC: the same template with three fresh names (Wang et al.)",
    example="Then, Mary and John went to the store. John gave a drink to → Mary",
    vocabulary=vocabulary,
    source="Wang et al. 2022, arXiv 2211.00593",
    accuracy_label="IO above S",
    breakdown_label="By template and order",
    group_label=("template", "templates"),
    twin_label="ABC twin",
    orders=("ABBA", "BABA"),
    attention_pairs=ATTENTION_PAIRS,
    label_head=label_head,
    class_colors=CLASS_COLORS,
    mover_class="name mover",
    inhibition_class="s-inhibition",
)
