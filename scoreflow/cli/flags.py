"""The command line's half of the configuration pipeline: flags generated from the config fields
(their type and help come from config.py, so each key is documented once), which commands each key
can affect, and `build_config`, the one merge of a run's saved config, a file, flags and --set
that optimize, evaluate, resume and train-adapter share; and the arguments every command that
starts a run shares, turned into its `RunOptions`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from dataclasses import fields
from typing import Any, Callable

from scoreflow import config as C
from scoreflow.errors import UserError
from scoreflow.run.start import RunOptions

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


# The config keys that have a flag of their own; --set reaches every key.
FLAG_KEYS: list[tuple[str, str, str]] = [
    ("--task", "run", "task"), ("--data", "run", "data"), ("--iterations", "run", "iterations"),
    ("--problems", "run", "problems"), ("--test-problems", "run", "test_problems"), ("--seed", "run", "seed"),
    ("--preset", "run", "preset"), ("--backend", "generator", "backend"), ("--device", "generator", "device"),
    ("--model", "generator", "model"), ("-k", "generator", "workflows_per_problem"),
    ("--executor", "executor", "kind"), ("--executor-model", "executor", "model"),
    ("--base-url", "executor", "base_url"), ("--api-key-env", "executor", "api_key_env"),
    ("--runs", "executor", "runs"), ("--max-cost-usd", "executor", "max_cost_usd"),
    ("--max-tokens", "executor", "max_total_tokens"), ("--loss", "train", "loss"), ("--pairs", "train", "pairs"),
    ("--alpha", "train", "sampling_alpha"), ("--lr", "train", "learning_rate"),
]


def _flag(flag: str, section: str, key: str) -> tuple[str, str, str, Callable[[str], Any], str]:
    values = getattr(C.Config(), section)
    f = next(f for f in fields(values) if f.name == key)
    return flag, section, key, type(getattr(values, key)), f.metadata["help"]


# (flag, section, key, type, help): flags that override the config file, typed and documented by
# their config field. Each subcommand gets the flags whose key can affect it (key_scope).
FLAGS: list[tuple[str, str, str, Callable[[str], Any], str]] = [_flag(*k) for k in FLAG_KEYS]


def flag_commands(flag: str) -> frozenset[str]:
    """The subcommands that show and accept `flag`."""
    for f, section, key, _, _ in FLAGS:
        if f == flag:
            return key_scope(section, key) - {"solve"}  # solve takes the run's configuration and --set only
    raise KeyError(flag)


def config_file_args(p: argparse.ArgumentParser, set_help: str) -> None:
    p.add_argument("--config", metavar="FILE.toml", help="configuration file (see `scoreflow config`)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help=set_help)


def config_args(p: argparse.ArgumentParser, command: str) -> None:
    """--config, --set and the flags whose key can affect `command`."""
    config_file_args(p, "override any config key (a warning names keys that cannot affect this command)")
    for flag, section, key, kind, help in FLAGS:
        if command in flag_commands(flag):
            p.add_argument(flag, dest=f"{section}.{key}", type=kind, default=None, help=help)


def inapplicable_set_keys(items: list[str], command: str) -> list[str]:
    """The known `--set` keys among `items` that cannot affect `command` (malformed or unknown keys
    are left to the configuration's own errors)."""
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


def build_config(args: argparse.Namespace, base: dict[str, dict[str, Any]] | None = None) -> C.Config:
    """The one merge: `base` (a run's saved config.toml, on resume) < --config FILE < flags < --set.
    Flags are the parsed arguments whose dest is SECTION.KEY."""
    layers = [base or {}]
    if getattr(args, "config", None):
        layers.append(C.read_toml(args.config))
    flags: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, key = dest.split(".", 1)
            flags.setdefault(section, {})[key] = value
    layers += [flags, C.parse_set(getattr(args, "set", []))]
    return C.build(C.merge(*layers), snapshot=base is not None)


# ---- the arguments of commands that start a run ---------------------------------------------------

def debug_arg(p: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    # SUPPRESS on subcommands, so that `scoreflow --debug optimize` is not reset by the subparser.
    p.add_argument("--debug", action="store_true", default=default, help="print the full traceback of a failure")


def run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", type=Path, help="run directory (default: runs/TASK-DATE-TIME)")
    p.add_argument("--no-dashboard", action="store_true", help="plain log lines instead of the live dashboard")
    p.add_argument("--dry-run", action="store_true", help="check the configuration and print the plan with its "
                   "executor calls, tokens and cost estimate; loads no model, calls no executor")
    p.add_argument("--profile", action="store_true", help="write RUN/profile.md: each stage's wall time, work "
                   "and achieved FLOP rate against this machine's matrix-multiply rate")


def run_options(args: argparse.Namespace, command: str) -> RunOptions:
    """The RunOptions of `scoreflow optimize` or `evaluate`: on resume (and when evaluate reads a
    run) the flags are layered on the run's saved configuration."""
    from scoreflow.run.rundir import RunDir
    from scoreflow.ui.dashboard import display

    run = RunDir(args.run_dir) if args.run_dir is not None else None
    resume = getattr(args, "resume", False)
    saved = C.read_toml(run.config_path) if run is not None and run.has_config() and (
        resume or command == "evaluate") else None
    return RunOptions(build_config(args, saved), args.run_dir, resume=resume, force=getattr(args, "force", False),
                      evaluate=getattr(args, "evaluate", False), iteration=getattr(args, "iteration", None),
                      report_to=tuple(getattr(args, "report_to", None) or ()), profile=args.profile,
                      reporter=None if args.dry_run else display(plain=args.no_dashboard))


def dry_run(opts: RunOptions, command: str) -> int:
    """Print what the run would do and cost; reads, never creates, the run directory."""
    from scoreflow.run.plan import make_plan
    from scoreflow.run.start import prepare
    from scoreflow.ui.trackers import check_installed

    check_installed(list(opts.report_to))
    cfg, run_dir, iteration = prepare(opts, command)
    print(make_plan(cfg, command, run_dir, opts.evaluate, iteration).text())
    return 0


def exit_code(status: str) -> int:
    """A run's end as the command's exit code: stopped at a cap is a clean end; Ctrl-C is 130."""
    return 130 if status == "interrupted" else 0


def console() -> Any:
    """A rich console for a command's output; a closed pipe raises BrokenPipeError (rich's own
    handling exits with 1), which main() ends quietly with 0."""
    from rich.console import Console

    class PipedConsole(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return PipedConsole(highlight=False)
