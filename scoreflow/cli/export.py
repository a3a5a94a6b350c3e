"""`scoreflow export`: a run's adapter in PEFT or mlx-lm format with a model card; its best workflows."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scoreflow.cli.flags import debug_arg
from scoreflow.errors import UserError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="a run's adapter in PEFT or mlx-lm format with a model card; its best workflows")
    debug_arg(p)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--to", choices=("peft", "mlx"), help="adapter format (a README.md model card goes beside it)")
    p.add_argument("--iteration", type=int)
    p.add_argument("--out", type=Path)
    p.add_argument("--workflows", type=Path, metavar="OUT_DIR",
                   help="write each problem's best workflow as a file for `scoreflow run-workflow`")
    return p


def run(args: argparse.Namespace) -> int:
    from scoreflow.report.export import export_run, export_workflows
    from scoreflow.run.rundir import RunDir

    if args.to is None and args.workflows is None:
        raise UserError("export what? --to peft|mlx for the adapter, --workflows OUT_DIR for the best workflows")
    if args.workflows is not None:
        entries = export_workflows(args.run_dir, args.workflows)
        print(f"{args.workflows}: {len(entries)} workflow(s), index.jsonl")
    if args.to is None:
        return 0
    if not RunDir(args.run_dir).adapters_path.is_dir():
        raise UserError(f"{args.run_dir} holds no adapters/ folder")
    print(export_run(args.run_dir, args.to, args.iteration, args.out))
    return 0
