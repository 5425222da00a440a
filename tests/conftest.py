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
