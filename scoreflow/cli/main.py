"""The `scoreflow` command line: one module per command (its `add_parser` and `run`), dispatched here.
Bad input ends with one line on stderr and exit code 2, before any model loads; a failure during a
run ends with one line and exit code 1, its traceback saved to a log file that the line names
(--debug prints it too)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from scoreflow.cli import (config, evaluate, export, optimize, report, run_workflow, runs, show, solve,
                           train_adapter)
from scoreflow.cli.flags import CONFIG_COMMANDS, FLAGS, debug_arg, flag_commands
from scoreflow.errors import RunFailed, UserError, one_line

COMMANDS = (optimize, evaluate, run_workflow, solve, export, train_adapter, config, report, runs, show)


def _quiet() -> None:
    """No library chatter or progress bars unless the user's environment asks for them; transformers
    reads both variables when a command first imports it (a command without a model never does)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")


class _Parser(argparse.ArgumentParser):
    """Says which commands take a flag when it is given to one it cannot affect."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
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
    debug_arg(ap, False)
    sub = ap.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run=command.run)
    return ap


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
    try:
        args = parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage line (or --help)
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.run(args)
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
        from scoreflow.run.start import save_traceback

        reason = one_line(f"{type(e).__name__}: {e}", 300)
        return _failed(args, f"{reason}; full traceback in {save_traceback(e)}", e)


def _failed(args: argparse.Namespace, line: str, e: BaseException) -> int:
    if getattr(args, "debug", False):
        traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    print(f"scoreflow: error: {line}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
