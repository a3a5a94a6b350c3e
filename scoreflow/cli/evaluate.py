"""`scoreflow evaluate`: the test split's solve rate with a run's latest (or a given) adapter."""

from __future__ import annotations

import argparse
from typing import Any

from scoreflow.cli.flags import config_args, debug_arg, dry_run, exit_code, run_args, run_options, warn_inapplicable_set


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="solve rate on the test split with the latest (or a given) adapter")
    debug_arg(p)
    config_args(p, "evaluate")
    run_args(p)
    p.add_argument("--iteration", type=int,
                   help="adapter of this iteration (default latest); 0 = the base model, also in a new --run-dir")
    return p


def run(args: argparse.Namespace) -> int:
    from scoreflow.api import launch

    warn_inapplicable_set(args, "evaluate")
    opts = run_options(args, "evaluate")
    if args.dry_run:
        return dry_run(opts, "evaluate")
    return exit_code(launch(opts, "evaluate").status)
