"""The bundled demo model (data/models/ioi-demo) loads offline and really solves IOI.

Dataset seeds here are small, so fresh: training used seed 1,000,000 + its --seed.
"""
from __future__ import annotations

import socket

import pytest

from circuit_core.ablation import Methodology, NodeSet
from circuit_core.demo.train import HELD_OUT, TRAIN_TEMPLATES
from circuit_core.evaluate import Evaluator, build_evaluator
from circuit_core.models import DEMO_MODEL_DIR, load_model
from circuit_core.tasks.ioi import make_ioi_dataset

N = 200


@pytest.fixture(scope="module")
def demo():
    # Any connection attempt while loading fails the test: the demo must load with no network.
    def refuse(*args, **kwargs):
        raise AssertionError("load_model('demo') tried to open a network connection")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        return load_model("demo", device="cpu")


def _scores(evaluator):
    full, empty = evaluator.logit_diffs([NodeSet.model(), NodeSet.empty()])
    return (full > 0).double().mean().item(), full.mean().item(), empty.mean().item()


def test_bundle_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in DEMO_MODEL_DIR.iterdir()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "README.md"):
        assert name in files
    assert sum(files.values()) < 10 * 2**20


def test_loads_as_demo(demo):
    info = demo.describe()
    assert info["source"] == "demo" and info["architecture"] == "GPT2LMHeadModel"
    assert (info["n_layers"], info["n_heads"], info["d_model"]) == (4, 4, 64)


def test_solves_ioi_on_fresh_sample(demo):
    accuracy, f_model, f_empty = _scores(build_evaluator(demo, Methodology(n=N, seed=11)))
    assert accuracy >= 0.95 and f_model >= 3
    # With every head mean-ablated the names cannot reach END: the behaviour lives in the heads.
    assert abs(f_empty) < 1


def test_solves_held_out_templates(demo):
    assert not set(HELD_OUT) & set(TRAIN_TEMPLATES)
    data = make_ioi_dataset(demo.tokenizer, n=N, seed=12, templates=list(HELD_OUT))
    accuracy, f_model, _ = _scores(Evaluator(demo, data, Methodology(n=N, seed=12)))
    assert accuracy >= 0.95 and f_model >= 3


@pytest.fixture(scope="module")
def demo_evaluator(demo):
    return build_evaluator(demo, Methodology(n=100, seed=0))


def test_shipped_demo_circuit_is_faithful(demo_evaluator):
    from circuit_core.circuit import load_circuit
    from circuit_core.criteria import faithfulness

    circuit = load_circuit("data/circuits/ioi-demo.json")
    circuit.validate(demo_evaluator.n_layers, demo_evaluator.n_heads, ("IO", "S1", "S1+1", "S2", "END"))
    assert len(circuit.heads) <= (demo_evaluator.n_layers * demo_evaluator.n_heads) // 2
    assert all(not c.name.startswith("class ") for c in circuit.classes)  # classes are named
    f = faithfulness(demo_evaluator, circuit)
    assert f.stats["ratio"] >= 0.8


def test_ablating_the_most_important_class_halves_F(demo_evaluator):
    from circuit_core.circuit import load_circuit
    from circuit_core.completeness import c_minus

    circuit = load_circuit("data/circuits/ioi-demo.json")
    f_c = demo_evaluator.F([NodeSet(circuit.nodes())])[0]
    without = demo_evaluator.F([c_minus(circuit, cls.heads) for cls in circuit.classes])
    assert min(without) < f_c / 2


# The paper's classes and the positions it names them at (Wang et al. 2022, Fig. 2).
PAPER_CLASSES = {"duplicate token": "S2", "induction": "S2", "previous token": "S1+1", "s-inhibition": "END",
                 "name mover": "END", "negative name mover": "END", "backup name mover": "END"}


def test_discovery_finds_three_of_the_papers_classes_and_ships_them(demo_evaluator):
    """The demo is trained so that duplicate detection is needed (demo/train.py); discovery on it finds
    duplicate-token, S-inhibition and name-mover heads at the paper's positions, and that circuit is
    the shipped preset."""
    from circuit_core.circuit import load_circuit
    from circuit_core.discover import discover

    d = discover(demo_evaluator, 0.8)
    found = {(c.name, c.position): frozenset(c.heads) for c in d.circuit.classes}
    paper = {name for name, pos in found if PAPER_CLASSES.get(name) == pos}
    assert {"duplicate token", "s-inhibition", "name mover"} <= paper
    # a duplicate-token head at S2 really looks back at S1 (the paper's test)
    dup = next(iter(found[("duplicate token", "S2")]))
    assert d.scores.query("layer == @dup[0] and head == @dup[1] and metric == 'attn S2→S1'").score.item() >= 0.5
    shipped = load_circuit("data/circuits/ioi-demo.json")
    assert {(c.name, c.position): frozenset(c.heads) for c in shipped.classes} == found
