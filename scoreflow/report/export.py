"""`scoreflow export RUN --to peft|mlx`: a run's adapter converted, with its model card; and
`scoreflow export RUN --workflows OUT_DIR`: each problem's best workflow as a standalone file that
`scoreflow run-workflow --config RUN/config.toml --split S --index I --workflow FILE` accepts, and
an index.jsonl of what was written.

Best = the highest mean score over the workflow's executions; ties go to the later iteration (the
more trained generator), then the lower slot. Problems of both splits the run touched are exported:
the optimisation split (validate) and, when the run was evaluated, the test split.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from statistics import mean
from typing import Any

from scoreflow.errors import UserError
from scoreflow.run.rundir import RunDir
from scoreflow.files import atomic_write
from scoreflow.model.adapters import convert
from scoreflow.report.card import write_model_card

SPLITS = (("validate", False), ("test", True))


def best_workflows(run: RunDir, test: bool = False) -> dict[str, dict[str, Any]]:
    """problem_id -> the record of its best valid workflow, with `score` and `runs` added."""
    best: dict[str, dict[str, Any]] = {}
    for w, scores in run.executed_workflows(test):
        cand = {**w.to_json(), "score": mean(scores), "runs": len(scores)}
        old = best.get(w.problem_id)
        if old is None or (cand["score"], cand["iteration"], -cand["slot"]) > (old["score"], old["iteration"], -old["slot"]):
            best[w.problem_id] = cand
    return best


def _name(split: str, index: int | None, pid: str) -> str:
    if index is not None:
        return f"{split}-{index:04d}.py"
    return f"{split}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', pid)[:80]}.py"


def export_workflows(run_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Write the best workflow of every problem of the run to `out`; returns the index entries."""
    from scoreflow import config as C
    from scoreflow.run.session import make_task

    run_dir, out = Path(run_dir), Path(out)
    run = RunDir(run_dir)
    if not run.has_config():
        raise UserError(f"{run_dir} holds no run (no config.toml)")
    cfg = C.build(C.read_toml(run.config_path), snapshot=True)
    task = make_task(cfg)
    entries: list[dict[str, Any]] = []
    for split, test in SPLITS:
        best = best_workflows(run, test)
        if not best:
            continue
        index = {p.id: i for i, p in enumerate(task.problems(split))}  # run-workflow's --index is into the split
        for pid, w in sorted(best.items(), key=lambda kv: (index.get(kv[0], 1 << 30), kv[0])):
            i = index.get(pid)
            name = _name(split, i, pid)
            how = (f"scoreflow run-workflow --config {run.config_path} --split {split} --index {i} "
                   f"--workflow {out / name}" if i is not None else "its problem is no longer in the task's data")
            header = (f"# ScoreFlow workflow: task {task.name}, {split} problem {pid}"
                      f"{f' (index {i})' if i is not None else ''}.\n"
                      f"# Best of run {run_dir.name}: mean score {w['score']:.3f} over {w['runs']} run(s), "
                      f"iteration {w['iteration']}, slot {w['slot']}.\n# Run it: {how}\n")
            out.mkdir(parents=True, exist_ok=True)
            atomic_write(out / name, header + w["source"].strip() + "\n")
            entries.append({"file": name, "split": split, "index": i, "problem_id": pid, "score": w["score"],
                            "runs": w["runs"], "iteration": w["iteration"], "slot": w["slot"]})
    if not entries:
        raise UserError(f"{run_dir} has no executed valid workflow to export")
    atomic_write(out / "index.jsonl", "".join(json.dumps(e) + "\n" for e in entries))
    return entries


def export_run(run_dir: Path, to: str, iteration: int | None = None, out: Path | None = None) -> Path:
    """Convert RUN_DIR/adapters/iter-N (the latest by default) to `to`, with a model card (README.md);
    returns the output folder, RUN_DIR/export/iter-N-<to>/ unless `out` is given."""
    run = RunDir(run_dir)
    found = run.adapters()
    if not found:
        raise UserError(f"{run_dir} holds no adapters (expected {run.adapters_path / 'iter-N'})")
    n = max(found) if iteration is None else iteration
    if n not in found:
        raise UserError(f"{run_dir} has no adapter for iteration {n} (have {sorted(found)})")
    folder = convert(found[n], to, Path(out) if out else run.export_dir(f"iter-{n}-{to}"))
    write_model_card(run_dir, n, folder)
    return folder
