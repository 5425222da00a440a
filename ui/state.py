"""A page's context, and the resources every session shares: models, evaluators, cached figures.

`ui.sidebar.sidebar()` builds the Context; the session's own state is `ui.session.Session`. Science
stays in circuit_core; this module only caches it for Streamlit.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import streamlit as st

from circuit_core.ablation import Methodology
from circuit_core.circuit import Circuit
from circuit_core.models import load_model, load_model_or_demo
from circuit_core.tasks import TaskError, get_task
from ui.session import Session
from ui.view import View


@dataclass(frozen=True, eq=False)
class Context:
    """What a page draws: the view (model, methodology, circuit entry), the session, and what the
    view names, loaded."""

    view: View
    session: Session
    model: object
    model_key: str  # what get_model was called with (cache key)
    preset: Circuit  # the circuit as loaded, for "change against preset"
    history_key: tuple[str, str]  # (model key, circuit entry): the edit history's key in the session

    @property
    def methodology(self) -> Methodology:
        return self.view.methodology

    @property
    def history(self):
        return self.session.histories[self.history_key]

    @property
    def circuit(self) -> Circuit:
        """The circuit being edited (current state)."""
        return self.history.current

    @property
    def circuit_key(self) -> str:
        """The circuit entry on this model, as text (for widget keys)."""
        return "::".join(self.history_key)

    @property
    def edits(self):
        return self.session.edits_of(self.history_key)


# --- cached resources -----------------------------------------------------------------------------
# Two models at most: each holds its weights, its residual cache and its evaluators (see the README's
# "Memory"); a third model asked for drops the least recently used.
@st.cache_resource(show_spinner="Loading model…", max_entries=2)
def get_model(name: str):
    """(model, notice); gpt2 and gpt2-medium fall back to the bundled demo when they cannot be had.
    The weights' floating-point type is $CIRCUIT_DTYPE (float32 by default; bfloat16 or float16 halve the
    memory: the README's "Memory")."""
    dtype = os.environ.get("CIRCUIT_DTYPE") or None
    if name in ("gpt2", "gpt2-medium"):
        return load_model_or_demo(name, dtype=dtype)
    return load_model(name, dtype=dtype), None


def get_evaluator(model_key: str, methodology: Methodology):
    """The model's evaluator for this methodology, shared by every session. Kept in the model's own
    cache (circuit_core's EvaluatorCache), bounded in entries and bytes, which Streamlit's cannot be;
    another position scope or bootstrap count reuses the cached evaluator's tables and results."""
    model, _ = get_model(model_key)
    if methodology in model.evaluators:
        return model.evaluators.get(methodology)
    from circuit_core.progress import reporting
    from ui.format import progress_text

    bar, started = st.progress(0.0, text="Building prompts and reference means…"), time.time()

    def show(done: int, total: int):
        frac, text = progress_text("Reference means (once per model and methodology; later read from the disk "
                                   "cache): prompts", done, total, time.time() - started)
        bar.progress(frac, text=text.replace(" (the page stays usable)", ""))

    try:
        with st.spinner("Building prompts and reference means…"), reporting(show):
            return model.evaluators.get(methodology)
    finally:
        bar.empty()


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


def require_evaluator(ctx: Context):
    """The page's evaluator; a task this model cannot run stops the page with what can run it."""
    try:
        return get_evaluator(ctx.model_key, ctx.methodology)
    except TaskError as e:
        task = get_task(ctx.methodology.task)
        st.warning(f"**{task.title} cannot run on {ctx.model.name}.** {e}")
        st.info(f"{task.title} needs its words as single tokens of the model's tokenizer, as they appear inside "
                "a prompt. Each tokenizer is checked when its model is chosen (the words that split are named "
                "above); GPT-2's tokenizer has them all. The bundled demo model knows only the IOI task's words. "
                "Choose another task or model in the sidebar: circuits and edits are kept.")
        st.stop()


def methodology_caption(ctx: Context) -> str:
    from circuit_core.validate import describe_methodology

    return describe_methodology(ctx.methodology, ctx.model.name, ctx.circuit)
