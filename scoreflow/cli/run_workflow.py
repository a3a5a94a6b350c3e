"""`scoreflow run-workflow`: one workflow file on one problem, its verdict as one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from scoreflow.cli.flags import build_config, config_args, debug_arg, warn_inapplicable_set
from scoreflow.errors import InfraError, UserError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("run-workflow", help="run one workflow file on one problem and print a JSON verdict")
    debug_arg(p)
    config_args(p, "run-workflow")
    p.add_argument("--workflow", type=Path, required=True, help="file holding `async def run_workflow(self)`")
    p.add_argument("--index", type=int, default=0, help="problem index in the split")
    p.add_argument("--split", default="validate", choices=("validate", "test"))
    return p


def _source(path: Path) -> str:
    from scoreflow.execute.workflow import extract

    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read workflow file {path}: {e.strerror or e}") from None
    return (extract(source) or "") if "<graph>" in source else source


def run(args: argparse.Namespace) -> int:
    from scoreflow.run.preflight import preflight
    from scoreflow.run.session import make_backend, make_runner, run_executor

    warn_inapplicable_set(args, "run-workflow")
    cfg = build_config(args)
    task = preflight(cfg, (args.split,), model=cfg.executor.kind == "local")
    problems = task.problems(args.split)
    if not 0 <= args.index < len(problems):
        raise UserError(f"--index {args.index} is out of range: the {args.split} split has {len(problems)} problems")
    source = _source(args.workflow)
    problem = problems[args.index]
    t0 = time.monotonic()
    runner = make_runner(cfg, task, None)
    check = runner.check(source, problem)
    none = {"output": None, "score": 0.0, "executor_calls": 0, "tokens": 0}
    if not check.ok:
        verdict: dict[str, Any] = {"status": "rejected", "reason": check.reason, **none}
    else:
        backend = make_backend(cfg) if cfg.executor.kind == "local" else None  # the local executor's model
        runner.executor = run_executor(cfg, backend)

        async def go():
            try:
                return await runner.run(source, problem)
            finally:
                await runner.executor.close()

        try:
            out = asyncio.run(go())
        except InfraError as e:
            verdict = {"status": "error", "reason": f"executor failed: {e}", **none}
        else:
            verdict = {"status": out.status, "reason": out.reason, "output": out.output, "answer": out.answer,
                       "score": out.score, "executor_calls": out.calls, "tokens": out.tokens}
    verdict.update(problem=problem.id, task=task.name, seconds=round(time.monotonic() - t0, 3))
    print(json.dumps(verdict, ensure_ascii=False))
    return 0
