"""`scoreflow optimize`: run the generate-execute-train loop (scoreflow/loop/loop.py)."""

from __future__ import annotations

import argparse
from typing import Any

from scoreflow.cli.flags import config_args, debug_arg, dry_run, exit_code, run_args, run_options, warn_inapplicable_set


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("optimize", help="run the generate-execute-train loop")
    debug_arg(p)
    config_args(p, "optimize")
    run_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir where it stopped")
    p.add_argument("--force", action="store_true", help="resume even if the configuration changed, or overwrite")
    p.add_argument("--evaluate", action="store_true", help="evaluate on the test split after the last iteration")
    p.add_argument("--report-to", action="append", default=[], metavar="TRACKER",
                   choices=("tensorboard", "wandb", "mlflow", "trackio"),
                   help="also log to an experiment tracker: tensorboard, wandb, mlflow or trackio (repeatable)")
    return p


def run(args: argparse.Namespace) -> int:
    from scoreflow.api import launch

    warn_inapplicable_set(args, "optimize")
    opts = run_options(args, "optimize")
    if args.dry_run:
        return dry_run(opts, "optimize")
    return exit_code(launch(opts, "optimize").status)
