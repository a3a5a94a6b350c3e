"""benchmarks/mlx_vs_mlx_lm.py in --quick mode on the tiny random Llama: it runs both sides of each
comparison and prints one JSON object with the ratios (no speed thresholds: CI machines are noisy;
benchmarks/RESULTS.md has the numbers)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("mlx_lm") is None:
    pytest.skip("mlx-lm is not installed", allow_module_level=True)

pytestmark = pytest.mark.mlx
ROOT = Path(__file__).resolve().parents[1]


def test_mlx_vs_mlx_lm_quick(tiny_llama):
    # MLX_DISABLE_COMPILE: on a fresh machine the compiled steps would first build MLX's fused CPU
    # kernels with the C++ compiler (a minute); test_mlx_train.py tests the compiled step itself.
    env = {**os.environ, "MLX_DISABLE_COMPILE": "1"}
    proc = subprocess.run([sys.executable, "benchmarks/mlx_vs_mlx_lm.py", "--quick", "--model", str(tiny_llama)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["benchmark"] == "mlx_vs_mlx_lm" and out["mlx_device"] == "cpu" and out["dtype"] == "float32"
    g, t = out["generation"], out["training"]
    for side in ("ours", "mlx_lm", "ours_mlx-lm_sampler", "ours_cold", "mlx_lm_cold", "ours_no_prompt_cache"):
        assert g["tokens_per_s"][side] > 0, side
        assert all(r["tokens"] > 0 for r in g["runs"][side])
    assert g["ratio"] > 0 and g["ratio_cold"] > 0 and g["own_sampler"] == "top-64"
    assert g["distinct_openings"] == 3 and g["opening_tokens"][0] > 0.9 * g["prompt_tokens"][0]
    for side in ("ours", "mlx_lm_tuner", "ours_compiled"):
        assert t["pairs_per_s"][side] > 0 and t["peak_mb"][side] > 0, side
        assert all(len(r["step_seconds"]) == 3 for r in t["runs"][side])
    assert t["ratio"] > 0 and t["peak_mb_ratio"] > 0 and t["compiled_step"] is False
    # The tuner runs every pair's prompt in full; the backend runs the shared prompt once.
    assert t["tokens_per_step"]["mlx_lm_tuner"] > t["tokens_per_step"]["ours"] > t["prompt_tokens"]
    assert set(out["targets"]) == {"generation_ratio>=1.0", "training_ratio>=1.0", "training_peak<=mlx_lm"}
