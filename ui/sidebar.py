"""The sidebar: it turns the address and the widgets into a `View`, loads what the view names, and
returns a page's `Context`. Every page starts with `ctx = sidebar()`.

Order on each run: a fresh session reads its view from the address; the model widgets, then the
model (a model that cannot be loaded leaves the page with a message and the sidebar, and the
address's circuit waits for it); the methodology widgets; the circuit list and uploads; then the
address is rewritten from the view.
"""
from __future__ import annotations

import logging

import streamlit as st

from circuit_core.ablation import Ablation, Methodology, PositionScope, RefNoise
from circuit_core.circuit import Circuit, CircuitError
from circuit_core.editing import History
from circuit_core.interchange import read_circuit
from circuit_core.links import decode_circuit, encode_circuit
from circuit_core.models import ModelLoadError
from circuit_core.tasks import REGISTRY, TaskError, get_task, task_roles
from ui.circuits import WHOLE_MODEL, circuit_files, default_circuit_choice, load, whole_model_circuit
from ui.serve import ServeConfig, ServeConfigError, serve_config
from ui.session import Session, W
from ui.state import Context, circuit_json, get_model
from ui.view import FOLDER, HUB, MODEL_CHOICES, ModelRef, View

log = logging.getLogger(__name__)


def sidebar() -> Context:
    """Draw the session's choices and return the page's context; a page that cannot be drawn stops
    with a message saying what to choose instead."""
    st.set_page_config(page_title="Circuit validation", page_icon="🔬", layout="wide")
    session = Session.current()
    serve = _serve_or_stop()
    choices = list(serve.models) if serve else list(MODEL_CHOICES)
    if not session.address_read:  # a fresh session: a reload or an opened address
        view, bad = View.from_query(st.query_params.to_dict(), choices, serving=serve is not None)
        session.start_from(view)
        if bad:
            session.warnings["address"] = ("This page's address has settings the dashboard cannot use "
                                           f"({', '.join(bad)}); they are left at their defaults.")
    requested = session.apply_requests()
    session.keep_alive()
    if session.widget(W.MODEL) not in (None, *choices):  # e.g. a choice this server does not offer
        session.forget(W.MODEL)

    model_ref, model, model_key = _model(session, serve, choices)
    meth = _methodology(session)
    entry, preset = _circuit(session, model, model_ref, model_key, meth.task, W.CIRCUIT in requested)
    hkey = _history_key(model_key, entry, meth.task)
    history = session.history(*hkey, preset)
    view = View(model_ref, meth, entry, _encoded(entry, history, preset))
    _write_address(view, serve is not None)
    session.view = view
    with st.sidebar.expander("Share this view"):
        share_link()
    session.keep_widgets()
    return Context(view, session, model, model_key, preset, hkey)


# --- the model ------------------------------------------------------------------------------------------
def _serve_or_stop() -> ServeConfig | None:
    try:
        return serve_config()
    except ServeConfigError as e:
        log.error("%s", e)
        st.error("This dashboard's serving configuration cannot be used; whoever runs it will find why in its log.")
        st.stop()


# The model families a hub name can name (the architectures the engine is tested on), with examples.
HUB_FAMILIES = (
    ("GPT-2", ("gpt2-large", "gpt2-xl")),
    ("Pythia / GPT-NeoX", ("EleutherAI/pythia-160m", "EleutherAI/pythia-410m")),
    ("Llama", ("meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.1-8B")),
    ("Qwen2", ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2-0.5B")),
    ("Gemma-2", ("google/gemma-2-2b",)),
)


def _model(session: Session, serve: ServeConfig | None, choices: list[str]):
    sb = st.sidebar
    sb.header("Model")
    choice = sb.selectbox("Model", choices, key=W.MODEL,
                          help="The models this server offers." if serve else
                          "gpt2 / gpt2-medium from the Hugging Face hub (falls back to the bundled demo "
                          "when the hub is unreachable), the bundled demo, or a local Hugging Face folder.")
    name = ""
    if not serve and choice == HUB:  # any model TransformerLens supports, e.g. gpt2-large, pythia
        name = sb.text_input("Hub name", key=W.HUB, placeholder="e.g. EleutherAI/pythia-160m, Qwen/Qwen2.5-0.5B",
                             help="A Hugging Face hub name of a model TransformerLens supports; it is "
                                  "downloaded once into the Hugging Face cache. Supported families: "
                                  + "; ".join(f"{family} ({', '.join(names)})" for family, names in HUB_FAMILIES)
                                  + ". The tasks check their words against the model's tokenizer; Llama's and "
                                    "Gemma's prompts start with their BOS.").strip()
        sb.caption("Families: " + " · ".join(f"{family} (`{names[0]}`)" for family, names in HUB_FAMILIES))
        if not name:
            _stop_for_model(session, "Enter a Hugging Face hub name in the sidebar.")
    if not serve and choice == FOLDER:  # never offered when serving a group: no free-text paths
        name = sb.text_input("Folder", key=W.FOLDER, placeholder="/path/to/model").strip()
        if not name:
            _stop_for_model(session, "Enter the folder of a Hugging Face model in the sidebar.")
    ref = ModelRef(choice, name)
    model_key = ref.key(serve.models if serve else None)
    try:
        model, notice = get_model(model_key)
    except ModelLoadError as e:
        if serve is None:
            why = str(e)
        else:
            log.warning("model '%s' could not be loaded: %s", choice, e)
            why = f"Model '{choice}' cannot be loaded on this server; whoever runs the dashboard will find why in its log."
        _stop_for_model(session, why + "  \nChoose the model again in the sidebar (or fix the folder and reload).")
    if serve is not None:
        if notice:
            log.warning("%s", notice)
            notice = f"Model '{choice}' cannot be loaded on this server; using the bundled demo model."
        if model.source == "folder":
            model.name = choice  # the group knows a folder by its label; records and captions say that
    demo_choice = next((k for k in choices if (serve.models[k] if serve else k) == "demo"), None)
    if notice and demo_choice:
        # The model in use is the demo: say so in the sidebar too, and share the demo's edit history.
        session.warnings["fallback"] = notice
        session.request(**{W.MODEL: demo_choice})
        st.rerun()
    if notice:
        sb.warning(notice)
    if choice == demo_choice and session.warnings.get("fallback"):
        sb.warning(session.warnings["fallback"])
    facts = model.describe()
    slow = "" if facts["engine"] == "blocks" else " · hooked path (the fast engine does not cover this model: slower)"
    sb.caption(f"{facts['architecture']} · {model.n_layers} layers × {model.n_heads} heads · {model.device}{slow}")
    return ref, model, model_key


def _stop_for_model(session: Session, message: str) -> None:
    """No model: say so and keep everything else, the address's circuit included, until one loads."""
    st.info(message) if "Enter" in message else st.error(message)
    if session.waiting and (session.waiting.get("circuit") or session.waiting.get("from")):
        st.caption("The circuit in this page's address is kept: it comes back once its model is loaded.")
    session.keep_widgets()
    st.stop()


# --- the methodology ------------------------------------------------------------------------------------
def _methodology(session: Session) -> Methodology:
    sb = st.sidebar
    sb.header("Data")
    task = sb.selectbox("Task", tuple(REGISTRY), key=W.METHODOLOGY["task"],
                        format_func=lambda t: f"{t} · {REGISTRY[t].title}")
    spec = get_task(task)
    example = spec.example.replace("\n", " ↵ ")  # a prompt's line break, shown as one in a one-line caption
    sb.caption(f"e.g. “{example}” · metric: {spec.metric} · reference: {spec.reference}")
    c1, c2 = sb.columns(2)
    n = c1.number_input("N prompts", 10, 2000, 100, step=10, key=W.METHODOLOGY["n"])
    seed = c2.number_input("Seed", 0, 10_000, 0, key=W.METHODOLOGY["seed"])
    if session.widget(W.METHODOLOGY["mode"]) not in spec.modes:  # another task's mode: start from all of this one's
        session.set_widget(W.METHODOLOGY["mode"], "mixed")
    one, many = spec.group_label
    mode = sb.selectbox(many.capitalize(), spec.modes, key=W.METHODOLOGY["mode"],
                        help=f"mixed: every {one} of the task; or only the {many} of one kind.")
    default = Methodology()
    ref = sb.number_input("Reference prompts per group", 0, 500, default.ref_per_group, step=5,
                          key=W.METHODOLOGY["ref_per_group"],
                          help=f"Reference prompts per group for the means, drawn apart from the clean prompts "
                               f"({default.ref_per_group} by default: where faithfulness stops moving). 0: each "
                               "prompt's own reference twin, as in the paper (about N/30 per group). Small reference "
                               "sets lower faithfulness: see the README's curve.")
    reps = sb.number_input("Reference replicates for intervals", 0, 50, default.ref_replicates,
                           key=W.METHODOLOGY["ref_replicates"],
                           help="Bootstrap replicates of the reference set, so intervals include its noise. "
                                "Figures appear at once with prompts-only intervals; the joint intervals follow "
                                "in the background. 0: prompts only.")
    noise = sb.selectbox("Reference noise", [r.value for r in RefNoise], key=W.METHODOLOGY["ref_noise"],
                         help="How a set's values under each replicate are found. linear: to first order, one "
                              "backward pass per set on a stratified sample of the prompts (fast; held to the exact "
                              "replicates by the tests). exact: every set evaluated again under every replicate.")
    sb.header("Methodology")
    ablation = sb.selectbox("Ablation", [a.value for a in Ablation], key=W.METHODOLOGY["ablation"],
                            help=f"mean: mean over reference prompts of the same {one} (the paper). "
                                 "mean-pooled: over all reference prompts. resample: one other reference prompt. zero.")
    positions = sb.selectbox("Positions", [p.value for p in PositionScope], key=W.METHODOLOGY["positions"],
                             help="circuit: heads kept only at their class position (the paper); all: everywhere.")
    if "address" in session.warnings:
        sb.warning(session.warnings["address"])
    return Methodology(task=task, n=int(n), seed=int(seed), mode=mode, ablation=ablation, positions=positions,
                       ref_per_group=int(ref), ref_replicates=int(reps), ref_noise=noise)


# --- the circuit ----------------------------------------------------------------------------------------
def _circuit(session: Session, model, model_ref: ModelRef, model_key: str, task: str,
             requested: bool = False) -> tuple[str, Circuit]:
    """The circuit list's entry and the circuit as loaded; a circuit that does not fit the model is
    named in a warning and another is shown, so the page is never only an error."""
    sb = st.sidebar
    sb.header("Circuit")
    files = circuit_files(task)
    default, note = default_circuit_choice(model, files, task)
    if session.model_shown != model_key and not requested:
        # Another model: its own last circuit, else its default; never the last model's by accident
        # (the demo's 4 × 4 circuit fits a 12 × 12 model, but was not made for it).
        last = session.circuit_for.get(model_key)
        session.set_widget(W.CIRCUIT, last if last in [*files, *session.uploads, WHOLE_MODEL] else default)
    session.model_shown = model_key
    _restore_waiting(session, files, model, model_ref, model_key, task)  # may add an entry
    options = list(files) + list(session.uploads) + [WHOLE_MODEL]
    if session.widget(W.CIRCUIT) not in options:
        session.set_widget(W.CIRCUIT, default)
    key = sb.selectbox("Circuit", options, key=W.CIRCUIT)
    if key == default and note:
        sb.caption(note)
    for text in session.notes:
        sb.info(text)
    session.notes.clear()
    _upload(session, sb)
    try:
        preset = _loaded(session, key, files, model, task)
    except (CircuitError, TaskError) as e:
        # Never a page with only an error: the default circuit instead, and the reason in a warning.
        st.warning(f"Circuit '{key}' does not fit {model.name}: {e}  \nShowing '{default}' instead; choose "
                   "another circuit in the sidebar.")
        key = default
        session.request(**{W.CIRCUIT: default})
        preset = _loaded(session, key, files, model, task)
    _show_circuit_warning(session, key)
    session.circuit_for[model_key] = key
    return key, preset


def _loaded(session: Session, key: str, files: dict, model, task: str) -> Circuit:
    c = (whole_model_circuit(model, task) if key == WHOLE_MODEL else
         session.uploads[key] if key in session.uploads else load(files[key]))
    c.validate(model.n_layers, model.n_heads, task_roles(task), task=task)
    return c


def _upload(session: Session, sb) -> None:
    upload = sb.file_uploader("Upload a circuit (JSON)", type=["json"], key=W.UPLOAD,
                              help="A circuit file of this dashboard, or an EAP-IG / MIB graph (its heads become one "
                                   "class kept at END). Each upload keeps its own edits; earlier uploads stay listed.")
    if upload is None or session.last_upload == upload.file_id:
        return
    session.last_upload = upload.file_id
    try:
        # our circuit JSON, or an EAP-IG / MIB graph (its heads become one class kept at END)
        imported = read_circuit(upload.getvalue(), name=upload.name.removesuffix(".json"))
        session.notes.extend(f"{upload.name}: {note}" for note in imported.warnings)
        session.choose_circuit(session.upload("uploaded", upload.name, imported.circuit))
        st.rerun()
    except CircuitError as e:  # the message starts with the file's name; shown where the page starts too
        sb.error(str(e))
        st.error(f"Upload not taken in: {e}")


def _restore_waiting(session: Session, files: dict, model, model_ref: ModelRef, model_key: str, task: str) -> None:
    """Bring back the circuit the address held, once its model is loaded: as an edit of its file (undo
    returns to the file) or as an entry of its own; anything unreadable or unfitting is named in a
    warning and left out. While another model is shown, the circuit keeps waiting."""
    w = session.waiting
    if not w:
        return
    if w["model"] != model_ref:
        st.sidebar.caption(f"The circuit in this page's address belongs to model '{w['model'].name or w['model'].choice}'; "
                           "it comes back when that model is chosen.")
        return
    session.waiting = None
    base, text = w["from"], w["circuit"]
    listed = base in files or base == WHOLE_MODEL  # an entry the list always has
    if listed:
        session.set_widget(W.CIRCUIT, base)
    if text:
        try:
            roles = task_roles(task)
            circuit = decode_circuit(text)
            circuit.validate(model.n_layers, model.n_heads, roles, task=task)
        except (CircuitError, TaskError) as e:
            session.warnings["circuit"] = (f"The circuit in this page's address could not be brought back: {e} "
                                           "Showing a circuit from the list instead.")
            text = None
    if text:
        restored = False
        if listed:
            try:
                loaded = whole_model_circuit(model, task) if base == WHOLE_MODEL else load(files[base])
                loaded.validate(model.n_layers, model.n_heads, roles)
                history = History(loaded)
                if circuit_json(circuit) != circuit_json(loaded):
                    history.push(circuit)
                session.histories[_history_key(model_key, base, task)] = history
                restored = True
            except CircuitError:  # the file changed or went: keep the circuit as an entry of its own
                pass
        if not restored:
            label = base if isinstance(base, str) and base.startswith("uploaded: ") else f"restored: {circuit.name}"
            kind, _, name = label.partition(": ")
            try:
                session.set_widget(W.CIRCUIT, session.upload(kind, name, circuit))
            except CircuitError as e:
                session.warnings["circuit"] = f"The circuit in this page's address could not be brought back: {e}"


def _history_key(model_key: str, entry: str, task: str) -> tuple[str, str]:
    """One edit history per (model, circuit entry); the whole-model start is one per task too."""
    return model_key, f"{entry}::{task}" if entry == WHOLE_MODEL else entry


def _show_circuit_warning(session: Session, key: str) -> None:
    # Shown until another circuit is chosen: a job finishing reruns the page, which would lose it.
    if "circuit" not in session.warnings:
        return
    if session.circuit_warning_for in (None, key):
        session.circuit_warning_for = key
        st.warning(session.warnings["circuit"])
    else:
        del session.warnings["circuit"]
        session.circuit_warning_for = None


def _encoded(entry: str, history: History, preset: Circuit) -> str | None:
    """The circuit for the address: None when it is its file's, unedited (the entry names it)."""
    if (entry.startswith(("preset: ", "saved: ")) or entry == WHOLE_MODEL) and \
            circuit_json(history.current) == circuit_json(preset):
        return None
    try:
        return encode_circuit(history.current)
    except CircuitError as e:
        st.sidebar.caption(f"A reload will not keep this circuit: {e}")
        return None


# --- the address ------------------------------------------------------------------------------------------
def _write_address(view: View, serving: bool) -> None:
    """Write the view into the page's address, each parameter only when it changes (each write
    updates the browser's address)."""
    want = view.to_query(serving)
    for name in list(st.query_params):
        if name not in want:
            del st.query_params[name]
    for name, value in want.items():
        if st.query_params.get(name) != value:
            st.query_params[name] = value


def share_link() -> None:
    """The address of this exact view (model, methodology, circuit, page), with a copy button."""
    url = st.context.url or ""
    base = url.split("?")[0]
    query = "&".join(f"{k}={v}" for k, v in st.query_params.to_dict().items())
    st.code(f"{base}?{query}" if query else base, language=None, wrap_lines=True)
    st.caption("Copy this link (button at its right): it opens this page with the same model, "
               "methodology and circuit, and the same figures.")


def open_record(ctx: Context, record: dict) -> None:
    """Open a saved run record in this session (its model when this dashboard offers it, its
    methodology and circuit), then rerun; errors say why the record cannot be opened."""
    serve = serve_config()
    ctx.session.open_record(record, list(serve.models) if serve else list(MODEL_CHOICES))
    st.rerun()
