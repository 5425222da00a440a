"""Circuit files: the shipped presets, round trips, and malformed input with clear messages."""
import json

import pytest

from circuit_core.circuit import Circuit, CircuitError, load_circuit
from circuit_core.tasks.ioi import ROLES

PAPER = "data/circuits/ioi-gpt2-small.json"
NAIVE = "data/circuits/ioi-gpt2-small-naive.json"


def test_paper_circuit():
    c = load_circuit(PAPER)
    assert len(c.heads) == 26 and len(c.classes) == 7
    pos = {cl.name: cl.position for cl in c.classes}
    assert pos["name mover"] == "END" and pos["induction"] == "S2" and pos["previous token"] == "S1+1"
    c.validate(12, 12, ROLES)
    assert set(c.minimality_k) == set(c.heads)  # the paper gives a K for every head
    assert c.minimality_k[(10, 0)] == [(9, 9)] and c.minimality_k[(9, 9)] == []
    assert c.minimality_k[(10, 6)] == [(9, 9), (10, 0), (9, 6), (10, 10)]


def test_naive_circuit():
    c = load_circuit(NAIVE)
    assert len(c.heads) == 13
    assert {(10, 10), (10, 7), (11, 10)}.isdisjoint(c.heads)


def test_round_trip(tmp_path):
    c = load_circuit(PAPER)
    c.save(tmp_path / "c.json")
    again = load_circuit(tmp_path / "c.json")
    assert again.to_dict() == c.to_dict()


def write(tmp_path, obj):
    p = tmp_path / "bad.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


GOOD = {"name": "x", "classes": [{"name": "a", "position": "END", "heads": ["1.2", "0.1"]}]}


@pytest.mark.parametrize("obj,message", [
    ("{not json", "not valid JSON"),
    ([1, 2], "JSON object"),
    ({"name": "x"}, "'classes'"),
    ({"name": "x", "classes": [{"name": "a", "heads": ["1.2"]}]}, "no 'position'"),
    ({"name": "x", "classes": [{"name": "a", "position": "END", "heads": ["1-2"]}]}, "'1-2'"),
    ({"name": "x", "classes": [{"name": "a", "position": "END", "heads": ["1.2"]},
                               {"name": "b", "position": "S2", "heads": ["1.2"]}]}, "1.2 is in both 'a' and 'b'"),
    ({**GOOD, "minimality_k": {"5.5": []}}, "5.5"),
    ({**GOOD, "colour": 1}, "colour"),
    ({"name": "x", "classes": [{"name": "a", "position": "END", "heads": ["1.2"], "color": "blue"}]}, "color"),
])
def test_malformed_files_name_the_offending_entry(tmp_path, obj, message):
    with pytest.raises(CircuitError, match="bad.json") as err:
        load_circuit(write(tmp_path, obj))
    assert message in str(err.value)


def test_missing_file():
    with pytest.raises(CircuitError, match="Cannot read"):
        load_circuit("no/such/file.json")


def test_validation_against_model_and_task():
    c = Circuit.from_dict(GOOD)
    c.validate(2, 4, ROLES)
    with pytest.raises(CircuitError, match=r"head 1\.2 does not exist.*2 layers x 2 heads"):
        c.validate(2, 2, ROLES)
    with pytest.raises(CircuitError, match="layers 0-0"):
        c.validate(1, 4, ROLES)
    bad_pos = Circuit.from_dict({"name": "x", "classes": [{"name": "a", "position": "S3", "heads": ["0.1"]}]})
    with pytest.raises(CircuitError, match="position 'S3' is not known"):
        bad_pos.validate(2, 4, ROLES)


# --- edges ---------------------------------------------------------------------------------------
def _demo_with_edges(edges):
    from circuit_core.circuit import Circuit, load_circuit

    d = load_circuit("data/circuits/ioi-demo.json").to_dict()
    d["edges"] = edges
    return Circuit.from_dict(d)


def test_edges_expand_to_head_edges_and_round_trip():
    from circuit_core.circuit import Circuit

    c = _demo_with_edges([{"from": "duplicate token", "to": "s-inhibition", "input": "v"},
                          {"from": "name mover", "to": "logits"}, {"from": "0.0", "to": "2.2", "input": "q"}])
    assert c.head_edges() == {((0, 0), (1, 1), "v"), ((0, 0), (1, 2), "v"), ((0, 0), (1, 3), "v"),
                              ((0, 0), (2, 2), "q"), ((2, 2), "logits", "out")}
    assert Circuit.from_dict(c.to_dict()) == c
    plain = _demo_with_edges([])
    assert plain.head_edges() == frozenset()  # an empty list keeps no edge: not the same as no list
    d = plain.to_dict()
    del d["edges"]
    assert Circuit.from_dict(d).head_edges() is None


@pytest.mark.parametrize("edge, message", [
    ({"from": "x", "to": "logits"}, "neither a class"),
    ({"from": "name mover", "to": "duplicate token", "input": "q"}, "no such edge exists"),
    ({"from": "0.0", "to": "1.1"}, "must be one of q, k, v"),
    ({"from": "0.0", "to": "1.1", "input": "out"}, "must be one of q, k, v"),
    ({"from": "logits", "to": "1.1", "input": "q"}, "can only receive"),
    ({"from": "0.0", "to": "1.1", "input": "q", "weight": 1}, "unknown field"),
    ("0.0->1.1", "must be an object"),
])
def test_bad_edges_are_named(edge, message):
    from circuit_core.circuit import CircuitError

    with pytest.raises(CircuitError, match=message):
        _demo_with_edges([edge])


def test_edits_keep_edges_consistent():
    from circuit_core import editing
    from circuit_core.circuit import Edge

    c = _demo_with_edges([{"from": "duplicate token", "to": "s-inhibition", "input": "v"},
                          {"from": "0.0", "to": "2.2", "input": "q"}])
    renamed = editing.update_class(c, "duplicate token", new_name="dup")
    assert Edge("dup", "s-inhibition", "v") in renamed.edges
    assert editing.remove_head(c, (0, 0)).edges == []  # both edges lost their only sender
    assert editing.remove_class(c, "s-inhibition").edges == [Edge("0.0", "2.2", "q")]
    full = editing.toggle_edge(_demo_with_edges([]).__class__.from_dict(
        {k: v for k, v in c.to_dict().items() if k != "edges"}), Edge("duplicate token", "s-inhibition", "v"))
    assert Edge("duplicate token", "s-inhibition", "v") not in full.edges and len(full.edges) == len(c.all_edges()) - 1
    assert Edge("duplicate token", "s-inhibition", "v") in editing.toggle_edge(full, Edge("duplicate token", "s-inhibition", "v")).edges
