"""The three benchmarks run in --quick mode and print one JSON object with the expected keys
(no speed thresholds here: CI machines are too noisy; see benchmarks/RESULTS.md for the numbers)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, timeout: float = 300) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr[-2000:]
    out = json.loads(lines[-1])
    assert isinstance(out, dict)
    return out


def test_dpo_step_quick(tiny_llama):
    pytest.importorskip("torch")
    if importlib.util.find_spec("trl") is None:
        pytest.skip("trl is a benchmark-only dependency: pip install torch==2.13.0 trl")
    out = _run("dpo_step.py", "--model", str(tiny_llama), "--device", "cpu")
    assert out["benchmark"] == "dpo_step"
    for key in ("date", "device", "sizes", "ours", "trl", "ratio", "peak_mb_ratio", "targets"):
        assert key in out
    for side in ("ours", "trl"):
        assert out[side]["pairs_per_s"] > 0 and out[side]["peak_mb"] > 0
    assert out["sizes"]["pairs"] == out["sizes"]["steps"] * out["sizes"]["batch_size"]


def test_generation_quick(tiny_llama):
    pytest.importorskip("torch")
    out = _run("generation.py", "--model", str(tiny_llama), "--device", "cpu")
    assert out["benchmark"] == "generation"
    for key in ("date", "device", "sizes", "samples", "distinct", "targets"):
        assert key in out
    for case in ("samples", "distinct"):
        assert out[case]["ratio"] > 0
        assert out[case]["batched"]["workflows_per_s"] > 0 and out[case]["naive"]["workflows_per_s"] > 0
        assert out[case]["batched"]["tokens"] > 0


def test_execution_quick():
    pytest.importorskip("openai")
    out = _run("execution.py")
    assert out["benchmark"] == "execution"
    for key in ("concurrent_evals_per_s", "sequential_evals_per_s", "ideal_evals_per_s", "fraction_of_ideal",
                "sandbox_overhead", "targets"):
        assert key in out
    assert out["statuses"] == ["ok"]
    assert out["sizes"]["server_calls"] == (out["sizes"]["evaluations"] + out["sizes"]["sequential_evaluations"]) \
        * out["sizes"]["calls_per_workflow"]
    assert 0 < out["sandbox_overhead"]["median_ms"]
