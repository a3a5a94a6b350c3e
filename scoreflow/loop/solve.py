"""Solving new problems with a trained run: its generator writes a workflow for each problem (up to
`attempts` until one passes validation, as in training), and that workflow runs once in the sandbox
with the run's executor. Or with a workflow library (`Solver.from_library`): the library's workflows
alone, no generator (scoreflow.loop.library). Nothing is written to the run directory."""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from scoreflow.errors import UserError

DEFAULT_ATTEMPTS = 3


@dataclass
class Solution:
    question: str
    answer: str | None  # None when no workflow ran to completion
    output: str | None  # what run_workflow returned, before answer extraction
    workflow: str | None  # the source of the workflow that ran (None: no valid workflow)
    status: str  # ok | no valid workflow | timeout | crashed | error
    reason: str = ""
    attempts: int = 0  # workflows generated for this problem
    rejected: list[str] = field(default_factory=list)  # why each rejected attempt was rejected
    executor_calls: int = 0
    tokens: int = 0
    score: float | None = None  # only when the gold answer was given
    seconds: float = 0.0
    id: str = ""
    rank: int | None = None  # with a library: the rank of the workflow whose answer this is

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Solver:
    """A trained run's generator (its latest or a chosen adapter) with the run's task and executor; or a
    workflow library with its run's task and executor (`from_library`: `backend` is then the local
    executor's model, or None)."""

    def __init__(self, cfg: Any, backend: Any, task: Any, iteration: int, run_dir: Path | None = None,
                 library: Any = None, rule: str = "first"):
        self.cfg, self.backend, self.task = cfg, backend, task
        self.iteration, self.run_dir = iteration, run_dir
        self.library, self.rule = library, rule
        self._tmp: tempfile.TemporaryDirectory | None = None

    @classmethod
    def from_run(cls, run_dir: str | Path, iteration: int | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> "Solver":
        """Load RUN/config.toml (with `overrides`, e.g. {"executor": {"model": ...}}), the generator model and
        the adapter of `iteration` (default the latest; 0 = the base model, untrained)."""
        from scoreflow import config as C
        from scoreflow.run.preflight import preflight
        from scoreflow.run.rundir import RunDir
        from scoreflow.run.session import make_backend

        run_dir = Path(run_dir)
        run = RunDir(run_dir)
        if not run.has_config():
            raise UserError(f"{run_dir} holds no run (no config.toml)")
        cfg = C.build(C.merge(C.read_toml(run.config_path), overrides or {}), snapshot=True)
        found = list(run.adapters())
        if iteration is None:
            iteration = found[-1] if found else 0
        if iteration and iteration not in found:
            raise UserError(f"{run_dir} has no adapter for iteration {iteration} (it has: "
                            f"{', '.join(map(str, found)) or 'none'})")
        task = preflight(cfg, ())
        solver = cls(cfg, make_backend(cfg), task, iteration, run_dir)
        if iteration:
            solver.backend.load_adapter(solver._adapter(run.adapter_dir(iteration)))
        return solver

    @classmethod
    def from_library(cls, library_dir: str | Path, overrides: dict[str, dict[str, Any]] | None = None,
                     rule: str = "first") -> "Solver":
        """The workflows of LIBRARY_DIR (`scoreflow export RUN --library K`) with their run's task and
        executor (`overrides` as in from_run). No generator is loaded: with the local executor its base
        model loads as the executor, with an OpenAI-compatible one no model loads at all. `rule`: first
        (rank order until one answers) or vote (scoreflow.loop.library)."""
        from scoreflow import config as C
        from scoreflow.loop.library import RULES, load_library
        from scoreflow.run.preflight import preflight
        from scoreflow.run.session import make_backend

        if rule not in RULES:
            raise UserError(f"unknown rule {rule!r}: choose one of {', '.join(RULES)}")
        library = load_library(library_dir)
        cfg = C.build(C.merge(library.config, overrides or {}), snapshot=True)
        local = cfg.executor.kind == "local"
        task = preflight(cfg, (), model=local)
        return cls(cfg, make_backend(cfg) if local else None, task, 0, None, library, rule)

    def _adapter(self, folder: Path) -> Path:
        """The adapter in the format of the backend in use (a run trained on MLX used from PyTorch, say)."""
        from scoreflow.model.adapters import convert, detect_format

        want = "mlx" if self.backend.name == "mlx" else "peft"
        if self.backend.name not in ("mlx", "cuda") or detect_format(folder) == want:
            return folder
        self._tmp = tempfile.TemporaryDirectory(prefix="scoreflow-adapter-")
        return convert(folder, want, Path(self._tmp.name) / "adapter")

    def problem(self, question: str, *, answer: Any = None, context: str = "", entry_point: str = "",
                id: str = "") -> Any:
        """A Problem of the run's task: `context` is shown to the workflow (self.problem) after the
        question's text, not to the generator; code tasks need the function name (else `def name(`)."""
        from scoreflow.tasks.base import Problem

        extra: dict[str, Any] = {}
        if self.task.family == "code":
            m = re.search(r"def\s+([A-Za-z_]\w*)\s*\(", question)
            entry_point = entry_point or (m.group(1) if m else "")
            if not entry_point:
                raise UserError("a code problem needs the function's name: give entry_point or `def name(` in it")
            extra = {"entry_point": entry_point, "prompt": question if "def " in question else "", "public_tests": []}
        inputs = f"{context.strip()}\nQuestion: {question}" if context else question
        return Problem(id or "new", question, inputs, answer, extra)

    def solve(self, question: str, *, answer: Any = None, context: str = "", entry_point: str = "",
              attempts: int = DEFAULT_ATTEMPTS) -> Solution:
        """Write a workflow for `question` (with a library: take its workflows by the rule), run it and
        return its answer. With the gold `answer` (in the task's form) the solution is also scored."""
        p = self.problem(question, answer=answer, context=context, entry_point=entry_point)
        return self.solve_problems([p], attempts=attempts)[0]

    def solve_problems(self, problems: list[Any], *, attempts: int = DEFAULT_ATTEMPTS) -> list[Solution]:
        return asyncio.run(self._solve(problems, attempts))

    async def _solve(self, problems: list[Any], attempts: int) -> list[Solution]:
        from dataclasses import replace

        from scoreflow.loop.generate import generate
        from scoreflow.run.session import make_runner, run_executor

        cfg = self.cfg
        executor = run_executor(cfg, self.backend)  # per event loop: the local executor's queue is bound to one
        runner = make_runner(cfg, self.task, executor)
        t0 = time.monotonic()
        try:
            if self.library is not None:
                from scoreflow.loop.library import answer

                return list(await asyncio.gather(*(answer(runner, self.library, p, self.rule, t0) for p in problems)))
            g = replace(cfg.generator, max_attempts=max(1, attempts))
            gen = await generate(self.backend, runner, problems, g, seed=cfg.run.seed, iteration=self.iteration,
                                 k=1, test=True)
            return list(await asyncio.gather(*(self._run(runner, p, gen, i, t0) for i, p in enumerate(problems))))
        finally:
            await executor.close()

    async def _run(self, runner: Any, problem: Any, gen: Any, i: int, t0: float) -> Solution:
        key = (i, 0)
        chosen = gen.valid.get(key)
        attempts = gen.attempts(key)
        sol = Solution(problem.question, None, None, chosen.source if chosen else None, "no valid workflow",
                       attempts=attempts, rejected=gen.rejected.get(key, []), id=problem.id)
        if chosen is None:
            sol.reason = f"none of {attempts} generated workflows passed validation"
        else:
            scored = problem.answer is not None
            out = await runner.run(chosen.source, problem, score=scored)
            sol.status, sol.reason, sol.output = out.status, out.reason, out.output
            sol.executor_calls, sol.tokens = out.calls, out.tokens
            sol.answer, sol.score = out.answer, (out.score if scored else None)
        sol.seconds = round(time.monotonic() - t0, 3)
        return sol

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "Solver":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
