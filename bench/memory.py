"""What a session's process holds, measured: `python -m bench.memory` (on a 2-core CPU the N = 100 run
took 44 s and the N = 2000 one 460 s, most of it evaluating the eight reference replicates).

Each configuration runs in a fresh child process (peak resident memory is VmHWM, as in bench.run):
load a random model of GPT-2 small's shape (`--shape`: or Pythia-160m's, Qwen2.5-0.5B's, Gemma-2-2B's;
GPT-2's tokenizer and vocabulary in every case; `--dtype`: the type it is loaded in), build the evaluator for the
methodology, compute faithfulness of the paper's circuit with its joint intervals (M, C, ∅, then C
and ∅ under every reference replicate). Reported: the peak, what loading the model alone reached,
and what the evaluator holds (its tables, replicates' included; dataset; memo) and the residual cache.
Writes bench/results/memory-<device>.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time, torch
from pathlib import Path
torch.set_num_threads({threads})
from bench.run import peak_gb
from bench.memory import AnonPeak
anon = AnonPeak()
from bench.memory import fitted_circuit, load_shape
from circuit_core.ablation import Methodology
from circuit_core.criteria import faithfulness

model = load_shape(Path({folder!r}), {device!r}, {dtype!r})
loaded, anon_loaded = peak_gb(), anon.peak_gb
meth = Methodology(**{changes!r})
t = time.perf_counter()
ev = model.evaluators.get(meth)
built = peak_gb()
faithfulness(ev, fitted_circuit(model))
tables = {{t.values.untyped_storage().data_ptr(): t.values.untyped_storage().nbytes() for t in ev._tables}}
print(json.dumps({{"peak_gb": peak_gb(), "after_load_gb": loaded, "anon_peak_gb": anon.peak_gb,
                  "anon_after_load_gb": anon_loaded, "after_build_gb": built,
                  "seconds": time.perf_counter() - t, "tables_mb": sum(tables.values()) / 2**20,
                  "table_rows": len(ev._table), "seq": ev.seq, "engine": model.blocks is not None,
                  "weights_mb": weight_mb(model), "dtype": model.dtype,
                  "evaluator_mb": ev.memory_bytes() / 2**20, "residual_cache_mb": model.residual_cache.bytes / 2**20}}))
""".replace("weight_mb(model)", "__import__('bench.memory', fromlist=['x']).weight_bytes(model) / 2**20")


class AnonPeak:
    """The peak of the process's anonymous resident memory (RssAnon), sampled every 5 ms by a thread: what the
    process owns, without the checkpoint's file-backed pages that VmHWM also counts (the kernel can drop
    those under pressure and read them again)."""

    def __init__(self, every: float = 0.005):
        import threading

        self.peak_gb = 0.0
        self._every = every
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self):
        import time

        while True:
            for row in Path("/proc/self/status").read_text().splitlines():
                if row.startswith("RssAnon"):
                    self.peak_gb = max(self.peak_gb, int(row.split()[1]) / 2**20)
            time.sleep(self._every)


# Random models of real models' shapes, all with GPT-2's tokenizer (so GPT-2's 50,257-token vocabulary:
# Qwen2.5's is 151,936 and Gemma-2's 256,000, which would add 0.2 and 1.0 G parameters of embedding).
SHAPES = {
    "gpt2-small": ("gpt2", dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024)),
    "pythia-160m": ("gpt-neox", dict(n_layer=12, n_head=12, n_embd=768, n_positions=2048, intermediate_size=3072,
                                     use_parallel_residual=True, hidden_act="gelu",
                                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                      "partial_rotary_factor": 0.25})),
    "qwen2.5-0.5b": ("qwen2", dict(n_layer=24, n_head=14, n_embd=896, n_positions=32768, num_key_value_heads=2,
                                   intermediate_size=4864, tie_word_embeddings=True)),
    "gemma-2-2b": ("gemma2", dict(n_layer=26, n_head=8, n_embd=2304, n_positions=8192, num_key_value_heads=4,
                                  head_dim=256, intermediate_size=9216, tie_word_embeddings=True, sliding_window=4096,
                                  query_pre_attn_scalar=256, attn_logit_softcapping=50.0,
                                  final_logit_softcapping=30.0)),
}


def build_shape(folder: Path, shape: str, save_dtype=None) -> None:
    """A random model of `shape` (SHAPES) with GPT-2's tokenizer in `folder`, unless one is there."""
    from circuit_core.toy import save_random_decoder, save_random_gpt2

    if (folder / "config.json").exists():
        return
    arch, kw = SHAPES[shape]
    if arch == "gpt2":
        save_random_gpt2(folder, **kw, gpt2_bpe=True)
    else:
        save_random_decoder(folder, arch, gpt2_bpe=True, dtype=save_dtype, **kw)


def load_shape(folder: Path, device: str, dtype: str | None = None):
    from bench.run import TOKENS
    from circuit_core.models import load_model

    model = load_model(str(folder), device=device, dtype=dtype)
    got = model.tokenizer.encode(" John gave a drink to Mary", add_special_tokens=False)
    assert got == TOKENS, f"not GPT-2's tokenizer: {got}"
    return model


def fitted_circuit(model):
    """The paper's GPT-2-small circuit, its heads folded into this model's layers and heads ((l mod L, h
    mod H)): a circuit of the same size on any shape, for measuring what a session holds."""
    from bench.run import CIRCUIT
    from circuit_core.circuit import Circuit, CircuitClass, load_circuit

    c = load_circuit(CIRCUIT)
    L, H, seen, classes = model.n_layers, model.n_heads, set(), []
    for cls in c.classes:
        heads = [(l % L, h % H) for l, h in cls.heads]
        heads = [x for x in dict.fromkeys(heads) if x not in seen]
        seen.update(heads)
        if heads:
            classes.append(CircuitClass(cls.name, cls.position, heads))
    return Circuit(c.name, classes, task=c.task)


def weight_bytes(model) -> int:
    """Bytes of every distinct tensor storage the model's weights are in: every parameter and buffer of
    the bridge's modules (the Hugging Face model's and the bridge's own) and the engine's blocks (shared
    storage counted once)."""
    import torch

    seen = {}
    tensors = [t for m in model.bridge.modules() for t in (*m._parameters.values(), *m._buffers.values())
               if isinstance(t, torch.Tensor)]
    tensors += list(model.bridge.original_model.parameters())
    if model.blocks is not None:
        tensors += model.blocks.held_tensors()
    for t in tensors:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


TABLES_CHILD = """
import json, torch
from pathlib import Path
torch.set_num_threads({threads})
from bench.memory import load_shape
from circuit_core.ablation import Methodology, TableCache, storage_bytes
from circuit_core.tasks import build_dataset

model = load_shape(Path({folder!r}), {device!r}, {dtype!r})
for n in {ns!r}:
    for kind in ("mean", "mean-pooled", "resample", "zero"):
        meth = Methodology(n=n, ablation=kind)
        tables = TableCache().tables(model, build_dataset("ioi", model.tokenizer, **meth.dataset_kwargs()), meth)
        print(json.dumps({{"n": n, "ablation": kind, "draws": len(tables),
                          "mb": storage_bytes(t.values for t in tables) / 2**20}}), flush=True)
"""


def table_sizes(folder: Path, device: str, threads: int, ns: list[int], dtype: str | None = None) -> list[dict]:
    """Bytes of the ablation tables (all draws of the default methodology) per ablation kind and N."""
    code = TABLES_CHILD.format(threads=threads, folder=str(folder), device=device, ns=ns, dtype=dtype)
    env = {**os.environ, "CIRCUIT_CACHE_DIR": "off"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(res.stderr.strip().splitlines()[-1] if res.stderr else "failed")
    return [json.loads(line) for line in res.stdout.strip().splitlines() if line.startswith("{")]


def measure(folder: Path, device: str, threads: int, changes: dict, dtype: str | None = None) -> dict:
    code = CHILD.format(threads=threads, folder=str(folder), device=device, changes=changes, dtype=dtype)
    env = {**os.environ, "CIRCUIT_CACHE_DIR": "off"}  # the cold path: means computed, not read back
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    if res.returncode:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def configurations(ns: list[int], refs: list[str], default_too: bool = True) -> list[dict]:
    """Methodology changes per run: the default (unless not default_too), then each REF:REPS asked for
    that differs from it."""
    from circuit_core.ablation import Methodology

    default = Methodology()
    out = []
    for n in ns:
        seen = set()
        for spec in ["default"] * default_too + refs:
            ref, reps = ((default.ref_per_group, default.ref_replicates) if spec == "default"
                         else map(int, spec.split(":")))
            if (ref, reps) not in seen:
                seen.add((ref, reps))
                out.append({"n": n, "ref_per_group": ref, "ref_replicates": reps})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| N | reference prompts per group, replicates | peak RSS | after loading the model | peak anonymous | "
             "tables (replicates' included) | evaluator holds | residual cache |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["result"]
        if "error" in m:
            lines.append(f"| {r['n']} | {r['ref_per_group']}, {r['ref_replicates']} | failed: {m['error']} | | | | | |")
            continue
        lines.append(f"| {r['n']} | {r['ref_per_group']}, {r['ref_replicates']} | {m['peak_gb']:.2f} GB | "
                     f"{m['after_load_gb']:.2f} GB | {m.get('anon_peak_gb', float('nan')):.2f} GB | {m['tables_mb']:.0f} MB | {m['evaluator_mb']:.0f} MB | "
                     f"{m['residual_cache_mb']:.0f} MB |")
    return "\n".join(lines)


def main(argv=None):
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[100, 2000])
    p.add_argument("--ref", nargs="*", default=["50:8"], metavar="REF:REPS",
                   help="reference prompts per group and replicates to measure besides the default")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-dir", default=None, help="where to keep the random model (built there if absent)")
    p.add_argument("--shape", choices=tuple(SHAPES), default="gpt2-small",
                   help="whose shape the random model has (GPT-2's tokenizer and vocabulary in every case)")
    p.add_argument("--dtype", default=None, help="load the model in this type: float32 (default), bfloat16, float16")
    p.add_argument("--save-dtype", default=None, choices=["bfloat16"],
                   help="build and save the random model in this type (one too large for float32 here)")
    p.add_argument("--skip-default", action="store_true",
                   help="only the --ref configurations, not the default methodology's (a model too slow for it)")
    p.add_argument("--label", default="", help="a name for the results file: memory-<device>-<label>.json")
    p.add_argument("--tables", action="store_true", help="only the ablation tables' size per ablation kind")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    default_dir = "circuit-bench-gpt2-shape" if args.shape == "gpt2-small" else f"circuit-bench-{args.shape}-shape"
    folder = Path(args.model_dir or Path(tempfile.gettempdir()) / default_dir)
    build_shape(folder, args.shape, getattr(torch, args.save_dtype) if args.save_dtype else None)
    if args.tables:
        rows = table_sizes(folder, device, args.threads, args.n, args.dtype)
        kinds = list(dict.fromkeys(r["ablation"] for r in rows))
        print("| N | " + " | ".join(kinds) + " |\n|---|" + "---|" * len(kinds))
        for n in args.n:
            print(f"| {n} | " + " | ".join(f"{r['mb']:.1f} MB" for r in rows if r["n"] == n) + " |")
        return
    rows = []
    for changes in configurations(args.n, args.ref, not args.skip_default):
        rows.append({**changes, "result": measure(folder, device, args.threads, changes, args.dtype)})
        print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "bench" / "results" / f"memory-{device}{'-' + args.label if args.label else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"device": device, "threads": args.threads, "torch": torch.__version__,
                               "shape": args.shape, "dtype": args.dtype or "float32", "rows": rows}, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
