"""Altair charts, built from plain DataFrames; sized and labelled for a projector."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from circuit_core.completeness import Cols as CC
from circuit_core.minimality import Cols as MC
from circuit_core.verdicts import Verdict

FONT = dict(labelFontSize=14, titleFontSize=16)
OUT_OF_CIRCUIT = "not in circuit"


def style(chart: alt.Chart) -> alt.Chart:
    return (chart.configure_axis(**FONT).configure_legend(**FONT).configure_title(fontSize=18, anchor="start")
            .configure_view(strokeWidth=0))


def class_scale(circuit) -> alt.Scale:
    names = [c.name for c in circuit.classes]
    return alt.Scale(domain=names + [OUT_OF_CIRCUIT], range=[circuit.color_of(c) for c in circuit.classes] + ["#dddddd"])


def head_grid(cells: pd.DataFrame, circuit, metric: str, selection=None) -> alt.Chart:
    """Layer × head grid: background = `metric` score, a class-coloured square on circuit heads.

    cells: layer, head, score, class (OUT_OF_CIRCUIT for others), position, label.
    """
    n_layers = int(cells.layer.max()) + 1
    base = alt.Chart(cells).encode(
        x=alt.X("head:O", title="head"),
        # every layer labelled: Vega drops overlapping labels, and every other layer went unnamed
        y=alt.Y("layer:O", title="layer", sort="descending", axis=alt.Axis(labelOverlap=False)),
        tooltip=[alt.Tooltip("label:N", title="head"), alt.Tooltip("class:N"), alt.Tooltip("position:N"),
                 alt.Tooltip("score:Q", title=metric, format=".3f")]
        + ([alt.Tooltip("lo:Q", title="95% interval from", format=".3f"), alt.Tooltip("hi:Q", title="to", format=".3f")]
           if {"lo", "hi"} <= set(cells.columns) else []),
    )
    lim = float(cells.score.abs().max() or 1.0)
    if float(cells.score.min()) >= 0:  # attention, role scores: a sequential scale from 0
        scale = alt.Scale(scheme="blues", domain=[0, lim])
    else:  # signed effects: diverging around 0
        scale = alt.Scale(scheme="redblue", domain=[-lim, lim], reverse=True)
    rect = base.mark_rect(stroke="white", strokeWidth=1).encode(color=alt.Color("score:Q", title=metric, scale=scale))
    if selection is not None:
        rect = rect.add_params(selection)
    members = base.transform_filter(alt.datum["class"] != OUT_OF_CIRCUIT).mark_square(size=260, opacity=1,
                                                                                    stroke="black", strokeWidth=1)
    members = members.encode(color=alt.Color("class:N", title="class", scale=class_scale(circuit),
                                             legend=alt.Legend(orient="bottom", columns=4, labelLimit=0)))
    chart = alt.layer(rect, members).resolve_scale(color="independent")
    # fit-x: the height is the grid's own, legends and axes come on top (Streamlit's default "fit" squeezes
    # the legend into it, leaving 12 layers ~14 px rows)
    return chart.properties(height=max(320, 34 * n_layers), title=f"Heads: circuit classes over {metric}",
                            autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))


def distribution(per_prompt: dict[str, list[float]], metric: str = "logit difference at END", unit: str = "nats",
                 short: str = "logit difference") -> alt.Chart:
    """Per-prompt values of F for model, circuit and empty circuit; `metric`: what F is, in words (the
    task's logit difference, or metrics.Metric.what), `short`: the title's name for it."""
    rows = [{"which": k, "logit diff": v} for k, vs in per_prompt.items() for v in vs]
    df = pd.DataFrame(rows)
    return alt.Chart(df).transform_density("logit diff", groupby=["which"], as_=["logit diff", "density"]).mark_area(
        opacity=0.45).encode(
        x=alt.X("logit diff:Q", title=f"{metric}, per prompt ({unit})"),
        y=alt.Y("density:Q", title="density", stack=None),  # overlaid, not stacked
        color=alt.Color("which:N", title="run", scale=alt.Scale(domain=["model", "circuit", "empty"],
                                                                range=["#4c78a8", "#f58518", "#9d9d9d"])),
    ).properties(height=280, title=f"Per-prompt {short}")


def by_group(frame: pd.DataFrame, group: str = "group", y_title: str = "mean logit diff (nats)") -> alt.Chart:
    """Mean logit difference per group of prompts (`group`: the task's word for one, e.g. "template"),
    model vs circuit, with 95% intervals (lo, hi). Group names are shown whole, at an angle."""
    base = alt.Chart(frame[frame.which != "empty"]).encode(
        x=alt.X("group:N", title=group, sort=None, axis=alt.Axis(labelLimit=0, labelAngle=-40)), xOffset="which:N")
    bars = base.mark_bar().encode(
        y=alt.Y("F:Q", title=y_title),
        color=alt.Color("which:N", title="run", scale=alt.Scale(domain=["model", "circuit"], range=["#4c78a8", "#f58518"])),
        tooltip=["group", "which", alt.Tooltip("F:Q", format=".3f"), alt.Tooltip("lo:Q", format=".3f"),
                 alt.Tooltip("hi:Q", format=".3f"), "n"],
    )
    err = base.mark_rule(color="black").encode(y="lo:Q", y2="hi:Q")
    return (bars + err).properties(height=300, title=f"F by {group} (95% intervals)")


def intervals(frame: pd.DataFrame, value: str, lo: str, hi: str, category: str, title: str, x_title: str) -> alt.Chart:
    """A point per row with its 95% interval."""
    base = alt.Chart(frame).encode(y=alt.Y(f"{category}:N", title=None, sort=None))
    bars = base.mark_rule(strokeWidth=3).encode(x=alt.X(f"{lo}:Q", title=x_title), x2=f"{hi}:Q")
    pts = base.mark_point(filled=True, size=120).encode(
        x=f"{value}:Q", tooltip=[category, alt.Tooltip(f"{value}:Q", format=".3f"),
                                 alt.Tooltip(f"{lo}:Q", format=".3f"), alt.Tooltip(f"{hi}:Q", format=".3f")])
    return (bars + pts).properties(height=40 * len(frame) + 40, title=title)


FAMILY_COLORS = alt.Scale(domain=["empty", "class", "random", "greedy", "user"],
                          range=["#000000", "#1f77b4", "#9d9d9d", "#d62728", "#2ca02c"])
VERDICTS = ["passes", "undecided", "fails"]
VERDICT_COLORS = alt.Scale(domain=VERDICTS, range=[Verdict(v).colour for v in VERDICTS])
VERDICT_SHAPES = alt.Scale(domain=VERDICTS, range=["circle", "diamond", "cross"])
VERDICT_MARKS = {"passes": "✓", "undecided": "?", "fails": "✗"}


def verdict_badge(criterion: str, verdict: str) -> str:
    """'Completeness fails' as Streamlit markdown on the verdict's colour (a verdict is a finding, not an
    error of the page: st.error stays for errors)."""
    colour = {"passes": "green", "fails": "red"}.get(verdict, "gray")
    return f":{colour}-background[**{criterion} {verdict}**]"


def verdict_cell(verdict: str) -> str:
    """CSS for a table cell holding a verdict (pandas Styler.map)."""
    if verdict not in VERDICTS:
        return ""
    return f"color: white; background-color: {Verdict(verdict).colour}; font-weight: 600"


def fit_domain(values, pad: float = 0.05, zero_within: float = 0.25) -> tuple[float, float]:
    """An axis range that fits the data (and its intervals): their range plus `pad` of it on each side,
    stretched to 0 only when 0 lies within `zero_within` of the range from the data; points that sit far
    from 0 are not squashed into a corner by a range that starts there."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    if 0 < lo <= zero_within * span:
        lo = 0.0
    elif -zero_within * span <= hi < 0:
        hi = 0.0
    span = hi - lo
    return lo - pad * span, hi + pad * span


def completeness_scatter(table: pd.DataFrame) -> alt.Chart:
    """The paper's plot: F(M\\K) on x, F(C\\K) on y, the diagonal, points coloured by K family."""
    # Identical K sets from different families overlap: draw random first, ∅ and classes last (on top).
    rank = {"random": 0, "greedy": 1, "user": 2, "class": 3, "empty": 4}
    df = table.assign(_z=table[CC.FAMILY].map(rank).fillna(0)).sort_values("_z", kind="stable").drop(columns="_z")
    df["members"] = df[CC.K].apply(lambda k: ", ".join(k) if isinstance(k, (list, tuple)) else str(k))
    cols = [CC.F_M_MINUS_K, CC.F_C_MINUS_K, CC.F_C_LO, CC.F_C_HI, CC.F_M_LO, CC.F_M_HI]
    lo, hi = fit_domain(np.concatenate([df[c].to_numpy(dtype=float) for c in cols if c in df]))
    diag = alt.Chart(pd.DataFrame({"x": [lo, hi], "y": [lo, hi]})).mark_line(color="#888", strokeDash=[6, 4]).encode(
        x="x:Q", y="y:Q")
    verdict = ({"shape": alt.Shape(f"{CC.VERDICT}:N", title="verdict", scale=VERDICT_SHAPES)} if CC.VERDICT in df else {})
    family = alt.Color(f"{CC.FAMILY}:N", title="K family", scale=FAMILY_COLORS)
    pts = alt.Chart(df).mark_point(size=110, opacity=0.85, filled=True).encode(
        x=alt.X(f"{CC.F_M_MINUS_K}:Q", title="F(M \\ K)  (nats)", scale=alt.Scale(domain=[lo, hi])),
        y=alt.Y(f"{CC.F_C_MINUS_K}:Q", title="F(C \\ K)  (nats)", scale=alt.Scale(domain=[lo, hi])),
        color=family, **verdict,
        tooltip=[alt.Tooltip(f"{CC.NAME}:N", title="K"), alt.Tooltip("members:N", title="members"),
                 alt.Tooltip(f"{CC.F_C_MINUS_K}:Q", title="F(C\\K)", format=".3f"),
                 alt.Tooltip(f"{CC.F_M_MINUS_K}:Q", title="F(M\\K)", format=".3f"),
                 alt.Tooltip(f"{CC.INCOMPLETENESS}:Q", format=".3f"), alt.Tooltip(f"{CC.CI_LOW}:Q", format=".3f", title="|diff| low"),
                 alt.Tooltip(f"{CC.CI_HIGH}:Q", format=".3f", title="|diff| high")]
                + ([alt.Tooltip(f"{CC.VERDICT}:N")] if CC.VERDICT in df else []),
    )
    layers = [diag]
    if CC.F_C_LO in df:  # 95% intervals of both coordinates, as thin cross-hairs under the points
        # the points' colour exactly: a layer with legend=None on the shared scale drops the family legend
        bars = alt.Chart(df).encode(color=family)
        layers += [bars.mark_rule(opacity=0.5, clip=True).encode(x=f"{CC.F_M_MINUS_K}:Q", y=f"{CC.F_C_LO}:Q", y2=f"{CC.F_C_HI}:Q"),
                   bars.mark_rule(opacity=0.5, clip=True).encode(y=f"{CC.F_C_MINUS_K}:Q", x=f"{CC.F_M_LO}:Q", x2=f"{CC.F_M_HI}:Q")]
    return alt.layer(*layers, pts).properties(
        height=460, title="Completeness: a complete circuit sits on the diagonal (95% intervals; shape: verdict)")


def head_order(table: pd.DataFrame, circuit) -> list[str]:
    """The table's heads ("layer.head") by class (the circuit's order), then layer and head as numbers:
    an explicit list, because a nominal axis would sort "0.10" before "0.4"."""
    rank = {c.name: i for i, c in enumerate(circuit.classes)}

    def key(row):
        layer, head = (int(x) for x in str(row["head"]).split("."))
        return rank.get(row["class"], len(rank)), layer, head

    return [r["head"] for r in sorted(table[["head", "class"]].to_dict("records"), key=key)]


def minimality_bars(table: pd.DataFrame, circuit, threshold_pct: float, scale: str = "F(M)") -> alt.Chart:
    """A bar per head: |F(C\\(K∪{v})) − F(C\\K)| as % of F(M) (`scale`: under KL F(∅) − F(M)), coloured by
    class, with the threshold."""
    df = table.copy()
    df["K members"] = df[MC.K].apply(lambda k: ", ".join(k) if isinstance(k, (list, tuple)) and k else "∅")
    order = head_order(df, circuit)
    bars = alt.Chart(df).mark_bar().encode(
        x=alt.X(f"{MC.HEAD}:N", title="head", sort=order),
        y=alt.Y(f"{MC.PCT_OF_F_M}:Q", title=f"score (% of {scale})"),
        color=alt.Color(f"{MC.CLASS}:N", title="class", scale=class_scale(circuit)),
        tooltip=[MC.HEAD, MC.CLASS, alt.Tooltip("K members:N", title="K"), MC.K_SOURCE,
                 alt.Tooltip(f"{MC.PCT_OF_F_M}:Q", format=".2f", title=f"% of {scale}"),
                 alt.Tooltip(f"{MC.SCORE}:Q", format=".3f")],
    )
    rule = alt.Chart(pd.DataFrame({"t": [threshold_pct]})).mark_rule(color="#d62728", strokeDash=[6, 3],
                                                                     strokeWidth=2).encode(y="t:Q")
    layers = [bars, rule]
    if MC.CI_LOW_PCT in df:  # error bars, in % of F(M) like the bars
        layers.append(alt.Chart(df).mark_rule(color="black").encode(
            x=alt.X(f"{MC.HEAD}:N", sort=order),
            y=f"{MC.CI_LOW_PCT}:Q", y2=f"{MC.CI_HIGH_PCT}:Q"))
    if MC.VERDICT in df:  # the verdict above each bar, in its colour: decided by the interval, not the bar
        df["mark"] = df[MC.VERDICT].map(VERDICT_MARKS)
        df["top"] = df[[MC.PCT_OF_F_M, MC.CI_HIGH_PCT]].max(axis=1) if MC.CI_HIGH_PCT in df else df[MC.PCT_OF_F_M]
        layers.append(alt.Chart(df).mark_text(dy=-10, fontSize=16, fontWeight="bold").encode(
            x=alt.X(f"{MC.HEAD}:N", sort=order), y="top:Q", text="mark:N",
            color=alt.Color(f"{MC.VERDICT}:N", title="verdict (✓ passes, ? undecided, ✗ fails)", scale=VERDICT_COLORS)))
    return alt.layer(*layers).resolve_scale(color="independent").properties(
        height=380, title=f"Minimality with 95% intervals (dashed line: {threshold_pct:g}% of {scale})")


def baseline_histogram(F_random, F_circuit: float, F_model: float) -> alt.Chart:
    """F/F(M) of random circuits of C's shape, with C marked."""
    df = pd.DataFrame({"ratio": [f / F_model for f in F_random]})
    hist = alt.Chart(df).mark_bar(color="#9d9d9d").encode(
        x=alt.X("ratio:Q", bin=alt.Bin(maxbins=30), title="F / F(M) of random circuits with C's heads per layer"),
        y=alt.Y("count()", title="circuits"))
    mark = alt.Chart(pd.DataFrame({"C": [F_circuit / F_model]})).mark_rule(color="#f58518", strokeWidth=3).encode(
        x="C:Q", tooltip=[alt.Tooltip("C:Q", format=".3f", title="F(C)/F(M)")])
    return (hist + mark).properties(height=260, title="Random circuits of the same shape (orange: C)")


MEMBERSHIP_COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeeeee"]


def membership_grid(cells: pd.DataFrame, order: list[str], labels: list[str]) -> alt.Chart:
    """Layer × head grid, one cell per head coloured by which circuits hold it (compare.head_table);
    a black dot where circuits hold the head under different class names.

    order: the membership categories in legend order (compare.membership_order), 'neither' last.
    """
    n_layers, n_heads = int(cells["layer"].max()) + 1, int(cells["head"].max()) + 1
    colors = MEMBERSHIP_COLORS[:len(order) - 1] + [MEMBERSHIP_COLORS[-1]]  # 'neither' stays pale
    df = cells.assign(differs=cells["class_differs"].map({True: "yes", False: "no"}))
    base = alt.Chart(df).encode(x=alt.X("head:O", title="head"), y=alt.Y("layer:O", title="layer", sort="descending"))
    rect = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("membership:N", title="held by", scale=alt.Scale(domain=order, range=colors)),
        tooltip=[alt.Tooltip("label:N", title="head"), alt.Tooltip("membership:N", title="held by")]
                + [alt.Tooltip(f"{k}:N", title=f"class in {k}") for k in labels])
    # Dots drawn on every cell and hidden where the classes agree: a filtered layer that ends up
    # empty collapses the whole chart in Streamlit's renderer.
    dots = base.mark_circle(color="black", size=40).encode(
        opacity=alt.condition(alt.datum.differs == "yes", alt.value(1.0), alt.value(0.0)))
    cell = 34 if n_layers <= 12 else 24  # 12 layers: roomy; 24 layers (gpt2-medium): still a readable cell
    # autosize "pad": width and height are the grid's; axes and legend are added around it. (Streamlit
    # otherwise fits title, legend and grid into `width`, squeezing a small grid to nothing.)
    return alt.layer(rect, dots).properties(height=cell * n_layers, width=cell * n_heads,
                                            autosize=alt.AutoSizeParams(type="pad"),
                                            title="Heads by circuit (dot: held under different class names)")


def roc_chart(curves: pd.DataFrame, points: pd.DataFrame) -> alt.Chart:
    """ROC curves of head scores against a reference (curves: source, fpr, tpr) with the chance
    diagonal, and each candidate circuit's own (FPR, TPR) as a labelled point (points: circuit, fpr, tpr)."""
    axes = dict(x=alt.X("fpr:Q", title="false positive rate (heads)", scale=alt.Scale(domain=[0, 1])),
                y=alt.Y("tpr:Q", title="true positive rate (heads)", scale=alt.Scale(domain=[0, 1])))
    diag = alt.Chart(pd.DataFrame({"fpr": [0, 1], "tpr": [0, 1]})).mark_line(color="#888", strokeDash=[6, 4]).encode(**axes)
    layers = [diag]
    if len(curves):
        layers.append(alt.Chart(curves).mark_line(strokeWidth=2).encode(  # linear: tied scores give a diagonal step
            **axes, color=alt.Color("source:N", title="scored by", legend=alt.Legend(orient="bottom")), order="order:Q"))
    if len(points):
        pts = alt.Chart(points).encode(**axes, tooltip=["circuit", alt.Tooltip("fpr:Q", format=".2f", title="FPR"),
                                                         alt.Tooltip("tpr:Q", format=".2f", title="TPR")])
        layers += [pts.mark_point(filled=True, size=120, color="black"),
                   pts.mark_text(align="left", dx=8, dy=-8, fontSize=14).encode(text="circuit:N")]
    return alt.layer(*layers).properties(width=360, height=360, title="Agreement with the reference (ROC over heads)")


def curve_frame(curve) -> pd.DataFrame:
    """One row per point of the ranking's curve and of the random baseline: which, fraction, k, f, lo, hi."""
    rows = []
    for which, points in ((f"{curve.ranking} ranking", curve.points),
                          (f"random ({curve.baseline.orders} orders)" if curve.baseline else "", curve.baseline.points if curve.baseline else ())):
        rows += [{"which": which, "fraction": p.fraction, "percent": p.fraction * 100, "k": p.k, "f": p.f,
                  "lo": p.interval.lo, "hi": p.interval.hi} for p in points]
    return pd.DataFrame(rows)


def faithfulness_curve_chart(curve) -> alt.Chart:
    """f = (F(top k) − F(∅)) / (F(M) − F(∅)) against the share of heads kept (log x, MIB's fractions), each
    point with its 95% band, the ranking's curve beside the random rankings' mean; f = 1 dashed."""
    frame = curve_frame(curve)
    x = alt.X("percent:Q", title=f"{curve.items} kept (% of {curve.n_items}, log scale)",
              scale=alt.Scale(type="log", domain=[0.1, 100]), axis=alt.Axis(values=[0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]))
    color = alt.Color("which:N", title=None, legend=alt.Legend(orient="bottom"),
                      scale=alt.Scale(range=["#1f77b4", "#888888"]))
    base = alt.Chart(frame).encode(x=x, color=color)
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q", title="f = (F(C) − F(∅)) / (F(M) − F(∅))"), y2="hi:Q")
    line = base.mark_line(point=True, strokeWidth=2).encode(
        y="f:Q", tooltip=["which", alt.Tooltip("percent:Q", title="% kept"), "k", alt.Tooltip("f:Q", format=".3f"),
                          alt.Tooltip("lo:Q", format=".3f", title="95% lo"), alt.Tooltip("hi:Q", format=".3f", title="95% hi")])
    one = alt.Chart(pd.DataFrame({"f": [1.0]})).mark_rule(color="#888", strokeDash=[6, 4]).encode(y="f:Q")
    return alt.layer(band, line, one).properties(width=560, height=340, title="Faithfulness as the circuit grows")


def curve_caption(curve) -> str:
    """CPR and CMD with their 95% intervals, the baseline's, and how the curve was made (under the chart)."""
    iv = lambda a: f"{a.value:.3f} [{a.interval.lo:.3f}, {a.interval.hi:.3f}]"
    text = f"CPR (area under f, higher is better) {iv(curve.cpr)}; CMD (area between f and 1, lower is better) {iv(curve.cmd)}"
    if curve.baseline:
        text += (f". Random rankings (mean of {curve.baseline.orders}): CPR {iv(curve.baseline.cpr)}, "
                 f"CMD {iv(curve.baseline.cmd)}; CPR − random CPR {iv(curve.cpr_minus_baseline)} (paired)")
    text += (f". MIB's rule: k = int(fraction × {curve.n_items}), trapezoids over the linear fraction axis. "
             f"Ranking: {curve.ranking_note}. Heads kept: {curve.positions}. 95% intervals: {curve.interval_method}.")
    if curve.undefined:
        text += f" f is not a number here: {curve.undefined}."
    return text
