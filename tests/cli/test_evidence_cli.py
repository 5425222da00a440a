"""`python -m circuit_core evidence` writes results.evidence, which reads back as its typed result."""
import json

from circuit_core.cli import main
from circuit_core.evidence import CircuitEvidence

CIRCUIT = {"name": "toy", "classes": [{"name": "movers", "position": "END", "heads": ["2.1"]},
                                      {"name": "dup", "position": "S2", "heads": ["0.3"]}],
           "edges": [{"from": "dup", "to": "movers", "input": "k"}, {"from": "movers", "to": "logits"}]}


def test_evidence_cli_writes_a_record_of_each_class(tmp_path, tiny_dir, capsys):
    cpath, out = tmp_path / "c.json", tmp_path / "run.json"
    cpath.write_text(json.dumps(CIRCUIT))
    rc = main(["evidence", "--model", str(tiny_dir), "--circuit", str(cpath), "--n", "8", "--bootstrap", "50",
               "--prompts", "1,4", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "copy score" in printed and "dup → movers (k)" in printed
    rec = json.loads(out.read_text())
    ev = CircuitEvidence.from_dict(rec["results"]["evidence"])
    assert ev.prompts == (1, 4) and ev.n_prompts == 8 == len(rec["dataset"]["prompts"])
    assert [e.edge.label() for e in ev.edges.edges] == ["dup → movers (k)", "movers → logits"]  # the circuit's own
    assert rec["dataset"]["prompts"][1] == ev.prompt_texts[0]
