"""Whether the faithfulness curve's intervals cover on a trained model: `python -m bench.curves`.

On the bundled demo and `ioi-demo.json`, one attribution ranking made on its own prompts (N = 40, seed 999)
is followed at N = 100 for seeds 0-19 (defaults: 50 reference prompts per group, 8 reference replicates;
400 resamples), and each run's 95% intervals of CPR, CMD and the points with k > 0 are checked against the
large-run values (N = 2000, 100 reference prompts per group, the mean of seeds 1000 and 1001). Writes
bench/results/curves.json. tests/core/test_curves.py checks the same machinery on simulated runs, fast.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from circuit_core import curves
from circuit_core.ablation import Methodology
from circuit_core.circuit import load_circuit
from circuit_core.evaluate import build_evaluator
from circuit_core.models import load_model


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--out", default="bench/results/curves.json")
    args = p.parse_args(argv)
    start = time.perf_counter()
    model, circuit = load_model("demo", device="cpu"), load_circuit("data/circuits/ioi-demo.json")
    ranking = curves.rank_heads(build_evaluator(model, Methodology(n=40, seed=999, ref_replicates=0)),
                                "attribution", circuit)
    big = [curves.head_curve(build_evaluator(model, Methodology(n=2000, seed=s, ref_per_group=100, ref_replicates=0,
                                                                bootstrap=10)), ranking, circuit, random_orders=0)
           for s in (1000, 1001)]
    truth = {"cpr": float(np.mean([c.cpr.value for c in big])), "cmd": float(np.mean([c.cmd.value for c in big])),
             "points": np.mean([[p.f for p in c.points] for c in big], 0).tolist()}
    scored = [i for i, p in enumerate(big[0].points) if p.k > 0]
    hits, runs = {"cpr": 0, "cmd": 0, "points": 0}, []
    for seed in range(args.seeds):
        c = curves.head_curve(build_evaluator(model, Methodology(n=100, seed=seed, bootstrap=400)), ranking, circuit,
                              random_orders=0)
        hits["cpr"] += c.cpr.interval.contains(truth["cpr"])
        hits["cmd"] += c.cmd.interval.contains(truth["cmd"])
        hits["points"] += sum(c.points[i].interval.contains(truth["points"][i]) for i in scored)
        runs.append({"seed": seed, "cpr": c.cpr.to_dict(), "cmd": c.cmd.to_dict()})
    out = {"ranking": list(ranking.names()), "truth": truth, "seeds": args.seeds, "covered": hits,
           "points_checked": args.seeds * len(scored), "runs": runs, "seconds": round(time.perf_counter() - start, 1)}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"CPR covered in {hits['cpr']}/{args.seeds}, CMD {hits['cmd']}/{args.seeds}, points "
          f"{hits['points']}/{args.seeds * len(scored)}; truth CPR {truth['cpr']:.3f}, CMD {truth['cmd']:.3f}")
    return out


if __name__ == "__main__":
    main()
