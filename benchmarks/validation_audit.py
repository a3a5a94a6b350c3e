"""False rejections of today's validation on the workflows real runs generated.

Reads run folders (their `workflows.jsonl` and `test_workflows.jsonl`), takes every workflow the rules
of its day accepted, validates it again as the loop does now (`Runner.validate`: the static rules
against the problem it was written for, the toy run, the runs with perturbed operator outputs), and
prints one JSON object: attempts and distinct workflows the earlier rules accepted, how many of them
are rejected now, and how many of the solved ones (a run that scored 1) are.

    python benchmarks/validation_audit.py RUN_DIR [RUN_DIR ...] [--executor offline|run] [--fixture PATH]

`--executor offline` (the default) answers every operator in its expected shape without a model
(numbers are read back from the prompt, answers end with `The answer is N.`); `--executor run` loads
the executor the first run's config names (for a local executor, its model on this machine).
`--fixture PATH` writes the distinct accepted workflows, one JSON line each, for
tests/test_validation.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from scoreflow import config as config_mod
from scoreflow.execute.executor import Executor, Reply
from scoreflow.execute.runner import Runner
from scoreflow.run.rundir import RunDir
from scoreflow.run.session import make_sandbox, make_task
from scoreflow.tasks.base import Problem, Task


class Offline(Executor):
    """Answers every operator's prompt in the shape its parser expects; calls no model."""

    async def _chat(self, messages, max_tokens, temperature):
        prompt = "\n".join(m["content"] for m in messages)
        return Reply(self.reply(prompt), 10, 5)

    @staticmethod
    def reply(prompt: str) -> str:
        problem = prompt.split("\n\n", 1)[-1]
        numbers = re.findall(r"\d+", problem)
        if re.search(r"\bnumbers\b", prompt, re.I):
            return " ".join(numbers)
        if "must be named `" in prompt or "Fix it so that the function" in prompt:
            name = re.search(r"`(\w+)`", prompt).group(1)
            return f"```python\ndef {name}(*args):\n    return args[0]\n```"
        if "solve()" in prompt:
            return "```python\ndef solve():\n    return 5\n```"
        if "<thought>" in prompt:
            return "<thought>The passage says so.</thought>\n<answer>France</answer>"
        if "letter of the most consistent solution" in prompt:
            return "<answer>A</answer>"
        return f"Working through it step by step.\nThe answer is {numbers[-1] if numbers else 5}."


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _problems(task: Task, ids: set[str]) -> dict[str, Problem]:
    """The problems named by `ids`, from every split; arith makes as many as the ids need."""
    wanted: dict[str, int] = defaultdict(int)
    for pid in ids:
        m = re.fullmatch(r"arith-(\w+)-(\d+)", pid)
        if m:
            wanted[m.group(1)] = max(wanted[m.group(1)], int(m.group(2)) + 1)
    if task.name == "arith" and wanted:
        task.size.update(wanted)  # type: ignore[attr-defined]
    found: dict[str, Problem] = {}
    for split in ("train", "validate", "test"):
        try:
            found.update({p.id: p for p in task.problems(split) if p.id in ids})
        except Exception:  # a split this task does not have, or data not on this machine
            continue
    return found


def accepted(run: Path) -> list[dict[str, Any]]:
    """The attempts of `run` that the rules of their day accepted, each with its problem id and
    whether one of its runs solved the problem."""
    out = []
    for prefix in ("", "test_"):
        attempts = _rows(run / f"{prefix}workflows.jsonl")
        solved = {(e["iteration"], e["problem"], e["slot"]) for e in _rows(run / f"{prefix}executions.jsonl")
                  if e.get("status") == "ok" and float(e.get("score") or 0) >= 1}
        for a in attempts:
            if a.get("valid") and a.get("source"):
                out.append({"source": a["source"], "problem_id": a["problem_id"], "split": prefix or "train",
                            "solved": (a["iteration"], a["problem"], a["slot"]) in solved})
    return out


def audit(runs: list[Path], executor: str = "offline", fixture: Path | None = None) -> dict[str, Any]:
    attempts: list[dict[str, Any]] = []
    tasks: dict[str, Task] = {}
    cfg = None
    for run in runs:
        cfg = config_mod.build(RunDir(run).read_config(), snapshot=True)
        task = tasks.setdefault(cfg.run.task, make_task(cfg))
        for a in accepted(run):
            attempts.append({**a, "task": task.name, "run": run.name})
    if cfg is None:
        raise SystemExit("no run folder given")
    problems = {name: _problems(t, {a["problem_id"] for a in attempts if a["task"] == name})
                for name, t in tasks.items()}

    ex: Executor
    if executor == "run":
        from scoreflow.execute.executor import make_executor
        from scoreflow.run.session import make_backend

        ex = make_executor(cfg.executor, make_backend(cfg) if cfg.executor.kind == "local" else None)
    else:
        ex = Offline()
    sandbox = make_sandbox(cfg)
    runners = {name: Runner(t, ex, sandbox) for name, t in tasks.items()}

    # the static rules once per (task, workflow, problem it was written for); the runs once per workflow
    keys = sorted({(a["task"], a["source"], a["problem_id"]) for a in attempts})
    static = {(t, s, pid): runners[t].check(s, problems[t].get(pid)) for t, s, pid in keys}
    sources = sorted({(t, s) for t, s, _ in keys})

    async def go():
        return await asyncio.gather(*(runners[t].validate(s) for t, s in sources))

    dynamic = dict(zip(sources, asyncio.run(go())))
    verdicts = {(t, s, pid): c if not c.ok else dynamic[(t, s)] for (t, s, pid), c in static.items()}
    rejected = [a for a in attempts if not verdicts[(a["task"], a["source"], a["problem_id"])].ok]
    distinct = {(a["task"], a["source"]) for a in attempts}
    distinct_rejected = {(a["task"], a["source"]) for a in rejected}
    solved = {(a["task"], a["source"]) for a in attempts if a["solved"]}
    reasons: dict[str, int] = defaultdict(int)
    for a in rejected:
        reasons[verdicts[(a["task"], a["source"], a["problem_id"])].reason[:160]] += 1

    if fixture is not None:
        first = {}
        for a in attempts:
            first.setdefault((a["task"], a["source"]), a)
        with fixture.open("w", encoding="utf-8") as f:
            for (task_name, source), a in sorted(first.items()):
                p = problems[task_name].get(a["problem_id"])
                f.write(json.dumps({"task": task_name, "question": p.question if p else "", "source": source,
                                    "problem_id": a["problem_id"], "solved": (task_name, source) in solved,
                                    "attempts": sum(1 for b in attempts if (b["task"], b["source"]) ==
                                                    (task_name, source))}) + "\n")

    return {
        "runs": [str(r) for r in runs],
        "tasks": sorted(tasks),
        "executor": executor,
        "accepted_before": {"attempts": len(attempts), "distinct": len(distinct),
                            "solved_attempts": sum(a["solved"] for a in attempts), "solved_distinct": len(solved)},
        "rejected_now": {"attempts": len(rejected), "distinct": len(distinct_rejected),
                         "solved_attempts": sum(a["solved"] for a in rejected),
                         "solved_distinct": len(distinct_rejected & solved)},
        "false_rejection_rate": {"attempts": round(len(rejected) / max(1, len(attempts)), 4),
                                 "distinct": round(len(distinct_rejected) / max(1, len(distinct)), 4)},
        "problems_not_found": sum(1 for t, _, pid in keys if pid not in problems[t]),
        "reasons": dict(reasons),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (with workflows.jsonl)")
    ap.add_argument("--executor", choices=("offline", "run"), default="offline",
                    help="offline: shaped replies, no model; run: the executor the first run's config names")
    ap.add_argument("--fixture", type=Path, default=None, help="write the distinct accepted workflows here")
    args = ap.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "workflows.jsonl").is_file()]
    if missing:
        print(f"validation_audit: no workflows.jsonl in {', '.join(missing)}", file=sys.stderr)
        return 2
    print(json.dumps(audit(args.runs, args.executor, args.fixture), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
