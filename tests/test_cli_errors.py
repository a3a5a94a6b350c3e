"""Bad input ends with one clear line on stderr, exit code 2, no traceback, no half-made run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def scoreflow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCOREFLOW_DATA": ""}
    return subprocess.run([sys.executable, "-m", "scoreflow", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    gsm = tmp / "gsm"
    write(gsm / "empty" / "gsm8k_validate.jsonl", "")
    write(gsm / "broken" / "gsm8k_validate.jsonl", '{"question": "q", "answer": "1"}\n{"question": \n')
    write(gsm / "fields" / "gsm8k_validate.jsonl", '{"question": "q"}\n')
    write(gsm / "nonnum" / "gsm8k_validate.jsonl", '{"question": "q", "answer": "many"}\n')
    write(tmp / "bad.toml", "[run\ntask = 'arith'\n")
    write(tmp / "unknown_key.toml", "[run]\ntaks = 'arith'\n")
    write(tmp / "unknown_section.toml", "[runner]\ntask = 'arith'\n")
    write(tmp / "wrong_type.toml", "[train]\nbeta = 'high'\n")
    write(tmp / "latin1.toml", b"[run]\ntask = '\xe9'\n")
    write(tmp / "zero_k.toml", "[generator]\nworkflows_per_problem = 0\n")
    (tmp / "folder.toml").mkdir()
    write(tmp / "full" / "config.toml", "[run]\ntask = 'arith'\n")
    write(tmp / "full" / "metrics.jsonl", "")
    write(tmp / "wf.py", "async def run_workflow(self):\n    return 'x'\n")
    r = str(tmp / "run")
    return [
        ("missing data file", ["optimize", "--task", "gsm8k", "--data", str(tmp / "nope.jsonl"), "--run-dir", r], "does not exist"),
        ("empty dataset", ["optimize", "--task", "gsm8k", "--data", str(gsm / "empty"), "--run-dir", r], "empty"),
        ("broken JSONL line", ["optimize", "--task", "gsm8k", "--data", str(gsm / "broken"), "--run-dir", r], "broken JSON"),
        ("missing fields", ["optimize", "--task", "gsm8k", "--data", str(gsm / "fields"), "--run-dir", r], "lacks field"),
        ("non-numeric answer", ["optimize", "--task", "gsm8k", "--data", str(gsm / "nonnum"), "--run-dir", r], "not a number"),
        ("no data given", ["optimize", "--task", "gsm8k", "--run-dir", r], "--data"),
        ("malformed TOML", ["optimize", "--config", str(tmp / "bad.toml"), "--run-dir", r], "malformed TOML"),
        ("unknown key", ["optimize", "--config", str(tmp / "unknown_key.toml"), "--run-dir", r], "unknown config key"),
        ("unknown section", ["optimize", "--config", str(tmp / "unknown_section.toml"), "--run-dir", r], "unknown section"),
        ("wrong type", ["optimize", "--config", str(tmp / "wrong_type.toml"), "--run-dir", r], "must be a number"),
        ("config not UTF-8", ["optimize", "--config", str(tmp / "latin1.toml"), "--run-dir", r], "UTF-8"),
        ("config is a folder", ["optimize", "--config", str(tmp / "folder.toml"), "--run-dir", r], "folder"),
        ("missing config", ["optimize", "--config", str(tmp / "nope.toml"), "--run-dir", r], "not found"),
        ("zero workflows per problem", ["optimize", "--config", str(tmp / "zero_k.toml"), "--run-dir", r], "positive"),
        ("negative problems", ["optimize", "--problems", "-3", "--run-dir", r], "at least 0"),
        ("unknown task", ["optimize", "--task", "chess", "--run-dir", r], "unknown task"),
        ("unknown backend", ["optimize", "--backend", "tpu", "--run-dir", r], "choose one of"),
        ("unknown loss", ["optimize", "--loss", "ppo", "--run-dir", r], "choose one of"),
        ("malformed --set", ["optimize", "--set", "beta=1", "--run-dir", r], "section.key=value"),
        ("model path missing", ["optimize", "--model", str(tmp / "no-model"), "--run-dir", r], "does not exist"),
        ("run dir not empty", ["optimize", "--run-dir", str(tmp / "full")], "--resume"),
        ("nothing to resume", ["optimize", "--resume", "--run-dir", str(tmp / "empty-run")], "nothing to resume"),
        ("resume with another config", ["optimize", "--resume", "--task", "gsm8k", "--data", str(gsm / "fields"),
                                        "--run-dir", str(tmp / "full")], "another configuration"),
        ("workflow index out of range", ["run-workflow", "--workflow", str(tmp / "wf.py"), "--index", "999"], "out of range"),
        ("workflow file missing", ["run-workflow", "--workflow", str(tmp / "none.py")], "cannot read"),
        ("export without adapters", ["export", str(tmp / "full"), "--to", "peft"], "adapters"),
    ]


def test_bad_inputs_fail_cleanly(tmp_path):
    failures = []
    for name, args, expected in cases(tmp_path):
        res = scoreflow(*args, cwd=tmp_path)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        ok = (res.returncode == 2 and len(lines) == 1 and lines[0].startswith("scoreflow: error:")
              and expected.lower() in lines[0].lower() and "Traceback" not in res.stderr + res.stdout)
        if not ok:
            failures.append(f"{name}: rc={res.returncode} stderr={res.stderr.strip()[-300:]!r}")
        assert not (tmp_path / "run").exists(), f"{name}: left a run directory behind"
    assert not failures, "\n".join(failures)
    assert len(cases(tmp_path / "again")) >= 15
