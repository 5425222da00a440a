"""Propose a circuit for a model and task by greedy pruning under mean ablation.

The result is a hypothesis to validate with the criteria (faithfulness, completeness,
minimality), not a finding. Algorithm, with H = layers x heads and R position roles (5 for IOI):

1. Role scores (heads.py): repeated-token scores and, on the task prompts, attention between
   named positions and direct effects. Forward passes only; used to name classes in step 5.
2. A position per head, one batched evaluation of 2 + H(1 + R) node sets: M, ∅, M without each
   head, and, for each head h and role r, M with h kept only at r (every other head intact).
   h's position is the r whose F is closest to F(M): where keeping h restores the model best.
3. C starts as every head at its position. "Faithful" means threshold <= F(C)/F(M) <= 2 - threshold,
   i.e. |F(M) - F(C)| <= (1 - threshold) F(M): a circuit that overshoots the model is no more
   faithful than one that falls short. With normalized=True the score is MIB's
   (F(C) - F(∅)) / (F(M) - F(∅)) instead; use it when F(∅) is itself close to F(M), where the
   ratio would let almost any circuit pass. If C is not faithful, heads are widened back to all
   positions ("*") one at a time, each step taking the widening that brings F(C) closest to F(M)
   (all candidates in one batched call); M itself is faithful, so this ends.
4. Greedy pruning: each step evaluates C without v for every v in C (one batched call) and
   removes the v whose removal leaves F closest to F(M) while staying faithful; it stops when no
   removal stays faithful (or one head is left).
5. Kept heads are grouped by (position, label); the label comes from the role scores (`label`):
   the paper's class names where the scores fit them, "other (POSITION)" where they fit none.
   IOI only: kept END heads left "other" that sit before the kept name movers are path-patched to
   the name movers' queries at END, as the paper found its S-inhibition heads (Wang et al. §3.2);
   those whose 95% interval is above 0 and that carry >= PATH_FLOOR of F(clean) − F(corrupted) and
   >= PATH_PREFER x the strongest sender's effect are named "s-inhibition" (`s_inhibition_by_path_patching`; at most PATH_N prompt pairs).

Selection apart from report (`discover_and_report`, what the CLI and the editor run): the search
above runs on *selection* prompts (selection.py: N = 40 by default, seeded apart from the report
seed, path patching of step 5 included), and the proposed circuit's F(C)/F(M) is then reported with
its 95% interval on the *report* prompts, which took no part in choosing it. A search scored on the
prompts that chose it is a winner's-curse figure: the demo circuit, chosen on N = 100 at seed 0,
scores 0.846 there and about 0.81 on fresh prompts.

Cost: 2 + H(1 + R) node sets for step 2, then |C| per pruning step, at most H(H + 1)/2 in all
(plus at most H per widening step, usually none). A node set costs one forward pass over the N
prompts, stacked many to a batch by the evaluator. A 3-layer, 4-head toy at N = 8: ~160 node sets,
a few seconds on a CPU; the 4-layer, 4-head demo at N = 100: about 220 node sets, about a minute on 2
CPU cores. GPT-2 small (H = 144): ~870 + up to ~10,000 node sets: a GPU job. Step 5's path patching
(IOI, only when some kept END head before a name mover is unnamed) is one run on at most PATH_N
pairs: about a second on the demo, 86 s for 50 pairs into two layer-9/10 receivers on a
GPT-2-small-shaped model on 2 CPU cores.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd

from .ablation import NodeSet
from .circuit import ALL_POSITIONS, Circuit, CircuitClass, Head, head_name
from .criteria import Faithfulness, faithfulness
from .progress import raise_if_stopped
from .selection import Selection, selection_evaluator
from .tasks import get_task
from . import heads as hs

PATH_FLOOR = 0.02  # share of the clean − corrupted gap a head must carry to the name movers' queries ...
PATH_PREFER = 0.5  # ... and this share of the strongest sender's: the senders that stand out
PATH_N = 50  # prompt pairs for that path patching (its cost grows with them; the demo needs a second)
FLOOR = 0.3  # an attention score must reach this to name a class after it
PREFER = 2.0  # ... and be this many times the head's attention to the other names
LABELS = {"induction": "#2ca02c", "duplicate token": "#9467bd", "previous token": "#8c564b"}  # the task's own first
OTHER_COLORS = ["#7f7f7f", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#dbdb8d"]


@dataclass(frozen=True)
class HeldOut:
    """The proposed circuit on the report prompts, which took no part in choosing it."""

    seed: int
    n: int
    faithfulness: Faithfulness

    @property
    def ratio(self) -> float:
        return self.faithfulness.stats["ratio"]

    @property
    def interval(self) -> tuple[float, float]:
        return tuple(self.faithfulness.intervals["ratio"])

    def to_dict(self) -> dict:
        f = self.faithfulness
        return {"seed": self.seed, "n": self.n, "ratio": self.ratio, "interval": list(self.interval),
                "normalized_score": f.stats["normalized"], "normalized_interval": list(f.intervals["normalized"]),
                "F_model": f.stats["F_model"], "F_circuit": f.stats["F_circuit"], "F_empty": f.stats["F_empty"],
                "interval_method": f.interval_method}


@dataclass
class Discovery:
    """The proposed circuit, the numbers behind it and how it was reached. F_model, F_circuit, F_empty
    and ratio are on the prompts the search ran on; after `discover_and_report`, `selection` says which
    those were and `held_out` holds the circuit's figures on the report prompts."""

    circuit: Circuit
    F_model: float
    F_circuit: float
    F_empty: float
    threshold: float
    normalized: bool  # the criterion: (F(C) - F(∅)) / (F(M) - F(∅)) instead of F(C) / F(M)
    positions: dict[Head, str]  # the position chosen for every head in step 2
    steps: list[dict] = field(default_factory=list)  # widenings and removals, in order
    scores: pd.DataFrame | None = None  # tidy head scores (heads.py), ablation effects included
    n_node_sets: int = 0
    selection: Selection | None = None  # with its seed resolved: where the search ran
    held_out: HeldOut | None = None
    start: dict[Head, str] | None = None  # the heads given to start from (e.g. by activation patching)

    @property
    def ratio(self) -> float:
        return self.F_circuit / self.F_model

    @property
    def normalized_score(self) -> float:
        d = self.F_model - self.F_empty
        return (self.F_circuit - self.F_empty) / d if d else float("nan")

    @property
    def empty_passes(self) -> bool:
        """True when ∅ itself meets the ratio criterion: then the ratio cannot tell circuits apart."""
        return abs(self.F_empty / self.F_model - 1) <= 1 - self.threshold

    def to_dict(self) -> dict:
        return {"circuit": self.circuit.to_dict(), "F_model": self.F_model, "F_circuit": self.F_circuit,
                "F_empty": self.F_empty, "ratio": self.ratio, "normalized_score": self.normalized_score,
                "threshold": self.threshold, "criterion": "normalized" if self.normalized else "ratio",
                "positions": {head_name(h): p for h, p in self.positions.items()}, "steps": self.steps,
                "n_node_sets": self.n_node_sets,
                **({"selection": {"seed": self.selection.seed, "n": self.selection.n, "ratio": self.ratio,
                                  "normalized_score": self.normalized_score}} if self.selection else {}),
                **({"held_out": self.held_out.to_dict()} if self.held_out else {}),
                **({"start": {head_name(h): p for h, p in self.start.items()}} if self.start else {})}


def label(position: str, s: pd.Series, task: str = "ioi") -> str:
    """A class name for a head kept at `position`, from its row of `heads.wide` scores.

    First the task's own names (`Task.label_head`: for IOI the paper's classes, see
    tasks/ioi.py), then the generic ones:
    At END: "mover (ROLE)" for a head that looks at one of the task's roles (attention >= FLOOR and
    >= PREFER x its attention to every other role), "negative mover (ROLE)" when its direct effect
    is negative.
    Elsewhere: the largest of the previous-token, duplicate-token and induction scores, if >= FLOOR.
    Anything else: "other".
    """
    get = lambda m: float(s[m]) if m in s and pd.notna(s[m]) else 0.0
    own = get_task(task).label_head
    named = own(position, get, FLOOR, PREFER) if own is not None else None
    if named is not None:
        return named
    if position == "END":  # named after the position it reads from, and the sign of what it writes
        att = {m.removeprefix("attn END→"): get(m) for m in s.index if str(m).startswith("attn END→")}
        for r, a in att.items():
            if a >= FLOOR and all(a >= PREFER * v for k, v in att.items() if k != r):
                return f"mover ({r})" if get(hs.DIRECT) >= 0 else f"negative mover ({r})"
        return "other"
    best = max((hs.PREV, hs.DUP, hs.IND), key=get)
    return best if get(best) >= FLOOR else "other"


def s_inhibition_by_path_patching(evaluator, kept: dict[Head, str], scores: pd.DataFrame,
                                  should_stop=None) -> dict[Head, float]:
    """The kept END heads that `label` leaves "other" and that feed the kept movers' queries (module
    doc, step 5): {head: path-patching effect}. Empty when there is no mover or no such head before
    one, or the task names no mover and inhibition classes (`Task.mover_class`; IOI: name movers)."""
    task = evaluator.methodology.task
    if not (get_task(task).mover_class and get_task(task).inhibition_class):
        return {}
    table = hs.wide(scores)
    at_end = {h: label("END", table.loc[h], task) for h, p in kept.items() if p == "END"}
    movers = [h for h, lab in at_end.items() if lab == get_task(task).mover_class]
    candidates = [h for h, lab in at_end.items() if lab == "other" and movers and h[0] < min(l for l, _ in movers)]
    if not candidates:
        return {}
    from .patching import paired_dataset, path_patching  # patching is only needed here

    meth = evaluator.methodology
    pairs = paired_dataset(evaluator.model, replace(meth, n=min(meth.n, PATH_N)))
    r = path_patching(evaluator.model, pairs, movers, receiver_input="q", receiver_role="END", seed=meth.seed,
                      should_stop=should_stop, metric=meth.metric)
    floor = max(PATH_FLOOR, PATH_PREFER * float(r.effects.nan_to_num(0.0).max()))
    return {h: float(r.effects[h]) for h in candidates if r.effects[h] >= floor and r.lo[h] > 0}


def build_circuit(kept: dict[Head, str], scores: pd.DataFrame, name: str, model: str | None, task: str,
                  notes: str, named: dict[Head, str] | None = None) -> Circuit:
    """Group kept heads by (position, label) into named, coloured classes; `named` overrides the label
    of some heads (e.g. S-inhibition found by path patching)."""
    table = hs.wide(scores)
    groups: dict[tuple[str, str], list[Head]] = {}
    for h in sorted(kept):
        pos = kept[h]
        groups.setdefault((pos, (named or {}).get(h) or label(pos, table.loc[h], task)), []).append(h)
    colors = {**get_task(task).class_colors, **LABELS}
    order = list(colors) + ["other"]
    keys = sorted(groups, key=lambda k: (order.index(k[1]) if k[1] in order else len(order), k[0]))
    classes, others = [], iter(OTHER_COLORS * 10)
    for pos, lab in keys:
        clash = lab == "other" or sum(l == lab for _, l in keys) > 1
        where = "all positions" if pos == ALL_POSITIONS else pos
        classes.append(CircuitClass(f"{lab} ({where})" if clash else lab, pos, groups[(pos, lab)],
                                    colors.get(lab) or next(others)))
    return Circuit(name=name, classes=classes, model=model, task=task, notes=notes)


def _keep(kept: dict[Head, str], label: str = "") -> NodeSet:
    return NodeSet(frozenset((l, h, p) for (l, h), p in kept.items()), label=label)


def discover(evaluator, threshold: float = 0.8, progress=None, should_stop=None, name: str | None = None,
             normalized: bool = False, start: dict[Head, str] | None = None) -> Discovery:
    """Propose a circuit whose F(C)/F(M) stays within [threshold, 2 - threshold] (module doc);
    with normalized=True, (F(C) - F(∅)) / (F(M) - F(∅)) does instead.

    start: heads and their positions to begin from instead of step 2 (e.g. the strongest heads of
    activation patching, patching.start_from_patching): far fewer node sets on a large model. If they
    are not faithful, they are widened to all positions, then heads are added one at a time (the one
    bringing F(C) closest to F(M), at all positions) until they are; pruning follows as usual.

    progress(done, total) counts node sets (total is an upper bound that shrinks as pruning
    goes); should_stop() is checked between steps and raises progress.Cancelled when true.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1] (got {threshold}).")
    model, dataset, meth = evaluator.model, evaluator.dataset, evaluator.methodology
    if getattr(meth, "metric", "logit_diff") == "kl":  # the search assumes a larger F is better and F(M) > 0
        raise ValueError("Circuit discovery prunes towards F(M) with a logit or probability difference; under KL "
                         "(F(M) = 0, larger is worse) choose the metric logit_diff or prob_diff to discover, then "
                         "validate the proposal under KL.")
    all_heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    roles = dataset.roles
    H = len(all_heads)
    done = 0
    if start is not None:
        bad = [h for h, p in start.items() if h not in all_heads or (p != ALL_POSITIONS and p not in roles)]
        if bad or not start:
            raise ValueError(f"start: {'no heads' if not start else 'head(s) or positions not in this model and task: ' + ', '.join(f'{head_name(h)}@{start[h]}' for h in bad)}")
    total = 2 + H * (1 + (0 if start else len(roles))) + 1 + H * (H + 1) // 2

    def F(sets: list[NodeSet]) -> list[float]:
        nonlocal done
        raise_if_stopped(should_stop, "circuit discovery cancelled")
        base = done
        sub = (lambda d, t: progress(base + d * len(sets) // t, total)) if progress else None
        out = evaluator.F(sets, sub)
        done += len(sets)
        return out

    # 1. Role scores: forward passes only.
    scores = pd.concat([hs.repeated_token_scores(model, seed=meth.seed), hs.task_scores(model, dataset)],
                       ignore_index=True)

    # 2. M, ∅, M without each head, and each head kept at one role only: one batched call.
    everything = {h: ALL_POSITIONS for h in all_heads}
    only = [] if start else [_keep({**everything, h: r}) for h in all_heads for r in roles]
    values = F([NodeSet.model(), NodeSet.empty()] + hs.head_removals(model) + only)
    f_model, f_empty = values[0], values[1]
    base = f_empty if normalized else 0.0  # F(C) is measured from here: score = (F - base) / (F(M) - base)
    if f_model <= base:
        what = f"F(∅) = {f_empty:.3f}" if normalized else "0"
        raise ValueError(f"F(M) = {f_model:.3f} <= {what}: the model does not do the task on these prompts "
                         "(beyond what the ablated model does), so there is no behaviour to be faithful to.")
    scores = pd.concat([scores, hs.ablation_frame(f_model, values[2 : 2 + H], model.n_layers, model.n_heads)],
                       ignore_index=True)
    gap = lambda f: abs(f - f_model)
    faithful = lambda f: gap(f) <= (1 - threshold) * (f_model - base) + 1e-12
    per_role = values[2 + H :]
    positions = dict(start or {})
    for i, h in enumerate(all_heads if not start else []):
        row = per_role[i * len(roles) : (i + 1) * len(roles)]
        positions[h] = roles[min(range(len(roles)), key=lambda j: gap(row[j]))]

    # 3. Every head at its position; widen heads back to all positions until faithful.
    kept = dict(positions)
    (f_c,) = F([_keep(kept)])
    steps = [{"action": "start", "head": None, "position": None, "F": f_c, "n_heads": len(kept)}]
    while not faithful(f_c):
        narrow = [h for h, p in kept.items() if p != ALL_POSITIONS]
        outside = [h for h in all_heads if h not in kept]  # only when starting from a subset
        if not narrow and not outside:  # C is M; only rounding can make it miss a threshold of 1
            break
        grow = narrow or outside
        fs = F([_keep({**kept, h: ALL_POSITIONS}) for h in grow])
        i = min(range(len(grow)), key=lambda j: gap(fs[j]))
        kept[grow[i]], f_c = ALL_POSITIONS, fs[i]
        steps.append({"action": "widen" if narrow else "add", "head": head_name(grow[i]), "position": ALL_POSITIONS,
                      "F": f_c, "n_heads": len(kept)})

    # 4. Greedy pruning: remove the head whose removal keeps F(C) closest to F(M), while faithful.
    while len(kept) > 1:
        total = done + len(kept) * (len(kept) + 1) // 2
        cands = list(kept)
        fs = F([_keep({g: p for g, p in kept.items() if g != h}) for h in cands])
        ok = [j for j in range(len(cands)) if faithful(fs[j])]
        if not ok:
            break
        j = min(ok, key=lambda j: gap(fs[j]))
        steps.append({"action": "remove", "head": head_name(cands[j]), "position": kept.pop(cands[j]), "F": fs[j],
                      "n_heads": len(kept)})
        f_c = fs[j]
    if progress:
        progress(done, done)

    # 5. Name, colour and describe.
    inhibitors = s_inhibition_by_path_patching(evaluator, kept, scores, should_stop)
    task = get_task(meth.task)
    criterion = "(F(C) - F(∅))/(F(M) - F(∅))" if normalized else "F(C)/F(M)"
    norm = (f_c - f_empty) / (f_model - f_empty) if f_model != f_empty else float("nan")
    how = (f"started from {len(start)} heads given (e.g. by activation patching)" if start else "a position per head")
    notes = (f"Proposed by circuit discovery (circuit_core/discover.py: {how}, then greedy "
             f"pruning): threshold {threshold} (keep {threshold} <= {criterion} <= {2 - threshold:g}); task {meth.task}, "
             f"N={meth.n}, seed {meth.seed}, {meth.mode} {task.group_label[1]}, ablation {meth.ablation}. "
             f"F(M)={f_model:.3f}, F(C)={f_c:.3f}, F(∅)={f_empty:.3f}, F(C)/F(M)={f_c / f_model:.3f}, "
             f"(F(C) - F(∅))/(F(M) - F(∅))={norm:.3f} on the prompts that chose it; "
             f"{len(kept)} of {H} heads kept; {done} node sets evaluated. Classes are named from head scores "
             f"(circuit_core/heads.py)" + (
                 f"; {task.inhibition_class} by path patching to the {task.mover_class}s' queries at END (share of F(clean) − "
                 f"F(corrupted), N={min(meth.n, PATH_N)} pairs): "
                 + ", ".join(f"{head_name(h)} {e:.2f}" for h, e in sorted(inhibitors.items())) if inhibitors else "")
             + ". A hypothesis to validate, not a finding.")
    circuit = build_circuit(kept, scores, name or f"discovered circuit ({model.name}, threshold {threshold})",
                            model.name, meth.task, notes, {h: task.inhibition_class for h in inhibitors})
    return Discovery(circuit, f_model, f_c, f_empty, threshold, normalized, positions, steps, scores, done,
                     start=dict(start) if start else None)


def patched_start(evaluator, top_k: int, n: int | None = None, should_stop=None) -> dict[Head, str]:
    """The top_k heads of activation patching (noise) on the first n of `evaluator`'s prompts, each at its
    best position (patching.start_from_patching): discover's `start`."""
    from .patching import activation_patching, paired_dataset, start_from_patching

    meth = evaluator.methodology
    pairs = paired_dataset(evaluator.model, meth.replace(n=min(n or meth.n, meth.n)))
    result = activation_patching(evaluator.model, pairs, "noise", seed=meth.seed, should_stop=should_stop,
                                  metric=meth.metric)
    return start_from_patching(result, top_k=top_k)


def discover_and_report(report, threshold: float = 0.8, selection: Selection | None = None, progress=None,
                        should_stop=None, name: str | None = None, normalized: bool = False,
                        start_from_patching: int | None = None, patch_n: int | None = None,
                        report_progress=None) -> Discovery:
    """`discover` on selection prompts, then the proposed circuit's faithfulness on `report`'s prompts.

    report: the evaluator of the user's methodology (its N, seed and reference replicates give the held-out
    figure and its joint 95% interval). selection: where the search runs (default: N = 40, seed = report
    seed + 10,000; the same seed as the report's is refused with ValueError). start_from_patching=K: start
    from the K strongest heads of activation patching (noise) on the first patch_n selection prompts.
    progress counts the search's node sets; report_progress (default: progress) the held-out evaluation.
    """
    selection = selection or Selection()
    chosen = Selection(selection.n, selection.seed_for(report.methodology))  # refuses seed == report seed
    sel = selection_evaluator(report.model, report.methodology, chosen)
    start = patched_start(sel, start_from_patching, patch_n, should_stop) if start_from_patching else None
    d = discover(sel, threshold, progress, should_stop, name=name, normalized=normalized, start=start)
    f = faithfulness(report, d.circuit, report_progress or progress, should_stop=should_stop)
    held = HeldOut(report.methodology.seed, report.methodology.n, f)
    lo, hi = held.interval
    notes = (f"{d.circuit.notes} Chosen on selection prompts (N={chosen.n}, seed {chosen.seed}); on the report "
             f"prompts (N={held.n}, seed {held.seed}), which took no part in choosing it: F(C)/F(M) = "
             f"{held.ratio:.3f} [{lo:.3f}, {hi:.3f}] (95%, {f.interval_method}).")
    return replace(d, circuit=replace(d.circuit, notes=notes), selection=chosen, held_out=held)


__all__ = ["Discovery", "HeldOut", "discover", "discover_and_report", "patched_start", "label", "build_circuit",
           "s_inhibition_by_path_patching"]
