"""Tasks, one module each (tasks/<name>.py defines TASK, a base.Task), registered here by name.

To add a task: write the module (see the README's "Adding a task"), add its name to MODULES.
"""
from __future__ import annotations

import importlib

from .base import Task, TaskDataset, TaskError

MODULES = ("ioi",)  # tasks/<name>.py, each defining TASK

REGISTRY: dict[str, Task] = {}
for _module in MODULES:
    _task = importlib.import_module(f".{_module}", __name__).TASK
    REGISTRY[_task.name] = _task

TASKS = tuple(REGISTRY)  # names, in the order shown to users


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


__all__ = ["Task", "TaskDataset", "TaskError", "build_dataset", "get_task", "task_roles", "TASKS", "REGISTRY"]
