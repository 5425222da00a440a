"""Shared fixtures: tiny GPT-2-architecture models built here, saved to a folder, and loaded through
the same `load_model` path as any real model. No network."""
from __future__ import annotations

import os
import tempfile

import pytest
import torch

# Ablation values cached on disk (means_cache) go to a folder of this run, never the user's cache;
# set before anything is computed, and inherited by the CLI and dashboard subprocesses.
os.environ["CIRCUIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="circuit-means-")

from circuit_core.ablation import Methodology
from circuit_core.evaluate import Evaluator
from circuit_core.models import load_model
from circuit_core.tasks import build_dataset
from circuit_core.toy import save_random_gpt2

torch.set_num_threads(2)

TINY = dict(n_layer=3, n_head=4, n_embd=32, init_std=0.3, seed=0)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Folder holding a random 3-layer, 4-head GPT-2 (random biases) with a word-level tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    save_random_gpt2(folder, **TINY)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    return load_model(str(tiny_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_hf(tiny_dir):
    """The same weights as a plain Hugging Face model, for independent computations."""
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(tiny_dir).eval()


@pytest.fixture(scope="session")
def tiny_dataset(tiny_model):
    return build_dataset("ioi", tiny_model.tokenizer, n=40, seed=3)


@pytest.fixture(scope="session")
def tiny_evaluator(tiny_model, tiny_dataset):
    return Evaluator(tiny_model, tiny_dataset, Methodology(n=40, seed=3))


# --- models that really do the other tasks (tests/test_tasks.py) -----------------------------------------
@pytest.fixture(scope="session")
def colored_objects_model(tmp_path_factory):
    """A 2-layer GPT-2 that does Colored Objects (accuracy 1.0) by a known circuit,
    train_task.WIRED_COLORED_OBJECTS: written by hand, because a tiny model trained on the task in
    seconds stays at "some colour of the list" (see train_task's notes). Built in ~0.1 s."""
    from circuit_core.demo.train_task import wire_colored_objects_model

    folder = tmp_path_factory.mktemp("colored-objects-model")
    wire_colored_objects_model(folder, seed=0)
    return load_model(str(folder), device="cpu")


@pytest.fixture(scope="session")
def acronyms_model(tmp_path_factory):
    """A 2-layer, 4-head, 64-wide GPT-2 trained on acronyms (200 steps, a few seconds): it names the
    third letter (accuracy ~1.0 among the 26 capitals, prompts without BOS)."""
    from circuit_core.demo.train_task import train_task_model

    folder = tmp_path_factory.mktemp("acronyms-model")
    train_task_model(folder, "acronyms", steps=200, pool=1024, batch=32, lr=1e-2, seed=0)
    return load_model(str(folder), device="cpu")


# --- the dashboard in AppTest sessions (tests of ui/ and pages/) -------------------------------------------
class Dashboard:
    """Pages driven in Streamlit AppTest sessions. A page opens at a View, the way a link opens it
    (the demo model by default: tests never reach the hub), and the session is read through
    `ui.session.Session`, never by key."""

    ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

    @staticmethod
    def view(model: str = "demo", folder: str | None = None, circuit_from: str | None = None, **methodology):
        from ui.view import FOLDER, ModelRef, View

        ref = ModelRef(FOLDER, folder) if folder else ModelRef(model)
        return View(ref, Methodology(**methodology), circuit_from)

    @classmethod
    def open(cls, page: str, view=None, query: dict | None = None, widgets: dict | None = None):
        """`page` (e.g. "pages/2_Faithfulness.py") in a new session at `view`, or at the raw address `query`;
        `widgets`: the page's own widget values, set before it is drawn."""
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(cls.ROOT / page), default_timeout=300)
        at.query_params.update(query if query is not None else (view or cls.view()).to_query())
        if widgets:
            cls.session(at).request(**widgets)
        return at.run()

    @staticmethod
    def session(at):
        from ui.session import Session

        return Session.of(at)

    @classmethod
    def history(cls, at, entry: str = "preset: ioi-demo", model: str = "demo"):
        return cls.session(at).history_of(model, entry)

    @classmethod
    def job(cls, at, kind: str):
        """The session's job of this kind (the first element of its key)."""
        return next(j for k, j in cls.session(at).jobs.items() if k[0] == kind)

    @classmethod
    def finish_jobs(cls, at, seconds: float = 240):
        for job in list(cls.session(at).jobs.values()):
            assert job.wait(seconds) and job.error is None, job.error
        return at.run()


@pytest.fixture
def dash():
    return Dashboard
