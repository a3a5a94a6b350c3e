"""`scoreflow solve RUN "question"` (or `--file problems.jsonl`): a trained run's generator writes a
workflow for each new problem, the sandbox runs it with the run's executor, and the answer and the
workflow are printed (one JSON object per problem with --json). `scoreflow solve --library DIR
"question"`: the workflows of a library answer instead, and no generator loads. See
scoreflow.loop.solve.Solver and scoreflow.loop.library."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scoreflow.cli.flags import debug_arg, warn_inapplicable_set
from scoreflow.errors import UserError


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("solve", help="answer new problems with a trained run: write a workflow, run it, print both")
    debug_arg(p)
    p.add_argument("run_dir", nargs="?", help="the run directory (its config.toml and adapters); not with --library")
    p.add_argument("question", nargs="?", help="the problem's text")
    p.add_argument("--library", type=Path, metavar="DIR", help="answer with the workflows of a library "
                   "(`scoreflow export RUN --library K`) and its run's executor; no generator loads")
    p.add_argument("--rule", choices=("first", "vote"), default="first", help="with --library: first (the "
                   "workflows in rank order until one answers) or vote (all run; the most common answer wins, "
                   "a tie going to the better-ranked workflow)")
    p.add_argument("--file", type=Path, help="JSON Lines of problems: question (required), id, answer (to score), "
                   "context (shown to the workflow, not the generator), entry_point (code tasks)")
    p.add_argument("--json", action="store_true", help="one JSON object per problem")
    p.add_argument("--iteration", type=int, help="adapter of this iteration (default the latest; 0 = base model)")
    p.add_argument("--attempts", type=int, help="workflows generated per problem until one is valid (default 3)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a key of the run's configuration, e.g. executor.model=...")
    return p


def _problems(args: argparse.Namespace) -> list[dict[str, Any]]:
    if (args.question is None) == (args.file is None):
        raise UserError("give the question, or --file with a JSON Lines file of problems (not both)")
    if args.question is not None:
        if not args.question.strip():
            raise UserError("the question is empty")
        return [{"question": args.question}]
    from scoreflow.tasks.base import read_jsonl

    recs = list(read_jsonl(args.file))
    for n, rec in enumerate(recs, 1):
        if not str(rec.get("question", "")).strip():
            raise UserError(f"{args.file}:{n}: no question field")
    if not recs:
        raise UserError(f"{args.file} holds no problems")
    return recs


def _library_args(args: argparse.Namespace) -> None:
    """With --library the one positional is the question (there is no run directory)."""
    if args.question is not None:
        raise UserError("with --library give the question alone: the library replaces the run directory")
    if args.iteration is not None or args.attempts is not None:
        raise UserError("--iteration and --attempts choose the generator's adapter and tries; with --library no "
                        "generator runs")
    args.question, args.run_dir = args.run_dir, None


def run(args: argparse.Namespace) -> int:
    from scoreflow.api import Solver
    from scoreflow.config import parse_set

    warn_inapplicable_set(args, "solve")
    if args.library is not None:
        _library_args(args)
    elif args.run_dir is None:
        raise UserError("give the run directory (or --library DIR) and the question")
    attempts = 3 if args.attempts is None else args.attempts
    if attempts < 1:
        raise UserError(f"--attempts {attempts}: give at least 1")
    records = _problems(args)
    if args.library is not None:
        solver = Solver.from_library(args.library, parse_set(args.set), rule=args.rule)
        used = f"none: library {args.library} ({len(solver.library)} workflows, rule {args.rule})"
        origin = {"library": str(args.library)}
    else:
        solver = Solver.from_run(Path(args.run_dir), args.iteration, parse_set(args.set))
        used = f"adapter of iteration {solver.iteration}" if solver.iteration else "base model (no adapter)"
        origin = {"run": str(args.run_dir)}
    with solver:
        problems = [solver.problem(str(r["question"]), answer=r.get("answer"), context=str(r.get("context") or ""),
                                   entry_point=str(r.get("entry_point") or ""), id=str(r.get("id", f"problem-{i}")))
                    for i, r in enumerate(records, 1)]
        solutions = solver.solve_problems(problems, attempts=attempts)
    for sol in solutions:
        if args.json:
            print(json.dumps({**sol.as_dict(), **origin, "generator": used}, ensure_ascii=False))
            continue
        print(f"problem {sol.id}: {sol.question}")
        print(f"answer: {sol.answer if sol.answer is not None else '(none)'}")
        extra = f" | score {sol.score:g}" if sol.score is not None else ""
        tries = f"{sol.attempts} workflow(s) " + ("tried" + (f", #{sol.rank} answered" if sol.rank else "")
                                                  if args.library else "generated")
        print(f"status: {sol.status}{' (' + sol.reason + ')' if sol.reason else ''} | {used} | {tries} | "
              f"{sol.executor_calls} executor calls, {sol.tokens} tokens{extra} | {sol.seconds:.1f} s")
        if sol.workflow:
            print("workflow:\n" + "\n".join("    " + line for line in sol.workflow.splitlines()))
        print()
    return 0
