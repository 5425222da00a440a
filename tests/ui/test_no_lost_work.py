"""No lost work, safe to serve: saving asks before overwriting, uploads and reloads keep their edits,
a failed computation keeps the last figures, a served dashboard offers only its allowed models."""
import base64
import json
import random
import re
import tokenize
import tomllib
import zlib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import ui.headline
import ui.circuits as circuits
import ui.serve as serving
from circuit_core.circuit import Circuit, CircuitError, load_circuit
from circuit_core.editing import add_class, remove_class, remove_head, toggle_head
from circuit_core.links import MAX_ENCODED, PREFIX, decode_circuit, encode_circuit, encode_payload
from circuit_core.models import DEMO_MODEL_DIR

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "data" / "circuits").glob("*.json"))
DEMO_CIRCUIT = ROOT / "data" / "circuits" / "ioi-demo.json"  # the demo model's default circuit


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def texts(at: AppTest) -> str:
    parts = [*at.error, *at.warning, *at.info, *at.success, *at.caption, *at.markdown, *at.metric]
    return " ".join(str(getattr(p, "value", "")) + " " + str(getattr(p, "label", "")) for p in parts)


@pytest.fixture
def saved_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(circuits, "SAVED_DIR", tmp_path)
    return tmp_path


# --- saving -----------------------------------------------------------------------------------------
def test_save_refuses_to_overwrite_unless_told(saved_dir):
    c = load_circuit(DEMO_CIRCUIT)
    path = circuits.save_circuit(c, "mine")
    with pytest.raises(circuits.AlreadySaved):
        circuits.save_circuit(remove_head(c, c.heads[0]), "mine")
    assert load_circuit(path).heads == c.heads  # untouched
    circuits.save_circuit(remove_head(c, c.heads[0]), "mine", overwrite=True)
    assert load_circuit(path).heads == c.heads[1:]
    assert sorted(p.name for p in saved_dir.iterdir()) == ["mine.json"]  # no temporary files left


def test_distinct_names_never_share_a_file(saved_dir):
    c = load_circuit(DEMO_CIRCUIT)
    names = ["my circuit", "my-circuit", "my_circuit", "my circuit (2)", "My.circuit+v2"]
    paths = [circuits.save_circuit(c, n) for n in names]
    assert len(set(paths)) == len(names) and all(load_circuit(p).name == n for p, n in zip(paths, names))
    for bad in ["my/circuit", "../up", ".hidden", "", "   ", "a\\b", "naïve", "x" * 81, "trailing."]:
        with pytest.raises(CircuitError):
            circuits.save_circuit(c, bad)
    with pytest.raises(CircuitError, match="differs in more than case"):
        circuits.save_circuit(c, "MY CIRCUIT")
    assert len(list(saved_dir.iterdir())) == len(names)


def test_saving_keeps_the_edited_circuit_as_it_is(saved_dir):
    c = load_circuit(DEMO_CIRCUIT)
    before = c.to_dict()
    circuits.save_circuit(c, "a copy")
    assert c.to_dict() == before and load_circuit(saved_dir / "a copy.json").name == "a copy"


def test_editor_asks_before_overwriting_and_renaming_is_an_edit(dash, saved_dir):
    at = dash.open("pages/1_Circuit_editor.py")
    history = dash.history(at)
    name = history.current.name
    at.text_input(key="save-name-demo::preset: ioi-demo").input("my copy").run()
    button(at, "Save circuit").click().run()
    assert any("Saved as 'my copy'" in s.value for s in at.success)
    first = (saved_dir / "my copy.json").read_text()

    history.push(remove_head(history.current, history.current.heads[0]))
    at.run()
    button(at, "Save circuit").click().run()
    assert any("exists" in w.value and "Overwrite" in w.value for w in at.warning)
    assert (saved_dir / "my copy.json").read_text() == first  # nothing written yet
    button(at, "Cancel").click().run()
    assert not any("exists" in w.value for w in at.warning)
    button(at, "Save circuit").click().run()
    button(at, "Overwrite").click().run()
    assert any("Saved as 'my copy'" in s.value for s in at.success)
    assert load_circuit(saved_dir / "my copy.json").heads == history.current.heads
    assert history.current.name == name  # saving named the copy, not the circuit being edited
    assert "saved: my copy" in at.sidebar.selectbox(key="circuit_choice").options

    button(at, "Rename").click().run()  # renaming is an edit: it goes through history
    assert history.current.name == "my copy" and history.can_undo
    button(at, "↶ Undo").click().run()
    assert history.current.name == name
    assert not at.exception


# --- uploads and reloads ------------------------------------------------------------------------------
def upload(at: AppTest, file_name: str, circuit: dict) -> AppTest:
    return at.sidebar.file_uploader(key="upload").set_value(
        (file_name, json.dumps(circuit).encode(), "application/json")).run()


def test_each_upload_keeps_its_own_history(dash):
    at = dash.open("dashboard.py")
    demo = load_circuit(DEMO_CIRCUIT).to_dict()
    upload(at, "first.json", {**demo, "name": "first"})
    assert dash.session(at).view.circuit_from == "uploaded: first"
    first = dash.history(at, "uploaded: first")
    first.push(remove_head(first.current, first.current.heads[0]))
    edited = first.current.to_dict()

    upload(at, "second.json", {**demo, "name": "second"})
    upload(at, "first.json", {**demo, "name": "another first"})  # same file name, other content
    options = at.sidebar.selectbox(key="circuit_choice").options
    assert {"uploaded: first", "uploaded: second", "uploaded: first (2)"} <= set(options)
    assert dash.session(at).view.circuit_from == "uploaded: first (2)"
    assert dash.history(at, "uploaded: first").current.to_dict() == edited  # kept

    upload(at, "again.json", {**demo, "name": "first"})  # the first upload's content again: its entry
    assert dash.session(at).view.circuit_from == "uploaded: first"
    assert dash.history(at, "uploaded: first").current.to_dict() == edited
    assert not at.exception and not at.error


def test_a_reload_brings_back_the_edited_circuit(dash):
    at = dash.open("dashboard.py")
    history = dash.history(at)
    history.push(remove_head(history.current, history.current.heads[0]))
    at.run()
    params = dict(at.query_params)
    assert params["model"] == "demo" and params["from"] == "preset: ioi-demo" and params["circuit"]
    f_c = next(m.value for m in at.metric if m.label.startswith("F(C)"))

    fresh = dash.open("dashboard.py", query=params)  # a new session: nothing but the address
    assert not fresh.exception and not fresh.warning and not fresh.error
    assert dash.session(fresh).view.model.choice == "demo"
    restored = dash.history(fresh)
    assert restored.current.to_dict() == history.current.to_dict()
    assert restored.can_undo and restored.past[0].to_dict() == load_circuit(DEMO_CIRCUIT).to_dict()
    assert next(m.value for m in fresh.metric if m.label.startswith("F(C)")) == f_c


def test_a_reload_brings_back_an_upload(dash):
    at = dash.open("dashboard.py")
    upload(at, "mine.json", {**load_circuit(DEMO_CIRCUIT).to_dict(), "name": "mine"})
    fresh = dash.open("dashboard.py", query=dict(at.query_params))
    assert dash.session(fresh).view.circuit_from == "uploaded: mine"
    assert dash.history(fresh, "uploaded: mine").current.name == "mine"


@pytest.mark.parametrize("param, says", [
    ("c1.not*base64", "characters it should not"),
    ("c1." + "A" * 40, "damaged"),
    ("somebody else's state", "not hold a circuit"),
    (encode_circuit(load_circuit(ROOT / "data/circuits/ioi-gpt2-small.json")), "does not exist in this model"),
])
def test_a_bad_circuit_in_the_address_gives_a_warning_and_the_normal_circuit(dash, param, says):
    at = dash.open("dashboard.py", query={"model": "demo", "from": "preset: ioi-demo", "circuit": param})
    assert not at.exception and not at.error
    assert any(says in w.value and "could not be brought back" in w.value for w in at.warning), \
        [w.value for w in at.warning]
    assert dash.session(at).view.circuit_from == "preset: ioi-demo"
    assert "circuit" not in at.query_params  # the bad parameter is dropped from the address


# --- the address encoding -------------------------------------------------------------------------------
def random_edits(c: Circuit, rng: random.Random, n_layers: int, n_heads: int, steps: int) -> Circuit:
    for _ in range(steps):
        kind = rng.random()
        if kind < 0.7 and c.classes:
            head = (rng.randrange(n_layers), rng.randrange(n_heads))
            c = toggle_head(c, head, rng.choice(c.classes).name)
        elif kind < 0.85:
            c = add_class(c, f"class {rng.randrange(10 ** 6)} ünïcødé", rng.choice(["END", "S2", "IO", "*"]))
        elif len(c.classes) > 1:
            c = remove_class(c, rng.choice(c.classes).name)
    return c


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_links_round_trip_presets_and_random_edits(preset):
    c = load_circuit(preset)
    rng = random.Random(preset.stem)
    for i in range(40):
        edited = c if i == 0 else random_edits(c, rng, 12, 12, rng.randrange(1, 25))
        text = encode_circuit(edited)
        assert re.fullmatch(r"[A-Za-z0-9._-]+", text) and len(text) <= MAX_ENCODED
        assert decode_circuit(text).to_dict() == edited.to_dict()


def test_links_reject_anything_else_with_a_circuit_error():
    text = encode_circuit(load_circuit(DEMO_CIRCUIT))
    rng = random.Random(0)
    bad = [text[:n] for n in (0, 3, 10, len(text) // 2, len(text) - 1)]
    bad += ["c2." + text[3:], text + "=", text.replace("c1.", "c1.!")]
    for _ in range(200):  # damaged anywhere: an error or (rarely) still a valid circuit, nothing else
        i = rng.randrange(3, len(text))
        damaged = text[:i] + rng.choice("AZaz09-_") + text[i + 1:]
        try:
            decode_circuit(damaged)
        except CircuitError:
            pass

    def pack(obj) -> str:
        raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        return PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")

    bad += [pack(b" " * 5_000_000),  # short, but inflates far beyond any circuit
            pack([1, 2]), pack({"v": 2, "circuit": {}}), pack({"v": 1}), pack({"v": 1, "circuit": "x"}),
            pack({"v": 1, "circuit": {"name": "x", "classes": [{"name": 1, "position": [], "heads": {}}]}}),
            pack({"v": 1, "circuit": {"name": "x", "classes": [], "extra": 1}}), pack(b"\xff\xfe")]
    for b in bad:
        with pytest.raises(CircuitError):
            decode_circuit(b)
    with pytest.raises(CircuitError, match="too large"):
        encode_payload({"circuit": {"notes": "".join(rng.choice("abcdef0123") for _ in range(100_000))}})


# --- a failed computation ----------------------------------------------------------------------------------
def test_a_failed_computation_keeps_the_last_figures_with_the_error(dash, monkeypatch):
    at = dash.open("dashboard.py")
    before = next(m.value for m in at.metric if m.label.startswith("F(C)"))

    def fail(ctx, circuit=None):
        raise RuntimeError("out of memory in /srv/secret/place")

    monkeypatch.setattr(ui.headline, "faithfulness_of", fail)
    history = dash.history(at)
    history.push(remove_head(history.current, history.current.heads[0]))
    at.run()
    assert not at.exception
    assert any("could not be computed" in e.value and "RuntimeError" in e.value for e in at.error)
    assert "/srv/secret" not in texts(at)  # the message of an unexpected error stays in the log
    assert next(m.value for m in at.metric if m.label.startswith("F(C)")) == before


# --- serving a group --------------------------------------------------------------------------------------
def serve(tmp_path, monkeypatch, models: dict) -> Path:
    cfg = tmp_path / "serve.toml"
    cfg.write_text("[models]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in models.items()))
    monkeypatch.setenv(serving.SERVE_ENV, str(cfg))
    return cfg


def test_serve_mode_offers_only_the_allowed_models_and_names_no_path(dash, tmp_path, monkeypatch):
    serve(tmp_path, monkeypatch, {"demo": "demo", "lab model": str(DEMO_MODEL_DIR)})
    at = dash.open("dashboard.py", query={"model": "local folder…"})  # a choice this server does not offer
    assert not at.exception and not at.error
    assert at.sidebar.selectbox(key="model_choice").options == ["demo", "lab model"]
    assert not at.text_input  # no free-text folder
    at.sidebar.selectbox(key="model_choice").set_value("lab model").run()
    assert not at.exception and not at.error
    assert "lab model" in texts(at) and str(DEMO_MODEL_DIR) not in texts(at)
    assert at.query_params["model"] == "lab model"


def test_serve_mode_errors_do_not_tell_which_server_paths_exist(dash, tmp_path, monkeypatch):
    (tmp_path / "exists").mkdir()
    serve(tmp_path, monkeypatch, {"demo": "demo", "gone": "/no/such/secret", "empty": str(tmp_path / "exists")})
    messages = []
    for label in ("gone", "empty"):
        at = dash.open("dashboard.py", query={"model": label})
        assert not at.exception
        messages.append([e.value for e in at.error])
        assert "secret" not in texts(at) and str(tmp_path) not in texts(at)
    assert messages[0] == [m.replace("'empty'", "'gone'") for m in messages[1]]  # the same words either way


def test_an_unusable_serve_configuration_stops_the_dashboard(dash, tmp_path, monkeypatch):
    monkeypatch.setenv(serving.SERVE_ENV, str(tmp_path / "missing.toml"))
    at = dash.open("dashboard.py", query={})
    assert not at.exception and not at.metric
    assert any("serving configuration" in e.value for e in at.error) and str(tmp_path) not in texts(at)


def test_the_streamlit_config_is_safe_by_default():
    from streamlit import config

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    # fitted to circuit files: an EAP-IG graph of GPT-2 medium (about 13 MB) fits, nothing much larger
    assert cfg["server"]["maxUploadSize"] <= 16 and cfg["server"]["enableXsrfProtection"] is True
    assert cfg["client"]["showErrorDetails"] == config.ShowErrorDetailsConfigOptions.NONE  # no tracebacks
    assert cfg["browser"]["gatherUsageStats"] is False


# --- no code from data ---------------------------------------------------------------------------------------
def unsafe_calls(path: Path) -> list[str]:
    """Uses of pickle-like loaders, torch.load without weights_only=True, unsafe YAML, eval/exec and
    remote code in models, found from the tokens (so strings and comments do not count)."""
    toks = [t for t in tokenize.generate_tokens(path.open(encoding="utf-8").readline)
            if t.type in (tokenize.NAME, tokenize.OP)]
    found = []
    for i, t in enumerate(toks):
        prev = toks[i - 1].string if i else ""
        nxt = toks[i + 1].string if i + 1 < len(toks) else ""
        after = "".join(x.string for x in toks[i + 1:i + 60])
        call = after[:after.find(")") + 1] if nxt == "(" else ""
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{t.start[0]}"
        if t.string in ("pickle", "cPickle", "dill", "shelve", "marshal", "joblib", "read_pickle", "cloudpickle"):
            found.append(f"{where}: {t.string}")
        elif t.string in ("eval", "exec") and nxt == "(" and prev not in (".", "def"):
            found.append(f"{where}: {t.string}(")
        elif prev == "." and t.string == "load" and toks[i - 2].string == "torch" and "weights_only=True" not in call:
            found.append(f"{where}: torch.load without weights_only=True")
        elif prev == "." and t.string in ("load", "load_all", "unsafe_load", "full_load") and toks[i - 2].string == "yaml":
            found.append(f"{where}: yaml.{t.string}")
        elif t.string in ("allow_pickle", "trust_remote_code") and after.startswith("=True"):
            found.append(f"{where}: {t.string}")
    return found


def test_no_code_is_ever_run_from_data():
    files = [p for p in ROOT.rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    assert len(files) > 20
    assert [f for p in files for f in unsafe_calls(p)] == []


def test_the_scan_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import pickle\nx = eval('1')\nimport torch\nm = torch.load(f)\nimport yaml\n"
                      "y = yaml.load(s)\nz = torch.load(f, weights_only=True)\nmodel.eval()\n"
                      "# eval( in a comment\ns = 'exec('\n")
    found = unsafe_calls(sample)
    assert [f.split(": ", 1)[1] for f in found] == ["pickle", "eval(", "torch.load without weights_only=True",
                                                   "yaml.load"]


def test_upload_errors_show_where_the_page_starts_and_the_page_goes_on(dash):
    at = dash.open("dashboard.py")
    upload(at, "broken.json", {"name": "x", "classes": "not a list"})
    assert not at.exception
    assert any("broken" in e.value and "not taken in" in e.value for e in at.main.error)  # not only the sidebar
    assert at.metric  # the figures stay
    demo = load_circuit(DEMO_CIRCUIT).to_dict()
    far = {**demo, "name": "too big", "classes": [{**demo["classes"][0], "heads": [[10, 0]]}]}
    upload(at, "far.json", far)
    assert not at.exception and not at.error
    assert any("does not exist in this model" in w.value and "instead" in w.value for w in at.warning)
    assert at.metric and dash.session(at).view.circuit_from == "preset: ioi-demo"


def test_a_model_that_cannot_be_had_keeps_the_address_circuit_until_it_is_back(dash, tmp_path):
    """A link to an edited session on a folder that is not there (moved, another machine): the page says
    so, keeps its sidebar to choose again, keeps the circuit in the address, and the edit comes back
    once the folder does."""
    import shutil

    folder = tmp_path / "my-model"
    demo = load_circuit(DEMO_CIRCUIT)
    edited = remove_head(demo, demo.heads[0])
    query = {**dash.view(folder=str(folder), circuit_from="preset: ioi-demo").to_query(), "circuit": encode_circuit(edited)}
    at = dash.open("dashboard.py", query=query)
    assert not at.exception and not at.metric
    assert any("Choose the model again" in e.value for e in at.error)
    assert any("circuit in this page's address is kept" in c.value for c in at.caption)
    assert at.sidebar.selectbox(key="model_choice").value == "local folder…"  # the sidebar is there to choose
    assert at.query_params["circuit"] == query["circuit"]
    shutil.copytree(DEMO_MODEL_DIR, folder)  # the folder is back
    at.run()
    assert not at.exception and not at.error and at.metric
    assert dash.history(at, "preset: ioi-demo", model=str(folder)).current.to_dict() == edited.to_dict()
