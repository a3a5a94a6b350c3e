"""The run directory, its one owner: the layout, the configuration snapshot, the status, the adapters,
and the typed records (records.py) appended and flushed as work completes; and a run read back for
reports (`load_run`). No other module spells a path inside a run directory.

Layout:
    config.toml          the configuration snapshot (no secrets)
    status.json          running | finished | stopped | interrupted | failed, with a reason
    workflows.jsonl      every generated workflow attempt, valid or rejected with its reason
    executions.jsonl     every execution (one run of a valid workflow on a problem): output, score, status
    pairs.jsonl          the sampled preference pairs of each iteration
    train.jsonl          one record per optimiser step
    metrics.jsonl        one record per iteration (and per evaluation on the test split, per comparison)
    test_workflows.jsonl, test_executions.jsonl   what `evaluate` generated and ran
    adapters/iter-N/     the adapter after iteration N (PEFT or mlx-lm format)
    checkpoints/iter-N/  resumable training state of the iteration in progress
    export/              converted adapters (`scoreflow export`)
    executor-cache.jsonl, error.log

Runs written before the records were renamed hold evaluations.jsonl and test_evaluations.jsonl: they
are read under the new names, and renamed when such a run is resumed.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Callable, Iterable

from scoreflow import records as R
from scoreflow.errors import UserError
from scoreflow.files import atomic_write, read_jsonl
from scoreflow.records import UNSET
from scoreflow.stats import Estimate, bootstrap

# record name -> how a line is read, and the file name older runs used for it
RECORDS: dict[str, tuple[Callable[[dict[str, Any]], R.Record], str | None]] = {
    "workflows": (R.WorkflowAttempt.from_json, None),
    "executions": (R.Execution.from_json, "evaluations"),
    "pairs": (R.PairRecord.from_json, None),
    "train": (R.TrainStep.from_json, None),
    "metrics": (R.metrics_from_json, None),
    "test_workflows": (R.WorkflowAttempt.from_json, None),
    "test_executions": (R.Execution.from_json, "test_evaluations"),
}
OLD_NAMES = {old: name for name, (_, old) in RECORDS.items() if old}


def _json(record: R.Record | dict[str, Any]) -> str:
    data = record.to_json() if isinstance(record, R.Record) else record
    return json.dumps(data, ensure_ascii=False) + "\n"


class Records:
    """Append-only JSON Lines file of typed records; each is written, flushed and fsynced on its own.
    The file is opened at the first write; `old`, a name older runs used, is read when `path` is
    absent and renamed to `path` before the first write."""

    def __init__(self, path: Path, parse: Callable[[dict[str, Any]], Any] = dict, old: Path | None = None):
        self.path, self.parse, self.old = path, parse, old
        self._f: Any = None

    def _source(self) -> Path:
        return self.old if self.old is not None and self.old.is_file() and not self.path.is_file() else self.path

    def _open(self) -> Any:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._source() != self.path:
                os.replace(self._source(), self.path)
            self._repair()
            self._f = open(self.path, "a", encoding="utf-8")
        return self._f

    def _repair(self) -> None:
        # A kill in the middle of a write leaves a partial last line: cut it off before appending.
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, record: R.Record | dict[str, Any]) -> None:
        self.extend([record])

    def extend(self, records: Iterable[R.Record | dict[str, Any]]) -> None:
        f = self._open()
        for r in records:
            f.write(_json(r))
        f.flush()
        os.fsync(f.fileno())

    def all(self) -> list[Any]:
        return [self.parse(d) for d in read_jsonl(self._source())]

    def rewrite(self, records: Iterable[R.Record | dict[str, Any]]) -> None:
        text = "".join(_json(r) for r in records)  # before closing: `records` may read this file
        self._open().close()
        atomic_write(self.path, text)
        self._f = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class RunDir:
    """A run directory, new or existing; nothing is created before the first write."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.records = {name: Records(self.path / f"{name}.jsonl", parse,
                                      self.path / f"{old}.jsonl" if old else None)
                        for name, (parse, old) in RECORDS.items()}

    @classmethod
    def create(cls, path: Path | str) -> "RunDir":
        """The run directory a run writes to, made now."""
        run = cls(path)
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    def __getitem__(self, name: str) -> Records:
        return self.records[OLD_NAMES.get(name, name)]

    def read(self, name: str) -> list[Any]:
        return self[name].all()

    def executed_workflows(self, test: bool = False, iteration: int | None = None,
                           ) -> list[tuple[R.WorkflowAttempt, list[float]]]:
        """Each valid workflow (of `iteration`, else of all) that was executed, with its executions'
        scores, in the order generated."""
        prefix = "test_" if test else ""
        scores: dict[tuple[int, int, int], list[float]] = {}
        for e in self.read(f"{prefix}executions"):
            if iteration is None or e.iteration == iteration:
                scores.setdefault((e.iteration, *e.key), []).append(float(e.score))
        return [(w, scores[(w.iteration, *w.key)]) for w in self.read(f"{prefix}workflows")
                if w.valid and w.source and (w.iteration, *w.key) in scores]

    # ---- paths ------------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def adapters_path(self) -> Path:
        return self.path / "adapters"

    @property
    def executor_cache(self) -> Path:
        return self.path / "executor-cache.jsonl"

    @property
    def profile_path(self) -> Path:
        return self.path / "profile.md"

    @property
    def error_log(self) -> Path:
        return self.path / "error.log"

    def export_dir(self, name: str) -> Path:
        return self.path / "export" / name

    def adapter_dir(self, iteration: int) -> Path:
        return self.adapters_path / f"iter-{iteration}"

    def checkpoint_dir(self, iteration: int) -> Path:
        return self.path / "checkpoints" / f"iter-{iteration}"

    def adapters(self) -> dict[int, Path]:
        """The saved adapters by iteration, in order."""
        found = {int(p.name[5:]): p for p in self.adapters_path.glob("iter-*") if p.name[5:].isdigit() and p.is_dir()}
        return dict(sorted(found.items()))

    def latest_adapter(self) -> tuple[int, Path] | None:
        return max(self.adapters().items(), default=None)

    # ---- snapshot and status ----------------------------------------------------------------------

    def is_run(self) -> bool:
        return self.path.is_dir() and (self.config_path.is_file() or self.status_path.is_file())

    def has_config(self) -> bool:
        return self.config_path.is_file()

    def read_config(self) -> dict[str, dict[str, Any]]:
        """The configuration snapshot as TOML tables ({} when absent or unreadable)."""
        from scoreflow.config import tomllib

        try:
            return tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_config(self, cfg: Any) -> None:
        """Snapshot a `config.Config`."""
        from scoreflow.config import to_toml

        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.config_path, to_toml(cfg))

    def set_status(self, status: str, reason: str = "", **extra: Any) -> None:
        """`extra` may carry `usage` (the executor's spend so far), which a resumed run starts from."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write(self.status_path, json.dumps(
            {"status": status, "reason": reason, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(),
             **extra}, indent=2) + "\n")

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def close(self) -> None:
        for r in self.records.values():
            r.close()


# ---- a run read back for reports --------------------------------------------------------------------

STATUS_LABELS = {"running": "running", "finished": "finished", "stopped": "stopped at cap", "failed": "failed",
                 "interrupted": "interrupted"}


@dataclass
class RunData:
    """A run directory read back: its configuration, status and records, and the numbers derived from
    them (per-workflow scores, spend, a status that tells a crash from a live run)."""
    path: Path
    config: dict[str, Any]
    status: dict[str, Any]
    metrics: list[R.Metrics]
    train: list[R.TrainStep]
    workflows: list[R.WorkflowAttempt]
    executions: list[R.Execution]
    pairs: list[R.PairRecord]
    label: str = ""
    test_workflows: list[R.WorkflowAttempt] = field(default_factory=list)
    test_executions: list[R.Execution] = field(default_factory=list)

    @property
    def iterations(self) -> list[R.IterationMetrics]:
        """One iteration metrics record per iteration (the last one written), in order."""
        last = {m.iteration: m for m in self.metrics if isinstance(m, R.IterationMetrics)}
        return [last[i] for i in sorted(last)]

    @property
    def tests(self) -> list[R.TestMetrics]:
        """The evaluations on the test split, the last one per evaluated adapter."""
        last = {m.iteration: m for m in self.metrics if isinstance(m, R.TestMetrics)}
        return [last[i] for i in sorted(last)]

    @property
    def comparison(self) -> R.Comparison | None:
        """The last comparison record (trained against base generator on the test split)."""
        recs = [m for m in self.metrics if isinstance(m, R.Comparison)]
        return recs[-1] if recs else None

    @staticmethod
    def test_interval(m: R.TestMetrics) -> Estimate | None:
        """Bootstrap 95% CI of an evaluation's solve rate over its problems; None for records
        without per-problem scores (runs older than the field)."""
        if not m.scores:
            return None
        est = bootstrap([[float(x) for x in m.scores]])
        return Estimate(float(m.solve_rate), est.low, est.high)

    def planned_iterations(self) -> int | None:
        return self.config.get("run", {}).get("iterations")

    def workflow_scores(self, iteration: int) -> list[float]:
        """Mean score over runs of every executed workflow of `iteration` (what the loop ranks by)."""
        runs: dict[tuple[int, int], list[float]] = {}
        for r in self.executions:
            if r.iteration == iteration:
                runs.setdefault(r.key, []).append(float(r.score))
        return [mean(v) for _, v in sorted(runs.items())]

    def rejection_reasons(self) -> Counter[str]:
        return Counter(R.short_reason(w.reason) for w in self.workflows if not w.valid)

    def best_score(self) -> float | None:
        scored = [m.mean_score for m in self.iterations if m.valid]
        return max(scored) if scored else None

    def executor_tokens(self) -> int:
        return sum(int(m.executor_tokens) for m in self.iterations)

    def executor_calls(self) -> int:
        return sum(int(m.executor_calls) for m in self.iterations)

    def iteration_cost(self, m: R.IterationMetrics) -> float | None:
        """Spend of one iteration when the executor priced its calls, else None."""
        for known in (m.executor_cost_usd, m.extra.get("cost_usd")):
            if known is not UNSET and known is not None:
                return float(known)
        costs = [r.cost_usd for r in self.executions if r.iteration == m.iteration and r.cost_usd is not None
                 and r.has("cost_usd")]
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
    return RunDir(path).is_run()


def load_run(path: Path | str, label: str | None = None) -> RunData:
    run = RunDir(path)
    if not run.path.is_dir():
        raise UserError(f"no run directory at {run.path}")
    if not run.is_run():
        raise UserError(f"{run.path} is not a run directory (no config.toml or status.json)")
    return RunData(path=run.path, config=run.read_config(), status=run.status(), metrics=run.read("metrics"),
                   train=run.read("train"), workflows=run.read("workflows"), executions=run.read("executions"),
                   pairs=run.read("pairs"), label=label or run.path.name, test_workflows=run.read("test_workflows"),
                   test_executions=run.read("test_executions"))
