"""`--dry-run`: the plan and its cost estimate against a hand computation; no model load (no backend
module, torch or mlx imported), no executor call (a real 127.0.0.1 server counts the requests), no
run directory."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI
from scoreflow.cli import flags, main as cli
from scoreflow.config import ExecutorConfig, build
from scoreflow.run.plan import executor_price, make_plan, workflow_calls
from scoreflow.run.session import select
from scoreflow.tasks import arith
from scoreflow.tasks.arith import ArithTask

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, os, sys
from scoreflow.cli.main import main
from scoreflow.tasks import arith
arith.EXAMPLES = tuple(tuple(e) for e in json.loads(os.environ["PINNED_EXAMPLES"]))
rc = main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "mlx", "mlx_lm", "peft", "vllm")
               or m.startswith("scoreflow.backends."))
print(json.dumps({"rc": rc, "heavy": heavy}))
"""


# Example workflows of 1 (custom), 1 (programmer), 4 (3 x custom in a loop, sc_ensemble), 2 (custom,
# review) and 3 (custom, programmer, custom) operator calls, pinned so that the hand computation does
# not follow changes to arith's own examples.
PINNED_EXAMPLES = tuple((f"Question {i}?", "async def run_workflow(self):\n" + body) for i, body in enumerate([
    "    return await self.custom(input=self.problem, instruction=\"Answer.\")",
    "    return await self.programmer(problem=self.problem, analysis=\"None\")",
    "    xs = []\n    for i in range(3):\n        xs.append(await self.custom(input=self.problem, instruction=\"Solve.\"))\n"
    "    return await self.sc_ensemble(solutions=xs, problem=self.problem)",
    "    d = await self.custom(input=self.problem, instruction=\"Solve.\")\n"
    "    return await self.review(problem=self.problem, solution=d)",
    "    s = await self.custom(input=self.problem, instruction=\"Plan.\")\n"
    "    r = await self.programmer(problem=self.problem, analysis=s)\n"
    "    return await self.custom(input=self.problem + r, instruction=\"State the number.\")",
]))


@pytest.fixture(autouse=True)
def pinned_examples(monkeypatch):
    monkeypatch.setattr(arith, "EXAMPLES", PINNED_EXAMPLES)


# The demo preset's sizes, spelled out so that the hand computation does not follow preset changes.
SIZES = ["--iterations", "2", "--problems", "4", "-k", "4", "--runs", "1", "--pairs", "12", "--test-problems", "20",
         "--set", "executor.max_tokens=160", "--set", "generator.max_attempts=1", "--set", "run.compare=true",
         "--set", "generator.max_new_tokens=192", "--seed", "0"]


def hand_estimate() -> dict:
    """Arith with the SIZES above and gpt-4o-mini ($0.15 in, $0.60 out per million tokens), worked out
    by hand from the rules in scoreflow/run/plan.py's docstring."""
    # PINNED_EXAMPLES make 1, 1, 4, 2 and 3 operator calls: 2.2 per run; +1 extraction. A phase's
    # calls are rounded up.
    per_run, scored = 2.2, 3.2
    task = ArithTask()
    val = select(task.problems("validate"), 4, 0)  # demo: 4 problems, seed 0
    test = select(task.problems("test"), 20, 0)  # demo: 20 test problems
    toy_prompt = math.ceil(len("What is 6 + 2 - 3?") / 4) + 100  # 105
    val_prompt = math.ceil(sum(len(p.inputs) for p in val) / len(val) / 4) + 100
    test_prompt = math.ceil(sum(len(p.inputs) for p in test) / len(test) / 4) + 100
    # one iteration: 4 problems x k=4 = 16 workflows, 1 attempt each, r = 1, 160-token completions
    it = [(math.ceil(16 * per_run), toy_prompt, 48), (math.ceil(16 * 1 * scored), val_prompt, 160)]
    # run.compare: the base and the trained generator, 1 workflow per test problem each
    ev = [(round(20 * per_run), toy_prompt, 48), (round(20 * 1 * scored), test_prompt, 160)]
    phases = it * 2 + ev * 2  # 2 iterations, 2 evaluations
    calls = sum(c for c, _, _ in phases)
    prompt = sum(c * p for c, p, _ in phases)
    completion = sum(c * o for c, _, o in phases)
    return {"calls": calls, "tokens": prompt + completion, "cost": (prompt * 0.15 + completion * 0.60) / 1e6,
            "iteration_calls": math.ceil(16 * per_run) + math.ceil(16 * scored)}


def test_estimate_matches_the_hand_computation(tmp_path):
    hand = hand_estimate()
    assert hand["calls"] == 2 * (36 + 52) + 2 * (44 + 64)
    with FakeOpenAI() as server:
        argv = ["optimize", "--dry-run", "--executor", "openai", "--executor-model", "gpt-4o-mini",
                "--base-url", server.base_url, "--run-dir", str(tmp_path / "run"), *SIZES]
        cfg = flags.build_config(cli.parser().parse_args(argv))
        plan = make_plan(cfg, "optimize")
        res = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT),
                                  "PINNED_EXAMPLES": json.dumps(PINNED_EXAMPLES)})
        assert server.requests == []  # no executor call (GET /models is the only request it saw)
    assert plan.price == (0.15, 0.60) and plan.calls_per_run == pytest.approx(2.2)
    assert plan.total_calls() == hand["calls"] and plan.total_tokens() == hand["tokens"]
    assert plan.total_cost() == pytest.approx(hand["cost"], rel=1e-12)
    assert plan.stages[0].calls() == hand["iteration_calls"] and plan.stages[0].count == 2
    assert plan.stages[0].train_steps == 12 and plan.stages[1].count == 2
    out, probe = res.stdout.splitlines(), json.loads(res.stdout.splitlines()[-1])
    assert probe == {"rc": 0, "heavy": []}, res.stderr  # no backend, torch or mlx imported: no weights
    total = next(line for line in out if line.startswith("total:"))
    assert f"{int(hand['calls']):,} executor calls" in total and f"${hand['cost']:,.4f}" in total
    assert not (tmp_path / "run").exists()


def test_price_override_and_evaluate(tmp_path, capsys):
    with FakeOpenAI() as server:
        rc = cli.main(["evaluate", "--dry-run", "--iteration", "0", "--run-dir", str(tmp_path / "new"),
                       "--runs", "1", "--set", "executor.max_tokens=160", "--set", "generator.max_attempts=1",
                       "--executor", "openai", "--executor-model", "my-model", "--base-url", server.base_url,
                       "--set", "executor.price_in_per_mtok=2", "--set", "executor.price_out_per_mtok=8",
                       "--test-problems", "10"])
        assert server.requests == []
    out = capsys.readouterr().out
    assert rc == 0 and "the base model" in out and "$2 in / $8 out" in out
    # 10 test problems: 10 toy runs x 2.2 calls (105 + 48 tokens) and 10 runs x 3.2 calls (r = 1, 160 tokens)
    test = select(ArithTask().problems("test"), 10, 0)
    prompt = math.ceil(sum(len(p.inputs) for p in test) / len(test) / 4) + 100
    cost = (22 * (105 * 2 + 48 * 8) + 32 * (prompt * 2 + 160 * 8)) / 1e6
    assert f"cost at most ${cost:,.4f}" in out
    assert not (tmp_path / "new").exists()


def test_refusals_before_any_work(tmp_path, capsys):
    rc = cli.main(["optimize", "--dry-run", "--executor", "openai", "--executor-model", "gpt-4o-mini",
                   "--api-key-env", "SCOREFLOW_TEST_UNSET_KEY"])
    assert rc == 2 and "SCOREFLOW_TEST_UNSET_KEY is not set" in capsys.readouterr().err
    rc = cli.main(["evaluate", "--dry-run", "--run-dir", str(tmp_path / "none")])
    assert rc == 2 and "--iteration 0" in capsys.readouterr().err


def test_unknown_price_and_resumed_runs(tmp_path):
    price, source = executor_price(ExecutorConfig(kind="openai", model="my-model"))
    assert price is None and "no built-in price" in source
    assert executor_price(ExecutorConfig(kind="openai", model="gpt-4o-mini-2024-07-18"))[0] == (0.15, 0.60)
    assert executor_price(ExecutorConfig(kind="local"))[0] == (0.0, 0.0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "iteration", "iteration": 1}) + "\n")
    plan = make_plan(build({"run": {"iterations": 3}}), "optimize", run)
    assert plan.stages[0].count == 2 and "already done" in plan.notes[0]


def test_workflow_calls():
    assert workflow_calls("async def run_workflow(self):\n    return await self.custom(input=self.problem, "
                          "instruction='x')") == 1
    loop = ("async def run_workflow(self):\n    xs = []\n    for i in range(5):\n"
            "        xs.append(await self.custom(input=self.problem, instruction='x'))\n"
            "    return await self.sc_ensemble(solutions=xs, problem=self.problem)")
    assert workflow_calls(loop) == 6
    assert workflow_calls("not python (") == 0
