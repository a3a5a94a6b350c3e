"""`scoreflow runs`: the runs in a folder as a table (status, iterations, best and test scores, spend)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from scoreflow.cli.flags import console as flags_console, debug_arg
from scoreflow.errors import UserError
from scoreflow.fmt import fmt_count, fmt_number as _f
from scoreflow.run.rundir import is_run_dir, load_run


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("runs", help="list runs", description="list the runs in a folder")
    debug_arg(p)
    p.add_argument("dir", type=Path, nargs="?", default=Path("runs"))
    return p


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    if not args.dir.is_dir():
        raise UserError(f"no runs folder at {args.dir}")
    paths = [args.dir] if is_run_dir(args.dir) else sorted(
        (d for d in args.dir.iterdir() if is_run_dir(d)), key=lambda d: d.stat().st_mtime)
    console = flags_console()
    if not paths:
        console.print(f"no runs in {args.dir}")
        return 0
    runs = [load_run(d) for d in paths]
    task = {r.path: str(r.config.get("run", {}).get("task", "–")) for r in runs}
    loss = {r.path: str(r.config.get("train", {}).get("loss", "–")) for r in runs}
    shared = [f"{name} {next(iter(v.values()))}" for name, v in (("task", task), ("loss", loss))
              if len(set(v.values())) == 1]
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0),
                  title=f"{len(runs)} run{'s' if len(runs) != 1 else ''} in {args.dir}"
                  + (f" ({', '.join(shared)})" if shared else ""), title_justify="left")
    cols = ["run"] + [c for c, v in (("task", task), ("loss", loss)) if len(set(v.values())) > 1]
    judged = any(r.tests and r.tests[-1].has("judged_solve_rate") for r in runs)
    cols += ["status", "iters", "best", "test", *(["judged"] if judged else []), "tokens", "spend"]
    cols += ["updated"] if console.width >= 110 else []
    for col in cols:
        table.add_column(col, justify="right" if col in ("iters", "best", "test", "judged", "tokens", "spend")
                         else "left",
                         no_wrap=col != "run", overflow="fold",
                         min_width=min(12, max(len(r.path.name) for r in runs)) if col == "run" else None)
    for r in runs:
        status = r.status_label()
        style = {"finished": "green", "running": "cyan", "crashed, resumable": "red", "failed": "red"}.get(status,
                                                                                                      "yellow")
        cells = {"run": r.path.name, "task": task[r.path], "loss": loss[r.path], "status": f"[{style}]{status}[/]",
                 "iters": f"{len(r.iterations)}/{r.planned_iterations() or '?'}", "best": _f(r.best_score()),
                 "test": _f(r.tests[-1].solve_rate) if r.tests else "–",
                 "judged": _f(r.tests[-1].judged_solve_rate) if r.tests else "–",
                 "tokens": fmt_count(r.executor_tokens()),
                 "spend": f"${r.cost():.2f}" if r.cost() is not None else "–",
                 "updated": str(r.status.get("updated", "–")).replace("T", " ")[:16]}
        table.add_row(*(cells[c] for c in cols))
    console.print(table)
    return 0
