"""A run's workflow library: its valid generated workflows, merged by normalised source and ranked
by their scores on the optimisation (validate) split, and `scoreflow export RUN --library K`, which
writes the top K as plain Python files with a manifest (library.json) and the run's configuration.

Ranking. A workflow's score is the mean, over the problems it ran on, of its mean score on each
problem (every execution of every copy of the source counts). Ties go to the workflow that ran on
more problems, then to the cheaper one (fewer executor tokens per run), then to the one generated
first. A workflow that ran on a single problem (most do: the generator writes one per problem) is
ranked by the same rule, so among equal scores it comes after those that held on several problems.

`scoreflow solve --library DIR` answers with the library alone (scoreflow.loop.library).
"""

from __future__ import annotations

import ast
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Iterable

from scoreflow.errors import UserError
from scoreflow.files import atomic_write
from scoreflow.records import Execution, WorkflowAttempt

MANIFEST = "library.json"
CONFIG = "config.toml"
RANKING = ("mean over the problems it ran on of its mean score there (validate split); ties: more problems, "
           "then fewer executor tokens per run, then generated first")


def normalise(source: str) -> str:
    """The source without comments, blank lines or formatting differences (Python's own unparse of it);
    a source that does not parse keeps its stripped, non-comment lines."""
    try:
        return ast.unparse(ast.parse(source))
    except (SyntaxError, ValueError, RecursionError):
        lines = (line.strip() for line in source.splitlines())
        return "\n".join(line for line in lines if line and not line.startswith("#"))


@dataclass
class Workflow:
    """One distinct workflow of a run and what its executions on the validate split showed."""
    source: str  # as first generated
    problem_scores: dict[str, list[float]] = field(default_factory=dict)  # problem id -> its executions' scores
    calls: list[int] = field(default_factory=list)  # per execution
    tokens: list[int] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)  # USD, of the executions the executor priced
    iterations: list[int] = field(default_factory=list)  # where it was generated
    generated: int = 0  # valid, executed copies of it
    first: tuple[int, int, int] = (0, 0, 0)  # (iteration, problem, slot) of the first copy

    @property
    def scores(self) -> dict[str, float]:
        """Per problem, its mean score there."""
        return {pid: mean(v) for pid, v in self.problem_scores.items()}

    @property
    def score(self) -> float:
        return mean(self.scores.values())

    @property
    def solved(self) -> list[str]:
        """The problems where every run scored full marks."""
        return [pid for pid, s in self.scores.items() if s >= 1.0]

    @property
    def runs(self) -> int:
        return len(self.tokens)

    @property
    def tokens_per_run(self) -> float:
        return mean(self.tokens) if self.tokens else 0.0

    @property
    def calls_per_run(self) -> float:
        return mean(self.calls) if self.calls else 0.0

    @property
    def cost_per_run(self) -> float | None:
        """USD per run when the executor priced every run, else None."""
        return mean(self.costs) if self.costs and len(self.costs) == self.runs else None

    def rank_key(self) -> tuple[Any, ...]:
        return (-self.score, -len(self.problem_scores), self.tokens_per_run, self.first)


def _usage(value: Any) -> float:
    """A recorded count or price as a number: missing, malformed or negative reads as 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) and v > 0 else 0.0


def collect(workflows: Iterable[WorkflowAttempt], executions: Iterable[Execution]) -> list[Workflow]:
    """The run's valid, executed workflows, one per normalised source, best first (see the module's ranking)."""
    runs: dict[tuple[int, int, int], list[Execution]] = {}
    for e in executions:
        runs.setdefault((e.iteration, e.problem, e.slot), []).append(e)
    merged: dict[str, Workflow] = {}
    for w in workflows:
        where = (w.iteration, w.problem, w.slot)
        if not (w.valid and w.source and where in runs):
            continue
        entry = merged.setdefault(normalise(w.source), Workflow(w.source, first=where))
        entry.generated += 1
        if w.iteration not in entry.iterations:
            entry.iterations.append(w.iteration)
        for e in runs.pop(where):  # popped: a slot's executions count once, for its valid attempt
            entry.problem_scores.setdefault(w.problem_id or e.problem_id, []).append(float(e.score))
            entry.calls.append(int(_usage(e.calls)))
            entry.tokens.append(int(_usage(e.tokens)))
            if e.has("cost_usd") and e.cost_usd is not None:
                entry.costs.append(_usage(e.cost_usd))
    return sorted(merged.values(), key=Workflow.rank_key)


def entry_json(rank: int, file: str, w: Workflow) -> dict[str, Any]:
    """A workflow's line of the manifest."""
    return {"rank": rank, "file": file, "score": round(w.score, 6), "problems": len(w.problem_scores),
            "scores": {pid: round(s, 6) for pid, s in sorted(w.scores.items())}, "solved": sorted(w.solved),
            "runs": w.runs, "executor_calls_per_run": round(w.calls_per_run, 3),
            "executor_tokens_per_run": round(w.tokens_per_run, 1),
            "cost_usd_per_run": None if w.cost_per_run is None else round(w.cost_per_run, 8),
            "iterations": sorted(w.iterations), "generated": w.generated}


def write_library(run_dir: Path, k: int, out: Path) -> list[dict[str, Any]]:
    """Write the top `k` workflows of the run at `run_dir` to `out` (workflow-N.py, library.json and the
    run's config.toml); returns the manifest's entries."""
    from scoreflow.run.rundir import load_run

    if k < 1:
        raise UserError(f"--library {k}: give at least 1")
    run = load_run(run_dir)
    if not (Path(run_dir) / CONFIG).is_file():
        raise UserError(f"{run_dir} holds no config.toml: a library needs the run's task and executor")
    ranked = collect(run.workflows, run.executions)
    if not ranked:
        raise UserError(f"{run_dir} has no valid executed workflow to put in a library")
    out = Path(out)
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no library: choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("workflow-*.py"):  # a library written here before: replaced whole
        old.unlink()
    task = run.config.get("run", {}).get("task", "?")
    entries = []
    for rank, w in enumerate(ranked[:k], 1):
        name = f"workflow-{rank}.py"
        header = (f"# ScoreFlow library workflow {rank} of {min(k, len(ranked))}: task {task}, run {run.path.name}.\n"
                  f"# Validate split: mean score {w.score:.3f} over {len(w.problem_scores)} problem(s), "
                  f"{w.runs} run(s); {w.calls_per_run:.1f} executor calls, {w.tokens_per_run:.0f} tokens per run.\n")
        atomic_write(out / name, header + w.source.strip() + "\n")
        entries.append(entry_json(rank, name, w))
    shutil.copyfile(Path(run_dir) / CONFIG, out / CONFIG)
    manifest = {"task": task, "run": str(run.path), "split": "validate", "ranking": RANKING,
                "candidates": len(ranked), "workflows": entries}
    atomic_write(out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return entries
