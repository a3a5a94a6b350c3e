"""Starting a run (scoreflow/run/start.py, scoreflow.api.launch): the CLI and the Python API take the
same checks in the same order, and nothing is deleted or written before all of them pass."""

from __future__ import annotations

import pytest

from fake_backend import FakeBackend, config
from scoreflow import api
from scoreflow import config as C
from scoreflow.cli import main as cli
from scoreflow.errors import UserError
from scoreflow.run.rundir import RunDir
from scoreflow.run.start import RunOptions, prepare


@pytest.fixture
def made(tmp_path, monkeypatch):
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: FakeBackend())
    run = tmp_path / "run"
    assert api.optimize(config(tmp_path), run).status == "finished"
    return run


def test_the_api_refuses_a_changed_configuration_on_resume_as_the_cli_does(made, tmp_path, capsys):
    changed = config(tmp_path)
    changed["train"]["pairs"] = 3
    with pytest.raises(UserError, match="another configuration.*train.pairs"):
        api.optimize(changed, made, resume=True)
    assert cli.main(["optimize", "--resume", "--run-dir", str(made), "--pairs", "3"]) == 2
    assert "another configuration (train.pairs)" in capsys.readouterr().err
    changed["run"]["iterations"] = 2  # a resumable key alone is no change
    changed["train"]["pairs"] = 2
    assert prepare(RunOptions(C.build(C.merge(changed)), made, resume=True), "optimize")[0].run.iterations == 2


def test_force_with_a_missing_tracker_leaves_the_old_run_intact(made, monkeypatch, capsys):
    before = {p.relative_to(made): p.read_bytes() for p in made.rglob("*") if p.is_file()}
    from scoreflow import extras

    def require(module: str, needed_for: str = "") -> None:  # as if wandb were not installed
        if module == "wandb":
            raise extras.missing(module, needed_for)

    monkeypatch.setattr("scoreflow.ui.trackers.require", require)
    assert cli.main(["optimize", "--force", "--run-dir", str(made), "--report-to", "wandb"]) == 2
    assert "wandb" in capsys.readouterr().err
    with pytest.raises(UserError, match="wandb"):
        api.optimize(config(made.parent), made, force=True, report_to=["wandb"])
    after = {p.relative_to(made): p.read_bytes() for p in made.rglob("*") if p.is_file()}
    assert after == before


def test_a_key_added_since_a_run_began_resumes_with_the_value_the_run_was_made_with(made):
    """A snapshot lacks keys added after it was written; resuming must not take a preset's value for them."""
    run = RunDir(made)
    text = run.config_path.read_text().replace('lr_schedule = "constant"\n', "").replace('preset = "demo"', 'preset = "paper"')
    run.config_path.write_text(text)
    cfg, _, _ = prepare(RunOptions(None, made, resume=True), "optimize")
    assert cfg.run.preset == "paper" and cfg.train.lr_schedule == "constant"
    assert C.build({"run": {"preset": "paper"}}).train.lr_schedule == "linear"  # what a new paper run takes


def test_nothing_to_resume_and_a_used_directory(tmp_path, made):
    with pytest.raises(UserError, match="nothing to resume"):
        prepare(RunOptions(None, tmp_path / "none", resume=True), "optimize")
    with pytest.raises(UserError, match="not empty"):
        api.optimize({"run": {"task": "arith"}}, made)
