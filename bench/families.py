"""The engine on the other families, at real models' shapes: `python -m bench.families` (about 10 minutes).

Random models with the shapes of Pythia-160m (GPT-NeoX: partial rotary, parallel attention + MLP) and
Qwen2.5-0.5B (grouped-query attention with 2 key/value heads, q/k/v biases, RMSNorm, gated MLP, tied
embeddings), with GPT-2's tokenizer (so GPT-2's vocabulary of 50,257, not theirs: the unembedding is
smaller than the real models', the transformer body the same), IOI N = 100, the paper's circuit by
head index, default methodology. Measured in one run per model, beside a plain Hugging Face forward pass
(with logits) over the same prompts: the means, the validation suite (111 node sets) on the engine against
the naive loop (one hooked pass per set, full logits; a sample of sets) and an edit's new F(C) in the first,
middle and last layer. Writes bench/results/families.json and the table between the families markers in
README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

SHAPES = {
    "Pythia-160m": ("GPTNeoXConfig", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                          intermediate_size=3072, rotary_pct=0.25, use_parallel_residual=True,
                                          hidden_act="gelu", max_position_embeddings=2048, tie_word_embeddings=False)),
    "Qwen2.5-0.5B": ("Qwen2Config", dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                                         num_key_value_heads=2, intermediate_size=4864, max_position_embeddings=32768,
                                         rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)),
}


def build(name: str, folder: Path):
    """A random model of `name`'s shape with GPT-2's tokenizer, saved to `folder` (once)."""
    import transformers as tf

    from circuit_core.toy import gpt2_tokenizer

    if not (folder / "config.json").exists():
        tok = gpt2_tokenizer()
        cls, shape = SHAPES[name]
        ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        torch.manual_seed(0)
        model = tf.AutoModelForCausalLM.from_config(getattr(tf, cls)(vocab_size=len(tok), **shape, **ids))
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    return folder


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(name: str, folder: Path, naive_sample: int) -> dict:
    from transformers import AutoModelForCausalLM

    from bench.run import CIRCUIT, edit_times, naive_per_set, suite_sets
    from circuit_core.ablation import Methodology
    from circuit_core.circuit import load_circuit
    from circuit_core.evaluate import build_evaluator
    from circuit_core.models import load_model

    model = load_model(str(folder), device="cpu")
    meth = Methodology()
    circuit = load_circuit(CIRCUIT)
    r = {"model": name, "layers": model.n_layers, "heads": model.n_heads, "blocks": type(model.blocks).__name__}
    r["means_s"], ev = timed(lambda: build_evaluator(model, meth))
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        hf(ev.dataset.tokens[:4])
        r["plain_forward_s"] = min(timed(lambda: hf(ev.dataset.tokens))[0] for _ in range(2))
    del hf
    sets = suite_sets(circuit)
    r["suite_sets"] = len(sets)
    r["suite_s"], _ = timed(lambda: build_evaluator(model, meth).logit_diffs(sets))
    sample = sets[:: max(1, len(sets) // naive_sample)][:naive_sample]
    r["naive_per_set_s"] = naive_per_set(model, ev.dataset, meth, sample)
    r["naive_suite_s"] = r["naive_per_set_s"] * len(sets)
    ev.logit_diffs(sets[:3])  # M, C, ∅: what the editor has before a click
    L = model.n_layers
    r["edit_s_by_layer"] = edit_times(ev, circuit, layers=(0, L // 2, L - 1))
    print(json.dumps(r), flush=True)
    return r


def table(rows: list[dict]) -> str:
    lines = ["| model shape (random weights, GPT-2's tokenizer) | engine | plain forward (fwd) | means | suite "
             "(111 sets) | naive loop | speed-up (target ≥ 3×) | an edit, first / middle / last layer (target ≤ 2 s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["plain_forward_s"]
        edits = r["edit_s_by_layer"]
        lines.append(
            f"| {r['model']} ({r['layers']} × {r['heads']} heads) | {r['blocks']} | {f:.2f} s | {r['means_s']:.1f} s "
            f"({r['means_s'] / f:.1f} fwd) | {r['suite_s']:.1f} s ({r['suite_s'] / f:.1f} fwd) | "
            f"{r['naive_suite_s']:.0f} s | {r['naive_suite_s'] / r['suite_s']:.1f}× | "
            + " / ".join(f"{v:.2f}" for v in edits.values()) + " s |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "circuit-bench-families")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--naive-sample", type=int, default=4)
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["CIRCUIT_CACHE_DIR"] = "off"  # the means computed, as on a first open
    rows = [measure(m, build(m, args.dir / m), args.naive_sample) for m in args.models]
    text = (f"Measured by `python -m bench.families` (CPU, {args.threads} threads, torch {torch.__version__}, "
            "IOI N = 100, default methodology):\n\n" + table(rows))
    print(text)
    out = ROOT / "bench" / "results" / "families.json"
    out.write_text(json.dumps(rows, indent=2))
    readme = ROOT / "README.md"
    s, start, end = readme.read_text(), "<!-- families:start -->", "<!-- families:end -->"
    if not args.no_readme and start in s and end in s:
        readme.write_text(s[: s.index(start) + len(start)] + "\n" + text + "\n" + s[s.index(end):])


if __name__ == "__main__":
    main()
