"""EAP-IG / MIB graph JSON: our circuits go out and come back; hand-made graphs come in; bad files
raise CircuitError and nothing else."""
import copy
import json
from pathlib import Path

import pytest

from circuit_core.circuit import Circuit, CircuitClass, CircuitError, load_circuit
from circuit_core.interchange import (CIRCUIT_KEY, _is_edge, _parse_node, edge_name, from_eap_graph, graph_edges,
                                      graph_nodes, read_circuit, to_eap_graph)

PRESETS = sorted(Path("data/circuits").glob("*.json"))
CFG = {"gpt2": {"n_layers": 12, "n_heads": 12, "parallel_attn_mlp": False, "d_model": 768},
       "demo": {"n_layers": 4, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 64}}


def through_json(d: dict) -> str:
    return json.dumps(d)  # what a file holds: tuples become lists, keys strings


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_presets_round_trip_with_their_classes(path):
    c = load_circuit(path)
    back = from_eap_graph(through_json(to_eap_graph(c, CFG[c.model])))
    assert back.circuit.to_dict() == c.to_dict()
    assert back.head_scores == {}  # exported edge scores are all 0: nothing to rank by
    assert not any("Positions" in w for w in back.warnings)  # the classes kept their positions


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_presets_round_trip_as_eap_ig_alone_keeps_the_heads(path):
    c = load_circuit(path)
    d = to_eap_graph(c, CFG[c.model], keep_circuit=False)
    assert set(d) == {"cfg", "nodes", "edges"}  # only what EAP-IG's to_json writes
    back = from_eap_graph(through_json(d), position="END")
    assert sorted(back.circuit.heads) == sorted(c.heads)
    assert [(k.name, k.position) for k in back.circuit.classes] == [("imported", "END")]
    assert any("every position" in w for w in back.warnings)
    assert back.cfg == CFG[c.model]


def test_export_has_eap_igs_nodes_and_edges():
    c = load_circuit("data/circuits/ioi-gpt2-small.json")
    d = to_eap_graph(c, CFG["gpt2"])
    # MIB's example circuit for GPT-2 small (circuits/ioi-eap-ig.json) has 158 nodes and 32,491 edges
    assert len(d["nodes"]) == 158 and len(d["edges"]) == 32491
    assert list(d["nodes"])[:3] == ["input", "a0.h0", "a0.h1"] and list(d["nodes"])[-2:] == ["m11", "logits"]
    assert d["cfg"] == CFG["gpt2"]
    members = {f"a{l}.h{h}" for l, h in c.heads}
    for name, node in d["nodes"].items():
        assert node == {"in_graph": name in members or not name.startswith("a")}
    assert d["edges"]["a9.h9->logits"] == {"score": 0.0, "in_graph": True}
    assert d["edges"]["a0.h1->a9.h9<q>"]["in_graph"] is True  # both in the circuit
    assert d["edges"]["a0.h0->a9.h9<q>"]["in_graph"] is False  # 0.0 is not
    assert d["edges"]["input->a9.h9<v>"]["in_graph"] is True and d["edges"]["m3->a9.h9<k>"]["in_graph"] is True
    assert to_eap_graph(c, CFG["gpt2"], edges=False)["edges"] == {}


@pytest.mark.parametrize("parallel", [False, True])
def test_edge_count_follows_eap_igs_graph(parallel):
    L, H = 5, 3
    edges = graph_edges(L, H, parallel)
    assert len(set(edges)) == len(edges)
    expected, r = 0, 1  # r: nodes in the residual stream before the layer
    for _ in range(L):
        expected += r * 3 * H + (r if parallel else r + H)
        r += H + 1
    assert len(edges) == expected + r  # + every node into logits
    assert ("a1.h2", "m1", None) in edges if not parallel else ("a1.h2", "m1", None) not in edges
    assert len(graph_nodes(L, H)) == 1 + L * (H + 1) + 1


@pytest.mark.parametrize("parallel", [False, True])
def test_the_import_rule_for_edges_is_the_export_enumeration(parallel):
    L, H = 3, 2
    nodes = graph_nodes(L, H)
    ruled = {(p, c, x) for p in nodes for c in nodes for x in (None, "q", "k", "v")
             if _is_edge(_parse_node(p, L, H), _parse_node(c, L, H), x, parallel)}
    assert ruled == set(graph_edges(L, H, parallel))


HAND_MADE = """{
  "cfg": {"n_layers": 2, "n_heads": 3, "parallel_attn_mlp": false, "d_model": 16},
  "nodes": {"input": {"in_graph": true}, "a0.h1": {"in_graph": true}, "a0.h2": {"in_graph": false},
            "m0": {"in_graph": false}, "a1.h0": {"in_graph": true}, "m1": {"in_graph": true},
            "logits": {"in_graph": true}},
  "edges": {"input->a0.h1<q>": {"score": 0.5, "in_graph": true},
            "a0.h1->a1.h0<v>": {"score": 0.25, "in_graph": true},
            "a0.h1->logits": {"score": -1.0, "in_graph": false},
            "a0.h2->logits": {"score": 0.125, "in_graph": false},
            "a1.h0->logits": {"score": 2.0, "in_graph": true}}
}"""


def test_a_hand_made_graph_imports():
    imp = from_eap_graph(HAND_MADE, name="by hand")
    c = imp.circuit
    assert c.name == "by hand" and sorted(c.heads) == [(0, 1), (1, 0)]
    assert c.classes[0].position == "END"
    # no node scores: |sum of each head's outgoing edge scores|
    assert imp.head_scores == {(0, 1): pytest.approx(0.75), (0, 2): pytest.approx(0.125), (1, 0): pytest.approx(2.0)}
    text = " ".join(imp.warnings)
    assert "MLP" in text and "m0" in text and "1 of 2 MLPs" in text
    # a0.h1->logits is out, and so are the unlisted a0.h1->a1.h0 <q> and <k>: the circuit lists its edges
    assert [e.label() for e in c.edges] == ["0.1 → 1.0 (v)", "1.0 → logits"]
    assert "keeps 2 of the 5" in text and "from the input or an MLP" not in text
    imp.check_fits(2, 3)
    with pytest.raises(CircuitError, match="2 layers x 3 heads"):
        imp.check_fits(4, 4)


def test_node_scores_win_over_edge_scores_and_nan_means_unscored():
    d = json.loads(HAND_MADE)
    d["nodes"]["a0.h1"]["score"] = -0.5
    d["nodes"]["a1.h0"]["score"] = float("nan")  # EAP-IG: not scored
    imp = from_eap_graph(through_json(d))  # json writes NaN, and reads it back
    assert imp.head_scores == {(0, 1): 0.5}


def test_read_circuit_takes_either_kind_of_file():
    ours = Path("data/circuits/ioi-demo.json").read_bytes()
    assert read_circuit(ours).circuit.to_dict() == load_circuit("data/circuits/ioi-demo.json").to_dict()
    assert read_circuit(ours).cfg is None
    assert sorted(read_circuit(HAND_MADE.encode()).circuit.heads) == [(0, 1), (1, 0)]


def test_a_graph_edited_after_export_drops_the_stale_classes():
    c = load_circuit("data/circuits/ioi-demo.json")
    d = to_eap_graph(c, CFG["demo"])
    assert (1, 0) not in c.heads
    d["nodes"]["a1.h0"]["in_graph"] = True
    imp = from_eap_graph(d)
    assert (1, 0) in imp.circuit.heads and imp.circuit.classes[0].name == "imported"
    assert any("no longer match" in w for w in imp.warnings)


def _set(d, path, value):
    for k in path[:-1]:
        d = d[k]
    if value is _DELETE:
        del d[path[-1]]
    else:
        d[path[-1]] = value


_DELETE = object()
MALFORMED = [
    ("not JSON", "{nodes: ", "Not valid JSON"),
    ("a list", "[1, 2]", "JSON object"),
    ("no cfg", ("cfg",), _DELETE),
    ("no nodes", ("nodes",), _DELETE),
    ("cfg not an object", ("cfg",), [2, 3]),
    ("n_layers a string", ("cfg", "n_layers"), "2"),
    ("n_heads zero", ("cfg", "n_heads"), 0),
    ("nodes a list", ("nodes",), ["a0.h1"]),
    ("edges a list", ("edges",), ["a0.h1->logits"]),
    ("head out of range", ("nodes", "a5.h0"), {"in_graph": True}),
    ("MLP out of range", ("nodes", "m7"), {"in_graph": True}),
    ("unknown node", ("nodes", "b0"), {"in_graph": True}),
    ("node without in_graph", ("nodes", "a0.h1"), {"score": 1.0}),
    ("node not an object", ("nodes", "a0.h1"), True),
    ("in_graph a string", ("nodes", "a0.h1", "in_graph"), "yes"),
    ("score a string", ("nodes", "a0.h1", "score"), "high"),
    ("edge without arrow", ("edges", "a0.h1-logits"), {"score": 0, "in_graph": True}),
    ("edge backwards", ("edges", "a1.h0->a0.h1<q>"), {"score": 0, "in_graph": True}),
    ("edge into a head without qkv", ("edges", "input->a1.h0"), {"score": 0, "in_graph": True}),
    ("edge into an MLP with qkv", ("edges", "input->m0<q>"), {"score": 0, "in_graph": True}),
    ("edge out of logits", ("edges", "logits->m1"), {"score": 0, "in_graph": True}),
    ("edge without in_graph", ("edges", "a1.h0->logits"), {"score": 1.0}),
    ("edge score a list", ("edges", "a1.h0->logits", "score"), [1.0]),
    ("no head in the graph", None, None),
    ("a 5,000-digit layer", ("nodes", "a" + "9" * 5000 + ".h0"), {"in_graph": True}),
    ("a model of a billion layers", ("cfg", "n_layers"), 10 ** 9),
    ("parallel_attn_mlp a string", ("cfg", "parallel_attn_mlp"), "no"),
    ("nested a million deep", "[" * 1_000_000 + "]" * 1_000_000, None),
    ("a 5,000-digit number", '{"cfg": {"n_layers": ' + "9" * 5000 + "}}", None),
    ("carried circuit malformed", (CIRCUIT_KEY,), {"classes": "nope"}),
]


@pytest.mark.parametrize("what,path,value", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_graphs_raise_circuit_error_in_one_line(what, path, value):
    if isinstance(path, str):
        data = path
    else:
        data = json.loads(HAND_MADE)
        if path is None:
            for node in data["nodes"].values():
                node["in_graph"] = node is data["nodes"]["m1"]
        else:
            _set(data, path, value)
    with pytest.raises(CircuitError) as e:
        from_eap_graph(data)
    assert "\n" not in str(e.value) and str(e.value)


def test_any_damage_to_a_graph_gives_a_circuit_error_or_a_circuit():
    """Every field of a real export, replaced by a value of each wrong kind or removed."""
    c = Circuit("small", [CircuitClass("x", "END", [(0, 1), (1, 2)])], task="ioi")
    good = to_eap_graph(c, {"n_layers": 2, "n_heads": 3, "parallel_attn_mlp": False, "d_model": 8})

    def paths(d, prefix=()):
        for k, v in d.items():
            yield prefix + (k,)
            if isinstance(v, dict):
                yield from paths(v, prefix + (k,))

    for path in list(paths(good)):
        for value in (None, 1, -1, 2.5, "x", [], {}, True, _DELETE):
            d = copy.deepcopy(good)
            _set(d, path, value)
            try:
                from_eap_graph(d)
            except CircuitError:
                pass


def test_export_refuses_heads_the_model_does_not_have():
    c = load_circuit("data/circuits/ioi-gpt2-small.json")
    with pytest.raises(CircuitError, match="do not exist"):
        to_eap_graph(c, CFG["demo"])
    with pytest.raises(CircuitError, match="n_heads"):
        to_eap_graph(c, {"n_layers": 12})


def test_edge_names_follow_eap_ig():
    assert edge_name("a0.h1", "a9.h9", "q") == "a0.h1->a9.h9<q>" and edge_name("m3", "logits") == "m3->logits"
