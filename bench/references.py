"""How the reference set moves faithfulness, and whether intervals cover: `python -m bench.references`.

On the bundled demo model and its circuit (`ioi-demo.json`), measured in one run (a few minutes):
1. the curve: F(C)/F(M) at N = 500 against reference prompts per group (and the paper's paired
   references), seeds 0-3;
2. coverage: over 20 seeds at N = 100, how often the 95% interval of F(C)/F(M) holds the estimate
   at N = 2000 with 100 reference prompts per group, for several reference settings.
The README's reference-size table and calibration figures come from this script
(bench/results/references.json).

`python -m bench.references --model DIR --circuit FILE` measures the curve alone on another model
(e.g. a GPT-2-small-shaped one built by `circuit_core.toy.save_random_gpt2(DIR, gpt2_bpe=True, ...)`):
F(C), F(∅) and F(M) in logit-difference units, N = 100, seeds 0-1 (bench/results/references-<name>.json).
"""
from __future__ import annotations

import argparse
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
COVERAGE = [dict(ref_per_group=0, ref_replicates=0), dict(ref_per_group=10, ref_replicates=8),
            dict(ref_per_group=20, ref_replicates=8), dict(ref_per_group=50, ref_replicates=0),
            dict(ref_per_group=50, ref_replicates=8)]


def other_model(folder: str, circuit_file: str):
    """The curve on another model: raw F values, since an untrained model's F(M) can sit near zero."""
    model, circuit = load_model(folder, device="cpu"), load_circuit(circuit_file)
    out = {"model": Path(folder).name, "circuit": Path(circuit_file).name, "n": 100, "curve": {}}
    print("reference prompts per group -> F(C), F(∅), F(M) at N = 100, seeds 0-1")
    for R in SIZES:
        rows = []
        for s in range(2):
            f = faithfulness(build_evaluator(model, Methodology(n=100, seed=s, ref_per_group=R, ref_replicates=0,
                                                                bootstrap=10)), circuit)
            rows.append({"F_circuit": f.F_circuit, "F_empty": f.F_empty, "F_model": f.F_model})
        out["curve"]["paired" if R == 0 else str(R)] = rows
        print(f"  {'paired' if R == 0 else R:>6}: F(C) {np.mean([r['F_circuit'] for r in rows]):.3f}  "
              f"F(∅) {np.mean([r['F_empty'] for r in rows]):.3f}  F(M) {rows[0]['F_model']:.3f}", flush=True)
    path = ROOT / "bench" / "results" / f"references-{Path(folder).name}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


def criteria_coverage(model, circuit) -> dict:
    """Share of completeness points (K = ∅ and each class) and minimality bars whose N = 100 interval
    holds the N = 2000 value, over 20 seeds, with and without reference replicates."""
    from circuit_core.completeness import completeness
    from circuit_core.minimality import minimality

    big_ev = build_evaluator(model, Methodology(n=2000, seed=1000, ref_per_group=100, ref_replicates=0, bootstrap=10))
    big, big_min = completeness(big_ev, circuit, n_random=0, greedy_runs=0).table, minimality(big_ev, circuit).table
    # the same at 400 reference prompts per group: where the minimality scores head as the reference set grows
    huge_min = minimality(build_evaluator(model, Methodology(n=2000, seed=1000, ref_per_group=400, ref_replicates=0,
                                                             bootstrap=10)), circuit).table
    inside = lambda lo, hi, truth: list((lo.to_numpy() <= truth.to_numpy()) & (truth.to_numpy() <= hi.to_numpy()))
    out = {}
    for reps in (8, 0):
        hits = {"F_C_and_F_M_minus_K": [], "incompleteness": [], "minimality": []}
        scores = []  # [seed][head]: the N = 100 minimality scores
        for seed in range(20):
            ev = build_evaluator(model, Methodology(n=100, seed=seed, ref_replicates=reps, bootstrap=400))
            t, mt = completeness(ev, circuit, n_random=0, greedy_runs=0).table, minimality(ev, circuit).table
            hits["F_C_and_F_M_minus_K"] += inside(t.F_C_lo, t.F_C_hi, big.F_C_minus_K) + inside(t.F_M_lo, t.F_M_hi, big.F_M_minus_K)
            hits["incompleteness"] += inside(t.ci_low, t.ci_high, big.incompleteness)
            hits["minimality"] += inside(mt.ci_low, mt.ci_high, big_min.score)
            scores.append(list(mt.score))
        out[f"replicates_{reps}"] = {k: float(np.mean(v)) for k, v in hits.items()}
        per_head = np.array(hits["minimality"]).reshape(20, -1).mean(0)
        out[f"replicates_{reps}"]["minimality_by_head"] = {
            h: {"coverage": float(per_head[i]), "mean_N100_R50": float(np.mean([s[i] for s in scores])),
                "sd_N100_R50": float(np.std([s[i] for s in scores], ddof=1)),
                "truth_N2000_R100": float(big_min.score.iloc[i]), "N2000_R400": float(huge_min.score.iloc[i])}
            for i, h in enumerate(big_min["head"])}
        print(f"  criteria coverage, {reps} replicates: "
              f"{ {k: v for k, v in out[f'replicates_{reps}'].items() if k != 'minimality_by_head'} }", flush=True)
        for h, r in out[f"replicates_{reps}"]["minimality_by_head"].items():
            print(f"    minimality {h}: covered {r['coverage']:.0%}; N = 100 mean {r['mean_N100_R50']:.3f} "
                  f"(sd {r['sd_N100_R50']:.3f}); N = 2000 with 100 / 400 references per group "
                  f"{r['truth_N2000_R100']:.3f} / {r['N2000_R400']:.3f}", flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="another model's folder: measure the curve alone on it")
    p.add_argument("--circuit", help="the circuit file for --model")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    if args.model:
        return other_model(args.model, args.circuit)
    model, circuit = load_model("demo", device="cpu"), load_circuit(ROOT / "data" / "circuits" / "ioi-demo.json")
    ratio = lambda meth: faithfulness(build_evaluator(model, meth), circuit)
    out = {"curve": {}, "coverage": []}
    print("reference prompts per group -> F(C)/F(M) at N = 500, seeds 0-3")
    for R in SIZES:
        vals = [ratio(Methodology(n=500, seed=s, ref_per_group=R, ref_replicates=0, bootstrap=10)).ratio for s in range(4)]
        out["curve"]["paired" if R == 0 else str(R)] = vals
        print(f"  {'paired' if R == 0 else R:>6}: mean {np.mean(vals):.3f}  range {max(vals) - min(vals):.3f}", flush=True)
    truth = ratio(Methodology(n=2000, seed=1000, ref_per_group=100, ref_replicates=0, bootstrap=10)).ratio
    out["truth_N2000_R100"] = truth
    print(f"coverage of the N = 2000 estimate ({truth:.4f}) by N = 100 intervals, 20 seeds")
    for setting in COVERAGE:
        hits = []
        for seed in range(20):
            lo, hi = ratio(Methodology(n=100, seed=seed, bootstrap=400, **setting)).intervals["ratio"]
            hits.append(bool(lo <= truth <= hi))
        out["coverage"].append({**setting, "covered": sum(hits), "of": 20})
        print(f"  {setting}: {sum(hits)}/20", flush=True)
    out["criteria_coverage"] = criteria_coverage(model, circuit)
    path = ROOT / "bench" / "results" / "references.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
