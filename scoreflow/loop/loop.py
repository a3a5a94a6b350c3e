"""The ScoreFlow loop: generate -> validate -> execute -> pairs -> Score-DPO, once per iteration.

Every finished unit of work is appended to the run directory before the next starts, so a run
killed at any point resumes where it stopped (see rundir.py for the records).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from statistics import mean
from typing import Any, Iterable

from scoreflow.model.backend import TrainPair
from scoreflow.model.training import steps_of
from scoreflow.config import Config, train_config
from scoreflow.loop.cost import cost_weighted, workflow_costs
from scoreflow.loop.pairs import Candidate, group_pairs, sample_pairs
from scoreflow.loop.generate import Generated, Key, gather
from scoreflow.loop.generate import generate as generate_valid
from scoreflow.loop.prompts import generator_messages
from scoreflow.records import Comparison, IterationMetrics, PairRecord, TestMetrics, TrainStep, WorkflowAttempt
from scoreflow.run.rundir import RunDir
from scoreflow.run.session import Session, make_task, run_problems
from scoreflow.stats import bootstrap
from scoreflow.tasks.base import Problem, Task

def optimize(s: Session, evaluate_at: Iterable[int] = ()) -> None:
    """The loop: `run.iterations` iterations (those already recorded are skipped, so a killed run
    resumes), with test-split evaluations of the base and the trained generator when `run.compare`,
    and after each iteration in `evaluate_at`."""
    asyncio.run(_closing(s, _optimize(s, set(evaluate_at))))


async def _closing(s: Session, work):
    try:
        return await work
    finally:
        await s.executor.close()


async def _optimize(s: Session, evaluate_at: set[int]) -> None:
    cfg = s.cfg
    done = {m.iteration for m in s.run["metrics"].all() if isinstance(m, IterationMetrics)}
    if cfg.run.compare:  # the base generator on the held-out problems (read back if done; no adapter loaded yet)
        await test_solve(s, 0)
    latest = s.run.latest_adapter()
    if latest is not None:
        s.backend.load_adapter(latest[1])
        s.reporter.log(f"resumed with the adapter of iteration {latest[0]}")
    for it in range(1, cfg.run.iterations + 1):
        if it not in done:
            await _iteration(s, it, run_problems(cfg, s.task, iteration=it))
        if it in evaluate_at and it < cfg.run.iterations and not _evaluated(s, it):
            s.backend.load_adapter(s.run.adapter_dir(it))  # a resumed run holds a later one
            await test_solve(s, it)
            s.backend.load_adapter(s.run.latest_adapter()[1])
    if cfg.run.compare:
        await test_solve(s, cfg.run.iterations)
        compare(s, 0, cfg.run.iterations)


def _evaluated(s: Session, it: int) -> bool:
    return any(isinstance(m, TestMetrics) and m.iteration == it for m in s.run["metrics"].all())


async def _iteration(s: Session, it: int, problems: list[Problem]) -> None:
    cfg = s.cfg
    t0 = time.time()
    used0 = (s.executor.usage.calls, s.executor.usage.tokens)
    gen = await generate(s, it, problems, explore=True)
    workflows = gen.valid
    scores = await execute(s, it, problems, workflows)
    candidates = dict(scores)
    if cfg.train.cost_weight > 0:  # of two workflows as good, the cheaper one wins (cost.py)
        costs = workflow_costs(s.run["executions"].all(), it, scores, cfg.executor.runs)
        candidates = cost_weighted(scores, costs, cfg.train.cost_weight)
    if cfg.train.invalid_as_zero:  # a workflow that never became valid solves nothing
        floor = cfg.train.valid_floor  # and, above the floor, a valid one at least runs
        candidates = {key: floor + (1 - floor) * sc for key, sc in candidates.items()}
        candidates.update({key: 0.0 for key in gen.last if key not in workflows})
    pairs = make_pairs(s, it, candidates)
    stats = await asyncio.to_thread(train, s, it, problems, gen.last, pairs)
    slots = len(problems) * cfg.generator.workflows_per_problem
    metrics = IterationMetrics(
        iteration=it, problems=len(problems), workflows=slots,
        valid=len(workflows), valid_rate=len(workflows) / slots,
        first_attempt_valid_rate=gen.first_valid / slots,
        mean_score=mean(scores.values()) if scores else 0.0,
        solve_rate=sum(scores.values()) / slots,
        pairs=len(pairs), unique_pairs=len({(p.problem, p.chosen, p.rejected) for p in pairs}),
        **stats, generator_tokens=gen.tokens,
        executor_calls=s.executor.usage.calls - used0[0], executor_tokens=s.executor.usage.tokens - used0[1],
        seconds=round(time.time() - t0, 2),
    )
    s.run["metrics"].append(metrics)
    _save_usage(s)
    s.reporter.iteration_end(metrics)


def _save_usage(s: Session) -> None:
    """Spend so far, so that a resumed run's caps count it (a kill loses at most one stage's worth)."""
    s.run.set_status("running", usage=s.executor.usage.as_dict())


# ---- 1-2. generate and validate ----------------------------------------------------------------

async def generate(s: Session, it: int, problems: list[Problem], *, records: str = "workflows",
                   k: int | None = None, explore: bool = False, test: bool = False) -> Generated:
    """The iteration's workflows (generate.py), each attempt appended to the run's `records`."""
    known = [r for r in s.run[records].all() if r.iteration == it]
    return await generate_valid(s.sampler, s.runner, problems, s.cfg.generator, seed=s.cfg.run.seed, iteration=it,
                                k=k, explore=explore, test=test, known=known, record=s.run[records].append,
                                reporter=s.reporter, after_round=lambda: _save_usage(s))


# ---- 3. execute and score ----------------------------------------------------------------------

async def execute(s: Session, it: int, problems: list[Problem], workflows: dict[Key, WorkflowAttempt], *,
            records: str = "executions", runs: int | None = None, judge: bool = False) -> dict[Key, float]:
    """Run each valid workflow r times (r executions); its score is the mean task score of its
    executions. With `judge`, each execution's record also holds `judged`: the executor's verdict on its answer (tasks/judge.py;
    0.0 for a failed run, None for an unparsable verdict), asked once, before the record is written."""
    from scoreflow.tasks.judge import judge as ask_judge

    runs = runs or s.cfg.executor.runs
    results: dict[Key, dict[int, float]] = {}
    for r in s.run[records].all():
        if r.iteration == it and r.key in workflows:
            results.setdefault(r.key, {})[r.run] = r.score
    todo = [(key, n) for key in sorted(workflows) for n in range(runs) if n not in results.get(key, {})]
    s.reporter.stage(it, "execute", len(workflows) * runs, done=len(workflows) * runs - len(todo))

    async def one(key: Key, n: int) -> None:
        problem = problems[key[0]]
        out = await s.runner.run(workflows[key].source, problem, rep=n)
        out = out.but(iteration=it, problem=key[0], problem_id=problem.id, slot=key[1], run=n)
        if judge:
            ok = out.status == "ok" and out.answer is not None
            out.judged = await ask_judge(s.executor, s.task, problem, out.answer) if ok else 0.0
        s.run[records].append(out)
        results.setdefault(key, {})[n] = out.score
        if len(results[key]) == runs:
            s.reporter.score(mean(results[key].values()))
        s.reporter.advance()

    await gather(one(*t) for t in todo)
    _save_usage(s)
    return {key: mean(v.values()) for key, v in results.items() if len(v) == runs}


# ---- 4. pairs ----------------------------------------------------------------------------------

def make_pairs(s: Session, it: int, scores: dict[Key, float]) -> list[PairRecord]:
    t = s.cfg.train
    old = [p for p in s.run["pairs"].all() if p.iteration == it]
    s.reporter.stage(it, "pairs", 1)
    candidates = [Candidate(p, j, sc) for (p, j), sc in sorted(scores.items())]
    if t.loss == "grpo":  # the group-relative loss trains on every pair of every group, once
        drawn = group_pairs(candidates)
    else:
        drawn = sample_pairs(candidates, t.pairs, t.sampling_alpha, seed=s.cfg.run.seed * 7919 + it, draw=t.pair_draw)
    group = ("advantage_chosen", "advantage_rejected", "weight")  # grpo's, written only under it
    out = [PairRecord(iteration=it, **{k: v for k, v in asdict(p).items() if t.loss == "grpo" or k not in group})
           for p in drawn]
    if old == out:
        s.reporter.advance()
        return old
    if old:  # cut short by a crash: rewrite this iteration's block whole
        s.run["pairs"].rewrite(p for p in s.run["pairs"].all() if p.iteration != it)
    s.run["pairs"].extend(out)
    s.reporter.advance()
    return out


# ---- 5. Score-DPO ------------------------------------------------------------------------------

def train(s: Session, it: int, problems: list[Problem], workflows: dict[Key, WorkflowAttempt],
          pairs: list[PairRecord]) -> dict[str, Any]:
    t = s.cfg.train
    adapter = s.run.adapter_dir(it)
    history = [r for r in s.run["train"].all() if r.iteration == it]
    if adapter.is_dir():  # trained before a crash; only the metrics record was missing
        s.backend.load_adapter(adapter)
        return _train_stats(history)
    ck = s.run.checkpoint_dir(it)
    resumed = max((int(p.name.split("-")[1]) for p in ck.glob("step-*")), default=0) if ck.is_dir() else 0
    if len(history) != resumed:
        s.run["train"].rewrite(r for r in s.run["train"].all() if r.iteration != it or r.step <= resumed)
    batch = train_pairs(s.task, problems, workflows, pairs, s.cfg.generator.hide_numbers)
    steps = len(steps_of(batch, train_config(s.cfg, it)))
    s.reporter.stage(it, "train", steps, done=resumed)

    def on_step(info) -> None:
        s.run["train"].append(TrainStep(iteration=it, **asdict(info)))
        s.reporter.train_step(info)
        s.reporter.advance()

    if batch:
        stats = s.backend.train(batch, train_config(s.cfg, it), on_step=on_step, checkpoint_dir=ck)
        if stats.truncated:  # the texts of a pair differ near their end: cut there, the pair teaches nothing
            s.reporter.log(f"warning: {stats.truncated} training sequences were cut at train.max_length = "
                           f"{t.max_length} tokens; raise it so that whole workflows are trained on")
    adapter.parent.mkdir(parents=True, exist_ok=True)
    s.backend.save_adapter(adapter)
    shutil.rmtree(ck, ignore_errors=True)
    return _train_stats([r for r in s.run["train"].all() if r.iteration == it])


def train_pairs(task: Task, problems: list[Problem], workflows: dict[Key, WorkflowAttempt],
                pairs: list[PairRecord], hide_numbers: bool = False) -> list[TrainPair]:
    """Sampled pair records (problem, slots, scores) as training pairs: the generator prompt, both texts."""
    return [TrainPair(generator_messages(task, problems[p.problem], hide_numbers), workflows[(p.problem, p.chosen)].text,
                      workflows[(p.problem, p.rejected)].text, p.score_chosen, p.score_rejected,
                      *((p.advantage_chosen, p.advantage_rejected, p.weight) if p.has("weight") else ()))
            for p in pairs]


def recorded_pairs(cfg: Config, run_dir: Path, it: int) -> list[TrainPair]:
    """The training pairs of iteration `it` of an existing run, as its training step built them."""
    task = make_task(cfg)
    problems = run_problems(cfg, task, iteration=it)
    gen = Generated()
    run = RunDir(run_dir)
    for r in run.read("workflows"):
        if r.iteration == it:
            gen.note(r)
    pairs = [p for p in run.read("pairs") if p.iteration == it]
    return train_pairs(task, problems, gen.last, pairs, cfg.generator.hide_numbers)


def _train_stats(history: list[TrainStep]) -> dict[str, Any]:
    if not history:
        return {"steps": 0, "loss": None, "margin": None, "train_seconds": 0.0}
    return {"steps": len(history), "loss": mean(h.loss for h in history),
            "margin": mean(h.margin for h in history), "first_loss": history[0].loss,
            "last_loss": history[-1].loss, "train_seconds": round(sum(h.seconds for h in history), 2)}


# ---- evaluation on the test split --------------------------------------------------------------

def evaluate(s: Session, iteration: int) -> TestMetrics:
    return asyncio.run(_closing(s, test_solve(s, iteration)))


async def test_solve(s: Session, iteration: int) -> TestMetrics:
    """One workflow per test problem from the generator (adapter of `iteration`, as loaded; 0 = the
    base model), run r times; the solve rate is the mean score, a problem without a valid workflow
    scoring 0. A finished evaluation of this iteration is read back, not redone."""
    cfg = s.cfg
    old = [m for m in s.run["metrics"].all() if isinstance(m, TestMetrics) and m.iteration == iteration]
    if old:  # finished before: read back, not redone
        return old[-1]
    problems = run_problems(cfg, s.task, "test")
    t0 = time.time()
    gen = await generate(s, iteration, problems, records="test_workflows", k=1, test=True)
    judging = cfg.run.judge and s.task.judged  # the reference's judged test metric, beside the exact one
    scores = await execute(s, iteration, problems, gen.valid, records="test_executions", judge=judging)
    per_problem = [scores.get((p, 0), 0.0) for p in range(len(problems))]
    metrics = TestMetrics(iteration=iteration, split="test", problems=len(problems),
                          valid_rate=len(gen.valid) / max(1, len(problems)),
                          solve_rate=mean(per_problem) if per_problem else 0.0, scores=per_problem,
                          generator_tokens=gen.tokens, seconds=round(time.time() - t0, 2))
    if judging:  # verdicts read back from the records (a resumed evaluation's too); an unparsable one counts 0
        verdicts: dict[Key, dict[int, Any]] = {}
        for r in s.run["test_executions"].all():
            if r.iteration == iteration and r.key in scores and r.run < cfg.executor.runs:
                verdicts.setdefault(r.key, {})[r.run] = r.judged if r.has("judged") else "missing"
        # executions recorded while judging was off (then resumed with it on) have no verdict: no judged rate
        if any("missing" in v.values() for v in verdicts.values()):
            metrics.judged_solve_rate = metrics.judged_scores = None
        else:
            judged = [mean(v or 0.0 for v in verdicts[(p, 0)].values()) if (p, 0) in verdicts else 0.0
                      for p in range(len(problems))]
            metrics.judged_solve_rate, metrics.judged_scores = (mean(judged) if judged else 0.0), judged
    s.run["metrics"].append(metrics)
    s.reporter.iteration_end(metrics)
    return metrics


def compare(s: Session, base: int, trained: int) -> Comparison:
    """The trained generator against the base one on the same held-out problems: the difference
    of solve rates with a paired bootstrap 95% CI over problems."""
    records = s.run["metrics"].all()
    old = [m for m in records if isinstance(m, Comparison) and (m.base, m.trained) == (base, trained)]
    if old:  # a resumed run that had finished
        s.reporter.iteration_end(old[-1])
        return old[-1]
    ev = {m.iteration: m for m in records if isinstance(m, TestMetrics)}
    a, b = ev[trained].scores, ev[base].scores
    diff = bootstrap([a], [b])
    sources = {(r.iteration, r.problem): r.source for r in s.run["test_workflows"].all() if r.valid}
    problems = run_problems(s.cfg, s.task, "test")
    change = s.task.describe_change(problems, [sources.get((base, p)) for p in range(len(problems))],
                                    [sources.get((trained, p)) for p in range(len(problems))])
    rec = Comparison(base=base, trained=trained, problems=len(a), base_solve_rate=ev[base].solve_rate,
                     trained_solve_rate=ev[trained].solve_rate, difference=diff.as_dict(), change=change)
    s.run["metrics"].append(rec)
    s.reporter.iteration_end(rec)
    return rec
