"""A report of one circuit under one methodology, to take into a lab meeting.

`build_report` computes what the pages show (faithfulness, completeness for K = ∅ and each class plus
random sets, minimality, the random-circuit baseline); `to_html` renders it as one self-contained
HTML file (charts as inline SVG drawn by vl-convert, the run record embedded: it opens with the
network off); `to_bundle` gives Markdown with SVG and PNG figures and the record, zipped, for slides.
The figures are formatted by `ui.format`, as on screen. No Streamlit here.
"""
from __future__ import annotations

import base64
import html
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from circuit_core.completeness import Cols as CC
from circuit_core.criteria import Faithfulness, undefined_reason
from circuit_core.minimality import Cols as MC
from circuit_core.validate import ValidationSpec
from ui import format as fmt
from ui.charts import baseline_histogram, by_group, completeness_scatter, distribution, minimality_bars, style
from ui.diagram import circuit_diagram


@dataclass
class Report:
    circuit: object  # Circuit
    model: dict  # LoadedModel.describe()
    caption: str  # the methodology in one line
    faithfulness: Faithfulness
    completeness: object | None = None  # Completeness
    minimality: object | None = None  # Minimality
    baseline: object | None = None  # Baseline
    group_table: pd.DataFrame | None = None  # breakdown_by_group
    worst: pd.DataFrame | None = None  # worst_prompts
    record: dict = field(default_factory=dict)  # the run record (circuit_core.report.run_record)
    verdicts: dict = field(default_factory=dict)  # circuit_core.verdicts.verdict_summary
    evidence: object | None = None  # circuit_core.evidence.CircuitEvidence (`with_evidence`)

    @property
    def title(self) -> str:
        return f"Circuit '{self.circuit.name}' on {model_title(self.model)}"


def model_title(model: dict) -> str:
    """The model's name for titles: a folder's last component, never its path (a served dashboard must
    not show where its models live)."""
    name = str(model.get("name") or "the model")
    return (Path(name).name or name) if model.get("source") == "folder" else name


REPORT_BASELINE = 50  # random circuits in the report's histogram


def build_report(ev, circuit, caption: str, n_baseline: int = REPORT_BASELINE, progress=None, should_stop=None,
                 spec: ValidationSpec | None = None) -> Report:
    """Every criterion the report shows, on the evaluator `ev` (memoised sets are not recomputed): `validate`
    with its defaults and the random-circuit baseline (the formal tests have a job of their own on the page)."""
    from circuit_core.criteria import breakdown_by_group, worst_prompts
    from circuit_core.validate import validate

    spec = spec or ValidationSpec(n_baseline=n_baseline)
    v = validate(ev, circuit, spec, progress=progress, should_stop=should_stop)
    f = v.faithfulness
    groups = breakdown_by_group(ev.dataset, f.per_prompt, ev.methodology.bootstrap, ev.methodology.seed, f.replicates)
    return Report(circuit, ev.model.describe(), caption, f, v.completeness, v.minimality, v.baseline, groups,
                  worst_prompts(ev.dataset, f.per_prompt), v.record(), v.verdicts)


def _task(r: Report):
    from circuit_core.tasks import get_task

    return get_task(r.record.get("methodology", {}).get("task", "ioi"))


def _task_metric(r: Report) -> str:
    return _task(r).metric


def figures(r: Report) -> dict[str, alt.Chart]:
    """The report's charts, by file stem, in reading order."""
    out = {"circuit": circuit_diagram(r.circuit, r.model.get("n_layers")),
           "per_prompt": distribution(r.faithfulness.per_prompt, _task_metric(r))}
    if r.group_table is not None:
        out["by_group"] = by_group(r.group_table, _task(r).group_label[0])
    if r.baseline is not None and not undefined_reason(r.faithfulness, "ratio"):  # F/F(M) needs a defined F(M)
        out["baseline"] = baseline_histogram(r.baseline.F_random, r.baseline.F_circuit, r.baseline.F_model)
    if r.completeness is not None:
        out["completeness"] = completeness_scatter(r.completeness.table)
    if r.minimality is not None:
        out["minimality"] = minimality_bars(r.minimality.table, r.circuit, r.minimality.threshold_pct)
    return {k: style(v.properties(width=760)) for k, v in out.items()}


def svg(chart: alt.Chart) -> str:
    import vl_convert as vlc

    return vlc.vegalite_to_svg(chart.to_json())


def png(chart: alt.Chart, scale: float = 2.0) -> bytes:
    import vl_convert as vlc

    return vlc.vegalite_to_png(chart.to_json(), scale=scale)


# --- the tables, as text both renderings share ---------------------------------------------------------
def headline_rows(r: Report) -> list[tuple[str, str, str]]:
    f = r.faithfulness
    return [("F(M), model", fmt.num(f.F_model), fmt.ci(f, "F_model")),
            ("F(C), circuit", fmt.num(f.F_circuit), fmt.ci(f, "F_circuit")),
            ("F(∅), every head ablated", fmt.num(f.F_empty), fmt.ci(f, "F_empty")),
            ("Faithfulness F(C)/F(M)", *_ratio(f, "ratio")),
            (f"Median of f_C / f_M over prompts with f_M > τ = {f.median_of_ratios_tau:.3f} "
             f"({f.median_of_ratios_excluded} prompts excluded)", *_ratio(f, "median_of_ratios")),
            ("Normalised (F(C)−F(∅))/(F(M)−F(∅))", *_ratio(f, "normalized"))]


def _ratio(f: Faithfulness, key: str) -> tuple[str, str]:
    """(value, interval) in percent, or ("undefined", why): a ratio that is not a number shows no number."""
    why = undefined_reason(f, key)
    return ("undefined", why) if why else (fmt.pct(getattr(f, key)), fmt.ci(f, key, percent=True))


def membership_rows(r: Report) -> list[tuple[str, str, str]]:
    return [(c.name, c.position, ", ".join(f"{l}.{h}" for l, h in c.heads)) for c in r.circuit.classes]


def completeness_rows(r: Report, k: int = 10) -> list[tuple[str, ...]]:
    t = r.completeness.table.sort_values(CC.INCOMPLETENESS, ascending=False).head(k)
    return [(row[CC.NAME], ", ".join(row[CC.K]) or "∅", fmt.num(row[CC.F_C_MINUS_K]), fmt.num(row[CC.F_M_MINUS_K]),
             fmt.num(row[CC.INCOMPLETENESS]), f"[{fmt.num(row[CC.CI_LOW])}, {fmt.num(row[CC.CI_HIGH])}]",
             f"{row[CC.INCOMPLETENESS_PCT]:.1f}%", row[CC.VERDICT]) for row in t.to_dict("records")]


def minimality_rows(r: Report) -> list[tuple[str, ...]]:
    t = r.minimality.table.sort_values(MC.PCT_OF_F_M, ascending=False)
    return [(row[MC.HEAD], row[MC.CLASS], f"{row[MC.PCT_OF_F_M]:.1f}%",
             f"[{row[MC.CI_LOW_PCT]:.1f}, {row[MC.CI_HIGH_PCT]:.1f}]%", row[MC.VERDICT]) for row in t.to_dict("records")]


def worst_rows(r: Report) -> list[tuple[str, ...]]:
    return [(row.prompt, fmt.num(row.f_M), fmt.num(row.f_C)) for row in r.worst.itertuples()]


FORMAL_TEST_HEADER = ("test", "null hypothesis", "statistic", "p-value", "verdict", "for the circuit")


def formal_test_rows(tests) -> list[tuple[str, ...]]:
    """One row per formal test (circuit_core.formal_tests.FormalTest): its null, statistic, p-value and verdict."""
    return [(t.name, t.null, f"{t.statistic_name} = {t.statistic:.3g}", f"{t.p_value:.3g}",
             f"{t.verdict} at α = {t.alpha:g}", t.meaning) for t in tests]


def summary_lines(r: Report) -> list[str]:
    f = r.faithfulness
    value, ci = _ratio(f, "ratio")
    lines = [f"Faithfulness: the circuit keeps {value} ({ci}) of the model's logit difference F(M) = {fmt.num(f.F_model)}."
             if value != "undefined" else
             f"Faithfulness: F(C)/F(M) is undefined ({ci}); F(C) = {fmt.num(f.F_circuit)}, F(M) = {fmt.num(f.F_model)}."]
    if r.completeness is not None:
        top = r.completeness.table.sort_values(CC.INCOMPLETENESS, ascending=False).iloc[0]
        lines.append(f"Completeness {r.completeness.verdict.value} (every K within "
                     f"±{r.completeness.tolerance_pct:g}% of F(M)?): the largest "
                     f"|F(C\\K) − F(M\\K)| is {fmt.num(top[CC.INCOMPLETENESS])} "
                     f"({top[CC.INCOMPLETENESS_PCT]:.1f}% of F(M)) for K = {', '.join(top[CC.K]) or '∅'} ({top[CC.NAME]}).")
    if r.minimality is not None:
        flagged, undecided = r.minimality.flagged, r.minimality.undecided
        lines.append(f"Minimality {r.minimality.verdict.value}: {len(flagged)} of {len(r.minimality.table)} heads fail "
                     f"(whole interval under {r.minimality.threshold_pct:g}% of F(M))"
                     + (f" ({', '.join(flagged)})" if flagged else "") + f", {len(undecided)} undecided"
                     + (f" ({', '.join(undecided)})." if undecided else "."))
    if r.baseline is not None:
        b = r.baseline
        lines.append(f"Baseline: {b.share_at_least_as_good:.0%} of {len(b.F_random)} random circuits of the same "
                     "shape are at least as faithful.")
    if r.verdicts.get("faithfulness"):  # decided by the gap's interval (circuit_core.verdicts)
        lines[0] = lines[0].replace("Faithfulness:", f"Faithfulness {r.verdicts['faithfulness']['verdict']} "
                                    f"({r.verdicts['faithfulness']['rule']}):", 1)
    lines.append(f"Intervals: 95%, {f.interval_method or 'paired bootstrap over prompts'}.")
    return lines


# --- HTML --------------------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; line-height: 1.45; }
h1 { font-size: 1.8em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; font-size: .95em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .caption { color: #555; font-size: .92em; } figure { margin: 1em 0; }
"""


def _table(header: tuple[str, ...], rows) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def to_html(r: Report) -> str:
    """One file, no network: inline SVG charts, the record embedded (and downloadable from the page)."""
    figs = {k: svg(v) for k, v in figures(r).items()}
    e = html.escape
    record = json.dumps(r.record, allow_nan=True)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(r.title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{e(r.title)}</h1><p class='caption'>{e(r.caption)}</p>",
             "<ul>" + "".join(f"<li>{e(s)}</li>" for s in summary_lines(r)) + "</ul>",
             "<h2>The circuit</h2>", f"<figure>{figs['circuit']}</figure>",
             _table(("class", "position", "heads"), membership_rows(r)),
             "<h2>Methodology</h2>", _table(("choice", "value"), [(k, v) for k, v in r.record.get("methodology", {}).items()]),
             "<h2>Faithfulness</h2>", _table(("figure", "value", "95% interval"), headline_rows(r)),
             f"<figure>{figs['per_prompt']}</figure>"]
    quartiles = r.faithfulness.quartiles()
    if quartiles:
        parts.append(_table(("run", "25%", "median", "75%"),
                            [(run, *map(fmt.num, q)) for run, *q in quartiles]))
    if "by_group" in figs:
        parts.append(f"<figure>{figs['by_group']}</figure>")
    if r.worst is not None:
        parts += ["<h3>Worst prompts</h3>", _table(("prompt", "f_M", "f_C"), worst_rows(r))]
    if "baseline" in figs:
        parts += ["<h3>Against random circuits of the same shape</h3>", f"<figure>{figs['baseline']}</figure>"]
    if r.completeness is not None:
        parts += ["<h2>Completeness</h2>", f"<figure>{figs['completeness']}</figure>",
                  _table(("K", "members", "F(C\\K)", "F(M\\K)", "|difference|", "95% interval", "% of F(M)", "verdict"),
                         completeness_rows(r)),
                  f"<p class='caption'>Intervals: {e(r.completeness.interval_method)}.</p>"]
    if r.minimality is not None:
        parts += ["<h2>Minimality</h2>", f"<figure>{figs['minimality']}</figure>",
                  _table(("head", "class", "score (% of F(M))", "95% interval", "verdict"), minimality_rows(r))]
    parts += evidence_html(r)
    b64 = base64.b64encode(record.encode()).decode()
    parts += ["<h2>Run record</h2><p>Everything needed to recompute these figures (schema in the project's README): "
              f"<a download='run-record.json' href='data:application/json;base64,{b64}'>run-record.json</a>.</p>",
              f"<script type='application/json' id='run-record'>{e(record)}</script></body></html>"]
    return "".join(parts)


def to_markdown(r: Report, figure_dir: str = "figures") -> str:
    md = lambda header, rows: "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] +
                                        ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows])
    out = [f"# {r.title}", "", f"_{r.caption}_", ""] + [f"- {s}" for s in summary_lines(r)]
    out += ["", "## The circuit", f"![circuit]({figure_dir}/circuit.svg)", "", md(("class", "position", "heads"), membership_rows(r)),
            "", "## Faithfulness", md(("figure", "value", "95% interval"), headline_rows(r)), "",
            f"![per-prompt]({figure_dir}/per_prompt.svg)"]
    for name in ("by_group", "baseline", "completeness", "minimality"):
        if name in figures_names(r):
            out += ["", f"![{name}]({figure_dir}/{name}.svg)"]
    out += evidence_markdown(r, figure_dir)
    return "\n".join(out) + "\n"


def figures_names(r: Report) -> list[str]:
    names = ["circuit", "per_prompt"]
    names += ["by_group"] if r.group_table is not None else []
    names += ["baseline"] if r.baseline is not None else []
    names += ["completeness"] if r.completeness is not None else []
    names += ["minimality"] if r.minimality is not None else []
    return names


def to_bundle(r: Report) -> bytes:
    """A zip: report.md, figures/*.svg and *.png (for slides), run-record.json."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report.md", to_markdown(r))
        for name, chart in {**figures(r), **evidence_figures(r)}.items():
            z.writestr(f"figures/{name}.svg", svg(chart))
            z.writestr(f"figures/{name}.png", png(chart))
        z.writestr("run-record.json", json.dumps(r.record, indent=1, allow_nan=True))
    return buf.getvalue()


# --- the evidence for each class and the edges (circuit_core.evidence) ----------------------------------------
def with_evidence(r: Report, evidence) -> Report:
    """The report with each class's evidence, also in its run record (results.evidence)."""
    import dataclasses

    record = {**r.record, "results": {**r.record.get("results", {}), "evidence": evidence.to_dict()}}
    return dataclasses.replace(r, evidence=evidence, record=record)


def evidence_figures(r: Report) -> dict[str, alt.Chart]:
    """The edge diagram with effects, then one figure per class, by file stem (none without evidence)."""
    from ui.diagram import edge_diagram
    from ui.evidence_charts import class_evidence_chart

    ev = r.evidence
    if ev is None:
        return {}
    out = {}
    if ev.edges is not None:
        out["edges"] = style(edge_diagram(r.circuit, ev.edges, None, r.model.get("n_layers")).properties(width=760))
    for i, ce in enumerate(ev.classes):
        if ce.heads:
            out[f"evidence_{i + 1}"] = style(class_evidence_chart(ce, ev))
    return out


def evidence_lines(r: Report) -> list[str]:
    """What the evidence figures rest on, in words (shared by the HTML, the Markdown and the page)."""
    ev = r.evidence
    lines = [f"Attention: probability from each named position (query) to each (key), per head: the mean over "
             f"{ev.n_prompts} prompts with a 95% bootstrap interval over prompts (in the tooltip), and prompts "
             + ", ".join(f"{i} ({t!r})" for i, t in zip(ev.prompts, ev.prompt_texts)) + " one by one."]
    if ev.settings.get("copy_scores", True):
        lines.append(f"Copy scores (Wang et al. 2022, §3.3): the share of {ev.n_tokens} name tokens whose embedding after "
                     f"layer 0's MLP, through the head's OV circuit (or its negative), the final norm and the "
                     f"unembedding, lands in the top {ev.settings.get('copy_k', 5)} logits; 95% Wilson interval over names.")
    else:
        lines.append("Copy scores: not available for this architecture (blocks.py does not describe it).")
    lines.append(f"Previous-token, duplicate-token and induction scores on {ev.n_sequences} sequences of repeated "
                 "random tokens; 95% bootstrap interval over sequences.")
    if ev.edges is not None:
        e = ev.edges
        lines.append(f"Edges: the share of F(clean) − F(corrupted) = {fmt.num(e.F_clean)} − {fmt.num(e.F_corrupted)} "
                     f"lost when the sender's heads, patched together from the corrupted twin (every other head "
                     f"frozen), reach only the receiver's input ({e.method}); {e.n} prompt pairs, 95% "
                     f"{e.interval_method}. Dashed grey edges are not in the circuit.")
    return lines


def edge_rows(r: Report) -> list[tuple[str, ...]]:
    kept = set(r.circuit.edges) if r.circuit.edges is not None else set(r.circuit.all_edges())
    return [(e.edge.label(), "kept" if e.edge in kept else "removed",
             "no path" if e.effect != e.effect else fmt.num(e.effect),
             "" if e.effect != e.effect else f"[{fmt.num(e.interval.lo)}, {fmt.num(e.interval.hi)}]")
            for e in r.evidence.edges.edges]


def evidence_html(r: Report) -> list[str]:
    if r.evidence is None:
        return []
    e = html.escape
    figs = {k: svg(v) for k, v in evidence_figures(r).items()}
    parts = ["<h2>Evidence for each class</h2>"] + [f"<p class='caption'>{e(s)}</p>" for s in evidence_lines(r)]
    if "edges" in figs:
        parts += ["<h3>Edges</h3>", f"<figure>{figs['edges']}</figure>",
                  _table(("edge", "in the circuit", "effect", "95% interval"), edge_rows(r))]
    for i, ce in enumerate(r.evidence.classes):
        if f"evidence_{i + 1}" in figs:
            parts += [f"<h3>{e(ce.name)}</h3>", f"<figure>{figs[f'evidence_{i + 1}']}</figure>"]
    return parts


def evidence_markdown(r: Report, figure_dir: str) -> list[str]:
    if r.evidence is None:
        return []
    out = ["", "## Evidence for each class"] + [f"- {s}" for s in evidence_lines(r)]
    return out + [f"\n![{name}]({figure_dir}/{name}.svg)" for name in evidence_figures(r)]
