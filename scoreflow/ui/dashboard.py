"""The `Reporter`s of the command line: a rich Live dashboard on a terminal, plain timestamped lines
elsewhere (a pipe, a log file, CI) or with --no-dashboard."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

from scoreflow.ui.state import DashState, comparison_text, summary
from scoreflow.fmt import fmt_count, fmt_duration, fmt_rate
from scoreflow.run.reporter import RunInfo
from scoreflow.records import Comparison, IterationMetrics, Metrics, TestMetrics, as_metrics


def display(plain: bool = False) -> DashState:
    """The live dashboard on a terminal; plain lines on a pipe, a dumb terminal or when asked."""
    if plain or not sys.stdout.isatty() or os.environ.get("TERM") == "dumb":
        return PlainReporter(sys.stdout)
    return LiveReporter()


class LiveReporter(DashState):
    """Redraws about four times a second from rich's refresh thread; events only update the state."""

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console

        super().__init__()
        self.console = console or Console()
        self.live: Any = None

    def _render(self) -> Any:
        from scoreflow.ui.view import render

        size = self.console.size
        return render(self, size.width, size.height)

    def start(self, info: RunInfo) -> None:
        from rich.live import Live

        super().start(info)
        if self.live is None:
            self.live = Live(get_renderable=self._render, console=self.console, refresh_per_second=4,
                             transient=False, redirect_stdout=True, redirect_stderr=True)
            self.live.start()

    def log(self, message: str) -> None:
        super().log(message)
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)

    def iteration_end(self, metrics: Metrics) -> None:
        super().iteration_end(metrics)
        if self.live is not None:
            self.live.refresh()

    def _stop(self) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.stop()
            self.live = None

    def finish(self, status: str, message: str = "") -> None:
        DashState.finish(self, status)
        self._stop()
        style = {"finished": "green", "stopped": "yellow", "interrupted": "yellow"}.get(status, "red")
        self.console.print(f"[bold {style}]{summary(self, status, message)}[/]", highlight=False)

    def __exit__(self, *exc: Any) -> None:
        self._stop()


class PlainReporter(DashState):
    """One line per stage change, iteration, log and finish, and progress at most every `every` s."""

    def __init__(self, out: TextIO, every: float = 10.0) -> None:
        super().__init__()
        self.out, self.every = out, every
        self._lock = threading.Lock()
        self._last = 0.0

    def _print(self, text: str) -> None:
        text = text.translate(_ASCII)  # log files and pipes get plain ASCII punctuation
        with self._lock:
            self.out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")
            self.out.flush()
            self._last = time.monotonic()

    def _where(self) -> str:
        st = self
        if st.evaluating:
            return f"evaluate (adapter {st.iteration})" if st.iteration else "evaluate (base model)"
        total = st.info.iterations if st.info else 0
        return f"iteration {st.iteration}/{total}"

    def _progress(self) -> str:
        st = self
        with st.lock:
            s = st.stages.get(st.current or "")
            if s is None:
                return ""
            now = time.time()
            parts = [f"{self._where()} · {s.name}{f' (attempt {s.attempt})' if s.attempt > 1 else ''} "
                     f"{s.done}/{s.total}"]
            if s.rate(now) is not None:
                parts.append(fmt_rate(s.rate(now)))
                if s.done < s.total:
                    parts.append(f"ETA {fmt_duration(s.eta(now))}")
            if s.name == "validate" and st.valid + st.rejected:
                parts.append(f"valid {st.valid}, rejected {st.rejected}")
            if s.name == "execute" and st.scores:
                parts.append(f"mean score {sum(st.scores) / len(st.scores):.3f} of {len(st.scores)}")
            if s.name == "train" and st.losses:
                parts.append(f"loss {st.losses[-1]:.4f}, margin {st.margins[-1]:+.4f}")
        return " · ".join(parts)

    def start(self, info: RunInfo) -> None:
        super().start(info)
        loss = self.config.get("train", {}).get("loss")
        self._print(f"start · task {info.task}" + (f" · loss {loss}" if loss else "")
                    + f" · backend {info.backend} on {info.device} · generator {info.generator}"
                    f" · executor {info.executor} · iterations {info.iterations} · run directory {info.run_dir}")

    def stage(self, iteration: int, name: str, total: int, done: int = 0) -> None:
        st = self
        with st.lock:
            prev = st.stages.get(st.current or "")
            ended = ""
            if prev is not None and (iteration, prev.name) != (st.iteration, name):
                ended = f"{prev.name} {prev.done}/{prev.total} took {fmt_duration(prev.elapsed(time.time()))}"
                if prev.name == "validate":
                    ended += f" (valid {st.valid}, rejected {st.rejected})"
                elif prev.name == "execute" and st.scores:
                    ended += f" (mean score {sum(st.scores) / len(st.scores):.3f} of {len(st.scores)})"
                elif prev.name == "train" and st.losses:
                    ended += f" (last loss {st.losses[-1]:.4f}, margin {st.margins[-1]:+.4f})"
        super().stage(iteration, name, total, done)
        self._print(self._progress() + (f" · {ended}" if ended else ""))

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        if time.monotonic() - self._last >= self.every:
            self._print(self._progress())

    def iteration_end(self, metrics: Metrics) -> None:
        super().iteration_end(metrics)
        self._print(iteration_line(metrics))

    def log(self, message: str) -> None:
        super().log(message)
        self._print(message)

    def finish(self, status: str, message: str = "") -> None:
        DashState.finish(self, status)
        self._print(summary(self, status, message))


_ASCII = str.maketrans({"·": "|", "–": "-", "…": "...", "✔": "ok"})


def iteration_line(m: Metrics | dict[str, Any]) -> str:
    m = as_metrics(m)
    if isinstance(m, Comparison):
        return f"trained vs base generator · {comparison_text(m)}"
    if isinstance(m, TestMetrics):
        judged = f" · judged {m.judged_solve_rate:.3f}" if m.has("judged_solve_rate") and m.judged_solve_rate is not None else ""
        return (f"evaluation done · adapter of iteration {m.iteration} · test solve rate {m.solve_rate:.3f}"
                f"{judged} · valid {m.valid_rate:.0%} of {m.problems} problems · {m.seconds / 60:.1f} min")
    assert isinstance(m, IterationMetrics)
    parts = [f"iteration {m.iteration} done",
             f"valid {m.valid}/{m.workflows} ({m.valid_rate:.0%}, first attempt "
             f"{m.first_attempt_valid_rate:.0%})",
             f"mean score {m.mean_score:.3f}" if m.valid else "no valid workflow",
             f"solve rate {m.solve_rate:.3f}", f"pairs {m.pairs}"]
    if m.loss is not None:
        parts.append(f"loss {m.loss:.4f}, margin {m.margin:+.4f} over {m.steps} steps")
    parts.append(f"executor {m.executor_calls} calls, {fmt_count(m.executor_tokens)} tokens")
    parts.append(f"{m.seconds / 60:.1f} min")
    return " · ".join(parts)
