"""The MLX backend's optimiser steps at the training skeleton's learning rate (train.lr_schedule),
as the PyTorch backend's does (tests/test_config.py), on the tiny random Llama."""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("mlx_lm") is None:  # not importorskip: mlx.core must come after OpenBLAS
    pytest.skip("mlx-lm is not installed", allow_module_level=True)

import scoreflow.backends.mlx  # noqa: E402,F401  (preloads OpenBLAS before mlx.core)

import mlx.optimizers as optim  # noqa: E402

from scoreflow.backends import mlx as B  # noqa: E402
from scoreflow.model import training  # noqa: E402
from scoreflow.model.backend import LoraConfig, TrainConfig, TrainPair  # noqa: E402

pytestmark = pytest.mark.mlx


def test_mlx_optimizer_steps_at_the_schedule(tiny_llama, monkeypatch):
    mb = B.load(str(tiny_llama), device="cpu", lora=LoraConfig(rank=4, alpha=8.0, dropout=0.0), seed=0)
    seen: list[float] = []
    update = optim.AdamW.update

    def spy(self, model, gradients):
        seen.append(self.learning_rate.item())
        return update(self, model, gradients)

    monkeypatch.setattr(optim.AdamW, "update", spy)
    pairs = [TrainPair([{"role": "user", "content": f"Problem {i}"}], "<graph>a</graph>", "No.", 0.9, 0.1)
             for i in range(3)]
    for schedule in ("linear", "constant"):
        cfg = TrainConfig(learning_rate=1e-3, lr_schedule=schedule, epochs=2, checkpoint_every=0)
        seen.clear()
        mb.load_adapter(None)
        mb.train(pairs, cfg)
        want = [training.learning_rate_at(cfg, s, 6) for s in range(6)]
        assert seen == pytest.approx(want, rel=1e-6), schedule  # the rate is a float32 array in MLX
    assert seen == pytest.approx([1e-3] * 6)
