"""Running model-written code: one child process per run, in two stages (confine.py applies the OS
layers, then execs child.py, which runs the code; docs/sandbox.md says what is and is not covered).

Layers, the same for workflows, Programmer code and candidate solutions: the static AST policy
(workflow.py, workflows only) before anything runs; then a fresh interpreter (`-I -S -B`) in its
own session and temporary directory with a scrubbed environment; resource limits; on Linux new
network and PID namespaces, a per-run uid when started as root, Landlock (read-only interpreter
files without the raw-memory extension modules, read-write temporary directory, no TCP, no signals
outside the run) and a seccomp filter (no sockets of any family); a second interpreter for the
code itself that never loads ctypes, with an audit hook refusing processes, sockets, frames and
files outside its directory; a wall-clock deadline after which the PID namespace (or process group,
or every process of the run's uid) is killed; capped output, and messages decoded defensively
(protocol.py); a verdict that counts only with the run's nonce; and a cleanup that removes whatever
the run left (cleanup.py). Executor calls are made by the parent on the child's behalf, so the child
holds no secret and needs no network.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import secrets
import signal
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Awaitable, Callable

from scoreflow.errors import InfraError, StopRun
from scoreflow.sandbox import protocol
from scoreflow.sandbox.access import read_roots, read_rules
from scoreflow.sandbox.cleanup import remove_tree

CONFINE = str(Path(__file__).with_name("confine.py"))
CallHandler = Callable[[str, list, dict], Awaitable[Any]]
LINUX = sys.platform.startswith("linux")
PID_MAX = 1 << 22  # the kernel's largest pid
log = logging.getLogger("scoreflow.sandbox")


def _quiet_child_watcher(record: logging.LogRecord) -> bool:
    # Python 3.11's ThreadedChildWatcher logs this when a sandbox child was already reaped. A run's
    # verdict never comes from its exit code (only from the nonce-checked final message), so the
    # line is noise on the dashboard. Why the child is sometimes reaped twice is not yet understood.
    return "Unknown child process pid" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_quiet_child_watcher)


@dataclass
class Limits:
    timeout_s: float = 30.0
    memory_mb: int = 1024
    cpu_s: int = 30
    fsize_mb: int = 16
    nproc: int = 64
    max_output_chars: int = 20000
    max_calls: int = 200  # operator calls per workflow run


@dataclass
class RunResult:
    status: str  # ok | timeout | crashed | error
    output: str | None = None  # a workflow's return value
    error: str | None = None
    stdout: str = ""
    seconds: float = 0.0
    calls: int = 0
    passed: bool | None = None  # solutions only: the harness ran every test and none failed
    layers: tuple[str, ...] = field(default_factory=tuple)


def scrubbed_env(workdir: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
        "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    }


@lru_cache(maxsize=1)
def _stdlib_world_readable() -> bool:
    path = Path(os.path.dirname(os.__file__)).resolve()
    for part in [path, *path.parents]:
        if not part.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(path.stat().st_mode & stat.S_IROTH)


def imports_of(tests: str) -> str:
    """The import statements of a solution's tests, which the harness runs before the solution so that
    the tests' own imports find their modules already loaded."""
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ""
    return "\n".join(ast.unparse(n) for n in ast.walk(tree)
                     if isinstance(n, ast.Import) or (isinstance(n, ast.ImportFrom) and not n.level))


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


class Sandbox:
    def __init__(self, limits: Limits | None = None, concurrency: int = 8, namespaces: bool = True,
                 landlock: bool = True, audit: bool = True, tmp_root: str | None = None, seccomp: bool = True):
        """namespaces/landlock/audit/seccomp switch layers off; only tests of the other layers should."""
        self.limits = limits or Limits()
        self.namespaces, self.landlock, self.audit, self.seccomp = namespaces, landlock, audit, seccomp
        self.tmp_root = tmp_root
        # Programs run from inside a workflow's operator call (Programmer, Test) get their own slots:
        # sharing one pool lets waiting workflows hold every slot and deadlock their own programs.
        self._sem = asyncio.Semaphore(concurrency)
        self._program_sem = asyncio.Semaphore(concurrency)

    def _clone(self) -> "Sandbox":
        return Sandbox(self.limits, 1, self.namespaces, self.landlock, self.audit, self.tmp_root, self.seccomp)

    async def run_workflow(self, source: str, attrs: dict[str, str], methods: list[str],
                           handler: CallHandler, timeout_s: float | None = None) -> RunResult:
        header = {"mode": "workflow", "source": source, "attrs": attrs, "methods": methods}
        return await self._run(header, handler, timeout_s)

    async def run_program(self, source: str, timeout_s: float | None = None,
                          allow_imports: list[str] | None = None) -> RunResult:
        header = {"mode": "program", "source": source, "allow_imports": allow_imports}
        return await self._run(header, None, timeout_s)

    async def run_solution(self, source: str, tests: str, entry_point: str,
                           timeout_s: float | None = None) -> RunResult:
        """Runs a candidate solution, then `tests` (which may define `check(candidate)`, or assert on
        `entry_point` directly). `passed` is True only if the harness, after the tests, says so
        with this run's nonce; an early exit, a printed marker or a forged message never passes."""
        header = {"mode": "solution", "source": source, "tests": tests, "entry_point": entry_point,
                  "test_imports": imports_of(tests)}
        result = await self._run(header, None, timeout_s)
        if result.passed is None:
            result.passed = False
        return result

    def run_program_sync(self, source: str, timeout_s: float | None = None,
                         allow_imports: list[str] | None = None) -> RunResult:
        """For synchronous callers (scorers running in worker threads)."""
        return asyncio.run(self._clone().run_program(source, timeout_s, allow_imports))

    def run_solution_sync(self, source: str, tests: str, entry_point: str,
                          timeout_s: float | None = None) -> RunResult:
        return asyncio.run(self._clone().run_solution(source, tests, entry_point, timeout_s))

    def _isolation(self, workdir: str) -> dict:
        """The first stage's layers."""
        iso: dict[str, Any] = {"namespaces": self.namespaces, "landlock": self.landlock, "seccomp": self.seccomp,
                               "rules": [list(r) for r in read_rules()]}
        if LINUX and os.geteuid() == 0:
            uid = 1_000_000_000 + secrets.randbelow(1_000_000_000)  # fresh per run: RLIMIT_NPROC is per uid
            os.chown(workdir, uid, uid)
            iso.update(uid=uid, keep_read=not _stdlib_world_readable())
        return iso

    async def _run(self, header: dict, handler: CallHandler | None, timeout_s: float | None) -> RunResult:
        lim = self.limits
        budget = timeout_s if timeout_s is not None else lim.timeout_s
        nonce = secrets.token_hex(16)
        limits = {"memory_mb": lim.memory_mb, "cpu_s": lim.cpu_s, "fsize_mb": lim.fsize_mb,
                  "nproc": lim.nproc, "max_output_chars": lim.max_output_chars}
        header.update(limits=limits, audit=self.audit, read_roots=list(read_roots()), nonce=nonce)
        async with (self._sem if header["mode"] == "workflow" else self._program_sem):
            workdir = tempfile.mkdtemp(prefix="scoreflow-sbx-", dir=self.tmp_root)
            iso = self._isolation(workdir)
            first = {"isolation": iso, "limits": limits, "executable": os.path.realpath(sys.executable)}
            t0 = time.monotonic()
            run = _Run(nonce, iso.get("uid"))
            try:
                run.proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", "-S", "-B", CONFINE,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL, cwd=workdir, env=scrubbed_env(workdir),
                    start_new_session=True, limit=8 * lim.max_output_chars + (1 << 16),
                )
                for part in (first, header):  # the first stage reads its header, the second stage the other
                    data = json.dumps(part).encode()
                    run.proc.stdin.write(b"%010d" % len(data) + data)
                await run.proc.stdin.drain()
                if handler is None:
                    run.proc.stdin.close()
                result = await self._converse(run, handler, budget, t0)
            finally:
                await run.kill()
                await _remove(workdir)
            result.seconds = time.monotonic() - t0
            return result

    async def _converse(self, run: "_Run", handler: CallHandler | None, budget: float, t0: float) -> RunResult:
        proc = run.proc
        calls: set[asyncio.Task] = set()
        ncalls = 0
        waited = 0.0  # time with an executor call outstanding: not charged to the code
        wait_start = None
        hard_deadline = t0 + max(budget * 20, 600.0)
        first = True
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
                    if isinstance(exc, (InfraError, StopRun)):  # the run stops; not the workflow's fault
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
                    if rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
                        why = "CPU time limit exceeded"
                    elif rc == -signal.SIGKILL:  # PID 1 of a namespace ignores SIGXCPU: the hard limit kills
                        why = "SIGKILL: CPU time limit exceeded or out of memory"
                    return RunResult("crashed", error=f"process died ({why})", calls=ncalls)
                msg = protocol.decode(line)
                if isinstance(msg, protocol.Malformed):
                    return RunResult("crashed", error=f"{msg.reason} from the sandbox", calls=ncalls)
                kind = msg["type"]
                if first and kind == "pid":
                    run.adopt(msg["pid"])
                elif kind == "done":
                    if not secrets.compare_digest(msg["nonce"].encode(), run.nonce.encode()):
                        return RunResult("crashed", error="forged verdict from the sandbox", calls=ncalls)
                    status = msg["status"] if msg["status"] in ("ok", "error") else "error"
                    return RunResult(status, msg.get("output"), msg.get("error"), msg.get("stdout") or "",
                                     calls=ncalls, passed=msg.get("passed") if status == "ok" else False,
                                     layers=tuple(msg.get("layers") or ()))
                elif kind == "call" and handler is not None:
                    ncalls += 1
                    if ncalls > self.limits.max_calls:
                        return RunResult("error", error=f"more than {self.limits.max_calls} operator calls",
                                         calls=ncalls)
                    calls.add(asyncio.ensure_future(self._answer(proc, handler, msg)))
                else:
                    return RunResult("crashed", error=f"unexpected message from the sandbox: {kind[:40]}",
                                     calls=ncalls)
                first = False
                reader = asyncio.ensure_future(proc.stdout.readline())
        finally:
            reader.cancel()
            for task in calls:
                task.cancel()

    async def _answer(self, proc, handler: CallHandler, msg: dict) -> None:
        try:
            value = await handler(msg["method"], msg.get("args") or [], msg.get("kwargs") or {})
            reply = {"type": "reply", "id": msg.get("id"), "ok": True, "value": value}
        except (InfraError, StopRun):
            raise
        except Exception as e:  # a bad operator call is the workflow's failure
            reply = {"type": "reply", "id": msg.get("id"), "ok": False, "error": f"{type(e).__name__}: {e}"}
        try:
            proc.stdin.write((json.dumps(reply) + "\n").encode())
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            pass


class _Run:
    """One child and everything it may have started; kill() leaves nothing behind."""

    def __init__(self, nonce: str, uid: int | None):
        self.nonce, self.uid = nonce, uid
        self.proc: asyncio.subprocess.Process | None = None
        self.pidfd: int | None = None

    def adopt(self, pid: Any) -> None:
        """The init process of the run's PID namespace: accepted only if it is our child's child."""
        if self.proc is None or not isinstance(pid, int) or not 1 < pid <= PID_MAX or not hasattr(os, "pidfd_open"):
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        if _ppid(pid) == self.proc.pid:
            self.pidfd = fd
        else:
            os.close(fd)

    async def kill(self) -> None:
        if self.pidfd is not None:  # the namespace's init: the kernel then kills all of the namespace
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except OSError:
                pass
            os.close(self.pidfd)
        proc = self.proc
        if proc is None:
            return
        for target in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        if self.pidfd is None and LINUX:
            _kill_strays(self.uid, proc.pid)
        try:  # drains and closes the pipes too, so no transport outlives its event loop
            await asyncio.wait_for(proc.communicate(), 5)
        except (asyncio.TimeoutError, OSError, ValueError, RuntimeError):
            pass


async def _remove(workdir: str) -> None:
    """Removes a run's folder; never raises (what cannot be removed is logged)."""
    try:
        removal = await asyncio.to_thread(remove_tree, workdir)
    except Exception as e:  # noqa: BLE001  (a cleanup failure must not end the caller's run)
        log.warning("sandbox: could not clean up %s: %s: %s", workdir, type(e).__name__, e)
        return
    if not removal.ok:
        log.warning("sandbox: left behind in %s: %s", workdir, removal.summary())


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _kill_strays(uid: int | None, root_pid: int) -> None:
    """Without a PID namespace: kill every process of the run's uid (root) or still descending
    from the child, until none is left."""
    for _ in range(50):
        found = []
        parents: dict[int, int] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                st = os.stat(f"/proc/{pid}")
            except OSError:
                continue
            if uid is not None and st.st_uid == uid:
                found.append(pid)
            else:
                pp = _ppid(pid)
                if pp is not None:
                    parents[pid] = pp
        if uid is None:
            tree = {root_pid}
            changed = True
            while changed:
                changed = False
                for pid, pp in parents.items():
                    if pp in tree and pid not in tree:
                        tree.add(pid)
                        changed = True
            found = [p for p in tree if p != root_pid]
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
