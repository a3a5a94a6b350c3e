"""PEFT <-> mlx-lm adapter conversion (numpy + safetensors only) and `export_run`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from scoreflow.model.adapters import convert, detect_format, mlx_to_peft, peft_to_mlx
from scoreflow.report.export import export_run
from scoreflow.errors import UserError

LAYERS, HIDDEN, KV, RANK, ALPHA = 3, 16, 8, 4, 12.0


def _peft(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = {}
    for i in range(LAYERS):
        for mod, out in (("q_proj", HIDDEN), ("v_proj", KV)):
            p = f"base_model.model.model.layers.{i}.self_attn.{mod}"
            t[f"{p}.lora_A.weight"] = rng.normal(size=(RANK, HIDDEN)).astype(np.float32)
            t[f"{p}.lora_B.weight"] = rng.normal(size=(out, RANK)).astype(np.float32)
    folder.mkdir(parents=True)
    save_file(t, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.05,
        "target_modules": ["v_proj", "q_proj"], "base_model_name_or_path": "/models/x",
    }))
    return t


def _delta_peft(t, path):  # the weight update PEFT applies: (alpha / r) * B @ A
    return ALPHA / RANK * t[f"base_model.model.{path}.lora_B.weight"] @ t[f"base_model.model.{path}.lora_A.weight"]


def test_peft_to_mlx_keeps_the_update(tmp_path):
    t = _peft(tmp_path / "peft")
    out = peft_to_mlx(tmp_path / "peft", tmp_path / "mlx")
    assert detect_format(out) == "mlx"
    m = load_file(str(out / "adapters.safetensors"))
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["num_layers"] == LAYERS and cfg["fine_tune_type"] == "lora"
    lp = cfg["lora_parameters"]
    assert lp["rank"] == RANK and lp["scale"] == pytest.approx(ALPHA / RANK) and lp["dropout"] == 0.05
    assert lp["keys"] == ["self_attn.q_proj", "self_attn.v_proj"] and cfg["model"] == "/models/x"
    x = np.random.default_rng(1).normal(size=(5, HIDDEN)).astype(np.float32)
    for i in range(LAYERS):
        for mod in ("q_proj", "v_proj"):
            path = f"model.layers.{i}.self_attn.{mod}"
            a, b = m[f"{path}.lora_a"], m[f"{path}.lora_b"]
            assert a.shape == (HIDDEN, RANK)
            # mlx-lm: scale * (x @ a) @ b ; PEFT: x @ (scale * B @ A).T
            np.testing.assert_allclose(lp["scale"] * (x @ a) @ b, x @ _delta_peft(t, path).T, rtol=1e-5, atol=1e-5)


def test_round_trip_is_exact(tmp_path):
    t = _peft(tmp_path / "peft")
    back = mlx_to_peft(peft_to_mlx(tmp_path / "peft", tmp_path / "mlx"), tmp_path / "peft2")
    t2 = load_file(str(back / "adapter_model.safetensors"))
    assert set(t2) == set(t)
    for k in t:
        np.testing.assert_array_equal(t2[k], t[k])
    cfg = json.loads((back / "adapter_config.json").read_text())
    assert cfg["r"] == RANK and cfg["lora_alpha"] == pytest.approx(ALPHA)
    assert cfg["target_modules"] == ["q_proj", "v_proj"] and cfg["peft_type"] == "LORA"
    assert cfg["base_model_name_or_path"] == "/models/x"


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    for n in (0, 2, 10):
        _peft(run / "adapters" / f"iter-{n}", seed=n)
    (run / "adapters" / "iter-x").mkdir()  # not an iteration
    return run


def test_export_run_latest_and_named_iteration(tmp_path):
    run = _run(tmp_path)
    out = export_run(run, "mlx")
    assert out == run / "export" / "iter-10-mlx" and detect_format(out) == "mlx"
    a = load_file(str(out / "adapters.safetensors"))["model.layers.0.self_attn.q_proj.lora_a"]
    src = load_file(str(run / "adapters" / "iter-10" / "adapter_model.safetensors"))
    np.testing.assert_array_equal(a, src["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].T)
    out2 = export_run(run, "peft", iteration=2, out=tmp_path / "custom")
    assert out2 == tmp_path / "custom" and detect_format(out2) == "peft"  # same format: a copy
    back = export_run(run, "mlx", iteration=2)
    assert convert(back, "peft", tmp_path / "again") == tmp_path / "again"


def test_export_errors(tmp_path):
    run = _run(tmp_path)
    with pytest.raises(UserError, match="iteration 5"):
        export_run(run, "mlx", iteration=5)
    with pytest.raises(UserError, match="unknown adapter format"):
        export_run(run, "gguf")
    with pytest.raises(UserError, match="holds no adapters"):
        export_run(tmp_path / "empty", "mlx")
    (tmp_path / "bare").mkdir()
    with pytest.raises(UserError, match="holds no adapter"):
        detect_format(tmp_path / "bare")
