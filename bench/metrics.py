"""What each metric costs the engine: `python -m bench.metrics [--model-dir DIR] [--n 50] [--repeats 2]`.

On a GPT-2-small-shaped model with GPT-2's tokenizer (random weights, the same compute; vocabulary 50,257),
nine node sets (M, ∅, the paper's circuit, six random sets of 30 heads) are evaluated from cold caches under
each metric, the metrics interleaved within each repeat, and timed in seconds and in plain forwards of the N
prompts (Hugging Face, with logits) measured in the same run. KL's one-off pass for the intact model's
log-probabilities is timed apart.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

METRICS = ("logit_diff", "prob_diff", "kl")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=Path("bench/.models/gpt2-shape"))
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    os.environ["CIRCUIT_CACHE_DIR"] = "off"

    import numpy as np

    from bench.memory import fitted_circuit
    from bench.run import build_model, plain_forwards
    from circuit_core.ablation import Methodology, NodeSet
    from circuit_core.criteria import circuit_node_set
    from circuit_core.evaluate import build_evaluator

    model = build_model(args.model_dir, "cpu")
    rng = np.random.default_rng(0)
    every = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    sets = [NodeSet.model(), NodeSet.empty(), circuit_node_set(fitted_circuit(model), "circuit")] + [
        NodeSet(frozenset((*every[i], "*") for i in rng.choice(len(every), 30, replace=False))) for _ in range(6)]
    times = {m: [] for m in METRICS}
    clean = []
    dataset = None
    for _ in range(args.repeats):
        for metric in METRICS:
            ev = build_evaluator(model, Methodology(n=args.n, metric=metric, ref_replicates=0))
            dataset = ev.dataset
            model.residual_cache.clear()
            if metric == "kl":
                t = time.perf_counter()
                ev.clean_log_probs
                clean.append(time.perf_counter() - t)
            t = time.perf_counter()
            ev.logit_diffs(sets)
            times[metric].append(time.perf_counter() - t)
    fwd, _ = plain_forwards(args.model_dir, dataset)
    print(f"N = {args.n}; {len(sets)} node sets; plain forward with logits {fwd:.2f} s")
    for metric in METRICS:
        lo, hi = min(times[metric]), max(times[metric])
        print(f"  {metric:<11} {lo:6.2f}–{hi:.2f} s   {lo / fwd:.1f}–{hi / fwd:.1f} x fwd")
    print(f"  kl's intact log-probabilities, once: {min(clean):.2f} s   {min(clean) / fwd:.2f} x fwd")


if __name__ == "__main__":
    main()
