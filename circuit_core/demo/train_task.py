"""Train a tiny GPT-2 on any registered task, so tests have a model that really does it.

    python -m circuit_core.demo.train_task colored-objects /tmp/co-model --steps 800

The bundled IOI demo has its own recipe (demo/train.py); this one is generic and small: a word-level
tokenizer from the task's vocabulary, prompts of the task itself (a training seed far from the ones
evaluation uses), next-token loss on the whole prompt plus the answer's loss again, AdamW with a
cosine schedule, seeded. Returns the training time and the final batch's accuracy.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from ..tasks import build_dataset
from ..toy import gpt2_config, task_vocabulary, word_level_tokenizer

TRAIN_SEED_BASE = 2_000_000  # training prompts: seeds no test or user picks by chance


def train_task_model(folder, task: str, n_layer: int = 2, n_head: int = 4, n_embd: int = 64, steps: int = 600,
                     batch: int = 64, lr: float = 3e-3, pool: int = 4096, seed: int = 0, lm_weight: float = 0.2,
                     log=None) -> dict:
    from transformers import GPT2LMHeadModel

    t0 = time.time()
    torch.manual_seed(seed)
    tokenizer = word_level_tokenizer(task_vocabulary(task))
    data = build_dataset(task, tokenizer, n=pool, seed=TRAIN_SEED_BASE + seed)
    end = data.lengths - 1
    full = torch.cat([data.tokens, torch.zeros(pool, 1, dtype=torch.long)], 1)
    full[torch.arange(pool), end + 1] = data.answer_tokens[:, 0]  # the prompt with its answer
    config = gpt2_config(len(tokenizer), n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                         n_positions=max(64, full.shape[1] + 1))
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    acc = float("nan")
    for step in range(steps):
        idx = torch.randint(0, pool, (batch,), generator=gen)
        x, e = full[idx], end[idx]
        logits = model(x, attention_mask=torch.ones_like(x)).logits[:, :-1]
        targets, rows = x[:, 1:], torch.arange(batch)
        real = torch.arange(x.shape[1] - 1)[None, :] <= e[:, None]
        # the prompt's own tokens are mostly random draws: a light weight, the answer the main target
        loss = (lm_weight * torch.nn.functional.cross_entropy(logits[real], targets[real])
                + torch.nn.functional.cross_entropy(logits[rows, e], targets[rows, e]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step == steps - 1 or (log and step % 100 == 0):
            with torch.no_grad():
                at = logits[rows, e]
                ans = data.answer_tokens[idx]
                acc = float((at.gather(1, ans[:, :1]) > at.gather(1, ans[:, 1:])).float().mean())
            if log:
                log(f"step {step}  loss {loss.item():.3f}  answer beats the twin's {acc:.2f}  {time.time() - t0:.0f}s")
    model.eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {"seconds": time.time() - t0, "final_batch_accuracy": acc, "steps": steps}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m circuit_core.demo.train_task", description=__doc__.split("\n")[0])
    p.add_argument("task")
    p.add_argument("out", type=Path)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    print(train_task_model(args.out, args.task, args.layers, args.heads, args.d_model, args.steps, lr=args.lr, seed=args.seed,
                           log=print))


if __name__ == "__main__":
    main()
