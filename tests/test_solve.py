"""`scoreflow solve` and the Python API: a run made with `api.optimize` (real loop, sandbox and
executor; the scripted backend of fake_backend.py), then `Solver` and the CLI on new problems; and
`solve` on the embedded SmolLM2 (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scoreflow.errors import UserError

from fake_backend import BAD, GOOD, FakeBackend, config
from scoreflow import api
from scoreflow.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: FakeBackend())
    result = api.optimize(config(tmp_path), tmp_path / "run")
    assert result.status == "finished"
    assert [m["kind"] for m in result.metrics] == ["iteration"] and result.metrics[0]["steps"] == 2
    assert (tmp_path / "run" / "adapters" / "iter-1").is_dir()
    return tmp_path / "run"


def test_solver_api(run):
    with api.Solver.from_run(run) as solver:
        assert solver.iteration == 1 and solver.backend.adapter == run / "adapters" / "iter-1"
        s = solver.solve("What do bees make?")
        assert (s.status, s.answer, s.workflow, s.attempts) == ("ok", "honey", GOOD, 1)
        assert s.executor_calls == 2 and s.score is None  # the custom call and the answer extraction
        scored = solver.solve("What is frozen water called?", answer="ice")  # a second event loop
        assert scored.workflow == BAD and scored.answer == "something, perhaps" and scored.score == 0.0
    with api.Solver.from_run(run, iteration=0) as base:
        assert base.iteration == 0 and base.backend.adapter is None


def test_optimize_api_refuses_a_used_directory_and_resumes(run):
    with pytest.raises(UserError, match="not empty"):
        api.optimize({"run": {"task": "arith"}}, run)
    again = api.optimize(None, run, resume=True)  # everything done: nothing is redone
    assert again.status == "finished" and len(again.metrics) == 1


def test_solve_cli_json_and_file(run, tmp_path, capsys):
    assert cli.main(["solve", str(run), "What is frozen water called?", "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    got = json.loads(line)
    assert got["answer"] == "ice" and got["workflow"] == GOOD and got["generator"] == "adapter of iteration 1"
    problems = tmp_path / "new.jsonl"
    problems.write_text(json.dumps({"id": "a", "question": "What is the capital of France?", "answer": "paris"})
                        + "\n" + json.dumps({"id": "b", "question": "Which animal says meow?"}) + "\n")
    assert cli.main(["solve", str(run), "--file", str(problems)]) == 0
    out = capsys.readouterr().out
    assert "problem a: What is the capital of France?\nanswer: paris\n" in out and "score 1" in out
    assert "problem b: Which animal says meow?\nanswer: something, perhaps" in out  # the second, vaguer workflow
    assert "workflow:\n    async def run_workflow(self):" in out


def test_solve_cli_errors(run, tmp_path, capsys):
    assert cli.main(["solve", str(tmp_path / "nothing"), "q"]) == 2
    assert "holds no run" in capsys.readouterr().err
    assert cli.main(["solve", str(run)]) == 2
    assert "give the question" in capsys.readouterr().err
    assert cli.main(["solve", str(run), "q", "--iteration", "7"]) == 2
    assert "no adapter for iteration 7" in capsys.readouterr().err


@pytest.mark.slow
def test_solve_with_the_embedded_model(demo_run, tmp_path):
    """The shared demo run (tests/runs.py): its adapter trained by the PyTorch backend on the embedded
    SmolLM2; `scoreflow solve` writes, validates and runs workflows with it as generator and executor
    (a 135M model: a valid workflow is likely within 4 attempts, not certain)."""
    pytest.importorskip("peft")
    run = demo_run.run_dir
    assert demo_run.rc == 0, demo_run.err[-3000:]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    res = subprocess.run([sys.executable, "-m", "scoreflow", "solve", str(run),
                          "Ava has 3 apples. Ava gets 4 more. How many apples does Ava have now?",
                          "--json", "--attempts", "4", "--set", "executor.max_tokens=48"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(got, indent=1))
    assert got["generator"] == "adapter of iteration 1" and 1 <= got["attempts"] <= 4
    assert len(got["rejected"]) == got["attempts"] - (got["workflow"] is not None)
    if got["workflow"] is None:
        assert got["status"] == "no valid workflow" and all(got["rejected"])
    else:
        assert "async def run_workflow(self)" in got["workflow"] and got["executor_calls"] >= 1
        assert got["status"] in ("ok", "timeout", "crashed", "error")
        assert got["status"] != "ok" or isinstance(got["answer"], str)


@pytest.mark.slow
def test_a_library_from_the_embedded_models_run_answers_without_the_generator(demo_run, tmp_path):
    """`export --library` on the shared demo run, then `solve --library`: the workflows the real
    generator wrote answer a new problem with the embedded model as executor, and no adapter loads."""
    run = demo_run.run_dir
    assert demo_run.rc == 0, demo_run.err[-3000:]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    lib = tmp_path / "lib"
    res = subprocess.run([sys.executable, "-m", "scoreflow", "export", str(run), "--library", "3", "--out", str(lib)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((lib / "library.json").read_text())
    assert manifest["workflows"] and all((lib / w["file"]).is_file() for w in manifest["workflows"])
    res = subprocess.run([sys.executable, "-m", "scoreflow", "solve", "--library", str(lib), "--json",
                          "Ava has 3 apples. Ava gets 4 more. How many apples does Ava have now?",
                          "--set", "executor.max_tokens=48"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["rank"] >= 1 and got["executor_calls"] >= 1 and got["status"] in ("ok", "timeout", "crashed", "error")
    assert got["generator"].startswith("none: library") and got["library"] == str(lib)
