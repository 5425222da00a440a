"""Report and presentation: every criterion of the current circuit in one file, or one per screen."""
import streamlit as st

from ui import format as fmt
from ui import jobs
from ui.report import _ratio, build_report, completeness_rows, figures, headline_rows, membership_rows, minimality_rows, \
    summary_lines, to_bundle, to_html
from ui.edges import evidence_job
from ui.report import edge_rows, evidence_figures, evidence_lines, with_evidence
from ui.sidebar import sidebar
from ui.state import circuit_json, methodology_caption, require_evaluator

ctx = sidebar()
ev = require_evaluator(ctx)
caption = methodology_caption(ctx)
circuit = ctx.circuit
key = ("report", ctx.model_key, ctx.methodology, circuit_json(circuit))
jobs.stop_others("report", key)
job = jobs.start(key, "Computing every criterion for the report",
                 lambda job: build_report(ev, circuit, caption, progress=job.progress, should_stop=job.should_stop))

present = st.toggle("Presentation mode", key="present",
                    help="Hides the controls, enlarges text and charts for a projector, one criterion per screen.")
if not present:
    st.title("Report")
    st.caption(caption)
report = jobs.show(job)
if report is None:
    st.stop()

EVIDENCE_PROMPTS = "evidence_prompts"
ev_job = evidence_job(ctx, circuit, ctx.session.widget(EVIDENCE_PROMPTS, "0, 1, 2"))
if not ev_job.running and ev_job.result is not None:
    report = with_evidence(report, ev_job.result)  # the downloads and the record carry it from here on

STEPS = ["The circuit", "Faithfulness", "Completeness", "Minimality", "Against random circuits"]
EVIDENCE_STEPS = ["Edges"] + [f"Evidence: {c.name}" for c in circuit.classes if c.heads]
STEPS = STEPS + EVIDENCE_STEPS


def show_evidence_step(i: int) -> None:
    """A slide of the edge diagram (i = 0) or of one class's evidence."""
    st.header(EVIDENCE_STEPS[i])
    if report.evidence is None:
        jobs.show(ev_job)
        return
    figs = evidence_figures(report)
    name = "edges" if i == 0 else f"evidence_{[c.name for c in circuit.classes].index(EVIDENCE_STEPS[i][10:]) + 1}"
    if name in figs:
        st.altair_chart(figs[name], width="stretch" if i == 0 else "content")
    st.caption(evidence_lines(report)[-1 if i == 0 else 0])


def show_step(i: int) -> None:
    if i >= len(STEPS) - len(EVIDENCE_STEPS):
        return show_evidence_step(i - (len(STEPS) - len(EVIDENCE_STEPS)))
    figs = {k: v.properties(height=330) for k, v in figures(report).items()}  # a slide: one screen high
    st.header(f"{STEPS[i]}")
    if i == 0:
        st.altair_chart(figs["circuit"], width="stretch")
        st.table({"class": [r[0] for r in membership_rows(report)], "position": [r[1] for r in membership_rows(report)],
                  "heads": [r[2] for r in membership_rows(report)]})
    elif i == 1:
        f = report.faithfulness
        cols = st.columns(3)
        value, interval = _ratio(f, "ratio")  # "undefined" and why, when F(M) is indistinguishable from 0
        cols[0].metric("Faithfulness F(C)/F(M)", value)
        cols[0].caption(interval)
        cols[1].metric("F(C) — circuit", fmt.num(f.F_circuit))
        cols[1].caption(fmt.ci(f, "F_circuit"))
        cols[2].metric("F(M) — model", fmt.num(f.F_model))
        cols[2].caption(fmt.ci(f, "F_model"))
        st.altair_chart(figs["per_prompt"], width="stretch")
    elif i == 2:
        st.altair_chart(figs["completeness"], width="stretch")
        st.markdown(summary_lines(report)[1])
    elif i == 3:
        st.altair_chart(figs["minimality"], width="stretch")
        st.markdown(summary_lines(report)[2])
    else:
        if "baseline" in figs:
            st.altair_chart(figs["baseline"], width="stretch")
        else:
            st.info("No F/F(M) histogram: " + _ratio(report.faithfulness, "ratio")[1])
        st.markdown(summary_lines(report)[3])
    st.caption(summary_lines(report)[-1] if present else summary_lines(report)[-1] + " " + caption)


if present:
    # Projector styling: no sidebar or toolbar, larger type; charts fill the width.
    st.markdown("""<style>
    [data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], header, [data-testid="stToolbar"] {display: none;}
    .block-container {padding-top: 1.5rem; max-width: 1400px;}
    html, body, [data-testid="stMarkdownContainer"] p, [data-testid="stCaptionContainer"] {font-size: 1.45rem !important;}
    h2 {font-size: 2.6rem !important;} [data-testid="stMetricValue"] {font-size: 3.4rem !important;}
    </style>""", unsafe_allow_html=True)
    step = min(ctx.session.present_step, len(STEPS) - 1)  # another circuit may have fewer classes
    # The buttons sit above the slide, so a step always opens at its top
    b1, b2, b3, b4 = st.columns([1.4, 5, 1.4, 1.6], vertical_alignment="center")
    if b1.button("← Back", disabled=step == 0, width="stretch"):
        ctx.session.present_step = step - 1
        st.rerun()
    b2.progress((step + 1) / len(STEPS), text=f"{step + 1} / {len(STEPS)}: {STEPS[step]}")
    if b3.button("Next →", disabled=step == len(STEPS) - 1, width="stretch"):
        ctx.session.present_step = step + 1
        st.rerun()
    # The sidebar and toolbar are hidden: without this, leaving took a reload (a callback, since the
    # toggle's state cannot change once it is drawn)
    b4.button("✕ Exit presentation", key="present_exit", width="stretch",
              on_click=lambda: ctx.session.request(present=False))
    show_step(step)
    st.stop()

st.markdown("\n".join(f"- {s}" for s in summary_lines(report)))
name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in circuit.name).strip("-") or "circuit"
c1, c2, c3 = st.columns(3)
c1.download_button("HTML report (opens offline)", lambda: to_html(report), file_name=f"{name}-report.html",
                   mime="text/html", type="primary", width="stretch")
c2.download_button("Markdown + SVG/PNG figures (zip)", lambda: to_bundle(report), file_name=f"{name}-report.zip",
                   mime="application/zip", width="stretch")
c3.download_button("Run record (JSON)", lambda: __import__("json").dumps(report.record, indent=1),
                   file_name=f"{name}-run.json", mime="application/json", width="stretch")
st.subheader("Faithfulness")
st.table({"figure": [r[0] for r in headline_rows(report)], "value": [r[1] for r in headline_rows(report)],
          "95% interval": [r[2] for r in headline_rows(report)]})
st.subheader("Worst K sets (completeness)")
rows = completeness_rows(report)
st.table({h: [r[i] for r in rows] for i, h in enumerate(("K", "members", "F(C\\K)", "F(M\\K)", "|difference|",
                                                          "95% interval", "% of F(M)", "verdict"))})
st.subheader("Minimality")
rows = minimality_rows(report)
st.table({h: [r[i] for r in rows] for i, h in enumerate(("head", "class", "score (% of F(M))", "95% interval", "verdict"))})


def show_formal_tests() -> None:
    """Shi et al.'s formal tests, in a job of their own once the report is done (it shares the evaluator's memo)."""
    from circuit_core.formal_tests import formal_tests
    from ui.report import FORMAL_TEST_HEADER, formal_test_rows

    key = ("formal-tests", ctx.model_key, ctx.methodology, circuit_json(circuit))
    jobs.stop_others("formal-tests", key)
    job = jobs.start(key, "Running the formal tests",
                     lambda job: formal_tests(ev, circuit, progress=job.progress, should_stop=job.should_stop))
    st.subheader("Formal tests (Shi et al. 2024)")
    st.caption("Each test states a null hypothesis; \"reject\" at α means the data speak against it. Minimality is "
               "Holm-corrected across heads; the tests hold the reference set fixed.")
    tests = jobs.show(job)
    if tests:
        rows = formal_test_rows(tests)
        st.table({h: [r[i] for r in rows] for i, h in enumerate(FORMAL_TEST_HEADER)})


def show_evidence() -> None:
    """The edge diagram and each class's evidence figures, from their own job."""
    st.subheader("Evidence for each class")
    st.text_input("Prompts shown one by one (indices)", "0, 1, 2", key=EVIDENCE_PROMPTS,
                  help="Up to 6 prompt indices; the attention means use every prompt pair of the evidence.")
    if report.evidence is None:
        jobs.show(ev_job)
        return
    for line in evidence_lines(report):
        st.caption(line)
    figs = evidence_figures(report)
    if "edges" in figs:
        st.altair_chart(figs["edges"], width="stretch")
        rows = edge_rows(report)
        st.table({h: [r[i] for r in rows] for i, h in enumerate(("edge", "in the circuit", "effect", "95% interval"))})
    for i, ce in enumerate(report.evidence.classes):
        if f"evidence_{i + 1}" in figs:
            with st.expander(f"{ce.name}: {', '.join(ce.heads)} at {ce.position}", expanded=i == 0):
                st.altair_chart(figs[f"evidence_{i + 1}"], width="content")


show_evidence()
show_formal_tests()
