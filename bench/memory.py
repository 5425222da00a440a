"""What a session's process holds, measured: `python -m bench.memory` (on a 2-core CPU the N = 100 run
took 44 s and the N = 2000 one 460 s, most of it evaluating the eight reference replicates).

Each configuration runs in a fresh child process (peak resident memory is VmHWM, as in bench.run):
load a random model of GPT-2 small's shape (GPT-2's tokenizer), build the evaluator for the
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
from bench.run import CIRCUIT, build_model, peak_gb
from circuit_core.ablation import Methodology
from circuit_core.circuit import load_circuit
from circuit_core.criteria import faithfulness

model = build_model(Path({folder!r}), {device!r})
model.blocks
loaded = peak_gb()
meth = Methodology(**{changes!r})
t = time.perf_counter()
ev = model.evaluators.get(meth)
built = peak_gb()
faithfulness(ev, load_circuit(CIRCUIT))
tables = {{t.values.untyped_storage().data_ptr(): t.values.untyped_storage().nbytes() for t in ev._tables}}
print(json.dumps({{"peak_gb": peak_gb(), "after_load_gb": loaded, "after_build_gb": built,
                  "seconds": time.perf_counter() - t, "tables_mb": sum(tables.values()) / 2**20,
                  "table_rows": len(ev._table), "seq": ev.seq,
                  "evaluator_mb": ev.memory_bytes() / 2**20, "residual_cache_mb": model.residual_cache.bytes / 2**20}}))
"""


TABLES_CHILD = """
import json, torch
from pathlib import Path
torch.set_num_threads({threads})
from bench.run import build_model
from circuit_core.ablation import Methodology, TableCache, storage_bytes
from circuit_core.tasks import build_dataset

model = build_model(Path({folder!r}), {device!r})
for n in {ns!r}:
    for kind in ("mean", "mean-pooled", "resample", "zero"):
        meth = Methodology(n=n, ablation=kind)
        tables = TableCache().tables(model, build_dataset("ioi", model.tokenizer, **meth.dataset_kwargs()), meth)
        print(json.dumps({{"n": n, "ablation": kind, "draws": len(tables),
                          "mb": storage_bytes(t.values for t in tables) / 2**20}}), flush=True)
"""


def table_sizes(folder: Path, device: str, threads: int, ns: list[int]) -> list[dict]:
    """Bytes of the ablation tables (all draws of the default methodology) per ablation kind and N."""
    code = TABLES_CHILD.format(threads=threads, folder=str(folder), device=device, ns=ns)
    env = {**os.environ, "CIRCUIT_CACHE_DIR": "off"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(res.stderr.strip().splitlines()[-1] if res.stderr else "failed")
    return [json.loads(line) for line in res.stdout.strip().splitlines() if line.startswith("{")]


def measure(folder: Path, device: str, threads: int, changes: dict) -> dict:
    code = CHILD.format(threads=threads, folder=str(folder), device=device, changes=changes)
    env = {**os.environ, "CIRCUIT_CACHE_DIR": "off"}  # the cold path: means computed, not read back
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    if res.returncode:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def configurations(ns: list[int], refs: list[str]) -> list[dict]:
    """Methodology changes per run: the default, then each REF:REPS asked for that differs from it."""
    from circuit_core.ablation import Methodology

    default = Methodology()
    out = []
    for n in ns:
        seen = set()
        for spec in ["default"] + refs:
            ref, reps = ((default.ref_per_group, default.ref_replicates) if spec == "default"
                         else map(int, spec.split(":")))
            if (ref, reps) not in seen:
                seen.add((ref, reps))
                out.append({"n": n, "ref_per_group": ref, "ref_replicates": reps})
    return out


def table(rows: list[dict]) -> str:
    lines = ["| N | reference prompts per group, replicates | peak RSS | after loading the model | "
             "tables (replicates' included) | evaluator holds | residual cache |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["result"]
        if "error" in m:
            lines.append(f"| {r['n']} | {r['ref_per_group']}, {r['ref_replicates']} | failed: {m['error']} | | | | |")
            continue
        lines.append(f"| {r['n']} | {r['ref_per_group']}, {r['ref_replicates']} | {m['peak_gb']:.2f} GB | "
                     f"{m['after_load_gb']:.2f} GB | {m['tables_mb']:.0f} MB | {m['evaluator_mb']:.0f} MB | "
                     f"{m['residual_cache_mb']:.0f} MB |")
    return "\n".join(lines)


def main(argv=None):
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[100, 2000])
    p.add_argument("--ref", nargs="*", default=["50:8"], metavar="REF:REPS",
                   help="reference prompts per group and replicates to measure besides the default")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-dir", default=None, help="where to keep the random GPT-2-shaped model")
    p.add_argument("--label", default="", help="a name for the results file: memory-<device>-<label>.json")
    p.add_argument("--tables", action="store_true", help="only the ablation tables' size per ablation kind")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder = Path(args.model_dir or Path(tempfile.gettempdir()) / "circuit-bench-gpt2-shape")
    if args.tables:
        rows = table_sizes(folder, device, args.threads, args.n)
        kinds = list(dict.fromkeys(r["ablation"] for r in rows))
        print("| N | " + " | ".join(kinds) + " |\n|---|" + "---|" * len(kinds))
        for n in args.n:
            print(f"| {n} | " + " | ".join(f"{r['mb']:.1f} MB" for r in rows if r["n"] == n) + " |")
        return
    rows = []
    for changes in configurations(args.n, args.ref):
        rows.append({**changes, "result": measure(folder, device, args.threads, changes)})
        print(json.dumps(rows[-1]), flush=True)
    out = ROOT / "bench" / "results" / f"memory-{device}{'-' + args.label if args.label else ''}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"device": device, "threads": args.threads, "torch": torch.__version__, "rows": rows},
                              indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
