"""Edge-level circuits, timed: what an edge list costs the engine (README, Edges).

On a random model of GPT-2 small's shape with GPT-2's tokenizer, N prompts, no reference replicates: a
plain forward of the body, the paper's node-level circuit, the same circuit with 9 class edges, and each
of those edges toggled from the circuit's cached residuals (the editor's click), as CPU time on one thread
(best of `repeats`; CPU time, so a shared machine does not move it much) and in plain forwards.

    python -m bench.edges [--model-dir DIR] [--n 100] [--repeats 2]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

EDGES = [("previous token", "induction", "k"), ("induction", "s-inhibition", "v"),
         ("duplicate token", "s-inhibition", "v"), ("s-inhibition", "name mover", "q"),
         ("s-inhibition", "backup name mover", "q"), ("s-inhibition", "negative name mover", "q"),
         ("name mover", "logits", "out"), ("backup name mover", "logits", "out"),
         ("negative name mover", "logits", "out")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=Path("bench/.models/gpt2-shape"))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from bench.memory import build_shape, load_shape
    from circuit_core.ablation import Methodology
    from circuit_core.circuit import Circuit, Edge, load_circuit
    from circuit_core.criteria import circuit_node_set
    from circuit_core.editing import toggle_edge
    from circuit_core.evaluate import build_evaluator

    torch.set_num_threads(1)
    args.model_dir.mkdir(parents=True, exist_ok=True)
    build_shape(args.model_dir, "gpt2-small")
    model = load_shape(args.model_dir, "cpu")
    ev = build_evaluator(model, Methodology(n=args.n, ref_replicates=0))
    blocks = model.blocks

    def best(fn, repeats=args.repeats):
        times = []
        for _ in range(repeats):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return min(times)

    def plain():
        with torch.no_grad():
            x = blocks.embed(ev.dataset.tokens)
            for layer in range(blocks.n_layers):
                x = blocks.layer(layer, x)

    def fresh(circuit):
        ev.clear_cache()
        ev.logit_diffs([circuit_node_set(circuit)])

    node = load_circuit("data/circuits/ioi-gpt2-small.json")
    edged = Circuit.from_dict({**node.to_dict(), "edges": [Edge(*e).to_dict() for e in EDGES]})
    toggled = [toggle_edge(edged, e) for e in edged.edges]

    def edits():
        for c in toggled:
            ev._memo.clear()  # the residuals stay: each toggle starts from the circuit's
            ev.logit_diffs([circuit_node_set(c)])

    forward = best(plain)
    t_node, t_edges = best(lambda: fresh(node)), best(lambda: fresh(edged))
    fresh(edged)
    t_edit = best(edits, 1) / len(toggled)
    print(f"N={args.n}, one thread, CPU time: plain forward {forward:.2f} s; node-level circuit "
          f"{t_node / forward:.2f}x; with {len(EDGES)} class edges {t_edges / forward:.2f}x; "
          f"one edge toggled after it {t_edit / forward:.2f}x")


if __name__ == "__main__":
    main()
