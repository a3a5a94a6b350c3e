"""What the loop tells the outside world while it runs: a small set of events.

The loop calls one `Reporter`. The terminal dashboard, the plain line logger and the experiment
trackers (scoreflow/ui/) each implement it, and `Fanout` passes every event to all of them as
peers. This base class ignores everything, which is what tests and library callers get.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable

from scoreflow.model.backend import StepInfo
from scoreflow.records import Metrics

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
    say: Callable[[str], None] | None = None  # a peer's way to show a line (Fanout sets it to its own log)

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


class Fanout(Reporter):
    """Every event to each reporter in turn, in the order given (trackers before the display, so a
    tracker that cannot start stops the run before the display opens)."""

    def __init__(self, *reporters: Reporter | None) -> None:
        self.reporters = [r for r in reporters if r is not None]
        self._stack = ExitStack()
        for r in self.reporters:
            r.say = self.log

    def _each(self, method: str, *args: Any) -> None:
        for r in self.reporters:
            getattr(r, method)(*args)

    def start(self, info: RunInfo) -> None:
        self._each("start", info)

    def stage(self, iteration: int, name: str, total: int, done: int = 0) -> None:
        self._each("stage", iteration, name, total, done)

    def advance(self, n: int = 1) -> None:
        self._each("advance", n)

    def workflow(self, valid: bool, reason: str) -> None:
        self._each("workflow", valid, reason)

    def score(self, value: float) -> None:
        self._each("score", value)

    def train_step(self, info: StepInfo) -> None:
        self._each("train_step", info)

    def iteration_end(self, metrics: Metrics) -> None:
        self._each("iteration_end", metrics)

    def log(self, message: str) -> None:
        self._each("log", message)

    def finish(self, status: str, message: str = "") -> None:
        self._each("finish", status, message)

    def __enter__(self) -> "Fanout":
        for r in self.reporters:
            self._stack.enter_context(r)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)
