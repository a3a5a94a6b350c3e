"""What the loop tells the outside world while it runs: a small set of events.

The loop calls a `Reporter`; the terminal dashboard and the plain line logger (dashboard.py)
implement it. This base class ignores everything, which is what tests and library callers get.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scoreflow.model.backend import StepInfo
from scoreflow.run.records import Metrics

STAGES = ("generate", "validate", "execute", "pairs", "train", "evaluate")


@dataclass
class RunInfo:
    task: str
    backend: str
    device: str
    generator: str
    executor: str
    run_dir: str
    iterations: int
    usage: Any = None  # the executor's live `Usage` (calls, tokens, cost, retries, failures)
    config: dict[str, dict[str, Any]] = field(default_factory=dict)  # the run's configuration, as TOML tables
    extra: dict[str, Any] = field(default_factory=dict)


class Reporter:
    def start(self, info: RunInfo) -> None:
        """The run begins (or resumes)."""

    def stage(self, iteration: int, name: str, total: int, done: int = 0) -> None:
        """A stage of `STAGES` begins for `iteration`, with `total` units of work, `done` already finished."""

    def advance(self, n: int = 1) -> None:
        """`n` units of the current stage finished."""

    def workflow(self, valid: bool, reason: str) -> None:
        """A generated workflow was validated (reason is empty when valid)."""

    def score(self, value: float) -> None:
        """A workflow got its mean score."""

    def train_step(self, info: StepInfo) -> None:
        """One optimiser step finished."""

    def iteration_end(self, metrics: Metrics) -> None:
        """An iteration, an evaluation on the test split or a comparison finished; `metrics` is the
        record written to the run's metrics (records.py)."""

    def log(self, message: str) -> None:
        """A line worth showing (a resume, a warning, a cap reached)."""

    def finish(self, status: str, message: str = "") -> None:
        """The run ended: finished, stopped (cap), interrupted or failed."""

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None
