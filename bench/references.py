"""How the reference set moves faithfulness, and whether intervals cover: `python -m bench.references`.

On the bundled demo model and its circuit (`ioi-demo.json`), measured in one run (a few minutes):
1. the curve: F(C)/F(M) at N = 500 against reference prompts per group (and the paper's paired
   references), seeds 0-3;
2. coverage: over 20 seeds at N = 100, how often the 95% interval of F(C)/F(M) holds the estimate
   at N = 2000 with 100 reference prompts per group, for several reference settings.
The README's reference-size table and calibration figures come from this script
(bench/results/references.json).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from circuit_core.ablation import Methodology
from circuit_core.circuit import load_circuit
from circuit_core.criteria import faithfulness
from circuit_core.evaluate import build_evaluator
from circuit_core.models import load_model

ROOT = Path(__file__).resolve().parent.parent
SIZES = [1, 2, 5, 10, 20, 50, 100, 0]  # 0: paired ABC twins (the paper)
COVERAGE = [dict(ref_per_group=0), dict(ref_per_group=10, ref_replicates=8), dict(ref_per_group=20, ref_replicates=8),
            dict(ref_per_group=50), dict(ref_per_group=50, ref_replicates=8)]


def main():
    torch.set_num_threads(2)
    model, circuit = load_model("demo", device="cpu"), load_circuit(ROOT / "data" / "circuits" / "ioi-demo.json")
    ratio = lambda meth: faithfulness(build_evaluator(model, meth), circuit)
    out = {"curve": {}, "coverage": []}
    print("reference prompts per group -> F(C)/F(M) at N = 500, seeds 0-3")
    for R in SIZES:
        vals = [ratio(Methodology(n=500, seed=s, ref_per_group=R, bootstrap=10)).ratio for s in range(4)]
        out["curve"]["paired" if R == 0 else str(R)] = vals
        print(f"  {'paired' if R == 0 else R:>6}: mean {np.mean(vals):.3f}  range {max(vals) - min(vals):.3f}", flush=True)
    truth = ratio(Methodology(n=2000, seed=1000, ref_per_group=100, bootstrap=10)).ratio
    out["truth_N2000_R100"] = truth
    print(f"coverage of the N = 2000 estimate ({truth:.4f}) by N = 100 intervals, 20 seeds")
    for setting in COVERAGE:
        hits = []
        for seed in range(20):
            lo, hi = ratio(Methodology(n=100, seed=seed, bootstrap=400, **setting)).intervals["ratio"]
            hits.append(bool(lo <= truth <= hi))
        out["coverage"].append({**setting, "covered": sum(hits), "of": 20})
        print(f"  {setting}: {sum(hits)}/20", flush=True)
    path = ROOT / "bench" / "results" / "references.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
