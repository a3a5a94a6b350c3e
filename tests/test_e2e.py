"""The whole loop on the real embedded SmolLM2 model: a two-iteration run, kill -9 and --resume,
and single workflows through `run-workflow`. Small sizes so that it fits 2 CPU cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# A custom JSON Lines task scored by token F1, so that executor replies get graded (not all-or-nothing)
# scores and pairs form even with a 135M-parameter executor.
QUESTIONS = [
    ("Name the colour of a clear daytime sky.", "blue"),
    ("What do bees make?", "honey"),
    ("What is frozen water called?", "ice"),
    ("Which animal says meow?", "cat"),
]
SMALL = ["--problems", "2", "-k", "3", "--pairs", "4", "--set", "generator.max_new_tokens=160",
         "--set", "executor.max_tokens=40", "--set", "generator.max_attempts=2", "--set", "run.compare=false",
         "--no-dashboard"]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    e.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="2")
    return e


@pytest.fixture
def qa_task(tmp_path) -> list[str]:
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n"
                            for i, (q, a) in enumerate(QUESTIONS * 3)))
    cfg = tmp_path / "task.toml"
    cfg.write_text('[task]\nscorer = "f1"\nfamily = "qa"\ndescription = "short general-knowledge questions"\n')
    return ["--task", "jsonl", "--data", str(data), "--config", str(cfg)]


def optimize(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scoreflow", "optimize", *args], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def records(run: Path, name: str) -> list[dict]:
    p = run / f"{name}.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.is_file() else []


def check_complete(run: Path, iterations: int) -> None:
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


def test_optimize_two_iterations(tmp_path, qa_task):
    run = tmp_path / "run"
    proc = optimize(*qa_task, *SMALL, "--iterations", "2", "--run-dir", str(run), cwd=tmp_path)
    out, _ = proc.communicate(timeout=1500)
    assert proc.returncode == 0, out[-3000:]
    check_complete(run, 2)
    for it in (1, 2):
        line = next(ln for ln in out.splitlines() if f"iteration {it} done" in ln)
        assert "valid" in line and ("mean score" in line or "no valid workflow" in line), line
    metrics = records(run, "metrics")
    assert all(0 <= m["valid_rate"] <= 1 and 0 <= m["mean_score"] <= 1 for m in metrics)
    rejected = [r for r in records(run, "workflows") if not r["valid"]]
    assert all(r["reason"] for r in rejected)
    weights = list((run / "adapters" / "iter-2").glob("*.safetensors"))
    assert weights, "no adapter weights saved"
    if sum(m["pairs"] for m in metrics):  # graded F1 scores: pairs nearly always form
        train = records(run, "train")
        assert all(t["loss"] > 0 for t in train)
    config = (run / "config.toml").read_text()
    assert 'task = "jsonl"' in config and "api_key =" not in config


def test_demo_preset_trains_and_compares_with_the_base_generator(tmp_path):
    """The README's main command at smaller test sizes: the demo preset's settings (hidden numbers,
    one attempt, valid-but-wrong above invalid) form pairs and take optimiser steps on arith, and the
    run ends by printing the held-out comparison of the trained and the base generator."""
    run = tmp_path / "run"
    proc = optimize("--iterations", "1", "--test-problems", "6", "--run-dir", str(run), "--no-dashboard", cwd=tmp_path)
    out, _ = proc.communicate(timeout=1500)
    assert proc.returncode == 0, out[-3000:]
    metrics = records(run, "metrics")
    it = next(m for m in metrics if m["kind"] == "iteration")
    assert it["pairs"] > 0 and it["steps"] > 0, it
    steps = [r for r in records(run, "train") if r["iteration"] == 1]
    assert len(steps) == it["steps"] and all(r["loss"] > 0 for r in steps)
    evaluated = sorted(m["iteration"] for m in metrics if m["kind"] == "evaluate")
    assert evaluated == [0, 1]
    compared = next(m for m in metrics if m["kind"] == "compare")
    assert compared["problems"] == 6
    d = compared["difference"]
    assert d["low"] <= d["value"] <= d["high"]
    assert abs(d["value"] - (compared["trained_solve_rate"] - compared["base_solve_rate"])) < 1e-9
    last = out.strip().splitlines()[-1]
    assert "trained vs base" in last and "95% CI" in last, last
    # no solved workflow, in training or on the test split, holds the gold answer in its source
    from scoreflow.tasks.arith import ArithTask
    from scoreflow.execute.workflow import gold_in_source

    test = ArithTask().problems("test")
    sources = {(r["iteration"], r["problem"]): r for r in records(run, "test_workflows") if r["valid"]}
    for e in records(run, "test_executions"):
        if e["score"] > 0:
            w = sources[(e["iteration"], e["problem"])]
            problem = next(p for p in test if p.id == w["problem_id"])
            assert not gold_in_source(w["source"], problem.answer), w["source"]


def test_kill_during_evaluation_then_resume(tmp_path, qa_task):
    run = tmp_path / "run"
    args = [*qa_task, *SMALL, "--iterations", "1", "--run-dir", str(run)]
    proc = optimize(*args, cwd=tmp_path)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None and not records(run, "executions"):
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before any evaluation was recorded"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = records(run, "executions")
    assert before
    proc = optimize(*args, "--resume", cwd=tmp_path)
    out, _ = proc.communicate(timeout=1500)
    assert proc.returncode == 0, out[-3000:]
    check_complete(run, 1)
    after = records(run, "executions")
    assert after[: len(before)] == before  # nothing recorded before the kill was redone or lost


def run_workflow(tmp_path: Path, source: str, *extra: str) -> dict:
    wf = tmp_path / "wf.py"
    wf.write_text(source)
    res = subprocess.run([sys.executable, "-m", "scoreflow", "run-workflow", "--workflow", str(wf),
                          "--set", "executor.max_tokens=24", "--set", "sandbox.timeout_s=3", *extra],
                         cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_run_workflow_verdicts(tmp_path):
    bad = run_workflow(tmp_path, "async def run_workflow(self):\n    import os\n    return os.getcwd()\n")
    assert bad["status"] == "rejected" and "import" in bad["reason"] and bad["score"] == 0
    opened = run_workflow(tmp_path, "async def run_workflow(self):\n    return open('/etc/passwd').read()\n")
    assert opened["status"] == "rejected" and opened["score"] == 0
    dunder = run_workflow(tmp_path, "async def run_workflow(self):\n    return self.__class__.__name__\n")
    assert dunder["status"] == "rejected"
    loop = run_workflow(tmp_path, "async def run_workflow(self):\n    x = await self.custom(input=self.problem, "
                        "instruction='Solve it.')\n    while True:\n        x = x + ''\n    return x\n")
    assert loop["status"] == "timeout" and loop["score"] == 0, loop
    ok = run_workflow(tmp_path, "async def run_workflow(self):\n    return await self.programmer(problem=self.problem)\n",
                      "--index", "3")
    assert ok["status"] == "ok" and ok["executor_calls"] >= 1 and ok["score"] in (0.0, 1.0), ok


def test_kill_at_random_points_then_resume(tmp_path, qa_task):
    """kill -9 at 10 random moments of a two-iteration run; every resume picks up where the last
    left off and the finished run has every record exactly once."""
    import random

    rng = random.Random(7)
    run = tmp_path / "run"
    args = [*qa_task, *SMALL, "--iterations", "2", "--set", "train.checkpoint_every=1", "--run-dir", str(run)]
    stages, kills = [], 0
    log = tmp_path / "log.txt"
    while True:
        extra = ["--resume"] if (run / "config.toml").is_file() else []
        with open(log, "a") as out:
            proc = subprocess.Popen([sys.executable, "-m", "scoreflow", "optimize", *args, *extra], cwd=tmp_path,
                                    env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            if kills < 10:
                try:
                    proc.wait(timeout=rng.uniform(8, 30))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    kills += 1
                    import re

                    found = re.findall(r"iteration \d+/\d+ \S (\w+)", log.read_text())
                    stages.append(found[-1] if found else "loading")
                    continue
            else:
                proc.wait(timeout=1800)
        assert proc.returncode == 0, log.read_text()[-3000:]
        break
    assert kills == 10
    check_complete(run, 2)
    print("stages killed in:", stages)


@pytest.mark.mlx
def test_optimize_with_the_mlx_backend(tmp_path, qa_task):
    import importlib.util

    # find_spec, not importorskip: importing mlx here would defeat the OpenBLAS preload of the MLX tests
    if importlib.util.find_spec("mlx_lm") is None:
        pytest.skip("the mlx extra is not installed")
    run = tmp_path / "run"
    proc = optimize(*qa_task, *SMALL, "--backend", "mlx", "--iterations", "1", "--run-dir", str(run), cwd=tmp_path)
    out, _ = proc.communicate(timeout=1500)
    assert proc.returncode == 0, out[-3000:]
    assert "backend mlx" in out
    check_complete(run, 1)
    adapter = run / "adapters" / "iter-1"
    assert (adapter / "adapters.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    exported = subprocess.run([sys.executable, "-m", "scoreflow", "export", str(run), "--to", "peft"], cwd=tmp_path,
                              env=env(), capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    assert (Path(exported.stdout.strip()) / "adapter_model.safetensors").is_file()


def test_openai_executor_spend_cap_resume_and_no_secret_leaks(tmp_path, qa_task):
    """The executor is an OpenAI-compatible server on 127.0.0.1; a token cap stops the run cleanly,
    --resume with a raised cap finishes it, and the API key appears nowhere in the run or its output."""
    from tests.fake_openai import FakeOpenAI

    secret = "sk-scoreflow-test-0123456789abcdef"
    run = tmp_path / "run"
    with FakeOpenAI() as server:
        common = [*qa_task, *SMALL, "--iterations", "1", "--executor", "openai", "--base-url", server.base_url,
                  "--executor-model", "gpt-4o-mini", "--api-key-env", "SCOREFLOW_TEST_KEY", "--run-dir", str(run)]
        e = {**env(), "SCOREFLOW_TEST_KEY": secret}
        first = subprocess.run([sys.executable, "-m", "scoreflow", "optimize", *common, "--max-tokens", "60"],
                               cwd=tmp_path, env=e, capture_output=True, text=True, timeout=1500)
        assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "stopped" and "cap" in status["reason"], status
        assert server.requests and all(r["model"] == "gpt-4o-mini" for r in server.requests)
        second = subprocess.run([sys.executable, "-m", "scoreflow", "optimize", *common, "--resume",
                                 "--max-tokens", "100000"], cwd=tmp_path, env=e, capture_output=True, text=True,
                                timeout=1500)
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    check_complete(run, 1)
    for out in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert secret not in out and secret[:12] not in out
    for f in run.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert secret.encode() not in data and secret[:12].encode() not in data, f"the key leaked into {f}"
