"""The real runs the slow tests share, each made once per pytest session and read by many tests.

Each is the smallest run of the real product (`python -m scoreflow ...` in a subprocess, the embedded
SmolLM2-135M as generator and executor, the real sandbox) that still takes its path: pairs form and at
least one optimiser step runs. Their seeds are fixed, chosen so that this happens here.

- `demo`: the README's main command (the demo preset on `arith`, with its comparison of the trained and
  the base generator) at small sizes, with all four trackers (offline) and --profile, through a pipe:
  plain lines.
  Read by the demo-preset, tracker, report, show, solve and plain-output tests.
- `terminal`: a one-problem run of the demo preset in an 80x24 pseudo-terminal (the live dashboard).
- `killed`: a run of the demo preset killed with SIGKILL during generation, execution, training and
  the final held-out evaluation, each time resumed with --resume, until it finishes.
- `learning`: benchmarks/learning.py --quick (a run, the same workflows under grpo, --combine, --retest-from).
- `mlx`: `scoreflow optimize --backend mlx` at small sizes (the MLX tier only).

`terminal`, `killed` and `learning` train with the prompts' opening held without gradient
(`train.opening_gradient = false`): what they test does not depend on the gradient, and a step costs less.

conftest.py makes each a session fixture (demo_run, terminal_run, killed_run, learning_run, mlx_run) and
puts their readers last. By default the runs a session needs start in the background at its first test,
two at a time with one model thread each, while the other tests run on the other core;
SCOREFLOW_TEST_BACKGROUND=0 makes each run, with two threads, when its first reader asks. Each run's
output stays in its folder under the session's basetemp (shared-runs0/NAME: stdout.txt, leg-N.log, ...).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SCOREFLOW_TEST_DATA", ROOT.parent / "shared" / "data"))
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S")


# ---- helpers for tests that run scoreflow ---------------------------------------------------------

def env(**extra: str) -> dict[str, str]:
    """The environment of a scoreflow subprocess: pytest's own variables removed, output unbuffered."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    e.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    e.update(extra)
    return e


# Threads of each shared run's model: two when runs are made one at a time on first use; one when they
# are made in the background, two at once beside the tests (a 135M model gains little from a second
# thread, and two processes keep both cores busy).
THREADS = {"value": "2"}


def run_env(**extra: str) -> dict[str, str]:
    return env(OMP_NUM_THREADS=THREADS["value"], **extra)


def scoreflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "scoreflow", *args]


def records(run: Path, name: str) -> list[dict]:
    p = run / f"{name}.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.is_file() else []


# A custom JSON Lines task scored by token F1, so that executor replies get graded (not all-or-nothing)
# scores and pairs form even with a 135M-parameter executor.
QUESTIONS = [
    ("Name the colour of a clear daytime sky.", "blue"),
    ("What do bees make?", "honey"),
    ("What is frozen water called?", "ice"),
    ("Which animal says meow?", "cat"),
]


def write_qa_task(folder: Path) -> list[str]:
    """The F1-scored QA task in `folder`, and the flags that select it."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n"
                            for i, (q, a) in enumerate(QUESTIONS * 3)))
    cfg = folder / "task.toml"
    cfg.write_text('[task]\nscorer = "f1"\nfamily = "qa"\ndescription = "short general-knowledge questions"\n')
    return ["--task", "jsonl", "--data", str(data), "--config", str(cfg)]


def check_complete(run: Path, iterations: int) -> None:
    """A finished run holds every record exactly once: each iteration's metrics, every slot generated,
    each valid workflow executed once, its pairs, its training steps and its adapter."""
    metrics = [m for m in records(run, "metrics") if m["kind"] == "iteration"]
    assert [m["iteration"] for m in metrics] == list(range(1, iterations + 1))
    evals = Counter((r["iteration"], r["problem"], r["slot"], r["run"]) for r in records(run, "executions"))
    assert not [k for k, n in evals.items() if n > 1], "an evaluation key appears twice"
    attempts = Counter((r["iteration"], r["problem"], r["slot"], r["attempt"]) for r in records(run, "workflows"))
    assert not [k for k, n in attempts.items() if n > 1], "a workflow attempt appears twice"
    steps = Counter((r["iteration"], r["step"]) for r in records(run, "train"))
    assert not [k for k, n in steps.items() if n > 1], "a training step appears twice"
    for m in metrics:
        it = m["iteration"]
        slots = {(r["problem"], r["slot"]) for r in records(run, "workflows") if r["iteration"] == it}
        assert len(slots) == m["workflows"]  # every slot generated at least once
        valid = {(r["problem"], r["slot"]) for r in records(run, "workflows") if r["iteration"] == it and r["valid"]}
        assert len(valid) == m["valid"]
        ran = Counter((r["problem"], r["slot"]) for r in records(run, "executions") if r["iteration"] == it)
        assert set(ran) == valid and all(n == 1 for n in ran.values())  # r = 1 run each in the demo sizes
        assert len([p for p in records(run, "pairs") if p["iteration"] == it]) == m["pairs"]
        assert len([s for s in records(run, "train") if s["iteration"] == it]) == m["steps"]
        assert (run / "adapters" / f"iter-{it}").is_dir()
    assert json.loads((run / "status.json").read_text())["status"] == "finished"


# ---- a finished command -----------------------------------------------------------------------------

@dataclass
class Finished:
    """A scoreflow command run to its end: where, how, and what it printed."""
    argv: list[str]
    cwd: Path
    run_dir: Path
    rc: int
    out: str
    err: str
    seconds: float
    env: dict[str, str] = field(repr=False, default_factory=dict)


_LIVE: set[subprocess.Popen] = set()  # the shared runs' processes, each in a session of its own


def popen(argv: list[str], **kw) -> subprocess.Popen:
    proc = subprocess.Popen(argv, start_new_session=True, **kw)
    _LIVE.add(proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """SIGKILL to the process and its group (its sandbox children), and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    _LIVE.discard(proc)


def stop_all() -> None:
    """At the session's end: no shared run outlives pytest (an interrupted session, a failed reader)."""
    for proc in list(_LIVE):
        stop(proc)


def run_to_end(argv: list[str], cwd: Path, run_dir: Path, e: dict[str, str], timeout: float = 1800) -> Finished:
    """Run `argv` in `cwd` to its end; its output is also kept in cwd/stdout.txt and cwd/stderr.txt."""
    t0 = time.monotonic()
    proc = popen(argv, cwd=cwd, env=e, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop(proc)
    (cwd / "stdout.txt").write_text(out)
    (cwd / "stderr.txt").write_text(err)
    return Finished(argv, cwd, run_dir, proc.returncode, out, err, time.monotonic() - t0, e)


# ---- demo: the README's main command, small, with every tracker -------------------------------------

# Two problems, k = 2, one pair (one optimiser step), two held-out test problems. Seed 1: on these
# problems the four workflows score apart (seed 0's all score 0 and no pair forms).
DEMO_SIZES = ["--iterations", "1", "--problems", "2", "-k", "2", "--pairs", "1", "--test-problems", "2",
              "--seed", "1", "--profile"]
TRACKERS = ("tensorboard", "wandb", "mlflow", "trackio")


def installed_trackers() -> list[str]:
    return [t for t in TRACKERS if importlib.util.find_spec(t) is not None]


def tracker_env(folder: Path) -> dict[str, str]:
    """Trackers offline, writing under `folder` (MLflow: its default store, RUN/mlflow)."""
    e = run_env(WANDB_MODE="offline", WANDB_SILENT="true", TRACKIO_DIR=str(folder / "trackio"), HF_HUB_OFFLINE="1",
                SCOREFLOW_DATA=str(DATA_DIR))
    e.pop("MLFLOW_TRACKING_URI", None)
    return e


def demo(base: Path) -> Finished:
    cwd = base / "demo"
    cwd.mkdir(parents=True)
    trackers = [a for t in installed_trackers() for a in ("--report-to", t)]
    argv = scoreflow("optimize", *DEMO_SIZES, *trackers, "--run-dir", "runs/RUN")
    return run_to_end(argv, cwd, cwd / "runs" / "RUN", tracker_env(cwd))


# ---- terminal: the live dashboard in a pseudo-terminal -----------------------------------------------

HELD = ["--set", "train.opening_gradient=false"]  # terminal, killed, learning: see the module's docstring
TINY = ["--problems", "1", "-k", "2", "--iterations", "1", "--pairs", "2", "--set", "generator.max_new_tokens=128",
        "--set", "executor.max_tokens=32", "--set", "generator.max_attempts=1",
        "--set", "run.compare=false", *HELD]


@dataclass
class Terminal:
    """A run watched in a pseudo-terminal: timed snapshots of the screen (as pyte renders it) and the last."""
    run_dir: Path
    screens: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, screen text)
    final: str = ""
    rc: int | None = None
    seconds: float = 0.0


def terminal_env(cols: int, rows: int) -> dict[str, str]:
    e = {k: v for k, v in env().items() if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE",
                                                     "TTY_INTERACTIVE", "COLUMNS", "LINES")}
    e.update(TERM="xterm-256color", OMP_NUM_THREADS="1")
    return e


def watch_pty(cmd: list[str], cols: int, rows: int, out: Terminal, timeout: float) -> None:
    import pyte  # test dependency (the `test` extra): a terminal emulator to read the screen a user sees

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    proc = popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=terminal_env(cols, rows), cwd=ROOT)
    os.close(slave)
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    t0 = last = time.monotonic()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.25)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                if not data:
                    break
                stream.feed(data)
            now = time.monotonic()
            if now - last >= 0.5:
                last = now
                text = "\n".join(screen.display)
                if not out.screens or out.screens[-1][1] != text:
                    out.screens.append((now - t0, text))
            if now - t0 > timeout:
                proc.kill()
    finally:
        os.close(master)
        out.rc = proc.wait()
        stop(proc)
    out.final = "\n".join(screen.display)
    out.seconds = time.monotonic() - t0
    (out.run_dir.parent / "terminal-final-screen.txt").write_text(out.final)


def terminal(base: Path) -> Terminal:
    out = Terminal(run_dir=base / "terminal-run")
    watch_pty(scoreflow("optimize", *TINY, "--run-dir", str(out.run_dir)), 80, 24, out, timeout=900)
    return out


# ---- killed: kill -9 at chosen points, resumed each time --------------------------------------------

# The demo preset (as `demo`): one iteration of two problems, k = 2, two pairs (two optimiser steps, a
# checkpoint after each), one held-out test problem evaluated before and after; the executor's calls
# one at a time (executor.batch_size = 1), so that the executions end one by one and a kill can fall
# between two of them.
KILLED_SIZES = ["--iterations", "1", "--problems", "2", "-k", "2", "--pairs", "2", "--test-problems", "1",
                "--seed", "1", "--set", "train.checkpoint_every=1", "--set", "executor.batch_size=1",
                "--no-dashboard", *HELD]
STAGE = re.compile(r"^\S+ \S+ (iteration \d+/\d+|evaluate \([^)]*\)) \| (\w+) ")


def last_stage(log: str) -> tuple[str, str] | None:
    """(where, stage) of the last progress line of a plain log, e.g. ("iteration 1/2", "train")."""
    found = [m.groups() for line in log.splitlines() if (m := STAGE.match(line))]
    return found[-1] if found else None


def _any(name: str, iteration: int) -> Callable[[Path, str], bool]:
    return lambda run, log: any(r["iteration"] == iteration for r in records(run, name))


def _checkpoint(iteration: int) -> Callable[[Path, str], bool]:
    return lambda run, log: any((run / "checkpoints" / f"iter-{iteration}").glob("step-*"))


def _line(text: str) -> Callable[[Path, str], bool]:
    return lambda run, log: text in log


# (what the kill is meant to interrupt, when to kill, seconds to wait after that). Records are appended
# as each unit finishes, so a record of the stage's kind means the stage is under way; training is
# killed once its first checkpoint is saved (after step 1 of 2); generation writes nothing until its
# batch is done, so those kills come a few seconds after its progress line.
KILLS: list[tuple[str, Callable[[Path, str], bool], float]] = [
    ("generation", _line("iteration 1/1 | generate"), 3.0),
    ("execution", _any("executions", 1), 0.0),
    ("training", _checkpoint(1), 0.0),  # a checkpoint's folder appears whole (atomic_dir)
    ("evaluation", _line("evaluate (adapter 1) | generate"), 3.0),
]
RECORDS = ("workflows", "executions", "test_workflows", "test_executions", "metrics")


@dataclass
class Kill:
    meant: str  # what the kill was meant to interrupt
    stage: tuple[str, str] | None  # the last progress line before the kill
    seconds: float  # into its process
    records: dict[str, list[dict]]  # what the run directory held just after the kill


@dataclass
class Killed:
    run_dir: Path
    cwd: Path
    argv: list[str]
    kills: list[Kill] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)  # each process's output, in order
    rc: int | None = None  # of the last, uninterrupted process
    seconds: float = 0.0

    @property
    def log(self) -> str:
        return "".join(self.logs)


def killed(base: Path) -> Killed:
    cwd = base / "killed"
    run = cwd / "run"
    cwd.mkdir(parents=True)
    argv = scoreflow("optimize", *KILLED_SIZES, "--run-dir", str(run))
    out = Killed(run, cwd, argv)
    t0 = time.monotonic()
    for leg in range(len(KILLS) + 1):
        log_path = cwd / f"leg-{leg}.log"
        with open(log_path, "w") as log:
            proc = popen(argv + (["--resume"] if leg else []), cwd=cwd, env=run_env(), stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started = time.monotonic()
        try:
            if leg == len(KILLS):
                out.rc = proc.wait(timeout=1800)
                out.logs.append(log_path.read_text())
                break
            meant, when, delay = KILLS[leg]
            while not when(run, log_path.read_text()):
                if proc.poll() is not None:
                    out.logs.append(log_path.read_text())
                    raise AssertionError(f"the run ended (rc {proc.returncode}) before the kill during {meant}:\n"
                                         + log_path.read_text()[-3000:])
                if time.monotonic() - started > 1800:
                    raise AssertionError(f"no {meant} within 30 minutes")
                time.sleep(0.1)
            time.sleep(delay)
            text = log_path.read_text()
            stop(proc)
            out.kills.append(Kill(meant, last_stage(text), time.monotonic() - started,
                                  {name: records(run, name) for name in RECORDS}))
            out.logs.append(log_path.read_text())
        finally:
            stop(proc)
    out.seconds = time.monotonic() - t0
    return out


# ---- mlx: the MLX backend's run ---------------------------------------------------------------------

# The demo preset on the MLX backend: two problems, k = 2, one pair (one optimiser step), one held-out
# test problem. Seed 1: pairs form here.
MLX_SIZES = ["--backend", "mlx", "--iterations", "1", "--problems", "2", "-k", "2", "--pairs", "1",
             "--test-problems", "1", "--seed", "1", "--profile"]


def mlx(base: Path) -> Finished:
    cwd = base / "mlx"
    cwd.mkdir(parents=True)
    argv = scoreflow("optimize", *MLX_SIZES, "--run-dir", "runs/RUN")
    return run_to_end(argv, cwd, cwd / "runs" / "RUN", run_env(HF_HUB_OFFLINE="1"))


# ---- learning: benchmarks/learning.py --quick, its three runs of the real model ----------------------

@dataclass
class Learning:
    """The learning benchmark's machinery on the real model: a run, the same workflows and scores under
    the group-relative loss (--reuse-from), both summarised as one (--combine), and the first run's
    adapters evaluated again (--retest-from); each invocation's printed JSON."""
    base: Path
    first: dict
    grpo: dict
    both: dict
    again: dict
    seconds: float = 0.0


def learning(base: Path) -> Learning:
    from helpers import run_benchmark

    t0 = time.monotonic()
    base = base / "learning"
    runs = base / "runs"
    # run_benchmark gives each one thread (OMP_NUM_THREADS, unless this process's environment sets it)
    first = run_benchmark("learning.py", "--runs-dir", str(runs), "--out", str(base / "learning.json"), *HELD,
                          timeout=1800)
    grpo = run_benchmark("learning.py", "--loss", "grpo", "--runs-dir", str(runs), "--reuse-from", str(runs),
                         "--out", str(base / "learning-grpo.json"), *HELD, timeout=1800)
    both = run_benchmark("learning.py", "--combine", str(base / "learning.json"), str(base / "learning-grpo.json"),
                         "--out", str(base / "losses.json"))
    again = run_benchmark("learning.py", "--runs-dir", str(base / "retest"), "--retest-from", str(runs), *HELD,
                          timeout=1800)
    return Learning(base, first, grpo, both, again, time.monotonic() - t0)


# ---- made once, in the background or on first use -----------------------------------------------------

class Job:
    """One shared run: made at most once, by the background worker or by its first reader."""

    def __init__(self, name: str, make: Callable[[Path], object], base: Path) -> None:
        self.name, self.make, self.base = name, make, base
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._started = False
        self.value: object = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.where = ""

    def claim(self) -> bool:
        with self._lock:
            if self._started:
                return False
            self._started = True
            return True

    def run(self, where: str) -> None:
        self.where = where
        t0 = time.monotonic()
        try:
            self.value = self.make(self.base)
        except BaseException as e:  # noqa: BLE001  (re-raised in every reader)
            self.error = e
        finally:
            self.seconds = time.monotonic() - t0
            self._done.set()

    def result(self) -> object:
        if self.claim():
            self.run("first reader")
        self._done.wait()
        if self.error is not None:
            raise RuntimeError(f"the shared run {self.name!r} failed: {self.error}") from self.error
        return self.value


MAKERS: dict[str, Callable[[Path], object]] = {"demo": demo, "terminal": terminal, "killed": killed,
                                               "learning": learning, "mlx": mlx}
SLOTS = 2  # shared runs made at once in the background


class SharedRuns:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.jobs = {name: Job(name, make, base) for name, make in MAKERS.items()}
        self._workers: list[threading.Thread] = []

    def get(self, name: str) -> object:
        return self.jobs[name].result()

    def start_background(self, names: list[str]) -> None:
        """Make `names` in daemon threads, SLOTS at a time in this order, one model thread each."""
        THREADS["value"] = "1"
        todo = list(names)
        lock = threading.Lock()

        def work() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    job = self.jobs[todo.pop(0)]
                if job.claim():
                    job.run("background")

        for i in range(min(SLOTS, len(names))):
            t = threading.Thread(target=work, name=f"shared-runs-{i}", daemon=True)
            t.start()
            self._workers.append(t)

    def summary(self) -> list[str]:
        return [f"{j.name}: {j.seconds:.0f} s ({j.where}{', failed' if j.error else ''})"
                for j in self.jobs.values() if j._done.is_set()]
