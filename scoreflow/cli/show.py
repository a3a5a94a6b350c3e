"""`scoreflow show`: one problem's workflows of one iteration, best first, rejected ones with reasons."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scoreflow.cli.flags import console as flags_console, debug_arg


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("show", help="print a problem's workflows with their scores",
                       description="print a problem's workflows with their scores, best first")
    debug_arg(p)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--problem", required=True, metavar="I", help="problem index in the run (or its id)")
    p.add_argument("--iteration", type=int, metavar="N", help="iteration (default: the latest with workflows)")
    return p


def run(args: argparse.Namespace) -> int:

    from scoreflow.report.show import show
    from scoreflow.run.rundir import load_run

    show(load_run(args.run_dir), args.problem, args.iteration, flags_console())
    return 0
