"""Patching cost on a random model of GPT-2 small's shape (GPT-2's tokenizer), IOI prompt pairs:

    python -m bench.patching [--model-dir DIR] [--n 20] [--threads 2]

Times, in one run after loading the model: a plain forward pass (the bridge called on the N clean
prompts, logits included, as the model is normally called) and one of 100 prompts; activation
patching (noise; 144 heads × 6 positions, the last "*": every position) and path patching into two
receivers' queries at END. Each patching time is printed in seconds and as a multiple of the plain
forward pass of the same N measured in the same run. A missing model folder is filled with a random
GPT-2-small-shaped model.
"""
import argparse
import statistics
import time
from pathlib import Path
import tempfile

import torch


def forward_seconds(model, tokens: torch.Tensor, repeat: int = 3) -> float:
    """Median time of the bridge's own forward pass (logits for every position) on `tokens`."""
    tokens = tokens.to(model.device)
    times = []
    with torch.no_grad():
        model.bridge(tokens[:2])  # warm-up
        for _ in range(repeat):
            t = time.perf_counter()
            model.bridge(tokens)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[20])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "circuit-bench-gpt2-shape"))
    p.add_argument("--skip-activation", action="store_true", help="time path patching only")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from bench.run import build_model
    from circuit_core import patching as pt
    from circuit_core.ablation import Methodology

    model = build_model(Path(args.model_dir), "cuda" if torch.cuda.is_available() else "cpu")
    model.blocks  # built and checked once per model, as the editor has it before patching
    f100 = forward_seconds(model, pt.paired_dataset(model, Methodology(n=100)).tokens)
    print(f"{model.device}, {torch.get_num_threads()} threads; plain forward pass of 100 prompts: {f100:.3f} s",
          flush=True)
    for n in args.n:
        ds = pt.paired_dataset(model, Methodology(n=n))
        fwd = forward_seconds(model, ds.tokens)
        line = f"N={n}: plain forward pass {fwd:.3f} s (prompts of {ds.tokens.shape[1]} tokens)"
        if not args.skip_activation:
            t = time.perf_counter()
            pt.activation_patching(model, ds, "noise")
            ta = time.perf_counter() - t
            line += f"; activation patching {ta:.1f} s = {ta / fwd:.0f} fwd (144 heads x 6 positions)"
        t = time.perf_counter()
        pt.path_patching(model, ds, [(9, 9), (10, 0)], "q", "END")
        tp = time.perf_counter() - t
        line += f"; path patching into 9.9, 10.0 (queries at END) {tp:.1f} s = {tp / fwd:.0f} fwd"
        print(line, flush=True)


if __name__ == "__main__":
    main()
