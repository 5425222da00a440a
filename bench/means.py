"""The means behind mean ablation, timed: what a first-ever open waits for before any figure.

Times, in one run on a GPT-2-small-shaped model with GPT-2's tokenizer (random weights, the same
compute), a plain forward pass of the N clean prompts (Hugging Face, with logits) and
the mean-ablation tables of the default methodology (the reference set and its bootstrap replicates,
disk cache off), in seconds and in plain forwards.

    python -m bench.means [--model-dir DIR] [--n 100] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=Path("bench/.models/gpt2-shape"))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    os.environ["CIRCUIT_CACHE_DIR"] = "off"

    import torch

    from bench.run import build_model, plain_forwards
    from circuit_core.ablation import Methodology, ablation_tables
    from circuit_core.tasks import build_dataset

    model = build_model(args.model_dir, "cpu")
    meth = Methodology(n=args.n)
    dataset = build_dataset(meth.task, model.tokenizer, **meth.dataset_kwargs())
    refs = len(dataset.reference_tokens)

    def best(fn):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    fwd, _ = plain_forwards(args.model_dir, dataset)
    means = best(lambda: ablation_tables(model, dataset, meth, meth.ref_replicates))
    print(f"torch threads {torch.get_num_threads()}; N = {dataset.n}; {refs} reference prompts "
          f"({meth.ref_per_group} per group), {meth.ref_replicates} replicates")
    print(f"plain forward of the N clean prompts, with logits: {fwd:.2f} s")
    print(f"mean tables + replicates:             {means:.2f} s  ({means / fwd:.1f} x fwd)")


if __name__ == "__main__":
    main()
