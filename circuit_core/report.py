"""Run records: everything needed to recompute a result without this project.

A record holds the methodology, the model's identity, the circuit, the exact tokens of the clean
and reference prompts with their groups, role positions and answer tokens, and every result with
the per-prompt values behind it. The schema is documented in the README.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from .storage import atomic_write_text

SCHEMA_VERSION = 1


def dataset_record(dataset) -> dict:
    return {
        "task": dataset.task,
        "prompts": dataset.prompts,
        "reference_prompts": dataset.reference_prompts,
        "tokens": dataset.token_lists(),
        "reference_tokens": dataset.token_lists(reference=True),
        "groups": dataset.groups.tolist(),
        "reference_groups": dataset.ref_groups.tolist(),
        "group_names": dataset.group_names,
        "positions": {role: p.tolist() for role, p in dataset.positions.items()},
        "answer_tokens": dataset.answer_tokens.tolist(),
        "meta": dataset.meta,
    }


def run_record(evaluator, circuit, results: dict) -> dict:
    """A JSON-ready record for a run on `evaluator` (its model, dataset and methodology)."""
    from . import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool": {"name": "circuit_core", "version": __version__},
        "methodology": evaluator.methodology.to_dict(),
        "model": evaluator.model.describe(),
        "circuit": circuit.to_dict() if circuit is not None else None,
        "dataset": dataset_record(evaluator.dataset),
        "results": results,
    }


def save_record(record: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: an interrupted run never leaves a truncated record where an older good one was.
    return atomic_write_text(path, json.dumps(record, indent=1, allow_nan=True))


def load_record(path) -> dict:
    return json.loads(Path(path).read_text())
