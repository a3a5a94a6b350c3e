"""Experiment trackers for `optimize --report-to NAME`: TensorBoard, Weights & Biases, MLflow, Trackio.

`TrackingReporter` wraps the terminal reporter: it forwards every event unchanged and logs, to each
tracker, every optimiser step (section `train`), every metrics record (`iteration`, `evaluate`,
`compare`), a histogram of the workflow scores of each iteration, and a table of sample workflows
with their scores read from the run directory. The loop never knows; the run directory stays the
record. A tracker that fails mid-run is switched off with one warning, so it cannot end a run.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from scoreflow.errors import UserError, one_line
from scoreflow.extras import require
from scoreflow.run.reporter import Reporter, RunInfo
from scoreflow.records import Comparison, Metrics, WorkflowAttempt, as_metrics
from scoreflow.run.rundir import RunDir

TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")
TABLE_ROWS = 16  # sample workflows per table, spread from best to worst
TABLE_COLUMNS = ["iteration", "problem", "slot", "score", "runs", "workflow"]
HISTOGRAM_BINS = 20  # over [0, 1], where task scores live


@dataclass
class RunContext:
    name: str  # the run directory's name: the tracker run's name
    run_dir: Path
    config: dict[str, dict[str, Any]]  # the run's configuration, as TOML tables

    def flat_config(self) -> dict[str, Any]:
        return {f"{s}.{k}": v for s, values in self.config.items() for k, v in values.items()}


class Tracker:
    """One tracker. `log` gets numbers of one section at that section's own step: `train` at the
    optimiser step over the whole run, `iteration` / `evaluate` / `compare` at the iteration."""

    name = ""

    def open(self, ctx: RunContext) -> None: ...

    def log(self, section: str, values: dict[str, float], step: int) -> None: ...

    def histogram(self, tag: str, values: list[float], step: int) -> None: ...

    def table(self, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None: ...

    def close(self, status: str) -> None: ...


def histogram_counts(values: list[float]) -> tuple[list[int], list[float]]:
    """Counts over HISTOGRAM_BINS equal bins of [0, 1] (scores outside are clipped) and the bin edges."""
    import numpy as np

    counts, edges = np.histogram(np.clip(values, 0.0, 1.0), bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    return [int(c) for c in counts], [float(e) for e in edges]


def check_installed(names: list[str]) -> None:
    """Before any model loads: each asked-for tracker is known and installed (else one line)."""
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"--report-to {name}: choose from {', '.join(TRACKERS)}")
        require(name, f"--report-to {name}")


def _numbers(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric fields of a metrics record, nested dicts flattened with '/'; lists and text left out."""
    out: dict[str, float] = {}
    for k, v in record.items():
        if k == "kind":
            continue
        if isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)):  # bools too, as 0/1
            out[prefix + k] = float(v)
    return out


def sample_workflows(run_dir: Path, iteration: int, test: bool = False,
                     limit: int = TABLE_ROWS) -> list[list[Any]]:
    """Rows of TABLE_COLUMNS for the valid workflows of `iteration` that were run: ranked by mean score,
    `limit` rows spread evenly from the best to the worst."""
    runs: dict[tuple[int, int], list[float]] = {}
    sources: dict[tuple[int, int], WorkflowAttempt] = {}
    for w, scores in RunDir(run_dir).executed_workflows(test, iteration):
        runs[w.key], sources[w.key] = scores, w
    ranked = sorted(((mean(s), key) for key, s in runs.items() if key in sources), key=lambda x: (-x[0], x[1]))
    if len(ranked) > limit:
        step = (len(ranked) - 1) / (limit - 1)
        ranked = [ranked[round(i * step)] for i in range(limit)]
    return [[iteration, sources[key].problem_id or str(key[0]), key[1], round(score, 4), len(runs[key]),
             sources[key].source or ""] for score, key in ranked]


class TrackingReporter(Reporter):
    """The trackers as one reporter, a peer of the display under the run's Fanout."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = list(trackers)
        self._lock = threading.RLock()  # training steps arrive from a worker thread
        self._scores: list[float] = []
        self._iteration = 0
        self._step = 0  # optimiser steps over the whole run (resumed runs continue the count)
        self._run_dir: Path | None = None
        self._compares: set[tuple[int, int]] = set()

    def _say(self, message: str) -> None:
        if self.say is not None:
            self.say(message)

    def start(self, info: RunInfo) -> None:
        self._run_dir = Path(info.run_dir)
        self._step = len(RunDir(self._run_dir).read("train"))
        self._compares = {(r.base, r.trained) for r in self._records()}
        ctx = RunContext(self._run_dir.resolve().name, self._run_dir, info.config)
        for t in self.trackers:
            try:
                t.open(ctx)
            except UserError:
                raise
            except Exception as e:
                raise UserError(f"--report-to {t.name}: the tracker did not start "
                                f"({one_line(f'{type(e).__name__}: {e}', 200)})") from e
        self._say("tracking to " + ", ".join(t.name for t in self.trackers))

    def stage(self, iteration: int, name: str, total: int, done: int = 0) -> None:
        self._iteration = iteration

    def score(self, value: float) -> None:
        with self._lock:
            self._scores.append(float(value))

    def train_step(self, info: Any) -> None:
        with self._lock:
            self._step += 1
            values = {k: float(getattr(info, k)) for k in ("loss", "margin", "chosen_reward", "rejected_reward",
                                                            "grad_norm", "seconds")}
            values.update(iteration=float(self._iteration), iteration_step=float(info.step))
            self._each("log", "train", values, self._step)

    def iteration_end(self, metrics: Metrics) -> None:
        with self._lock:
            self._record(as_metrics(metrics))

    def log(self, message: str) -> None:
        with self._lock:
            self._new_compares()

    def finish(self, status: str, message: str = "") -> None:
        with self._lock:
            self._new_compares()
            for t in list(self.trackers):
                self._call(t, "close", status)

    # ---- helpers ---------------------------------------------------------------------------------
    def _record(self, m: Metrics) -> None:
        data = m.to_json()
        kind = str(data.get("kind", "iteration"))
        step = int(data.get("trained", 0) if kind == "compare" else data.get("iteration", 0))
        if isinstance(m, Comparison):
            self._compares.add((m.base, m.trained))
        self._each("log", kind, _numbers(data), step)
        if kind in ("iteration", "evaluate"):
            if self._scores:
                self._each("histogram", f"{kind}/scores", list(self._scores), step)
            self._scores.clear()
            if self._run_dir is not None:
                rows = sample_workflows(self._run_dir, step, test=kind == "evaluate")
                if rows:
                    self._each("table", f"{kind}/sample_workflows", TABLE_COLUMNS, rows, step)

    def _records(self) -> list[Comparison]:
        if self._run_dir is None:
            return []
        return [m for m in RunDir(self._run_dir).read("metrics") if isinstance(m, Comparison)]

    def _new_compares(self) -> None:
        """Comparison records that reached the reporter only as a log line (older loops): from the metrics."""
        for rec in self._records():
            if (rec.base, rec.trained) not in self._compares:
                self._record(rec)

    def _each(self, method: str, *args: Any) -> None:
        for t in list(self.trackers):
            self._call(t, method, *args)

    def _call(self, t: Tracker, method: str, *args: Any) -> None:
        try:
            getattr(t, method)(*args)
        except Exception as e:
            if t in self.trackers:
                self.trackers.remove(t)
            self._say(f"warning: --report-to {t.name} stopped tracking: "
                           f"{one_line(f'{type(e).__name__}: {e}', 200)}")


def tracker_dir(ctx: RunContext, name: str) -> Path:
    """Where a tracker keeps local files: inside the run directory."""
    path = ctx.run_dir / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_or(name: str, default: str) -> str:
    return os.environ.get(name) or default
