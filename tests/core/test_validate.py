"""One validation for every caller: `validate` gives the criteria's own numbers, typed, and the CLI and the
report make the same record from it; results round-trip through their records; no UI reads a result by key."""
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from circuit_core.circuit import Circuit, CircuitClass
from circuit_core.completeness import Completeness, completeness
from circuit_core.criteria import Faithfulness, faithfulness
from circuit_core.intervals import Interval
from circuit_core.minimality import Minimality, minimality
from circuit_core.validate import ValidationSpec, describe_methodology, validate

ROOT = Path(__file__).resolve().parents[2]
CIRCUIT = Circuit("tiny", [CircuitClass("late", "END", [(2, 0), (2, 1)]), CircuitClass("early", "END", [(0, 3)])])
FAST = ValidationSpec(reference_noise=False)


@pytest.fixture(scope="module")
def validation(tiny_evaluator):
    return validate(tiny_evaluator, CIRCUIT, FAST)


def same(a, b) -> bool:
    return json.dumps(a, sort_keys=True, allow_nan=True) == json.dumps(b, sort_keys=True, allow_nan=True)


def test_validate_gives_the_criteria_own_numbers(tiny_evaluator, validation):
    v = validation
    assert isinstance(v.faithfulness, Faithfulness) and isinstance(v.completeness, Completeness)
    assert isinstance(v.minimality, Minimality) and v.baseline is None and v.tests is None
    f = faithfulness(tiny_evaluator, CIRCUIT, reference_noise=False)
    c = completeness(tiny_evaluator, CIRCUIT, n_random=10, greedy_runs=0, reference_noise=False)
    m = minimality(tiny_evaluator, CIRCUIT, threshold_pct=1.0, reference_noise=False)
    assert same(v.faithfulness.to_dict(), f.to_dict())
    assert same(v.completeness.to_dict(), c.to_dict()) and same(v.minimality.to_dict(), m.to_dict())
    assert set(v.completeness.table.family) >= {"empty", "class", "random"}  # the default K sets
    assert v.verdicts["overall"] in ("passes", "fails", "undecided") and isinstance(v.faithfulness.interval("ratio"), Interval)
    record = v.record()
    assert record["results"]["F_model"] == f.F_model and record["results"]["verdicts"] == v.verdicts


def test_the_cli_and_the_report_make_the_same_record(tiny_dir, tmp_path, capsys):
    from circuit_core.cli import main
    from circuit_core.evaluate import build_evaluator
    from circuit_core.models import load_model
    from circuit_core.ablation import Methodology
    from ui.report import build_report

    circuit_file = tmp_path / "c.json"
    circuit_file.write_text(json.dumps(CIRCUIT.to_dict()))
    out = tmp_path / "run.json"
    assert main(["validate", "--model", str(tiny_dir), "--circuit", str(circuit_file), "--n", "24", "--no-tests",
                 "--greedy-runs", "0", "--baseline", "5", "--out", str(out)]) == 0
    cli = json.loads(out.read_text())["results"]
    ev = build_evaluator(load_model(str(tiny_dir), device="cpu"), Methodology(n=24))
    report = build_report(ev, CIRCUIT, "caption", n_baseline=5).record["results"]
    for key in ("faithfulness", "completeness", "minimality", "verdicts", "baseline", "F_model", "per_prompt"):
        assert same(cli[key], report[key]), key


def test_interval():
    iv = Interval(-0.5, 2.0)
    lo, hi = iv
    assert (lo, hi) == (-0.5, 2.0) and iv[1] == 2.0 and list(iv) == [-0.5, 2.0] and len(iv) == 2
    assert iv.contains(0.0) and not iv.contains(2.5) and iv.straddles_zero and iv.width == 2.5
    assert not Interval(0.1, 0.2).straddles_zero and Interval.missing().straddles_zero  # NaN decides nothing
    assert not Interval.missing().contains(0.0) and not Interval.missing().known
    assert Interval.of([1, 2]) == Interval(1.0, 2.0) and Interval.of(iv) is iv
    assert Interval(1.0, 2.0).scaled(-2) == Interval(-4.0, -2.0)


def test_results_round_trip_through_their_records(tiny_evaluator, validation):
    f = validation.faithfulness
    back = Faithfulness.from_dict(json.loads(json.dumps(f.to_dict())))
    for key, value in f.stats.items():
        assert value == getattr(back, key) or (math.isnan(value) and math.isnan(getattr(back, key))), key
    assert back.intervals.keys() == f.intervals.keys() and back.undefined == f.undefined
    assert all(np.array_equal(back.per_prompt[k], f.per_prompt[k]) for k in f.per_prompt)
    assert {o: s.n for o, s in back.by_order.items()} == {o: s.n for o, s in f.by_order.items()}
    assert back.interval_method == f.interval_method and same(back.to_dict(), f.to_dict())
    for result, cls in ((validation.completeness, Completeness), (validation.minimality, Minimality)):
        again = cls.from_dict(json.loads(json.dumps(result.to_dict())))
        assert same(again.to_dict(), result.to_dict()) and again.verdict == result.verdict


def test_one_wording_of_the_methodology(tiny_evaluator):
    m = tiny_evaluator.methodology
    words = describe_methodology(m, "tiny model", CIRCUIT)
    assert words.startswith("tiny model · IOI · ") and f"N={m.n}, seed {m.seed}" in words
    assert words.endswith("circuit 'tiny' (3 heads)")
    plain = describe_methodology(m, min_group_size=2)  # as the CLI prints it under its own header line
    assert plain.startswith("IOI · ") and "≥ 2 prompts per group" in plain


KEYS = ("F_model", "ratio", "intervals_95", "per_prompt", "F_circuit", "F_empty", "gap", "normalized")


def test_no_ui_code_reads_a_result_by_key():
    read = re.compile(r'(?<!figs)\[["\'](' + "|".join(KEYS) + r')["\']\]')  # figs[...]: a chart's file stem
    files = [ROOT / "dashboard.py", *sorted((ROOT / "ui").glob("*.py")), *sorted((ROOT / "pages").glob("*.py"))]
    found = [f"{p.name}:{i}: {line.strip()}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
             if read.search(line)]
    assert not found, found
