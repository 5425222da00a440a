"""Faithfulness curves: f as the circuit grows along a ranking, with MIB's CPR and CMD.

MIB's circuit-localisation track (hannamw/MIB-circuit-track, MIB_circuit_track/evaluation.py,
`evaluate_area_under_curve`; the scores printed by print_results.py; the benchmark repository
aaronmueller/MIB carries it as its MIB-circuit-track submodule) evaluates a ranking of items (edges or
nodes) like this:
- fractions kept: 0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%, 100% of the scored items;
- at fraction p the top k = int(p × n_items) items are kept (int(): rounded down, so 0.1% of 144 heads
  keeps none) and everything else is ablated;
- f(C) = (m(C) − m(∅)) / (m(M) − m(∅)), each m the mean metric (here F, the logit difference) over the
  prompts;
- CPR ("area_under") = Σ over neighbouring fractions of (x₂ − x₁)(f₁ + f₂)/2: the trapezoid rule on
  the linear fraction axis (their `log_scale` defaults to False), not divided by the x range (0.999);
- CMD ("area_from_1") = the same rule applied to |1 − f|.
`FRACTIONS`, `mib_k`, `trapezoid`, `cpr` and `cmd` are exactly that.

What this module adds: one ranking and its curve on the report prompts, every point, CPR and CMD with a
95% interval from the same joint bootstrap as faithfulness (prompts paired across every set of the
curve, and the reference-set replicates; resampling.bootstrap_draws), CPR and CMD computed on each draw
of the whole curve, and the curve of random rankings beside it. Items are generic: a ranking orders
hashable items and a `keep` function turns a top-k list into the NodeSet the evaluator runs (heads now:
`head_keep`; an edge ranking plugs in its own).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Sequence

import numpy as np

from .ablation import NodeSet, PositionScope
from .circuit import ALL_POSITIONS, HEAD_INPUTS, LOGITS, OUT, Circuit, Head, head_name
from .criteria import interval_method
from .intervals import Interval
from .progress import raise_if_stopped
from .resampling import bootstrap_draws, percentile_interval

FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # MIB's `percentages`
SOURCES = ("attribution", "activation", "discovery", "graph")
DEFAULT_SOURCE = "attribution"  # one forward and one backward pass: the cheapest ranking of every head
RANDOM_ORDERS = 5


# --- MIB's rules ----------------------------------------------------------------------------------------
def mib_k(fraction: float, n_items: int) -> int:
    """Items kept at `fraction`: MIB's int(pct * n), rounded down."""
    return int(fraction * n_items)


def trapezoid(x: Sequence[float], y) -> np.ndarray:
    """Σ (x₂ − x₁)(y₁ + y₂)/2 over the last axis of y: MIB's area, linear x, not normalised."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return ((x[1:] - x[:-1]) * (y[..., 1:] + y[..., :-1]) / 2).sum(-1)


def cpr(f, fractions: Sequence[float] = FRACTIONS) -> np.ndarray:
    """Circuit performance ratio: the area under f (higher is better; 0.999 for f = 1 everywhere)."""
    return trapezoid(fractions, f)


def cmd(f, fractions: Sequence[float] = FRACTIONS) -> np.ndarray:
    """Circuit–model distance: the area between f and 1 (lower is better)."""
    return trapezoid(fractions, np.abs(1.0 - np.asarray(f, dtype=float)))


# --- rankings -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ranking:
    """Items, most important first, with the score that ordered them (None: unscored, ranked last)."""

    source: str
    items: tuple[Hashable, ...]
    scores: tuple[float | None, ...] = ()
    note: str = ""  # how it was made, in words

    def top(self, k: int) -> tuple:
        return self.items[:k]

    def names(self) -> list[str]:
        def name(i) -> str:
            if isinstance(i, tuple) and len(i) == 2:
                return head_name(i)
            if isinstance(i, tuple) and len(i) == 3:  # an edge
                s, r, x = i
                return f"{head_name(s)}→{'logits' if r == LOGITS else head_name(r) + '<' + x + '>'}"
            return str(i)
        return [name(i) for i in self.items]


def order_by(scores: dict[Hashable, float | None], source: str, absolute: bool = False, note: str = "") -> Ranking:
    """A ranking from scores, largest first (|score| with absolute, as MIB's abs=True); ties and
    unscored items keep their given order, unscored ones last."""
    items = list(scores)
    key = lambda i: (scores[i] is None or not np.isfinite(scores[i]),
                     -(abs(scores[i]) if absolute else scores[i]) if scores[i] is not None and np.isfinite(scores[i]) else 0.0)
    items.sort(key=key)  # stable
    return Ranking(source, tuple(items), tuple(scores[i] for i in items), note)


def head_positions(n_layers: int, n_heads: int, circuit: Circuit | None, positions: str) -> dict[Head, str]:
    """Where each head is kept when it is in the top k. positions='circuit': a circuit head at its
    class's position, every other head at every position (no class gives it one, and a head's output
    everywhere is what a ranking of nodes scores); positions='all' or no circuit: every position."""
    every = {(l, h): ALL_POSITIONS for l in range(n_layers) for h in range(n_heads)}
    if circuit is not None and positions == PositionScope.CIRCUIT.value:
        every.update({h: c.position for c in circuit.classes for h in c.heads})
    return every


def head_keep(where: dict[Head, str]) -> Callable[[Sequence[Head]], NodeSet]:
    """The `keep` of a head ranking: the top-k heads, each at its position in `where`."""
    def keep(items: Sequence[Head]) -> NodeSet:
        return NodeSet(frozenset((l, h, where[(l, h)]) for l, h in items), label=f"top {len(items)}")
    return keep


def rank_by_attribution(ev, where: dict[Head, str], absolute: bool = False, should_stop=None) -> Ranking:
    """EAP's score of each head at the full model: mean dF/dz · (z − value) at the head's kept position,
    the first-order drop in F when it alone is ablated (attribution.py)."""
    from .attribution import attribution
    from .metrics import Metric

    if Metric(ev.methodology.metric) is Metric.KL:
        # KL is at its minimum (0) at the full model, so its gradient there is 0 and every score would be 0.
        # Take the other end instead: at ∅, each head's first-order drop in KL when it alone is restored.
        att = attribution(ev, NodeSet.empty(), should_stop=should_stop)
        scores = {h: -att.at(h, r) for h, r in where.items()}
        return order_by(scores, "attribution", absolute, f"attribution patching at ∅ (KL's gradient is 0 at the full "
                        f"model): the drop in KL when a head alone is restored, on N={ev.dataset.n} prompts "
                        f"(seed {ev.methodology.seed})")
    att = attribution(ev, NodeSet.model(), should_stop=should_stop)
    scores = {h: att.at(h, r) for h, r in where.items()}
    return order_by(scores, "attribution", absolute, f"attribution patching at M on N={ev.dataset.n} prompts "
                    f"(seed {ev.methodology.seed})")


def rank_by_activation(model, methodology, where: dict[Head, str], absolute: bool = False, should_stop=None) -> Ranking:
    """Activation patching (noise: a head's corrupted output in the clean run), effect at the head's kept
    position; needs the task's corrupted twins (patching.py)."""
    from .patching import activation_patching, paired_dataset

    pairs = paired_dataset(model, methodology)
    r = activation_patching(model, pairs, "noise", bootstrap=1, seed=methodology.seed, should_stop=should_stop)
    scores = {h: float(r.effects[h[0], h[1], r.roles.index(p)]) for h, p in where.items()}
    scores = {h: (s if np.isfinite(s) else None) for h, s in scores.items()}
    return order_by(scores, "activation", absolute, f"activation patching (noise) on N={r.n} prompt pairs "
                    f"(seed {methodology.seed})")


def rank_by_discovery(discovery, all_heads: Sequence[Head]) -> Ranking:
    """Discovery's pruning order: the heads it kept first, then the removed ones, last removed first
    (the greedy search removed the least needed head at each step); heads it never held go last."""
    removed = [tuple(int(x) for x in s["head"].split(".")) for s in discovery.steps if s["action"] == "remove"]
    kept = list(discovery.circuit.heads)
    seen = set(kept) | set(removed)
    items = kept + removed[::-1] + [h for h in all_heads if h not in seen]
    scores = [float(len(items) - i) if h in seen else None for i, h in enumerate(items)]
    return Ranking("discovery", tuple(items), tuple(scores),
                   f"greedy pruning order of circuit discovery ({len(kept)} heads kept, {len(removed)} removed)")


def rank_by_graph(head_scores: dict[Head, float], all_heads: Sequence[Head]) -> Ranking:
    """The per-head scores stored in an EAP-IG / MIB graph (interchange.from_eap_graph: |node score|, or
    |sum of outgoing edge scores|); heads without one go last."""
    if not head_scores:
        raise ValueError("the graph has no per-head scores to rank by (node scores, or edge scores)")
    scores = {h: head_scores.get(h) for h in all_heads}
    return order_by(scores, "graph", True, "scores stored in the EAP-IG graph")


# --- edges -----------------------------------------------------------------------------------------------
def model_edges(n_layers: int, n_heads: int) -> list[tuple]:
    """Every edge a circuit's edge list can hold, on this model: head -> later head at q, k or v, and head ->
    logits, as (sender, receiver or "logits", input). (Embedding and MLP edges are always kept here, so they
    are not items; MIB's graphs count them too.)"""
    heads = [(l, h) for l in range(n_layers) for h in range(n_heads)]
    return ([(s, r, x) for s in heads for r in heads if s[0] < r[0] for x in HEAD_INPUTS]
            + [(s, LOGITS, OUT) for s in heads])


def edge_keep(where: dict[Head, str]) -> Callable[[Sequence[tuple]], NodeSet]:
    """The `keep` of an edge ranking: the top-k edges' ends kept as nodes (each head where `where` says), and
    every other edge among those nodes removed, as EAP-IG's evaluate_graph does (README, "Edges")."""
    def keep(items: Sequence[tuple]) -> NodeSet:
        kept = set(items)
        nodes = {s for s, _, _ in kept} | {r for _, r, _ in kept if r != LOGITS}
        every = {(s, r, x) for s in nodes for r in nodes if s[0] < r[0] for x in HEAD_INPUTS}
        every |= {(s, LOGITS, OUT) for s in nodes}
        return NodeSet(frozenset((l, h, where[(l, h)]) for l, h in nodes), label=f"top {len(items)} edges",
                       removed_edges=frozenset(every - kept))
    return keep


def rank_edges_by_graph(edge_scores: dict[tuple, float], all_edges: Sequence[tuple], absolute: bool = False) -> Ranking:
    """The edge scores stored in an EAP-IG / MIB graph (interchange: head -> head and head -> logits edges);
    edges without one go last."""
    if not edge_scores:
        raise ValueError("the graph has no scores on its head -> head or head -> logits edges to rank by")
    return order_by({e: edge_scores.get(e) for e in all_edges}, "graph", absolute,
                    "edge scores stored in the EAP-IG graph" + (" (|score|)" if absolute else ""))


def edge_curve(ev, ranking: Ranking, circuit: Circuit | None = None, random_orders: int = RANDOM_ORDERS,
               progress=None, should_stop=None) -> Curve:
    """`faithfulness_curve` over the model's head edges (`model_edges`): at each fraction the top-k edges and
    their ends, every other edge among those ends removed."""
    model = ev.model
    where = head_positions(model.n_layers, model.n_heads, circuit, ev.methodology.positions)
    every = model_edges(model.n_layers, model.n_heads)
    return faithfulness_curve(ev, ranking, edge_keep(where), len(every), "edges",
                              positions_text(circuit, ev.methodology.positions), random_orders,
                              all_items=every, progress=progress, should_stop=should_stop)


def random_rankings(items: Sequence[Hashable], orders: int, seed: int) -> list[Ranking]:
    """`orders` uniformly random orders of the items, from one seeded generator."""
    rng = np.random.default_rng([seed, 0xC0DE])  # a stream of its own, apart from the bootstrap's
    return [Ranking("random", tuple(items[i] for i in rng.permutation(len(items)))) for _ in range(orders)]


# --- results --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Area:
    value: float
    interval: Interval = field(default_factory=Interval.missing)

    def to_dict(self) -> dict:
        return {"value": self.value, "interval": self.interval.to_list()}

    @classmethod
    def from_dict(cls, d: dict) -> "Area":
        return cls(float(d["value"]), Interval.of(d.get("interval")))


@dataclass(frozen=True)
class CurvePoint:
    fraction: float
    k: int
    f: float
    interval: Interval = field(default_factory=Interval.missing)

    def to_dict(self) -> dict:
        return {"fraction": self.fraction, "k": self.k, "f": self.f, "interval": self.interval.to_list()}

    @classmethod
    def from_dict(cls, d: dict) -> "CurvePoint":
        return cls(float(d["fraction"]), int(d["k"]), float(d["f"]), Interval.of(d.get("interval")))


@dataclass(frozen=True, eq=False)
class Baseline:
    """The mean curve of `orders` random rankings (the orders fixed by `seed`), its band over prompts and
    reference replicates, and each order's own CPR and CMD (their spread is the orders' noise)."""

    points: tuple[CurvePoint, ...]
    cpr: Area
    cmd: Area
    orders: int
    seed: int
    cpr_per_order: tuple[float, ...] = ()
    cmd_per_order: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        return {"points": [p.to_dict() for p in self.points], "cpr": self.cpr.to_dict(), "cmd": self.cmd.to_dict(),
                "orders": self.orders, "seed": self.seed, "cpr_per_order": list(self.cpr_per_order),
                "cmd_per_order": list(self.cmd_per_order)}

    @classmethod
    def from_dict(cls, d: dict) -> "Baseline":
        return cls(tuple(CurvePoint.from_dict(p) for p in d["points"]), Area.from_dict(d["cpr"]),
                   Area.from_dict(d["cmd"]), int(d["orders"]), int(d["seed"]),
                   tuple(d.get("cpr_per_order", ())), tuple(d.get("cmd_per_order", ())))


@dataclass(frozen=True, eq=False)
class Curve:
    """f along a ranking at MIB's fractions, CPR and CMD with 95% intervals, and the random baseline.
    `cpr_minus_baseline`: CPR − the baseline's CPR, on the same draws (paired)."""

    ranking: str
    items: str  # what was ranked: "heads" (later "edges")
    n_items: int
    points: tuple[CurvePoint, ...]
    cpr: Area
    cmd: Area
    F_model: Area
    F_empty: Area
    order: tuple[str, ...] = ()  # the ranking, item names
    ranking_note: str = ""
    positions: str = ""  # where a kept item is kept, in words
    baseline: Baseline | None = None
    cpr_minus_baseline: Area | None = None
    interval_method: str = ""
    undefined: str = ""  # why f is not a number (F(M) − F(∅) indistinguishable from 0), else ""
    per_prompt: dict[str, list] = field(default_factory=dict)  # model, empty: [N]; points: [fractions][N]

    def to_dict(self) -> dict:
        d = {"ranking": self.ranking, "items": self.items, "n_items": self.n_items,
             "fractions": [p.fraction for p in self.points], "points": [p.to_dict() for p in self.points],
             "cpr": self.cpr.to_dict(), "cmd": self.cmd.to_dict(), "F_model": self.F_model.to_dict(),
             "F_empty": self.F_empty.to_dict(), "order": list(self.order), "ranking_note": self.ranking_note,
             "positions": self.positions, "baseline": self.baseline.to_dict() if self.baseline else None,
             "cpr_minus_baseline": self.cpr_minus_baseline.to_dict() if self.cpr_minus_baseline else None,
             "interval_method": self.interval_method, "undefined": self.undefined,
             "area_rule": "MIB: trapezoid over the linear fraction axis, not normalised",
             "per_prompt": self.per_prompt}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Curve":
        return cls(d["ranking"], d.get("items", "heads"), int(d["n_items"]),
                   tuple(CurvePoint.from_dict(p) for p in d["points"]), Area.from_dict(d["cpr"]),
                   Area.from_dict(d["cmd"]), Area.from_dict(d["F_model"]), Area.from_dict(d["F_empty"]),
                   tuple(d.get("order", ())), d.get("ranking_note", ""), d.get("positions", ""),
                   Baseline.from_dict(d["baseline"]) if d.get("baseline") else None,
                   Area.from_dict(d["cpr_minus_baseline"]) if d.get("cpr_minus_baseline") else None,
                   d.get("interval_method", ""), d.get("undefined", ""), dict(d.get("per_prompt", {})))


# --- the curve ------------------------------------------------------------------------------------------
def curve_sets(ranking: Ranking, keep: Callable[[Sequence], NodeSet], n_items: int,
               fractions: Sequence[float] = FRACTIONS) -> tuple[list[int], list[NodeSet]]:
    """k and the kept set at each fraction."""
    ks = [mib_k(p, n_items) for p in fractions]
    return ks, [keep(ranking.top(k)) for k in ks]


def _statistic(P: int, R: int, fractions):
    """f at every point of the ranking's curve (keys c0..), of the random orders' mean curve, and the areas,
    from per-prompt arrays [..., N] (one draw, or [draws, N] for every draw at once)."""
    def stat(model, empty, **sets):
        fm, fe = model.mean(-1), empty.mean(-1)
        den = fm - fe
        with np.errstate(all="ignore"):
            f = np.stack([(sets[f"c{i}"].mean(-1) - fe) / den for i in range(P)], -1)
            out = {"F_model": fm, "F_empty": fe, "F_model_minus_empty": den, "cpr": cpr(f, fractions),
                   "cmd": cmd(f, fractions)}
            out.update({f"f{i}": f[..., i] for i in range(P)})
            if R:
                fr = np.stack([np.stack([(sets[f"r{j}_{i}"].mean(-1) - fe) / den for i in range(P)], -1)
                               for j in range(R)], 0)  # [R, ..., P]
                fb = fr.mean(0)
                out.update({f"b{i}": fb[..., i] for i in range(P)})
                out.update(b_cpr=cpr(fb, fractions), b_cmd=cmd(fb, fractions), cpr_minus_baseline=out["cpr"] - cpr(fb, fractions))
        return out
    return stat


def curve_figures(per_prompt: dict[str, np.ndarray], replicates: list[dict[str, np.ndarray]], random_orders: int,
                  fractions: Sequence[float] = FRACTIONS, n_boot: int = 1000, seed: int = 0):
    """Estimates and 95% percentile intervals of every point, CPR, CMD (and the baseline's) from per-prompt
    values: keys model, empty, c{point} and r{order}_{point}; `replicates` the same under each reference
    replicate (no model). One joint draw resamples the prompts of every set together and takes one
    replicate, so CPR and CMD are computed on each draw of the whole curve."""
    stat = _statistic(len(fractions), random_orders, fractions)
    est = stat(**per_prompt)
    draws = bootstrap_draws(per_prompt, stat, n_boot, seed, replicates, batched=stat)
    return est, {k: Interval.of(percentile_interval(draws[k], float(est[k]))) for k in est}


def faithfulness_curve(ev, ranking: Ranking, keep: Callable[[Sequence], NodeSet], n_items: int,
                       items: str = "heads", positions: str = "", random_orders: int = RANDOM_ORDERS,
                       fractions: Sequence[float] = FRACTIONS, all_items: Sequence | None = None,
                       reference_noise: bool = True, progress=None, should_stop=None) -> Curve:
    """The curve of `ranking` on `ev`'s prompts, with the random baseline (random_orders orders of
    `all_items`, default the ranking's items; 0: none). Every set of every curve goes to the evaluator in
    one call (its prefix tree shares layers between them); with reference replicates, the same sets again
    under each. Intervals: percentile, from joint draws of the whole curve (resampling.bootstrap_draws)."""
    meth = ev.methodology
    ks, sets = curve_sets(ranking, keep, n_items, fractions)
    randoms = random_rankings(list(all_items or ranking.items), random_orders, meth.seed)
    rsets = [curve_sets(r, keep, n_items, fractions)[1] for r in randoms]
    every = [NodeSet.model(), NodeSet.empty()] + sets + [s for rs in rsets for s in rs]
    names = ["model", "empty"] + [f"c{i}" for i in range(len(sets))] + \
        [f"r{j}_{i}" for j in range(len(rsets)) for i in range(len(fractions))]
    raise_if_stopped(should_stop)
    diffs = ev.logit_diffs(every, progress, should_stop).numpy()
    per_prompt = dict(zip(names, diffs))
    reps = [dict(zip(names[1:], d)) for d in
            (ev.replicate_diffs(every[1:], None, should_stop) if reference_noise else [])]
    est, iv = curve_figures(per_prompt, reps, len(rsets), fractions, meth.bootstrap, meth.seed)
    area = lambda k: Area(float(est[k]), iv[k])
    undefined = ""
    if iv["F_model_minus_empty"].straddles_zero:
        lo, hi = iv["F_model_minus_empty"]
        undefined = f"F(M) − F(∅) is indistinguishable from 0: 95% interval [{lo:.3f}, {hi:.3f}]"
    points = tuple(CurvePoint(p, k, float(est[f"f{i}"]), iv[f"f{i}"]) for i, (p, k) in enumerate(zip(fractions, ks)))
    baseline = None
    if rsets:
        den = est["F_model_minus_empty"]
        per_order = [(np.array([per_prompt[f"r{j}_{i}"].mean() for i in range(len(fractions))]) - est["F_empty"]) / den
                     for j in range(len(rsets))]
        baseline = Baseline(tuple(CurvePoint(p, k, float(est[f"b{i}"]), iv[f"b{i}"])
                                  for i, (p, k) in enumerate(zip(fractions, ks))),
                            area("b_cpr"), area("b_cmd"), len(rsets), meth.seed,
                            tuple(float(cpr(f, fractions)) for f in per_order),
                            tuple(float(cmd(f, fractions)) for f in per_order))
    return Curve(ranking.source, items, n_items, points, area("cpr"), area("cmd"), area("F_model"), area("F_empty"),
                 tuple(ranking.names()), ranking.note, positions, baseline,
                 area("cpr_minus_baseline") if rsets else None,
                 interval_method(meth, bool(reps) or not ev.replicates) + "; CPR and CMD on each draw of the whole curve",
                 undefined,
                 {"model": per_prompt["model"].tolist(), "empty": per_prompt["empty"].tolist(),
                  "points": [per_prompt[f"c{i}"].tolist() for i in range(len(fractions))]})


# --- heads, end to end ----------------------------------------------------------------------------------
def positions_text(circuit: Circuit | None, positions: str) -> str:
    if circuit is not None and positions == PositionScope.CIRCUIT.value:
        return "circuit heads at their class's position, every other head at every position"
    return "every head at every position"


def rank_heads(ev, source: str = DEFAULT_SOURCE, circuit: Circuit | None = None, selection_ev=None,
               absolute: bool = False, graph_scores: dict[Head, float] | None = None, discovery=None,
               should_stop=None) -> Ranking:
    """A ranking of every head of `ev`'s model from `source`, computed on `selection_ev`'s prompts (apart from
    the report prompts the curve is measured on; default: `ev` itself). discovery: a Discovery to read the
    pruning order from (default: run `discover` on the selection prompts)."""
    if source not in SOURCES:
        raise ValueError(f"ranking must be one of {', '.join(SOURCES)} (got {source!r})")
    model = ev.model
    all_heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    where = head_positions(model.n_layers, model.n_heads, circuit, ev.methodology.positions)
    sel = selection_ev or ev
    if source == "attribution":
        return rank_by_attribution(sel, where, absolute, should_stop)
    if source == "activation":
        return rank_by_activation(model, sel.methodology, where, absolute, should_stop)
    if source == "graph":
        return rank_by_graph(graph_scores or {}, all_heads)
    if discovery is None:
        from .discover import discover

        discovery = discover(sel, should_stop=should_stop)
    return rank_by_discovery(discovery, all_heads)


def head_curve(ev, ranking: Ranking, circuit: Circuit | None = None, random_orders: int = RANDOM_ORDERS,
               progress=None, should_stop=None) -> Curve:
    """`faithfulness_curve` over the model's heads, each kept where `head_positions` says."""
    model = ev.model
    where = head_positions(model.n_layers, model.n_heads, circuit, ev.methodology.positions)
    return faithfulness_curve(ev, ranking, head_keep(where), len(where), "heads",
                              positions_text(circuit, ev.methodology.positions), random_orders,
                              all_items=list(where), progress=progress, should_stop=should_stop)


def ranked_curve(ev, source: str = DEFAULT_SOURCE, circuit: Circuit | None = None, selection=None,
                 random_orders: int = RANDOM_ORDERS, progress=None, should_stop=None) -> Curve:
    """Rank every head by `source` on selection prompts (selection.py: apart from `ev`'s report prompts) and
    measure the curve on `ev`: what the dashboard runs as one job."""
    from .selection import selection_evaluator

    sel = selection_evaluator(ev.model, ev.methodology, selection)
    ranking = rank_heads(ev, source, circuit, sel, should_stop=should_stop)
    return head_curve(ev, ranking, circuit, random_orders, progress, should_stop)


__all__ = ["ranked_curve", "edge_curve", "edge_keep", "model_edges", "rank_edges_by_graph", "FRACTIONS", "SOURCES", "DEFAULT_SOURCE", "RANDOM_ORDERS", "mib_k", "trapezoid", "cpr", "cmd", "Ranking",
           "order_by", "head_positions", "head_keep", "rank_by_attribution", "rank_by_activation", "rank_by_discovery",
           "rank_by_graph", "random_rankings", "Area", "CurvePoint", "Baseline", "Curve", "curve_sets",
           "faithfulness_curve", "curve_figures", "rank_heads", "head_curve", "positions_text"]
