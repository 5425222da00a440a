"""Sets chosen by a search, on the prompts that chose them and on fresh ones: `python -m bench.selection`.

For a model and circuit (default: the bundled demo and `ioi-demo.json`), in one run:
1. completeness: the paper's greedy search for the worst K (runs × steps × k) on selection prompts
   (N = 40, seed + 10,000); each run's best K on the report prompts (N = 100, seed 0, the default
   methodology: joint intervals) and on a much larger fresh set (the "truth": N = 1000, seed 5000);
2. minimality: each head's K searched the same way, scored on selection, report and fresh prompts;
3. the formal tests' p-values (circuit_core.formal_tests), when that module is present;
4. a plain forward pass over the report prompts, so every time is also given in forward passes.
Prints the table the README and the closing notes quote; writes bench/results/selection-<name>.json.

    python -m bench.selection                                  # the demo (a few minutes on 2 cores)
    python -m bench.selection --model DIR --circuit data/circuits/ioi-gpt2-small.json --truth-n 500 \\
        --min-k 5 --min-steps 5                                 # a GPT-2-small-shaped folder
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from circuit_core.ablation import Methodology, NodeSet
from circuit_core.circuit import load_circuit
from circuit_core.completeness import completeness, incompleteness_sets
from circuit_core.evaluate import build_evaluator
from circuit_core.minimality import minimality, minimality_sets
from circuit_core.models import load_model
from circuit_core.selection import Selection, selection_evaluator

ROOT = Path(__file__).resolve().parent.parent


def forward_seconds(ev) -> float:
    """One plain forward pass of the intact model over the report prompts (logits included)."""
    with torch.no_grad():
        t = time.perf_counter()
        for start in range(0, ev.dataset.n, 50):
            ev.model.bridge(ev.dataset.tokens[start:start + 50].to(ev.model.device))
        return time.perf_counter() - t


def fresh_scores(truth_ev, circuit, pairs) -> list[float]:
    """|mean(a) − mean(b)| on the fresh prompts for each (set a, set b)."""
    f = truth_ev.F([s for pair in pairs for s in pair])
    return [abs(f[2 * i] - f[2 * i + 1]) for i in range(len(pairs))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo")
    p.add_argument("--circuit", default=str(ROOT / "data" / "circuits" / "ioi-demo.json"))
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--truth-n", type=int, default=1000)
    p.add_argument("--greedy", type=int, nargs=3, default=[10, 10, 10], metavar=("RUNS", "STEPS", "K"))
    p.add_argument("--min-k", type=int, default=10)
    p.add_argument("--min-steps", type=int, default=10)
    p.add_argument("--no-tests", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    model, circuit = load_model(args.model, device="cpu"), load_circuit(args.circuit)
    name = "demo" if args.model == "demo" else Path(args.model).name
    meth = Methodology(n=args.n, seed=0)
    out = {"model": name, "circuit": Path(args.circuit).name, "methodology": meth.to_dict(), "timings_s": {}}
    t = time.perf_counter()
    ev = build_evaluator(model, meth)
    sel_ev = selection_evaluator(model, meth, Selection())
    truth_ev = build_evaluator(model, Methodology(n=args.truth_n, seed=5000, ref_replicates=0, bootstrap=10))
    out["timings_s"]["evaluators (means)"] = time.perf_counter() - t
    fwd = out["timings_s"]["forward pass, report prompts"] = forward_seconds(ev)
    print(f"{name}: a plain forward pass over the {args.n} report prompts takes {fwd:.2f} s", flush=True)

    runs, steps, k = args.greedy
    t = time.perf_counter()
    c = completeness(ev, circuit, classes=False, n_random=0, greedy_runs=runs, greedy_steps=steps, greedy_k=k,
                     selection_ev=sel_ev)
    out["timings_s"]["greedy completeness"] = time.perf_counter() - t
    g = c.table[c.table.family == "greedy"].reset_index(drop=True)
    K_sets = [frozenset(tuple(map(int, h.split("."))) for h in K) for K in g.K]
    truth = fresh_scores(truth_ev, circuit, [incompleteness_sets(circuit, K, meth.positions) for K in K_sets])
    g["fresh"] = truth
    covered = [(lo <= t_ <= hi) for lo, hi, t_ in zip(g.ci_low, g.ci_high, truth)]
    out["completeness_greedy"] = {
        "budget": c.settings["selection"]["budget"], "selection": c.settings["selection"],
        "rows": [{"K": list(r.K), "selection": r.selection_incompleteness, "report": r.incompleteness,
                  "report_interval": [r.ci_low, r.ci_high], "d_interval": [r.d_lo, r.d_hi], "verdict": r.verdict,
                  "fresh": r.fresh} for r in g.itertuples()],
        "mean_selection": float(g.selection_incompleteness.mean()), "mean_report": float(g.incompleteness.mean()),
        "mean_fresh": float(np.mean(truth)), "report_covers_fresh": int(sum(covered)), "of": len(g)}
    r = out["completeness_greedy"]
    print(f"greedy completeness ({runs} runs × {steps} steps × {k} = {r['budget']} sets on {sel_ev.methodology.n} "
          f"selection prompts; {out['timings_s']['greedy completeness']:.0f} s = "
          f"{out['timings_s']['greedy completeness'] / fwd:.0f} forward passes)", flush=True)
    print(f"  mean over runs' best K: selection {r['mean_selection']:.3f}, report {r['mean_report']:.3f}, "
          f"fresh N = {args.truth_n} {r['mean_fresh']:.3f}; report interval covers fresh in {r['report_covers_fresh']}"
          f"/{r['of']}", flush=True)
    for row in r["rows"]:
        print(f"    K = {{{', '.join(row['K'])}}}: selection {row['selection']:.3f} | report {row['report']:.3f} "
              f"[{row['report_interval'][0]:.3f}, {row['report_interval'][1]:.3f}] {row['verdict']} | fresh "
              f"{row['fresh']:.3f}", flush=True)

    t = time.perf_counter()
    m = minimality(ev, circuit, k_source="search", search_k=args.min_k, search_steps=args.min_steps, search_runs=1,
                   selection_ev=sel_ev)
    out["timings_s"]["minimality search"] = time.perf_counter() - t
    mt = m.table
    pairs = [minimality_sets(circuit, v, frozenset(tuple(map(int, h.split("."))) for h in K), meth.positions)
             for v, K in zip(circuit.heads, mt.K)]
    mt["fresh"] = fresh_scores(truth_ev, circuit, pairs)
    covered = [(lo <= t_ <= hi) for lo, hi, t_ in zip(mt.ci_low, mt.ci_high, mt.fresh)]
    out["minimality_search"] = {
        "budget_per_head": m.settings["selection"]["budget_per_head"],
        "rows": [{"head": r.head, "K": list(r.K), "selection": r.selection_score, "report": r.score,
                  "report_interval": [r.ci_low, r.ci_high], "verdict": r.verdict, "fresh": r.fresh}
                 for r in mt.itertuples()],
        "mean_selection": float(mt.selection_score.mean()), "mean_report": float(mt.score.mean()),
        "mean_fresh": float(mt.fresh.mean()), "report_covers_fresh": int(sum(covered)), "of": len(mt)}
    r = out["minimality_search"]
    print(f"minimality search ({args.min_steps} steps × {args.min_k} candidates per head; "
          f"{out['timings_s']['minimality search']:.0f} s = {out['timings_s']['minimality search'] / fwd:.0f} "
          "forward passes)", flush=True)
    print(f"  mean over heads: selection {r['mean_selection']:.3f}, report {r['mean_report']:.3f}, fresh "
          f"{r['mean_fresh']:.3f}; report interval covers fresh in {r['report_covers_fresh']}/{r['of']}", flush=True)
    for row in r["rows"]:
        print(f"    {row['head']}: selection {row['selection']:.3f} | report {row['report']:.3f} "
              f"[{row['report_interval'][0]:.3f}, {row['report_interval'][1]:.3f}] {row['verdict']} | fresh "
              f"{row['fresh']:.3f}", flush=True)

    if not args.no_tests:
        try:
            from circuit_core.formal_tests import formal_tests
        except ImportError:
            formal_tests = None
        if formal_tests is not None:
            t = time.perf_counter()
            tests = formal_tests(ev, circuit)
            out["timings_s"]["formal tests"] = time.perf_counter() - t
            out["tests"] = [x.to_dict() for x in tests]
            print(f"formal tests ({out['timings_s']['formal tests']:.0f} s = "
                  f"{out['timings_s']['formal tests'] / fwd:.0f} forward passes)", flush=True)
            for x in out["tests"]:
                print(f"    {x['name']}: statistic {x['statistic']:.4g}, p = {x['p_value']:.4g}, {x['verdict']}",
                      flush=True)
    path = ROOT / "bench" / "results" / f"selection-{name}.json"
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
