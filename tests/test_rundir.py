"""Records survive a crash in the middle of a write."""

import json

import pytest

from scoreflow.rundir import RunDir, read_jsonl


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
    from scoreflow.rundir import atomic_dir

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
