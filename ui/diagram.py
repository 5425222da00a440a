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
