"""What the evidence for each class costs: `python -m bench.evidence [--model-dir DIR] [--n 20] [--skip-hooked]`.

On a GPT-2-small-shaped model with GPT-2's tokenizer (random weights, the same compute) and the paper's
circuit (7 classes; every class -> class and class -> logits edge), on N IOI prompt pairs: every edge's joint
path patching through blocks.py and through hooked passes, the attention between named positions, the copy
scores and the role scores, each in seconds and in plain forwards of the N prompts (Hugging Face, with
logits) measured in the same run.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=Path("bench/.models/gpt2-shape"))
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--skip-hooked", action="store_true", help="leave out the hooked passes (the slow path)")
    args = p.parse_args(argv)

    from bench.run import CIRCUIT, build_model, plain_forwards
    from circuit_core import evidence
    from circuit_core.ablation import Methodology
    from circuit_core.circuit import load_circuit
    from circuit_core.patching import paired_dataset

    model = build_model(args.model_dir, "cpu")
    circuit = load_circuit(CIRCUIT)
    dataset = paired_dataset(model, Methodology(n=args.n))
    heads = circuit.heads

    def timed(fn):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    rows = [(f"every edge ({len(circuit.all_edges())}), blocks.py",
             timed(lambda: evidence.edge_effects(model, dataset, circuit, bootstrap=200)))]
    if not args.skip_hooked:
        rows.append(("every edge, hooked passes",
                     timed(lambda: evidence.edge_effects(model, dataset, circuit, bootstrap=200, hooked=True))))
    rows += [(f"attention, {len(heads)} heads", timed(lambda: evidence.attention_evidence(model, dataset, heads))),
             ("copy scores", timed(lambda: evidence.copy_scores(model, heads, evidence.name_tokens(dataset)))),
             ("role scores (20 random sequences)", timed(lambda: evidence.role_scores(model, heads)))]
    fwd, _ = plain_forwards(args.model_dir, dataset)
    print(f"N = {dataset.n} prompt pairs; plain forward of the N prompts with logits {fwd:.2f} s")
    for label, s in rows:
        print(f"  {label:<34} {s:8.1f} s  {s / fwd:6.1f} x fwd")


if __name__ == "__main__":
    main()
