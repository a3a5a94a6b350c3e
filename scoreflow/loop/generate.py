"""Generating valid workflows, the one way the loop, its evaluation and `solve` all use: k samples
per problem from the generator, each extracted and validated (static rules, then a toy run), an
invalid slot sampled again up to `generator.max_attempts` rounds."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable, Iterable

from scoreflow.config import GeneratorConfig
from scoreflow.execute.runner import Runner
from scoreflow.execute.workflow import extract
from scoreflow.loop.prompts import generator_messages
from scoreflow.model.backend import Sampler, SamplingParams
from scoreflow.records import WorkflowAttempt
from scoreflow.run.reporter import Reporter
from scoreflow.tasks.base import Problem

Key = tuple[int, int]  # (problem index, slot)
STOP = ("</graph>",)


def sampling_seed(run_seed: int, iteration: int, attempt: int, batch: int) -> int:
    """The seed of one generation batch: the run's seed, the iteration (0: the base model), the
    attempt round and the batch's first row, so that no two batches of a run share a seed."""
    return run_seed * 1_000_003 + iteration * 10_007 + attempt * 101 + batch


@dataclass
class Generated:
    valid: dict[Key, WorkflowAttempt] = field(default_factory=dict)  # the valid workflow per slot
    last: dict[Key, WorkflowAttempt] = field(default_factory=dict)  # the latest attempt per slot
    rejected: dict[Key, list[str]] = field(default_factory=dict)  # why each rejected attempt was rejected
    tokens: int = 0
    first_valid: int = 0  # slots valid at their first attempt

    def note(self, rec: WorkflowAttempt) -> None:
        key = rec.key
        if key not in self.last or rec.attempt >= self.last[key].attempt:
            self.last[key] = rec
        self.tokens += rec.tokens
        if rec.valid:
            self.valid[key] = rec
            self.first_valid += rec.attempt == 0
        else:
            self.rejected.setdefault(key, []).append(rec.reason)

    def attempts(self, key: Key) -> int:
        return self.last[key].attempt + 1 if key in self.last else 0


async def generate(sampler: Sampler, runner: Runner, problems: list[Problem], g: GeneratorConfig, *, seed: int,
                   iteration: int, k: int | None = None, explore: bool = False, test: bool = False,
                   known: Iterable[WorkflowAttempt] = (), record: Callable[[WorkflowAttempt], None] | None = None,
                   reporter: Reporter | None = None, after_round: Callable[[], None] | None = None) -> Generated:
    """k valid workflows per problem where the generator gets there within `g.max_attempts` rounds.
    `explore`: the optimisation's samples, which see the few-shot examples rotated
    (`generator.explore_examples`). `test`: a test split's, first attempted at `test_temperature`.
    `known`: attempts recorded before (a resumed run), not generated again; `record` gets each new one."""
    task, reporter = runner.task, reporter or Reporter()
    k = k or g.workflows_per_problem
    gen = Generated()
    for r in known:
        gen.note(r)
    for attempt in range(g.max_attempts):
        todo = [(p, j) for p in range(len(problems)) for j in range(k)
                if (p, j) not in gen.valid and gen.attempts((p, j)) == attempt]
        if not todo:
            continue
        reporter.stage(iteration, "generate", len(todo))
        texts: list[tuple[Key, str, int]] = []
        rotate = explore and g.explore_examples  # the k samples start from different examples
        for c in range(0, len(todo), g.batch_size):
            chunk = todo[c:c + g.batch_size]
            params = SamplingParams(g.attempt_temperature(attempt, test), g.top_p, g.max_new_tokens, STOP,
                                    seed=sampling_seed(seed, iteration, attempt, c))
            messages = [generator_messages(task, problems[p], g.hide_numbers, p + j if rotate else 0) for p, j in chunk]
            outs = await asyncio.to_thread(sampler.generate, messages, params)
            texts += [(key, o.text, o.tokens) for key, o in zip(chunk, outs)]
            reporter.advance(len(chunk))
        reporter.stage(iteration, "validate", len(texts))

        async def check(key: Key, text: str, ntok: int) -> None:
            source = extract(text)
            c = await runner.validate(source, problems[key[0]])
            rec = WorkflowAttempt(iteration=iteration, problem=key[0], problem_id=problems[key[0]].id, slot=key[1],
                                  attempt=attempt, valid=c.ok, reason=c.reason, tokens=ntok, text=text, source=source)
            if record is not None:
                record(rec)
            gen.note(rec)
            reporter.workflow(c.ok, c.reason)
            reporter.advance()

        await gather(check(*t) for t in texts)
        if after_round is not None:
            after_round()
    return gen


async def gather(coros) -> None:
    """Run the coroutines together; the rest are cancelled when one fails."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
