"""`scoreflow export --library K` and `scoreflow solve --library DIR` (and `Solver.from_library`) on a
run made by the real loop, sandbox and executor (the scripted backend of fake_backend.py): the
library holds the ranked workflows with their manifest, and answers new problems with no generator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_backend import BAD, GOOD, FakeBackend, config
from fake_openai import FakeOpenAI
from scoreflow import api
from scoreflow.cli import main as cli
from scoreflow.errors import UserError


@pytest.fixture
def run(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: FakeBackend())
    assert api.optimize(config(tmp_path), tmp_path / "run").status == "finished"
    return tmp_path / "run"


@pytest.fixture
def library(run, tmp_path, capsys) -> Path:
    out = tmp_path / "lib"
    assert cli.main(["export", str(run), "--library", "5", "--out", str(out)]) == 0
    assert "2 workflow(s)" in capsys.readouterr().out  # K = 5, but the run has two distinct workflows
    return out


def test_export_library_ranks_by_validate_scores_with_a_manifest(library):
    manifest = json.loads((library / "library.json").read_text())
    assert manifest["split"] == "validate" and manifest["candidates"] == 2
    first, second = manifest["workflows"]
    assert (first["rank"], first["file"], first["score"], first["problems"]) == (1, "workflow-1.py", 1.0, 2)
    assert first["solved"] == sorted(first["scores"]) and len(first["solved"]) == 2
    assert (second["score"], second["solved"]) == (0.0, [])
    assert first["executor_calls_per_run"] == 2 and first["executor_tokens_per_run"] > 0
    assert first["cost_usd_per_run"] is None  # the local executor prices nothing
    assert GOOD in (library / "workflow-1.py").read_text() and BAD in (library / "workflow-2.py").read_text()
    assert (library / "config.toml").is_file()


def test_export_library_errors(run, tmp_path, capsys):
    assert cli.main(["export", str(run), "--library", "0", "--out", str(tmp_path / "x")]) == 2
    assert "at least 1" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert cli.main(["export", str(run), "--library", "1", "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_solve_library_with_a_remote_executor_loads_no_model(library, monkeypatch, capsys):
    def no_model(cfg):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("scoreflow.run.session.make_backend", no_model)
    monkeypatch.setenv("SCOREFLOW_TEST_KEY", "sk-test")
    with FakeOpenAI() as server:
        code = cli.main(["solve", "--library", str(library), "What do bees make?", "--json",
                         "--set", "executor.kind=openai", "--set", f"executor.base_url={server.base_url}",
                         "--set", "executor.model=gpt-4o-mini", "--set", "executor.api_key_env=SCOREFLOW_TEST_KEY"])
        assert code == 0
        assert server.requests  # the workflow's calls went to the server
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["generator"].startswith("none: library") and got["library"] == str(library)
    assert (got["status"], got["rank"], got["attempts"]) == ("ok", 1, 1) and GOOD in got["workflow"]
    assert got["answer"] and got["executor_calls"] == 2


def test_solver_from_library_never_uses_the_generator(library, monkeypatch):
    backends: list[FakeBackend] = []
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: backends.append(FakeBackend()) or backends[-1])
    with api.Solver.from_library(library) as solver:
        s = solver.solve("What do bees make?", answer="honey")
        assert (s.status, s.answer, s.score, s.rank, s.attempts) == ("ok", "honey", 1.0, 1, 1)
    with api.Solver.from_library(library, rule="vote") as solver:
        v = solver.solve("What is frozen water called?", answer="ice")
        # one vote each: the tie goes to the better-ranked workflow; both ran
        assert (v.answer, v.rank, v.attempts, v.executor_calls) == ("ice", 1, 2, 4)
    [local, voting] = backends  # the local executor's model, once per solver
    for b in (local, voting):
        assert b.generated == 0 and b.adapter is None and b.executor_calls > 0


def test_solve_library_falls_through_rank_order_and_refuses_bad_arguments(library, monkeypatch, capsys):
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: FakeBackend())
    broken = library / "workflow-1.py"
    broken.write_text("async def run_workflow(self):\n    return await self.nothing_here(self.problem)\n")
    with api.Solver.from_library(library) as solver:
        s = solver.solve("What do bees make?")
    assert (s.rank, s.attempts, s.answer) == (2, 2, "something, perhaps") and s.rejected[0].startswith("workflow 1")
    assert cli.main(["solve", "--library", str(library), "q", "--attempts", "2"]) == 2
    assert "no generator runs" in capsys.readouterr().err
    with pytest.raises(UserError, match="no workflow library"):
        api.Solver.from_library(library.parent)
