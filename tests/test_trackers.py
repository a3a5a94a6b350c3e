"""`optimize --report-to`: the real loop (scripted backend, real sandbox, executor and run directory)
through the CLI with all four trackers at once, offline, each read back with its own reader and
compared with what the run directory recorded; MLflow's default SQLite store; the real model's run
(the shared demo run) read back from all four; and the one-line errors for a missing tracker package
or matplotlib."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
from pathlib import Path
from statistics import mean

import pytest

import runs
from fake_backend import FakeBackend, write_task
from scoreflow.cli import main as cli
from scoreflow.model.backend import StepInfo
from scoreflow.run.reporter import Reporter, RunInfo
from scoreflow.ui.tracker_backends import make_trackers
from scoreflow.ui.trackers import TRACKERS, TrackingReporter, histogram_counts, sample_workflows

ROOT = Path(__file__).resolve().parents[1]
SIZES = ["--problems", "2", "-k", "2", "--pairs", "3", "--iterations", "2", "--runs", "1",
         "--test-problems", "2", "--set", "run.compare=true", "--no-dashboard"]


def needs(tracker: str) -> None:
    if importlib.util.find_spec(tracker) is None:
        pytest.skip(f"the {tracker} extra is not installed")


def records(run: Path, name: str) -> list[dict]:
    p = run / f"{name}.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.is_file() else []


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> Path:
    """One run of the real loop on the scripted backend with every installed tracker (about 20 s)."""
    installed = [n for n in TRACKERS if importlib.util.find_spec(n) is not None]
    if not installed:
        pytest.skip("no tracker installed (the tensorboard, wandb, mlflow or trackio extra)")
    tmp = tmp_path_factory.mktemp("tracked")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("MLFLOW_TRACKING_URI", (tmp / "mlruns").as_uri())
    mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this before it writes a file store
    mp.setenv("TRACKIO_DIR", str(tmp / "trackio"))
    if "trackio" in sys.modules:  # trackio reads TRACKIO_DIR at import
        import trackio.sqlite_storage
        import trackio.utils

        mp.setattr(trackio.utils, "TRACKIO_DIR", tmp / "trackio")
        mp.setattr(trackio.sqlite_storage, "TRACKIO_DIR", tmp / "trackio")
    mp.setattr("scoreflow.run.session.make_backend", lambda cfg: FakeBackend())
    run = tmp / "run"
    trackers = [a for name in installed for a in ("--report-to", name)]
    try:
        assert cli.main(["optimize", *write_task(tmp), *SIZES, *trackers, "--run-dir", str(run)]) == 0
        yield run
    finally:
        mp.undo()


def expected(run: Path) -> dict:
    metrics = records(run, "metrics")
    its = [m for m in metrics if m["kind"] == "iteration"]
    scores = {}
    for it in (1, 2):
        per = {}
        for r in records(run, "executions"):
            if r["iteration"] == it:
                per.setdefault((r["problem"], r["slot"]), []).append(r["score"])
        scores[it] = sorted(mean(v) for v in per.values())
    return {"train": [r["loss"] for r in records(run, "train")], "its": its, "scores": scores,
            "evals": [m for m in metrics if m["kind"] == "evaluate"],
            "compare": [m for m in metrics if m["kind"] == "compare"]}


def test_the_run_trains_and_compares(tracked):
    e = expected(tracked)
    assert len(e["train"]) == 6 and [m["iteration"] for m in e["its"]] == [1, 2]  # 3 pairs x 2 iterations
    assert [m["iteration"] for m in e["evals"]] == [0, 2] and len(e["compare"]) == 1
    assert all(set(s) == {0.0, 1.0} for s in e["scores"].values())  # spread: a histogram worth drawing


def test_tensorboard_event_files(tracked):
    needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    e = expected(tracked)
    acc = EventAccumulator(str(tracked / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [s.step for s in loss] == list(range(1, 7))
    assert [s.value for s in loss] == pytest.approx(e["train"])
    assert [s.value for s in acc.Scalars("train/iteration")] == [1, 1, 1, 2, 2, 2]
    ms = acc.Scalars("iteration/mean_score")
    assert [(s.step, s.value) for s in ms] == [(m["iteration"], pytest.approx(m["mean_score"])) for m in e["its"]]
    assert [s.step for s in acc.Scalars("evaluate/solve_rate")] == [0, 2]
    diff = acc.Scalars("compare/difference/value")
    assert [(s.step, s.value) for s in diff] == [(2, pytest.approx(e["compare"][0]["difference"]["value"]))]
    for it in (1, 2):
        h = next(h for h in acc.Histograms("iteration/scores") if h.step == it).histogram_value
        assert h.num == len(e["scores"][it]) and h.sum == pytest.approx(sum(e["scores"][it]))
        assert list(h.bucket) == histogram_counts(e["scores"][it])[0]
    table = next(t for t in acc.Tensors("iteration/sample_workflows") if t.step == 2).tensor_proto
    cells = [c.decode() for c in table.string_val]
    ncols = table.tensor_shape.dim[1].size
    rows = [cells[i:i + ncols] for i in range(0, len(cells), ncols)]
    assert rows[0] == ["iteration", "problem", "slot", "score", "runs", "workflow"]
    want = sample_workflows(tracked, 2)
    assert [r[:4] for r in rows[1:]] == [[str(v) for v in w[:4]] for w in want]
    assert "async def run_workflow" in rows[1][5]


def wandb_records(path: Path):
    """The records of a .wandb file (a LevelDB-style log of protobuf records, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = path.read_bytes(), 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 2):
            buf = chunk
        else:
            buf += chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def test_wandb_offline_run(tracked):
    needs("wandb")
    e = expected(tracked)
    [path] = (tracked / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = [], {}
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "run":
            config = {u.key: json.loads(u.value_json) for u in rec.run.config.update}
            assert rec.run.display_name == "run"
    assert config["train"]["loss"] == "score-dpo" and config["run"]["task"] == "jsonl"
    train = [h for h in history if "train/loss" in h]
    assert [h["train/step"] for h in train] == list(range(1, 7))
    assert [h["train/loss"] for h in train] == pytest.approx(e["train"])
    its = [h for h in history if "iteration/valid_rate" in h]
    assert [(h["iteration/step"], h["iteration/valid_rate"]) for h in its] == [(m["iteration"], m["valid_rate"])
                                                                              for m in e["its"]]
    hists = [h for h in history if h.get("iteration/scores/_type") == "histogram"]
    assert [sum(h["iteration/scores/values"]) for h in hists] == [len(e["scores"][1]), len(e["scores"][2])]
    tables = [h for h in history if "iteration/sample_workflows/path" in h]
    assert [h["iteration/step"] for h in tables] == [1, 2]
    table = json.loads((path.parent / "files" / tables[1]["iteration/sample_workflows/path"]).read_text())
    assert table["columns"][:4] == ["iteration", "problem", "slot", "score"]
    assert [r[:4] for r in table["data"]] == [w[:4] for w in sample_workflows(tracked, 2)]
    assert any("compare/difference/value" in h for h in history)


def test_mlflow_file_store(tracked):
    needs("mlflow")
    from mlflow.tracking import MlflowClient

    e = expected(tracked)
    client = MlflowClient(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or (tracked.parent / "mlruns").as_uri())
    _check_mlflow(client, tracked, e)


def _check_mlflow(client, run_dir: Path, e: dict) -> None:
    exp = client.get_experiment_by_name("scoreflow")
    [run] = client.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'run'")
    assert run.info.status == "FINISHED" and run.data.params["train.loss"] == "score-dpo"
    rid = run.info.run_id
    loss = client.get_metric_history(rid, "train/loss")
    assert sorted((m.step, m.value) for m in loss) == [(i + 1, pytest.approx(v)) for i, v in enumerate(e["train"])]
    ms = client.get_metric_history(rid, "iteration/mean_score")
    assert sorted((m.step, m.value) for m in ms) == [(m["iteration"], pytest.approx(m["mean_score"])) for m in e["its"]]
    assert sorted(m.step for m in client.get_metric_history(rid, "evaluate/solve_rate")) == [0, 2]
    local = Path(client.download_artifacts(rid, "iteration", str(run_dir.parent / f"dl-{rid}")))
    hist = json.loads((local / "scores" / "step-1.json").read_text())
    assert sorted(hist["values"]) == e["scores"][1] and sum(hist["counts"]) == len(e["scores"][1])
    table = json.loads((local / "sample_workflows" / "step-2.json").read_text())
    assert [r[:4] for r in table["data"]] == [w[:4] for w in sample_workflows(run_dir, 2)]


def test_trackio_local(tracked):
    needs("trackio")
    from trackio.sqlite_storage import SQLiteStorage

    e = expected(tracked)
    assert "run" in SQLiteStorage.get_runs("scoreflow")
    logs = SQLiteStorage.get_logs("scoreflow", "run")
    train = [r for r in logs if "train/loss" in r]
    assert [(r["train/step"], r["train/loss"]) for r in train] == [(i + 1, pytest.approx(v))
                                                                  for i, v in enumerate(e["train"])]
    its = [r for r in logs if "iteration/mean_score" in r]
    assert [(r["iteration/step"], r["iteration/mean_score"]) for r in its] == [
        (m["iteration"], pytest.approx(m["mean_score"])) for m in e["its"]]
    hist = [r["iteration/scores"] for r in logs if "iteration/scores" in r]
    assert [sum(h["values"]) for h in hist] == [len(e["scores"][1]), len(e["scores"][2])]
    tables = [r["iteration/sample_workflows"]["_value"] for r in logs if "iteration/sample_workflows" in r]
    assert [row["score"] for row in tables[-1]] == [w[3] for w in sample_workflows(tracked, 2)]


def test_mlflow_default_sqlite_store_driven_directly(tmp_path, monkeypatch):
    """Without MLFLOW_TRACKING_URI the run gets a SQLite store in RUN/mlflow; the reporter driven with
    the events the loop sends, records in the run directory as the loop writes them."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('[train]\nloss = "score-dpo"\n[run]\ntask = "arith"\n')
    wf = "async def run_workflow(self):\n    return await self.custom(input=self.problem, instruction='x')"
    with open(run / "workflows.jsonl", "w") as w, open(run / "evaluations.jsonl", "w") as ev:
        for slot, score in enumerate((1.0, 0.0, 0.5)):
            w.write(json.dumps({"iteration": 1, "problem": 0, "problem_id": "p0", "slot": slot, "attempt": 0,
                                "valid": True, "reason": "", "tokens": 9, "text": "", "source": wf}) + "\n")
            ev.write(json.dumps({"iteration": 1, "problem": 0, "problem_id": "p0", "slot": slot, "run": 0,
                                 "status": "ok", "score": score}) + "\n")
    steps = [StepInfo(i + 1, 2, 0.7 - i / 10, 0.1, 0.05, -0.05, 1.5, 2.0) for i in range(2)]
    metrics = {"kind": "iteration", "iteration": 1, "valid_rate": 0.75, "mean_score": 0.5, "loss": 0.65}
    (run / "metrics.jsonl").write_text(json.dumps(metrics) + "\n")
    rep = TrackingReporter(make_trackers(["mlflow"]))
    with rep:
        rep.start(RunInfo("arith", "cuda", "cpu", "m", "e", str(run), 1))
        rep.stage(1, "execute", 3)
        for s in (1.0, 0.0, 0.5):
            rep.score(s)
        rep.stage(1, "train", 2)
        for info in steps:
            rep.train_step(info)
        rep.iteration_end(metrics)
        rep.finish("finished")
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("scoreflow")
    [r] = client.search_runs([exp.experiment_id])
    assert [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "train/loss")] == [(1, 0.7), (2, 0.6)]
    assert client.get_metric_history(r.info.run_id, "iteration/valid_rate")[0].value == 0.75
    art = Path(r.info.artifact_uri.replace("file://", ""))
    assert art.is_relative_to(run / "mlflow")
    table = json.loads((art / "iteration" / "sample_workflows" / "step-1.json").read_text())
    assert [row[3] for row in table["data"]] == [1.0, 0.5, 0.0]


def test_missing_tracker_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    run = tmp_path / "run"
    rc = cli.main(["optimize", "--report-to", "wandb", "--run-dir", str(run), "--iterations", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0, err
    assert 'pip install "scoreflow-cli[wandb]"' in err and "--report-to wandb" in err
    assert not run.exists()  # before any model load or run directory


def test_missing_matplotlib_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    rc = cli.main(["report", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "pip install matplotlib" in err, err


def test_module_not_found_anywhere_names_the_extra(monkeypatch, capsys):
    def broken(args):
        import trl  # noqa: F401  (as if a code path needed the bench extra)

    from scoreflow.cli import config as config_command

    monkeypatch.setattr(config_command, "run", broken)
    monkeypatch.setitem(sys.modules, "trl", None)  # makes `import trl` fail
    assert cli.main(["config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'scoreflow: error: scoreflow needs the trl package, which is not installed: pip install "scoreflow-cli[bench]"'


@pytest.mark.slow
def test_the_real_model_through_the_cli_reaches_every_tracker(demo_run, monkeypatch):
    """`scoreflow optimize --report-to` every installed tracker with the real PyTorch backend on the
    embedded model (the shared demo run of tests/runs.py, through the CLI in a subprocess): TensorBoard,
    W&B (offline), MLflow (its default SQLite store, RUN/mlflow) and trackio (local) each hold the
    run's training losses and its iteration's numbers, as the run directory recorded them."""
    run = demo_run.run_dir
    assert demo_run.rc == 0, demo_run.out[-2000:] + demo_run.err[-2000:]
    installed = runs.installed_trackers()
    if not installed:
        pytest.skip("no tracker installed (the tensorboard, wandb, mlflow or trackio extra)")
    assert f"tracking to {', '.join(installed)}" in demo_run.out
    [m] = [m for m in records(run, "metrics") if m["kind"] == "iteration"]
    losses = [r["loss"] for r in records(run, "train")]
    assert losses and m["steps"] == len(losses)
    if "tensorboard" in installed:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        assert [(s.step, s.value) for s in acc.Scalars("iteration/valid_rate")] == [(1, pytest.approx(m["valid_rate"]))]
        assert [(s.step, s.value) for s in acc.Scalars("iteration/workflows")] == [(1, float(m["workflows"]))]
        assert [s.value for s in acc.Scalars("train/loss")] == pytest.approx(losses)
        assert [s.step for s in acc.Scalars("evaluate/solve_rate")] == [0, 1]
    if "wandb" in installed:
        [path] = (run / "wandb").glob("offline-run-*/run-*.wandb")
        history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                   for rec in wandb_records(path) if rec.WhichOneof("record_type") == "history"]
        assert [h["train/loss"] for h in history if "train/loss" in h] == pytest.approx(losses)
        assert [h["iteration/valid_rate"] for h in history if "iteration/valid_rate" in h] == [m["valid_rate"]]
    if "mlflow" in installed:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow' / 'mlflow.db'}")
        [r] = client.search_runs([client.get_experiment_by_name("scoreflow").experiment_id])
        assert r.info.status == "FINISHED"
        got = sorted((x.step, x.value) for x in client.get_metric_history(r.info.run_id, "train/loss"))
        assert got == [(i + 1, pytest.approx(v)) for i, v in enumerate(losses)]
    if "trackio" in installed:
        import trackio.sqlite_storage
        import trackio.utils
        from trackio.sqlite_storage import SQLiteStorage

        folder = Path(demo_run.env["TRACKIO_DIR"])
        monkeypatch.setattr(trackio.utils, "TRACKIO_DIR", folder)
        monkeypatch.setattr(trackio.sqlite_storage, "TRACKIO_DIR", folder)
        assert run.name in SQLiteStorage.get_runs("scoreflow")
        logs = SQLiteStorage.get_logs("scoreflow", run.name)
        assert [x["train/loss"] for x in logs if "train/loss" in x] == pytest.approx(losses)
