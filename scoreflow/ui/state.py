"""What the dashboard and the plain logger know about a run: the `Reporter` events folded into one
thread-safe state (training events arrive from a worker thread, rendering happens on another)."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from scoreflow.run.reporter import Reporter, RunInfo
from scoreflow.fmt import fmt_count, fmt_duration
from scoreflow.records import Comparison, IterationMetrics, Metrics, TestMetrics, as_metrics, short_reason

PIPELINE = ("generate", "validate", "execute", "pairs", "train")
EVAL_PIPELINE = ("generate", "validate", "execute")
SCORE_BINS = 5


@dataclass
class StageProgress:
    name: str
    total: int
    done: int
    start_done: int  # already finished when the stage began (a resume): excluded from the rate
    started: float
    ended: float | None = None
    attempt: int = 1  # generate/validate run again for regenerated workflows

    def rate(self, now: float) -> float | None:
        elapsed = (self.ended or now) - self.started
        work = self.done - self.start_done
        return work / elapsed if work > 0 and elapsed > 0 else None

    def eta(self, now: float) -> float | None:
        r = self.rate(now)
        return (self.total - self.done) / r if r else None

    def elapsed(self, now: float) -> float:
        return (self.ended or now) - self.started


def usage_value(usage: Any, name: str) -> Any:
    return getattr(usage, name, None) if usage is not None else None


class DashState(Reporter):
    """The run as the display sees it: every event folded into this state (a Reporter itself)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.info: RunInfo | None = None
        self.config: dict[str, Any] = {}
        self.t_start = time.time()
        self.iteration = 0
        self.evaluating = False
        self.stages: dict[str, StageProgress] = {}
        self.current: str | None = None
        self.valid = self.rejected = 0
        self.slots = 0  # workflow slots of the iteration: the first generate stage's size
        self.reasons: Counter[str] = Counter()
        self.total_valid = self.total_rejected = 0
        self.scores: list[float] = []
        self.all_scores: list[float] = []
        self.losses: list[float] = []
        self.margins: list[float] = []
        self.step: tuple[int, int] | None = None
        self.step_seconds: deque[float] = deque(maxlen=20)
        self.finished: list[Metrics] = []
        self.logs: deque[tuple[float, str]] = deque(maxlen=50)
        self.calls_samples: deque[tuple[float, int]] = deque()
        self.status: str | None = None

    # ---- events -----------------------------------------------------------------------------------

    def start(self, info: RunInfo) -> None:
        with self.lock:
            self.info = info
            self.t_start = time.time()
            self.config = info.config  # the loop's configuration, as TOML tables
            # A resumed run skips finished iterations: show them from its metrics records.
            self.finished = _read_metrics(info.run_dir)

    def stage(self, iteration: int, name: str, total: int, done: int = 0) -> None:
        now = time.time()
        with self.lock:
            done_iters = {m.iteration for m in self.iterations()}
            evaluating = name == "evaluate" or iteration == 0 or iteration in done_iters
            if iteration != self.iteration or evaluating != self.evaluating:
                self.iteration, self.evaluating = iteration, evaluating
                self.stages = {}
                self.valid = self.rejected = 0
                self.reasons = Counter()
                self.scores = []
                self.slots = total if name == "generate" else 0
            if self.current in self.stages and self.stages[self.current].ended is None:
                self.stages[self.current].ended = now
            attempt = self.stages[name].attempt + 1 if name in self.stages else 1
            self.stages[name] = StageProgress(name, total, min(done, total), min(done, total), now, attempt=attempt)
            self.current = name

    def advance(self, n: int = 1) -> None:
        with self.lock:
            st = self.stages.get(self.current or "")
            if st is not None:
                st.done = min(st.total, st.done + n)
                if st.done >= st.total and st.ended is None:
                    st.ended = time.time()

    def workflow(self, valid: bool, reason: str) -> None:
        with self.lock:
            if valid:
                self.valid += 1
                self.total_valid += 1
            else:
                self.rejected += 1
                self.total_rejected += 1
                self.reasons[short_reason(reason)] += 1

    def score(self, value: float) -> None:
        with self.lock:
            self.scores.append(value)
            self.all_scores.append(value)

    def train_step(self, info: Any) -> None:
        with self.lock:
            self.losses.append(float(info.loss))
            self.margins.append(float(info.margin))
            self.step = (int(info.step), int(info.total))
            self.step_seconds.append(float(info.seconds))

    def iteration_end(self, metrics: Metrics | dict[str, Any]) -> None:
        with self.lock:
            self.finished.append(as_metrics(metrics))
            st = self.stages.get(self.current or "")
            if st is not None and st.ended is None:
                st.ended = time.time()

    def log(self, message: str) -> None:
        with self.lock:
            self.logs.append((time.time(), message))

    def finish(self, status: str, message: str = "") -> None:
        with self.lock:
            self.status = status
            st = self.stages.get(self.current or "")
            if st is not None and st.ended is None:
                st.ended = time.time()

    # ---- derived numbers --------------------------------------------------------------------------

    def usage(self) -> dict[str, Any]:
        """The executor's live counters (read without the executor's cooperation: plain attributes)."""
        u = self.info.usage if self.info else None
        calls = usage_value(u, "calls") or 0
        now = time.time()
        with self.lock:
            self.calls_samples.append((now, calls))
            while len(self.calls_samples) > 2 and now - self.calls_samples[0][0] > 30:
                self.calls_samples.popleft()
            t0, c0 = self.calls_samples[0]
        ex = self.config.get("executor", {})
        return {
            "calls": calls, "tokens": usage_value(u, "tokens") or 0,
            "prompt_tokens": usage_value(u, "prompt_tokens") or 0,
            "completion_tokens": usage_value(u, "completion_tokens") or 0,
            "retries": usage_value(u, "retries") or 0, "failures": usage_value(u, "failures") or 0,
            "cost_usd": usage_value(u, "cost_usd"),
            "calls_per_s": (calls - c0) / (now - t0) if now - t0 >= 1 else None,
            "max_cost_usd": ex.get("max_cost_usd") or 0, "max_total_tokens": ex.get("max_total_tokens") or 0,
        }

    def steps_per_s(self) -> float | None:
        with self.lock:
            s = sum(self.step_seconds)
            return len(self.step_seconds) / s if s > 0 else None

    def iterations(self) -> list[IterationMetrics]:
        with self.lock:
            return [m for m in self.finished if isinstance(m, IterationMetrics)]

    def best_score(self) -> float | None:
        scores = [m.mean_score for m in self.iterations() if m.valid]
        return max(scores) if scores else None


def _read_metrics(run_dir: str) -> list[Metrics]:
    from scoreflow.run.rundir import RunDir

    try:
        return RunDir(run_dir).read("metrics")
    except (OSError, ValueError, TypeError):
        return []


def comparison_text(m: Comparison) -> str:
    """The trained-vs-base record of `run.compare` in words."""
    d = m.difference
    change = f"; {m.change}" if m.has("change") and m.change else ""
    return (f"held-out solve rate {m.base_solve_rate:.3f} -> {m.trained_solve_rate:.3f} on {m.problems} "
            f"problems: {d['value']:+.3f} (95% CI {d['low']:+.3f} to {d['high']:+.3f}){change}")


def summary(state: DashState, status: str, message: str = "") -> str:
    """The one line printed when the run ends."""
    its = state.iterations()
    u = state.usage()
    best = state.best_score()
    parts = [status, f"{len(its)} iteration{'s' if len(its) != 1 else ''}"]
    if best is not None:
        parts.append(f"best mean score {best:.3f}")
    tests = [m for m in state.finished if isinstance(m, TestMetrics)]
    compared = [m for m in state.finished if isinstance(m, Comparison)]
    if compared:
        parts.append("trained vs base: " + comparison_text(compared[-1]))
    elif tests:
        parts.append(f"test solve rate {tests[-1].solve_rate:.3f}")
    parts.append(f"{u['calls']} executor calls, {fmt_count(u['tokens'])} tokens")
    if u["cost_usd"] is not None:
        parts.append(f"${u['cost_usd']:.2f}")
    parts.append(f"in {fmt_duration(time.time() - state.t_start)}")
    if message:
        parts.append(message)
    return " · ".join(parts)
