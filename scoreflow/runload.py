"""A run directory read back for reports: its configuration, status and records, and the numbers
derived from them (per-workflow scores, spend, a status that tells a crash from a live run)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from .errors import UserError
from .rundir import read_jsonl
from .stats import Estimate, bootstrap

STATUS_LABELS = {"running": "running", "finished": "finished", "stopped": "stopped at cap", "failed": "failed",
                 "interrupted": "interrupted"}


@dataclass
class RunData:
    path: Path
    config: dict[str, Any]
    status: dict[str, Any]
    metrics: list[dict[str, Any]]
    train: list[dict[str, Any]]
    workflows: list[dict[str, Any]]
    executions: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    label: str = ""
    test_workflows: list[dict[str, Any]] = field(default_factory=list)

    # ---- per-iteration records --------------------------------------------------------------------

    @property
    def iterations(self) -> list[dict[str, Any]]:
        """One `kind: iteration` metrics record per iteration (the last one written), in order."""
        last = {m["iteration"]: m for m in self.metrics if m.get("kind", "iteration") == "iteration"}
        return [last[i] for i in sorted(last)]

    @property
    def tests(self) -> list[dict[str, Any]]:
        """The test-split evaluations, the last one per evaluated adapter."""
        last = {m["iteration"]: m for m in self.metrics if m.get("kind") == "evaluate"}
        return [last[i] for i in sorted(last)]

    @property
    def comparison(self) -> dict[str, Any] | None:
        """The last `kind: compare` record (trained against base generator on the test split)."""
        recs = [m for m in self.metrics if m.get("kind") == "compare"]
        return recs[-1] if recs else None

    @staticmethod
    def test_interval(m: dict[str, Any]) -> Estimate | None:
        """Bootstrap 95% CI of an evaluation's solve rate over its problems; None for records
        without per-problem scores (runs older than the field)."""
        scores = m.get("scores")
        if not scores:
            return None
        est = bootstrap([[float(x) for x in scores]])
        return Estimate(float(m.get("solve_rate", est.value)), est.low, est.high)

    def planned_iterations(self) -> int | None:
        return self.config.get("run", {}).get("iterations")

    def workflow_scores(self, iteration: int) -> list[float]:
        """Mean score over runs of every executed workflow of `iteration` (what the loop ranks by)."""
        runs: dict[tuple[int, int], list[float]] = {}
        for r in self.executions:
            if r["iteration"] == iteration:
                runs.setdefault((r["problem"], r["slot"]), []).append(float(r["score"]))
        return [mean(v) for _, v in sorted(runs.items())]

    def rejection_reasons(self) -> Counter[str]:
        from .dashstate import short_reason

        return Counter(short_reason(w.get("reason", "")) for w in self.workflows if not w.get("valid"))

    # ---- summary numbers --------------------------------------------------------------------------

    def best_score(self) -> float | None:
        scored = [m["mean_score"] for m in self.iterations if m.get("valid")]
        return max(scored) if scored else None

    def executor_tokens(self) -> int:
        return sum(int(m.get("executor_tokens", 0)) for m in self.iterations)

    def executor_calls(self) -> int:
        return sum(int(m.get("executor_calls", 0)) for m in self.iterations)

    def iteration_cost(self, m: dict[str, Any]) -> float | None:
        """Spend of one iteration when the executor priced its calls, else None."""
        for key in ("executor_cost_usd", "cost_usd"):
            if m.get(key) is not None:
                return float(m[key])
        costs = [r["cost_usd"] for r in self.executions if r["iteration"] == m["iteration"]
                 and r.get("cost_usd") is not None]
        return float(sum(costs)) if costs else None

    def cost(self) -> float | None:
        costs = [self.iteration_cost(m) for m in self.iterations]
        known = [c for c in costs if c is not None]
        return sum(known) if known else None

    def status_label(self) -> str:
        s = self.status.get("status")
        if s is None:
            return "unknown"
        if s == "running" and not pid_alive(self.status.get("pid")):
            return "crashed, resumable"
        return STATUS_LABELS.get(s, s)


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "config.toml").is_file() or (path / "status.json").is_file())


def load_run(path: Path | str, label: str | None = None) -> RunData:
    import json

    from .config import tomllib

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"no run directory at {p}")
    if not is_run_dir(p):
        raise UserError(f"{p} is not a run directory (no config.toml or status.json)")
    try:
        config = tomllib.loads((p / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    try:
        status = json.loads((p / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = {}

    def rec(name: str) -> list[dict[str, Any]]:
        return list(read_jsonl(p / f"{name}.jsonl"))

    return RunData(path=p, config=config, status=status, metrics=rec("metrics"), train=rec("train"),
                   workflows=rec("workflows"), executions=rec("evaluations"), pairs=rec("pairs"),
                   label=label or p.name, test_workflows=rec("test_workflows"))
