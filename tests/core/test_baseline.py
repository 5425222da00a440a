"""Random circuits of the same shape as C: the reviewer's baseline."""
import numpy as np

from circuit_core.baseline import random_circuit_baseline, random_circuits
from circuit_core.circuit import Circuit, CircuitClass, load_circuit
from circuit_core.criteria import circuit_node_set


def test_random_circuits_keep_the_shape():
    c = Circuit("t", [CircuitClass("a", "END", [(2, 1), (1, 0)]), CircuitClass("b", "S2", [(1, 3)])])
    for s in random_circuits(c, 3, 4, 20, seed=0):
        per_layer = {}
        for (l, h, r) in s.nodes:
            per_layer.setdefault(l, []).append(r)
        assert {l: sorted(r) for l, r in per_layer.items()} == {1: ["END", "S2"], 2: ["END"]}
    assert random_circuits(c, 3, 4, 5, seed=1) == random_circuits(c, 3, 4, 5, seed=1)


def test_the_demo_circuit_beats_random_circuits_of_its_shape():
    from circuit_core.ablation import Methodology
    from circuit_core.evaluate import build_evaluator
    from circuit_core.models import load_model

    ev = build_evaluator(load_model("demo", device="cpu"), Methodology(n=100))
    c = load_circuit("data/circuits/ioi-demo.json")
    b = random_circuit_baseline(ev, c, count=30)
    assert len(b.F_random) == 30 and b.F_circuit == ev.F([circuit_node_set(c)])[0]
    assert b.share_at_least_as_good <= 0.1  # the discovered circuit is no accident
    assert np.median(b.F_random) < b.F_circuit


def test_cli_records_the_baseline(tmp_path, capsys):
    import json

    from circuit_core.cli import main

    out = tmp_path / "run.json"
    assert main(["faithfulness", "--model", "demo", "--circuit", "data/circuits/ioi-demo.json", "--bootstrap", "50",
                 "--baseline", "10", "--out", str(out)]) == 0
    assert "Random circuits of the same shape (n=10)" in capsys.readouterr().out
    b = json.loads(out.read_text())["results"]["baseline"]
    assert len(b["F_random"]) == 10 and 0 <= b["share_at_least_as_good"] <= 1
