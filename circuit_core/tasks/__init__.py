"""Tasks: each module builds a TaskDataset for a tokenizer. `build_dataset` picks by name."""
from __future__ import annotations

from .base import TaskDataset, TaskError

TASKS = ("ioi",)


def build_dataset(task: str, tokenizer, **kwargs) -> TaskDataset:
    if task == "ioi":
        from .ioi import make_ioi_dataset

        return make_ioi_dataset(tokenizer, **kwargs)
    raise TaskError(f"Unknown task '{task}'. Known tasks: {', '.join(TASKS)}.")


def task_roles(task: str) -> tuple[str, ...]:
    if task == "ioi":
        from .ioi import ROLES

        return ROLES
    raise TaskError(f"Unknown task '{task}'. Known tasks: {', '.join(TASKS)}.")


__all__ = ["TaskDataset", "TaskError", "build_dataset", "task_roles", "TASKS"]
