"""What the executor solves whatever the generator writes: fixed workflows (the task's template, the
executor alone, which the loop refuses as a copy; and the few-shot examples) run on validate problems
with the run's executor, through the real runner (sandbox, operators, answer extraction, scoring). A
trained generator can at best choose, per problem, among workflows like these: if none of them solves
much, the learning benchmark has little to find.

    python benchmarks/ceiling.py --task gsm8k --data ../shared/data --problems 50
    python benchmarks/ceiling.py --task gsm8k --data ../shared/data --problems 50 --set executor.max_tokens=256

Settings are the preset's (the demo preset for the embedded model) unless --set changes them. Prints one
JSON object: per workflow, the solve rate with a bootstrap 95% CI, the share that ran to an answer and
the seconds; and the share of problems that any of them solved.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, emit, today  # noqa: E402

from scoreflow.config import build, merge, parse_set  # noqa: E402
from scoreflow.run.session import build_session  # noqa: E402
from scoreflow.stats import bootstrap  # noqa: E402


def workflows(task) -> dict[str, str]:
    out = {"template": task.template.strip()}
    out.update({f"example {i + 1}": source for i, (_, source) in enumerate(task.examples)})
    return out


async def score_all(s, sources: dict[str, str], problems: list) -> dict[str, dict]:
    out = {}
    for name, source in sources.items():
        t0 = time.monotonic()
        runs = await asyncio.gather(*(s.runner.run(source, p) for p in problems))
        scores = [float(r.score or 0.0) for r in runs]
        out[name] = {"solve_rate": bootstrap([scores]).as_dict(), "solved": sum(x > 0 for x in scores),
                     "answered": sum(r.status == "ok" for r in runs) / len(runs),
                     "executor_calls": sum(r.calls for r in runs), "seconds": round(time.monotonic() - t0, 1),
                     "scores": scores, "source": source}
        print(f"{name}: {out[name]['solved']} of {len(problems)} solved ({out[name]['seconds']} s)",
              file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--data", type=Path, help="a file or a folder of AFlow-format split files")
    ap.add_argument("--problems", type=int, default=50, help="the first N validate problems")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cfg = build(merge({"run": {"task": args.task, "data": str(args.data) if args.data else None}}, parse_set(args.set)))
    s = build_session(cfg, Path(tempfile.mkdtemp(prefix="scoreflow-ceiling-")) / "run")
    try:
        problems = s.task.problems("validate")[:args.problems]
        rows = asyncio.run(score_all(s, workflows(s.task), problems))
    finally:
        s.close()
    any_solved = [float(any(r["scores"][i] > 0 for r in rows.values())) for i in range(len(problems))]
    emit({"benchmark": "ceiling", "date": today(), "machine": device_info(), "task": args.task,
          "split": "validate", "problems": len(problems), "settings": args.set,
          "executor_max_tokens": cfg.executor.max_tokens, "workflows": rows,
          "any_solved": bootstrap([any_solved]).as_dict(),
          "command": " ".join(["python", "benchmarks/ceiling.py", *sys.argv[1:]])}, args.out)


if __name__ == "__main__":
    main()
