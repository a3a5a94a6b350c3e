"""Running one workflow on one problem: the sandboxed run, operator calls answered in this
process, the answer-extraction call, and the score. Scores are computed here, never in the sandbox."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from scoreflow.execute import workflow as wf
from scoreflow.execute.dependence import Call, perturbed_answers, spelled_words, twin_numbers, verdict
from scoreflow.execute.executor import Executor
from scoreflow.execute.operators import Context, extract_answer, for_task
from scoreflow.records import Execution
from scoreflow.errors import InfraError
from scoreflow.sandbox.parent import Sandbox
from scoreflow.tasks.base import Problem, Task


class Runner:
    def __init__(self, task: Task, executor: Executor, sandbox: Sandbox, *, max_tokens: int | None = None,
                 extract: bool = True):
        self.task, self.executor, self.sandbox = task, executor, sandbox
        self.max_tokens = max_tokens
        self.extract = extract and task.extract is not None
        self.operators = for_task(task)

    def check(self, source: str | None, problem: Problem | None = None) -> wf.Check:
        """The static policy and the task family's rule against problem-specific workflows."""
        return wf.check(source, self.task.operators, self.task.template, self.task.similarity_threshold,
                        attributes=wf.ATTRIBUTES_OF_SELF, family=self.task.family,
                        problem=problem.question if problem is not None else None)

    async def run(self, source: str, problem: Problem, *, rep: int = 0, extract: bool = True, score: bool = True,
                  max_tokens: int | None = None, record: list[Call] | None = None) -> Execution:
        """Execute `source` on `problem`: the execution's result (where it belongs, iteration, slot and
        run, is the caller's to fill in). `extract`: the answer-extraction call (where the task has
        one and the runner does it); `score`: the task's score against the gold answer; `record`
        gets each operator call's output. Raises InfraError when the executor is unreachable after
        its retries (an infrastructure failure)."""
        t0 = time.monotonic()
        ctx = Context(self.executor, self.sandbox, self.task, problem, max_tokens or self.max_tokens, rep=rep)

        async def handler(method: str, args: list, kwargs: dict) -> Any:
            op = self.operators.get(method)
            if op is None:
                raise AttributeError(f"no operator {method}")
            out = await op(ctx, args, kwargs)
            if record is not None:
                record.append(Call(method, out))
            return out

        res = await self.sandbox.run_workflow(source, problem.attributes(), sorted(self.operators), handler)
        out = Execution(status=res.status, output=res.output, reason=res.error or "", calls=ctx.calls, tokens=ctx.tokens)
        if res.status == "ok" and not (res.output or "").strip():
            out.status, out.reason = "error", "run_workflow returned an empty result"
        if out.status == "ok" and (extract or score):
            answer = res.output or ""
            if extract and self.extract:
                answer = await extract_answer(ctx, answer)
            out.answer = answer
            if score:
                out.score = float(await asyncio.to_thread(self.task.score, problem, answer))
            out.calls, out.tokens = ctx.calls, ctx.tokens
        if any(self.executor.price):  # an executor that prices its calls: the run's spend
            out.cost_usd = round(ctx.cost_usd, 8)
        out.seconds = time.monotonic() - t0
        return out

    async def validate(self, source: str | None, problem: Problem | None = None, *, max_tokens: int = 48) -> wf.Check:
        """The static policy and rules (against `problem`, the one it was written for); a run on the
        task's toy problem that must return a non-empty result; then the same run with the operators'
        outputs perturbed, in which the answer must move (dependence.py). The perturbed runs call no
        model."""
        c = self.check(source, problem)
        if not c.ok:
            return c
        assert source is not None
        calls: list[Call] = []
        out = await self.run(source, self.task.toy, extract=False, score=False, max_tokens=max_tokens, record=calls)
        if out.status != "ok":
            return wf.Check(False, f"toy run {out.status}: {out.reason}"[:300])
        return await self.answer_moves(source, out.output or "", calls)

    async def answer_moves(self, source: str, answer: str, calls: list[Call]) -> wf.Check:
        """The toy run's `answer` against the answers with its operators' outputs (`calls`) perturbed."""
        toy, twin = self.task.toy, self.task.twin
        perturbed = await perturbed_answers(self.sandbox, source, (twin or toy).attributes(), sorted(self.operators),
                                            calls, spelled_words(wf.literal_strings(source)), twin_numbers(toy, twin))
        return verdict(answer, perturbed, wf.ANSWER_RULES.get(self.task.family))


__all__ = ["Runner", "Execution", "InfraError"]
