"""--dtype: the weights in bfloat16 (or float16) keep every figure within the README's stated tolerance of
float32, through the same engine; float32 stays the default.

The tolerance is a share of the scale of the figures: the mean |logit difference| of the intact model over
the prompts (on a random model F(M) itself may be near 0, so a share of F(M) would say nothing).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from circuit_core.ablation import Ablation, Methodology, NodeSet, PositionScope
from circuit_core.circuit import Circuit, load_circuit
from circuit_core.cli import main
from circuit_core.completeness import Cols, completeness
from circuit_core.criteria import circuit_node_set
from circuit_core.evaluate import Evaluator
from circuit_core.models import DTYPES, dtype_name, load_model
from circuit_core.tasks import build_dataset

# Measured (README "Memory"; N = 60, every ablation kind and position scope): bfloat16 moved F(M), F(C), F(∅)
# and completeness's d by at most 0.030 logits on the demo model (0.25% of its F(M) = 12.07) and 0.017 on a
# tiny random GPT-2; float16 by at most 0.0066 and 0.0021. Allowed: logits + share of |F(M)|.
TOLERANCE = {"bfloat16": (0.04, 0.005), "float16": (0.01, 0.001)}


def within(dt: str, got: np.ndarray, want: np.ndarray, f_model: float) -> bool:
    logits, share = TOLERANCE[dt]
    return bool(np.abs(got - want).max() <= logits + share * abs(f_model))
TINY_CIRCUIT = Circuit.from_dict({"classes": [
    {"name": "a", "position": "END", "heads": ["2.1", "1.0"]},
    {"name": "b", "position": "S2", "heads": ["0.3", "1.2"]},
]})


def figures(model, circuit, ablation: str, positions: str, n: int = 60):
    ds = build_dataset("ioi", model.tokenizer, n=n, seed=3)
    ev = Evaluator(model, ds, Methodology(n=n, seed=3, ablation=ablation, positions=positions, ref_replicates=0))
    assert ev.blocks is not None  # the fast engine, not the hooked fallback
    sets = [NodeSet.model(), circuit_node_set(circuit, positions), NodeSet.empty()]
    diffs = ev.logit_diffs(sets).numpy()
    comp = completeness(ev, circuit, classes=True, n_random=2, greedy_runs=0, reference_noise=False)
    return diffs.mean(1), np.asarray(comp.table[Cols.D], dtype=float)


@pytest.fixture(scope="module")
def tiny_pair(tiny_dir):
    return {dt: load_model(str(tiny_dir), device="cpu", dtype=dt) for dt in ("float32", "bfloat16", "float16")}


@pytest.fixture(scope="module")
def demo_pair():
    return {dt: load_model("demo", device="cpu", dtype=dt) for dt in ("float32", "bfloat16")}


def test_float32_is_the_default_and_the_record_says_which(tiny_model):
    assert tiny_model.dtype == "float32" and tiny_model.describe()["dtype"] == "float32"
    assert tiny_model.blocks.W_E.dtype == torch.float32
    assert dtype_name(None) == "float32" and dtype_name("bf16") == "bfloat16" and dtype_name(torch.float16) == "float16"
    with pytest.raises(ValueError, match="unsupported dtype"):
        dtype_name("int8")


def test_weights_and_tables_are_held_in_the_dtype(tiny_pair, tiny_dataset):
    for dt in ("bfloat16", "float16"):
        model = tiny_pair[dt]
        assert model.describe()["dtype"] == dt
        assert all(p.dtype == DTYPES[dt] for p in model.bridge.original_model.parameters())
        assert model.blocks is not None and model.blocks.W_E.dtype == DTYPES[dt]
        ev = Evaluator(model, tiny_dataset, Methodology(n=40, seed=3, ref_replicates=1))
        assert all(t.values.dtype == DTYPES[dt] for t in ev._tables)


@pytest.mark.parametrize("ablation", [a.value for a in Ablation])
@pytest.mark.parametrize("positions", [p.value for p in PositionScope])
def test_tiny_gpt2_figures_within_tolerance(tiny_pair, ablation, positions):
    F32, d32 = figures(tiny_pair["float32"], TINY_CIRCUIT, ablation, positions)
    for dt in ("bfloat16", "float16"):
        F, d = figures(tiny_pair[dt], TINY_CIRCUIT, ablation, positions)
        assert within(dt, F, F32, F32[0]) and within(dt, d, d32, F32[0]), (dt, F, F32, d, d32)
        assert not np.array_equal(F, F32)  # really computed in the lower precision


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_demo_figures_within_tolerance(demo_pair, ablation):
    circuit = load_circuit("data/circuits/ioi-demo.json")
    F32, d32 = figures(demo_pair["float32"], circuit, ablation, "circuit")
    F, d = figures(demo_pair["bfloat16"], circuit, ablation, "circuit")
    assert within("bfloat16", F, F32, F32[0]) and within("bfloat16", d, d32, F32[0]), (F, F32, d, d32)


def test_cli_dtype(tmp_path, tiny_dir, capsys):
    cpath = tmp_path / "c.json"
    cpath.write_text(json.dumps(TINY_CIRCUIT.to_dict()))
    out = tmp_path / "run.json"
    common = ["--model", str(tiny_dir), "--circuit", str(cpath), "--n", "20", "--bootstrap", "50"]
    assert main(["faithfulness", *common, "--dtype", "bf16", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["model"]["dtype"] == "bfloat16"
    with pytest.raises(SystemExit):
        main(["faithfulness", *common, "--dtype", "int8"])
    assert "unsupported dtype" in capsys.readouterr().err
