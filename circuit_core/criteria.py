"""Wang et al.'s criteria built on the evaluator. This module: faithfulness."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .ablation import NodeSet
from .circuit import Circuit


def circuit_node_set(circuit: Circuit, positions: str = "circuit", label: str = "C") -> NodeSet:
    """C: the circuit's heads, each kept at its class's position (or everywhere, positions='all')."""
    return NodeSet(circuit.nodes(positions), label=label)


def faithfulness_stats(model: np.ndarray, circuit: np.ndarray, empty: np.ndarray) -> dict[str, float]:
    """F(M), F(C), F(∅) and the derived numbers, from per-prompt logit differences (ratio of means)."""
    fm, fc, fe = float(np.mean(model)), float(np.mean(circuit)), float(np.mean(empty))
    return {
        "F_model": fm,
        "F_circuit": fc,
        "F_empty": fe,
        "gap": fm - fc,
        "ratio": fc / fm if fm != 0 else float("nan"),
        "normalized": (fc - fe) / (fm - fe) if fm != fe else float("nan"),
        "mean_of_ratios": mean_of_ratios(model, circuit),
    }


def mean_of_ratios(model: np.ndarray, circuit: np.ndarray) -> float:
    """Mean over prompts of f_C / f_M (prompts with f_M = 0 left out): each prompt weighs the same,
    where the ratio of means weighs prompts by their f_M. Miller et al. (2024) find it higher."""
    ok = model != 0
    return float(np.mean(circuit[ok] / model[ok])) if ok.any() else float("nan")


def spread(per_prompt: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Quartiles of each run's per-prompt logit differences."""
    return {k: dict(zip(("q25", "median", "q75"), map(float, np.percentile(v, [25, 50, 75]))))
            for k, v in per_prompt.items()}


def worst_prompts(dataset, per_prompt: dict[str, np.ndarray], k: int = 10):
    """The k prompts where the circuit falls furthest below the model (f_M − f_C largest)."""
    import pandas as pd

    gap = per_prompt["model"] - per_prompt["circuit"]
    order = np.argsort(-gap)[:k]
    return pd.DataFrame({"prompt": [dataset.prompts[i] for i in order],
                         "group": [dataset.group_names[int(dataset.groups[i])] for i in order],
                         "f_M": per_prompt["model"][order], "f_C": per_prompt["circuit"][order],
                         "f_M − f_C": gap[order]})


def bootstrap_intervals(per_prompt: dict[str, np.ndarray], statistic, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95, replicates: list[dict[str, np.ndarray]] = ()) -> dict[str, tuple[float, float]]:
    """Percentile intervals for every key `statistic` returns. Each draw resamples the prompts (paired);
    with reference `replicates`, draw j also takes its per-prompt values from replicate j mod B
    (arrays a replicate lacks, such as the intact model's, which ablates nothing, come from `per_prompt`).

    Resampling references with replacement leaves fewer distinct ones, and fewer references lower F
    (the README's curve): the replicates are shifted together so their average matches the full
    reference set's. They keep their spread, which is the reference noise."""
    if replicates:
        offset = {k: np.mean([np.mean(r[k]) for r in replicates]) - np.mean(per_prompt[k]) for k in replicates[0]}
        replicates = [{k: v - offset[k] for k, v in r.items()} for r in replicates]
    n = len(next(iter(per_prompt.values())))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for j in range(n_boot):
        source = {**per_prompt, **replicates[j % len(replicates)]} if replicates else per_prompt
        idx = rng.integers(0, n, n)
        for k, v in statistic(**{name: arr[idx] for name, arr in source.items()}).items():
            draws.setdefault(k, []).append(v)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: (float(np.nanpercentile(v, lo)), float(np.nanpercentile(v, hi))) for k, v in draws.items()}


def interval_method(methodology, reference_noise: bool = True) -> str:
    """How the 95% intervals of this methodology are made, in words (shown beside them).
    reference_noise=False: the replicates exist but these intervals do not use them (yet)."""
    if methodology.ref_replicates and methodology.ablation != "zero":
        if not reference_noise:
            return "paired bootstrap over prompts (reference-set noise not yet included)"
        what = "redraws of the resampled prompts" if methodology.ablation == "resample" else "replicates of the reference set"
        return f"joint bootstrap: prompts resampled (paired) × {methodology.ref_replicates} {what}"
    return "paired bootstrap over prompts (reference-set noise not included)"


@dataclass
class Faithfulness:
    """F(M), F(C), F(∅), the gap, the ratio F(C)/F(M) and the normalised score, with 95% intervals."""

    stats: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    per_prompt: dict[str, np.ndarray]  # model / circuit / empty -> [N]
    by_order: dict[str, dict[str, float]] = field(default_factory=dict)
    interval_method: str = ""
    spread: dict[str, dict[str, float]] = field(default_factory=dict)  # quartiles per run
    replicates: list[dict[str, np.ndarray]] = field(default_factory=list)  # circuit / empty per reference replicate

    def __getattr__(self, name):
        if name != "stats" and name in self.__dict__.get("stats", {}):
            return self.stats[name]
        raise AttributeError(name)

    def to_dict(self) -> dict:
        return {
            **self.stats,
            "intervals_95": {k: list(v) for k, v in self.intervals.items()},
            "interval_method": self.interval_method,
            "by_order": self.by_order,
            "spread": self.spread,
            "per_prompt": {k: v.tolist() for k, v in self.per_prompt.items()},
            "replicates": [{k: v.tolist() for k, v in r.items()} for r in self.replicates],
        }


def faithfulness(evaluator, circuit: Circuit, progress=None, reference_noise: bool = True,
                 should_stop=None) -> Faithfulness:
    """Evaluate M, C and ∅ in one batched call and summarise. With the methodology's reference
    replicates (reference_noise=True) C and ∅ are evaluated again under each, for joint intervals;
    reference_noise=False gives the same figures at once, with prompts-only intervals."""
    meth = evaluator.methodology
    sets = [NodeSet.model(), circuit_node_set(circuit, meth.positions), NodeSet.empty()]
    diffs = evaluator.logit_diffs(sets, progress, should_stop).numpy()
    per_prompt = {"model": diffs[0], "circuit": diffs[1], "empty": diffs[2]}
    stats = faithfulness_stats(**per_prompt)
    stats["accuracy_model"] = float(np.mean(diffs[0] > 0))
    stats["accuracy_circuit"] = float(np.mean(diffs[1] > 0))
    reps = []
    for r in evaluator.replicates if reference_noise else []:
        d = r.logit_diffs(sets[1:], should_stop=should_stop)
        reps.append({"circuit": d[0].numpy(), "empty": d[1].numpy()})
        if progress is not None:
            progress(len(reps), len(evaluator.replicates))
    intervals = bootstrap_intervals(per_prompt, faithfulness_stats, meth.bootstrap, meth.seed, replicates=reps)
    by_order = {}
    orders = np.array([evaluator.dataset.group_names[g].split("-")[0] for g in evaluator.dataset.groups.tolist()])
    for order in ("ABBA", "BABA"):
        sel = orders == order
        if sel.any():
            part = {k: v[sel] for k, v in per_prompt.items()}
            ci = bootstrap_intervals(part, faithfulness_stats, meth.bootstrap, meth.seed,
                                     replicates=[{k: v[sel] for k, v in r.items()} for r in reps])
            by_order[order] = {**faithfulness_stats(**part), "n": int(sel.sum()),
                               "intervals_95": {k: list(v) for k, v in ci.items()}}
    return Faithfulness(stats, intervals, per_prompt, by_order, interval_method(meth, bool(reps) or not evaluator.replicates),
                        spread(per_prompt), reps)


def breakdown_by_group(dataset, per_prompt: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0,
                       replicates: list[dict[str, np.ndarray]] = ()):
    """A tidy table: one row per (group, which) with the mean logit difference, its 95% interval
    (bootstrap over the group's prompts; with reference `replicates`, jointly with the reference set,
    as `bootstrap_intervals` does) and its count."""
    import pandas as pd

    rows = []
    groups = dataset.groups.numpy()
    rng = np.random.default_rng(seed)
    for g in np.unique(groups):
        sel = groups == g
        n = int(sel.sum())
        draws = rng.integers(0, n, (n_boot, n))
        for which, values in per_prompt.items():
            if replicates and which in replicates[0]:
                # recentred per group as in bootstrap_intervals: the replicates keep only their spread
                reps = np.stack([r[which][sel] for r in replicates])
                reps = reps - (reps.mean() - values[sel].mean())
                boot = np.take_along_axis(reps[np.arange(n_boot) % len(reps)], draws, 1).mean(1)
            else:
                boot = values[sel][draws].mean(1)
            rows.append({"group": dataset.group_names[g], "order": dataset.group_names[g].split("-")[0],
                         "which": which, "F": float(values[sel].mean()), "lo": float(np.percentile(boot, 2.5)),
                         "hi": float(np.percentile(boot, 97.5)), "n": n})
    return pd.DataFrame(rows)


__all__ = ["Faithfulness", "faithfulness", "circuit_node_set", "faithfulness_stats", "bootstrap_intervals",
           "breakdown_by_group", "mean_of_ratios", "spread", "worst_prompts"]
