"""The sandbox's layers one by one: the verdict protocol, limits, timeouts, output caps, the
executor proxy, and (with the audit hook switched off) each OS layer on its own."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import pytest

from scoreflow.errors import StopRun
from scoreflow.errors import InfraError
from scoreflow.sandbox.parent import Limits, RunResult, Sandbox
from scoreflow.execute.workflow import check, static_check

LINUX = sys.platform.startswith("linux")
FAST = Limits(timeout_s=3.0, memory_mb=512, cpu_s=5, max_output_chars=2000)
ADD_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"


def run(coro):
    return asyncio.run(coro)


def program(code: str, **kw) -> RunResult:
    sb_kw = {k: kw.pop(k) for k in ("audit", "namespaces", "landlock", "tmp_root") if k in kw}
    return run(Sandbox(kw.pop("limits", FAST), **sb_kw).run_program(code, **kw))


async def echo(method: str, args: list, kwargs: dict) -> str:
    return f"{method}:{args[0] if args else ''}"


WF = "async def run_workflow(self):\n    r = await self.custom(self.problem, 'x')\n    return r['response'] + '!'\n"


# ---- the verdict ---------------------------------------------------------------------------------

def test_solution_passes_only_when_the_tests_ran():
    sb = Sandbox(FAST)
    good = run(sb.run_solution("def add(a, b):\n    return a + b\n", ADD_TESTS, "add"))
    bad = run(sb.run_solution("def add(a, b):\n    return a - b\n", ADD_TESTS, "add"))
    missing = run(sb.run_solution("def plus(a, b):\n    return a + b\n", ADD_TESTS, "add"))
    assert (good.status, good.passed) == ("ok", True)
    assert (bad.status, bad.passed) == ("error", False) and "AssertionError" in bad.error
    assert missing.passed is False and "add" in missing.error


def test_mbpp_style_asserts_on_the_entry_point():
    sb = Sandbox(FAST)
    r = run(sb.run_solution("def add(a, b):\n    return a + b\n", "assert add(1, 1) == 2\nassert add(0, 5) == 5\n", "add"))
    assert r.passed is True
    r = run(sb.run_solution("def add(a, b):\n    return 2\n", "assert add(1, 1) == 2\nassert add(0, 5) == 5\n", "add"))
    assert r.passed is False


def test_exit_code_zero_is_not_a_pass():
    for src in ("import os\nos._exit(0)\n", "def add(a, b):\n    import os\n    os._exit(0)\n"):
        r = run(Sandbox(FAST).run_solution(src, ADD_TESTS, "add"))
        assert r.status == "crashed" and r.passed is False, r


def test_forged_done_without_nonce_is_rejected():
    src = ("import os\nfor fd in range(3, 40):\n    try:\n"
           "        os.write(fd, b'{\"type\":\"done\",\"nonce\":\"guess\",\"status\":\"ok\",\"passed\":true}\\n')\n"
           "    except OSError:\n        pass\ndef add(a, b):\n    return a + b\n")
    r = run(Sandbox(FAST).run_solution(src, ADD_TESTS, "add"))
    assert r.status == "crashed" and "forged" in r.error and r.passed is False


def test_plain_values_are_required_from_candidates():
    src = "class E(list):\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return E()\n"
    r = run(Sandbox(FAST).run_solution(src, ADD_TESTS, "add"))
    assert r.passed is False and "plain builtin" in r.error
    nested = "def add(a, b):\n    return {'x': [1, (2, 3)], 'y': {4}}\n"
    tests = "def check(c):\n    assert c(0, 0) == {'x': [1, (2, 3)], 'y': {4}}\n"
    assert run(Sandbox(FAST).run_solution(nested, tests, "add")).passed is True


def test_monkeypatching_is_undone_before_the_tests():
    src = ("import builtins, math\nbuiltins.abs = lambda x: 0\nmath.isclose = lambda *a, **k: True\n"
           "def add(a, b):\n    return 0\n")
    tests = "import math\ndef check(c):\n    assert abs(c(2, 3) - 5) < 1e-9 or math.isclose(c(2, 3), 5)\n"
    assert run(Sandbox(FAST).run_solution(src, tests, "add")).passed is False


# ---- limits, timeouts, output ----------------------------------------------------------------------

def test_wall_clock_timeout_kills_the_run():
    t0 = time.monotonic()
    r = program("import time\ntime.sleep(60)\n", timeout_s=0.8)
    assert r.status == "timeout" and time.monotonic() - t0 < 3


def test_cpu_and_memory_limits():
    r = program("x = bytearray(4 * 1024 ** 3)\n")
    assert r.status == "error" and "MemoryError" in r.error
    r = program("while True:\n    pass\n", limits=Limits(timeout_s=10, cpu_s=1))
    assert r.status == "crashed" and "CPU time" in r.error


def test_output_is_capped():
    r = program("print('x' * 100000)\n")
    assert r.status == "ok" and len(r.stdout) == FAST.max_output_chars
    src = "async def run_workflow(self):\n    await self.custom('a', 'b')\n    return 'y' * 100000\n"
    r = run(Sandbox(FAST).run_workflow(src, {"problem": "p"}, ["custom"], echo))
    assert r.status == "error" and "size limit" in r.error


def test_programs_can_use_the_ordinary_standard_library():
    code = ("import collections, dataclasses, enum, typing, threading, math, re, heapq, fractions, random\n"
            "P = collections.namedtuple('P', 'a b')\n@dataclasses.dataclass\nclass D:\n    x: int\n"
            "class C(enum.Enum):\n    A = 1\nT = typing.TypeVar('T')\nout = []\n"
            "t = threading.Thread(target=lambda: out.append(1)); t.start(); t.join()\n"
            "open('scratch.txt', 'w').write('hi')\nprint(P(1, 2).b, D(3).x, C.A.value, out, open('scratch.txt').read())\n")
    r = program(code)
    assert (r.status, r.stdout.strip()) == ("ok", "2 3 1 [1] hi"), r.error


# ---- workflows and the executor proxy --------------------------------------------------------------

def test_workflow_calls_go_through_the_parent():
    r = run(Sandbox(FAST).run_workflow(WF, {"problem": "what"}, ["custom"], echo))
    assert (r.status, r.output, r.calls) == ("ok", "custom:what!", 1)


def test_executor_waits_are_not_charged_to_the_workflow():
    async def slow(method, args, kwargs):
        await asyncio.sleep(1.2)
        return "late"

    r = run(Sandbox(Limits(timeout_s=0.8)).run_workflow(WF, {"problem": "p"}, ["custom"], slow))
    assert r.status == "ok" and r.output == "late!"


def test_operator_errors_are_the_workflows_and_infra_or_caps_stop_the_run():
    async def failing(method, args, kwargs):
        raise ValueError("bad argument")

    r = run(Sandbox(FAST).run_workflow(WF, {"problem": "p"}, ["custom"], failing))
    assert r.status == "error" and "bad argument" in r.error
    for exc in (InfraError("server down"), StopRun("spend cap reached: test")):
        async def broken(method, args, kwargs, exc=exc):
            raise exc

        with pytest.raises(type(exc)):
            run(Sandbox(FAST).run_workflow(WF, {"problem": "p"}, ["custom"], broken))


def test_operator_call_count_is_capped():
    src = "async def run_workflow(self):\n    while True:\n        await self.custom('a', 'b')\n    return 'x'\n"
    r = run(Sandbox(Limits(max_calls=20)).run_workflow(src, {"problem": "p"}, ["custom"], echo))
    assert r.status == "error" and "operator calls" in r.error and r.calls == 21


def test_secret_in_parent_env_never_reaches_the_child(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-in-child-12345")
    code = ("import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ', 'rb').read())\n"
            f"print(open('/proc/{os.getpid()}/environ', 'rb').read())\n")
    for audit in (True, False):
        r = program(code, audit=audit)
        assert "sk-never-in-child" not in (r.stdout + (r.error or "")), (audit, r)


def test_concurrent_runs_and_the_next_run_after_a_crash():
    async def main():
        sb = Sandbox(FAST, concurrency=3)
        crash = sb.run_program("import os\nos._exit(3)\n")
        rest = [sb.run_program(f"print({i} * {i})") for i in range(5)]
        return await asyncio.gather(crash, *rest)

    crash, *rest = run(main())
    assert crash.status == "crashed" and "exit code 3" in crash.error
    assert [r.stdout.strip() for r in rest] == ["0", "1", "4", "9", "16"]


def test_overhead_per_run():
    """Spawn to verdict for a trivial program (printed: see docs/sandbox.md for the measurement)."""
    async def main():
        sb = Sandbox(FAST)
        await sb.run_program("pass")
        times = []
        for _ in range(15):
            r = await sb.run_program("print(1)")
            assert r.status == "ok"
            times.append(r.seconds)
        return times

    times = run(main())
    med = statistics.median(times) * 1000
    print(f"sandbox overhead: median {med:.1f} ms, min {min(times) * 1000:.1f} ms over {len(times)} runs")
    assert med < 250  # generous: shared CI machines; the quiet-machine figure is ~30-40 ms


# ---- the OS layers on their own (audit hook off) ---------------------------------------------------

needs_linux = pytest.mark.skipif(not LINUX, reason="namespaces and Landlock are Linux features")


def layers() -> tuple[str, ...]:
    return program("pass").layers


@needs_linux
def test_linux_layers_are_reported():
    got = layers()
    assert {"rlimits", "audit-hook", "scrubbed-env", "tmpdir"} <= set(got)
    print("layers on this machine:", got)
    if os.geteuid() == 0:
        assert {"netns", "pidns"} <= set(got) and any(x.startswith("uid") for x in got)


@needs_linux
def test_landlock_alone_blocks_files_and_tcp(tmp_path):
    if not any(x.startswith("landlock") for x in layers()):
        pytest.skip("this kernel offers no Landlock (reported by the sandbox)")
    secret = tmp_path / "answers.jsonl"
    secret.write_text("THE-ANSWER")
    outside = tmp_path / "out.txt"
    r = program(f"print(open({str(secret)!r}).read())", audit=False, namespaces=False)
    assert r.status == "error" and "Permission" in r.error and "THE-ANSWER" not in r.stdout
    r = program(f"open({str(outside)!r}, 'w').write('x')", audit=False, namespaces=False)
    assert r.status == "error" and not outside.exists()
    r = program("import os\nos.execv('/bin/sh', ['sh', '-c', 'true'])", audit=False, namespaces=False)
    assert r.status == "error" and "Permission" in r.error


@needs_linux
def test_no_network_without_the_audit_hook():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.1)
    port = srv.getsockname()[1]
    got = []

    def accept():
        end = time.monotonic() + 6
        while time.monotonic() < end:
            try:
                got.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('connected')"
    for kw in ({"audit": False}, {"audit": False, "landlock": False}, {"audit": False, "namespaces": False}):
        r = program(code, **kw)
        if kw.get("namespaces") is False and not any(x.startswith("landlock") and "tcp" in x for x in r.layers):
            continue  # neither netns nor Landlock TCP: nothing left to test in this combination
        assert r.status == "error" and "connected" not in r.stdout, (kw, r)
    t.join()
    srv.close()
    assert got == []


ESCAPE = """import os, signal, time
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
time.sleep(0.3)
print("spawned")
"""


def _alive_under(root: Path) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/cwd").startswith(str(root)):
                    out.append(int(name))
            except OSError:
                pass
    return out


@needs_linux
@pytest.mark.parametrize("namespaces", [True, False])
def test_setsid_and_sigterm_ignoring_descendants_do_not_survive(tmp_path, namespaces):
    r = program(ESCAPE, audit=False, namespaces=namespaces, tmp_root=str(tmp_path))
    assert r.status == "ok" and "spawned" in r.stdout
    time.sleep(0.3)
    left = _alive_under(tmp_path)
    if left and not namespaces and os.geteuid() != 0:
        pytest.xfail("documented gap: without namespaces or root, an orphaned setsid process can escape")
    assert left == [], f"survivors: {left}"


@needs_linux
def test_fork_bomb_is_bounded_by_nproc():
    if os.geteuid() != 0:
        pytest.skip("RLIMIT_NPROC is per uid: only a per-run uid (root) bounds it to the run")
    code = ("import os, time\nn = 0\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n"
            "        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nprint(n)\n")
    r = program(code, audit=False, limits=Limits(timeout_s=5, nproc=16))
    assert r.status == "ok" and 0 < int(r.stdout.strip()) < 16


@needs_linux
def test_segfault_is_a_crash_and_signals_stay_inside():
    # ctypes is unreachable in the sandbox even without the audit hook: a C stack overflow segfaults
    code = "t = ()\nfor _ in range(5 * 10 ** 5):\n    t = (t,)\nhash(t)\n"  # tuple hashing recurses in C unchecked
    r = program(code, audit=False, timeout_s=15)
    assert r.status == "crashed" and "SIGSEGV" in r.error, r
    r = program(f"import os\nos.kill({os.getpid()}, 9)\nprint('sent')\n", audit=False)
    assert r.status == "error" and "sent" not in r.stdout  # the parent (this test) is still alive


# ---- the static policy -----------------------------------------------------------------------------

@pytest.mark.parametrize("body, reason", [
    ("f = str.format\n    return await self.custom(f('{0}', self.problem), 'x')", "format"),
    ("g = (x for x in [1])\n    return await self.custom(str(g.gi_frame), 'x')", "gi_frame"),
    ("c = run_workflow(self)\n    return await self.custom('a', 'b')", "itself"),
    ("return await self.custom(str(type(self)), 'x')", "type"),
    ("return await self.custom(str(self.problem.mro), 'x')", "mro"),
    ("return await self.custom(str([].__class__), 'x')", "__class__"),
])
def test_static_policy_rejects(body, reason):
    c = static_check(f"async def run_workflow(self):\n    {body}\n", ("Custom",))
    assert not c.ok and reason in c.reason, c.reason


def test_static_policy_rejects_decorators_and_accepts_plain_workflows():
    assert not static_check("@print\n" + WF, ("Custom",)).ok
    assert check(WF, ("Custom",), "", None).ok


def test_threads_left_running_fail_the_run():
    code = "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), daemon=True).start()\nprint('hi')\n"
    r = program(code)
    assert r.status == "error" and "threads" in r.error
    joined = "import threading\nt = threading.Thread(target=print, args=('x',))\nt.start()\nt.join()\n"
    assert program(joined).status == "ok"


def test_sync_api_from_worker_threads():
    sb = Sandbox(FAST, concurrency=2)
    out: list[RunResult] = []

    def work(i: int) -> None:
        out.append(sb.run_solution_sync(f"def add(a, b):\n    return a + b + {i}\n", ADD_TESTS, "add"))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(r.passed for r in out) == [False, False, True]


def test_programs_started_by_waiting_workflows_do_not_deadlock():
    """Programmer-style operators run a program while their workflow holds a sandbox slot."""
    import asyncio as aio

    from scoreflow.sandbox.parent import Sandbox as SB

    async def main():
        sb = SB(concurrency=2)

        async def handler(method, args, kwargs):
            r = await sb.run_program("print(6 * 7)\n", timeout_s=10)
            return r.stdout.strip()

        src = "async def run_workflow(self):\n    return await self.custom(input='a', instruction='b')\n"
        return await aio.wait_for(aio.gather(*[sb.run_workflow(src, {"problem": "p"}, ["custom"], handler, timeout_s=20)
                                               for _ in range(6)]), 60)

    results = aio.run(main())
    assert [r.status for r in results] == ["ok"] * 6
    assert all(r.output == "42" for r in results)
