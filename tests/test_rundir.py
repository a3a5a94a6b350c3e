"""The run directory: records survive a crash in the middle of a write; runs written before the typed
records still read, report and resume."""

import json
import shutil
from pathlib import Path

import pytest

from scoreflow import records
from scoreflow.run.rundir import RunDir, load_run
from scoreflow.files import read_jsonl


def test_partial_last_line_is_cut_before_appending(tmp_path):
    run = RunDir(tmp_path)
    run["executions"].append({"k": 1})
    run.close()
    with open(tmp_path / "executions.jsonl", "a") as f:
        f.write('{"k": 2, "cut sho')  # a kill -9 in the middle of a write
    assert [r["k"] for r in read_jsonl(tmp_path / "executions.jsonl")] == [1]
    run = RunDir(tmp_path)
    run["executions"].append({"k": 3})
    assert [r.extra["k"] for r in run["executions"].all()] == [1, 3]
    lines = (tmp_path / "executions.jsonl").read_text().splitlines()
    assert [json.loads(x)["k"] for x in lines] == [1, 3]


def test_status_and_latest_adapter(tmp_path):
    run = RunDir(tmp_path)
    assert run.latest_adapter() is None
    for i in (1, 2, 10):
        run.adapter_dir(i).mkdir(parents=True)
    assert run.latest_adapter()[0] == 10
    run.set_status("stopped", "spend cap reached")
    assert run.status()["status"] == "stopped"
    assert not list(tmp_path.glob(".*tmp*"))


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    from scoreflow.files import atomic_dir

    target = tmp_path / "adapters" / "iter-1"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("crash while writing")
    assert (target / "a.txt").read_text() == "one"  # the old folder is untouched
    with atomic_dir(target) as d:
        (d / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced whole, not merged
    assert [p.name for p in target.parent.iterdir()] == ["iter-1"]  # no temporary left behind


# ---- a run directory as the version before typed records wrote it ----------------------------------
# tests/old_run: `scoreflow optimize` of that version (one iteration, run.compare on) on the scripted
# backend; its records still carry the old names (evaluations.jsonl, test_evaluations.jsonl).

OLD_RUN = Path(__file__).parent / "old_run"


def _old_run(tmp_path: Path) -> Path:
    from fake_backend import write_task

    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    (tmp_path / "data").mkdir()
    write_task(tmp_path / "data")
    cfg = run / "config.toml"
    cfg.write_text(cfg.read_text().replace("@DATA@", str(tmp_path / "data" / "qa.jsonl")))
    return run


def test_every_old_record_reads_typed_and_writes_back_the_same():
    run = RunDir(OLD_RUN)
    for name, old in (("workflows", "workflows"), ("executions", "evaluations"), ("pairs", "pairs"),
                      ("train", "train"), ("metrics", "metrics"), ("test_workflows", "test_workflows"),
                      ("test_executions", "test_evaluations")):
        lines = list(read_jsonl(OLD_RUN / f"{old}.jsonl"))
        typed = run.read(name)
        assert lines and [r.to_json() for r in typed] == lines, name
        assert [type(r).from_json(r.to_json()) for r in typed] == typed
    kinds = [type(m) for m in run.read("metrics")]
    assert kinds == [records.TestMetrics, records.IterationMetrics, records.TestMetrics, records.Comparison]
    assert not (OLD_RUN / "executions.jsonl").exists()  # reading renames nothing


def test_an_old_run_reports_and_shows(tmp_path):
    from scoreflow.report.report import markdown
    from scoreflow.report.show import _pick

    data = load_run(_old_run(tmp_path))
    assert [m.iteration for m in data.iterations] == [1] and [m.iteration for m in data.tests] == [0, 1]
    assert len(data.executions) == 4 and data.workflow_scores(1)
    assert data.comparison is not None and data.comparison.trained == 1
    md = markdown([data])
    assert "| 1 | 4/4 |" in md and "Trained − base" in md
    assert _pick(data.workflows, "0", None) == (0, 1)


def test_an_old_run_resumes(tmp_path, monkeypatch):
    from fake_backend import FakeBackend

    from scoreflow.cli import main as cli

    run = _old_run(tmp_path)
    old_execs = (run / "evaluations.jsonl").read_text()
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: FakeBackend())
    assert cli.main(["optimize", "--resume", "--run-dir", str(run), "--iterations", "2", "--no-dashboard"]) == 0
    assert not (run / "evaluations.jsonl").exists() and not (run / "test_evaluations.jsonl").exists()
    assert (run / "executions.jsonl").read_text().startswith(old_execs)  # renamed, then appended to
    data = load_run(run)
    assert [m.iteration for m in data.iterations] == [1, 2]
    assert {e.iteration for e in data.executions} == {1, 2}
    assert [m.iteration for m in data.tests] == [0, 1, 2]
    assert (data.comparison.base, data.comparison.trained) == (0, 2)
    assert data.status["status"] == "finished" and sorted(RunDir(run).adapters()) == [1, 2]
