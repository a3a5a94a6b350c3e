"""Tasks: `load(name, path=None, options=None)` returns a Task with `problems(split)` and
`score(problem, output)` in [0, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scoreflow.errors import UserError
from scoreflow.tasks.base import SPLITS, Problem, Task

TASKS = ("arith", "gsm8k", "math", "humaneval", "mbpp", "hotpotqa", "drop", "jsonl")


def load(name: str, path: str | Path | None = None, options: dict[str, Any] | None = None) -> Task:
    """`path`: a split file, a folder of split files or a folder of task folders (None: the
    download cache). `options`: the `[task]` config section (`jsonl`; `preload_imports` for the code tasks)."""
    if name == "arith":
        from scoreflow.tasks.arith import ArithTask

        return ArithTask()
    if name == "gsm8k":
        from scoreflow.tasks.gsm8k import GSM8KTask

        return GSM8KTask(path)
    if name == "math":
        from scoreflow.tasks.math_task import MATHTask

        return MATHTask(path)
    if name == "humaneval":
        from scoreflow.tasks.code_tasks import HumanEvalTask

        return HumanEvalTask(path, preload_imports=(options or {}).get("preload_imports", True))
    if name == "mbpp":
        from scoreflow.tasks.code_tasks import MBPPTask

        return MBPPTask(path, preload_imports=(options or {}).get("preload_imports", True))
    if name == "hotpotqa":
        from scoreflow.tasks.qa_tasks import HotpotQATask

        return HotpotQATask(path)
    if name == "drop":
        from scoreflow.tasks.qa_tasks import DROPTask

        return DROPTask(path)
    if name == "jsonl":
        from scoreflow.tasks.jsonl_task import JsonlTask

        return JsonlTask(path, options)
    raise UserError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")


__all__ = ["load", "Task", "Problem", "SPLITS", "TASKS"]
