"""Running model-written code: one child process per run (see sandbox_child.py for the inside).

Layers: the static AST policy (workflow.py) before anything runs; then a fresh interpreter
(`-I -S`: no site-packages, no user paths) in its own session and temporary directory, with a
scrubbed environment (no API keys), resource limits (address space, CPU, file size, processes),
an audit hook refusing sockets, subprocesses, ctypes and file access outside its directory, a
wall-clock deadline that kills the whole process group, and capped output. Executor calls are
made by the parent on the child's behalf, so the child holds no secret and needs no network.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

CHILD = str(Path(__file__).with_name("sandbox_child.py"))
CallHandler = Callable[[str, list, dict], Awaitable[Any]]


class InfraError(Exception):
    """A failure of the machinery (executor down after retries), not of the code under test."""


@dataclass
class Limits:
    timeout_s: float = 30.0
    memory_mb: int = 1024
    cpu_s: int = 30
    fsize_mb: int = 16
    nproc: int = 64
    max_output_chars: int = 20000


@dataclass
class RunResult:
    status: str  # ok | timeout | crashed | error
    output: str | None = None  # a workflow's return value
    error: str | None = None
    stdout: str = ""
    seconds: float = 0.0
    calls: int = 0


def scrubbed_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
        "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    }


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


class Sandbox:
    def __init__(self, limits: Limits | None = None, concurrency: int = 8):
        self.limits = limits or Limits()
        self._sem = asyncio.Semaphore(concurrency)

    async def run_workflow(self, source: str, attrs: dict[str, str], methods: list[str],
                           handler: CallHandler, timeout_s: float | None = None) -> RunResult:
        header = {"mode": "workflow", "source": source, "attrs": attrs, "methods": methods}
        return await self._run(header, handler, timeout_s)

    async def run_program(self, source: str, timeout_s: float | None = None,
                          allow_imports: list[str] | None = None) -> RunResult:
        header = {"mode": "program", "source": source, "allow_imports": allow_imports}
        return await self._run(header, None, timeout_s)

    def run_program_sync(self, source: str, timeout_s: float | None = None,
                         allow_imports: list[str] | None = None) -> RunResult:
        """For synchronous callers (scorers running in worker threads)."""
        return asyncio.run(Sandbox(self.limits, 1).run_program(source, timeout_s, allow_imports))

    async def _run(self, header: dict, handler: CallHandler | None, timeout_s: float | None) -> RunResult:
        lim = self.limits
        budget = timeout_s if timeout_s is not None else lim.timeout_s
        header["limits"] = {"memory_mb": lim.memory_mb, "cpu_s": lim.cpu_s, "fsize_mb": lim.fsize_mb,
                            "nproc": lim.nproc, "max_output_chars": lim.max_output_chars}
        async with self._sem:
            workdir = tempfile.mkdtemp(prefix="scoreflow-sbx-")
            t0 = time.monotonic()
            proc = None
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", "-S", "-B", CHILD,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL, cwd=workdir, env=scrubbed_env(workdir),
                    start_new_session=True, limit=8 * lim.max_output_chars + (1 << 16),
                )
                data = json.dumps(header).encode()
                proc.stdin.write(b"%010d" % len(data) + data)
                await proc.stdin.drain()
                result = await self._converse(proc, handler, budget, t0)
            finally:
                if proc is not None:
                    _kill_group(proc)
                    try:
                        await asyncio.wait_for(proc.wait(), 5)
                    except asyncio.TimeoutError:
                        pass
                shutil.rmtree(workdir, ignore_errors=True)
            result.seconds = time.monotonic() - t0
            return result

    async def _converse(self, proc, handler: CallHandler | None, budget: float, t0: float) -> RunResult:
        calls: set[asyncio.Task] = set()
        ncalls = 0
        waited = 0.0  # time with an executor call outstanding: not charged to the code
        wait_start = None
        hard_deadline = t0 + max(budget * 20, 600.0)
        reader = asyncio.ensure_future(proc.stdout.readline())
        try:
            while True:
                now = time.monotonic()
                if calls and wait_start is None:
                    wait_start = now
                charged = now - t0 - waited - ((now - wait_start) if wait_start is not None else 0.0)
                remaining = hard_deadline - now if calls else min(budget - charged, hard_deadline - now)
                if remaining <= 0:
                    return RunResult("timeout", error=f"timed out after {budget:g}s", calls=ncalls)
                done, _ = await asyncio.wait({reader, *calls}, timeout=remaining,
                                             return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is reader:
                        continue
                    calls.discard(task)
                    exc = task.exception()
                    if isinstance(exc, InfraError):
                        raise exc
                if not calls and wait_start is not None:
                    waited += time.monotonic() - wait_start
                    wait_start = None
                if reader not in done:
                    continue
                try:
                    line = reader.result()
                except (ValueError, asyncio.LimitOverrunError):
                    return RunResult("crashed", error="output exceeds the size limit", calls=ncalls)
                if not line:
                    rc = await proc.wait()
                    why = _signal_name(rc) if rc < 0 else f"exit code {rc}"
                    if rc == -signal.SIGXCPU:
                        why = "CPU time limit exceeded"
                    return RunResult("crashed", error=f"process died ({why})", calls=ncalls)
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    return RunResult("crashed", error="malformed message from the sandbox", calls=ncalls)
                if msg.get("type") == "done":
                    return RunResult(msg.get("status", "error"), msg.get("output"), msg.get("error"),
                                     msg.get("stdout") or "", calls=ncalls)
                if msg.get("type") == "call" and handler is not None:
                    ncalls += 1
                    calls.add(asyncio.ensure_future(self._answer(proc, handler, msg)))
                reader = asyncio.ensure_future(proc.stdout.readline())
        finally:
            reader.cancel()
            for task in calls:
                task.cancel()

    async def _answer(self, proc, handler: CallHandler, msg: dict) -> None:
        try:
            value = await handler(str(msg.get("method")), list(msg.get("args") or []), dict(msg.get("kwargs") or {}))
            reply = {"type": "reply", "id": msg.get("id"), "ok": True, "value": value}
        except InfraError:
            raise
        except Exception as e:  # a bad operator call is the workflow's failure
            reply = {"type": "reply", "id": msg.get("id"), "ok": False, "error": f"{type(e).__name__}: {e}"}
        try:
            proc.stdin.write((json.dumps(reply) + "\n").encode())
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            pass


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
