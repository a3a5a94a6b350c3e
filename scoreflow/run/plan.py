"""`--dry-run`: what `optimize` or `evaluate` would do and what its executor would cost, from the
configuration and the offline part of the preflight (no weights loaded, no executor called). The
network checks (the executor's server, a hub model) come after the plan is printed, so that the
price shows even when the server cannot be reached.

The estimate, per phase of work (stated in the printed plan, so it can be checked by hand):
- executor calls per workflow run = the mean number of operator calls in the task's few-shot example
  workflows (what the generator imitates; `for _ in range(N)` counts N times), else in its template;
  plus one answer-extraction call per scored run when the task extracts answers;
- each generated workflow attempt is validated by one run on the task's toy problem (completions
  capped at VALIDATE_TOKENS, no extraction); attempts are counted at their maximum (max_attempts);
- each valid workflow runs `executor.runs` times on its problem;
- prompt tokens per call = problem characters / CHARS_PER_TOKEN (rounded up, the mean over the
  problems used) + OPERATOR_PROMPT_TOKENS for the operator's instructions;
- completion tokens per call = the call's limit (executor.max_tokens): an upper bound;
- cost = prompt tokens x input price + completion tokens x output price, per million tokens, from
  executor.price_in_per_mtok / price_out_per_mtok when set, else the built-in table (executor.py).
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

CHARS_PER_TOKEN = 4
OPERATOR_PROMPT_TOKENS = 100
VALIDATE_TOKENS = 48  # Runner.validate's completion limit on the toy problem


@dataclass
class Phase:
    """Executor work of one kind: `runs` workflow runs of `calls_per_run` calls each."""

    name: str
    runs: int
    calls_per_run: float
    prompt_per_call: int
    completion_per_call: int

    @property
    def calls(self) -> int:
        return math.ceil(round(self.runs * self.calls_per_run, 9))  # 20 x 2.2 is 44.000000000000007 in floats

    @property
    def prompt_tokens(self) -> int:
        return self.calls * self.prompt_per_call

    @property
    def completion_tokens(self) -> int:
        return self.calls * self.completion_per_call

    def cost(self, price: tuple[float, float]) -> float:
        return (self.prompt_tokens * price[0] + self.completion_tokens * price[1]) / 1e6


@dataclass
class Stage:
    """An iteration of the loop or one evaluation on the test split."""

    name: str
    problems: int
    workflows: int
    attempts: int  # generation attempts at most (workflows x max_attempts)
    generator_tokens: int  # at most
    phases: list[Phase] = field(default_factory=list)
    train_steps: int = 0
    count: int = 1  # how many such stages the command runs

    def calls(self) -> int:
        return sum(p.calls for p in self.phases)

    def tokens(self) -> int:
        return sum(p.prompt_tokens + p.completion_tokens for p in self.phases)

    def cost(self, price: tuple[float, float]) -> float:
        return sum(p.cost(price) for p in self.phases)


@dataclass
class Plan:
    command: str
    task: str
    preset: str
    generator: str
    executor: str
    price: tuple[float, float] | None
    price_source: str
    calls_per_run: float
    stages: list[Stage]
    cap_usd: float = 0.0
    notes: list[str] = field(default_factory=list)

    def total_calls(self) -> int:
        return sum(s.calls() * s.count for s in self.stages)

    def total_tokens(self) -> int:
        return sum(s.tokens() * s.count for s in self.stages)

    def total_cost(self) -> float | None:
        return None if self.price is None else sum(s.cost(self.price) * s.count for s in self.stages)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(total_calls=self.total_calls(), total_tokens=self.total_tokens(), total_cost=self.total_cost())
        return out

    def text(self) -> str:
        return render(self)


def workflow_calls(source: str) -> int:
    """Operator calls (`await self.op(...)`) in a workflow, a call inside `for _ in range(N)` counted N times."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return 0

    def count(node: ast.AST, times: int) -> int:
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and getattr(node.iter.func, "id", "") == "range":
            args = node.iter.args
            if len(args) == 1 and isinstance(args[0], ast.Constant) and isinstance(args[0].value, int):
                times *= max(0, args[0].value)
        found = 0
        if (isinstance(node, ast.Await) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Attribute) and getattr(node.value.func.value, "id", "") == "self"):
            found = times
        return found + sum(count(child, times) for child in ast.iter_child_nodes(node))

    return count(tree, 1)


def calls_per_run(task) -> float:
    sources = [source for _, source in task.examples] or [task.template]
    return mean(workflow_calls(s) for s in sources)


def prompt_tokens(problems: list) -> int:
    chars = mean(len(p.inputs) for p in problems) if problems else 0
    return math.ceil(chars / CHARS_PER_TOKEN) + OPERATOR_PROMPT_TOKENS


def executor_price(ex) -> tuple[tuple[float, float] | None, str]:
    """(input, output) USD per million tokens and where it comes from; None when unknown."""
    from scoreflow.execute.usage import price_for

    if ex.kind == "local":
        price, source = (0.0, 0.0), "local model in this process: no charge"
    else:
        found = price_for(ex.model)
        if found:
            price, source = found, f"built-in price table ({ex.model})"
        elif ex.base_url:
            price, source = (0.0, 0.0), "self-hosted server, no built-in price: counted as free"
        else:
            price, source = None, f"no built-in price for {ex.model!r}"
    if ex.price_in_per_mtok >= 0 or ex.price_out_per_mtok >= 0:
        base = price or (0.0, 0.0)
        price = (ex.price_in_per_mtok if ex.price_in_per_mtok >= 0 else base[0],
                 ex.price_out_per_mtok if ex.price_out_per_mtok >= 0 else base[1])
        source = "executor.price_in_per_mtok / price_out_per_mtok"
    return price, source


def stage(name: str, cfg, task, problems: list, k: int, per_run: float, train: bool) -> Stage:
    g, ex = cfg.generator, cfg.executor
    workflows = len(problems) * k
    attempts = workflows * g.max_attempts
    extract = 1 if ex.extract_answer and task.extract is not None else 0
    phases = [Phase("validate: toy-problem runs", attempts, per_run, prompt_tokens([task.toy]),
                    min(VALIDATE_TOKENS, ex.max_tokens)),
              Phase("execute: workflow runs", workflows * ex.runs, per_run + extract, prompt_tokens(problems),
                    ex.max_tokens)]
    t = cfg.train
    pairs = len(problems) if t.loss == "grpo" else t.pairs  # grpo: batch_size counts problems, at most all
    steps = -(-pairs // t.batch_size) * t.epochs if train else 0
    return Stage(name, len(problems), workflows, attempts, attempts * g.max_new_tokens, phases, steps)


def make_plan(cfg, command: str, run_dir: Path | None = None, evaluate_after: bool = False,
              iteration: int | None = None) -> Plan:
    """The plan of `command` ("optimize" or "evaluate") after the preflight (which raises on bad input)."""
    from scoreflow.run.preflight import preflight
    from scoreflow.records import IterationMetrics
    from scoreflow.run.rundir import RunDir
    from scoreflow.run.session import run_problems

    splits = ("test",) if command == "evaluate" else (("validate", "test") if evaluate_after or cfg.run.compare
                                                       else ("validate",))
    task = preflight(cfg, splits, network=False)
    per_run = calls_per_run(task)
    r = cfg.run
    stages: list[Stage] = []
    notes: list[str] = []
    test = run_problems(cfg, task, "test") if "test" in splits else []
    if command == "optimize":
        problems = run_problems(cfg, task)
        done = set()
        if run_dir is not None:
            done = {m.iteration for m in RunDir(run_dir).read("metrics") if isinstance(m, IterationMetrics)}
        left = [i for i in range(1, r.iterations + 1) if i not in done]
        if done:
            notes.append(f"resuming: iteration(s) {', '.join(map(str, sorted(done)))} already done")
        it = stage("per iteration", cfg, task, problems, cfg.generator.workflows_per_problem, per_run, True)
        it.count = len(left)
        stages.append(it)
        evals = ({0, r.iterations} if r.compare else set()) | ({r.iterations} if evaluate_after else set())
        if evals:
            ev = stage("per evaluation on the test split", cfg, task, test, 1, per_run, False)
            ev.count = len(evals)
            who = ", ".join("the base generator" if i == 0 else f"the adapter of iteration {i}" for i in sorted(evals))
            notes.append(f"evaluations on {len(test)} test problems: {who}")
            stages.append(ev)
    else:
        stages.append(stage("evaluation on the test split", cfg, task, test, 1, per_run, False))
        notes.append(f"generator: {'the base model' if not iteration else f'the adapter of iteration {iteration}'}")
    price, source = executor_price(cfg.executor)
    ex = cfg.executor
    executor = f"{ex.model or cfg.generator.model} (local)" if ex.kind == "local" else \
        f"{ex.model} at {ex.base_url or 'api.openai.com'}"
    return Plan(command, task.name, r.preset, cfg.generator.model, executor, price, source, per_run, stages,
                ex.max_cost_usd, notes)


def _usd(x: float | None) -> str:
    return "unknown (set executor.price_in_per_mtok and price_out_per_mtok)" if x is None else f"${x:,.4f}"


def render(plan: Plan) -> str:
    p = plan.price
    price = (f"${p[0]:g} in / ${p[1]:g} out per million tokens ({plan.price_source})" if p is not None
             else plan.price_source)
    lines = [f"dry run of `scoreflow {plan.command}`: nothing loaded, no executor called",
             f"task {plan.task} | preset {plan.preset} | generator {plan.generator}",
             f"executor {plan.executor} | price {price}",
             f"executor calls per workflow run: {plan.calls_per_run:g} (mean of the task's example workflows)"]
    lines += [f"note: {n}" for n in plan.notes]
    for s in plan.stages:
        times = f" (x{s.count})" if s.count != 1 else ""
        lines.append(f"{s.name}{times}: {s.problems} problems, {s.workflows} workflows, "
                     f"up to {s.attempts} generation attempts, <= {s.generator_tokens:,} generator tokens"
                     + (f", {s.train_steps} training steps" if s.train_steps else ""))
        for ph in s.phases:
            lines.append(f"  {ph.name}: {ph.runs} runs x {ph.calls_per_run:g} calls = {ph.calls:,} calls, "
                         f"{ph.prompt_tokens:,} prompt + {ph.completion_tokens:,} completion tokens "
                         f"({ph.prompt_per_call} + {ph.completion_per_call} per call)")
        cost = None if p is None else s.cost(p)
        lines.append(f"  executor: {s.calls():,} calls, {s.tokens():,} tokens, cost {_usd(cost)}")
    total = plan.total_cost()
    lines.append(f"total: {plan.total_calls():,} executor calls, {plan.total_tokens():,} tokens, "
                 f"cost at most {_usd(total)} (completions counted at their token limit)")
    if plan.cap_usd > 0 and total is not None and total > plan.cap_usd:
        lines.append(f"the estimate exceeds max_cost_usd ${plan.cap_usd:g}: the run would stop cleanly at the cap")
    return "\n".join(lines)
