"""The README's worked example of adding a task runs as written: registered, built, evaluated, used
by the CLI through CIRCUIT_TASK_MODULES."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuit_core import tasks
from circuit_core.ablation import Methodology
from circuit_core.circuit import Circuit, CircuitClass
from circuit_core.criteria import faithfulness
from circuit_core.evaluate import Evaluator
from circuit_core.models import load_model
from circuit_core.toy import gpt2_tokenizer, save_random_gpt2

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The README's module, saved under a name of its own and imported; unregistered afterwards."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme[readme.index("### Adding a task"):], re.S).group(1)
    folder = tmp_path_factory.mktemp("example")
    (folder / "agreement_example.py").write_text(code)
    sys.path.insert(0, str(folder))
    try:
        import agreement_example

        tasks.register(agreement_example.TASK)
        yield folder, agreement_example
    finally:
        sys.path.remove(str(folder))
        tasks.REGISTRY.pop("agreement", None)
        tasks.TASKS = tuple(tasks.REGISTRY)


def test_builds_aligned_twins_with_gpt2s_tokenizer(example):
    tok = gpt2_tokenizer()
    ds = tasks.build_dataset("agreement", tok, n=12, seed=1)
    assert ds.task == "agreement" and ds.paired and ds.n == 12
    for i in range(ds.n):
        words = ds.prompts[i].split()
        assert tok.decode([int(ds.tokens[i, ds.positions["SUBJ"][i]])]).strip() == words[1]
        assert tok.decode([int(ds.tokens[i, ds.positions["DIST"][i]])]).strip() == words[4]
        assert tok.decode([int(ds.tokens[i, ds.positions["END"][i]])]).strip() == "found"
        differ = (ds.tokens[i] != ds.reference_tokens[i]).nonzero().flatten().tolist()
        assert differ == [int(ds.positions["SUBJ"][i])]  # the twin flips the subject's number only
        plural = words[1].endswith("s")
        assert tok.decode([int(ds.answer_tokens[i, 0])]) == (" are" if plural else " is")
        assert ds.answer_tokens[i, 0] != ds.answer_tokens[i, 1]
    drawn = tasks.build_dataset("agreement", tok, n=12, seed=1, ref_per_group=3)
    assert drawn.prompts == ds.prompts and torch.bincount(drawn.reference_groups).tolist() == [3, 3, 3, 3]
    with pytest.raises(tasks.TaskError, match="mode"):
        tasks.build_dataset("agreement", tok, n=4, mode="ABBA")


def test_evaluates_on_a_toy_model_and_through_the_cli(example, tmp_path):
    folder, module = example
    model_dir = tmp_path / "toy"
    save_random_gpt2(model_dir, n_layer=2, n_head=2, n_embd=16, words=module.TASK.vocabulary(), seed=0)
    model = load_model(str(model_dir), device="cpu")
    meth = Methodology(task="agreement", n=16, ref_per_group=4, ref_replicates=0)
    ev = Evaluator(model, tasks.build_dataset("agreement", model.tokenizer, **meth.dataset_kwargs()), meth)
    whole = Circuit("all", [CircuitClass("all", "*", [(l, h) for l in range(2) for h in range(2)])], task="agreement")
    r = faithfulness(ev, whole)
    assert r.F_circuit == pytest.approx(r.F_model)
    circuit_file = tmp_path / "c.json"
    circuit_file.write_text(json.dumps({**whole.to_dict(), "classes": [
        {"name": "subject", "position": "SUBJ", "heads": ["0.0"]}, {"name": "end", "position": "END", "heads": ["1.1"]}]}))
    env = {**os.environ, "CIRCUIT_TASK_MODULES": "agreement_example",
           "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    res = subprocess.run([sys.executable, "-m", "circuit_core", "validate", "--model", str(model_dir), "--task",
                          "agreement", "--circuit", str(circuit_file), "--n", "16", "--ref-replicates", "0",
                          "--ref-per-group", "4"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "Validation of 'all' (2 heads)" in res.stdout and "N=16" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "circuit_core", "validate", "--task", "agreement"], cwd=ROOT,
                         env={**env, "CIRCUIT_TASK_MODULES": "no_such_module"}, capture_output=True, text=True)
    assert bad.returncode != 0 and "no_such_module" in bad.stderr
