"""The `scoreflow` command line. Bad input ends with one line on stderr and exit code 2, before any
model loads (preflight.py); a failure during a run ends with one line and exit code 1, its traceback
saved to a log file that the line names (--debug prints it too)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from scoreflow.errors import RunFailed, UserError, one_line
from scoreflow.run.rundir import RunDir
# The configuration pipeline's flags, scopes and merge live in flags.py; these names are the CLI's too.
from scoreflow.cli.flags import (  # noqa: F401
    CONFIG_COMMANDS, FLAGS, KEY_SCOPE, SECTION_SCOPE, build_config, config_args, flag_commands,
    inapplicable_set_keys, key_scope, warn_inapplicable_set,
)
from scoreflow.run.start import adapter_iterations, prepare_run_dir, run_session, save_traceback, start_session


def _quiet() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:
        pass


def _debug_arg(p: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    # SUPPRESS on subcommands, so that `scoreflow --debug optimize` is not reset by the subparser.
    p.add_argument("--debug", action="store_true", default=default, help="print the full traceback of a failure")


def _config_args(p: argparse.ArgumentParser, command: str) -> None:
    _debug_arg(p)
    config_args(p, command)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, help="run directory (default: runs/TASK-DATE-TIME)")
    p.add_argument("--no-dashboard", action="store_true", help="plain log lines instead of the live dashboard")


def _dry_run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="check the configuration and print the plan with its "
                   "executor calls, tokens and cost estimate; loads no model, calls no executor")


def _dry_run(args: argparse.Namespace, command: str) -> int:
    from scoreflow.run.plan import make_plan
    from scoreflow.ui.trackers import check_installed

    check_installed(getattr(args, "report_to", None) or [])
    cfg, run_dir = prepare_run_dir(args, command)  # reads, never creates, the run directory
    iteration = getattr(args, "iteration", None)
    if command == "evaluate" and iteration is None:
        iteration = max(adapter_iterations(run_dir), default=0)
    print(make_plan(cfg, command, run_dir, getattr(args, "evaluate", False), iteration).text())
    return 0


OWN_PARSERS = ("report", "runs", "show")  # subcommands that parse their own arguments (report.py)


class _Parser(argparse.ArgumentParser):
    """Says which commands take a flag when it is given to one it cannot affect."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        lead = 0
        while lead < len(argv) and argv[lead] == "--debug":
            lead += 1
        if lead < len(argv) and argv[lead] in OWN_PARSERS:
            # report, runs and show parse their own arguments: all of them, options first included
            # (an argparse REMAINDER positional refuses a leading option such as `report --out DIR RUN`)
            return argparse.Namespace(debug=lead > 0, command=argv[lead], rest=argv[lead + 1:])
        ns, extras = self.parse_known_args(argv, namespace)
        if extras:
            msg = f"unrecognized arguments: {' '.join(extras)}"
            command = getattr(ns, "command", None)
            names = {f: (s, k) for f, s, k, _, _ in FLAGS}
            for a in extras:
                flag = a.split("=", 1)[0]
                if flag in names and command:
                    where = sorted(flag_commands(flag), key=CONFIG_COMMANDS.index)
                    msg += (f" ({flag} cannot affect `scoreflow {command}`: it is a flag of "
                            f"{', '.join(where)}; --set {'.'.join(names[flag])}=... sets the key anyway)")
                    break
            self.error(msg)
        return ns


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="scoreflow", allow_abbrev=False, description="Optimise LLM agent workflows by training "
                                 "the model that writes them (ScoreFlow, Score-DPO), on PyTorch or MLX.")
    _debug_arg(ap, False)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("optimize", help="run the generate-execute-train loop")
    _config_args(p, "optimize")
    _run_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir where it stopped")
    p.add_argument("--force", action="store_true", help="resume even if the configuration changed, or overwrite")
    p.add_argument("--evaluate", action="store_true", help="evaluate on the test split after the last iteration")
    p.add_argument("--report-to", action="append", default=[], metavar="TRACKER",
                   choices=("tensorboard", "wandb", "mlflow", "trackio"),
                   help="also log to an experiment tracker: tensorboard, wandb, mlflow or trackio (repeatable)")
    _dry_run_arg(p)
    p = sub.add_parser("evaluate", help="solve rate on the test split with the latest (or a given) adapter")
    _config_args(p, "evaluate")
    _run_args(p)
    p.add_argument("--iteration", type=int,
                   help="adapter of this iteration (default latest); 0 = the base model, also in a new --run-dir")
    _dry_run_arg(p)
    p = sub.add_parser("run-workflow", help="run one workflow file on one problem and print a JSON verdict")
    _config_args(p, "run-workflow")
    p.add_argument("--workflow", type=Path, required=True, help="file holding `async def run_workflow(self)`")
    p.add_argument("--index", type=int, default=0, help="problem index in the split")
    p.add_argument("--split", default="validate", choices=("validate", "test"))
    p = sub.add_parser("export", help="a run's adapter in PEFT or mlx-lm format with a model card; its best workflows")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--to", choices=("peft", "mlx"), help="adapter format (a README.md model card goes beside it)")
    p.add_argument("--iteration", type=int)
    p.add_argument("--out", type=Path)
    p.add_argument("--workflows", type=Path, metavar="OUT_DIR",
                   help="write each problem's best workflow as a file for `scoreflow run-workflow`")
    from scoreflow.cli.solve import add_parser as add_solve
    from scoreflow.cli.train_adapter import add_parser as add_train_adapter

    add_solve(sub, _debug_arg)
    add_train_adapter(sub, _debug_arg)
    p = sub.add_parser("config", help="print every configuration key with its default and meaning")
    p.add_argument("--preset", default="paper", choices=("demo", "paper"))
    for name, help in (("report", "write report.md and plots for a run"), ("runs", "list runs"),
                       ("show", "print a problem's workflows with their scores")):
        p = sub.add_parser(name, help=help, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return ap


def cmd_optimize(args: argparse.Namespace) -> int:
    from scoreflow.loop.loop import evaluate, optimize

    warn_inapplicable_set(args, "optimize")
    if args.dry_run:
        return _dry_run(args, "optimize")
    cfg, run_dir = prepare_run_dir(args, "optimize")
    s = start_session(cfg, run_dir, args)

    def work() -> None:
        optimize(s)
        if args.evaluate:
            latest = s.run.latest_adapter()
            evaluate(s, latest[0] if latest else 0)

    return run_session(s, run_dir, work)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from scoreflow.loop.loop import evaluate

    warn_inapplicable_set(args, "evaluate")
    if args.dry_run:
        return _dry_run(args, "evaluate")
    cfg, run_dir = prepare_run_dir(args, "evaluate")  # checks the run and its adapter
    iteration = args.iteration
    if iteration is None:
        iteration = max(adapter_iterations(run_dir), default=0)
    s = start_session(cfg, run_dir, args)

    def work() -> None:
        if iteration:
            s.backend.load_adapter(s.run.adapter_dir(iteration))
        evaluate(s, iteration)

    return run_session(s, run_dir, work)


def cmd_run_workflow(args: argparse.Namespace) -> int:
    import asyncio

    from scoreflow.run.preflight import preflight
    from scoreflow.run.session import make_backend, make_executor, make_sandbox
    from scoreflow.execute.runner import Runner
    from scoreflow.errors import InfraError

    warn_inapplicable_set(args, "run-workflow")
    cfg = build_config(args)
    task = preflight(cfg, (args.split,), model=cfg.executor.kind == "local")
    problems = task.problems(args.split)
    if not 0 <= args.index < len(problems):
        raise UserError(f"--index {args.index} is out of range: the {args.split} split has {len(problems)} problems")
    try:
        source = args.workflow.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read workflow file {args.workflow}: {e.strerror or e}") from None
    from scoreflow.execute.workflow import extract

    if "<graph>" in source:
        source = extract(source) or ""
    problem = problems[args.index]
    t0 = time.monotonic()
    runner = Runner(task, None, make_sandbox(cfg), max_tokens=cfg.executor.max_tokens,  # type: ignore[arg-type]
                    extract=cfg.executor.extract_answer)
    check = runner.check(source, problem)
    verdict: dict[str, Any]
    if not check.ok:
        verdict = {"status": "rejected", "reason": check.reason, "output": None, "score": 0.0,
                   "executor_calls": 0, "tokens": 0}
    else:
        backend = make_backend(cfg) if cfg.executor.kind == "local" else None
        runner.executor = make_executor(cfg, backend)  # type: ignore[arg-type]

        async def go():
            try:
                return await runner.run(source, problem)
            finally:
                await runner.executor.close()

        try:
            out = asyncio.run(go())
        except InfraError as e:
            verdict = {"status": "error", "reason": f"executor failed: {e}", "output": None, "score": 0.0,
                       "executor_calls": 0, "tokens": 0}
        else:
            verdict = {"status": out.status, "reason": out.reason, "output": out.output, "answer": out.answer,
                       "score": out.score, "executor_calls": out.calls, "tokens": out.tokens}
    verdict.update(problem=problem.id, task=task.name, seconds=round(time.monotonic() - t0, 3))
    print(json.dumps(verdict, ensure_ascii=False))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from scoreflow.report.export import export_run
    except ImportError:
        raise UserError("adapter export is not available in this build") from None
    if args.to is None and args.workflows is None:
        raise UserError("export what? --to peft|mlx for the adapter, --workflows OUT_DIR for the best workflows")
    if args.workflows is not None:
        from scoreflow.report.export import export_workflows

        entries = export_workflows(args.run_dir, args.workflows)
        print(f"{args.workflows}: {len(entries)} workflow(s), index.jsonl")
    if args.to is None:
        return 0
    if not RunDir(args.run_dir).adapters_path.is_dir():
        raise UserError(f"{args.run_dir} holds no adapters/ folder")
    out = export_run(args.run_dir, args.to, args.iteration, args.out)
    print(out)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from scoreflow import config as C

    print(C.to_toml(C.build({"run": {"preset": args.preset}}), documented=True))
    return 0


def cmd_reporting(args: argparse.Namespace) -> int:
    try:
        from scoreflow.report import report
    except ImportError:
        raise UserError(f"`scoreflow {args.command}` is not available in this build") from None
    return report.main(args.command, args.rest)


def cmd_solve(args: argparse.Namespace) -> int:
    from scoreflow.cli.solve import main as solve

    warn_inapplicable_set(args, "solve")
    return solve(args)


def cmd_train_adapter(args: argparse.Namespace) -> int:
    from scoreflow.cli.train_adapter import main as train_adapter

    return train_adapter(args)


COMMANDS = {"train-adapter": cmd_train_adapter, "optimize": cmd_optimize, "evaluate": cmd_evaluate, "run-workflow": cmd_run_workflow,
            "export": cmd_export, "config": cmd_config, "report": cmd_reporting, "runs": cmd_reporting,
            "show": cmd_reporting, "solve": cmd_solve}


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. A reader that closes the output early (`scoreflow config | head`)
    ends it quietly with 0, as Python's documentation on SIGPIPE recommends."""
    try:
        try:
            return _command(argv)
        finally:  # also after --help's SystemExit
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's flush at exit
    except BrokenPipeError:
        _stdout_to_devnull()
        return 0


def _stdout_to_devnull() -> None:
    # Python flushes stdout again at exit; into the closed pipe that would fail once more.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _command(argv: list[str] | None) -> int:
    _quiet()
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # main() ends it quietly; not a failure to log
        raise
    except UserError as e:
        print(f"scoreflow: error: {one_line(str(e), 1000)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scoreflow: interrupted", file=sys.stderr)
        return 130
    except RunFailed as e:  # the run directory's log holds the traceback
        if isinstance(e.__cause__, BrokenPipeError):  # the run's reader went away
            raise e.__cause__ from None
        return _failed(args, str(e), e.__cause__ or e)
    except ModuleNotFoundError as e:  # an optional package: one line naming the extra that installs it
        from scoreflow.extras import from_error

        print(f"scoreflow: error: {from_error(e) or one_line(str(e))}", file=sys.stderr)
        return 2
    except Exception as e:
        reason = one_line(f"{type(e).__name__}: {e}", 300)
        return _failed(args, f"{reason}; full traceback in {save_traceback(e)}", e)


def _failed(args: argparse.Namespace, line: str, e: BaseException) -> int:
    if getattr(args, "debug", False):
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    print(f"scoreflow: error: {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
