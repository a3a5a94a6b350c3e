"""Starting a run, the one way the CLI and the Python API share: `RunOptions` say what to start;
`prepare` makes every check that writes nothing (the directory, a changed configuration on resume,
the evaluated adapter); `commit` then replaces or creates the directory and writes the snapshot; and
`run_session` runs the work and records how it ended. Preflight and the trackers are checked between
`prepare` and `commit` by the caller (scoreflow.api.launch), so a bad input deletes nothing."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from scoreflow import config as C
from scoreflow.errors import RunFailed, StopRun, UserError, one_line
from scoreflow.run.reporter import Reporter, RunInfo
from scoreflow.run.rundir import RunDir


@dataclass
class RunOptions:
    """What to start. `config` None: on resume, the run's own snapshot."""
    config: C.Config | None = None
    run_dir: Path | None = None
    resume: bool = False
    force: bool = False  # resume with a changed configuration, or replace a non-empty directory
    evaluate: bool = False  # optimize: evaluate the latest adapter on the test split at the end
    iteration: int | None = None  # evaluate: the adapter of this iteration (None: the latest; 0: the base model)
    report_to: tuple[str, ...] = ()  # experiment trackers
    profile: bool = False  # write where the time went, stage by stage, to RUN/profile.md
    reporter: Reporter | None = None  # the display (the dashboard, plain lines, or a caller's own)


def splits(cfg: C.Config, command: str, evaluate: bool = False) -> tuple[str, ...]:
    """The data splits a command reads (preflight checks they exist)."""
    if command == "evaluate":
        return ("test",)
    return ("validate", "test") if evaluate or cfg.run.compare else ("validate",)


def prepare(opts: RunOptions, command: str) -> tuple[C.Config, Path, int | None]:
    """The configuration, the run directory and (evaluate) the iteration to evaluate. Writes nothing."""
    run_dir = Path(opts.run_dir) if opts.run_dir is not None else None
    run = RunDir(run_dir) if run_dir is not None else None
    has_run = run is not None and run.has_config()
    iteration = _check_evaluate(opts, run_dir, has_run) if command == "evaluate" else None
    if opts.resume or (command == "evaluate" and has_run):
        if run is None or not has_run:
            raise UserError(f"nothing to resume: {run_dir or '--run-dir'} holds no config.toml")
        saved = C.read_toml(run.config_path)
        cfg = opts.config or C.build(saved, snapshot=True)
        fresh = C.as_dict(C.build(saved, snapshot=True))
        changed = [f"{s}.{k}" for s, v in C.as_dict(cfg).items() for k, x in v.items()
                   if fresh[s][k] != x and (s, k) not in C.RESUMABLE]
        if changed and not opts.force:
            raise UserError(f"{run_dir} was made with another configuration ({', '.join(changed[:4])}); "
                            "use --force to resume anyway")
        return cfg, run_dir, iteration  # type: ignore[return-value]
    cfg = opts.config or C.build({})
    if run_dir is None:
        run_dir = Path("runs") / f"{cfg.run.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.is_file():
        raise UserError(f"run directory {run_dir} is a file")
    if run_dir.exists() and any(run_dir.iterdir()) and not opts.force:
        raise UserError(f"run directory {run_dir} is not empty: use --resume to continue it or --force to replace it")
    return cfg, run_dir, iteration


def _check_evaluate(opts: RunOptions, run_dir: Path | None, has_run: bool) -> int:
    """Evaluate reads a run; the base model only when asked for (iteration 0)."""
    it = opts.iteration
    if it is not None and it < 0:
        raise UserError(f"--iteration {it}: give 0 (the base model) or an iteration of the run")
    if not has_run and it != 0:
        where = (f"{run_dir} holds no run (no config.toml)" if run_dir
                 else "evaluate needs the --run-dir of an optimize run")
        raise UserError(f"{where}; to evaluate the base model on purpose, use --iteration 0 with a new --run-dir")
    found = list(RunDir(run_dir).adapters()) if run_dir is not None else []
    if it and it not in found:
        raise UserError(f"{run_dir} has no adapter for iteration {it} (it has: {', '.join(map(str, found)) or 'none'})")
    return max(found, default=0) if it is None else it


def commit(opts: RunOptions, cfg: C.Config, run_dir: Path) -> bool:
    """After every check: replace the directory (--force without --resume), create it, write the
    configuration snapshot. True when the directory is new (nothing of it existed before)."""
    run = RunDir(run_dir)
    if opts.force and not opts.resume and run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    fresh = not run.has_config()
    run_dir.mkdir(parents=True, exist_ok=True)
    if fresh or opts.force:
        run.write_config(cfg)
    return fresh


def run_info(s: Any, run_dir: Path) -> RunInfo:
    c = s.cfg
    executor = s.executor.model or c.executor.model
    return RunInfo(task=c.run.task, backend=s.backend.name, device=s.backend.device, generator=s.backend.model_name,
                   executor=executor, run_dir=str(run_dir), iterations=c.run.iterations, usage=s.executor.usage,
                   config=C.as_dict(c))


def save_traceback(e: BaseException, path: Path | None = None) -> str:
    """Append `e`'s traceback to `path` (else a new temporary file); the path written, or why not."""
    text = f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} scoreflow {' '.join(sys.argv[1:])}\n" + "".join(
        traceback.format_exception(type(e), e, e.__traceback__))
    try:
        if path is None:
            fd, name = tempfile.mkstemp(prefix="scoreflow-error-", suffix=".log")
            os.close(fd)
            path = Path(name)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
        return str(path)
    except OSError as err:  # a full disk: the line still says what failed
        return f"<not saved: {err.strerror or err}>"


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # recording a failure must not hide it
        pass


def run_session(s: Any, run_dir: Path, work: Callable[[], Any]) -> str:
    """Run `work` in session `s`, recording its status; returns finished, stopped or interrupted.
    A failure is recorded, its traceback saved in the run directory, and raised as RunFailed."""
    def status(state: str, reason: str = "") -> None:
        s.run.set_status(state, reason, usage=s.executor.usage.as_dict())

    status("running")
    with s.reporter:
        try:
            s.reporter.start(run_info(s, run_dir))
            work()
        except StopRun as e:
            status("stopped", str(e))
            s.reporter.finish("stopped", f"{e}; continue with --resume (and a raised cap)")
            return "stopped"
        except KeyboardInterrupt:
            status("interrupted", "interrupted by the user")
            s.reporter.finish("interrupted", f"interrupted; continue with: scoreflow optimize --resume --run-dir {run_dir}")
            return "interrupted"
        except UserError:
            status("failed", "bad input")
            raise
        except Exception as e:
            reason = one_line(f"{type(e).__name__}: {e}", 300)
            log = save_traceback(e, RunDir(run_dir).error_log)
            _quietly(status, "failed", reason)
            s.reporter.finish("failed", f"{reason} (traceback: {log})")
            raise RunFailed(f"run failed: {reason}; full traceback in {log}") from e
        except BaseException as e:
            _quietly(status, "failed", one_line(f"{type(e).__name__}: {e}", 300))
            raise
        finally:
            s.close()
        status("finished")
        s.reporter.finish("finished", f"run directory: {run_dir}")
    return "finished"
