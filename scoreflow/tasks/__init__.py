"""Tasks: `load(name, path=None)` returns a Task with `problems(split)` and `score(problem, output)`."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .base import SPLITS, Problem, Task

TASKS = ("arith", "gsm8k")


def load(name: str, path: str | Path | None = None) -> Task:
    if name == "arith":
        from .arith import ArithTask

        return ArithTask()
    if name == "gsm8k":
        from .gsm8k import GSM8KTask

        return GSM8KTask(path)
    raise UserError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")


__all__ = ["load", "Task", "Problem", "SPLITS", "TASKS"]
