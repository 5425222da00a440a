"""Circuit discovery on the tiny fixture model: a valid, faithful, reproducible circuit, and the CLI;
on the demo model, selection apart from report: the held-out interval covers a fresh large run."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from circuit_core import heads as hs
from circuit_core.ablation import Methodology, NodeSet
from circuit_core.circuit import load_circuit
from circuit_core.cli import main
from circuit_core.criteria import circuit_node_set
from circuit_core.discover import discover, discover_and_report, label
from circuit_core.evaluate import Evaluator, build_evaluator
from circuit_core.progress import Cancelled
from circuit_core.models import load_model
from circuit_core.selection import Selection
from circuit_core.tasks import build_dataset, task_roles

THRESHOLD = 0.8
N, SEED = 8, 6  # F(M) = 1.43, F(∅) = 0.72 on the tiny model: ∅ is not faithful, so pruning must choose


@pytest.fixture(scope="module")
def evaluator(tiny_model):
    return Evaluator(tiny_model, build_dataset("ioi", tiny_model.tokenizer, n=N, seed=SEED), Methodology(n=N, seed=SEED))


@pytest.fixture(scope="module")
def found(evaluator):
    return discover(evaluator, THRESHOLD)


def test_discovered_circuit_is_valid_and_faithful(found, tiny_model, evaluator):
    c = found.circuit
    c.validate(tiny_model.n_layers, tiny_model.n_heads, task_roles("ioi"))
    assert 1 <= len(c.heads) <= tiny_model.n_layers * tiny_model.n_heads
    f_model, f_circuit = evaluator.F([NodeSet.model(), circuit_node_set(c)])
    assert f_model == pytest.approx(found.F_model) and f_circuit == pytest.approx(found.F_circuit)
    assert THRESHOLD <= f_circuit / f_model <= 2 - THRESHOLD
    assert len({cls.color for cls in c.classes}) == len(c.classes)
    assert f"threshold {THRESHOLD}" in c.notes and f"N={N}, seed {SEED}" in c.notes
    # Pruning is greedy: every recorded removal kept the circuit faithful.
    assert all(THRESHOLD <= s["F"] / f_model <= 2 - THRESHOLD for s in found.steps if s["action"] == "remove")
    assert set(found.scores.metric) >= {hs.PREV, hs.DUP, hs.IND, hs.DIRECT, hs.ABLATION}


def test_normalized_criterion(evaluator):
    d = discover(evaluator, THRESHOLD, normalized=True)
    f_model, f_circuit, f_empty = evaluator.F([NodeSet.model(), circuit_node_set(d.circuit), NodeSet.empty()])
    assert THRESHOLD <= (f_circuit - f_empty) / (f_model - f_empty) <= 2 - THRESHOLD
    assert d.to_dict()["criterion"] == "normalized" and "(F(C) - F(∅))/(F(M) - F(∅))" in d.circuit.notes


def test_written_json_reloads(found, tmp_path):
    path = tmp_path / "found.json"
    found.circuit.save(path)
    assert load_circuit(path).to_dict() == found.circuit.to_dict()


def test_cancel_between_steps(evaluator):
    with pytest.raises(Cancelled):
        discover(evaluator, THRESHOLD, should_stop=lambda: True)


def test_class_labels_from_scores():
    def end(io, s1, s2, direct=0.0, ablation=0.0):
        return label("END", pd.Series({"attn END→IO": io, "attn END→S1": s1, "attn END→S2": s2,
                                       hs.DIRECT: direct, hs.ABLATION: ablation}))

    assert end(0.6, 0.1, 0.1, direct=1.0) == "name mover"
    assert end(0.6, 0.1, 0.1, direct=-1.0) == "negative name mover"
    assert end(0.45, 0.45, 0.0, direct=1.0) == "other"  # no preference between the names
    assert end(0.1, 0.1, 0.5, direct=0.1, ablation=-1.0) == "s-inhibition"  # mostly indirect
    assert end(0.0, 0.0, 0.98, direct=5.0, ablation=-7.6) == "s-suppression"  # writes -S itself
    assert end(0.1, 0.1, 0.1) == "other"
    row = lambda **kw: pd.Series(kw)
    assert label("S2", row(**{hs.IND: 0.7, hs.DUP: 0.2, hs.PREV: 0.1})) == "induction"
    assert label("S1+1", row(**{hs.IND: 0.0, hs.DUP: 0.0, hs.PREV: 0.9})) == "previous token"
    assert label("S2", row(**{hs.IND: 0.1, hs.DUP: 0.1, hs.PREV: 0.1})) == "other"
    # on the task itself a head at S2 that looks back at S1 is a duplicate-token head (the paper's test)
    assert label("S2", row(**{hs.IND: 0.0, hs.DUP: 0.2, hs.PREV: 0.0, "attn S2→S1": 0.6})) == "duplicate token"
    assert label("S2", row(**{hs.IND: 0.0, hs.DUP: 0.2, hs.PREV: 0.0, "attn S2→S1": 0.2})) == "other"
    assert label("S1+1", row(**{hs.IND: 0.0, hs.DUP: 0.0, hs.PREV: 0.0, "attn S2→S1": 0.9})) == "other"


def test_cli_discover_is_reproducible(tiny_model, tiny_dir, tmp_path, capsys):
    """The CLI on a fresh load of the same model, N and seed writes exactly the circuit `discover_and_report`
    proposes in-process, prints both figures, labelled, and records where each came from."""
    out, record = tmp_path / "c.json", tmp_path / "run.json"
    assert main(["discover", "--model", str(tiny_dir), "--n", str(N), "--seed", str(SEED), "--device", "cpu",
                 "--threshold", str(THRESHOLD), "--ref-per-group", "0", "--out", str(out),
                 "--record", str(record)]) == 0  # the fixture's paired references
    printed = capsys.readouterr().out
    assert "on the prompts that chose it (selection)" in printed and "held out (report prompts" in printed
    assert str(out) in printed
    d = discover_and_report(build_evaluator(tiny_model, Methodology(n=N, seed=SEED, ref_per_group=0)), THRESHOLD)
    assert load_circuit(out).to_dict() == d.circuit.to_dict()
    rec = json.loads(record.read_text())
    sel, held = rec["results"]["discovery"]["selection"], rec["results"]["discovery"]["held_out"]
    assert {"seed", "n", "ratio"} <= set(sel) and {"seed", "n", "ratio", "interval"} <= set(held)
    assert (held["seed"], held["n"]) == (SEED, N) == (rec["methodology"]["seed"], rec["methodology"]["n"])
    assert (sel["seed"], sel["n"]) == (SEED + 10_000, 40)  # the defaults: apart from the report seed
    lo, hi = held["interval"]
    assert lo <= held["ratio"] <= hi and held["ratio"] == pytest.approx(rec["results"]["faithfulness"]["ratio"])


def test_selection_seed_equal_to_report_seed_is_refused(tmp_path, capsys):
    """Refused before the model loads, in one line, with the reason; nothing written."""
    out = tmp_path / "c.json"
    assert main(["discover", "--model", "demo", "--seed", "5", "--selection-seed", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--selection-seed" in err and "must differ from the report seed (5)" in err and "winner's-curse" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_discover_and_report_refuses_the_report_seed(evaluator):
    with pytest.raises(ValueError, match="must differ from the report seed"):
        discover_and_report(evaluator, THRESHOLD, Selection(seed=SEED))


# --- selection apart from report, on the demo model -------------------------------------------------------
REPORT = Methodology(n=100, seed=1)  # the default methodology otherwise: 8 reference replicates
FRESH = Methodology(n=1000, seed=777, ref_replicates=0)  # a point estimate: replicates would not move it


@pytest.fixture(scope="module")
def demo_found():
    model = load_model("demo", device="cpu")
    return model, discover_and_report(build_evaluator(model, REPORT), THRESHOLD)


def test_held_out_interval_covers_a_fresh_large_run(demo_found):
    """The issue's "done when": discover's held-out 95% interval (N = 100, the report prompts) covers the
    same proposed circuit measured on 1000 fresh prompts of another seed."""
    model, d = demo_found
    f_model, f_circuit = build_evaluator(model, FRESH).F([NodeSet.model(), circuit_node_set(d.circuit)])
    lo, hi = d.held_out.interval
    assert lo <= f_circuit / f_model <= hi


def test_selection_and_report_prompts_differ_and_are_recorded(demo_found):
    _, d = demo_found
    assert d.selection.seed == REPORT.seed + 10_000 and d.selection.n == 40
    rec = d.to_dict()
    assert rec["held_out"]["seed"] == REPORT.seed and rec["held_out"]["n"] == REPORT.n
    assert {"seed", "n", "ratio", "interval"} <= set(rec["held_out"])
    assert rec["selection"] == {"seed": d.selection.seed, "n": 40, "ratio": d.ratio,
                                "normalized_score": d.normalized_score}
    assert rec["held_out"]["ratio"] != pytest.approx(d.ratio)  # two sets of prompts, two figures
    assert "on the prompts that chose it" in d.circuit.notes and "N=40, seed 10001" in d.circuit.notes
    assert f"report prompts (N={REPORT.n}, seed {REPORT.seed})" in d.circuit.notes
