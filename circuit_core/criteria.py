"""Wang et al.'s criteria built on the evaluator. This module: faithfulness."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from .ablation import NodeSet
from .circuit import HEAD_INPUTS, LOGITS, OUT, Circuit
from .resampling import bootstrap_draws, group_bootstrap_means, percentile_interval
from .tasks import get_task
from .intervals import Interval

# τ for the median of ratios, as a share of the median |f_M|: a prompt whose f_M is under a tenth of a
# typical one carries a ratio that noise alone can push to 10× the typical ratio, and a prompt the
# model gets wrong (f_M ≤ 0) flips the ratio's sign. The median |f_M| keeps τ in the task's unit and
# is itself unmoved by the few near-zero prompts that τ guards against.
TAU_SHARE = 0.1

# Each ratio's denominator: (its key in the stats, its name in the reason a ratio is undefined).
DENOMINATORS = {"ratio": ("F_model", "F(M)"), "normalized": ("F_model_minus_empty", "F(M) − F(∅)")}


def circuit_node_set(circuit: Circuit, positions: str = "circuit", label: str = "C") -> NodeSet:
    """C: the circuit's heads, each kept at its class's position (or everywhere, positions='all'), with
    the edges among them that its edge list leaves out removed (none without an edge list)."""
    return NodeSet(circuit.nodes(positions), label=label, removed_edges=removed_edges(circuit))


def removed_edges(circuit: Circuit) -> frozenset:
    """The head -> head (q, k, v) and head -> logits edges among the circuit's heads that its edge list
    does not keep, as (sender, receiver or "logits", input); empty without an edge list."""
    kept = circuit.head_edges()
    if kept is None:
        return frozenset()
    heads = circuit.heads
    every = {(s, r, x) for s in heads for r in heads if s[0] < r[0] for x in HEAD_INPUTS}
    every |= {(s, LOGITS, OUT) for s in heads}
    return frozenset(every - kept)


def edge_effects(evaluator, circuit: Circuit, reference_noise: bool = True, progress=None, should_stop=None):
    """Edge minimality: for each listed edge e, F(C) − F(C without e) with a 95% interval (prompts
    resampled, paired, and with the methodology's reference replicates the reference set too), as a table
    with columns edge, F_C, F_C_minus_edge, effect, ci_low, ci_high, pct_of_F_M. A circuit without an
    edge list has none listed: an empty table."""
    import pandas as pd

    from .editing import toggle_edge
    from .resampling import diff_intervals

    cols = ["edge", "F_C", "F_C_minus_edge", "effect", "ci_low", "ci_high", "pct_of_F_M"]
    if not circuit.edges:
        return pd.DataFrame(columns=cols)
    pos = evaluator.methodology.positions
    sets = [circuit_node_set(circuit, pos)] + [circuit_node_set(toggle_edge(circuit, e), pos, f"C−({e.label()})")
                                               for e in circuit.edges]
    diffs = evaluator.logit_diffs([NodeSet.model()] + sets, progress, should_stop).numpy()
    model, f = diffs[0], diffs[1:]
    full = np.repeat(f[:1], len(circuit.edges), 0)
    reps = []
    if reference_noise and evaluator.replicates:
        reps = [(r[:1].repeat(len(circuit.edges), 0), r[1:]) for r in evaluator.replicate_diffs(sets, None, should_stop)]
    meth = evaluator.methodology
    lo, hi = diff_intervals(full, f[1:], meth.bootstrap, meth.seed, replicates=reps)
    effect = full.mean(1) - f[1:].mean(1)
    f_model = float(model.mean())
    return pd.DataFrame({"edge": [e.label() for e in circuit.edges], "F_C": full.mean(1),
                         "F_C_minus_edge": f[1:].mean(1), "effect": effect, "ci_low": lo, "ci_high": hi,
                         "pct_of_F_M": 100 * effect / abs(f_model) if f_model else np.nan})


def ratio_threshold(model: np.ndarray) -> float:
    """τ: the median of ratios counts only prompts with f_M > τ = TAU_SHARE × median |f_M|."""
    return TAU_SHARE * float(np.median(np.abs(model))) if len(model) else 0.0


STAT_INPUTS = ("model", "circuit", "empty")


def faithfulness_stats(model: np.ndarray, circuit: np.ndarray, empty: np.ndarray,
                       tau: float | None = None) -> dict[str, float]:
    """F(M), F(C), F(∅) and the derived numbers, from per-prompt logit differences (ratio of means).
    tau: the median of ratios' threshold, fixed by the caller so every bootstrap draw uses the same."""
    tau = ratio_threshold(model) if tau is None else tau
    fm, fc, fe = float(np.mean(model)), float(np.mean(circuit)), float(np.mean(empty))
    return {
        "F_model": fm,
        "F_circuit": fc,
        "F_empty": fe,
        "gap": fm - fc,
        "F_model_minus_empty": fm - fe,  # the normalised score's denominator, with an interval of its own
        "ratio": fc / fm if fm != 0 else float("nan"),
        "normalized": (fc - fe) / (fm - fe) if fm != fe else float("nan"),
        "median_of_ratios": median_of_ratios(model, circuit, tau),
    }


def faithfulness_stats_many(model: np.ndarray, circuit: np.ndarray, empty: np.ndarray, tau: float) -> dict[str, np.ndarray]:
    """`faithfulness_stats` of many draws at once: [draws, N] arrays in, [draws] arrays out (the same
    numbers, for the bootstrap)."""
    fm, fc, fe = model.mean(-1), circuit.mean(-1), empty.mean(-1)
    with np.errstate(all="ignore"):
        per_ratio = np.where(model > tau, circuit / model, np.nan)
        with warnings.catch_warnings():  # a draw with no prompt over τ: NaN, as the single version gives
            warnings.simplefilter("ignore", RuntimeWarning)
            mor = np.nanmedian(per_ratio, -1)
        return {"F_model": fm, "F_circuit": fc, "F_empty": fe, "gap": fm - fc, "F_model_minus_empty": fm - fe,
                "ratio": np.where(fm != 0, fc / fm, np.nan),
                "normalized": np.where(fm != fe, (fc - fe) / (fm - fe), np.nan),
                "median_of_ratios": mor}


def median_of_ratios(model: np.ndarray, circuit: np.ndarray, tau: float | None = None) -> float:
    """Median over prompts with f_M > τ of f_C / f_M: each prompt weighs the same, where the ratio of
    means weighs prompts by their f_M (Miller et al. 2024). The median, not the mean, and only prompts
    over τ: a mean of per-prompt ratios is ruled by the prompts whose f_M is near zero or negative."""
    tau = ratio_threshold(model) if tau is None else tau
    ok = model > tau
    return float(np.median(circuit[ok] / model[ok])) if ok.any() else float("nan")


def spread(per_prompt: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Quartiles of each run's per-prompt logit differences."""
    return {k: dict(zip(("q25", "median", "q75"), map(float, np.percentile(v, [25, 50, 75]))))
            for k, v in per_prompt.items()}


def worst_prompts(dataset, per_prompt: dict[str, np.ndarray], k: int = 10, metric: str = "logit_diff"):
    """The k prompts where the circuit falls furthest below the model (f_M − f_C largest; under KL, where
    larger is worse, f_C − f_M largest)."""
    import pandas as pd

    gap = per_prompt["model"] - per_prompt["circuit"]
    order = np.argsort(gap if metric == "kl" else -gap)[:k]
    return pd.DataFrame({"prompt": [dataset.prompts[i] for i in order],
                         "group": [dataset.group_names[int(dataset.groups[i])] for i in order],
                         "f_M": per_prompt["model"][order], "f_C": per_prompt["circuit"][order],
                         "f_M − f_C": gap[order]})


def straddles_zero(interval) -> bool:
    """True when the interval includes 0 (or is not a number): a ratio over it is undefined."""
    return Interval.of(interval).straddles_zero


def _signed(x: float) -> str:
    return f"{x:.3f}".replace("-", "−")


@dataclass(frozen=True)
class Figures:
    """Faithfulness numbers on one set of prompts. `undefined` maps a key to why it is not a number:
    its stats value and its interval are then NaN, and a page prints "undefined" and the reason."""

    stats: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    undefined: dict[str, str]


def faithfulness_figures(per_prompt: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0,
                         replicates: list[dict[str, np.ndarray]] = (), tau: float | None = None,
                         level: float = 0.95) -> Figures:
    """`faithfulness_stats` with joint bootstrap intervals, and no number that cannot stand: a ratio
    whose denominator's interval includes 0, or any figure outside its own interval (or not a number
    in too many draws), is undefined, with its reason. The stats also carry the median of ratios' τ
    and how many prompts it excluded (f_M ≤ τ)."""
    model = per_prompt["model"]
    tau = ratio_threshold(model) if tau is None else tau
    statistic = partial(faithfulness_stats, tau=tau)
    stats = statistic(**per_prompt)
    draws = bootstrap_draws(per_prompt, statistic, n_boot, seed, replicates,
                            batched=partial(faithfulness_stats_many, tau=tau) if set(per_prompt) == set(STAT_INPUTS) else None)
    intervals = {k: percentile_interval(v, stats[k], level) for k, v in draws.items()}
    kept = int(np.sum(model > tau))
    undefined = _undefined(stats, intervals, draws, level, kept, tau)
    for key in undefined:
        stats[key], intervals[key] = float("nan"), (float("nan"), float("nan"))
    stats.update(median_of_ratios_tau=tau, median_of_ratios_excluded=len(model) - kept)
    return Figures(stats, intervals, undefined)


def _undefined(stats, intervals, draws, level, kept, tau) -> dict[str, str]:
    """Key -> why it is not a number. First the ratios over a denominator indistinguishable from 0
    (judged on the denominator's own joint interval), then anything else that cannot be printed."""
    out = {}
    for key, (den, name) in DENOMINATORS.items():
        if straddles_zero(intervals[den]):
            lo, hi = intervals[den]
            out[key] = f"{name} is indistinguishable from 0: {level:.0%} interval [{_signed(lo)}, {_signed(hi)}]"
    for key, d in draws.items():
        (lo, hi), value, missing = intervals[key], stats[key], float(np.mean(~np.isfinite(d)))
        if key in out:
            continue
        if key == "median_of_ratios" and not kept:
            out[key] = f"no prompt has f_M > τ = {_signed(tau)}"
        elif not np.isfinite(value):
            out[key] = "not a number on these prompts"
        elif missing > (1 - level) / 2:  # the interval would describe only the draws where it exists
            out[key] = f"not a number in {missing:.0%} of bootstrap draws" + \
                (f" (only {kept} prompts have f_M > τ)" if key == "median_of_ratios" else "")
        elif not lo <= value <= hi:  # see percentile_interval: no choice of ends would repair this
            below = float(np.mean(d[np.isfinite(d)] < value))
            out[key] = (f"unstable: the estimate {value:.3g} lies outside its own {level:.0%} interval "
                        f"[{lo:.3g}, {hi:.3g}] ({below:.1%} of bootstrap draws fall below it)")
    return out


def undefined_reason(figures: "FaithfulnessFigures", key: str) -> str | None:
    """Why figure `key` of a result (`Faithfulness`, or one of its `by_order` entries) is not a number, or
    None when it is one. A record from before `undefined` existed gives no reason for a NaN."""
    reason = figures.undefined.get(key)
    value = getattr(figures, key, None)
    if reason is None and (value is None or not np.isfinite(value)):
        reason = "not a number"
    return reason


def interval_method(methodology, reference_noise: bool = True) -> str:
    """How the 95% intervals of this methodology are made, in words (shown beside them).
    reference_noise=False: the replicates exist but these intervals do not use them (yet)."""
    if methodology.ref_replicates and methodology.ablation != "zero":
        if not reference_noise:
            return "paired bootstrap over prompts (reference-set noise not yet included)"
        if methodology.ablation == "resample":
            what = "redraws of the resampled prompts"
        elif methodology.ref_noise == "linear":
            what = "replicates of the reference set (their effect to first order)"
        else:
            what = "replicates of the reference set"
        return f"joint bootstrap: prompts resampled (paired) × {methodology.ref_replicates} {what}"
    return "paired bootstrap over prompts (reference-set noise not included)"


STAT_KEYS = ("F_model", "F_circuit", "F_empty", "gap", "F_model_minus_empty", "ratio", "normalized",
             "median_of_ratios", "median_of_ratios_tau", "median_of_ratios_excluded")
NAN = float("nan")


def _intervals(d: dict | None) -> dict[str, Interval]:
    return {k: Interval.of(v) for k, v in (d or {}).items()}


@dataclass(frozen=True, eq=False)
class FaithfulnessFigures:
    """F(M), F(C), F(∅), the gap, the ratio F(C)/F(M), the normalised score and the median of per-prompt
    ratios on one set of prompts, with 95% intervals by name. A name in `undefined` is not a number (NaN
    value and interval) and says why."""

    F_model: float
    F_circuit: float
    F_empty: float
    gap: float
    F_model_minus_empty: float  # the normalised score's denominator, with an interval of its own
    ratio: float
    normalized: float
    median_of_ratios: float
    median_of_ratios_tau: float  # τ: the median counts prompts with f_M > τ
    median_of_ratios_excluded: int  # prompts with f_M ≤ τ
    intervals: dict[str, Interval] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)

    _STATS = STAT_KEYS

    @property
    def stats(self) -> dict[str, float]:
        """The figures by name, as the record's top-level keys hold them."""
        return {k: getattr(self, k) for k in self._STATS}

    def interval(self, key: str) -> Interval:
        return self.intervals.get(key) or Interval.missing()

    @classmethod
    def _from_stats(cls, stats: dict, **rest):
        """From a stats dict (`faithfulness_stats` and τ); a name an older record lacks is NaN."""
        return cls(**{k: stats.get(k, NAN) for k in cls._STATS}, **rest)


@dataclass(frozen=True, eq=False)
class OrderFaithfulness(FaithfulnessFigures):
    """The figures on one prompt order's prompts (ABBA or BABA), n of them."""

    n: int = 0

    def to_dict(self) -> dict:
        return {**self.stats, "n": self.n, "intervals_95": {k: list(v) for k, v in self.intervals.items()},
                "undefined": dict(self.undefined)}

    @classmethod
    def from_dict(cls, d: dict) -> "OrderFaithfulness":
        return cls._from_stats(d, intervals=_intervals(d.get("intervals_95")), undefined=dict(d.get("undefined", {})),
                               n=int(d.get("n", 0)))


@dataclass(frozen=True, eq=False)
class Faithfulness(FaithfulnessFigures):
    """The figures on every prompt, with the accuracies, the per-prompt logit differences behind them
    (and under each reference replicate), the split by prompt order, the quartiles per run and how the
    intervals were made."""

    accuracy_model: float = NAN  # share of prompts with f_M > 0
    accuracy_circuit: float = NAN
    per_prompt: dict[str, np.ndarray] = field(default_factory=dict)  # model / circuit / empty -> [N]
    by_order: dict[str, OrderFaithfulness] = field(default_factory=dict)
    interval_method: str = ""
    spread: dict[str, dict[str, float]] = field(default_factory=dict)  # quartiles per run
    replicates: list[dict[str, np.ndarray]] = field(default_factory=list)  # circuit / empty per reference replicate

    _STATS = STAT_KEYS + ("accuracy_model", "accuracy_circuit")

    @property
    def n(self) -> int:
        return len(self.per_prompt.get("model", ()))

    @classmethod
    def of(cls, stats: dict, intervals: dict, per_prompt: dict, by_order: dict | None = None,
           interval_method: str = "", spread: dict | None = None, replicates=(), undefined: dict | None = None):
        """From a stats dict (`faithfulness_stats` plus τ and the accuracies) and intervals by name;
        `by_order` entries may be OrderFaithfulness or their dicts."""
        return cls._from_stats(
            stats, intervals=_intervals(intervals), undefined=dict(undefined or {}),
            per_prompt={k: np.asarray(v, dtype=float) for k, v in per_prompt.items()},
            by_order={o: s if isinstance(s, OrderFaithfulness) else OrderFaithfulness.from_dict(s)
                      for o, s in (by_order or {}).items()},
            interval_method=interval_method, spread=dict(spread or {}),
            replicates=[{k: np.asarray(v, dtype=float) for k, v in r.items()} for r in replicates])

    def quartiles(self) -> list[tuple[str, float, float, float]]:
        """(run, 25%, median, 75%) of the per-prompt metric for the model, the circuit and ∅."""
        return [(run, q["q25"], q["median"], q["q75"]) for run, q in self.spread.items()]

    def to_dict(self) -> dict:
        return {
            **self.stats,
            "intervals_95": {k: list(v) for k, v in self.intervals.items()},
            "undefined": dict(self.undefined),
            "interval_method": self.interval_method,
            "by_order": {o: s.to_dict() for o, s in self.by_order.items()},
            "spread": self.spread,
            "per_prompt": {k: v.tolist() for k, v in self.per_prompt.items()},
            "replicates": [{k: v.tolist() for k, v in r.items()} for r in self.replicates],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Faithfulness":
        """A result from its `to_dict()` (a run record's results.faithfulness, or a cache's copy)."""
        return cls.of(d, d.get("intervals_95", {}), d.get("per_prompt", {}), d.get("by_order", {}),
                      d.get("interval_method", ""), d.get("spread", {}), d.get("replicates", ()), d.get("undefined", {}))


def faithfulness(evaluator, circuit: Circuit, progress=None, reference_noise: bool = True,
                 should_stop=None) -> Faithfulness:
    """Evaluate M, C and ∅ in one batched call and summarise. With the methodology's reference
    replicates (reference_noise=True) C and ∅ are evaluated again under each, for joint intervals;
    reference_noise=False gives the same figures at once, with prompts-only intervals."""
    meth = evaluator.methodology
    sets = [NodeSet.model(), circuit_node_set(circuit, meth.positions), NodeSet.empty()]
    diffs = evaluator.logit_diffs(sets, progress, should_stop).numpy()
    per_prompt = {"model": diffs[0], "circuit": diffs[1], "empty": diffs[2]}
    kl = getattr(meth, "metric", "logit_diff") == "kl"
    reps = [{"circuit": d[0], "empty": d[1]}
            for d in (evaluator.replicate_diffs(sets[1:], progress, should_stop) if reference_noise else [])]
    tau = ratio_threshold(per_prompt["model"])  # one τ, stated once, for every order too
    fig = faithfulness_figures(per_prompt, meth.bootstrap, meth.seed, reps, tau)
    if kl:
        fig = _under_kl(fig)
    # accuracy: the correct answer ahead (logit or probability difference > 0); a divergence has no such sign
    stats = {**fig.stats, "accuracy_model": NAN if kl else float(np.mean(diffs[0] > 0)),
             "accuracy_circuit": NAN if kl else float(np.mean(diffs[1] > 0))}
    by_order = {}  # only for a task whose prompts come in orders (IOI: ABBA, BABA)
    task = get_task(evaluator.dataset.task)
    orders = np.array([task.order_of(evaluator.dataset.group_names[g]) for g in evaluator.dataset.groups.tolist()])
    for order in task.orders:
        sel = orders == order
        if sel.any():
            part = faithfulness_figures({k: v[sel] for k, v in per_prompt.items()}, meth.bootstrap, meth.seed,
                                        [{k: v[sel] for k, v in r.items()} for r in reps], tau)
            part = _under_kl(part) if kl else part
            by_order[order] = OrderFaithfulness._from_stats(part.stats, intervals=_intervals(part.intervals),
                                                            undefined=part.undefined, n=int(sel.sum()))
    return Faithfulness.of(stats, fig.intervals, per_prompt, by_order,
                           interval_method(meth, bool(reps) or not evaluator.replicates), spread(per_prompt), reps,
                           fig.undefined)


KL_RATIOS = ("ratio", "median_of_ratios")  # over F(M) or f_M, which KL makes 0 on every prompt


def _under_kl(fig: Figures) -> Figures:
    """Under KL, F(M) = 0 by definition: the ratios over it are undefined for that reason (not because of
    noise), and the normalised score (F(C) − F(∅)) / (F(M) − F(∅)) is the faithfulness figure (MIB's)."""
    stats, intervals, undefined = dict(fig.stats), dict(fig.intervals), dict(fig.undefined)
    for key in KL_RATIOS:
        stats[key], intervals[key] = NAN, (NAN, NAN)
        undefined[key] = ("F(M) = 0 under KL (the model against itself): read the normalised score "
                          "(F(C) − F(∅)) / (F(M) − F(∅))")
    return Figures(stats, intervals, undefined)


def breakdown_by_group(dataset, per_prompt: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0,
                       replicates: list[dict[str, np.ndarray]] = ()):
    """A tidy table: one row per (group, which) with the mean logit difference, its 95% interval
    (bootstrap over the group's prompts; with reference `replicates`, jointly with the reference set,
    as `resampling.bootstrap_draws` does) and its count; and the group's order (IOI: ABBA, BABA) where
    the task's prompts come in orders."""
    import pandas as pd

    rows = []
    task = get_task(dataset.task)
    for g, sel, boots in group_bootstrap_means(dataset.groups.numpy(), per_prompt, n_boot, seed, replicates):
        order = {"order": task.order_of(dataset.group_names[g])} if task.orders else {}
        for which, values in per_prompt.items():
            rows.append({"group": dataset.group_names[g], **order,
                         "which": which, "F": float(values[sel].mean()), "lo": float(np.percentile(boots[which], 2.5)),
                         "hi": float(np.percentile(boots[which], 97.5)), "n": int(sel.sum())})
    return pd.DataFrame(rows)


__all__ = ["edge_effects", "removed_edges", "Faithfulness", "FaithfulnessFigures", "OrderFaithfulness", "Figures", "STAT_KEYS", "faithfulness", "faithfulness_figures", "circuit_node_set", "faithfulness_stats",
           "breakdown_by_group", "median_of_ratios",
           "ratio_threshold", "straddles_zero", "undefined_reason", "spread", "worst_prompts", "TAU_SHARE"]
