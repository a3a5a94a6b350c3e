"""`scoreflow report`: report.md and PNG plots for a run, other runs overlaid with --compare."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scoreflow.cli.flags import debug_arg


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="write report.md and plots for a run",
                       description="write report.md and PNG plots for a run")
    debug_arg(p)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--compare", type=Path, nargs="+", default=[], metavar="RUN",
                   help="other runs to overlay in the same plots (e.g. a DPO run beside Score-DPO)")
    p.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/report)")
    return p


def run(args: argparse.Namespace) -> int:
    from scoreflow.extras import require
    from scoreflow.report.report import load_runs, write_report

    require("matplotlib", "scoreflow report")
    runs = load_runs([args.run_dir, *args.compare])
    print(write_report(runs, args.out or args.run_dir / "report"))
    return 0
