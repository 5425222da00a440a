"""Charts of a class's evidence (circuit_core.evidence): attention between the task's positions, copy scores,
role scores and incoming edges, each figure with its 95% interval (in the tooltip or as error bars)."""
from __future__ import annotations

import altair as alt
import pandas as pd


def attention_frame(ce, evidence) -> pd.DataFrame:
    """head, query, key, shown ("mean over N prompts" or "prompt i"), value, and the text for the tooltip."""
    rows = []
    mean_label = f"mean over {evidence.n_prompts} prompts"
    for a in ce.attention:
        rows.append({"head": a.head, "query": a.query, "key": a.key, "shown": mean_label, "value": a.mean,
                     "text": f"{a.mean:.2f} [{a.interval.lo:.2f}, {a.interval.hi:.2f}] (95%)"})
        for i, v in zip(evidence.prompts, a.chosen):
            rows.append({"head": a.head, "query": a.query, "key": a.key, "shown": f"prompt {i}", "value": v,
                         "text": f"{v:.2f} on prompt {i}"})
    return pd.DataFrame(rows, columns=["head", "query", "key", "shown", "value", "text"])


def attention_chart(ce, evidence, roles: list[str] | None = None) -> alt.Chart:
    """Query role (rows) × key role (columns) per head (column facets) and per prompt shown (row facets: the
    mean over every prompt first). A key after its query is hidden by causal attention: 0."""
    df = attention_frame(ce, evidence)
    roles = roles or list(dict.fromkeys(df["query"]))
    shown = list(dict.fromkeys(df["shown"]))
    base = alt.Chart(df).encode(
        x=alt.X("key:N", sort=roles, title="to (key)"), y=alt.Y("query:N", sort=roles, title="from (query)"))
    cells = base.mark_rect().encode(
        color=alt.Color("value:Q", scale=alt.Scale(domain=[0, 1], scheme="blues"), title="attention"),
        tooltip=[alt.Tooltip("head:N"), alt.Tooltip("query:N", title="from"), alt.Tooltip("key:N", title="to"),
                 alt.Tooltip("text:N", title="probability")])
    text = base.mark_text(fontSize=10).encode(
        text=alt.Text("value:Q", format=".2f"),
        color=alt.condition("datum.value > 0.5", alt.value("white"), alt.value("black")))
    return alt.layer(cells, text).properties(width=34 * len(roles), height=22 * len(roles)).facet(
        column=alt.Column("head:N", title="head"),
        row=alt.Row("shown:N", sort=shown, title=None, header=alt.Header(labelAngle=0, labelAlign="left"))).properties(
        title=f"'{ce.name}': attention between the task's positions")


def _bars(df: pd.DataFrame, y: str, title: str, x_title: str, domain=None) -> alt.Chart:
    """Horizontal bars with 95% error bars: df has columns y, value, lo, hi, text (the tooltip)."""
    scale = alt.Scale(domain=domain) if domain else alt.Scale()
    base = alt.Chart(df).encode(y=alt.Y(f"{y}:N", title=None, sort=None, axis=alt.Axis(labelLimit=320)),
                                tooltip=[alt.Tooltip(f"{y}:N"), alt.Tooltip("text:N", title="value [95% interval]")])
    bars = base.mark_bar(opacity=0.75).encode(x=alt.X("value:Q", title=x_title, scale=scale))
    errs = base.mark_errorbar(ticks=True).encode(x=alt.X("lo:Q", title=x_title, scale=scale), x2="hi:Q")
    return alt.layer(bars, errs).properties(height=max(60, 18 * len(df)), width=360, title=title)


def copy_chart(ce) -> alt.Chart | None:
    if not ce.copy:
        return None
    df = pd.DataFrame([{"score": f"{c.head} {c.label}", "value": c.score, "lo": c.interval.lo, "hi": c.interval.hi,
                        "text": f"{c.copied}/{c.n_tokens} names in the top {c.k}: {c.score:.0%} "
                                f"[{c.interval.lo:.0%}, {c.interval.hi:.0%}] (Wilson)"} for c in ce.copy])
    return _bars(df, "score", f"'{ce.name}': OV copy scores (names in the top {ce.copy[0].k})",
                 "share of names (95% Wilson interval)", [0, 1])


def roles_chart(ce) -> alt.Chart | None:
    if not ce.roles:
        return None
    df = pd.DataFrame([{"score": f"{r.head} {r.metric}", "value": r.score, "lo": r.interval.lo, "hi": r.interval.hi,
                        "text": f"{r.score:.3f} [{r.interval.lo:.3f}, {r.interval.hi:.3f}]"} for r in ce.roles])
    return _bars(df, "score", f"'{ce.name}': attention scores on repeated random tokens",
                 "mean attention (95% bootstrap over sequences)", [0, 1])


def incoming_chart(ce) -> alt.Chart | None:
    edges = [e for e in ce.incoming if e.effect == e.effect]
    if not edges:
        return None
    df = pd.DataFrame([{"edge": e.edge.label(), "value": e.effect, "lo": e.interval.lo, "hi": e.interval.hi,
                        "text": f"{e.effect:.3f} [{e.interval.lo:.3f}, {e.interval.hi:.3f}]"} for e in edges])
    return _bars(df, "edge", f"'{ce.name}': incoming edges (path patching)",
                 "share of F(clean) − F(corrupted) (95% bootstrap over pairs)")


def class_evidence_chart(ce, evidence) -> alt.Chart:
    """Every figure of one class, stacked: attention, then copy, role and incoming-edge scores side by side."""
    small = [c for c in (copy_chart(ce), roles_chart(ce), incoming_chart(ce)) if c is not None]
    parts = [attention_chart(ce, evidence)] + ([alt.hconcat(*small)] if small else [])
    return alt.vconcat(*parts).properties(title=f"Evidence for '{ce.name}' ({', '.join(ce.heads)} at {ce.position})")
