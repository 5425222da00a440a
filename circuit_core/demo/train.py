"""Train (or evaluate) the bundled IOI demo model: a small GPT-2 that really does IOI.

    python -m circuit_core.demo.train                  # train, save to data/models/ioi-demo, evaluate
    python -m circuit_core.demo.train --evaluate-only  # evaluate the saved model (model card numbers)

Data: the project's own IOI prompts (circuit_core.tasks.ioi) on all names, places and objects, both
orders (ABBA/BABA), from 12 of the 15 templates; templates HELD_OUT never appear in training.
Training prompts use dataset seed TRAIN_DATA_SEED_BASE + --seed, so any small dataset seed (the
app's default 0, the tests' seeds) is a fresh sample.
Objective: next-token loss on the whole sentence, final IO name included (as in pretraining, so
the model also learns that names get copied), plus the answer token's loss again, so IO at END is
what training is mostly about.
Evaluation goes through the project's own path: load_model -> TransformerBridge -> Evaluator.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from ..models import DEMO_MODEL_DIR
from ..tasks.ioi import BABA_TEMPLATES, make_ioi_dataset
from ..toy import gpt2_config, ioi_vocabulary, word_level_tokenizer

HELD_OUT = (2, 9, 13)  # a plain variant, one with an unseen word (" commuting"), a reordered one
TRAIN_TEMPLATES = tuple(t for t in range(len(BABA_TEMPLATES)) if t not in HELD_OUT)
TRAIN_DATA_SEED_BASE = 1_000_000
ARCH = dict(n_layer=4, n_head=4, n_embd=64)


def sentences(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Complete sentences (prompt + IO) padded with BOS, and the index of END in each."""
    tokens, end = dataset.tokens, dataset.lengths - 1
    full = torch.cat([tokens, torch.zeros(len(tokens), 1, dtype=tokens.dtype)], 1)
    full[torch.arange(len(full)), end + 1] = dataset.answer_tokens[:, 0]
    return full, end


def train(out: Path, seed: int = 0, steps: int = 1500, batch: int = 64, lr: float = 1e-3, pool: int = 50_000,
          log_every: int = 100):
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(2)  # the budget: 2 CPU cores, <= 10 minutes
    torch.manual_seed(seed)
    t0 = time.time()
    tokenizer = word_level_tokenizer(ioi_vocabulary())
    data = make_ioi_dataset(tokenizer, n=pool, seed=TRAIN_DATA_SEED_BASE + seed, templates=list(TRAIN_TEMPLATES))
    full, end = sentences(data)
    print(f"{pool} training prompts from templates {list(TRAIN_TEMPLATES)} in {time.time() - t0:.1f}s")

    config = gpt2_config(len(tokenizer), **ARCH)
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
                diff = (ans[rows, data.answer_tokens[idx, 0]] - ans[rows, data.answer_tokens[idx, 1]])
            print(f"step {step:5d}  loss {lm.item():.3f} (sentence) {answer.item():.3f} (answer)  "
                  f"batch logit diff {diff.mean().item():.2f}  acc {(diff > 0).float().mean().item():.2f}  "
                  f"{time.time() - t0:.0f}s", flush=True)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"trained in {time.time() - t0:.1f}s (seed {seed}, {steps} steps of {batch}); saved to {out}")
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
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--evaluate-only", action="store_true", help="skip training; evaluate the model in --out")
    p.add_argument("--eval-n", type=int, default=500)
    p.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1], help="dataset seeds (fresh: < 1,000,000)")
    p.add_argument("--heads", action="store_true", help="also print F(M) with each head ablated")
    args = p.parse_args(argv)
    if not args.evaluate_only:
        train(args.out, seed=args.seed, steps=args.steps, batch=args.batch, lr=args.lr)
    evaluate(args.out, n=args.eval_n, seeds=args.eval_seeds, heads=args.heads)


if __name__ == "__main__":
    main()
