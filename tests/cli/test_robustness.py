"""Bad input of every kind gets one clear line: circuit files, heads, K sets and CLI options.

The parsers may only ever raise CircuitError, whatever they are fed (random JSON, mutated files,
other encodings, huge numbers, deep nesting); the CLI refuses bad options before loading a model;
files are written atomically.
"""
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import circuit_core.cli as cli
import circuit_core.tasks
from circuit_core.circuit import (MAX_FILE_BYTES, MAX_INDEX, Circuit, CircuitError, circuit_from_bytes, head_name,
                                  load_circuit, parse_head)
from circuit_core.completeness import parse_heads
from circuit_core.report import save_record
from circuit_core.storage import atomic_write_text

FAST = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PRESET = Path("data/circuits/ioi-gpt2-small.json")
GOOD = {"name": "x", "task": "ioi", "classes": [{"name": "a", "position": "END", "heads": ["1.2", "0.1"]}],
        "minimality_k": {"1.2": ["0.1"]}}


def parse_or_circuit_error(fn, *args):
    """Call fn; a CircuitError is fine (and must be one printable line), anything else fails the test."""
    try:
        return fn(*args)
    except CircuitError as e:
        message = str(e)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        message.encode("utf-8")  # printable on any terminal: no lone surrogates
        return None


# --- random input: only CircuitError ever comes out ----------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=25)
heads_like = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.floats(),
                       st.lists(st.one_of(st.integers(), st.booleans(), st.floats(), st.text(max_size=3)), max_size=3),
                       st.from_regex(r"\s*[0-9]{1,8}\s*\.\s*[0-9]{1,8}\s*", fullmatch=True))
class_like = st.dictionaries(st.sampled_from(["name", "position", "heads", "color", "extra"]),
                             st.one_of(json_values, st.lists(heads_like, max_size=4),
                                       st.sampled_from(["END", "S2", "#1f77b4", "", "a\nb"])), max_size=5)
circuit_like = st.dictionaries(
    st.sampled_from(["name", "model", "task", "classes", "minimality_k", "notes", "colour"]),
    st.one_of(json_values, st.lists(class_like, max_size=3), st.sampled_from(["ioi", "greater-than", 7]),
              st.dictionaries(heads_like.filter(lambda h: isinstance(h, str)), st.lists(heads_like, max_size=3),
                              max_size=3)),
    max_size=7)


@FAST
@given(st.one_of(json_values, circuit_like))
def test_from_dict_raises_only_circuit_error(value):
    c = parse_or_circuit_error(Circuit.from_dict, value)
    if c is not None:  # whatever is accepted has heads and survives a round trip
        assert c.heads and Circuit.from_dict(json.loads(json.dumps(c.to_dict()))).to_dict() == c.to_dict()


@FAST
@given(heads_like)
def test_parse_head_raises_only_circuit_error(value):
    h = parse_or_circuit_error(parse_head, value)
    if h is not None:
        assert all(type(x) is int and 0 <= x < MAX_INDEX for x in h)
        if isinstance(value, str):  # only ASCII digits make a head
            assert set(value) <= set("0123456789. \t\n\r\f\v") and parse_head(head_name(h)) == h


@FAST
@given(st.one_of(st.text(max_size=30), st.lists(heads_like, max_size=4), json_values))
def test_parse_heads_raises_only_circuit_error(value):
    parse_or_circuit_error(parse_heads, value)
    parse_or_circuit_error(parse_heads, value, Circuit.from_dict(GOOD))


@st.composite
def mutated_files(draw):
    """The paper's circuit file, damaged the ways files get damaged."""
    data = PRESET.read_bytes()
    text = data.decode()
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "encode", "number", "nest", "splice"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data)))]
    elif kind == "insert":
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.binary(min_size=1, max_size=16)) + data[i:]
    elif kind == "encode":  # what a text editor saves when asked for another encoding
        text = text.replace("S-inhibition", draw(st.sampled_from(["Sé-inhibition", "S\u2013inhibition", "S-inhib"])))
        codec = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "cp1252", "utf-8-sig"]))
        data = text.encode(codec, errors="replace")
    elif kind == "number":  # a head or field replaced by a long number
        digits = "9" * draw(st.sampled_from([19, 300, 4301, 10_000]))
        target = draw(st.sampled_from(['"9.9"', '"ioi"', '"END"', "[]"]))
        data = text.replace(target, draw(st.sampled_from([digits, f"[{digits}, 1]", f'"{digits}.1"', f"-{digits}"])),
                            1).encode()
    elif kind == "nest":
        depth = draw(st.sampled_from([6, 17, 1000, 100_000]))
        data = text.replace('"END"', "[" * depth + "1" + "]" * depth, 1).encode()
    else:  # a fragment of JSON dropped into a random place
        i = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(['{"heads": [true, false]}', "NaN", "1e999", '"\\ud800"', ",", "}", '"task": 7,']))
        data = (text[:i] + piece + text[i:]).encode()
    return data


@FAST
@given(mutated_files())
def test_mutated_files_raise_only_circuit_error(data):
    parse_or_circuit_error(circuit_from_bytes, data, "mutated.json")


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_circuit_error(data):
    parse_or_circuit_error(circuit_from_bytes, data, "random.bin")


# --- the probe's findings, one by one ---------------------------------------------------------------
def load_bytes(tmp_path, data: bytes):
    path = tmp_path / "c.json"
    path.write_bytes(data)
    return load_circuit(path)


@pytest.mark.parametrize("data,message", [
    ("\u00e9".join(json.dumps(GOOD).split("x", 1)).encode("latin-1"), "not UTF-8 text (byte 0xe9 on line 1); it may be Latin-1"),
    (json.dumps(GOOD).encode("utf-16"), "it is UTF-16"),
    (json.dumps(GOOD).encode("utf-16-le"), "contains NUL bytes"),
    (bytes(range(256)), "not UTF-8"),
    (b"\xef\xbb\xbf{\n\"a\xe9", "not UTF-8 text (byte 0xe9 on line 2)"),
    (b"\xef\xbb\xbf \n", "the file is empty"),
    (b"null", "must be a JSON object with 'name' and 'classes', not null"),
    (json.dumps({**GOOD, "name": 0}).replace("0", "7" * 5001).encode(), "a number has 5,001 digits"),
    (('{"name": "x", "classes": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(), "nested more than"),
    (('{"name": "x", "classes": ' + "[" * 20 + "]" * 20 + "}").encode(), "nested more than"),
    (b'{"name": "x", "notes": "' + b"a" * MAX_FILE_BYTES + b'"}', "at most 1,024 KB"),
    (json.dumps(GOOD).replace('"1.2"', "NaN").encode(), "NaN is not valid JSON"),
    (json.dumps(GOOD).replace('"name": "a", ', '"name": "a", "heads": [], ').encode(), "key 'heads' appears twice"),
])
def test_unreadable_files_name_the_file_and_the_problem(tmp_path, data, message):
    with pytest.raises(CircuitError, match="^c.json: ") as err:
        load_bytes(tmp_path, data)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_utf8_with_byte_order_mark_is_read(tmp_path):
    assert load_bytes(tmp_path, json.dumps(GOOD).encode("utf-8-sig")).heads == [(1, 2), (0, 1)]


def test_folders_and_missing_files(tmp_path):
    with pytest.raises(CircuitError, match="not a regular file"):
        load_circuit(tmp_path)
    with pytest.raises(CircuitError, match="Cannot read circuit file .*No such file"):
        load_circuit(tmp_path / "missing.json")
    with pytest.raises(CircuitError, match="Cannot read"):
        load_circuit("bad\x00name.json")


def with_class(**changes):
    return {**GOOD, "classes": [{**GOOD["classes"][0], **changes}], "minimality_k": {}}


@pytest.mark.parametrize("obj,message", [
    ({**GOOD, "task": "greater-than"}, "'task' is 'greater-than', which is not a known task (known: ioi, colored-objects, acronyms)"),
    ({**GOOD, "task": 7}, "'task' is 7, which is not a known task"),
    (with_class(heads=[[True, False]]), "Head [true, false] is not [layer, head] with two whole numbers"),
    (with_class(heads=[[1.0, 2]]), "is not [layer, head]"),
    (with_class(heads=[]), "no heads; a circuit needs at least one"),
    ({**GOOD, "classes": [{"name": "a", "position": "END", "heads": []},
                          {"name": "b", "position": "S2", "heads": []}]}, "no heads"),
    (with_class(heads=["\u0669.\u0666"]), "Head '\u0669.\u0666' is not of the form 'layer.head'"),  # Arabic-Indic
    (with_class(heads=["\uff19.\uff16"]), "is not of the form 'layer.head'"),  # full-width digits
    (with_class(heads=["9" * 5000 + ".1"]), "is not of the form"),
    (with_class(heads=["1234567.1"]), "from 0 to 99999"),
    (with_class(heads=[[10**30, 1]]), "Head [a 31-digit number, 1]: layer and head must be whole numbers from 0"),
    (with_class(heads=[[-1, 2]]), "from 0 to 99999"),
    (with_class(heads=[9.6]), "Head 9.6 is not of the form"),
    (with_class(heads="9.6"), "'heads' must be a list"),
    (with_class(name=7), "'name' must be text, not 7"),
    (with_class(name=""), "'name' is empty"),
    (with_class(name="two\nlines"), "contains the character '\\n'"),
    (with_class(position=["END"]), "'position' must be text"),
    (with_class(color=255), "color 255 is not a #rrggbb colour"),
    ({**GOOD, "name": ["x"]}, "'name' must be text, not ['x']"),
    ({**GOOD, "name": "x" * 1000}, "1,000 characters long; at most 200"),
    ({**GOOD, "notes": 3}, "'notes' must be text"),
    ({**GOOD, "model": {"a": 1}}, "'model' must be text, not an object"),
    ({**GOOD, "minimality_k": ["1.2"]}, "must map a head to a list of heads"),
    ({**GOOD, "minimality_k": {"1.2": "0.1"}}, "the K of '1.2' must be a list of heads"),
    ({**GOOD, "minimality_k": {"1.2": ["0.1", "0.1"]}}, "lists a head twice"),
    ({**GOOD, "minimality_k": {"1.2": [], " 1.2": []}}, "head 1.2 has two entries"),
    ({**GOOD, "classes": "all"}, "'classes' must be a non-empty list"),
    ({**GOOD, "classes": [None]}, "class #1 must be an object"),
    ({**GOOD, 1: 2}, "Unknown circuit field(s): 1"),
])
def test_nonsense_is_refused_with_the_entry_named(obj, message):
    with pytest.raises(CircuitError) as err:
        Circuit.from_dict(obj)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_parse_head_accepts_only_ascii_digits_and_pairs_of_ints():
    assert parse_head(" 9 . 6 ") == (9, 6) and parse_head([9, 6]) == (9, 6) and parse_head((0, 0)) == (0, 0)
    for bad in ["9.6.1", "9,6", "-1.2", "٩.٦", "9.٦", "", None, 9, [9], [9, 6, 1], [True, 1], ["9", "6"]]:
        with pytest.raises(CircuitError):
            parse_head(bad)


def test_user_k_strings_name_the_k():
    circuit = Circuit.from_dict(GOOD)
    assert parse_heads("1.2, 0.1", circuit) == {(1, 2), (0, 1)}
    with pytest.raises(CircuitError, match=r"K '1\.2, x': Head 'x' is not"):
        parse_heads("1.2, x", circuit)
    with pytest.raises(CircuitError, match="not in it: 5.5"):
        parse_heads("5.5", circuit)
    with pytest.raises(CircuitError, match="K must be heads like"):
        parse_heads(12, circuit)


def test_circuit_task_must_match_the_task_run(monkeypatch):
    monkeypatch.setattr(circuit_core.tasks, "TASKS", ("ioi", "greater-than"))
    other = Circuit.from_dict({**GOOD, "task": "greater-than"})
    other.check_task("greater-than")
    with pytest.raises(CircuitError, match="is for task 'greater-than', not 'ioi'"):
        other.check_task("ioi")
    with pytest.raises(CircuitError, match="not 'ioi'"):
        other.validate(2, 4, ("END",), task="ioi")


def test_presets_still_load():
    for path in Path("data/circuits").glob("*.json"):
        c = load_circuit(path)
        c.check_task("ioi")
        assert c.heads


# --- the CLI refuses bad options before any work ----------------------------------------------------
@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the CLI gets as far as loading a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for a run that should have been refused")

    monkeypatch.setattr(cli, "load_model", refuse)
    monkeypatch.setattr(cli, "load_model_or_demo", refuse)


def run_cli(argv, capsys) -> tuple[int, str]:
    """(exit status, stderr). Option errors exit through argparse; later refusals return 2."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_refused(argv, capsys, message):
    code, err = run_cli(argv, capsys)
    assert code not in (0, None), err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]


DEMO = ["--model", "demo", "--circuit", "data/circuits/ioi-demo.json"]


@pytest.mark.parametrize("command,extra,message", [
    ("faithfulness", ["--seed", "-1"], "argument --seed: expected a whole number ≥ 0, got -1"),
    ("faithfulness", ["--seed", str(2**70), "--ablation", "resample"], "expected a whole number ≤ 4,294,967,295"),
    ("faithfulness", ["--seed", "1" * 5000], "expected a whole number ≤ 4,294,967,295, got a 5,000-digit number"),
    ("faithfulness", ["--bootstrap", "0"], "argument --bootstrap: expected a whole number ≥ 1, got 0"),
    ("faithfulness", ["--n", "10000000"], "argument --n: expected a whole number ≤ 10,000"),
    ("faithfulness", ["--n", "0"], "expected a whole number ≥ 1, got 0"),
    ("faithfulness", ["--n", "１０"], "expected a whole number, got '１０'"),
    ("faithfulness", ["--n", "ten"], "expected a whole number, got 'ten'"),
    ("faithfulness", ["--ref-replicates", "1000"], "≤ 100"),
    ("faithfulness", ["--baseline", "-2"], "expected a whole number ≥ 0, got -2"),
    ("faithfulness", ["--device", "gpu"], "expected cpu, cuda, cuda:N or mps"),
    ("faithfulness", ["--ablation", "median"], "invalid choice: 'median'"),
    ("completeness", ["--greedy-k", "-3"], "argument --greedy-k: expected a whole number ≥ 1, got -3"),
    ("completeness", ["--greedy-k", "0"], "argument --greedy-k: expected a whole number ≥ 1, got 0"),
    ("completeness", ["--greedy-steps", "0"], "expected a whole number ≥ 1"),
    ("completeness", ["--random", "-1"], "argument --random: expected a whole number ≥ 0, got -1"),
    ("completeness", ["--k", "3.0, x"], "K '3.0, x': Head 'x' is not of the form"),
    ("completeness", ["--k", "1.0"], "K must be a subset of the circuit"),
    ("minimality", ["--threshold", "nan"], "argument --threshold: expected a number from 0 to 100, got 'nan'"),
    ("minimality", ["--threshold", "inf"], "expected a number from 0 to 100"),
    ("minimality", ["--threshold", "-5"], "expected a number from 0 to 100"),
    ("minimality", ["--k-source", "search", "--greedy-runs", "0"], "needs at least one greedy run"),
    ("validate", ["--greedy-runs", "-1"], "expected a whole number ≥ 0"),
])
def test_bad_options_are_refused_before_any_work(no_model, capsys, command, extra, message):
    assert_refused([command, *DEMO, *extra], capsys, message)


def test_bad_output_paths_are_refused_before_any_work(no_model, capsys, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out, message in [(tmp_path, "is a folder"), (tmp_path / "missing" / "run.json", "does not exist"),
                         (a_file / "run.json", "does not exist"), ("", "expected a file name")]:
        assert_refused(["faithfulness", *DEMO, "--out", str(out)], capsys, message)
    assert_refused(["faithfulness", *DEMO, "--out", "data/circuits/ioi-demo.json"], capsys,
                   "would overwrite it")
    assert_refused(["discover", "--model", "demo", "--out", str(tmp_path)], capsys, "is a folder")
    assert_refused(["discover", "--model", "demo", "--out", str(a_file), "--record", str(a_file)], capsys,
                   "name the same file")
    # a discovered circuit never silently replaces an existing file
    assert_refused(["discover", "--model", "demo", "--out", str(a_file)], capsys, "pass --overwrite")
    assert a_file.read_text() == "x"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder_is_refused(no_model, capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_refused(["faithfulness", *DEMO, "--out", str(locked / "run.json")], capsys, "cannot be written")


@pytest.mark.parametrize("extra,message", [
    (["--threshold", "1.5"], "expected a number above 0 and at most 1"),
    (["--threshold", "0"], "expected a number above 0"),
    (["--name", "two\nlines"], "expected one line"),
    (["--seed", "-1"], "≥ 0"),
])
def test_discover_options(no_model, capsys, tmp_path, extra, message):
    assert_refused(["discover", "--model", "demo", "--out", str(tmp_path / "c.json"), *extra], capsys, message)


def test_bad_circuits_are_refused_before_the_model_loads(no_model, capsys, tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    for obj, message in [(with_class(heads=[]), "c.json: The circuit has no heads"),
                         ({**GOOD, "task": "greater-than"}, "not a known task")]:
        path.write_text(json.dumps(obj))
        assert_refused(["faithfulness", "--model", "demo", "--circuit", str(path)], capsys, message)
    path.write_bytes(json.dumps(GOOD).encode("utf-16"))
    assert_refused(["faithfulness", "--model", "demo", "--circuit", str(path)], capsys, "it is UTF-16")
    # A circuit made for another (registered) task is refused when run as IOI.
    monkeypatch.setattr(circuit_core.tasks, "TASKS", ("ioi", "greater-than"))
    path.write_text(json.dumps({**GOOD, "task": "greater-than"}))
    assert_refused(["faithfulness", "--model", "demo", "--circuit", str(path), "--task", "ioi"], capsys,
                   "is for task 'greater-than', not 'ioi'")


def test_a_failed_write_at_the_end_is_one_line(capsys, monkeypatch):
    def disk_full(args):
        raise OSError(28, "No space left on device", "run.json")

    monkeypatch.setitem(cli.COMMANDS, "faithfulness", disk_full)
    code, err = run_cli(["faithfulness", *DEMO], capsys)
    assert code == 2 and err == "error: No space left on device ('run.json')\n"


# --- atomic writes ------------------------------------------------------------------------------------
def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("fail_at", ["fsync", "replace", "write"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, fail_at):
    target = tmp_path / "c.json"
    Circuit.from_dict(GOOD).save(target)
    before = target.read_text()

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if fail_at == "write":  # midway: half the text reaches the temporary file, then the disk is full
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, text):
                self.f.write(text[: len(text) // 2])
                self.f.flush()
                boom()

        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: HalfWriter(real_fdopen(fd, *a, **k)))
    else:
        monkeypatch.setattr(os, fail_at, boom)
    changed = Circuit.from_dict({**GOOD, "name": "changed"})
    with pytest.raises(OSError, match="No space"):
        changed.save(target)
    with pytest.raises(OSError, match="No space"):
        save_record({"results": {}}, target)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(target, "partial")
    assert target.read_text() == before and load_circuit(target).name == "x"
    assert leftovers(tmp_path) == []


def test_atomic_write_replaces_and_keeps_the_usual_permissions(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    plain = tmp_path / "plain.json"
    plain.write_text("x")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and leftovers(tmp_path) == []
    assert (target.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
