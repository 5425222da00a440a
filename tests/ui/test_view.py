"""The page's address as a value: View.from_query / to_query, and the Session's methods, without Streamlit."""
import pytest

from circuit_core.ablation import Methodology
from circuit_core.circuit import Circuit, CircuitError, load_circuit
from circuit_core.editing import remove_head
from ui.session import MAX_UPLOADS, Session, W
from ui.view import FOLDER, HUB, MODEL_CHOICES, ModelRef, View

DEMO_CIRCUIT = "data/circuits/ioi-demo.json"


@pytest.mark.parametrize("view", [
    View(),
    View(ModelRef("demo"), Methodology(task="ioi", n=60, seed=3, mode="ABBA", ref_per_group=10, ref_replicates=0,
                                       ablation="resample", positions="all"), "preset: ioi-demo", "c1.abc"),
    View(ModelRef(FOLDER, "/home/me/models/my gpt2"), Methodology(task="colored-objects"), "saved: mine"),
    View(ModelRef(HUB, "EleutherAI/pythia-160m"), Methodology(task="acronyms", n=200)),
])
def test_a_view_survives_its_address(view):
    back, bad = View.from_query(view.to_query())
    assert back == view and not bad


def test_a_served_address_never_holds_or_reads_a_path():
    view = View(ModelRef(FOLDER, "/srv/models/secret"))
    assert "folder" not in view.to_query(serving=True)
    assert all("/srv" not in v for v in view.to_query(serving=True).values())
    labels = ["demo", "lab model"]
    served, bad = View.from_query({"folder": "/srv/models/secret", "model": "lab model"}, labels, serving=True)
    assert served.model == ModelRef("lab model") and not bad
    served, bad = View.from_query({"model": "gpt2-large"}, labels, serving=True)  # not offered: the first label
    assert served.model == ModelRef("demo") and bad == ["model=gpt2-large"]


def test_a_link_names_a_hub_model_but_never_a_path_as_one(tmp_path):
    assert View.from_query({"model": "gpt2-large"})[0].model == ModelRef(HUB, "gpt2-large")
    for path in (str(tmp_path), "../../etc", "/etc/passwd"):
        view, bad = View.from_query({"model": path})
        assert view.model == ModelRef(MODEL_CHOICES[0]) and bad


def test_out_of_range_settings_are_named_and_left_at_their_defaults():
    view, bad = View.from_query({"n": "5", "seed": "x", "ablation": "mean", "task": "acronyms", "mode": "ABBA"})
    assert view.methodology == Methodology(task="acronyms", ablation="mean")
    assert sorted(bad) == ["mode=ABBA", "n=5", "seed=x"]


def test_the_session_keeps_one_history_per_model_and_entry_and_counts_edits():
    s, c = Session(), load_circuit(DEMO_CIRCUIT)
    h = s.history("demo", "preset: ioi-demo", c)
    assert s.history("demo", "preset: ioi-demo", remove_head(c, c.heads[0])) is h  # loaded once
    assert s.history("/models/x", "preset: ioi-demo", c) is not h
    key = ("demo", "preset: ioi-demo")
    s.push_edit(key, remove_head(c, c.heads[0]), figures_before="F0")
    assert s.edits_of(key).version == 1 and s.edits_of(key).before_edit == "F0"
    s.undo(key, "F1")
    assert h.current.to_dict() == c.to_dict() and s.edits_of(key).version == 2
    s.redo(key)
    assert h.current.heads == c.heads[1:]


def test_uploads_keep_their_entries_and_are_bounded():
    s, c = Session(), load_circuit(DEMO_CIRCUIT)
    first = s.upload("uploaded", "mine.json", c)
    assert first == "uploaded: mine" and s.upload("uploaded", "again.json", c) == first  # same content
    assert s.upload("uploaded", "mine.json", remove_head(c, c.heads[0])) == "uploaded: mine (2)"
    for i in range(MAX_UPLOADS - 2):
        s.upload("uploaded", f"u{i}.json", Circuit.from_dict({**c.to_dict(), "notes": str(i)}))
    with pytest.raises(CircuitError, match="uploaded circuits already"):
        s.upload("uploaded", "one too many.json", Circuit.from_dict({**c.to_dict(), "notes": "new"}))


def test_a_reopened_record_asks_for_its_model_methodology_and_circuit():
    s, c = Session(), load_circuit(DEMO_CIRCUIT)
    meth = Methodology(n=60, seed=3, ablation="zero")
    s.open_record({"methodology": meth.to_dict(), "circuit": c.to_dict(), "model": {"name": "demo"}}, MODEL_CHOICES)
    wanted = s._requested
    assert wanted[W.MODEL] == "demo" and wanted[W.CIRCUIT] == f"reopened: {c.name}"
    assert {f: wanted[f] for f in ("n", "seed", "ablation")} == {"n": 60, "seed": 3, "ablation": "zero"}
    with pytest.raises(CircuitError):
        s.open_record({"methodology": 3}, MODEL_CHOICES)
