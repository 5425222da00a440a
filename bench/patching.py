"""Patching cost on a random model of GPT-2 small's shape (GPT-2's tokenizer), IOI prompt pairs:

    python -m bench.patching [--n 20]

Times activation patching (noise; 144 heads × 6 positions) and path patching into two receivers'
queries at END, after loading the model.
"""
import argparse
import time
from pathlib import Path
import tempfile

import torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, nargs="+", default=[20])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "circuit-bench-gpt2-shape"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from bench.run import build_model
    from circuit_core import patching as pt
    from circuit_core.ablation import Methodology

    model = build_model(Path(args.model_dir), "cuda" if torch.cuda.is_available() else "cpu")
    for n in args.n:
        ds = pt.paired_dataset(model, Methodology(n=n))
        t = time.perf_counter()
        pt.activation_patching(model, ds, "noise")
        ta = time.perf_counter() - t
        t = time.perf_counter()
        pt.path_patching(model, ds, [(9, 9), (10, 0)], "q", "END")
        tp = time.perf_counter() - t
        print(f"N={n}: activation patching {ta:.1f} s (144 heads x 6 positions); "
              f"path patching into 9.9, 10.0 (queries at END) {tp:.1f} s", flush=True)


if __name__ == "__main__":
    main()
