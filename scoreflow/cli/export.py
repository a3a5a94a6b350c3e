"""`scoreflow export`: a run's adapter in PEFT or mlx-lm format with a model card; its best workflows;
a workflow library of its top K workflows for `scoreflow solve --library`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scoreflow.cli.flags import debug_arg
from scoreflow.errors import UserError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="a run's adapter in PEFT or mlx-lm format with a model card; its best "
                       "workflows; a workflow library")
    debug_arg(p)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--to", choices=("peft", "mlx"), help="adapter format (a README.md model card goes beside it)")
    p.add_argument("--iteration", type=int)
    p.add_argument("--out", type=Path, help="where the adapter (--to) or the library (--library) goes "
                   "(default: RUN/export/...)")
    p.add_argument("--workflows", type=Path, metavar="OUT_DIR",
                   help="write each problem's best workflow as a file for `scoreflow run-workflow`")
    p.add_argument("--library", type=int, metavar="K", help="write the run's K best distinct workflows (by their "
                   "validate-split scores) with a manifest, for `scoreflow solve --library`")
    return p


def run(args: argparse.Namespace) -> int:
    from scoreflow.report.export import export_run, export_workflows
    from scoreflow.run.rundir import RunDir

    if args.to is None and args.workflows is None and args.library is None:
        raise UserError("export what? --to peft|mlx for the adapter, --workflows OUT_DIR for the best workflows, "
                        "--library K for a workflow library")
    if args.to is not None and args.library is not None and args.out is not None:
        raise UserError("--out names one folder: export the adapter and the library separately")
    if args.library is not None:
        from scoreflow.report.library import write_library

        out = args.out or RunDir(args.run_dir).export_dir("library")
        entries = write_library(args.run_dir, args.library, out)
        print(f"{out}: {len(entries)} workflow(s), library.json; answer with "
              f"`scoreflow solve --library {out} \"QUESTION\"`")
    if args.workflows is not None:
        entries = export_workflows(args.run_dir, args.workflows)
        print(f"{args.workflows}: {len(entries)} workflow(s), index.jsonl")
    if args.to is None:
        return 0
    if not RunDir(args.run_dir).adapters_path.is_dir():
        raise UserError(f"{args.run_dir} holds no adapters/ folder")
    print(export_run(args.run_dir, args.to, args.iteration, args.out))
    return 0
