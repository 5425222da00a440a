"""Tasks, one module each (tasks/<name>.py defines TASK, a base.Task), registered here by name.

To add a task: write the module (see the README's "Adding a task") and add its name to MODULES, or
keep it in your own package and name it in $CIRCUIT_TASK_MODULES (importable modules, comma-separated).
"""
from __future__ import annotations

import importlib
import os

from .base import Task, TaskDataset, TaskError

MODULES = ("ioi", "colored_objects", "acronyms")  # tasks/<name>.py, each defining TASK

REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Make `task` known by its name to build_dataset, circuit files, the CLI and the dashboard."""
    global TASKS
    if not isinstance(task, Task):
        raise TypeError(f"register() takes a tasks.base.Task, not {type(task).__name__}")
    REGISTRY[task.name] = task
    TASKS = tuple(REGISTRY)
    return task


def _load_modules() -> None:
    for name in MODULES:
        register(importlib.import_module(f".{name}", __name__).TASK)
    for name in filter(None, (m.strip() for m in os.environ.get("CIRCUIT_TASK_MODULES", "").split(","))):
        try:
            register(importlib.import_module(name).TASK)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise TaskError(f"CIRCUIT_TASK_MODULES names '{name}', which could not be registered: {exc}") from exc


TASKS: tuple[str, ...] = ()  # names, in the order shown to users
_load_modules()


def get_task(name: str) -> Task:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise TaskError(f"Unknown task '{name}'. Known tasks: {', '.join(TASKS)}.") from None


def build_dataset(task: str, tokenizer, **kwargs) -> TaskDataset:
    t = get_task(task)
    mode = kwargs.get("mode", "mixed")
    if mode not in t.modes:
        raise TaskError(f"Task '{task}' has no mode '{mode}'. Choose one of: {', '.join(t.modes)}.")
    dataset = t.build(tokenizer, **kwargs)
    dataset.task = t.name
    return dataset


def task_roles(task: str) -> tuple[str, ...]:
    return get_task(task).roles


__all__ = ["Task", "TaskDataset", "TaskError", "build_dataset", "get_task", "register", "task_roles", "TASKS",
           "REGISTRY"]
