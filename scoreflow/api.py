"""The Python API: start an optimisation or an evaluation from code, as the CLI does, or use a
trained run on new problems.

    from scoreflow import Solver, optimize

    run = optimize({"run": {"task": "arith", "iterations": 2}}, "runs/mine")   # as `scoreflow optimize`
    print(run.status, run.metrics[-1])

    with Solver.from_run("runs/mine") as solver:          # the run's config.toml and latest adapter
        s = solver.solve("Ava has 3 apples and buys 4 more. How many apples does she have?")
        print(s.answer)      # the workflow's answer (after the task's answer-extraction call)
        print(s.workflow)    # the workflow the trained generator wrote for this problem

`launch` is the one way a run starts, for the CLI too: every check (directory, changed configuration
on resume, preflight, trackers) comes before anything is deleted or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from scoreflow.loop.solve import Solution, Solver
from scoreflow.run.start import RunOptions


@dataclass
class RunOutcome:
    run_dir: Path
    status: str  # finished | stopped | interrupted
    metrics: list[dict[str, Any]]


def _config(config: Any):
    from scoreflow import config as C

    if config is None or isinstance(config, C.Config):
        return config
    if isinstance(config, (str, Path)):
        return C.build(C.read_toml(config))
    return C.build(C.merge(config))


def launch(opts: RunOptions, command: str = "optimize",
           work: Callable[[Any, RunOptions, int | None], None] | None = None) -> RunOutcome:
    """Check, then start, a run of `command` (optimize or evaluate) and run `work(session, opts,
    iteration)` in it (default: the command's own work; `iteration` is the one evaluate evaluates). Raises UserError on bad input, before anything is
    written, and RunFailed when the run fails (its traceback in RUN/error.log)."""
    from scoreflow.run.preflight import preflight
    from scoreflow.run.reporter import Fanout, Reporter
    from scoreflow.run.session import build_session
    from scoreflow.run.start import commit, prepare, run_session, splits
    from scoreflow.ui.profile import StageClock
    from scoreflow.ui.tracker_backends import tracking

    cfg, run_dir, iteration = prepare(opts, command)
    task = preflight(cfg, splits(cfg, command, opts.evaluate))
    trackers = tracking(opts.report_to)
    clock = StageClock() if opts.profile else None
    fresh = commit(opts, cfg, run_dir)
    try:
        s = build_session(cfg, run_dir, Fanout(opts.reporter or Reporter(), trackers, clock), task=task)
    except BaseException:
        if fresh:  # nothing ran yet: leave no half-made run directory behind
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if clock is not None:
        clock.parameters = getattr(s.backend, "parameters", None)
    status = run_session(s, run_dir, lambda: (work or _WORK[command])(s, opts, iteration))
    return RunOutcome(run_dir, status, [m.to_json() for m in s.run.read("metrics")])


def _optimize(s: Any, opts: RunOptions, iteration: int | None) -> None:
    from scoreflow.loop.loop import evaluate as evaluate_run, optimize as optimize_run

    optimize_run(s)
    if opts.evaluate:
        latest = s.run.latest_adapter()
        evaluate_run(s, latest[0] if latest else 0)


def _evaluate(s: Any, opts: RunOptions, iteration: int | None) -> None:
    from scoreflow.loop.loop import evaluate as evaluate_run

    if iteration:
        s.backend.load_adapter(s.run.adapter_dir(iteration))
    evaluate_run(s, iteration or 0)


_WORK = {"optimize": _optimize, "evaluate": _evaluate}


def optimize(config: Any, run_dir: str | Path | None = None, *, resume: bool = False, force: bool = False,
             evaluate: bool = False, report_to: list[str] | tuple[str, ...] = (), reporter: Any = None,
             profile: bool = False) -> RunOutcome:
    """Run the loop as `scoreflow optimize` does. `config`: a dict of sections ({"run": {...}, ...}), a
    TOML path or a Config (None with `resume=True`: the run's own). `report_to`: tracker names.
    A spend cap or Ctrl-C ends it with status "stopped" / "interrupted"."""
    return launch(RunOptions(_config(config), Path(run_dir) if run_dir else None, resume=resume, force=force,
                             evaluate=evaluate, report_to=tuple(report_to), reporter=reporter, profile=profile))


def evaluate(run_dir: str | Path, *, iteration: int | None = None, config: Any = None,
             reporter: Any = None) -> RunOutcome:
    """The test split's solve rate of a run's adapter (`iteration`, default the latest; 0 = the base
    model), as `scoreflow evaluate` does; the result is the run's last metrics record."""
    return launch(RunOptions(_config(config), Path(run_dir), iteration=iteration, reporter=reporter), "evaluate")


__all__ = ["RunOptions", "RunOutcome", "Solution", "Solver", "evaluate", "launch", "optimize"]
