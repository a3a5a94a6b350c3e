"""The test-split gap between query-level generation and a run's top-K workflow library (issue #32).

    python benchmarks/library_gap.py RUN [RUN ...] --ks 1 3 5 --rules first vote \
        --out benchmarks/results/library-gap.json

For each finished run: its library at each K is written by the export code (`scoreflow export RUN
--library K`, ranked on the validate split only; the script checks that no test problem took part),
then answers the run's own test problems (the ones its TestMetrics scored, chosen by the run's
configuration) with the library alone under each rule (scoreflow.loop.library), with the run's
executor, each answer scored by the task's scorer. One executor serves all of a run's libraries: its
reply cache answers a request an earlier library made (the executor runs at temperature 0), and
each library's executor calls and tokens count such replies all the same (model_calls: those it
paid for). The query-level side is read from the run's records: the base generator
(iteration 0) and the trained one (the run's comparison, else its last evaluated iteration).

Per run and pooled over the runs: solve rates, the paired differences library minus query-level per
problem with a bootstrap 95% CI (pooled: resampling runs, then problems within each, as
benchmarks/learning.py does), executor calls and tokens per problem, generator tokens per problem,
and wall time. Prints one JSON object; --out also writes it (benchmarks/RESULTS.md reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, emit, peak_rss_mb, today  # noqa: E402

from scoreflow import config as C  # noqa: E402
from scoreflow.loop.library import Library, answer, load_library  # noqa: E402
from scoreflow.loop.solve import Solver  # noqa: E402
from scoreflow.records import Comparison, TestMetrics  # noqa: E402
from scoreflow.report.library import write_library  # noqa: E402
from scoreflow.run.rundir import RunDir  # noqa: E402
from scoreflow.run.session import make_runner, make_task, run_executor, run_problems  # noqa: E402
from scoreflow.stats import bootstrap  # noqa: E402

Side = dict[str, Any]  # one way of answering a run's test problems: per-problem scores, calls, tokens


def side(scores: list[float], calls: list[int], tokens: list[int], **extra: Any) -> Side:
    return {"solve_rate": round(mean(scores), 4), "executor_calls_per_problem": round(mean(calls), 3),
            "executor_tokens_per_problem": round(mean(tokens), 1), **extra,
            "scores": scores, "calls": calls, "tokens": tokens}


def query_level(run: RunDir, problems: list[Any], iteration: int) -> Side:
    """The run's own evaluation of `iteration` on its test problems, checked to be these problems."""
    test = [m for m in run.read("metrics") if isinstance(m, TestMetrics) and m.iteration == iteration][-1]
    calls, tokens = [0] * len(problems), [0] * len(problems)
    for e in run.read("test_executions"):
        if e.iteration != iteration:
            continue
        if e.problem_id and e.problem_id != problems[e.problem].id:
            raise SystemExit(f"{run.path}: test problem {e.problem} was {e.problem_id}, the configuration "
                             f"chooses {problems[e.problem].id}")
        calls[e.problem] += e.calls
        tokens[e.problem] += e.tokens
    scores = [float(s) for s in test.scores]
    if len(scores) != len(problems):
        raise SystemExit(f"{run.path}: iteration {iteration} scored {len(scores)} test problems, not {len(problems)}")
    return side(scores, calls, tokens, iteration=iteration,
                generator_tokens_per_problem=round(test.generator_tokens / len(problems), 1),
                seconds=test.seconds)


def trained_iteration(run: RunDir) -> int:
    compared = [m for m in run.read("metrics") if isinstance(m, Comparison)]
    if compared:
        return compared[-1].trained
    return max(m.iteration for m in run.read("metrics") if isinstance(m, TestMetrics))


def ranked_on(manifest: dict[str, Any], validate: set[str], test: set[str]) -> dict[str, Any]:
    """Which problems the library's ranking read: all must be validate problems of the run, none a test one."""
    used = {pid for w in manifest["workflows"] for pid in w["scores"]}
    if manifest["split"] != "validate" or used & test or not used <= validate:
        raise SystemExit(f"library of {manifest['run']} ranked on problems outside the validate split: "
                         f"{sorted(used - validate)}")
    return {"split": manifest["split"], "problems": len(used), "test_problems": len(used & test)}


async def answer_with(solver: Solver, libraries: list[tuple[int, str, Library]], problems: list[Any],
                      query: dict[str, Side]) -> list[Side]:
    """Each (k, rule, library) answering `problems`, one after another, with one executor (as the solver
    builds it): identical executor requests of different libraries are answered once (the reply cache,
    the executor being deterministic at temperature 0) and still counted as calls of each."""
    executor = run_executor(solver.cfg, solver.backend)
    runner = make_runner(solver.cfg, solver.task, executor)
    sides = []
    try:
        for k, rule, library in libraries:
            before = executor.usage.calls
            t0 = time.monotonic()
            solved = await asyncio.gather(*(answer(runner, library, p, rule, t0) for p in problems))
            scores = [float(s.score or 0.0) for s in solved]
            ranks = Counter("none" if s.rank is None else str(s.rank) for s in solved)
            out = side(scores, [s.executor_calls for s in solved], [s.tokens for s in solved], k=k, rule=rule,
                       workflows=len(library), generator_tokens_per_problem=0,
                       answered_by_rank=dict(sorted(ranks.items())), model_calls=executor.usage.calls - before,
                       seconds=round(time.monotonic() - t0, 2), answers=[s.answer for s in solved])
            for name, q in query.items():
                out[f"minus_{name}"] = bootstrap([scores], [q["scores"]]).as_dict()
            sides.append(out)
    finally:
        await executor.close()
    return sides


def run_one(run_dir: Path, ks: list[int], rules: list[str], root: Path) -> dict[str, Any]:
    run = RunDir(run_dir)
    cfg = C.build(run.read_config(), snapshot=True)
    task = make_task(cfg)
    problems = run_problems(cfg, task, "test")
    validate = {p.id for p in run_problems(cfg, task, "validate")}
    query = {"trained": query_level(run, problems, trained_iteration(run)), "base": query_level(run, problems, 0)}
    libraries, ranking = [], {}
    for k in ks:
        folder = root / f"{run_dir.name}-seed{cfg.run.seed}" / f"library-{k}"
        write_library(run_dir, k, folder)
        manifest = json.loads((folder / "library.json").read_text())
        ranking[k] = {**ranked_on(manifest, validate, {p.id for p in problems}), "candidates": manifest["candidates"]}
        libraries += [(k, rule, load_library(folder)) for rule in rules]
    t0 = time.monotonic()
    with Solver.from_library(libraries[0][2].path) as solver:
        loaded = time.monotonic()
        sides = asyncio.run(answer_with(solver, libraries, problems, query))
    return {"run": str(run_dir), "seed": cfg.run.seed, "task": cfg.run.task, "test_problems": len(problems),
            "executor_load_s": round(loaded - t0, 1), "query": query,
            "libraries": [{**s, "ranking": ranking[s["k"]]} for s in sides]}


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Over the runs: each side's solve rate (CI over runs and problems), the paired gaps, the costs."""
    def rate(sides: list[Side]) -> dict[str, Any]:
        return {"solve_rate": bootstrap([s["scores"] for s in sides]).as_dict(),
                "executor_calls_per_problem": round(mean(c for s in sides for c in s["calls"]), 3),
                "executor_tokens_per_problem": round(mean(t for s in sides for t in s["tokens"]), 1),
                "generator_tokens_per_problem": round(mean(s["generator_tokens_per_problem"] for s in sides), 1),
                "seconds_per_run": round(mean(s["seconds"] for s in sides), 1)}

    query = {name: rate([r["query"][name] for r in runs]) for name in ("trained", "base")}
    libraries = []
    for k, rule in dict.fromkeys((lib["k"], lib["rule"]) for lib in runs[0]["libraries"]):
        sides = [next(x for x in r["libraries"] if (x["k"], x["rule"]) == (k, rule)) for r in runs]
        gaps = {f"minus_{name}": bootstrap([s["scores"] for s in sides],
                                           [r["query"][name]["scores"] for r in runs]).as_dict()
                for name in ("trained", "base")}
        libraries.append({"k": k, "rule": rule, "workflows": [s["workflows"] for s in sides], **rate(sides), **gaps})
    return {"runs": len(runs), "problems": sum(r["test_problems"] for r in runs), "query": query,
            "libraries": libraries}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="finished run directories (read only)")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 3, 5], help="library sizes (default: 1 3 5)")
    ap.add_argument("--rules", nargs="+", default=["first", "vote"], choices=["first", "vote"])
    ap.add_argument("--libraries", type=Path, help="where the libraries are written (default: a temporary folder)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="scoreflow-library-gap-") as tmp:
        runs = [run_one(r, args.ks, args.rules, args.libraries or Path(tmp)) for r in args.runs]
    result = {"benchmark": "library_gap", "date": today(), "device": device_info(),
              "command": " ".join(["python", "benchmarks/library_gap.py", *sys.argv[1:]]),
              "wall_s": round(time.monotonic() - t0, 1), "peak_rss_mb": round(peak_rss_mb()),
              "pooled": pooled(runs), "runs": runs}
    emit(result, args.out)


if __name__ == "__main__":
    main()
