"""The editor's edges: every candidate edge listed with its path-patching effect; removing one is an edit
that Undo takes back."""
from circuit_core.circuit import LOGITS


def test_the_edge_list_removes_an_edge_as_an_edit_and_undo_brings_it_back(dash):
    at = dash.open("pages/1_Circuit_editor.py")
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    job = dash.job(at, "edges")
    assert job.wait(240) and job.error is None, job.error
    at.run()
    effects = job.result
    history = dash.history(at)
    assert history.current.edges is None  # the demo circuit lists no edges: every edge kept
    candidates = history.current.all_edges()
    assert {e.edge for e in effects.edges} == set(candidates)
    assert all(e.interval.known for e in effects.edges if e.effect == e.effect)  # every effect has its interval
    listed = at.multiselect(key="edge-list-0")
    assert len(listed.value) == len(candidates)
    gone = next(e for e in candidates if e.receiver == LOGITS)
    listed.set_value([label for label in listed.value if label != gone.label()]).run()
    assert not at.exception and not at.error
    assert history.current.edges is not None and gone not in history.current.edges
    assert len(history.current.edges) == len(candidates) - 1
    assert dash.job(at, "edges") is job  # keeping or removing edges reuses the effects
    next(b for b in at.button if b.label.startswith("↶")).click().run()
    assert history.current.edges is None


def test_the_diagram_draws_removed_edges_apart_and_every_effect_with_its_interval():
    from circuit_core.circuit import load_circuit
    from circuit_core.editing import toggle_edge
    from circuit_core.evidence import EdgeEffect, EdgeEffects
    from circuit_core.intervals import Interval
    from ui.diagram import edge_diagram, edge_frame

    circuit = load_circuit("data/circuits/ioi-demo.json")
    gone = circuit.all_edges()[0]
    edited = toggle_edge(circuit, gone)
    frame = edge_frame(edited)
    assert len(frame) == len(circuit.all_edges()) and (frame.state == "removed").sum() == 1
    assert set(frame.shown) == {"not computed yet"}
    effects = EdgeEffects(tuple(EdgeEffect(e, 0.1 * i, Interval(0.1 * i - 0.05, 0.1 * i + 0.05), (), ())
                                for i, e in enumerate(circuit.all_edges())), 3.0, 0.5, 20)
    frame = edge_frame(edited, effects)
    row = frame[frame.edge == gone.label()].iloc[0]
    assert row.state == "removed" and row.shown == "0.000 [-0.050, 0.050]" and row.sign == "interval includes 0"
    assert (frame[frame.kept].sign == "helps the task").all()
    spec = edge_diagram(edited, effects).to_dict()
    assert spec["layer"][0]["encoding"]["strokeDash"]["value"] == [5, 4]  # removed: dashed (kept: solid)


def test_a_circuit_with_an_edge_list_shows_what_removing_each_edge_does_with_its_interval(dash):
    """The demo's edge preset: the editor lists, for each kept edge, F(C) − F(C without it) with its 95% interval,
    the figures criteria.edge_effects gives."""
    from circuit_core.criteria import edge_effects as removal_effects
    from ui.state import get_evaluator

    at = dash.open("pages/1_Circuit_editor.py", dash.view(circuit_from="preset: ioi-demo-edges", n=40))
    assert not at.exception and not at.error, at.exception or [e.value for e in at.error]
    job = dash.job(at, "edge-removal")
    assert job.wait(240) and job.error is None, job.error
    at.run()
    circuit = dash.history(at, "preset: ioi-demo-edges").current
    table = next(d.value for d in at.dataframe if "F(C) − F(C without it)" in d.value.columns)
    assert list(table.edge) == [e.label() for e in circuit.edges]
    want = removal_effects(get_evaluator("demo", job.key[2]), circuit)
    for text, e, lo, hi in zip(table["F(C) − F(C without it)"], want.effect, want.ci_low, want.ci_high):
        assert text == f"{e:+.3f} [{lo:+.3f}, {hi:+.3f}]"
