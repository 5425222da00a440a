"""The lab meeting: links that reproduce a view, the report, presentation mode, run history."""
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from circuit_core.ablation import Methodology
from circuit_core.circuit import load_circuit
from circuit_core.editing import remove_head
from circuit_core.evaluate import build_evaluator
from circuit_core.models import load_model

ROOT = Path(__file__).resolve().parents[2]
# A methodology unlike the defaults in every field the address carries.
VIEW = {"n": 60, "seed": 3, "mode": "ABBA", "ref_per_group": 10, "ref_replicates": 0, "ablation": "resample",
        "positions": "all"}


def metrics(at) -> dict:
    return {m.label: (m.value, m.delta) for m in at.metric} | {"captions": [c.value for c in at.caption]}


def test_a_link_reproduces_the_view_to_the_last_digit(dash):
    at = dash.open("pages/2_Faithfulness.py", dash.view(**VIEW))
    history = dash.history(at)
    history.push(remove_head(history.current, history.current.heads[-1]))
    at.run()
    assert not at.exception, at.exception
    params = dict(at.query_params)
    for name, value in [("n", "60"), ("seed", "3"), ("mode", "ABBA"), ("ref", "10"), ("reps", "0"),
                        ("ablation", "resample"), ("positions", "all"), ("task", "ioi"), ("model", "demo")]:
        assert params[name] == value, (name, params)

    fresh = dash.open("pages/2_Faithfulness.py", query=params)  # a new session: nothing but the address
    assert not fresh.exception and not fresh.error and not fresh.warning
    for key, value in VIEW.items():  # state -> URL -> state, every field
        assert getattr(dash.session(fresh).view.methodology, key) == value, key
    assert dash.history(fresh).current.to_dict() == history.current.to_dict()
    assert metrics(fresh) == metrics(at)  # every printed figure, interval and caption


@pytest.mark.parametrize("query, says", [({"n": "5"}, "n=5"), ({"seed": "-1"}, "seed=-1"),
                                         ({"ablation": "mean;drop"}, "ablation=mean;drop"),
                                         ({"ref": "٣"}, "ref=٣")])
def test_a_corrupted_link_gets_a_clear_message_and_the_defaults(dash, query, says):
    at = dash.open("dashboard.py", query={"model": "demo", **query})
    assert not at.exception and not at.error
    assert any(says in w.value and "left at their defaults" in w.value for w in at.sidebar.warning)
    assert dash.session(at).view.methodology.n == 100 or "n" not in query


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["n", "seed", "mode", "ref", "reps", "ablation", "positions", "task"]),
                       st.text(max_size=30), max_size=8))
def test_any_address_gives_a_methodology_or_a_message(query):
    from ui.view import View

    view, bad = View.from_query(query)
    used = view.to_query()
    refused = {b.split("=")[0] for b in bad}
    for name, text in query.items():  # each setting used as it is, or named as refused
        same = used[name] == text or (text.isascii() and text.isdigit() and int(used[name]) == int(text))
        assert same or name in refused, (name, text, bad)


def test_the_share_link_names_the_page_and_every_setting(dash):
    at = dash.open("pages/3_Completeness.py", dash.view(**VIEW))
    link = at.sidebar.code[0].value if at.sidebar.code else next(c.value for c in at.code)
    for part in ["n=60", "seed=3", "ref=10", "reps=0", "ablation=resample", "positions=all", "model=demo"]:
        assert part in link, (part, link)


@pytest.fixture(scope="module")
def report():
    from ui.report import build_report

    ev = build_evaluator(load_model("demo", device="cpu"), Methodology())
    return build_report(ev, load_circuit(ROOT / "data" / "circuits" / "ioi-demo.json"), "demo caption", n_baseline=20)


def test_the_html_report_is_self_contained_and_shows_every_figure(report):
    from ui.report import figures, to_html

    html = to_html(report)
    assert html.count("<svg") >= len(figures(report)) == 6  # circuit, per-prompt, groups, baseline, C, M
    # no network: nothing fetched from elsewhere (SVG namespaces are names, not fetches)
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", html)
    embedded = re.search(r"<script type='application/json' id='run-record'>(.*?)</script>", html, re.S).group(1)
    import html as h

    record = json.loads(h.unescape(embedded))
    assert record["results"]["faithfulness"]["ratio"] == report.faithfulness.ratio
    assert record["circuit"] == report.circuit.to_dict()


def test_the_report_opens_offline_in_a_browser(report, tmp_path):
    from scripts.browser import CHROMIUM, CHROMIUM_ARGS, chromium_available
    from ui.report import to_html

    if not chromium_available():
        pytest.skip("no Chromium on this machine")
    from playwright.sync_api import sync_playwright

    path = tmp_path / "report.html"
    path.write_text(to_html(report))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(offline=True).new_page()
        page.goto(path.as_uri())
        drawn = page.evaluate("[...document.querySelectorAll('figure svg')].map(s => s.getBBox().width)")
        browser.close()
    assert len(drawn) == 6 and all(w > 100 for w in drawn)


def test_the_bundle_has_markdown_figures_and_the_record(report):
    import io
    import zipfile

    from ui.report import to_bundle

    z = zipfile.ZipFile(io.BytesIO(to_bundle(report)))
    names = set(z.namelist())
    assert {"report.md", "run-record.json", "figures/completeness.svg", "figures/minimality.png"} <= names
    md = z.read("report.md").decode()
    for fig in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert fig in names


def test_the_report_page_shows_the_numbers_on_screen(dash):
    from ui.report import to_html

    home = dash.open("dashboard.py")
    on_screen = {m.label: m.value for m in home.metric}
    at = dash.open("pages/6_Report.py")
    for _ in range(60):  # the report is a background job
        job = dash.job(at, "report")
        if job.wait(2):
            break
    at.run()
    assert not at.exception, at.exception
    html = to_html(job.result)
    for label in ("Faithfulness F(C)/F(M)", "F(C) — circuit", "F(M) — model"):
        assert on_screen[label] in html, (label, on_screen[label])
    faith = next(m.value for m in at.metric if m.label.startswith("Faithfulness")) if at.metric else None
    assert faith is None or faith == on_screen["Faithfulness F(C)/F(M)"]
    assert on_screen["Faithfulness F(C)/F(M)"] in at.markdown[0].value  # the page's summary


def test_presentation_mode_steps_through_the_criteria(dash):
    at = dash.open("pages/6_Report.py")
    job = dash.job(at, "report")
    assert job.wait(120)
    at.toggle(key="present").set_value(True).run()
    seen = []
    for _ in range(5):
        seen.append(next(h.value for h in at.header if h.value in
                         ("The circuit", "Faithfulness", "Completeness", "Minimality", "Against random circuits")))
        nxt = next(b for b in at.button if b.label == "Next →")
        if nxt.disabled:
            break
        nxt.click().run()
    assert seen == ["The circuit", "Faithfulness", "Completeness", "Minimality", "Against random circuits"]
    assert not at.exception
    # the sidebar and its toggle are hidden on a projector: a button in the page leads out
    next(b for b in at.button if b.key == "present_exit").click().run()
    assert not at.exception and not at.toggle(key="present").value
    assert any(t.value == "Report" for t in at.title) and not any(b.label == "Next →" for b in at.button)


def test_runs_are_logged_pinned_saved_and_reopened(dash):
    at = dash.open("dashboard.py", dash.view(**VIEW))
    at.switch_page("pages/7_Runs.py").run()
    assert not at.exception, at.exception
    runs = dash.session(at).runs
    assert len(runs) == 1 and runs[0].kind == "faithfulness" and runs[0].methodology.n == 60
    assert at.dataframe or at.get("arrow_data_frame")  # the runs table

    # a saved record (the run-record schema, as the page's download writes it) reopens the same view
    from circuit_core.report import run_record

    circuit = remove_head(load_circuit(ROOT / "data" / "circuits" / "ioi-demo.json"), (1, 1))
    circuit.name = "edited demo"
    record = run_record(build_evaluator(load_model("demo", device="cpu"), runs[0].methodology), circuit,
                        {"faithfulness": runs[0].result})
    other = dash.open("pages/7_Runs.py")
    other.file_uploader(key="reopen").set_value(("run.json", json.dumps(record).encode(), "application/json")).run()
    next(b for b in other.button if b.label == "Open it").click().run()
    assert not other.exception and not other.error, other.error
    for key, value in VIEW.items():
        assert getattr(dash.session(other).view.methodology, key) == value, key
    assert dash.session(other).view.circuit_from == "reopened: edited demo"
    assert dash.history(other, "reopened: edited demo").current.to_dict() == circuit.to_dict()

    bad = dash.open("pages/7_Runs.py")
    bad.file_uploader(key="reopen").set_value(("run.json", b'{"methodology": 3}', "application/json")).run()
    next(b for b in bad.button if b.label == "Open it").click().run()
    assert not bad.exception and "not a run record" in bad.error[0].value


def test_an_eap_ig_graph_uploads_as_a_circuit(dash):
    from circuit_core.interchange import to_eap_graph

    demo = load_circuit(ROOT / "data" / "circuits" / "ioi-demo.json")
    graph = to_eap_graph(demo, {"n_layers": 4, "n_heads": 4}, keep_circuit=False)  # as EAP-IG writes it
    at = dash.open("dashboard.py")
    at.sidebar.file_uploader(key="upload").set_value(("found.json", json.dumps(graph).encode(), "application/json")).run()
    assert not at.exception and not at.error
    assert dash.session(at).view.circuit_from == "uploaded: found"
    got = dash.history(at, "uploaded: found").current
    assert sorted(got.heads) == sorted(demo.heads) and {c.position for c in got.classes} == {"END"}


def test_the_runs_page_reads_every_kind_of_run_as_its_typed_result(dash):
    at = dash.open("dashboard.py")
    for page in ("pages/3_Completeness.py", "pages/4_Minimality.py"):
        at = dash.finish_jobs(at.switch_page(page).run())
        assert at.title[0].value == page.split("_")[1].removesuffix(".py")  # the page itself was drawn
    at.switch_page("pages/7_Runs.py").run()
    assert not at.exception and not at.error
    kinds = {r.kind for r in dash.session(at).runs}
    assert {"faithfulness", "completeness", "minimality"} <= kinds
    shown = " ".join(str(v) for d in at.dataframe for v in d.value.get("result (95% CI)", []))
    assert "max |F(C\\K) − F(M\\K)|" in shown and "heads fail" in shown
