"""The circuit list: shipped presets and saved circuits on disk, the whole-model start, saving a copy.

No Streamlit here. A circuit file's error names the file, never where it lives on the server.
"""
from __future__ import annotations

import functools
import json
import os
import re
import secrets
from pathlib import Path

from circuit_core.circuit import ALL_POSITIONS, Circuit, CircuitClass, CircuitError, load_circuit
from circuit_core.models import DATA_DIR
from circuit_core.tasks import TaskError, task_roles

PRESET_DIR = DATA_DIR / "circuits"
SAVED_DIR = Path(os.environ.get("CIRCUIT_DASHBOARD_SAVED", PRESET_DIR / "saved"))
WHOLE_MODEL = "start: every head (whole model)"
# (layers, heads) of the models the shipped circuits name: a circuit is offered first to a model of
# its own model's shape (a GPT-2-small-shaped folder gets the paper's circuit, never the demo's).
KNOWN_SHAPES = {"gpt2": (12, 12), "gpt2-small": (12, 12), "gpt2-medium": (24, 16), "demo": (4, 4)}


def circuit_files(task: str | None = None) -> dict[str, Path]:
    """Shipped presets and saved circuits, by display name; with `task`, only that task's."""
    files = {f"preset: {p.stem}": p for p in sorted(PRESET_DIR.glob("*.json"))}
    if SAVED_DIR.exists():
        files.update({f"saved: {p.stem}": p for p in sorted(SAVED_DIR.glob("*.json"))})
    return files if task is None else {k: p for k, p in files.items() if circuit_task(p) == task}


def _header(path: Path) -> dict | None:
    """A circuit file's top-level fields (without reading a huge file whole), None if unreadable."""
    try:
        stat = path.stat()
        return _read_header(str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return None


@functools.lru_cache(maxsize=512)
def _read_header(path: str, mtime: int, size: int) -> dict | None:
    try:
        d = json.loads(Path(path).read_bytes()[: 1 << 20])
        if not isinstance(d, dict):
            return None
        heads = sum(len(c.get("heads", [])) for c in d.get("classes", []) if isinstance(c, dict))
        return {"task": d.get("task"), "model": d.get("model"), "heads": heads, "edges": "edges" in d}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def circuit_task(path: Path) -> str | None:
    """The task a circuit file names ("ioi" when it names none), None when it cannot be read: such a
    file stays listed under every task, so its error shows when it is picked."""
    head = _header(path)
    task = None if head is None else (head["task"] or "ioi")
    return task if isinstance(task, str) else None


def load(path: Path) -> Circuit:
    try:
        return load_circuit(path)
    except CircuitError as e:  # name the file, not where it lives on the server
        raise CircuitError(str(e).replace(str(path), path.name)) from None


def whole_model_circuit(model, task: str) -> Circuit:
    """Where a circuit search starts when a task has no circuit yet: every head at every position
    (F(C) = F(M)). Remove heads in the editor, or add those activation patching points to."""
    heads = [(l, h) for l in range(model.n_layers) for h in range(model.n_heads)]
    return Circuit(name=f"{task}: every head", task=task, classes=[CircuitClass("all heads", ALL_POSITIONS, heads)])


def default_circuit_choice(model, files: dict[str, Path], task: str = "ioi") -> tuple[str, str | None]:
    """(entry, note): the preset made for this model (its `model` field), else one made for a model of
    this model's shape (the note says so), else the whole-model start (the note says why). A first
    view is never an error about a circuit the user did not pick, nor another shape's circuit."""
    want = "demo" if model.source == "demo" else model.name
    shape = (model.n_layers, model.n_heads)
    # Within each rule the largest circuit first: the paper's full claim before its naive baseline; at one
    # size the node-level claim before an edge list that refines it.
    heads = dict(sorted(((k, _header(p) or {}) for k, p in files.items()),
                        key=lambda kv: (-(kv[1].get("heads") or 0), bool(kv[1].get("edges")))))
    for key, head in heads.items():
        if head.get("model") == want and _fits(files[key], model, task):
            return key, None
    for key, head in heads.items():
        made_for = head.get("model")
        if KNOWN_SHAPES.get(made_for) == shape and _fits(files[key], model, task):
            return key, (f"Starting from '{key}', made for {made_for}: this model has its shape "
                         f"({shape[0]} layers × {shape[1]} heads). Choose another circuit in the sidebar.")
    return WHOLE_MODEL, (f"No circuit in the list is made for a model of this shape ({shape[0]} layers × "
                         f"{shape[1]} heads): starting from every head. Remove heads in the editor, or upload a circuit.")


def _fits(path: Path, model, task: str) -> bool:
    try:
        load(path).validate(model.n_layers, model.n_heads, task_roles(task), task=task)
        return True
    except (CircuitError, TaskError):
        return False


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
