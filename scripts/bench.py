"""Speed of the evaluator on a random model with GPT-2 small's shape (12 layers x 12 heads,
d_model 768, vocabulary 50257): the same compute as GPT-2 small, no download needed.

Compares, in one run, evaluating the node sets of a minimality pass over the paper's 26-head
circuit (52 sets: C\\K and C\\(K∪{v}) per head) two ways:
  naive   - one hooked forward pass per node set, full logits (what a notebook typically does);
  batched - Evaluator.logit_diffs: sets stacked in the batch, shared lower layers computed once,
            answer logits only.
Both give the same numbers (checked here). Prints times and the ratio.

    python -m scripts.bench [--n 50] [--sets 52]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from circuit_core.ablation import Methodology, NodeSet
from circuit_core.circuit import load_circuit
from circuit_core.evaluate import Evaluator
from circuit_core.models import load_model
from circuit_core.tasks import build_dataset
from circuit_core.toy import save_random_gpt2


def minimality_sets(circuit):
    sets = []
    nodes = circuit.nodes()
    for v, ks in circuit.minimality_k.items():
        k = set(ks)
        sets.append(NodeSet(frozenset(x for x in nodes if x[:2] not in k)))
        sets.append(NodeSet(frozenset(x for x in nodes if x[:2] not in k | {v})))
    return sets


def naive(ev: Evaluator, sets):
    """One forward pass per node set with full logits: the baseline."""
    model, ds = ev.model, ev.dataset
    out = []
    with torch.no_grad():
        for s in sets:
            mask = ev.masks([s])[0]
            hooks = []
            for layer in range(model.n_layers):
                keep, value = mask[:, :, layer, :, None], ev.values[:, :, layer]
                hooks.append((f"blocks.{layer}.attn.hook_z",
                              lambda z, hook, keep=keep, value=value: torch.where(keep, z, value)))
            logits = model.bridge.run_with_hooks(ds.tokens, fwd_hooks=hooks)
            end = logits[torch.arange(ds.n), ds.positions["END"]]
            out.append(end.gather(1, ds.answer_tokens[:, :1])[:, 0] - end.gather(1, ds.answer_tokens[:, 1:])[:, 0])
    return torch.stack(out).double()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--sets", type=int, default=52)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        save_random_gpt2(d, n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024)
        model = load_model(d, device="cpu")
    ds = build_dataset("ioi", model.tokenizer, n=args.n, seed=0)
    ev = Evaluator(model, ds, Methodology(n=args.n))
    sets = minimality_sets(load_circuit("data/circuits/ioi-gpt2-small.json"))[: args.sets]
    print(f"GPT-2-small-shaped random model, N={args.n} prompts of {ds.tokens.shape[1]} tokens, {len(sets)} node sets")
    t = time.perf_counter()
    base = naive(ev, sets)
    t_naive = time.perf_counter() - t
    t = time.perf_counter()
    ours = ev.logit_diffs(sets)
    t_ours = time.perf_counter() - t
    err = (base - ours).abs().max().item()
    print(f"naive   (one pass per set, full logits): {t_naive:7.2f} s")
    print(f"batched (Evaluator.logit_diffs):         {t_ours:7.2f} s")
    print(f"speed-up: {t_naive / t_ours:.2f}x   max |difference| between the two: {err:.2e}")


if __name__ == "__main__":
    main()
