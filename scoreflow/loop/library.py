"""Answering with a workflow library alone (`scoreflow solve --library DIR`, `Solver.from_library`):
no generator, only the library's workflows, run in the sandbox with the library's executor.

Rules:
    first   the workflows in rank order until one runs to a non-empty answer (one workflow's
            executor calls when the best one answers)
    vote    every workflow runs; the answer most of them give wins, a tie going to the answer of
            the better-ranked workflow (K workflows' executor calls per problem)

A library is what `scoreflow export RUN --library K` writes (scoreflow.report.library).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoreflow.errors import UserError

RULES = ("first", "vote")
MANIFEST, CONFIG = "library.json", "config.toml"


@dataclass
class Library:
    path: Path
    config: dict[str, dict[str, Any]]  # the run's configuration: task, executor, sandbox
    entries: list[dict[str, Any]]  # the manifest's workflows, best first
    sources: list[str]  # their workflow files' text, in the same order

    def __len__(self) -> int:
        return len(self.sources)


def load_library(path: str | Path) -> Library:
    from scoreflow import config as C

    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise UserError(f"{path} holds no workflow library (no {MANIFEST}; `scoreflow export RUN --library K` "
                        "writes one)")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        entries = sorted(data["workflows"], key=lambda e: int(e["rank"]))
        files = [str(e["file"]) for e in entries]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{manifest} is not a library manifest: {e}") from None
    sources = []
    for name in files:
        file = path / name
        if Path(name).name != name or not file.is_file():
            raise UserError(f"{manifest} names {name!r}, which is not a file of the library")
        sources.append(file.read_text(encoding="utf-8"))
    if not sources:
        raise UserError(f"{manifest} lists no workflow")
    if not (path / CONFIG).is_file():
        raise UserError(f"{path} holds no {CONFIG} (the task and executor of the run it came from)")
    return Library(path, C.read_toml(path / CONFIG), entries, sources)


def _same(answer: str) -> str:
    """The form in which answers are counted as the same vote."""
    return " ".join(answer.split()).strip().lower().rstrip(".")


async def answer(runner: Any, library: Library, problem: Any, rule: str, t0: float) -> Any:
    """The Solution of `problem` under `rule`: which workflow answered (its rank), what each failed try
    was, and the executor calls and tokens of every workflow run."""
    from scoreflow.loop.solve import Solution

    if rule not in RULES:
        raise UserError(f"unknown rule {rule!r}: choose one of {', '.join(RULES)}")
    sol = Solution(problem.question, None, None, None, "no valid answer", id=problem.id)
    outcomes: list[tuple[int, str, Any]] = []  # (rank, source, execution) of each workflow that answered
    scored = problem.answer is not None
    for rank, source in enumerate(library.sources, 1):
        sol.attempts += 1
        check = runner.check(source, problem)
        if not check.ok:
            sol.rejected.append(f"workflow {rank}: rejected: {check.reason}")
            continue
        out = await runner.run(source, problem, score=scored)
        sol.executor_calls += out.calls
        sol.tokens += out.tokens
        if out.status == "ok" and (out.answer or "").strip():
            outcomes.append((rank, source, out))
            if rule == "first":
                break
        else:
            sol.rejected.append(f"workflow {rank}: {out.status}" + (f": {out.reason}" if out.reason else ""))
    if outcomes:
        if rule == "vote":
            votes = Counter(_same(o.answer) for _, _, o in outcomes)
            top = max(votes.values())
            rank, source, out = next(x for x in outcomes if votes[_same(x[2].answer)] == top)  # best-ranked of the tied
        else:
            rank, source, out = outcomes[0]
        sol.status, sol.reason, sol.output, sol.answer, sol.workflow, sol.rank = \
            "ok", "", out.output, out.answer, source, rank
        sol.score = out.score if scored else None
    else:
        sol.reason = f"none of the {len(library)} workflows returned an answer"
        sol.score = 0.0 if scored else None
    sol.seconds = round(time.monotonic() - t0, 3)
    return sol
