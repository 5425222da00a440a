"""The Report page and its HTML carry each class's evidence and the edge diagram with effects."""
import json

from circuit_core.evidence import CircuitEvidence
from ui.report import to_html, to_markdown, with_evidence


def test_the_report_shows_and_exports_the_evidence_for_each_class(dash):
    at = dash.open("pages/6_Report.py")
    at = dash.finish_jobs(at)  # the report, then the evidence job it starts
    at = dash.finish_jobs(at)
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    assert any(h.value == "Evidence for each class" for h in at.subheader)
    assert any("Copy scores (Wang et al. 2022" in c.value for c in at.caption)
    report, evidence = dash.job(at, "report").result, dash.job(at, "evidence").result
    assert evidence.prompts == (0, 1, 2) and evidence.edges is not None
    full = with_evidence(report, evidence)
    page = to_html(full)
    assert "<h2>Evidence for each class</h2>" in page and "<h3>Edges</h3>" in page
    for c in report.circuit.classes:
        assert f"<h3>{c.name}</h3>" in page
    assert CircuitEvidence.from_dict(json.loads(json.dumps(full.record["results"]["evidence"]))) == evidence
    assert "evidence_1.svg" in to_markdown(full)
    # presentation mode steps through the edges and each class after the criteria
    dash.session(at).request(present=True)
    at.run()
    for _ in range(5):
        next(b for b in at.button if b.label.startswith("Next")).click().run()
    assert not at.exception and any(h.value == "Edges" for h in at.header)
    next(b for b in at.button if b.label.startswith("Next")).click().run()
    assert not at.exception and any(h.value.startswith("Evidence: ") for h in at.header)
