"""benchmarks/ablation.py (a simulation) in --quick mode: one JSON object with the expected keys, the
same numbers for the same seed, run directories that `scoreflow report --compare` reads and plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"score-dpo-a3", "dpo-a3", "sft-a3", "score-dpo-a0", "score-dpo-a100"}


def _run(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablation.py"), "--quick", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout[-2000:]
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("ablation")
    return _run("--out", str(out)), out


def test_json_keys(quick) -> None:
    d, _ = quick
    assert d["benchmark"] == "ablation" and d["simulation"] is True
    for key in ("date", "device", "settings", "seeds", "world", "variants", "paired_final_differences", "seconds"):
        assert key in d
    assert set(d["variants"]) == VARIANTS
    n = d["settings"]["iterations"] + 1
    for v in d["variants"].values():
        curve = v["expected_score"]
        assert len(curve) == n and all(0 <= c["mean"] <= 1 for c in curve)
        assert curve[0]["mean"] == pytest.approx(d["world"]["base_policy"])  # every variant starts from the base
        assert v["final"]["mean"] == pytest.approx(curve[-1]["mean"])
        assert 0 <= v["condition_rate"] <= 1
    assert d["world"]["base_policy"] < d["world"]["oracle"] <= 1


def test_same_seed_same_numbers(quick) -> None:
    d, _ = quick
    again = _run("--variants", "score-dpo-a3", "dpo-a3")
    for name in ("score-dpo-a3", "dpo-a3"):
        assert again["variants"][name]["final_per_seed"] == d["variants"][name]["final_per_seed"]
        assert again["variants"][name]["expected_score"] == d["variants"][name]["expected_score"]
    other = _run("--variants", "score-dpo-a3", "--world-seed", "1")
    assert other["variants"]["score-dpo-a3"]["final_per_seed"] != d["variants"]["score-dpo-a3"]["final_per_seed"]


def test_run_dirs_feed_report(quick, tmp_path) -> None:
    from scoreflow.report.report import load_runs, write_report
    from scoreflow.run.rundir import load_run

    d, out = quick
    run = load_run(out / "score-dpo-a3" / "seed-0")
    assert run.status["status"] == "finished"
    assert run.config["train"]["loss"] == "score-dpo" and run.config["train"]["sampling_alpha"] == 3.0
    assert [m.iteration for m in run.iterations] == list(range(1, d["settings"]["iterations"] + 1))
    assert run.iterations[0].mean_score == pytest.approx(d["world"]["base_policy"])
    assert [m.iteration for m in run.tests] == [0, d["settings"]["iterations"]]
    assert run.tests[-1].solve_rate == pytest.approx(d["variants"]["score-dpo-a3"]["final_per_seed"][0])
    runs = load_runs([out / "mean" / v for v in sorted(VARIANTS)])
    path = write_report(runs, tmp_path / "report")
    assert path.is_file() and (tmp_path / "report" / "score.png").is_file()
