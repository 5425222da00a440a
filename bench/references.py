"""How the reference set moves faithfulness, and whether intervals cover: `python -m bench.references`.

On the bundled demo model and its circuit (`ioi-demo.json`), measured in one run (a few minutes):
1. the curve: F(C)/F(M) at N = 500 against reference prompts per group (and the paper's paired
   references), seeds 0-3;
2. coverage: over 20 seeds at N = 100, how often the 95% interval of F(C)/F(M) holds the estimate
   at N = 2000 with 100 reference prompts per group, for several reference settings;
3. criteria coverage (`--criteria-only` runs just this part, ~10 minutes on 2 cores, and replaces it in
   the JSON): how often the completeness and minimality intervals at N = 100 hold the N = 2000 values
   averaged over seeds 1000-1007, by head for minimality, over `--seeds` seeds (default 60).
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


TRUTH_SEEDS = range(1000, 1008)  # the large run, averaged: one seed's value carries its own sampling error
LARGE = dict(n=2000, ref_per_group=100, ref_replicates=0, bootstrap=10)


def _signed(table):
    """(d, d_lo, d_hi) of a completeness or minimality table (older tables: |d| and its interval)."""
    if "d" in table:
        return table.d.to_numpy(), table.d_lo.to_numpy(), table.d_hi.to_numpy()
    d = table["score"] if "score" in table else table["incompleteness"]
    return d.to_numpy(), table.ci_low.to_numpy(), table.ci_high.to_numpy()


def _percentile_bars(ev, circuit, m, level: float = 0.95):
    """The minimality bars' intervals as they were made before the studentised ones: percentiles of the
    joint bootstrap's draws of d (the same draws; the replicates come from the evaluator's memo)."""
    from circuit_core.completeness import c_minus, replicate_values
    from circuit_core.resampling import boot_means
    from circuit_core.minimality import minimality_k

    heads, ks, pos = circuit.heads, minimality_k(circuit, "file"), ev.methodology.positions
    sets = [c_minus(circuit, ks[v][0], pos) for v in heads] + [c_minus(circuit, ks[v][0] | {v}, pos) for v in heads]
    reps = [(r[len(heads):], r[:len(heads)]) for r in replicate_values(ev, sets)]
    ma, mb = boot_means([m.per_prompt["C_minus_K_and_v"], m.per_prompt["C_minus_K"]], ev.methodology.bootstrap,
                        ev.methodology.seed, reps)
    return np.percentile(ma - mb, [(1 - level) / 2 * 100, (1 + level) / 2 * 100], axis=1)


def large_run(model, circuit, seeds=TRUTH_SEEDS) -> dict:
    """The values the N = 100 intervals should cover: N = 2000, 100 reference prompts per group, per seed."""
    from circuit_core.completeness import completeness
    from circuit_core.minimality import minimality

    out = {"completeness": [], "minimality": [], "heads": None}
    for seed in seeds:
        ev = build_evaluator(model, Methodology(seed=seed, **LARGE))
        t, mt = completeness(ev, circuit, n_random=0, greedy_runs=0).table, minimality(ev, circuit).table
        out["completeness"].append([t.F_C_minus_K.to_numpy(), t.F_M_minus_K.to_numpy(), _signed(t)[0]])
        out["minimality"].append(_signed(mt)[0])
        out["heads"] = list(mt["head"])
        print(f"  large run, seed {seed}: minimality d {np.round(out['minimality'][-1], 3).tolist()}", flush=True)
    return {k: np.array(v) if k != "heads" else v for k, v in out.items()}


def criteria_coverage(model, circuit, n_seeds: int = 60, completeness_seeds: int = 20) -> dict:
    """How often the N = 100 intervals hold the large-run values (N = 2000, 100 reference prompts per
    group, averaged over TRUTH_SEEDS): completeness points (K = ∅ and each class: F(C\\K), F(M\\K), d) over
    seeds 0..completeness_seeds-1, minimality bars (signed d per head) over seeds 0..n_seeds-1; with the
    default 8 reference replicates and (first completeness_seeds seeds) with none. The minimality bars are
    scored with the studentised intervals the tables carry and with the percentile intervals they replaced."""
    from circuit_core.completeness import completeness
    from circuit_core.minimality import minimality

    big = large_run(model, circuit)
    true_comp, true_min, heads = big["completeness"].mean(0), big["minimality"].mean(0), big["heads"]
    sd_min = big["minimality"].std(0, ddof=1)
    out = {"truth": {"seeds": list(TRUTH_SEEDS), **{k: v for k, v in LARGE.items() if k != "bootstrap"},
                     "minimality_d": dict(zip(heads, true_min.tolist())),
                     "minimality_d_sd_between_seeds": dict(zip(heads, sd_min.tolist())),
                     "minimality_d_seed_1000": dict(zip(heads, big["minimality"][0].tolist()))}}
    inside = lambda lo, hi, truth: list((np.asarray(lo) <= truth) & (truth <= np.asarray(hi)))
    for reps in (8, 0):
        seeds = range(n_seeds if reps else completeness_seeds)
        hits = {"F_C_and_F_M_minus_K": [], "incompleteness": [], "minimality": [], "minimality_percentile": []}
        d_small = []
        for seed in seeds:
            ev = build_evaluator(model, Methodology(n=100, seed=seed, ref_replicates=reps, bootstrap=400))
            if seed < completeness_seeds:
                t = completeness(ev, circuit, n_random=0, greedy_runs=0).table
                hits["F_C_and_F_M_minus_K"] += inside(t.F_C_lo, t.F_C_hi, true_comp[0]) + inside(t.F_M_lo, t.F_M_hi, true_comp[1])
                hits["incompleteness"] += inside(*_signed(t)[1:], true_comp[2])
            m = minimality(ev, circuit)
            d, lo, hi = _signed(m.table)
            hits["minimality"].append(inside(lo, hi, true_min))
            hits["minimality_percentile"].append(inside(*_percentile_bars(ev, circuit, m), true_min))
            d_small.append(d)
            if seed % 10 == 9:
                print(f"    {reps} replicates: {seed + 1} seeds done", flush=True)
        covered, old, d_small = np.array(hits["minimality"]), np.array(hits["minimality_percentile"]), np.array(d_small)
        res = {"seeds": len(seeds), "completeness_seeds": completeness_seeds,
               "F_C_and_F_M_minus_K": float(np.mean(hits["F_C_and_F_M_minus_K"])),
               "incompleteness": float(np.mean(hits["incompleteness"])),
               "minimality": float(covered.mean()), "minimality_covered": int(covered.sum()), "minimality_of": int(covered.size),
               "minimality_percentile": float(old.mean()), "minimality_percentile_covered": int(old.sum()),
               "minimality_first_20_seeds": float(covered[:20].mean()),
               "minimality_percentile_first_20_seeds": float(old[:20].mean())}
        res["minimality_by_head"] = {
            h: {"coverage": float(covered[:, i].mean()), "coverage_percentile": float(old[:, i].mean()),
                "mean_d_N100": float(d_small[:, i].mean()), "sd_d_N100": float(d_small[:, i].std(ddof=1)),
                "truth_d": float(true_min[i]), "truth_d_sd_between_seeds": float(sd_min[i]),
                "truth_d_seed_1000": float(big["minimality"][0, i])}
            for i, h in enumerate(heads)}
        out[f"replicates_{reps}"] = res
        print(f"  criteria coverage, {reps} replicates, {len(seeds)} seeds: "
              f"{ {k: v for k, v in res.items() if k != 'minimality_by_head'} }", flush=True)
        for h, r in res["minimality_by_head"].items():
            print(f"    minimality {h}: covered {r['coverage']:.1%} (percentile intervals {r['coverage_percentile']:.1%}); "
                  f"N = 100 mean d {r['mean_d_N100']:.3f} (sd {r['sd_d_N100']:.3f}); large run {r['truth_d']:.3f} "
                  f"(sd between seeds {r['truth_d_sd_between_seeds']:.3f}; seed 1000 alone {r['truth_d_seed_1000']:.3f})", flush=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="another model's folder: measure the curve alone on it")
    p.add_argument("--circuit", help="the circuit file for --model")
    p.add_argument("--criteria-only", action="store_true",
                   help="measure only the completeness / minimality coverage and replace it in references.json")
    p.add_argument("--seeds", type=int, default=60, help="N = 100 seeds for the minimality coverage (default 60)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    if args.model:
        return other_model(args.model, args.circuit)
    model, circuit = load_model("demo", device="cpu"), load_circuit(ROOT / "data" / "circuits" / "ioi-demo.json")
    path = ROOT / "bench" / "results" / "references.json"
    if args.criteria_only:
        out = json.loads(path.read_text()) if path.exists() else {}
        out["criteria_coverage"] = criteria_coverage(model, circuit, args.seeds)
        path.write_text(json.dumps(out, indent=2))
        return print(f"wrote {path.relative_to(ROOT)} (criteria_coverage)")
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
    out["criteria_coverage"] = criteria_coverage(model, circuit, args.seeds)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
