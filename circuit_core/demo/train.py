"""Train (or evaluate) the bundled IOI demo model: a small GPT-2 that really does IOI.

    python -m circuit_core.demo.train                  # train, save to data/models/ioi-demo, evaluate
    python -m circuit_core.demo.train --evaluate-only  # evaluate the saved model (model card numbers)

Data: the project's own IOI prompts (circuit_core.tasks.ioi) on all names, places and objects, both
orders (ABBA/BABA), from 12 of the 15 templates; templates HELD_OUT never appear in training.
Training prompts use dataset seed TRAIN_DATA_SEED_BASE + --seed, so any small dataset seed (the
app's default 0, the tests' seeds) is a fresh sample.
Mix (so that position alone cannot tell which name to suppress): a share --ioi-share (0.4) of the
pool is standard IOI prompts; a share --repeat-share (0.2) is repeated random-token sequences
r_1..r_T r_1..r_T, whose second half only looking back predicts (what teaches GPT-2 its duplicate-
token and induction heads in pretraining); the rest are "which name occurs once" sentences on the same training
templates, places and objects (so no new words: the tokenizer and every IOI evaluation stay as
they are): the template's first name slot ("[B] and [A]") and its second ("[B]") become lists of
1 to --max-names names ("X", "X and Y", "X, Y and Z"), filled so that exactly one name occurs once
and every other name twice (never twice in one list); the answer is the name that occurs once.
Layouts (first list, second list): (1, 2), e.g. "Then, B went to the store. A and B gave a ring
to" -> A, where the answer is in the second list (sometimes the last name); (3, 2), e.g. "Then,
A, B and C went to the store. C and B gave a ring to" -> A, where two names repeat and the last
one is not the only one to suppress; (2, 3) with the answer among three in the second list. The
standard IOI layout is (2, 1). Only detecting which name is duplicated solves all of them.
The old recipe (IOI prompts only: --ioi-share 1 --repeat-share 0) is solved by a shortcut (late
heads suppress the most recent name) with no duplicate-token head; this mix gives a layer-0
duplicate-token head at S2 that the S-inhibition and name-mover heads at END depend on.
Objective: next-token loss on the whole sentence, final IO name included (as in pretraining, so
the model also learns that names get copied), plus the answer token's loss again, so IO at END is
what training is mostly about.
Evaluation goes through the project's own path: load_model -> TransformerBridge -> Evaluator.
"""
from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import torch

from ..models import DEMO_MODEL_DIR
from ..tasks.base import single_token_id
from ..tasks.ioi import BABA_TEMPLATES, NAMES, OBJECTS, PLACES, make_ioi_dataset
from ..toy import gpt2_config, ioi_vocabulary, word_level_tokenizer

HELD_OUT = (2, 9, 13)  # a plain variant, one with an unseen word (" commuting"), a reordered one
TRAIN_TEMPLATES = tuple(t for t in range(len(BABA_TEMPLATES)) if t not in HELD_OUT)
TRAIN_DATA_SEED_BASE = 1_000_000
ARCH = dict(n_layer=4, n_head=4, n_embd=64)
IOI_SHARE = 0.4  # share of standard IOI prompts in the training pool (REPEAT_SHARE below; the rest: "which name occurs once")
MAX_NAMES = 3  # names per list in the other sentences (2 or 3)
REPEAT_SHARE = 0.2  # share of repeated random-token sequences (as in pretraining: what induction is for)


def sentences(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Complete sentences (prompt + IO) padded with BOS, and the index of END in each."""
    tokens, end = dataset.tokens, dataset.lengths - 1
    full = torch.cat([tokens, torch.zeros(len(tokens), 1, dtype=tokens.dtype)], 1)
    full[torch.arange(len(full)), end + 1] = dataset.answer_tokens[:, 0]
    return full, end


def layouts(max_names: int = MAX_NAMES) -> list[tuple[int, int]]:
    """(first list, second list) sizes of the non-IOI sentences: k names fill 2k - 1 slots."""
    out = [(1, 2)]
    if max_names >= 3:
        out += [(3, 2), (2, 3)]
    return out


def _names_text(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def unique_name_sentences(tokenizer, n: int, seed: int, templates, max_names: int = MAX_NAMES):
    """n "which name occurs once" sentences (module doc): complete token lists (answer included),
    END indices and [answer, a repeated name] token pairs. Seeded; training templates only."""
    if max_names not in (2, 3):
        raise ValueError(f"--max-names must be 2 or 3 (got {max_names})")
    rng = random.Random(f"unique-name-{seed}")
    names = [w for w in NAMES if single_token_id(tokenizer, " " + w) is not None]
    shapes = layouts(max_names)
    toks, ends, answers = [], [], []
    for _ in range(n):
        t = BABA_TEMPLATES[rng.choice(list(templates))]
        first, second = shapes[rng.randrange(len(shapes))]
        k = (first + second + 1) // 2
        people = rng.sample(names, k)
        unique, repeated = people[0], people[1:]
        # the larger list holds every name once; the smaller one holds the repeated names
        big, small = [unique] + repeated, list(repeated)
        rng.shuffle(big)
        rng.shuffle(small)
        one, two = (big, small) if first > second else (small, big)
        i = t.index("[B] and [A]")
        head, rest = t[:i], t[i + len("[B] and [A]"):]
        rest = rest[: rest.rindex(" [A]")]  # the prompt stops before the answer
        text = (head + _names_text(one) + rest.replace("[B]", _names_text(two), 1))
        text = text.replace("[PLACE]", rng.choice(PLACES)).replace("[OBJECT]", rng.choice(OBJECTS))
        ids = tokenizer.encode(text, add_special_tokens=False)
        answer = single_token_id(tokenizer, " " + unique)
        wrong = single_token_id(tokenizer, " " + two[-1] if two[-1] != unique else " " + two[-2])
        toks.append(ids + [answer])
        ends.append(len(ids) - 1)
        answers.append([answer, wrong])
    width = max(len(x) for x in toks)
    full = torch.zeros(n, width, dtype=torch.long)  # BOS (id 0) pads, as in sentences()
    for r, x in enumerate(toks):
        full[r, : len(x)] = torch.tensor(x)
    return full, torch.tensor(ends), torch.tensor(answers)


def repeated_sequences(tokenizer, n: int, seed: int, lengths=(4, 12)):
    """n sequences r_1..r_T r_1..r_T of distinct random words of the vocabulary (T uniform in
    `lengths`): the second copy can only be predicted by looking back, the job of induction and
    duplicate-token heads, which pretraining teaches GPT-2 the same way. END is the last token but
    one; the "answer" is the last token, and the wrong one the token before it (logged only)."""
    gen = torch.Generator().manual_seed(seed)
    words = torch.arange(2, len(tokenizer))  # not BOS (0) or <unk> (1)
    width = 2 * lengths[1]
    full = torch.zeros(n, width, dtype=torch.long)
    end = torch.zeros(n, dtype=torch.long)
    answers = torch.zeros(n, 2, dtype=torch.long)
    for r in range(n):
        T = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=gen))
        seq = words[torch.randperm(len(words), generator=gen)[:T]]
        full[r, : 2 * T] = torch.cat([seq, seq])
        end[r] = 2 * T - 2
        answers[r] = torch.stack([seq[-1], seq[-2]])
    return full, end, answers


def training_pool(tokenizer, pool: int, seed: int, ioi_share: float = IOI_SHARE, max_names: int = MAX_NAMES,
                  repeat_share: float = REPEAT_SHARE):
    """The training sentences: round(ioi_share * pool) standard IOI prompts, round(repeat_share * pool)
    repeated random-token sequences, the rest "which name occurs once" sentences, shuffled together
    (seeded). Returns (full, end, answers [IO, wrong])."""
    n_rep = round(repeat_share * pool)
    n_ioi = round(ioi_share * pool)
    parts = []
    if n_rep:
        parts.append(repeated_sequences(tokenizer, n_rep, TRAIN_DATA_SEED_BASE + seed))
        pool -= n_rep
    if n_ioi:
        data = make_ioi_dataset(tokenizer, n=n_ioi, seed=TRAIN_DATA_SEED_BASE + seed, templates=list(TRAIN_TEMPLATES))
        full, end = sentences(data)
        parts.append((full, end, data.answer_tokens))
    if pool - n_ioi:
        parts.append(unique_name_sentences(tokenizer, pool - n_ioi, TRAIN_DATA_SEED_BASE + seed, TRAIN_TEMPLATES,
                                           max_names))
    width = max(p[0].shape[1] for p in parts)
    full = torch.cat([torch.nn.functional.pad(p[0], (0, width - p[0].shape[1])) for p in parts])
    end = torch.cat([p[1] for p in parts])
    answers = torch.cat([p[2] for p in parts])
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(TRAIN_DATA_SEED_BASE + seed))
    return full[perm], end[perm], answers[perm]


def train(out: Path, seed: int = 0, steps: int = 4000, batch: int = 64, lr: float = 1e-3, pool: int = 50_000,
          log_every: int = 100, ioi_share: float = IOI_SHARE, max_names: int = MAX_NAMES, arch: dict | None = None,
          repeat_share: float = REPEAT_SHARE):
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(2)  # the budget: 2 CPU cores, <= 10 minutes
    torch.manual_seed(seed)
    t0 = time.time()
    tokenizer = word_level_tokenizer(ioi_vocabulary())
    full, end, answers = training_pool(tokenizer, pool, seed, ioi_share, max_names, repeat_share)
    print(f"{pool} training sentences from templates {list(TRAIN_TEMPLATES)} ({round(ioi_share * pool)} standard "
          f"IOI, {round(repeat_share * pool)} repeated random tokens, the rest 'which name occurs once', layouts "
          f"{layouts(max_names)}) in {time.time() - t0:.1f}s")

    arch = {**ARCH, **(arch or {})}
    config = gpt2_config(len(tokenizer), **arch)
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0  # fresh data each epoch: no overfitting
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = steps // 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(pool, generator=gen)
    model.train()
    for step in range(steps):
        i0 = (step * batch) % pool
        if i0 + batch > pool:
            order, i0 = torch.randperm(pool, generator=gen), 0
        idx = order[i0 : i0 + batch]
        x, e = full[idx], end[idx]
        width = int(e.max()) + 2
        x = x[:, :width]
        # Right padding under a causal mask never reaches real tokens; the mask only silences a warning.
        logits = model(x, attention_mask=torch.ones_like(x)).logits[:, :-1]
        targets = x[:, 1:]
        rows = torch.arange(len(x))
        # Sentence loss on real tokens only (position p predicts p+1, up to and including the answer).
        real = torch.arange(width - 1)[None, :] <= e[:, None]
        lm = torch.nn.functional.cross_entropy(logits[real], targets[real])
        answer = torch.nn.functional.cross_entropy(logits[rows, e], targets[rows, e])
        loss = lm + answer
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            with torch.no_grad():
                ans = logits[rows, e]
                diff = (ans[rows, answers[idx, 0]] - ans[rows, answers[idx, 1]])
            print(f"step {step:5d}  loss {lm.item():.3f} (sentence) {answer.item():.3f} (answer)  "
                  f"batch logit diff {diff.mean().item():.2f}  acc {(diff > 0).float().mean().item():.2f}  "
                  f"{time.time() - t0:.0f}s", flush=True)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"trained in {time.time() - t0:.1f}s (seed {seed}, {steps} steps of {batch}, {arch}, IOI share "
          f"{ioi_share}, repeat share {repeat_share}, max names {max_names}); saved to {out}")
    return model


def evaluate(folder: Path, n: int = 500, seeds=(0,), heads: bool = False) -> dict:
    """Accuracy (IO logit above S) and F(M) through load_model + Evaluator, on all 15 templates and
    on the held-out ones; F(∅) (every head mean-ablated) shows the names reach END only via heads."""
    from ..ablation import Methodology, NodeSet
    from ..evaluate import Evaluator
    from ..models import load_model

    torch.set_num_threads(2)
    model = load_model(str(folder), device="cpu")
    results = {}
    for seed in seeds:
        for label, templates in (("all 15 templates", None), (f"held-out templates {list(HELD_OUT)}", list(HELD_OUT))):
            data = make_ioi_dataset(model.tokenizer, n=n, seed=seed, templates=templates)
            ev = Evaluator(model, data, Methodology(n=n, seed=seed))
            full, empty = ev.logit_diffs([NodeSet.model(), NodeSet.empty()])
            r = {"accuracy": (full > 0).double().mean().item(), "F(M)": full.mean().item(),
                 "F(empty)": empty.mean().item()}
            results[(seed, label)] = r
            print(f"seed {seed:>4}  N={n}  {label:<30}  accuracy {100 * r['accuracy']:5.1f}%  "
                  f"F(M) {r['F(M)']:.2f}  F(∅) {r['F(empty)']:.2f}", flush=True)
            if heads and templates is None:
                # Which heads matter: F(M) with one head mean-ablated at every position.
                nodes = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
                drops = ev.F([NodeSet(frozenset({(l, h, "*")}), complement=True) for l, h in nodes])
                print("  F(M \\ head) per head (layer.head: F):  " + "  ".join(
                    f"{l}.{h}: {f:.2f}" for (l, h), f in sorted(zip(nodes, drops), key=lambda t: t[1])))
    return results


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m circuit_core.demo.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEMO_MODEL_DIR, help="output folder (default: data/models/ioi-demo)")
    p.add_argument("--seed", type=int, default=0, help="init, data order and training-data seed (default 0)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ioi-share", type=float, default=IOI_SHARE,
                   help=f"share of standard IOI prompts in training; the rest are 'which name occurs once' "
                        f"sentences (default {IOI_SHARE}; 1 gives the old, IOI-only recipe)")
    p.add_argument("--repeat-share", type=float, default=REPEAT_SHARE,
                   help=f"share of repeated random-token sequences in training (default {REPEAT_SHARE})")
    p.add_argument("--max-names", type=int, default=MAX_NAMES, choices=(2, 3),
                   help=f"names per list in the other sentences (default {MAX_NAMES})")
    p.add_argument("--layers", type=int, default=ARCH["n_layer"])
    p.add_argument("--heads-per-layer", type=int, default=ARCH["n_head"])
    p.add_argument("--d-model", type=int, default=ARCH["n_embd"])
    p.add_argument("--evaluate-only", action="store_true", help="skip training; evaluate the model in --out")
    p.add_argument("--eval-n", type=int, default=500)
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1], help="dataset seeds (fresh: < 1,000,000)")
    p.add_argument("--heads", action="store_true", help="also print F(M) with each head ablated")
    args = p.parse_args(argv)
    if not args.evaluate_only:
        if not (0 <= args.ioi_share <= 1 and 0 <= args.repeat_share <= 1 and args.ioi_share + args.repeat_share <= 1):
            p.error("--ioi-share and --repeat-share must be in [0, 1] and add up to at most 1")
        train(args.out, seed=args.seed, steps=args.steps, batch=args.batch, lr=args.lr, ioi_share=args.ioi_share,
              max_names=args.max_names, repeat_share=args.repeat_share,
              arch=dict(n_layer=args.layers, n_head=args.heads_per_layer, n_embd=args.d_model))
    evaluate(args.out, n=args.eval_n, seeds=args.eval_seeds, heads=args.heads)


if __name__ == "__main__":
    main()
