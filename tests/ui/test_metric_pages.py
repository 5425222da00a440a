"""The metric on the pages: the sidebar's selectbox, the address, and labels that name the metric."""


def test_the_sidebar_metric_reaches_the_figures_and_the_address(dash):
    at = dash.open("dashboard.py", dash.view(n=20, ref_replicates=0))
    assert not at.exception
    before = next(m.value for m in at.metric if m.label.startswith("F(M)"))
    at.sidebar.selectbox(key="metric").set_value("kl").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert dash.session(at).view.methodology.metric == "kl"
    assert at.query_params["metric"] == ["kl"] or at.query_params["metric"] == "kl"
    assert next(m.value for m in at.metric if m.label.startswith("F(M)")) == "0.000" != before
    assert any("F = KL (nats)" in c.value for c in at.caption)  # the methodology line says so


def test_pages_under_kl_name_the_metric_and_the_scale(dash):
    view = dash.view(n=20, ref_replicates=0, metric="kl")
    at = dash.open("pages/2_Faithfulness.py", view)
    assert not at.exception and not at.error, [e.value for e in at.error]
    text = " ".join(m.value for m in at.markdown)
    assert "F(C)/F(M) is **undefined**" in text and "under KL" in text
    assert any("KL divergence" in c.value for c in at.caption)
    at = dash.open("pages/4_Minimality.py", view)
    assert not at.exception
    assert any(n.label == "Threshold (% of F(∅) − F(M))" for n in at.number_input)
    at = dash.open("pages/3_Completeness.py", view)
    assert not at.exception
    assert any(n.label == "Tolerance (% of F(∅) − F(M))" for n in at.number_input)
