"""The Python API: use a trained run on new problems, or start an optimisation, from code.

    from scoreflow.api import Solver, optimize

    run = optimize({"run": {"task": "arith", "iterations": 2}}, "runs/mine")   # as `scoreflow optimize`
    print(run.status, run.metrics[-1])

    with Solver.from_run("runs/mine") as solver:          # the run's config.toml and latest adapter
        s = solver.solve("Ava has 3 apples and buys 4 more. How many apples does she have?")
        print(s.answer)      # the workflow's answer (after the task's answer-extraction call)
        print(s.workflow)    # the workflow the trained generator wrote for this problem

A problem gets up to `attempts` generated workflows until one passes validation (the same policy and
toy-problem run as in training); that workflow runs once in the sandbox with the run's executor.
Nothing is written to the run directory.
"""

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    run_dir: Path
    status: str
    metrics: list[dict[str, Any]]


def _config(config: Any):
    from scoreflow import config as C

    if isinstance(config, C.Config):
        return config
    if isinstance(config, (str, Path)):
        return C.build(C.read_toml(config))
    return C.build(C.merge(config or {}))


def optimize(config: Any, run_dir: str | Path, *, resume: bool = False, report_to: list[str] | tuple = (),
             reporter: Any = None, evaluate: bool = False) -> RunResult:
    """Run the loop as `scoreflow optimize` does. `config`: a dict of sections ({"run": {...}, ...}), a
    TOML path or a Config (None with `resume=True`: the run's own). `report_to`: tracker names.
    Raises UserError on bad input (before any model loads) and RunFailed when the run fails (its
    traceback in RUN/error.log); a spend cap or Ctrl-C ends it with status "stopped" / "interrupted"."""
    from scoreflow import config as C
    from scoreflow.run.start import run_session
    from scoreflow.loop.loop import evaluate as evaluate_run, optimize as optimize_run
    from scoreflow.run.preflight import preflight
    from scoreflow.ui.reporter import Reporter
    from scoreflow.run.rundir import RunDir
    from scoreflow.run.session import build_session
    from scoreflow.ui.tracker_backends import with_trackers

    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    if resume:
        if not run.has_config():
            raise UserError(f"nothing to resume: {run_dir} holds no config.toml")
        cfg = _config(run.config_path) if config is None else _config(config)
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise UserError(f"run directory {run_dir} is not empty: pass resume=True to continue it")
        cfg = _config(config)
    task = preflight(cfg, ("validate", "test") if evaluate or cfg.run.compare else ("validate",))
    reporter = with_trackers(reporter or Reporter(), list(report_to))
    run_dir.mkdir(parents=True, exist_ok=True)
    if not run.has_config():
        run.write_config(cfg)
    s = build_session(cfg, run_dir, reporter, task=task)

    def work() -> None:
        optimize_run(s)
        if evaluate:
            latest = s.run.latest_adapter()
            evaluate_run(s, latest[0] if latest else 0)

    run_session(s, run_dir, work)
    status = s.run.status().get("status", "unknown")
    return RunResult(run_dir, status, [m.to_json() for m in run.read("metrics")])


class Solver:
    """A trained run's generator (its latest or a chosen adapter) with the run's task and executor."""

    def __init__(self, cfg: Any, backend: Any, task: Any, iteration: int, run_dir: Path | None = None):
        self.cfg, self.backend, self.task = cfg, backend, task
        self.iteration, self.run_dir = iteration, run_dir
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
        cfg = C.build(C.merge(C.read_toml(run.config_path), overrides or {}))
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
        """Write a workflow for `question`, run it and return its answer. With the gold `answer` (in the
        task's form) the solution is also scored."""
        p = self.problem(question, answer=answer, context=context, entry_point=entry_point)
        return self.solve_problems([p], attempts=attempts)[0]

    def solve_problems(self, problems: list[Any], *, attempts: int = DEFAULT_ATTEMPTS) -> list[Solution]:
        return asyncio.run(self._solve(problems, attempts))

    async def _solve(self, problems: list[Any], attempts: int) -> list[Solution]:
        from scoreflow.run.session import make_executor, make_sandbox
        from scoreflow.execute.runner import Runner

        cfg = self.cfg
        executor = make_executor(cfg, self.backend)  # per event loop: the local executor's queue is bound to one
        sandbox = make_sandbox(cfg)
        runner = Runner(self.task, executor, sandbox, max_tokens=cfg.executor.max_tokens,
                        extract=cfg.executor.extract_answer)
        t0 = time.monotonic()
        try:
            chosen = await self._generate(runner, problems, max(1, attempts))
            return list(await asyncio.gather(*(self._run(runner, p, *chosen[i], t0)
                                               for i, p in enumerate(problems))))
        finally:
            await executor.close()

    async def _generate(self, runner: Any, problems: list[Any], attempts: int) -> list[tuple[str | None, int, list]]:
        from scoreflow.model.backend import SamplingParams
        from scoreflow.loop.prompts import generator_messages
        from scoreflow.execute.workflow import extract

        g = self.cfg.generator
        chosen: list[tuple[str | None, int, list]] = [(None, 0, []) for _ in problems]
        for attempt in range(attempts):
            todo = [i for i, c in enumerate(chosen) if c[0] is None]
            if not todo:
                break
            params = SamplingParams(g.attempt_temperature(attempt, test=True), g.top_p, g.max_new_tokens,
                                    ("</graph>",), seed=self.cfg.run.seed * 1_000_003 + attempt * 101)
            outs = []
            for c in range(0, len(todo), g.batch_size):
                chunk = todo[c:c + g.batch_size]
                msgs = [generator_messages(self.task, problems[i], g.hide_numbers) for i in chunk]
                outs += await asyncio.to_thread(self.backend.generate, msgs, params)
            checks = await asyncio.gather(*(runner.validate(extract(o.text), problems[i]) for i, o in zip(todo, outs)))
            for i, o, check in zip(todo, outs, checks):
                _, n, rejected = chosen[i]
                source = extract(o.text) if check.ok else None
                chosen[i] = (source, n + 1, rejected if check.ok else rejected + [check.reason])
        return chosen

    async def _run(self, runner: Any, problem: Any, source: str | None, attempts: int, rejected: list,
                   t0: float) -> Solution:
        from scoreflow.execute.operators import Context, extract_answer

        sol = Solution(problem.question, None, None, source, "no valid workflow", attempts=attempts,
                       rejected=rejected, id=problem.id)
        if source is None:
            sol.reason = f"none of {attempts} generated workflows passed validation"
        else:
            scored = problem.answer is not None
            out = await runner.run(source, problem, score=scored)
            sol.status, sol.reason, sol.output = out.status, out.reason, out.output
            sol.executor_calls, sol.tokens = out.calls, out.tokens
            if scored:
                sol.answer, sol.score = out.answer, out.score
            elif out.status == "ok":
                ctx = Context(runner.executor, runner.sandbox, self.task, problem, runner.max_tokens)
                sol.answer = await extract_answer(ctx, out.output or "") if runner.extract else out.output
                sol.executor_calls += ctx.calls
                sol.tokens += ctx.tokens
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


__all__ = ["Solver", "Solution", "RunResult", "optimize"]
