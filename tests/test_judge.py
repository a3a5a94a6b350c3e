"""The judged test metric (issue 18, item 4): for MATH, HotpotQA and DROP, `scoreflow evaluate`
asks the executor for a 1/0 verdict on each test answer and records `judged_solve_rate` beside the
exact `solve_rate`, as the reference protocol does. The real loop, sandbox, run directory and CLI
run on a scripted backend whose executor plays a fake judge; the reference's HotpotQA length-ratio
guard; the dashboard, `runs` and the report; and one short run on the embedded SmolLM2 (slow)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Sequence

import pytest

from fake_backend import FakeBackend
from scoreflow.cli import main as cli
from scoreflow.model.backend import Completion, Messages, SamplingParams
from scoreflow.execute.executor import Executor, Reply
from scoreflow.tasks import load
from scoreflow.tasks.base import Problem
from scoreflow.tasks.judge import judge, length_guard

# (question, gold solution, the executor's answer, what the fake judge says of it)
MATH = [
    ("What is $1+1$?", "So $1+1=\\boxed{2}$.", "\\boxed{2}", "yes"),  # exact 1, judged 1
    ("What is $\\frac{1}{2}+\\frac{1}{3}$?", "The sum is $\\boxed{\\frac{5}{6}}$.", "five sixths", "yes"),  # 0, 1
    ("What is $2 \\cdot 3$?", "It is $\\boxed{6}$.", "\\boxed{7}", "no"),  # 0, 0
]
EXACT, JUDGED = [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]
WORKFLOW = '''async def run_workflow(self):
    exact = await self.custom(input=self.problem, instruction="Compute the exact value and give only the final answer in a box.")
    if not exact.strip():
        exact = await self.custom(input=self.problem, instruction="Give the final answer in a box.")
    return exact'''


class JudgingBackend(FakeBackend):
    """As generator, always WORKFLOW (one executor call); as executor, the answers of
    MATH above, the answer extraction keeping the solution, and a fake judge that answers yes or no
    from the table (it records each judge prompt)."""

    judged: list[str] = []  # judge prompts, across the backends of one test

    def generate(self, prompts: Sequence[Messages], params: SamplingParams, *, adapter: bool = True) -> list[Completion]:
        if adapter:
            self.generated += len(prompts)
            return [Completion(f"<graph>\n{WORKFLOW}\n</graph>", 40, True) for _ in prompts]
        return super().generate(prompts, params, adapter=False)

    def answer(self, prompt: str) -> str:
        if prompt.startswith("You grade answers"):
            JudgingBackend.judged.append(prompt)
            response = prompt.rsplit("Response: ", 1)[1].strip()
            verdict = next((v for q, _, a, v in MATH if f"Question: {q}" in prompt and response in (a, a[7:-1])), "no")
            return f"<verdict>{verdict}</verdict>"
        if prompt.startswith("Problem: "):  # the answer extraction: keep the workflow's answer
            return prompt.split("\n\nSolution: ", 1)[1].split("\n\n", 1)[0].strip()
        return next((a for q, _, a, _ in MATH if q in prompt), "\\boxed{0}")


def math_data(folder: Path) -> Path:
    """MATH in AFlow's split format (`problem`, `solution` with a boxed answer, `level`, `type`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("validate", "test"):
        (folder / f"math_{split}.jsonl").write_text("".join(
            json.dumps({"problem": q, "solution": s, "level": "Level 5", "type": "Prealgebra"}) + "\n"
            for q, s, _, _ in MATH))
    return folder


def records(run: Path, name: str) -> list[dict]:
    p = run / f"{name}.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.is_file() else []


@pytest.fixture
def judging(monkeypatch):
    JudgingBackend.judged = []
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: JudgingBackend())
    return JudgingBackend.judged


def evaluate(tmp_path: Path, run: Path, *extra: str) -> int:
    return cli.main(["evaluate", "--task", "math", "--data", str(math_data(tmp_path / "data")), "--iteration", "0",
                     "--run-dir", str(run), "--runs", "1", "--no-dashboard", *extra])


def test_evaluate_math_records_the_judged_and_the_exact_solve_rate(tmp_path, judging, capsys):
    run = tmp_path / "run"
    assert evaluate(tmp_path, run) == 0
    [m] = [m for m in records(run, "metrics") if m["kind"] == "evaluate"]
    assert m["scores"] == EXACT and m["solve_rate"] == pytest.approx(1 / 3)
    assert m["judged_scores"] == JUDGED and m["judged_solve_rate"] == pytest.approx(2 / 3)
    evals = sorted(records(run, "test_executions"), key=lambda r: r["problem"])
    assert [(r["score"], r["judged"]) for r in evals] == list(zip(EXACT, JUDGED))
    assert len(judging) == 3  # once per test run
    assert any("Reference answer: 2\n" in p and p.endswith("Response: 2") for p in judging)  # the boxed content
    assert any("Reference answer: \\frac{5}{6}\n" in p and p.endswith("Response: five sixths") for p in judging)
    assert not any("\\boxed" in p.rsplit("Response: ", 1)[1] for p in judging)
    out = capsys.readouterr().out
    assert "test solve rate 0.333 | judged 0.667 |" in out, out  # the plain reporter's line
    # the judge's calls go through the run's executor: counted in its usage, so the spend caps see them
    calls_judged = json.loads((run / "status.json").read_text())["usage"]["calls"]
    off = tmp_path / "off"
    assert evaluate(tmp_path, off, "--set", "run.judge=false") == 0
    [m_off] = [m for m in records(off, "metrics") if m["kind"] == "evaluate"]
    assert "judged_solve_rate" not in m_off and m_off["scores"] == EXACT
    assert all("judged" not in r for r in records(off, "test_executions"))
    assert len(judging) == 3  # no judge call with run.judge = false
    assert calls_judged - json.loads((off / "status.json").read_text())["usage"]["calls"] == 3


def test_a_resumed_evaluation_does_not_judge_twice(tmp_path, judging):
    run = tmp_path / "run"
    assert evaluate(tmp_path, run) == 0
    before = records(run, "test_executions")
    # as if killed after the first test run was recorded: that run and its verdict stay
    (run / "test_executions.jsonl").write_text(json.dumps(before[0]) + "\n")
    (run / "metrics.jsonl").write_text("")
    judging.clear()
    assert evaluate(tmp_path, run) == 0  # an existing run: evaluate resumes it
    after = records(run, "test_executions")
    assert after[0] == before[0] and len(after) == 3
    kept = MATH[before[0]["problem"]][0]
    assert len(judging) == 2 and not any(f"Question: {kept}\n" in p for p in judging)
    assert sorted((r["problem"], r["judged"]) for r in after) == list(enumerate(JUDGED))
    [m] = [m for m in records(run, "metrics") if m["kind"] == "evaluate"]
    assert m["judged_scores"] == JUDGED and m["scores"] == EXACT
    judging.clear()
    assert evaluate(tmp_path, run) == 0  # finished: read back, nothing asked
    assert judging == [] and len(records(run, "metrics")) == 1
    # runs recorded with judging off, resumed with it on: no verdict for them, so no judged rate
    off = tmp_path / "off"
    assert evaluate(tmp_path, off, "--set", "run.judge=false") == 0
    first = records(off, "test_executions")[0]
    (off / "test_executions.jsonl").write_text(json.dumps(first) + "\n")
    (off / "metrics.jsonl").write_text("")
    assert evaluate(tmp_path, off, "--set", "run.judge=true") == 0  # run.judge may change on resume
    [m] = [m for m in records(off, "metrics") if m["kind"] == "evaluate"]
    assert m["judged_solve_rate"] is None and m["scores"] == EXACT


def test_runs_report_and_dashboard_show_the_judged_rate(tmp_path, judging, capsys):
    from scoreflow.ui.dashboard import iteration_line
    from scoreflow.ui.view import iterations_table
    from scoreflow.report.report import load_runs, markdown
    from rich.console import Console

    run = tmp_path / "run"
    assert evaluate(tmp_path, run) == 0
    capsys.readouterr()
    assert cli.main(["runs", str(run)]) == 0
    out = capsys.readouterr().out
    assert "judged" in out and "0.667" in out and "0.333" in out, out
    md = markdown(load_runs([run]))
    assert "| solve rate | 95% CI | judged solve rate |" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| 0 (base model)"))
    assert "0.333" in row and row.rstrip(" |").endswith("0.667"), row
    [m] = [m for m in records(run, "metrics") if m["kind"] == "evaluate"]
    assert iteration_line(m).startswith("evaluation done · adapter of iteration 0 · test solve rate 0.333 · judged 0.667")
    it = {"kind": "iteration", "iteration": 1, "valid": 2, "workflows": 4, "valid_rate": 0.5,
          "first_attempt_valid_rate": 0.5, "mean_score": 0.5, "solve_rate": 0.25, "pairs": 2, "loss": 0.6,
          "margin": 0.1, "seconds": 60}
    console = Console(width=120, record=True)
    console.print(iterations_table([it, m]))
    text = console.export_text()
    assert "judged" in text.splitlines()[0] and "0.667" in text, text
    console = Console(width=120, record=True)
    console.print(iterations_table([it, {**m, "judged_solve_rate": None}]))
    assert "judged" in console.export_text()
    console = Console(width=120, record=True)
    console.print(iterations_table([it]))  # no judged test row: no judged column
    assert "judged" not in console.export_text()


# ---- the judge: which tasks, what it sees, the HotpotQA guard ------------------------------------

class Scripted(Executor):
    def __init__(self, replies: list[str]):
        super().__init__()
        self.replies, self.prompts = list(replies), []

    async def _chat(self, messages, max_tokens, temperature):
        self.prompts.append(messages[-1]["content"])
        reply = Reply(self.replies.pop(0), 10, 2)
        self._account(reply, 0.0)
        return reply


def test_judged_tasks_and_the_hotpotqa_length_ratio_guard():
    assert {n for n in ("gsm8k", "math", "humaneval", "mbpp", "hotpotqa", "drop", "arith") if load(n).judged} == \
        {"math", "hotpotqa", "drop"}
    hotpot, drop = load("hotpotqa"), load("drop")
    assert hotpot.judge_length_ratio == 10 and not drop.judge_length_ratio
    p = Problem("h", "Which country?", "ctx", "France")  # 6 characters
    # the reference (benchmark/hotpotqa.py): ratio = len(output) / len(answer); >= 10 or <= 1/10 scores 0
    assert length_guard(hotpot, p, "x" * 60) and not length_guard(hotpot, p, "x" * 59)
    assert length_guard(hotpot, p, "") and not length_guard(hotpot, p, "x")
    long_gold = Problem("h2", "q", "ctx", "x" * 30)
    assert length_guard(hotpot, long_gold, "abc") and not length_guard(hotpot, long_gold, "abcd")
    assert length_guard(hotpot, Problem("h3", "q", "ctx", ""), "France")  # no gold: 0, as there
    assert not length_guard(drop, p, "x" * 600)
    ex = Scripted(["<verdict>yes</verdict>"])
    assert asyncio.run(judge(ex, hotpot, p, "The country in question is, of course, the French Republic ok")) == 0.0
    assert ex.prompts == [] and ex.usage.calls == 0  # guarded: the executor is not asked
    assert asyncio.run(judge(ex, hotpot, p, "France")) == 1.0 and ex.usage.calls == 1


def test_a_judge_call_counts_against_the_spend_cap():
    from scoreflow.errors import StopRun

    task = load("math")
    ex = Scripted(["<verdict>yes</verdict>", "<verdict>yes</verdict>"])
    ex.set_caps(max_total_tokens=12)
    assert asyncio.run(judge(ex, task, task.toy, "\\boxed{\\frac{5}{6}}")) == 1.0
    assert "Response: \\frac{5}{6}" in ex.prompts[0]
    with pytest.raises(StopRun):
        asyncio.run(judge(ex, task, task.toy, "\\boxed{\\frac{5}{6}}"))


# ---- the embedded model --------------------------------------------------------------------------

class FixedWorkflow:
    """The real backend, except that as generator it writes WORKFLOW: whether SmolLM2-135M writes a
    valid maths workflow for 2 problems is chance, and the judge is asked only about runs of valid
    ones. The executor, the answer extraction and the judge are the real model."""

    def __init__(self, inner):
        self.inner, self.judge_replies = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts: Sequence[Messages], params: SamplingParams, *, adapter: bool = True) -> list[Completion]:
        if adapter:
            return [Completion(f"<graph>\n{WORKFLOW}\n</graph>", 40, True) for _ in prompts]
        outs = self.inner.generate(prompts, params, adapter=False)
        self.judge_replies += [o.text for m, o in zip(prompts, outs) if m[-1]["content"].startswith("You grade answers")]
        return outs


def embedded_evaluate(tmp_path: Path, monkeypatch, *extra: str) -> None:
    from scoreflow.run import session
    from scoreflow.tasks.judge import parse_verdict

    made: list[FixedWorkflow] = []
    real = session.make_backend
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: made.append(FixedWorkflow(real(cfg))) or made[-1])
    run = tmp_path / "run"
    assert cli.main(["evaluate", "--task", "math", "--data", str(math_data(tmp_path / "data")), "--iteration", "0",
                     "--run-dir", str(run), "--test-problems", "2", "--runs", "1",
                     "--set", "executor.max_tokens=40", "--no-dashboard", *extra]) == 0
    [m] = [m for m in records(run, "metrics") if m["kind"] == "evaluate"]
    evals = sorted(records(run, "test_executions"), key=lambda r: r["problem"])
    assert m["problems"] == 2 and len(evals) == 2 and m["valid_rate"] == 1.0
    assert m["scores"] == [r["score"] for r in evals]
    ok = [r for r in evals if r["status"] == "ok"]
    assert len(made[0].judge_replies) == len(ok) and ok, evals  # one real judge call per answered run
    assert sorted(map(str, (r["judged"] for r in ok))) == sorted(str(parse_verdict(t)) for t in made[0].judge_replies)
    judged = [(r["judged"] or 0.0) if r["status"] == "ok" else 0.0 for r in evals]
    assert m["judged_scores"] == judged and m["judged_solve_rate"] == pytest.approx(sum(judged) / 2)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "finished" and status["usage"]["calls"] >= len(evals) + len(ok)  # runs and verdicts


@pytest.mark.slow
def test_evaluate_math_with_the_embedded_model_records_both_rates(tmp_path, monkeypatch):
    """`scoreflow evaluate --task math` on 2 test problems with SmolLM2-135M as executor and judge:
    both rates recorded, one real verdict (yes, no or unparsable) per answered test run."""
    embedded_evaluate(tmp_path, monkeypatch)
