"""`optimize --profile`: where a run's time went, stage by stage, written to RUN/profile.md.

A peer reporter clocks every stage (generate, validate, execute, pairs, train, for each iteration
and each test-split evaluation); at the end the run's own records give each stage's work (tokens
generated, executor calls and tokens, tokens trained) and the table sets the work's arithmetic
(2 x parameters FLOPs per token forward, 6 x for a training token) against what this machine's
dense matrix multiply reaches, measured once at the start: the ratio says how far a stage runs
from the hardware's limit."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoreflow.fmt import fmt_count, fmt_duration
from scoreflow.run.reporter import Reporter, RunInfo
from scoreflow.run.rundir import RunDir


@dataclass
class Span:
    iteration: int
    stage: str
    evaluating: bool
    started: float
    seconds: float = 0.0
    units: int = 0  # the stage's own count: workflows, executions, optimiser steps


def matmul_gflops(seconds: float = 0.3) -> float:
    """This machine's dense fp32 matrix multiply rate (the backend's threads), in GFLOP/s."""
    import numpy as np

    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    a @ a
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ a
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t0) / 1e9


class StageClock(Reporter):
    def __init__(self, parameters: int | None = None) -> None:
        self.parameters = parameters
        self.spans: list[Span] = []
        self.run_dir: Path | None = None
        self.peak = 0.0
        self.trained: set[int] = set()  # iterations whose loop work is done: later stages evaluate them

    def start(self, info: RunInfo) -> None:
        from scoreflow.records import IterationMetrics

        self.run_dir = Path(info.run_dir)
        self.trained = {m.iteration for m in RunDir(self.run_dir).read("metrics") if isinstance(m, IterationMetrics)}
        self.peak = matmul_gflops()

    def stage(self, iteration: int, name: str, total: int, done: int = 0) -> None:
        now = time.monotonic()
        self._close(now)
        self.spans.append(Span(iteration, name, iteration == 0 or iteration in self.trained, now))

    def advance(self, n: int = 1) -> None:
        if self.spans:
            self.spans[-1].units += n

    def iteration_end(self, metrics: Any) -> None:
        self._close(time.monotonic())
        if getattr(metrics, "kind", "") == "iteration":
            self.trained.add(metrics.iteration)

    def finish(self, status: str, message: str = "") -> None:
        self._close(time.monotonic())
        if self.run_dir is not None:
            RunDir(self.run_dir).profile_path.write_text(table(self.run_dir, self.spans, self.parameters, self.peak),
                                                         encoding="utf-8")

    def _close(self, now: float) -> None:
        if self.spans and not self.spans[-1].seconds:
            self.spans[-1].seconds = now - self.spans[-1].started


def _work(run: RunDir) -> dict[tuple[int, str, bool], tuple[int, int]]:
    """(iteration, stage, test split) -> (tokens, calls) from the run's records."""
    out: dict[tuple[int, str, bool], tuple[int, int]] = {}

    def add(key: tuple[int, str, bool], tokens: int, calls: int = 0) -> None:
        t, c = out.get(key, (0, 0))
        out[key] = (t + tokens, c + calls)

    for name, test in (("workflows", False), ("test_workflows", True)):
        for r in run.read(name):
            add((r.iteration, "generate", test), r.tokens)
    for name, test in (("executions", False), ("test_executions", True)):
        for r in run.read(name):
            add((r.iteration, "execute", test), r.tokens, r.calls)
    for r in run.read("train"):
        add((r.iteration, "train", False), r.tokens if r.has("tokens") else 0)
    return out


def table(run_dir: Path, spans: list[Span], parameters: int | None, peak: float) -> str:
    work = _work(RunDir(run_dir))
    per_token = {"generate": 2, "execute": 2, "train": 6}  # FLOPs per parameter per token
    rows = ["| where | stage | wall | units | tokens | tokens/s | GFLOP/s | of the limit |",
            "|---|---|---|---|---|---|---|---|"]
    total = 0.0
    for s in spans:
        total += s.seconds
        tokens, calls = work.get((s.iteration, s.stage, s.evaluating), (0, 0))
        if s.stage == "validate":
            tokens = 0  # the toy runs' executor calls are counted with nothing else
        rate = tokens / s.seconds if s.seconds and tokens else 0.0
        flops = per_token.get(s.stage, 0) * (parameters or 0) * rate / 1e9
        where = (f"evaluate {'base' if s.iteration == 0 else s.iteration}" if s.evaluating
                 else f"iteration {s.iteration}")
        units = f"{s.units}" + (f" ({calls} calls)" if calls else "")
        rows.append(f"| {where} | {s.stage} | {fmt_duration(s.seconds)} | {units} | "
                    f"{fmt_count(tokens) if tokens else '–'} | {rate:.0f} | "
                    f"{flops:.1f} | {flops / peak:.0%} |" if flops and peak else
                    f"| {where} | {s.stage} | {fmt_duration(s.seconds)} | {units} | "
                    f"{fmt_count(tokens) if tokens else '–'} | {rate:.0f} | – | – |")
    head = [f"# Profile of {Path(run_dir).name}", "",
            f"The limit: a dense fp32 matrix multiply on this machine, {peak:.0f} GFLOP/s. Work: "
            f"{'%.0fM' % (parameters / 1e6) if parameters else 'unknown'} parameters, 2 FLOPs per parameter "
            "per token forward (generate: generated tokens; execute: executor prompt and reply tokens), "
            "6 per trained token. Clocked stages: " + fmt_duration(total) + ".", ""]
    return "\n".join(head + rows) + "\n"
