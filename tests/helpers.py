"""Small helpers shared by several test modules (no test module imports another): random PEFT
adapters, a run directory around one saved adapter, and the benchmark scripts in --quick mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from scoreflow.model.backend import LoraConfig

ROOT = Path(__file__).resolve().parents[1]
LORA = LoraConfig(rank=4, alpha=8.0, dropout=0.0)


def random_peft(folder: Path, n_layers: int, hidden: int, kv: int, seed: int = 0, scale: float = 0.05,
                lora: LoraConfig = LORA) -> Path:
    """A PEFT adapter with non-zero A and B (a fresh LoRA's B is zero and hides half the gradients)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    t = {}
    for i in range(n_layers):
        for mod, out in (("q_proj", hidden), ("v_proj", kv)):
            p = f"base_model.model.model.layers.{i}.self_attn.{mod}"
            t[f"{p}.lora_A.weight"] = (rng.normal(size=(lora.rank, hidden)) * scale).astype(np.float32)
            t[f"{p}.lora_B.weight"] = (rng.normal(size=(out, lora.rank)) * scale).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(t, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora.rank, "lora_alpha": lora.alpha,
        "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
    }))
    return folder


def run_of_adapter(root: Path, adapter_of: Callable[[Path], object]) -> Path:
    """A run of the embedded model whose iteration 1 is the adapter `adapter_of(folder)` saves."""
    from scoreflow import config as C

    run = root / "run"
    (run / "adapters").mkdir(parents=True)
    (run / "config.toml").write_text(C.to_toml(C.build({"generator": {"model": "smollm2"},
                                                          "run": {"task": "arith", "iterations": 1}})))
    (run / "metrics.jsonl").write_text(json.dumps({
        "kind": "iteration", "iteration": 1, "problems": 2, "workflows": 8, "valid": 4, "valid_rate": 0.5,
        "first_attempt_valid_rate": 0.5, "mean_score": 0.25, "solve_rate": 0.25, "pairs": 2, "steps": 2,
        "loss": 0.69}) + "\n")
    adapter_of(run / "adapters" / "iter-1")
    return run


def run_benchmark(script: str, *args: str, timeout: float = 300) -> dict:
    """benchmarks/SCRIPT --quick ARGS: its last line of output, one JSON object."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, proc.stderr[-2000:]
    out = json.loads(lines[-1])
    assert isinstance(out, dict)
    return out


class Fmt:
    """A chat format of characters: enough for Encoded."""

    def render(self, messages) -> str:
        return "|".join(m["content"] for m in messages)

    def encode_text(self, text: str) -> list[int]:
        return [ord(c) % 64 for c in text]

    def completion_ids(self, text: str) -> list[int]:
        return [ord(c) % 64 for c in text] + [0]

    def context_length(self, messages, ids=None) -> int:
        return 0


def sweep_sample(problems: list, exceptions: set[str], every: int = 3) -> list:
    """The problems a data sweep runs through the sandbox: every `every`-th of the split (a fixed
    stride, so the same ones each time) and every known exception; with SCOREFLOW_FULL_SWEEPS=1, all.
    The data are fixed files, the full sweeps pinned the exceptions; a third keeps each scorer path
    on hundreds of real programs at a third of the sandbox starts."""
    if os.environ.get("SCOREFLOW_FULL_SWEEPS") == "1":
        return list(problems)
    return [p for k, p in enumerate(problems) if k % every == 0 or p.id in exceptions]
