"""train.lr_decay: iteration i trains at learning_rate x lr_decay^(i-1)."""

from __future__ import annotations

import pytest
from fake_backend import FakeBackend, write_task

from scoreflow.config import build, train_config


def test_train_config_decays_the_rate_by_iteration():
    cfg = build({"train": {"learning_rate": 1e-4, "lr_decay": 0.5}})
    assert [train_config(cfg, it).learning_rate for it in (1, 2, 3)] == pytest.approx([1e-4, 5e-5, 2.5e-5])
    assert train_config(build({}), 3).learning_rate == build({}).train.learning_rate  # off by default


class RateLog(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def train(self, pairs, cfg, **kw):
        self.rates.append(cfg.learning_rate)
        return super().train(pairs, cfg, **kw)


def test_the_loop_trains_each_iteration_at_its_decayed_rate(tmp_path, monkeypatch):
    from scoreflow.cli import main as cli

    backend = RateLog()
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: backend)
    task = write_task(tmp_path)
    assert cli.main(["optimize", *task, "--run-dir", str(tmp_path / "run"), "--iterations", "3", "--problems", "2",
                     "-k", "2", "--no-dashboard", "--set", "train.learning_rate=2e-4",
                     "--set", "train.lr_decay=0.25"]) == 0
    assert backend.rates == pytest.approx([2e-4, 5e-5, 1.25e-5])
