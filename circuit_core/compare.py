"""Compare circuits on one model: which heads they share, and how well one recovers another.

Two views, both plain data in and plain data out:

- Membership. For circuits A, B, ... : per class (classes matched by name) the heads B shares with
  A, adds and removes, and the Jaccard overlap |A ∩ B| / |A ∪ B| of their head sets; the same once
  with classes ignored ("all heads"). Merullo et al. (2024) report this head-level overlap: 78%
  between GPT-2's IOI and Colored Objects circuits. `head_table` has one row per head for a grid
  that colours where the circuits differ.
- Agreement with a reference circuit, as ACDC (Conmy et al. 2023) and auto-circuit report it: the
  reference's heads are the positives among all n_layers × n_heads heads; a candidate's TPR is the
  share of the reference it recovers, its FPR the share of the other heads it takes in. A candidate
  with a score per head (attribution, ablation effect) gives a ROC curve, one point per threshold,
  and its area (AUC), via scikit-learn.

    >>> diffs = diff(circuit_a, circuit_b)          # per class, then "all heads"
    >>> [(d.name, d.jaccard) for d in diffs]
    >>> agreement(reference, candidate, 12, 12).tpr
    >>> roc(reference, {(9, 9): 0.8, ...}, 12, 12).auc
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

from .circuit import Circuit, Head, head_name

ALL_HEADS = "all heads (classes ignored)"
NEITHER = "neither"
BOTH = "both"
SOME = "some, not all"


def jaccard(a, b) -> float:
    """|a ∩ b| / |a ∪ b|; NaN when both are empty (no overlap to speak of)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else float("nan")


# --- membership ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Diff:
    """B against A for one class (or for all heads): what B shares with A, adds and removes."""

    name: str
    shared: frozenset[Head]
    added: frozenset[Head]  # in B, not in A
    removed: frozenset[Head]  # in A, not in B
    position_a: str | None = None  # the class's kept position in A (None: A has no such class)
    position_b: str | None = None

    @property
    def jaccard(self) -> float:
        return jaccard(self.shared | self.removed, self.shared | self.added)


def _diff(name: str, a: set, b: set, position_a=None, position_b=None) -> Diff:
    return Diff(name, frozenset(a & b), frozenset(b - a), frozenset(a - b), position_a, position_b)


def diff(a: Circuit, b: Circuit) -> list[Diff]:
    """One Diff per class name (A's classes first, then those only B has), then the head-level one."""
    names = [c.name for c in a.classes] + [c.name for c in b.classes if c.name not in {x.name for x in a.classes}]
    ca, cb = {c.name: c for c in a.classes}, {c.name: c for c in b.classes}
    out = [_diff(n, set(ca[n].heads) if n in ca else set(), set(cb[n].heads) if n in cb else set(),
                 ca[n].position if n in ca else None, cb[n].position if n in cb else None) for n in names]
    return out + [_diff(ALL_HEADS, set(a.heads), set(b.heads))]


def moved(a: Circuit, b: Circuit) -> list[Head]:
    """Heads in both circuits but in classes of different names: a head-level match, a class-level change."""
    return sorted(h for h in set(a.heads) & set(b.heads) if a.class_of(h).name != b.class_of(h).name)


def overlap_table(circuits: Mapping[str, Circuit]) -> pd.DataFrame:
    """Every other circuit against the first (the base), one row per class and one for all heads.

    Columns: circuit, class, position (A → B where they differ), shared, added, removed (head labels),
    n_A, n_B, jaccard.
    """
    (base_label, base), *others = circuits.items()
    rows = []
    for label, c in others:
        for d in diff(base, c):
            pos = d.position_a if d.position_a == d.position_b else f"{d.position_a or '—'} → {d.position_b or '—'}"
            rows.append({"circuit": label, "class": d.name, "position": "" if d.name == ALL_HEADS else pos,
                         "shared": _names(d.shared), "added": _names(d.added), "removed": _names(d.removed),
                         "n_A": len(d.shared | d.removed), "n_B": len(d.shared | d.added), "jaccard": d.jaccard})
    return pd.DataFrame(rows, columns=["circuit", "class", "position", "shared", "added", "removed", "n_A", "n_B",
                                       "jaccard"])


def class_overlap(a: Circuit, b: Circuit) -> pd.DataFrame:
    """For circuits whose classes need not share names (two tasks, as Merullo et al. compare IOI and
    Colored Objects): one row per class of A — how many of its heads B holds (in any class) and in
    which of B's classes — then one for all heads, with |A ∩ B| / |A|, / |B| and the Jaccard.

    Columns: class, position, n_A, in_B (head labels), share_of_A, B_classes, share_of_B, jaccard
    (share_of_B and jaccard only on the all-heads row).
    """
    rows = []
    for cls in a.classes:
        held = sorted(h for h in cls.heads if h in set(b.heads))
        where = sorted({f"{b.class_of(h).name} ({b.class_of(h).position})" for h in held})
        rows.append({"class": cls.name, "position": cls.position, "n_A": len(cls.heads), "in_B": _names(held),
                     "share_of_A": len(held) / len(cls.heads) if cls.heads else float("nan"),
                     "B_classes": ", ".join(where), "share_of_B": float("nan"), "jaccard": float("nan")})
    both = set(a.heads) & set(b.heads)
    rows.append({"class": ALL_HEADS, "position": "", "n_A": len(set(a.heads)), "in_B": _names(both),
                 "share_of_A": len(both) / len(set(a.heads)) if a.heads else float("nan"), "B_classes": "",
                 "share_of_B": len(both) / len(set(b.heads)) if b.heads else float("nan"),
                 "jaccard": jaccard(a.heads, b.heads)})
    return pd.DataFrame(rows)


def pairwise_jaccard(circuits: Mapping[str, Circuit]) -> pd.DataFrame:
    """Head-level Jaccard of every pair: a square table, rows and columns in the given order."""
    labels = list(circuits)
    sets = {k: set(c.heads) for k, c in circuits.items()}
    return pd.DataFrame([[jaccard(sets[r], sets[c]) for c in labels] for r in labels], index=labels, columns=labels)


def membership_order(labels: list[str]) -> list[str]:
    """The membership categories `head_table` uses, in legend order."""
    if len(labels) == 2:
        return [BOTH] + [f"only {x}" for x in labels] + [NEITHER]
    return ["all"] + [f"only {x}" for x in labels] + [SOME] + [NEITHER]


def _membership(inside: list[str], labels: list[str]) -> str:
    if not inside:
        return NEITHER
    if len(inside) == len(labels):
        return BOTH if len(labels) == 2 else "all"
    return f"only {inside[0]}" if len(inside) == 1 else SOME


def head_table(circuits: Mapping[str, Circuit], n_layers: int, n_heads: int) -> pd.DataFrame:
    """One row per head of the model: layer, head, label, the head's class in each circuit (a column
    per circuit, '' when absent), in (the circuits holding it, joined), membership (see
    `membership_order`) and class_differs (held by two or more circuits under different class names)."""
    labels = list(circuits)
    rows = []
    for layer in range(n_layers):
        for h in range(n_heads):
            cls = {k: (c.class_of((layer, h)).name if c.class_of((layer, h)) else "") for k, c in circuits.items()}
            inside = [k for k in labels if cls[k]]
            rows.append({"layer": layer, "head": h, "label": head_name((layer, h)), **cls, "in": ", ".join(inside),
                         "membership": _membership(inside, labels),
                         "class_differs": len({cls[k] for k in inside}) > 1})
    return pd.DataFrame(rows)


def _names(heads) -> str:
    return ", ".join(head_name(h) for h in sorted(heads))


# --- agreement with a reference (ACDC / auto-circuit) ------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    """A candidate's heads against a reference's, over every head of the model (no sampling: counts)."""

    tp: int  # in both
    fp: int  # in the candidate only
    fn: int  # in the reference only
    tn: int  # in neither

    @property
    def tpr(self) -> float:
        """Share of the reference's heads the candidate recovers (recall)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def fpr(self) -> float:
        """Share of the heads outside the reference that the candidate takes in."""
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else float("nan")


def _all_heads(n_layers: int, n_heads: int) -> list[Head]:
    return [(layer, h) for layer in range(n_layers) for h in range(n_heads)]


def agreement(reference: Circuit, candidate: Circuit, n_layers: int, n_heads: int) -> Agreement:
    ref, cand = set(reference.heads), set(candidate.heads)
    everything = set(_all_heads(n_layers, n_heads))
    return Agreement(len(ref & cand), len(cand - ref), len(ref - cand), len(everything - ref - cand))


@dataclass(frozen=True)
class Roc:
    """A ROC curve of head scores against a reference: one point per threshold, and its area."""

    points: pd.DataFrame  # fpr, tpr, threshold (sklearn's roc_curve, drop_intermediate=False)
    auc: float  # NaN when the reference holds every head or none (one class only)


def roc(reference: Circuit, scores: Mapping[Head, float], n_layers: int, n_heads: int) -> Roc:
    """Higher score = more likely in the circuit. Heads without a (finite) score rank below every scored
    one, all tied, as a method that never scored them would leave them out."""
    from sklearn.metrics import roc_auc_score, roc_curve

    heads = _all_heads(n_layers, n_heads)
    ref = set(reference.heads)
    y_true = np.array([h in ref for h in heads], dtype=int)
    given = [float(scores[h]) for h in heads if h in scores and math.isfinite(float(scores[h]))]
    floor = (min(given) if given else 0.0) - 1.0
    y_score = np.array([float(scores[h]) if h in scores and math.isfinite(float(scores[h])) else floor
                        for h in heads])
    if y_true.min() == y_true.max():
        return Roc(pd.DataFrame(columns=["fpr", "tpr", "threshold"]), float("nan"))
    fpr, tpr, thr = roc_curve(y_true, y_score, drop_intermediate=False)
    return Roc(pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr}), float(roc_auc_score(y_true, y_score)))


def agreement_table(reference: Circuit, candidates: Mapping[str, Circuit], n_layers: int, n_heads: int,
                    scores: Mapping[str, Mapping[Head, float]] | None = None) -> pd.DataFrame:
    """One row per candidate: TP, FP, FN, TN, TPR, FPR, and AUC where `scores` has the candidate's head
    scores (NaN otherwise). Rows for score sources that are no circuit (e.g. an ablation effect) carry
    only their AUC."""
    scores = scores or {}
    rows = []
    for label, c in candidates.items():
        a = agreement(reference, c, n_layers, n_heads)
        rows.append({"circuit": label, "TP": a.tp, "FP": a.fp, "FN": a.fn, "TN": a.tn, "TPR": a.tpr, "FPR": a.fpr,
                     "AUC": roc(reference, scores[label], n_layers, n_heads).auc if label in scores else float("nan")})
    for label in [k for k in scores if k not in candidates]:
        rows.append({"circuit": label, "AUC": roc(reference, scores[label], n_layers, n_heads).auc})
    counts = ["TP", "FP", "FN", "TN"]
    return pd.DataFrame(rows, columns=["circuit", *counts, "TPR", "FPR", "AUC"]).astype({k: "Int64" for k in counts})


def auc_undefined(reference: Circuit, n_layers: int, n_heads: int) -> str | None:
    """Why no AUC exists against `reference` (None when it does): a ROC needs heads in and out of it."""
    n = len(set(reference.heads))
    if n == 0:
        return "the reference holds no head"
    if n == n_layers * n_heads:
        return "the reference holds every head"
    return None


def auc_text(table: pd.DataFrame, reference: Circuit, n_layers: int, n_heads: int,
             scores: Mapping[str, Mapping[Head, float]] | None = None) -> list[str]:
    """agreement_table's AUC column for display: the number, "n/a (why)" where it is undefined, "—" for a
    circuit without head scores (a table shows NaN as "None", which says nothing)."""
    why = auc_undefined(reference, n_layers, n_heads)
    out = []
    for label, auc in zip(table["circuit"], table["AUC"]):
        if label not in (scores or {}):
            out.append("—")
        elif pd.isna(auc):
            out.append(f"n/a ({why or 'no finite head scores'})")
        else:
            out.append(f"{auc:.3f}")
    return out


def roc_curves(reference: Circuit, scores: Mapping[str, Mapping[Head, float]], n_layers: int,
               n_heads: int) -> pd.DataFrame:
    """The ROC points of each score source, tidy (source, fpr, tpr, threshold, order) for one chart."""
    parts = [roc(reference, s, n_layers, n_heads).points.assign(source=k) for k, s in scores.items()]
    parts = [p.assign(order=range(len(p))) for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["source", "fpr", "tpr", "order"])


def effect_scores(frame: pd.DataFrame) -> dict[Head, float]:
    """{head: |score|} from a tidy heads.py table (layer, head, score), e.g. `ablation_effects`: a head
    matters for the task whichever way it pushes (negative name movers are in the IOI circuit)."""
    return {(int(r.layer), int(r.head)): abs(float(r.score)) for r in frame.itertuples()}


# --- the three criteria side by side -------------------------------------------------------------------
@dataclass(frozen=True)
class CriteriaSummary:
    """One circuit's faithfulness, completeness and minimality, each with its 95% interval.

    faithfulness: F(C)/F(M) (ratio of means). completeness: the largest |F(C\\K) − F(M\\K)| over the K
    sets evaluated (∅ and each class), as % of F(M), and that K. minimality: heads scoring under the
    threshold; the interval counts heads whose interval lies wholly under it (surely) and heads whose
    interval reaches under it (possibly).
    """

    ratio: float
    ratio_ci: tuple[float, float]
    normalized: float
    normalized_ci: tuple[float, float]
    incompleteness_pct: float | None = None
    incompleteness_ci: tuple[float, float] | None = None
    worst_k: str | None = None
    n_heads: int = 0
    under_threshold: int | None = None
    under_threshold_range: tuple[int, int] | None = None
    threshold_pct: float | None = None
    ratio_undefined: str | None = None  # why F(C)/F(M) is not a number (then ratio is NaN), else None
    normalized_undefined: str | None = None


def summarize(faithfulness, completeness=None, minimality=None) -> CriteriaSummary:
    """faithfulness: a `Faithfulness`, or a `validate.Validation` (then its three results are used);
    completeness / minimality: their results, or None (not yet)."""
    from .completeness import Cols as CC
    from .criteria import undefined_reason
    from .minimality import Cols as MC

    if hasattr(faithfulness, "minimality"):  # a Validation
        faithfulness, completeness, minimality = faithfulness.faithfulness, faithfulness.completeness, faithfulness.minimality
    f = faithfulness
    out = dict(ratio=f.ratio, ratio_ci=tuple(f.interval("ratio")), normalized=f.normalized,
               normalized_ci=tuple(f.interval("normalized")), ratio_undefined=undefined_reason(f, "ratio"),
               normalized_undefined=undefined_reason(f, "normalized"))
    if completeness is not None:
        t = completeness.table
        worst = t.loc[t[CC.INCOMPLETENESS].idxmax()]
        scale = 100 / completeness.scale if completeness.scale else float("nan")  # as pct_of does
        out.update(incompleteness_pct=float(worst[CC.INCOMPLETENESS_PCT]),
                   incompleteness_ci=(float(worst[CC.CI_LOW] * scale), float(worst[CC.CI_HIGH] * scale)),
                   worst_k=f"{worst[CC.NAME]}" + (f" ({', '.join(worst[CC.K])})" if worst[CC.FAMILY] == "class" else ""))
    if minimality is not None:
        t, thr = minimality.table, minimality.threshold_pct
        under = int((t[MC.VERDICT] == "fails").sum()) if MC.VERDICT in t else int(t[MC.BELOW_THRESHOLD].sum())
        out.update(n_heads=len(t), under_threshold=under, threshold_pct=thr,
                   under_threshold_range=(int((t[MC.CI_HIGH_PCT] < thr).sum()), int((t[MC.CI_LOW_PCT] < thr).sum())))
    return CriteriaSummary(**out)


def criteria_table(summaries: Mapping[str, CriteriaSummary | None]) -> pd.DataFrame:
    """One row per circuit: each criterion's figure and its 95% interval as text ('…' where not computed yet)."""
    def pct(x):
        return f"{x:.1%}"

    rows = []
    for label, s in summaries.items():
        row = {"circuit": label}
        if s is not None:  # an undefined ratio: the word, and its reason where the interval would be
            row.update({"F(C)/F(M)": "undefined", "F(C)/F(M) 95% CI": s.ratio_undefined} if s.ratio_undefined else
                       {"F(C)/F(M)": pct(s.ratio), "F(C)/F(M) 95% CI": f"{pct(s.ratio_ci[0])} – {pct(s.ratio_ci[1])}"})
            row.update({"normalised": "undefined", "normalised 95% CI": s.normalized_undefined} if s.normalized_undefined
                       else {"normalised": pct(s.normalized),
                             "normalised 95% CI": f"{pct(s.normalized_ci[0])} – {pct(s.normalized_ci[1])}"})
        if s is not None and s.incompleteness_pct is not None:
            lo, hi = s.incompleteness_ci
            row.update({"max incompleteness (% of F(M))": f"{s.incompleteness_pct:.1f}",
                        "incompleteness 95% CI": f"{lo:.1f} – {hi:.1f}", "worst K": s.worst_k})
        if s is not None and s.under_threshold is not None:
            lo, hi = s.under_threshold_range
            row.update({"heads under threshold": f"{s.under_threshold} of {s.n_heads}",
                        "under threshold 95% range": f"{lo} – {hi}"})
        rows.append(row)
    return pd.DataFrame(rows).fillna("…")


__all__ = ["jaccard", "Diff", "diff", "moved", "overlap_table", "pairwise_jaccard", "head_table", "membership_order",
           "Agreement", "agreement", "agreement_table", "Roc", "roc", "roc_curves", "effect_scores", "CriteriaSummary", "summarize", "criteria_table",
           "ALL_HEADS", "BOTH", "NEITHER"]
