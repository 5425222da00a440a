"""The CLI end to end, and a run record recomputed from its own contents without this project."""
import json

import numpy as np
import pytest
import torch

import hf_reference as ref
from circuit_core.cli import main

CIRCUIT = {"name": "toy", "classes": [{"name": "movers", "position": "END", "heads": ["2.1", "1.0"]},
                                      {"name": "dup", "position": "S2", "heads": ["0.3"]}]}


@pytest.mark.parametrize("ref_per_group", [0, 4])  # paired ABC twins, and a reference set of its own
def test_faithfulness_cli_writes_a_recomputable_record(tmp_path, tiny_dir, tiny_hf, capsys, ref_per_group):
    cpath = tmp_path / "c.json"
    cpath.write_text(json.dumps(CIRCUIT))
    out = tmp_path / "run.json"
    rc = main(["faithfulness", "--model", str(tiny_dir), "--circuit", str(cpath), "--n", "30", "--seed", "2",
               "--bootstrap", "50", "--ref-per-group", str(ref_per_group), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "F(C) / F(M)" in printed and "95% interval" in printed
    rec = json.loads(out.read_text())
    assert rec["methodology"]["n"] == 30 and rec["methodology"]["ablation"] == "mean"
    assert rec["methodology"]["ref_per_group"] == ref_per_group
    ds = rec["dataset"]
    if ref_per_group:
        assert len(ds["reference_tokens"]) == ref_per_group * len(set(ds["groups"]))
    # Rebuild everything from the record alone and recompute with a plain HF forward.
    n = len(ds["tokens"])
    width = max(map(len, ds["tokens"] + ds["reference_tokens"]))
    pad = lambda rows: torch.tensor([r + [0] * (width - len(r)) for r in rows])
    tokens, rtokens = pad(ds["tokens"]), pad(ds["reference_tokens"])
    end = torch.tensor(ds["positions"]["END"])
    answers = torch.tensor(ds["answer_tokens"])
    f_model = ref.logit_diffs(tiny_hf, tokens, end, answers)
    assert np.allclose(rec["results"]["per_prompt"]["model"], f_model.numpy(), atol=1e-4)
    assert abs(rec["results"]["F_model"] - f_model.mean().item()) < 1e-4
    z_ref, ref_groups = ref.head_outputs(tiny_hf, rtokens), torch.tensor(ds["reference_groups"])
    means = torch.stack([z_ref[ref_groups == g].mean(0) for g in ds["groups"]])  # each prompt: its group's mean
    keep = torch.zeros(n, width, 3, 4, dtype=torch.bool)
    for cls in rec["circuit"]["classes"]:
        for head in cls["heads"]:
            l, h = map(int, head.split("."))
            for i in range(n):
                keep[i, ds["positions"][cls["position"]][i], l, h] = True
    f_circuit = ref.logit_diffs(tiny_hf, tokens, end, answers, keep, means)
    assert abs(rec["results"]["F_circuit"] - f_circuit.mean().item()) < 1e-4


def test_bad_circuit_and_bad_model_exit_cleanly(tmp_path, tiny_dir, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "classes": [{"name": "a", "position": "END", "heads": ["7.0"]}]}))
    assert main(["faithfulness", "--model", str(tiny_dir), "--circuit", str(bad)]) == 2
    assert "head 7.0 does not exist" in capsys.readouterr().err
    assert main(["faithfulness", "--model", str(tmp_path / "missing"), "--circuit", str(bad)]) == 2
    assert "no such folder" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--ref-per-group", "--ref-replicates", "--baseline"])
def test_negative_counts_are_refused_before_any_work(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        main(["faithfulness", "--model", "demo", "--circuit", "data/circuits/ioi-demo.json", option, "-2"])
    assert exit_.value.code == 2
    assert "expected a whole number ≥ 0, got -2" in capsys.readouterr().err


def test_convert_round_trips_through_eap_ig_and_the_cli_reads_graphs(tmp_path, capsys):
    import json

    from circuit_core.circuit import load_circuit
    from circuit_core.cli import main

    graph, back = tmp_path / "graph.json", tmp_path / "back.json"
    assert main(["convert", "data/circuits/ioi-demo.json", str(graph), "--n-layers", "4", "--n-heads", "4"]) == 0
    assert json.loads(graph.read_text())["nodes"]["a2.h2"]["in_graph"] is True  # the name mover
    assert json.loads(graph.read_text())["nodes"]["a3.h0"]["in_graph"] is False
    assert main(["convert", str(graph), str(back), "--to", "circuit"]) == 0
    assert load_circuit(back).to_dict() == load_circuit("data/circuits/ioi-demo.json").to_dict()
    assert main(["convert", str(graph), str(back), "--to", "circuit"]) == 2  # never replaced silently
    assert "pass --overwrite" in capsys.readouterr().err
    # an EAP-IG graph is a circuit file for every command
    assert main(["faithfulness", "--model", "demo", "--circuit", str(graph), "--n", "20", "--bootstrap", "20",
                 "--ref-replicates", "0"]) == 0
    assert "F(C)/F(M)" in capsys.readouterr().out
