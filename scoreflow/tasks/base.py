"""What a task is: its problems (per split), its scorer, its operators and what its generator prompt needs."""

from __future__ import annotations

from abc import ABC, abstractmethod

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from scoreflow.errors import UserError

SPLITS = ("validate", "test")  # validate = the optimisation split; test = the reported split


@dataclass
class Problem:
    id: str
    question: str  # what the generator sees (for QA: the question alone, as in the paper)
    inputs: str  # what the workflow sees as `self.problem` (for QA: with the context/passage)
    answer: Any  # the gold answer; never sent to the sandbox or the executor
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. entry_point, tests

    def attributes(self) -> dict[str, str]:
        """Attributes of `self` inside a workflow."""
        attrs = {"problem": self.inputs}
        if "entry_point" in self.extra:
            attrs["entry_point"] = str(self.extra["entry_point"])
        return attrs


@dataclass
class Task(ABC):
    name: str
    family: str  # "math" | "qa" | "code"
    description: str  # one line for the generator prompt
    operators: tuple[str, ...]  # operator names from scoreflow.execute.operators
    template: str  # the template workflow (source of `async def run_workflow(self)`)
    toy: Problem  # the validation test prompt
    similarity_threshold: float | None  # reject bodies at least this similar to the template
    extract: str | None = None  # answer-extraction instruction run once after a workflow, or None
    examples: tuple[tuple[str, str], ...] = ()  # few-shot (question, workflow source) for the generator prompt
    judged: bool = False  # test-split reports add the executor's 1/0 verdict (tasks/judge.py), as the reference does
    judge_length_ratio: float = 0.0  # judged 0 unasked when the answer is >= this many times longer or shorter
    # than the gold answer, in characters (0 = no such guard; HotpotQA: 10, the reference's rule)

    @abstractmethod
    def problems(self, split: str) -> list[Problem]:
        """The problems of `split` (validate = the optimisation split, test = the reported split)."""

    @abstractmethod
    def score(self, problem: Problem, output: str) -> float:
        """The task score of `output` on `problem`, in [0, 1]."""

    def describe_change(self, problems: list[Problem], base: list[str | None], trained: list[str | None]) -> str:
        """In words, how the trained generator's workflows (`trained`, one source per problem, None when
        invalid) differ from the base generator's (`base`) on the same problems; "" when the task has
        nothing to say beyond the solve rates."""
        return ""

    async def ascore(self, problem: Problem, output: str, sandbox: Any = None) -> float:
        """`score` for async callers; code tasks run their tests in `sandbox` (a shared
        scoreflow.sandbox.parent.Sandbox bounds how many run at once)."""
        return await asyncio.to_thread(self.score, problem, output)


def read_jsonl(path: Path) -> Iterator[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: broken JSON line ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise UserError(f"{path}:{n}: expected a JSON object per line")
                yield rec
    except FileNotFoundError:
        raise UserError(f"data file not found: {path}") from None
    except PermissionError:
        raise UserError(f"data file is not readable: {path}") from None
    except IsADirectoryError:
        raise UserError(f"expected a data file but found a folder: {path}") from None


def require(rec: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in rec]
    if missing:
        raise UserError(f"{where}: record lacks field(s) {', '.join(missing)}")


def split_file(name: str, split: str, path: str | Path | None, filename: str | None = None) -> Path:
    """Find `<name>_<split>.jsonl` given a file, a folder of such files, or a folder of task folders."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: use validate or test")
    filename = filename or f"{name}_{split}.jsonl"
    if path is None:
        from scoreflow.tasks.download import fetch

        return fetch(name, filename)
    p = Path(path).expanduser()
    if p.is_file():
        other = [f"{name}_{s}.jsonl" for s in SPLITS if s != split]
        if p.name in other:  # given one split's file: the other split lies beside it
            sibling = p.with_name(filename)
            if not sibling.is_file():
                raise UserError(f"no {filename} beside {p}")
            return sibling
        return p
    for cand in (p / filename, p / name / filename):
        if cand.is_file():
            return cand
    if not p.exists():
        raise UserError(f"data path does not exist: {p}")
    raise UserError(f"no {filename} in {p} (nor in {p / name})")
