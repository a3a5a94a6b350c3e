"""Running a session as a command: the configuration and run directory (new or resumed), the
checks before a model loads, the reporter, and the run's status and failure records. Shared by the
CLI (cli.py) and the Python API (api.py)."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from scoreflow.errors import RunFailed, StopRun, UserError, one_line
from scoreflow.cli.flags import build_config
from scoreflow.run.rundir import RunDir


def make_reporter(args: argparse.Namespace):
    from scoreflow.ui.tracker_backends import with_trackers

    try:
        from scoreflow.ui.dashboard import make_reporter as dashboard_reporter

        base = dashboard_reporter(plain=getattr(args, "no_dashboard", False))
    except ImportError:
        from scoreflow.ui.reporter import Reporter

        base = Reporter()
    return with_trackers(base, getattr(args, "report_to", None))  # --report-to: trackers wrap the reporter


def prepare_run_dir(args: argparse.Namespace, command: str):
    """The configuration and the run directory, new or resumed."""
    from scoreflow import config as C

    run_dir: Path | None = args.run_dir
    snapshot = RunDir(run_dir).config_path if run_dir else None
    has_run = snapshot is not None and snapshot.is_file()
    if command == "evaluate":
        check_evaluate(args, run_dir, has_run)
    resume = getattr(args, "resume", False) or (command == "evaluate" and has_run)
    if resume:
        if snapshot is None or not snapshot.is_file():
            raise UserError(f"nothing to resume: {run_dir or '--run-dir'} holds no config.toml")
        saved = C.read_toml(snapshot)
        cfg = build_config(args, saved)
        fresh = C.build(saved)
        changed = [f"{s}.{k}" for s, v in C.as_dict(cfg).items() for k, x in v.items()
                   if C.as_dict(fresh)[s][k] != x and (s, k) not in C.RESUMABLE]
        if changed and not getattr(args, "force", False):
            raise UserError(f"{run_dir} was made with another configuration ({', '.join(changed[:4])}); "
                            "use --force to resume anyway")
        return cfg, run_dir
    cfg = build_config(args)
    if run_dir is None:
        run_dir = Path("runs") / f"{cfg.run.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.is_file():
        raise UserError(f"run directory {run_dir} is a file")
    if run_dir.exists() and any(run_dir.iterdir()) and not getattr(args, "force", False):
        raise UserError(f"run directory {run_dir} is not empty: use --resume to continue it or --force to replace it")
    return cfg, run_dir


def adapter_iterations(run_dir: Path | None) -> list[int]:
    return list(RunDir(run_dir).adapters()) if run_dir else []


def check_evaluate(args: argparse.Namespace, run_dir: Path | None, has_run: bool) -> None:
    """Evaluate reads a run; the base model only when asked for (--iteration 0)."""
    it = args.iteration
    if it is not None and it < 0:
        raise UserError(f"--iteration {it}: give 0 (the base model) or an iteration of the run")
    if not has_run and it != 0:
        where = (f"{run_dir} holds no run (no config.toml)" if run_dir
                 else "evaluate needs the --run-dir of an optimize run")
        raise UserError(f"{where}; to evaluate the base model on purpose, use --iteration 0 with a new --run-dir")
    if it and it not in adapter_iterations(run_dir):
        have = ", ".join(map(str, adapter_iterations(run_dir))) or "none"
        raise UserError(f"{run_dir} has no adapter for iteration {it} (it has: {have})")


def splits(args: argparse.Namespace) -> tuple[str, ...]:
    if args.command == "evaluate":
        return ("test",)
    return ("validate", "test") if getattr(args, "evaluate", False) else ("validate",)


def start_session(cfg, run_dir: Path, args: argparse.Namespace):
    """Check everything that can be checked cheaply before loading a model, then build the session."""
    import shutil

    from scoreflow.run.preflight import preflight
    from scoreflow.run.session import build_session

    task = preflight(cfg, splits(args))  # before a run directory or a model exists
    replace = getattr(args, "force", False) and not getattr(args, "resume", False)
    if replace and run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    reporter = make_reporter(args)
    fresh = not RunDir(run_dir).has_config()
    run_dir.mkdir(parents=True, exist_ok=True)
    if fresh or getattr(args, "force", False):
        RunDir(run_dir).write_config(cfg)
    try:
        session = build_session(cfg, run_dir, reporter, task=task)
    except BaseException:
        if fresh:  # nothing ran yet: leave no half-made run directory behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return session


def run_info(s, run_dir: Path):
    from scoreflow.config import as_dict
    from scoreflow.ui.reporter import RunInfo

    c = s.cfg
    executor = s.executor.model or c.executor.model
    return RunInfo(task=c.run.task, backend=s.backend.name, device=s.backend.device, generator=s.backend.model_name,
                   executor=executor, run_dir=str(run_dir), iterations=c.run.iterations, usage=s.executor.usage,
                   config=as_dict(c))


def save_traceback(e: BaseException, path: Path | None = None) -> str:
    """Append `e`'s traceback to `path` (else a new temporary file); the path written, or why not."""
    import tempfile

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


def quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # recording a failure must not hide it
        pass


def run_session(s, run_dir: Path, work: Callable[[], Any]) -> int:
    def status(state: str, reason: str = "") -> None:
        s.run.set_status(state, reason, usage=s.executor.usage.as_dict())

    status("running")
    with s.reporter:
        s.reporter.start(run_info(s, run_dir))
        try:
            work()
        except StopRun as e:
            status("stopped", str(e))
            s.reporter.finish("stopped", f"{e}; continue with --resume (and a raised cap)")
            return 0
        except KeyboardInterrupt:
            status("interrupted", "interrupted by the user")
            s.reporter.finish("interrupted", f"interrupted; continue with: scoreflow optimize --resume --run-dir {run_dir}")
            return 130
        except UserError:
            status("failed", "bad input")
            raise
        except Exception as e:
            reason = one_line(f"{type(e).__name__}: {e}", 300)
            log = save_traceback(e, RunDir(run_dir).error_log)
            quietly(status, "failed", reason)
            s.reporter.finish("failed", f"{reason} (traceback: {log})")
            raise RunFailed(f"run failed: {reason}; full traceback in {log}") from e
        except BaseException as e:
            quietly(status, "failed", one_line(f"{type(e).__name__}: {e}", 300))
            raise
        finally:
            s.close()
        status("finished")
        s.reporter.finish("finished", f"run directory: {run_dir}")
    return 0
