"""The session's choices (sidebar), cached models/evaluators/results, and the circuit being edited.

Pages call `sidebar()` first; it returns a Context with everything a page needs. Science stays in
circuit_core; this module only wires it to Streamlit.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from circuit_core.ablation import Ablation, Methodology, PositionScope
from circuit_core.circuit import Circuit, CircuitError
from circuit_core.editing import History
from circuit_core.models import DATA_DIR, ModelLoadError, load_model, load_model_or_demo
from circuit_core.tasks import TASKS, TaskError, task_roles
from circuit_core.tasks.ioi import MODES

PRESET_DIR = DATA_DIR / "circuits"
SAVED_DIR = Path(os.environ.get("CIRCUIT_DASHBOARD_SAVED", PRESET_DIR / "saved"))
MODEL_CHOICES = ["gpt2", "gpt2-medium", "demo", "local folder…"]
SIDEBAR_KEYS = ["model_choice", "model_folder", "task", "n", "seed", "mode", "ref_per_group", "ref_replicates",
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
@st.cache_resource(show_spinner="Loading model…")
def get_model(name: str):
    """(model, notice); gpt2 and gpt2-medium fall back to the bundled demo when they cannot be had."""
    if name in ("gpt2", "gpt2-medium"):
        return load_model_or_demo(name)
    return load_model(name), None


@st.cache_resource(show_spinner="Building prompts and reference means…")
def get_evaluator(model_key: str, methodology: Methodology):
    from circuit_core.evaluate import build_evaluator

    model, _ = get_model(model_key)
    return build_evaluator(model, methodology)


@st.cache_data(show_spinner="Evaluating faithfulness…", max_entries=256)
def faithfulness_result(model_key: str, methodology: Methodology, circuit_json: str,
                        reference_noise: bool = False) -> dict:
    """Prompts-only intervals by default: the figures at once after an edit; the joint intervals
    (reference replicates) cost one evaluation per replicate and come from a background job."""
    from circuit_core.criteria import faithfulness

    f = faithfulness(get_evaluator(model_key, methodology), Circuit.from_dict(json.loads(circuit_json)),
                     reference_noise=reference_noise)
    return f.to_dict()


@st.cache_data(show_spinner="Scoring head roles…", max_entries=32)
def role_scores(model_key: str, methodology: Methodology):
    """Previous-token, duplicate-token, induction, attention and direct-effect scores (a few passes)."""
    from circuit_core.heads import head_scores

    return head_scores(get_evaluator(model_key, methodology), ablation=False)


def circuit_json(c: Circuit) -> str:
    return json.dumps(c.to_dict(), sort_keys=True)


# --- circuits on disk -------------------------------------------------------------------------------
def circuit_files() -> dict[str, Path]:
    """Shipped presets and saved circuits, by display name."""
    files = {f"preset: {p.stem}": p for p in sorted(PRESET_DIR.glob("*.json"))}
    if SAVED_DIR.exists():
        files.update({f"saved: {p.stem}": p for p in sorted(SAVED_DIR.glob("*.json"))})
    return files


def default_circuit_choice(model, files: dict[str, Path]) -> str:
    """The preset made for this model (its `model` field), else the first one."""
    want = "demo" if model.source == "demo" else model.name
    for key, path in files.items():
        try:
            if json.loads(path.read_text()).get("model") == want:
                return key
        except (OSError, ValueError):
            continue
    return next(iter(files))


def save_circuit(c: Circuit, name: str) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_ " else "-" for ch in name).strip().replace(" ", "-")
    if not safe:
        raise CircuitError("Give the circuit a name to save it under.")
    SAVED_DIR.mkdir(parents=True, exist_ok=True)
    c.name = name
    path = SAVED_DIR / f"{safe}.json"
    c.save(path)
    return path


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
    _keep_widget_state()
    sb = st.sidebar
    sb.header("Model")
    choice = sb.selectbox("Model", MODEL_CHOICES, key="model_choice",
                          help="gpt2 / gpt2-medium from the Hugging Face hub (falls back to the bundled demo "
                               "when the hub is unreachable), the bundled demo, or a local Hugging Face folder.")
    model_key = choice
    if choice == "local folder…":
        model_key = sb.text_input("Folder", key="model_folder", placeholder="/path/to/model").strip()
        if not model_key:
            st.info("Enter the folder of a Hugging Face model in the sidebar.")
            st.stop()
    try:
        model, notice = get_model(model_key)
    except ModelLoadError as e:
        st.error(str(e))
        st.stop()
    if notice:
        # The model in use is the demo: say so in the sidebar too, and share the demo's edit history.
        st.session_state["_fallback_notice"] = notice
        st.session_state["_pending_model_choice"] = "demo"
        st.rerun()
    if choice == "demo" and st.session_state.get("_fallback_notice"):
        sb.warning(st.session_state["_fallback_notice"])
    sb.caption(f"{model.describe()['architecture']} · {model.n_layers} layers × {model.n_heads} heads · {model.device}")

    sb.header("Data")
    task = sb.selectbox("Task", TASKS, key="task")
    c1, c2 = sb.columns(2)
    n = c1.number_input("N prompts", 10, 2000, 100, step=10, key="n")
    seed = c2.number_input("Seed", 0, 10_000, 0, key="seed")
    mode = sb.selectbox("Templates", MODES, key="mode", help="mixed = all 15 BABA + 15 ABBA templates")
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

    sb.header("Circuit")
    files = circuit_files()
    if st.session_state.pop("circuit_choice_pending", None):
        st.session_state["circuit_choice"] = "uploaded"
    if st.session_state.get("circuit_choice") not in list(files) + ["uploaded"]:
        st.session_state["circuit_choice"] = default_circuit_choice(model, files)
    options = list(files) + (["uploaded"] if "uploaded_circuit" in st.session_state else [])
    key = sb.selectbox("Circuit", options, key="circuit_choice")
    upload = sb.file_uploader("Upload a circuit (JSON)", type=["json"], key="upload")
    if upload is not None and st.session_state.get("upload_id") != upload.file_id:
        st.session_state["upload_id"] = upload.file_id
        try:
            st.session_state["uploaded_circuit"] = Circuit.from_dict(json.loads(upload.getvalue()))
            st.session_state.pop(_history_key("uploaded", model_key), None)
            st.session_state.pop(f"save-name-{_history_key('uploaded', model_key)}", None)  # the new file's name
            st.session_state["circuit_choice_pending"] = "uploaded"
            st.rerun()
        except (ValueError, CircuitError) as e:
            sb.error(f"{upload.name}: {e}")
    try:
        preset = (st.session_state["uploaded_circuit"] if key == "uploaded" else _load(files[key]))
        preset.validate(model.n_layers, model.n_heads, task_roles(task))
    except (CircuitError, TaskError) as e:
        st.error(f"Circuit '{key}' does not fit {model.name}: {e}  \nChoose another circuit in the sidebar.")
        st.stop()
    hkey = _history_key(key, model_key)
    if hkey not in st.session_state:  # one edit history per (circuit, model): switching loses nothing
        st.session_state[hkey] = History(preset)
    history = st.session_state[hkey]
    _remember_widget_state()
    return Context(model, model_key, meth, history.current, preset, history, hkey)


def _history_key(circuit_key: str, model_key: str) -> str:
    return f"history::{model_key}::{circuit_key}"


def _load(path: Path) -> Circuit:
    from circuit_core.circuit import load_circuit

    return load_circuit(path)


def require_evaluator(ctx: Context):
    try:
        return get_evaluator(ctx.model_key, ctx.methodology)
    except TaskError as e:
        st.error(str(e))
        st.stop()


def methodology_caption(ctx: Context) -> str:
    m = ctx.methodology
    abl = {"mean": "mean ablation per template", "mean-pooled": "pooled mean ablation",
           "resample": "resample ablation", "zero": "zero ablation"}[m.ablation]
    ref = f"{m.ref_per_group} reference prompts per group" if m.ref_per_group else "paired ABC references"
    if m.ref_replicates:
        ref += f" ({m.ref_replicates} replicates in the intervals)"
    return (f"{ctx.model.name} · {m.task.upper()} · N={m.n}, seed {m.seed}, {m.mode} · {ref} · {abl} · "
            f"{'circuit positions' if m.positions == 'circuit' else 'all positions'} · "
            f"circuit '{ctx.circuit.name}' ({len(ctx.circuit.heads)} heads)")
