"""The session's choices (sidebar), cached models/evaluators/results, and the circuit being edited.

Pages call `sidebar()` first; it returns a Context with everything a page needs. Science stays in
circuit_core; this module only wires it to Streamlit.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from circuit_core.ablation import Ablation, Methodology, PositionScope
from circuit_core.circuit import Circuit, CircuitError
from circuit_core.interchange import read_circuit
from circuit_core.editing import History
from circuit_core.links import decode_circuit, encode_circuit
from circuit_core.models import DATA_DIR, ModelLoadError, load_model, load_model_or_demo
from circuit_core.tasks import REGISTRY, TaskError, get_task, task_roles

PRESET_DIR = DATA_DIR / "circuits"
SAVED_DIR = Path(os.environ.get("CIRCUIT_DASHBOARD_SAVED", PRESET_DIR / "saved"))
MODEL_CHOICES = ["gpt2", "gpt2-medium", "demo", "hub name…", "local folder…"]
SIDEBAR_KEYS = ["model_choice", "model_folder", "model_hub", "task", "n", "seed", "mode", "ref_per_group", "ref_replicates",
                "ablation", "positions", "circuit_choice"]


@dataclass
class Context:
    model: object
    model_key: str  # what get_model was called with (cache key)
    methodology: Methodology
    circuit: Circuit  # the circuit being edited (current state)
    preset: Circuit  # the circuit as loaded, for "change against preset"
    history: History
    circuit_key: str


# --- cached resources -----------------------------------------------------------------------------
# Two models at most: each holds its weights, its residual cache and its evaluators (see the README's
# "Memory"); a third model asked for drops the least recently used.
@st.cache_resource(show_spinner="Loading model…", max_entries=2)
def get_model(name: str):
    """(model, notice); gpt2 and gpt2-medium fall back to the bundled demo when they cannot be had."""
    if name in ("gpt2", "gpt2-medium"):
        return load_model_or_demo(name)
    return load_model(name), None


def get_evaluator(model_key: str, methodology: Methodology):
    """The model's evaluator for this methodology, shared by every session. Kept in the model's own
    cache (circuit_core's EvaluatorCache), bounded in entries and bytes, which Streamlit's cannot be;
    another position scope or bootstrap count reuses the cached evaluator's tables and results."""
    model, _ = get_model(model_key)
    if methodology in model.evaluators:
        return model.evaluators.get(methodology)
    with st.spinner("Building prompts and reference means…"):
        return model.evaluators.get(methodology)


@st.cache_data(show_spinner="Evaluating faithfulness…", max_entries=256)
def faithfulness_result(model_key: str, methodology: Methodology, circuit_json: str,
                        reference_noise: bool = False):
    """The `Faithfulness` result (a frozen value: the cache hands each caller its own copy).
    Prompts-only intervals by default: the figures at once after an edit; the joint intervals
    (reference replicates) cost one evaluation per replicate and come from a background job."""
    from circuit_core.criteria import faithfulness

    return faithfulness(get_evaluator(model_key, methodology), Circuit.from_dict(json.loads(circuit_json)),
                        reference_noise=reference_noise)


@st.cache_data(show_spinner="Scoring head roles…", max_entries=32)
def role_scores(model_key: str, methodology: Methodology):
    """Previous-token, duplicate-token, induction, attention and direct-effect scores (a few passes)."""
    from circuit_core.heads import head_scores

    return head_scores(get_evaluator(model_key, methodology), ablation=False)


def circuit_json(c: Circuit) -> str:
    return json.dumps(c.to_dict(), sort_keys=True)


# --- circuits on disk -------------------------------------------------------------------------------
def circuit_files(task: str | None = None) -> dict[str, Path]:
    """Shipped presets and saved circuits, by display name; with `task`, only that task's."""
    files = {f"preset: {p.stem}": p for p in sorted(PRESET_DIR.glob("*.json"))}
    if SAVED_DIR.exists():
        files.update({f"saved: {p.stem}": p for p in sorted(SAVED_DIR.glob("*.json"))})
    return files if task is None else {k: p for k, p in files.items() if circuit_task(p) == task}


def circuit_task(path: Path) -> str | None:
    """The task a circuit file names ("ioi" when it names none), None when it cannot be read: such a
    file stays listed under every task, so its error shows when it is picked."""
    try:
        stat = path.stat()
        return _circuit_task(str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return None


@st.cache_data(max_entries=512, show_spinner=False)
def _circuit_task(path: str, mtime: int, size: int) -> str | None:
    try:
        task = json.loads(Path(path).read_bytes()[: 1 << 20]).get("task", "ioi")
        return task if isinstance(task, str) else None
    except (OSError, ValueError, AttributeError):
        return None


WHOLE_MODEL = "start: every head (whole model)"


def whole_model_circuit(model, task: str) -> Circuit:
    """Where a circuit search starts when a task has no circuit yet: every head at every position
    (F(C) = F(M)). Remove heads in the editor, or add those activation patching points to."""
    from circuit_core.circuit import ALL_POSITIONS, CircuitClass

    heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    return Circuit(name=f"{task}: every head", task=task, classes=[CircuitClass("all heads", ALL_POSITIONS, heads)])


def default_circuit_choice(model, files: dict[str, Path], task: str = "ioi") -> str:
    """The preset made for this model (its `model` field), else the first that fits it, else the
    whole-model start: a first view is never an error about a circuit the user did not pick."""
    want = "demo" if model.source == "demo" else model.name
    for key, path in files.items():
        try:
            if json.loads(path.read_text()).get("model") == want:
                return key
        except (OSError, ValueError):
            continue
    for key, path in files.items():
        try:
            _load(path).validate(model.n_layers, model.n_heads, task_roles(task), task=task)
            return key
        except (CircuitError, TaskError):
            continue
    return WHOLE_MODEL


class AlreadySaved(CircuitError):
    """A saved circuit has this name: saving again needs an explicit overwrite."""


# The file name is the circuit's name itself, so two names never share a file; names that would
# need changing to be a portable file name are refused rather than rewritten.
_SAVE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,79}")


def saved_path(name: str) -> Path:
    """Where a circuit saved as `name` goes; CircuitError when `name` cannot be a file name as it is."""
    name = name.strip()
    if not name:
        raise CircuitError("Give the circuit a name to save it under.")
    if not _SAVE_NAME.fullmatch(name) or name.endswith("."):
        raise CircuitError(f"'{name}' cannot be saved as it is: use letters, digits, spaces and . _ ( ) + - "
                           "(at most 80 characters, starting with a letter or digit).")
    return SAVED_DIR / f"{name}.json"


def save_circuit(c: Circuit, name: str, overwrite: bool = False) -> Path:
    """Save a copy of `c` under `name`; `c` itself (the circuit being edited) keeps its name.

    Raises AlreadySaved when a saved circuit has this name and `overwrite` is False.
    """
    path = saved_path(name)
    SAVED_DIR.mkdir(parents=True, exist_ok=True)
    # Names differing only in case share a file on macOS and Windows: refuse them everywhere.
    twin = next((p for p in SAVED_DIR.glob("*.json") if p.stem.casefold() == path.stem.casefold()), None)
    if twin is not None and twin.name != path.name:
        raise CircuitError(f"A saved circuit is named '{twin.stem}'; choose a name that differs in more than case.")
    if twin is not None and not overwrite:
        raise AlreadySaved(f"A saved circuit named '{path.stem}' exists.")
    copy = Circuit.from_dict({**c.to_dict(), "name": path.stem})
    if overwrite:
        copy.save(path)
        return path
    # Write the whole file aside, then link it into place: the link fails if another session has
    # saved this name in the meantime, so a file is never replaced without the user's say.
    tmp = SAVED_DIR / f".{path.stem}.{secrets.token_hex(4)}.tmp"
    copy.save(tmp)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise AlreadySaved(f"A saved circuit named '{path.stem}' exists.") from None
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise AlreadySaved(f"A saved circuit named '{path.stem}' exists.") from None
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --- serving a group ----------------------------------------------------------------------------------
SERVE_ENV = "CIRCUIT_DASHBOARD_SERVE"
log = logging.getLogger(__name__)


class ServeConfigError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServeConfig:
    """What a served dashboard offers: models by the label the group sees, never by their path."""

    models: dict[str, str]  # label -> hub name, "demo", or a model folder on the server


def serve_config() -> ServeConfig | None:
    """The configuration named by $CIRCUIT_DASHBOARD_SERVE, or None when the dashboard runs for one
    person. A set but unusable configuration raises: a served dashboard never falls back to open mode."""
    where = os.environ.get(SERVE_ENV, "").strip()
    if not where:
        return None
    try:
        with open(where, "rb") as fh:
            models = tomllib.load(fh).get("models")
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ServeConfigError(f"{SERVE_ENV}={where}: {e}") from None
    if not (isinstance(models, dict) and models
            and all(isinstance(v, str) and v.strip() and k.strip() for k, v in models.items())):
        raise ServeConfigError(f"{where}: [models] must map each label to a hub name, 'demo' or a model folder.")
    return ServeConfig({k.strip(): v.strip() for k, v in models.items()})


def _serve_or_stop() -> ServeConfig | None:
    try:
        return serve_config()
    except ServeConfigError as e:
        log.error("%s", e)
        st.error("This dashboard's serving configuration cannot be used; whoever runs it will find why in its log.")
        st.stop()


def _load_model(choice: str, model_key: str, serve: ServeConfig | None):
    """get_model, with errors that name no server path when serving a group."""
    try:
        model, notice = get_model(model_key)
    except ModelLoadError as e:
        if serve is None:
            st.error(str(e))
        else:
            log.warning("model '%s' could not be loaded: %s", choice, e)
            st.error(f"Model '{choice}' cannot be loaded on this server; whoever runs the dashboard will find "
                     "why in its log. Choose another model in the sidebar.")
        st.stop()
    if serve is not None:
        if notice:
            log.warning("%s", notice)
            notice = f"Model '{choice}' cannot be loaded on this server; using the bundled demo model."
        if model.source == "folder":
            model.name = choice  # the group knows a folder by its label; records and captions say that
    return model, notice


# --- the sidebar --------------------------------------------------------------------------------------
def _keep_widget_state():
    # Widget values are dropped when a run does not draw the widget; re-assigning keeps them across
    # page switches (Streamlit's documented pattern). A page switch while a job's progress fragment
    # is polling can still drop them, so each full run also keeps a plain copy to restore from.
    for k in SIDEBAR_KEYS:
        if k in st.session_state:
            st.session_state[k] = st.session_state[k]
        elif f"_kept::{k}" in st.session_state:
            st.session_state[k] = st.session_state[f"_kept::{k}"]


def _remember_widget_state():
    for k in SIDEBAR_KEYS:
        if k in st.session_state:
            st.session_state[f"_kept::{k}"] = st.session_state[k]


def sidebar() -> Context:
    """Draw the session's choices and return the context; stops the page with a message on bad input."""
    st.set_page_config(page_title="Circuit validation", page_icon="🔬", layout="wide")
    if "_pending_model_choice" in st.session_state:  # set before the widget exists (see the fallback below)
        st.session_state["model_choice"] = st.session_state.pop("_pending_model_choice")
    for k, v in st.session_state.pop("_pending_view", {}).items():  # a reopened run's methodology
        st.session_state[k] = v
    _keep_widget_state()
    sb = st.sidebar
    sb.header("Model")
    serve = _serve_or_stop()
    choices = list(serve.models) if serve else MODEL_CHOICES
    _model_from_url(choices)
    choice = sb.selectbox("Model", choices, key="model_choice",
                          help="The models this server offers." if serve else
                          "gpt2 / gpt2-medium from the Hugging Face hub (falls back to the bundled demo "
                          "when the hub is unreachable), the bundled demo, or a local Hugging Face folder.")
    model_key = serve.models[choice] if serve else choice
    if not serve and choice == "hub name…":  # any model TransformerLens supports, e.g. gpt2-large, pythia
        model_key = sb.text_input("Hub name", key="model_hub", placeholder="e.g. gpt2-large, EleutherAI/pythia-160m",
                                  help="A Hugging Face hub name of a model TransformerLens supports; it is "
                                       "downloaded once into the Hugging Face cache.").strip()
        if not model_key:
            st.info("Enter a Hugging Face hub name in the sidebar.")
            st.stop()
    if not serve and choice == "local folder…":  # never offered when serving a group: no free-text paths
        model_key = sb.text_input("Folder", key="model_folder", placeholder="/path/to/model").strip()
        if not model_key:
            st.info("Enter the folder of a Hugging Face model in the sidebar.")
            st.stop()
    model, notice = _load_model(choice, model_key, serve)
    demo_choice = next((k for k in choices if (serve.models[k] if serve else k) == "demo"), None)
    if notice and demo_choice:
        # The model in use is the demo: say so in the sidebar too, and share the demo's edit history.
        st.session_state["_fallback_notice"] = notice
        st.session_state["_pending_model_choice"] = demo_choice
        st.rerun()
    if notice:
        sb.warning(notice)
    if choice == demo_choice and st.session_state.get("_fallback_notice"):
        sb.warning(st.session_state["_fallback_notice"])
    _set_param("model", None if choice == "local folder…" else model_key if choice == "hub name…" else choice)  # a folder's path stays out of URLs
    sb.caption(f"{model.describe()['architecture']} · {model.n_layers} layers × {model.n_heads} heads · {model.device}")

    _methodology_from_url()
    sb.header("Data")
    task = sb.selectbox("Task", tuple(REGISTRY), key="task", format_func=lambda t: f"{t} · {REGISTRY[t].title}")
    spec = get_task(task)
    sb.caption(f"e.g. “{spec.example}” · metric: {spec.metric} · reference: {spec.reference}")
    c1, c2 = sb.columns(2)
    n = c1.number_input("N prompts", 10, 2000, 100, step=10, key="n")
    seed = c2.number_input("Seed", 0, 10_000, 0, key="seed")
    if st.session_state.get("mode") not in spec.modes:  # another task's mode: start from all of this one's
        st.session_state["mode"] = "mixed"
    mode = sb.selectbox("Templates", spec.modes, key="mode",
                        help="mixed: every template group of the task" + (
                            " (IOI: all 15 BABA + 15 ABBA templates)" if task == "ioi" else ""))
    default = Methodology()
    ref = sb.number_input("Reference prompts per group", 0, 500, default.ref_per_group, step=5, key="ref_per_group",
                          help=f"ABC prompts per template group for the means, drawn apart from the clean prompts "
                               f"({default.ref_per_group} by default: where faithfulness stops moving). 0: each "
                               "prompt's ABC twin, as in the paper (about N/30 per group). Small reference sets "
                               "lower faithfulness: see the README's curve.")
    reps = sb.number_input("Reference replicates for intervals", 0, 50, default.ref_replicates, key="ref_replicates",
                           help="Bootstrap replicates of the reference set, so intervals include its noise. "
                                "Figures appear at once with prompts-only intervals; the joint intervals follow "
                                "in the background (each replicate evaluates the sets again). 0: prompts only.")
    sb.header("Methodology")
    ablation = sb.selectbox("Ablation", [a.value for a in Ablation], key="ablation",
                            help="mean: mean over reference (ABC) prompts of the same template (the paper). "
                                 "mean-pooled: over all reference prompts. resample: one other reference prompt. zero.")
    positions = sb.selectbox("Positions", [p.value for p in PositionScope], key="positions",
                             help="circuit: heads kept only at their class position (the paper); all: everywhere.")
    meth = Methodology(task=task, n=int(n), seed=int(seed), mode=mode, ablation=ablation, positions=positions,
                       ref_per_group=int(ref), ref_replicates=int(reps))
    _methodology_to_url(meth)

    sb.header("Circuit")
    files = circuit_files(task)
    uploads = st.session_state.setdefault("uploaded_circuits", {})  # "uploaded: name" -> Circuit, in order
    if not st.session_state.get("_url_circuit_read"):  # a fresh session: a reload or an opened address
        st.session_state["_url_circuit_read"] = True
        _circuit_from_url(files, uploads, model, model_key, task)
    if pending := st.session_state.pop("circuit_choice_pending", None):
        st.session_state["circuit_choice"] = pending
    options = list(files) + list(uploads) + [WHOLE_MODEL]
    if st.session_state.get("circuit_choice") not in options:
        st.session_state["circuit_choice"] = default_circuit_choice(model, files, task)
    key = sb.selectbox("Circuit", options, key="circuit_choice")
    for note in st.session_state.pop("_import_notes", []):
        sb.info(note)
    _show_url_warning(key)
    upload = sb.file_uploader("Upload a circuit (JSON)", type=["json"], key="upload",
                              help="A circuit file of this dashboard, or an EAP-IG / MIB graph (its heads become one "
                                   "class kept at END). Each upload keeps its own edits; earlier uploads stay listed.")
    if upload is not None and st.session_state.get("upload_id") != upload.file_id:
        st.session_state["upload_id"] = upload.file_id
        try:
            # our circuit JSON, or an EAP-IG / MIB graph (its heads become one class kept at END)
            imported = read_circuit(upload.getvalue(), name=upload.name.removesuffix(".json"))
            for note in imported.warnings:
                st.session_state.setdefault("_import_notes", []).append(f"{upload.name}: {note}")
            circuit = imported.circuit
            st.session_state["circuit_choice_pending"] = _add_upload(uploads, "uploaded", upload.name, circuit)
            st.rerun()
        except CircuitError as e:  # the message starts with the file's name
            sb.error(str(e))
    try:
        preset = (whole_model_circuit(model, task) if key == WHOLE_MODEL else
                  uploads[key] if key in uploads else _load(files[key]))
        preset.validate(model.n_layers, model.n_heads, task_roles(task), task=task)
    except (CircuitError, TaskError) as e:
        st.error(f"Circuit '{key}' does not fit {model.name}: {e}  \nChoose another circuit in the sidebar.")
        st.stop()
    hkey = _history_key(f"{key}::{task}" if key == WHOLE_MODEL else key, model_key)
    if hkey not in st.session_state:  # one edit history per (circuit, model): switching loses nothing
        st.session_state[hkey] = History(preset)
    history = st.session_state[hkey]
    _circuit_to_url(key, key in files, history.current, preset)
    with sb.expander("Share this view"):
        share_link()
    _remember_widget_state()
    return Context(model, model_key, meth, history.current, preset, history, hkey)


def _history_key(circuit_key: str, model_key: str) -> str:
    return f"history::{model_key}::{circuit_key}"


def _load(path: Path) -> Circuit:
    from circuit_core.circuit import load_circuit

    try:
        return load_circuit(path)
    except CircuitError as e:  # name the file, not where it lives on the server
        raise CircuitError(str(e).replace(str(path), path.name)) from None


# --- uploads and the page's address -------------------------------------------------------------------
MAX_UPLOADS = 32  # per session: uploads live in the server's memory


def _add_upload(uploads: dict, kind: str, file_name: str, circuit: Circuit) -> str:
    """Add `circuit` to the circuit list as "<kind>: <name>", with its own history; the same content
    uploaded again selects the entry it already has, so its edits are kept. Returns the entry."""
    same = next((k for k, c in uploads.items() if circuit_json(c) == circuit_json(circuit)), None)
    if same is not None:
        return same
    if len(uploads) >= MAX_UPLOADS:
        raise CircuitError(f"This session holds {MAX_UPLOADS} uploaded circuits already; save the ones "
                           "you need and reload the page to start afresh.")
    stem = file_name.removesuffix(".json").strip()[:60] or "circuit"
    key, n = f"{kind}: {stem}", 2
    while key in uploads:  # another file of the same name: both stay selectable
        key, n = f"{kind}: {stem} ({n})", n + 1
    uploads[key] = circuit
    return key


def _set_param(name: str, value: str | None) -> None:
    """Write a query parameter only when it changes (each write updates the browser's address)."""
    if value is None:
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != value:
        st.query_params[name] = value


HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?")  # "gpt2-large", "EleutherAI/pythia-160m"


def _model_from_url(choices: list[str]) -> None:
    """On a fresh session, the model the address names (one of those offered; never a folder)."""
    if not st.session_state.get("_url_model_read"):
        st.session_state["_url_model_read"] = True
        wanted = st.query_params.get("model")
        if wanted in choices and wanted not in ("local folder…", "hub name…") and "model_choice" not in st.session_state:
            st.session_state["model_choice"] = wanted
        elif (wanted and "hub name…" in choices and "model_choice" not in st.session_state
              and HUB_NAME.fullmatch(wanted) and ".." not in wanted and not Path(wanted).exists()):  # another hub model the link names (never a folder)
            st.session_state["model_choice"], st.session_state["model_hub"] = "hub name…", wanted
    if st.session_state.get("model_choice") not in (None, *choices):  # e.g. a choice this server does not offer
        del st.session_state["model_choice"]


# The methodology in the address: every field written out, so a link opens the same figures even
# after the defaults change. name in the address -> (widget key, parse, check).
URL_METHODOLOGY = {
    "task": ("task", str, lambda v: v in REGISTRY),
    "n": ("n", int, lambda v: 10 <= v <= 2000),
    "seed": ("seed", int, lambda v: 0 <= v <= 10_000),
    "mode": ("mode", str, lambda v: any(v in t.modes for t in REGISTRY.values())),
    "ref": ("ref_per_group", int, lambda v: 0 <= v <= 500),
    "reps": ("ref_replicates", int, lambda v: 0 <= v <= 50),
    "ablation": ("ablation", str, lambda v: v in [a.value for a in Ablation]),
    "positions": ("positions", str, lambda v: v in [p.value for p in PositionScope]),
}


def methodology_from_query(query: dict) -> tuple[dict, list[str]]:
    """Widget values for the address's settings, and the settings refused (name=value) as out of range."""
    values, bad = {}, []
    for name, (key, parse, ok) in URL_METHODOLOGY.items():
        text = query.get(name)
        if text is None:
            continue
        value = parse(text) if parse is str or (text.isascii() and text.isdigit()) else None
        if value is None or not ok(value):
            bad.append(f"{name}={text[:20]}")
        else:
            values[key] = value
    return values, bad


def _methodology_from_url() -> None:
    """On a fresh session, the methodology the address names; values out of range are named in a
    warning and left at their defaults."""
    if st.session_state.get("_url_meth_read"):
        return
    st.session_state["_url_meth_read"] = True
    values, bad = methodology_from_query(st.query_params.to_dict())
    for key, value in values.items():
        st.session_state.setdefault(key, value)
    if bad:
        st.session_state["_url_meth_warning"] = ("This page's address has settings the dashboard cannot use "
                                                 f"({', '.join(bad)}); they are left at their defaults.")


def _methodology_to_url(meth: Methodology) -> None:
    for name, (key, _, _) in URL_METHODOLOGY.items():
        field = {"ref": "ref_per_group", "reps": "ref_replicates"}.get(name, name)
        _set_param(name, str(getattr(meth, field)))
    if "_url_meth_warning" in st.session_state:
        st.sidebar.warning(st.session_state["_url_meth_warning"])


def share_link() -> None:
    """The address of this exact view (model, methodology, circuit, page), with a copy button."""
    url = st.context.url or ""
    base = url.split("?")[0]
    query = "&".join(f"{k}={v}" for k, v in st.query_params.to_dict().items())
    st.code(f"{base}?{query}" if query else base, language=None, wrap_lines=True)
    st.caption("Copy this link (button at its right): it opens this page with the same model, "
                       "methodology and circuit, and the same figures.")


def open_view(record: dict) -> None:
    """Open a saved run record: its model (when this dashboard offers it), methodology and circuit."""
    if not (isinstance(record, dict) and isinstance(record.get("methodology"), dict)
            and isinstance(record.get("circuit"), dict)):
        raise CircuitError("a run record is an object with 'methodology' and 'circuit' objects")
    meth = Methodology(**{k: v for k, v in record["methodology"].items() if k in Methodology.__dataclass_fields__})
    circuit = Circuit.from_dict(record["circuit"])
    key = (record.get("run") or {}).get("model_key") or (record.get("model") or {}).get("name")
    serve = serve_config()
    choices = list(serve.models) if serve else MODEL_CHOICES
    if key in choices and key != "local folder…":
        st.session_state["_pending_model_choice"] = key
    pending = {}
    for name, (widget, _, ok) in URL_METHODOLOGY.items():
        field = {"ref": "ref_per_group", "reps": "ref_replicates"}.get(name, name)
        value = getattr(meth, field)
        if not ok(value):
            raise ValueError(f"{field} = {value} is outside what the sidebar offers")
        pending[widget] = value
    st.session_state["_pending_view"] = pending  # applied before the widgets exist (see sidebar)
    uploads = st.session_state.setdefault("uploaded_circuits", {})
    st.session_state["circuit_choice_pending"] = _add_upload(uploads, "reopened", circuit.name, circuit)
    st.rerun()


def _show_url_warning(key: str) -> None:
    # Shown until another circuit is chosen: a job finishing reruns the page, which would lose it.
    if "_url_warning" not in st.session_state:
        return
    if st.session_state.setdefault("_url_warning_for", key) == key:
        st.warning(st.session_state["_url_warning"])
    else:
        del st.session_state["_url_warning"], st.session_state["_url_warning_for"]


def _circuit_to_url(key: str, from_file: bool, current: Circuit, loaded: Circuit) -> None:
    """Keep the circuit being edited in the page's address, so a reload brings it back: "from" names
    the entry, "circuit" carries the circuit itself unless it is a file's, unedited."""
    _set_param("from", key)
    if from_file and circuit_json(current) == circuit_json(loaded):
        _set_param("circuit", None)
        return
    try:
        _set_param("circuit", encode_circuit(current))
    except CircuitError as e:
        _set_param("circuit", None)
        st.sidebar.caption(f"A reload will not keep this circuit: {e}")


def _circuit_from_url(files: dict[str, Path], uploads: dict, model, model_key: str, task: str) -> None:
    """Bring back the circuit the address holds, as an edit of its file (undo returns to the file)
    or as an entry of its own; anything unreadable or unfitting is named in a warning and left out."""
    base, text = st.query_params.get("from"), st.query_params.get("circuit")
    if base in files:
        st.session_state["circuit_choice"] = base
    if not text:
        return
    try:
        roles = task_roles(task)
        circuit = decode_circuit(text)
        circuit.validate(model.n_layers, model.n_heads, roles, task=task)
    except (CircuitError, TaskError) as e:
        st.session_state["_url_warning"] = (f"The circuit in this page's address could not be brought back: {e} "
                                            "Showing a circuit from the list instead.")
        del st.query_params["circuit"]
        return
    if base in files:
        try:
            loaded = _load(files[base])
            loaded.validate(model.n_layers, model.n_heads, roles)
            history = History(loaded)
            history.push(circuit)
            st.session_state[_history_key(base, model_key)] = history
            return
        except CircuitError:  # the file changed or went: keep the circuit as an entry of its own
            pass
    label = base if isinstance(base, str) and base.startswith("uploaded: ") else f"restored: {circuit.name}"
    kind, _, name = label.partition(": ")
    try:
        st.session_state["circuit_choice"] = _add_upload(uploads, kind, name, circuit)
    except CircuitError as e:
        st.session_state["_url_warning"] = f"The circuit in this page's address could not be brought back: {e}"


def require_evaluator(ctx: Context):
    try:
        return get_evaluator(ctx.model_key, ctx.methodology)
    except TaskError as e:
        st.error(str(e))
        st.stop()


def methodology_caption(ctx: Context) -> str:
    from circuit_core.validate import describe_methodology

    return describe_methodology(ctx.methodology, ctx.model.name, ctx.circuit)
