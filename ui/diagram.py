"""The circuit as a diagram: its classes by layer, each head where it reads and writes."""
from __future__ import annotations

import altair as alt
import pandas as pd

from ui.charts import class_scale


def circuit_diagram(circuit, n_layers: int | None = None) -> alt.Chart:
    """One row per class (labelled with the position its heads are kept at), one column per layer;
    each head a labelled dot in its class's colour. Reads like the paper's circuit figure: early
    classes low, name movers at the top."""
    rows = [{"class": c.name, "row": c.name if f"({c.position})" in c.name else f"{c.name} ({c.position})", "layer": l, "head": f"{l}.{h}",
             "position": c.position, "first": min(x for x, _ in c.heads)}
            for c in circuit.classes for l, h in c.heads]
    df = pd.DataFrame(rows)
    order = (df.groupby("row")["first"].min().sort_values(ascending=False).index.tolist() if len(df) else [])
    n_layers = n_layers or (int(df.layer.max()) + 1 if len(df) else 1)
    base = alt.Chart(df).encode(
        x=alt.X("layer:Q", title="layer", scale=alt.Scale(domain=[-0.5, n_layers - 0.5]),
                axis=alt.Axis(values=list(range(n_layers)), grid=True, format="d")),
        y=alt.Y("row:N", title=None, sort=order),
        tooltip=["head:N", "class:N", "position:N"])
    dots = base.mark_circle(size=380, opacity=0.9).encode(
        color=alt.Color("class:N", scale=class_scale(circuit), legend=None))
    # Heads of one class in one layer are stacked as one label: "9.6 9.9"
    labels = alt.Chart(df.groupby(["row", "layer"], as_index=False).agg(heads=("head", " ".join))).mark_text(
        dy=-18, fontSize=12).encode(x="layer:Q", y=alt.Y("row:N", sort=order), text="heads:N")
    return alt.layer(dots, labels).properties(height=max(160, 56 * len(circuit.classes)),
                                              title=f"Circuit '{circuit.name}': classes by layer")


# --- the circuit's edges ------------------------------------------------------------------------------------
INPUT_OFFSET = {"q": 0.22, "k": 0.0, "v": -0.22, "out": 0.0}  # where an edge meets its receiver, by input
LOGITS_NODE = "logits"


# An edge's colour says what its interval says: wholly above 0, wholly below, or either way.
SIGNS = {"helps the task": "#3b5b92", "works against it": "#c0392b", "interval includes 0": "#999999",
         "not computed yet": "#cccccc"}


def _sign(effect: float, lo: float, hi: float) -> str:
    if effect != effect:
        return "not computed yet"
    return "helps the task" if lo > 0 else "works against it" if hi < 0 else "interval includes 0"


def candidate_edges(circuit) -> list:
    """Every edge the editor offers: the class-level edges a node-level circuit keeps, then any other
    listed edge (head ends)."""
    out = circuit.all_edges()
    return out + [e for e in (circuit.edges or []) if e not in out]


def kept_edges(circuit) -> set:
    return set(circuit.edges) if circuit.edges is not None else set(circuit.all_edges())


def edge_id(edge) -> str:
    return f"{edge.sender}\u2192{edge.receiver}\u2192{edge.input}"


def edge_frame(circuit, effects=None) -> pd.DataFrame:
    """One row per candidate edge: its ends' places (x: mean layer, y: the class's row), kept or removed,
    and its effect with interval (NaN until computed)."""
    from circuit_core.circuit import LOGITS

    classes = [c for c in circuit.classes if c.heads]
    order = sorted(classes, key=lambda c: min(l for l, _ in c.heads))
    row = {c.name: i for i, c in enumerate(order)}
    x = {c.name: sum(l for l, _ in c.heads) / len(c.heads) for c in classes}
    top = max((max(l for l, _ in c.heads) for c in classes), default=0) + 1
    kept, rows = kept_edges(circuit), []
    for e in candidate_edges(circuit):
        s_cls = circuit.class_of(circuit.heads_of(e.sender)[0]) if circuit.heads_of(e.sender) else None
        r_heads = [] if e.receiver == LOGITS else circuit.heads_of(e.receiver)
        r_cls = circuit.class_of(r_heads[0]) if r_heads else None
        if s_cls is None or (e.receiver != LOGITS and r_cls is None):
            continue
        x0, y0 = x[s_cls.name], row[s_cls.name]
        x1, y1 = (top, (len(order) - 1) / 2) if e.receiver == LOGITS else (x[r_cls.name], row[r_cls.name])
        if s_cls is r_cls:  # within a class: from its first layer to its last
            x0, x1 = min(l for l, _ in s_cls.heads), max(l for l, _ in s_cls.heads)
        got = effects.of(e) if effects is not None else None
        eff = got.effect if got is not None else float("nan")
        lo, hi = (got.interval.lo, got.interval.hi) if got is not None else (float("nan"), float("nan"))
        rows.append({"id": edge_id(e), "edge": e.label(), "input": e.input, "x": x0, "y": y0, "x2": x1,
                     "y2": y1 + INPUT_OFFSET.get(e.input, 0.0), "kept": e in kept,
                     "state": "kept" if e in kept else "removed", "effect": eff, "lo": lo, "hi": hi,
                     "strength": 0.0 if eff != eff else abs(eff),
                     "sign": _sign(eff, lo, hi),
                     "shown": "not computed yet" if eff != eff else f"{eff:.3f} [{lo:.3f}, {hi:.3f}]"})
    return pd.DataFrame(rows, columns=["id", "edge", "input", "x", "y", "x2", "y2", "kept", "state", "effect", "lo",
                                       "hi", "strength", "sign", "shown"])


def edge_diagram(circuit, effects=None, selection=None, n_layers: int | None = None) -> alt.Chart:
    """Classes as dots at their mean layer (rows: earliest class lowest), the logits at the right; an arrow-less
    line per edge, meeting its receiver a little above (q), at (k) or below (v) its dot. Kept edges are solid,
    their width and opacity growing with |path-patching effect|; removed edges dashed grey. Hover: the edge, its
    effect and 95% interval."""
    edges = edge_frame(circuit, effects)
    classes = [c for c in circuit.classes if c.heads]
    order = sorted(classes, key=lambda c: min(l for l, _ in c.heads))
    top = max((max(l for l, _ in c.heads) for c in classes), default=0) + 1
    nodes = pd.DataFrame([{"name": c.name, "x": sum(l for l, _ in c.heads) / len(c.heads), "y": i,
                           "label": f"{c.name} ({c.position})"} for i, c in enumerate(order)]
                         + [{"name": LOGITS_NODE, "x": top, "y": (len(order) - 1) / 2, "label": "logits"}])
    scale_max = max(1e-9, float(edges.strength.max()) if len(edges) else 1.0)
    X = alt.X("x:Q", title="layer", scale=alt.Scale(domain=[-0.5, top + 0.5]),
              axis=alt.Axis(values=list(range(top + 1)), labelExpr=f"datum.value == {top} ? 'logits' : datum.label"))
    Y = alt.Y("y:Q", title=None, axis=None, scale=alt.Scale(domain=[-0.6, len(order) - 0.4]))
    lines = alt.Chart(edges).mark_rule().encode(
        x=X, y=Y, x2="x2:Q", y2="y2:Q",
        color=alt.condition("datum.kept", alt.Color("sign:N", title="kept edge", scale=alt.Scale(
            domain=list(SIGNS), range=list(SIGNS.values()))),
            alt.value("#bbbbbb")),
        strokeDash=alt.condition("datum.kept", alt.value([1, 0]), alt.value([5, 4])),
        strokeWidth=alt.StrokeWidth("strength:Q", scale=alt.Scale(domain=[0, scale_max], range=[1.5, 9]), legend=None),
        opacity=alt.condition("datum.kept", alt.Opacity("strength:Q", scale=alt.Scale(domain=[0, scale_max],
                                                                                      range=[0.35, 0.95]),
                                                        legend=None), alt.value(0.5)),
        tooltip=[alt.Tooltip("edge:N"), alt.Tooltip("state:N", title="in the circuit"),
                 alt.Tooltip("shown:N", title="effect [95% interval]")])
    if selection is not None:
        lines = lines.add_params(selection)
    color = alt.Color("name:N", scale=alt.Scale(domain=[c.name for c in circuit.classes] + [LOGITS_NODE],
                                                range=[circuit.color_of(c) for c in circuit.classes] + ["#222222"]),
                      legend=None)
    dots = alt.Chart(nodes).mark_circle(size=420, opacity=0.95).encode(x=X, y=Y, color=color,
                                                                        tooltip=[alt.Tooltip("label:N", title="class")])
    text = alt.Chart(nodes).mark_text(dy=-20, fontSize=12).encode(x=X, y=Y, text="label:N")
    return alt.layer(lines, dots, text).resolve_scale(color="independent").properties(
        height=max(180, 80 * len(order)), title="Edges: width = |share of F(clean) − F(corrupted) along the edge|")
