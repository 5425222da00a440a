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
