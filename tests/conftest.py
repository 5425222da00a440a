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
