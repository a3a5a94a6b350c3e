"""The adversarial corpus (tests/hostile/): every hostile workflow and solution must fail without
its attack succeeding. Around the whole corpus: a fake dataset with a secret answer that must never
be read, a fake API key in this process's environment that must appear in no output, a folder
outside the sandbox whose contents must not change, a listening socket on 127.0.0.1 that must
receive no connection, no sandbox process left alive afterwards, and a benign run after every case
that still works. Statically rejected workflows are also run unfiltered (defense in depth)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from scoreflow.sandbox.parent import Limits, RunResult, Sandbox
from scoreflow.execute.workflow import check

HERE = Path(__file__).parent / "hostile"
REPO = Path(__file__).resolve().parents[1]
SECRET_KEY = "sk-hostile-SECRET-5521-do-not-leak"
SECRET_ANSWER = "SECRET-ANSWER-7719"
OPERATORS = ("Custom",)
TESTS = ("import re\ndef check(candidate):\n    assert abs(candidate(2, 3) - 5) < 1e-9\n"
         "    assert re.fullmatch('6', str(candidate(10, -4)))\n")
GOOD = "def add(a, b):\n    return a + b\n"
LIMITS = Limits(timeout_s=2.0, memory_mb=512, cpu_s=3, fsize_mb=8, nproc=32, max_output_chars=4000, max_calls=50)


@dataclass
class Case:
    path: Path
    kind: str  # workflow | solution
    attempts: str
    expect: str  # rejected | failed | (solutions) fail


def load(kind: str) -> list[Case]:
    cases = []
    for p in sorted((HERE / f"{kind}s").glob("*.py")):
        head = dict(line[2:].split(": ", 1) for line in p.read_text().splitlines()[:3] if line.startswith("# ")
                    and ": " in line)
        cases.append(Case(p, kind, head.get("attempts", ""), head.get("expect", "fail")))
    return cases


WORKFLOWS, SOLUTIONS = load("workflow"), load("solution")


def test_corpus_size_and_headers():
    assert len(WORKFLOWS) >= 30 and len(SOLUTIONS) >= 15
    for c in WORKFLOWS + SOLUTIONS:
        assert c.attempts, f"{c.path.name} has no '# attempts:' header"
    assert {c.expect for c in WORKFLOWS} <= {"rejected", "failed"}


class Listener:
    """Counts connections to a port on 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.accepted += 1
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def sandbox_processes(root: Path) -> list[int]:
    """Live processes whose working directory is under `root` (every sandboxed process's is)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cwd = os.readlink(f"/proc/{name}/cwd")
            except OSError:
                continue
            if cwd.startswith(str(root)):
                found.append(int(name))
    return found


@pytest.fixture
def world(tmp_path, monkeypatch):
    data = tmp_path / "shared" / "data"
    data.mkdir(parents=True)
    dataset = data / "arith_test.jsonl"
    dataset.write_text('{"question": "What is 2+3?", "answer": "%s"}\n' % SECRET_ANSWER)
    old = time.time() - 10 * 86400
    os.utime(dataset, (old - 3600, old))  # atime before mtime: any read moves atime (relatime)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel.txt").write_text("untouched")
    sbx_root = tmp_path / "sbx"
    sbx_root.mkdir()
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    listener = Listener()
    subs = {"@DATASET@": str(dataset), "@DATADIR@": str(data), "@OUTSIDE@": str(outside), "@REPO@": str(REPO),
            "@PORT@": str(listener.port), "@PARENT_PID@": str(os.getpid())}
    yield dict(dataset=dataset, outside=outside, sbx_root=sbx_root, listener=listener, subs=subs)
    listener.close()


def render(text: str, subs: dict[str, str]) -> str:
    for k, v in subs.items():
        text = text.replace(k, v)
    return text


async def handler(method: str, args: list, kwargs: dict) -> str:
    return f"model reply to {method}: {str(args)[:80]}"


def texts(r: RunResult) -> str:
    return "\n".join(x or "" for x in (r.output, r.error, r.stdout))


def test_hostile_corpus(world):
    sb = Sandbox(LIMITS, concurrency=4, tmp_root=str(world["sbx_root"]))
    before = snapshot(world["outside"])
    atime0 = world["dataset"].stat().st_atime
    failures: list[str] = []
    results: dict[str, str] = {}

    async def after(name: str) -> None:
        ok = await sb.run_solution(GOOD, TESTS, "add")
        if not (ok.status == "ok" and ok.passed is True):
            failures.append(f"{name}: the next run did not work ({ok.status}: {ok.error})")

    async def workflow(case: Case) -> None:
        src = render(case.path.read_text(), world["subs"])
        verdict = check(src, OPERATORS, "", None)
        name = case.path.name
        if case.expect == "rejected" and verdict.ok:
            failures.append(f"{name}: not rejected statically")
        if case.expect == "failed" and not verdict.ok:
            failures.append(f"{name}: rejected statically ({verdict.reason}), expected a runtime failure")
        r = await sb.run_workflow(src, {"problem": "What is 2+3?"}, ["custom"], handler)
        results[name] = f"static={'ok' if verdict.ok else 'rejected'} run={r.status}"
        if verdict.ok and r.status == "ok":
            failures.append(f"{name}: ran to 'ok' ({(r.output or '')[:80]!r})")
        leak(name, r)
        await after(name)

    async def solution(case: Case) -> None:
        src = render(case.path.read_text(), world["subs"])
        r = await sb.run_solution(src, TESTS, "add")
        name = case.path.name
        results[name] = f"run={r.status} passed={r.passed}"
        if r.passed is not False or r.status == "ok":
            failures.append(f"{name}: reported {r.status}, passed={r.passed}")
        leak(name, r)
        await after(name)

    def leak(name: str, r: RunResult) -> None:
        t = texts(r)
        if SECRET_KEY in t or "do-not-leak" in t.lower():
            failures.append(f"{name}: the API key appeared in its output")
        if SECRET_ANSWER in t:
            failures.append(f"{name}: the dataset's answer appeared in its output")

    async def main() -> None:
        gate = asyncio.Semaphore(4)

        async def one(case: Case) -> None:
            async with gate:
                await (workflow(case) if case.kind == "workflow" else solution(case))

        await asyncio.gather(*(one(c) for c in WORKFLOWS + SOLUTIONS))

    t0 = time.monotonic()
    asyncio.run(main())
    elapsed = time.monotonic() - t0
    time.sleep(0.3)
    survivors = sandbox_processes(world["sbx_root"])
    for line in sorted(results.items()):
        print(*line)
    print(f"{len(results)} cases in {elapsed:.1f}s")

    assert not failures, "\n".join(failures)
    assert len(results) == len(WORKFLOWS) + len(SOLUTIONS)
    assert not survivors, f"sandbox processes still alive: {survivors}"
    assert list(world["sbx_root"].iterdir()) == [], "temporary directories were left behind"
    assert snapshot(world["outside"]) == before, "a file outside the sandbox changed"
    assert not (REPO / "hostile-canary.txt").exists() and not Path("/tmp/hostile-canary.txt").exists()
    assert world["listener"].accepted == 0, "a sandboxed process connected to 127.0.0.1"
    assert world["dataset"].stat().st_atime == atime0, "the dataset file was read"

    # Positive controls: each check above can fail.
    with socket.create_connection(("127.0.0.1", world["listener"].port)):
        pass
    deadline = time.monotonic() + 2
    while world["listener"].accepted == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert world["listener"].accepted == 1
    world["dataset"].read_text()
    if world["dataset"].stat().st_atime == atime0:
        pytest.fail("this filesystem does not update atime: the 'never read' check above proved nothing")


def test_survivor_scan_sees_a_live_run(world):
    """The check that nothing survives would catch a process that did."""
    sb = Sandbox(LIMITS, tmp_root=str(world["sbx_root"]))

    async def main() -> tuple[list[int], RunResult]:
        task = asyncio.ensure_future(sb.run_program("while True:\n    pass\n", timeout_s=1.5))
        await asyncio.sleep(0.6)
        seen = sandbox_processes(world["sbx_root"])
        return seen, await task

    seen, r = asyncio.run(main())
    assert seen and r.status == "timeout"
    time.sleep(0.2)
    assert sandbox_processes(world["sbx_root"]) == []
