"""The faithfulness curve's chart and caption (ui/charts.py), from a hand-made result."""
from circuit_core import curves
from circuit_core.intervals import Interval
from ui.charts import curve_caption, curve_frame, faithfulness_curve_chart


def hand_made_curve():
    pts = lambda fs: tuple(curves.CurvePoint(p, curves.mib_k(p, 16), f, Interval(f - 0.05, f + 0.05))
                           for p, f in zip(curves.FRACTIONS, fs))
    area = lambda v: curves.Area(v, Interval(v - 0.02, v + 0.03))
    f = [0] * 6 + [0.3, 0.5, 0.8, 1.0]
    b = [0] * 6 + [0.05, 0.1, 0.4, 1.0]
    base = curves.Baseline(pts(b), area(float(curves.cpr(b))), area(float(curves.cmd(b))), 5, 0)
    return curves.Curve("attribution", "heads", 16, pts(f), area(float(curves.cpr(f))), area(float(curves.cmd(f))),
                        area(3.0), area(0.5), baseline=base, cpr_minus_baseline=area(0.1), ranking_note="by hand",
                        positions="every head at every position", interval_method="joint bootstrap")


def test_chart_has_both_curves_with_bands_and_the_caption_every_interval():
    c = hand_made_curve()
    frame = curve_frame(c)
    assert len(frame) == 20 and set(frame.which) == {"attribution ranking", "random (5 orders)"}
    spec = faithfulness_curve_chart(c).to_dict()
    assert spec["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"
    text = curve_caption(c)
    for a in (c.cpr, c.cmd, c.baseline.cpr, c.baseline.cmd):
        assert f"{a.value:.3f} [{a.interval.lo:.3f}, {a.interval.hi:.3f}]" in text


def test_report_page_draws_the_curve(dash):
    at = dash.open("pages/6_Report.py", dash.view(n=30, bootstrap=50, ref_replicates=2))
    at = dash.finish_jobs(dash.finish_jobs(at))  # the curve's job starts once the report is drawn
    assert not at.exception
    job = dash.job(at, "curve")
    assert job.result is not None and job.result.ranking == "attribution"
    assert any("CPR (area under f" in c.value for c in at.caption)
