"""The README's first command, exactly, for several seeds: `scoreflow optimize --seed S --profile`
(the `--profile` only adds RUN/profile.md), each in a fresh folder, one after another.

    python benchmarks/demo.py --seeds 0 1 2 --out benchmarks/results/demo.json
    python benchmarks/demo.py --seeds 0 --backend mlx --out benchmarks/results/demo-mlx.json

Per seed: wall time, peak resident memory of the whole process tree, the run's own comparison line
(trained vs base on the held-out test problems, with its 95% CI), the time per stage (profile.md),
how many solved test workflows hold their gold answer in the source (must be 0), and what the
trained generator does differently: per kind of arith problem, the operation its test workflows
apply before and after training. Prints one JSON object (benchmarks/RESULTS.md, section 5, reads it).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, emit, today  # noqa: E402

from scoreflow.execute.workflow import gold_in_source  # noqa: E402
from scoreflow.records import Comparison, TestMetrics  # noqa: E402
from scoreflow.stats import bootstrap  # noqa: E402
from scoreflow.run.rundir import RunDir  # noqa: E402
from scoreflow.tasks.arith import ArithTask  # noqa: E402

# The kinds of arith problem, recognised by their words (the generator sees them with numbers hidden),
# and the operations a workflow's code applies to the numbers the executor read.
KINDS = (("share", "shared equally"), ("multiply", "boxes with"), ("two-step", "then gives"),
         ("take away", "gives away"), ("add", ""))
OPERATIONS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Div: "/"}
RIGHT = {"add": "+", "take away": "-", "multiply": "*", "share": "//", "two-step": "+-"}


def kind(question: str) -> str:
    return next(k for k, words in KINDS if words in question)


def operations(source: str | None) -> str:
    """The arithmetic a workflow applies, in order of appearance ('' when none or unparsable)."""
    try:
        nodes = [n for n in ast.walk(ast.parse(source or "")) if isinstance(n, ast.BinOp)]
    except SyntaxError:
        return ""
    nodes.sort(key=lambda n: (n.lineno, n.col_offset))
    return "".join(sorted({OPERATIONS[type(n.op)] for n in nodes if type(n.op) in OPERATIONS},
                          key="+-*//".index))


def what_changed(run: RunDir, test: list, trained: int) -> dict:
    """Per problem kind: test problems, solved before and after, and the operations chosen."""
    wf = {(r.iteration, r.problem): r for r in run.read("test_workflows") if r.valid}
    ev = {m.iteration: m for m in run.read("metrics") if isinstance(m, TestMetrics)}
    out: dict[str, dict] = {}
    for i, p in enumerate(test):
        k = out.setdefault(kind(p.question), {"problems": 0, "base solved": 0, "trained solved": 0,
                                               "base right operation": 0, "trained right operation": 0,
                                               "base operations": Counter(), "trained operations": Counter()})
        k["problems"] += 1
        for name, it in (("base", 0), ("trained", trained)):
            k[f"{name} solved"] += int(ev[it].scores[i] > 0)
            op = operations(wf[(it, i)].source if (it, i) in wf else None)
            k[f"{name} operations"][op or "none"] += 1
            k[f"{name} right operation"] += int(op == RIGHT[kind(p.question)])
    return {name: {**v, "base operations": dict(v["base operations"]),
                   "trained operations": dict(v["trained operations"])} for name, v in out.items()}


def gold_in_solved(run: RunDir, test: list) -> int:
    wf = {(r.iteration, r.problem): r for r in run.read("test_workflows") if r.valid}
    return sum(gold_in_source(wf[(e.iteration, e.problem)].source, test[e.problem].answer)
               for e in run.read("test_executions") if e.score > 0 and (e.iteration, e.problem) in wf)


def run_seed(seed: int, args: argparse.Namespace, root: Path) -> dict:
    """One seed's run and what it shows, kept in its folder's result.json as soon as it is known;
    with --reuse a seed whose folder already holds a finished run is read, not run again."""
    folder = root / f"seed{seed}"
    kept = folder / "result.json"
    if args.reuse and kept.is_file():
        return json.loads(kept.read_text())
    if args.reuse and finished(folder):
        out = summarise(seed, folder, 0, None)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "scoreflow", "optimize", "--seed", str(seed), "--profile", "--no-dashboard",
               *(["--backend", args.backend] if args.backend else []), *args.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        t0 = time.monotonic()
        with open(folder / "log.txt", "w") as log:
            proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(folder / "maxrss.txt"), *cmd] if
                                  Path("/usr/bin/time").exists() else cmd, cwd=folder, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        out = summarise(seed, folder, proc.returncode, time.monotonic() - t0)
    kept.write_text(json.dumps(out, indent=1) + "\n")
    return out


def finished(folder: Path) -> bool:
    runs = sorted((folder / "runs").iterdir()) if (folder / "runs").is_dir() else []
    return bool(runs) and json.loads((runs[-1] / "status.json").read_text()).get("status") == "finished"


def summarise(seed: int, folder: Path, returncode: int, wall: float | None) -> dict:
    """A seed's record from its folder: the log, the peak memory /usr/bin/time wrote, the run. Without
    a wall time of its own (a reused folder) the run's own clock, from its last line, stands in."""
    text = (folder / "log.txt").read_text()
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if wall is None:
        m = re.search(r" in (?:(\d+):)?(\d+):(\d+) ", last)
        wall = (int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + int(m.group(3))) if m else float("nan")
    rss = (folder / "maxrss.txt").read_text().split()[-1] if (folder / "maxrss.txt").is_file() else None
    peak = int(rss) / 1024 if rss and rss.isdigit() else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    runs = sorted((folder / "runs").iterdir()) if (folder / "runs").is_dir() else []
    out: dict = {"seed": seed, "returncode": returncode, "wall_s": round(wall, 1), "peak_rss_mb": round(peak),
                 "last_line": last}
    if returncode or not runs:
        return out
    run = RunDir(runs[-1])
    metrics = run.read("metrics")
    comparison = next(m for m in metrics if isinstance(m, Comparison))
    cfg = run.read_config()
    from scoreflow.config import build
    from scoreflow.run.session import run_problems

    config = build(cfg, snapshot=True)
    test = run_problems(config, ArithTask(), "test")
    scores = {(e.iteration, e.problem): e.score for e in run.read("test_executions")}
    problems = sorted(p for i, p in scores if i == comparison.base)
    out.update(comparison=comparison.to_json(), gold_in_solved_source=gold_in_solved(run, test),
               test_scores={side: [scores[(it, p)] for p in problems]
                            for side, it in (("base", comparison.base), ("trained", comparison.trained))},
               by_kind=what_changed(run, test, comparison.trained),
               profile=run.profile_path.read_text() if run.profile_path.is_file() else None,
               run_dir=str(run.path))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--backend", default="", help="passed to optimize (default: its own, auto)")
    ap.add_argument("--root", type=Path, help="where the seeds' folders go (default: a temporary folder)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--reuse", action="store_true", help="read a seed whose folder under --root already holds "
                    "its finished run (result.json, or the run itself) instead of running it again")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: flags passed to optimize as they are")
    args = ap.parse_args()
    args.extra = [a for a in args.extra if a != "--"]
    root = args.root or Path(tempfile.mkdtemp(prefix="scoreflow-demo-"))
    result = {"benchmark": "demo", "date": today(), "device": device_info(), "command":
              "scoreflow optimize --seed S --profile" + "".join(f" {a}" for a in args.extra),
              "seeds": [run_seed(s, args, root) for s in args.seeds]}
    done = [s for s in result["seeds"] if "comparison" in s]
    result["summary"] = {
        "seeds": len(done), "max_wall_s": max((s["wall_s"] for s in done), default=None),
        "max_peak_rss_mb": max((s["peak_rss_mb"] for s in done), default=None),
        "ci_excludes_0": [s["comparison"]["difference"]["low"] > 0 for s in done],
        "gold_in_solved_source": sum(s["gold_in_solved_source"] for s in done),
        # trained - base over all seeds' test problems: resample the seeds, then the problems of each
        "pooled_difference": bootstrap([s["test_scores"]["trained"] for s in done],
                                       [s["test_scores"]["base"] for s in done]).as_dict() if done else None}
    emit(result, args.out)


if __name__ == "__main__":
    main()
