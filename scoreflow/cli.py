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
from typing import Any, Callable

from .errors import RunFailed, StopRun, UserError, one_line
from .rundir import RunDir

# The commands whose configuration comes from config keys (a file, flags and --set).
CONFIG_COMMANDS = ("optimize", "evaluate", "run-workflow", "solve")
_ALL = frozenset(CONFIG_COMMANDS)
_OPT = frozenset({"optimize"})
_OPT_EVAL = frozenset({"optimize", "evaluate"})
_NO_RUN_WORKFLOW = frozenset({"optimize", "evaluate", "solve"})

# Which commands each config key can affect: its section's scope unless the key has its own.
# optimize runs the loop (and evaluates with --evaluate or run.compare); evaluate generates one
# workflow per test problem (up to generator.max_attempts) and runs it executor.runs times;
# run-workflow runs one given workflow once (its local executor is the generator's base model);
# solve generates with --attempts and runs the workflow once, with the run's adapter.
SECTION_SCOPE: dict[str, frozenset[str]] = {
    "run": _ALL, "task": _ALL, "generator": _NO_RUN_WORKFLOW, "executor": _ALL,
    "lora": _NO_RUN_WORKFLOW, "train": _OPT, "sandbox": _ALL,
}
KEY_SCOPE: dict[tuple[str, str], frozenset[str]] = {
    ("run", "iterations"): _OPT, ("run", "problems"): _OPT, ("run", "compare"): _OPT,
    ("run", "test_problems"): _OPT_EVAL, ("run", "judge"): _OPT_EVAL,
    # the local executor of run-workflow is a backend on the generator's base model
    ("generator", "model"): _ALL, ("generator", "backend"): _ALL, ("generator", "device"): _ALL,
    ("generator", "dtype"): _ALL,
    ("generator", "workflows_per_problem"): _OPT, ("generator", "max_attempts"): _OPT_EVAL,
    ("generator", "engine"): _OPT_EVAL, ("generator", "vllm_python"): _OPT_EVAL,
    ("generator", "vllm_url"): _OPT_EVAL, ("generator", "vllm_args"): _OPT_EVAL,
    ("executor", "runs"): _OPT_EVAL,
}


def key_scope(section: str, key: str) -> frozenset[str]:
    """The commands that config key `section.key` can affect (all of them for an unknown key)."""
    return KEY_SCOPE.get((section, key), SECTION_SCOPE.get(section, _ALL))


# (flag, section, key, type, help): flags that override the config file. Each subcommand gets the
# flags whose key can affect it (key_scope); --set reaches every key.
FLAGS: list[tuple[str, str, str, Callable[[str], Any], str]] = [
    ("--task", "run", "task", str, "task: arith (built in), gsm8k, math, humaneval, mbpp, hotpotqa, drop, jsonl"),
    ("--data", "run", "data", str, "data file or folder of AFlow-format JSON Lines"),
    ("--iterations", "run", "iterations", int, "optimisation iterations"),
    ("--problems", "run", "problems", int, "problems of the optimisation split per iteration (0 = all)"),
    ("--test-problems", "run", "test_problems", int, "problems of the test split for evaluate (0 = all)"),
    ("--seed", "run", "seed", int, "random seed"),
    ("--preset", "run", "preset", str, "sizes: auto, demo or paper"),
    ("--backend", "generator", "backend", str, "auto, cuda (PyTorch: CUDA or CPU) or mlx"),
    ("--device", "generator", "device", str, "PyTorch device: auto, cpu, cuda, cuda:N"),
    ("--model", "generator", "model", str, "generator base model (default: the embedded SmolLM2-135M)"),
    ("-k", "generator", "workflows_per_problem", int, "workflows generated per problem"),
    ("--executor", "executor", "kind", str, "local (a model in this process) or openai (OpenAI-compatible server)"),
    ("--executor-model", "executor", "model", str, "executor model name or path"),
    ("--base-url", "executor", "base_url", str, "OpenAI-compatible base URL"),
    ("--api-key-env", "executor", "api_key_env", str, "environment variable holding the API key"),
    ("--runs", "executor", "runs", int, "executions per workflow (r)"),
    ("--max-cost-usd", "executor", "max_cost_usd", float, "stop cleanly at this executor spend"),
    ("--max-tokens", "executor", "max_total_tokens", int, "stop cleanly at this many executor tokens"),
    ("--loss", "train", "loss", str, "score-dpo, dpo or sft"),
    ("--pairs", "train", "pairs", int, "preference pairs sampled per iteration"),
    ("--alpha", "train", "sampling_alpha", float, "pair sampling exponent: P ~ (s_w - s_l)^alpha"),
    ("--lr", "train", "learning_rate", float, "learning rate"),
]


def flag_commands(flag: str) -> frozenset[str]:
    """The subcommands that show and accept `flag`."""
    for f, section, key, _, _ in FLAGS:
        if f == flag:
            return key_scope(section, key) - {"solve"}  # solve takes the run's configuration and --set only
    raise KeyError(flag)


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
    p.add_argument("--config", metavar="FILE.toml", help="configuration file (see `scoreflow config`)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key (a warning names keys that cannot affect this command)")
    for flag, section, key, kind, help in FLAGS:
        if command in flag_commands(flag):
            p.add_argument(flag, dest=f"{section}.{key}", type=kind, default=None, help=help)


def inapplicable_set_keys(items: list[str], command: str) -> list[str]:
    """The known `--set` keys among `items` that cannot affect `command` (malformed or unknown keys
    are left to the configuration's own errors)."""
    from . import config as C

    known = C.as_dict(C.Config())
    return [f"{section}.{k}" for section, values in C.parse_set(items).items() for k in values
            if k in known.get(section, {}) and command not in key_scope(section, k)]


def warn_inapplicable_set(args: argparse.Namespace, command: str) -> None:
    """One line on stderr when a --set key cannot affect `command`; the key is still set."""
    try:
        keys = inapplicable_set_keys(getattr(args, "set", None) or [], command)
    except UserError:
        return  # a malformed --set: the configuration reports it
    if keys:
        where = sorted({c for k in keys for c in key_scope(*k.split(".", 1))}, key=CONFIG_COMMANDS.index)
        print(f"scoreflow: warning: --set {', '.join(keys)} cannot affect `scoreflow {command}` "
              f"(only {', '.join(where)})", file=sys.stderr)


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, help="run directory (default: runs/TASK-DATE-TIME)")
    p.add_argument("--no-dashboard", action="store_true", help="plain log lines instead of the live dashboard")


def _dry_run_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="check the configuration and print the plan with its "
                   "executor calls, tokens and cost estimate; loads no model, calls no executor")


def _dry_run(args: argparse.Namespace, command: str) -> int:
    from .plan import make_plan
    from .trackers import check_installed

    check_installed(getattr(args, "report_to", None) or [])
    cfg, run_dir = _prepare_run_dir(args, command)  # reads, never creates, the run directory
    iteration = getattr(args, "iteration", None)
    if command == "evaluate" and iteration is None:
        iteration = max(_adapter_iterations(run_dir), default=0)
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
    from .solve import add_parser as add_solve

    add_solve(sub, _debug_arg)
    p = sub.add_parser("config", help="print every configuration key with its default and meaning")
    p.add_argument("--preset", default="paper", choices=("demo", "paper"))
    for name, help in (("report", "write report.md and plots for a run"), ("runs", "list runs"),
                       ("show", "print a problem's workflows with their scores")):
        p = sub.add_parser(name, help=help, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return ap


def build_config(args: argparse.Namespace, base: dict[str, dict[str, Any]] | None = None):
    from . import config as C

    layers = [base or {}]
    if getattr(args, "config", None):
        layers.append(C.read_toml(args.config))
    flags: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, key = dest.split(".", 1)
            flags.setdefault(section, {})[key] = value
    layers += [flags, C.parse_set(getattr(args, "set", []))]
    return C.build(C.merge(*layers))


def _reporter(args: argparse.Namespace):
    from .trackers import with_trackers

    try:
        from .dashboard import make_reporter

        base = make_reporter(plain=getattr(args, "no_dashboard", False))
    except ImportError:
        from .progress import Reporter

        base = Reporter()
    return with_trackers(base, getattr(args, "report_to", None))  # --report-to: trackers wrap the reporter


def _prepare_run_dir(args: argparse.Namespace, command: str):
    """The configuration and the run directory, new or resumed."""
    from . import config as C

    run_dir: Path | None = args.run_dir
    snapshot = RunDir(run_dir).config_path if run_dir else None
    has_run = snapshot is not None and snapshot.is_file()
    if command == "evaluate":
        _check_evaluate(args, run_dir, has_run)
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


def _adapter_iterations(run_dir: Path | None) -> list[int]:
    return list(RunDir(run_dir).adapters()) if run_dir else []


def _check_evaluate(args: argparse.Namespace, run_dir: Path | None, has_run: bool) -> None:
    """Evaluate reads a run; the base model only when asked for (--iteration 0)."""
    it = args.iteration
    if it is not None and it < 0:
        raise UserError(f"--iteration {it}: give 0 (the base model) or an iteration of the run")
    if not has_run and it != 0:
        where = (f"{run_dir} holds no run (no config.toml)" if run_dir
                 else "evaluate needs the --run-dir of an optimize run")
        raise UserError(f"{where}; to evaluate the base model on purpose, use --iteration 0 with a new --run-dir")
    if it and it not in _adapter_iterations(run_dir):
        have = ", ".join(map(str, _adapter_iterations(run_dir))) or "none"
        raise UserError(f"{run_dir} has no adapter for iteration {it} (it has: {have})")


def _splits(args: argparse.Namespace) -> tuple[str, ...]:
    if args.command == "evaluate":
        return ("test",)
    return ("validate", "test") if getattr(args, "evaluate", False) else ("validate",)


def _start(cfg, run_dir: Path, args: argparse.Namespace):
    """Check everything that can be checked cheaply before loading a model, then build the session."""
    import shutil

    from .preflight import preflight
    from .session import build_session

    task = preflight(cfg, _splits(args))  # before a run directory or a model exists
    replace = getattr(args, "force", False) and not getattr(args, "resume", False)
    if replace and run_dir.exists() and any(run_dir.iterdir()):
        shutil.rmtree(run_dir)
    reporter = _reporter(args)
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


def _info(s, run_dir: Path):
    from .config import as_dict
    from .progress import RunInfo

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


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # recording a failure must not hide it
        pass


def _run(s, run_dir: Path, work: Callable[[], Any]) -> int:
    def status(state: str, reason: str = "") -> None:
        s.run.set_status(state, reason, usage=s.executor.usage.as_dict())

    status("running")
    with s.reporter:
        s.reporter.start(_info(s, run_dir))
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
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from .loop import evaluate, optimize

    warn_inapplicable_set(args, "optimize")
    if args.dry_run:
        return _dry_run(args, "optimize")
    cfg, run_dir = _prepare_run_dir(args, "optimize")
    s = _start(cfg, run_dir, args)

    def work() -> None:
        optimize(s)
        if args.evaluate:
            latest = s.run.latest_adapter()
            evaluate(s, latest[0] if latest else 0)

    return _run(s, run_dir, work)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .loop import evaluate

    warn_inapplicable_set(args, "evaluate")
    if args.dry_run:
        return _dry_run(args, "evaluate")
    cfg, run_dir = _prepare_run_dir(args, "evaluate")  # checks the run and its adapter
    iteration = args.iteration
    if iteration is None:
        iteration = max(_adapter_iterations(run_dir), default=0)
    s = _start(cfg, run_dir, args)

    def work() -> None:
        if iteration:
            s.backend.load_adapter(s.run.adapter_dir(iteration))
        evaluate(s, iteration)

    return _run(s, run_dir, work)


def cmd_run_workflow(args: argparse.Namespace) -> int:
    import asyncio

    from .preflight import preflight
    from .session import make_backend, make_executor, make_sandbox
    from .runner import Runner
    from .sandbox import InfraError

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
    from .workflow import extract

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
        from .adapters import export_run
    except ImportError:
        raise UserError("adapter export is not available in this build") from None
    if args.to is None and args.workflows is None:
        raise UserError("export what? --to peft|mlx for the adapter, --workflows OUT_DIR for the best workflows")
    if args.workflows is not None:
        from .export import export_workflows

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
    from . import config as C

    print(C.to_toml(C.build({"run": {"preset": args.preset}}), documented=True))
    return 0


def cmd_reporting(args: argparse.Namespace) -> int:
    try:
        from . import report
    except ImportError:
        raise UserError(f"`scoreflow {args.command}` is not available in this build") from None
    return report.main(args.command, args.rest)


def cmd_solve(args: argparse.Namespace) -> int:
    from .solve import main as solve

    warn_inapplicable_set(args, "solve")
    return solve(args)


COMMANDS = {"optimize": cmd_optimize, "evaluate": cmd_evaluate, "run-workflow": cmd_run_workflow,
            "export": cmd_export, "config": cmd_config, "report": cmd_reporting, "runs": cmd_reporting,
            "show": cmd_reporting, "solve": cmd_solve}


def main(argv: list[str] | None = None) -> int:
    _quiet()
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"scoreflow: error: {one_line(str(e), 1000)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("scoreflow: interrupted", file=sys.stderr)
        return 130
    except RunFailed as e:  # the run directory's log holds the traceback
        return _failed(args, str(e), e.__cause__ or e)
    except ModuleNotFoundError as e:  # an optional package: one line naming the extra that installs it
        from .extras import from_error

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
