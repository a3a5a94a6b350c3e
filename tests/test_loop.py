"""The ScoreFlow loop (scoreflow/loop/): pairs and their sampling, the generator's prompt, each iteration's
problems and learning rate, the test temperature; on the scripted backend of fake_backend.py (real loop,
sandbox, executor and run directory) and, marked slow, on the shared real runs of tests/runs.py: the
README's demo preset trains and compares, a run killed with SIGKILL at four chosen points resumes to a
complete run, and the MLX backend's run (under -m mlx)."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

import runs
from fake_backend import FakeBackend, config, write_task
from runs import check_complete, records
from scoreflow import api
from scoreflow.config import build, train_config
from scoreflow.loop.pairs import Candidate, all_pairs, group_pairs, sample_pairs
from scoreflow.loop.prompts import generator_messages
from scoreflow.run.session import select, select_fresh
from scoreflow.tasks.arith import ArithTask


# ==== Pair construction and (s_w - s_l)^alpha sampling. (was tests/test_pairs.py)

def test_every_unequal_pair_once_and_ties_dropped():
    c = [Candidate(0, 0, 1.0), Candidate(0, 1, 0.0), Candidate(0, 2, 1.0), Candidate(1, 0, 0.5), Candidate(1, 1, 0.5)]
    pairs = all_pairs(c)
    assert {(p.problem, p.chosen, p.rejected) for p in pairs} == {(0, 0, 1), (0, 2, 1)}
    assert all(p.score_chosen > p.score_rejected for p in pairs)


def test_no_pairs_across_problems():
    assert all_pairs([Candidate(0, 0, 1.0), Candidate(1, 0, 0.0)]) == []


def test_all_ties_give_nothing():
    assert sample_pairs([Candidate(0, j, 1 / 3) for j in range(5)], 100) == []


def test_group_pairs_carry_the_groups_advantages_and_weight():
    """Every unequal pair of each problem once; A = (s - mean) / population std within the problem's
    group (invalid-as-zero members included, as the candidates hold them); weight = pairs / k^2; a
    group of ties gives nothing; and the pair form sums to the per-text form for any x."""
    c = [Candidate(0, 0, 1.0), Candidate(0, 1, 0.0), Candidate(0, 2, 0.0), Candidate(0, 3, 0.0),
         Candidate(1, 0, 0.5), Candidate(1, 1, 0.5), Candidate(2, 0, 0.2), Candidate(2, 1, 0.6), Candidate(2, 2, 1.0)]
    pairs = group_pairs(c)
    assert [(p.problem, p.chosen, p.rejected) for p in pairs] == \
        [(0, 0, 1), (0, 0, 2), (0, 0, 3), (2, 1, 0), (2, 2, 0), (2, 2, 1)]
    std0 = math.sqrt((0.75 ** 2 + 3 * 0.25 ** 2) / 4)  # scores 1, 0, 0, 0: mean 1/4
    assert pairs[0].advantage_chosen == pytest.approx(0.75 / std0)
    assert pairs[0].advantage_rejected == pytest.approx(-0.25 / std0)
    assert [p.weight for p in pairs] == pytest.approx([3 / 16] * 3 + [3 / 9] * 3)
    std2 = math.sqrt(2 * 0.4 ** 2 / 3)  # scores 0.2, 0.6, 1.0: mean 0.6, the middle one's advantage 0
    assert pairs[3].advantage_chosen == 0.0 and pairs[4].advantage_chosen == pytest.approx(0.4 / std2)
    x = {0: [0.3, -1.2, 2.0, 0.7], 2: [1.5, -0.4, 0.9]}  # any per-text values
    for q, k in ((0, 4), (2, 3)):
        s = [cand.score for cand in c if cand.problem == q]
        mean = sum(s) / k
        std = math.sqrt(sum((v - mean) ** 2 for v in s) / k)
        per_text = sum((v - mean) / std * xi for v, xi in zip(s, x[q])) / k
        mine = [p for p in pairs if p.problem == q]
        pair_form = sum(p.weight * (p.advantage_chosen - p.advantage_rejected) * (x[q][p.chosen] - x[q][p.rejected])
                        for p in mine) / len(mine)
        assert pair_form == pytest.approx(per_text)


def test_sampling_frequencies_follow_cubed_gap():
    # gaps 1.0, 0.5, 0.25 -> weights 1, 1/8, 1/64
    c = [Candidate(0, 0, 1.0), Candidate(0, 1, 0.0), Candidate(1, 0, 0.75), Candidate(1, 1, 0.25),
         Candidate(2, 0, 0.5), Candidate(2, 1, 0.25)]
    n = 200_000
    drawn = Counter(p.problem for p in sample_pairs(c, n, alpha=3.0, seed=1))
    weights = {0: 1.0, 1: 0.5 ** 3, 2: 0.25 ** 3}
    total = sum(weights.values())
    for problem, w in weights.items():
        expected = n * w / total
        sd = math.sqrt(n * (w / total) * (1 - w / total))
        assert abs(drawn[problem] - expected) < 5 * sd, (problem, drawn[problem], expected)


def test_alpha_zero_is_uniform_and_seed_reproducible():
    c = [Candidate(0, 0, 1.0), Candidate(0, 1, 0.0), Candidate(1, 0, 0.3), Candidate(1, 1, 0.2)]
    n = 100_000
    drawn = Counter(p.problem for p in sample_pairs(c, n, alpha=0.0, seed=2))
    assert abs(drawn[0] - n / 2) < 5 * math.sqrt(n / 4)
    assert sample_pairs(c, 50, alpha=0, seed=3) == sample_pairs(c, 50, alpha=0, seed=3)
    assert sample_pairs(c, 50, alpha=0, seed=3) != sample_pairs(c, 50, alpha=0, seed=4)


# ==== The generator's prompt: few-shot examples in their order for training, evaluation and solve, and
# rotated per sample in optimisation with `generator.explore_examples`. (was tests/test_prompts.py)

def _example_questions(messages) -> list[str]:
    return [m["content"] for m in messages[1:-1] if m["role"] == "user"]


def test_per_problem_draw_gives_every_problem_with_pairs_its_share():
    # problem 0's four samples disagree (6 pairs); problems 1 and 2 have one pair each
    cands = [Candidate(0, j, s) for j, s in enumerate((1.0, 0.5, 0.0, 0.25))]
    cands += [Candidate(1, 0, 1.0), Candidate(1, 1, 0.5), Candidate(2, 0, 0.5), Candidate(2, 1, 0.0),
              Candidate(3, 0, 0.5), Candidate(3, 1, 0.5)]  # problem 3: a tie, no pair
    weighted = Counter(p.problem for p in sample_pairs(cands, 3000, alpha=3.0, seed=1))
    even = Counter(p.problem for p in sample_pairs(cands, 3000, alpha=3.0, seed=1, draw="per-problem"))
    assert weighted[0] > 0.6 * 3000 and 3 not in weighted
    assert set(even) == {0, 1, 2} and all(900 < even[q] < 1100 for q in (0, 1, 2))
    within = Counter((p.chosen, p.rejected) for p in sample_pairs(cands, 3000, seed=2, draw="per-problem")
                     if p.problem == 0)
    assert within[(0, 2)] > within[(1, 3)]  # inside a problem, still by (s_w - s_l)^alpha


def test_rotate_shows_the_examples_in_another_order_and_the_same_problem():
    task = ArithTask()
    problem = task.problems("validate")[0]
    n = len(task.examples)
    plain = generator_messages(task, problem, hide=True)
    assert generator_messages(task, problem, hide=True, rotate=0) == plain
    assert generator_messages(task, problem, hide=True, rotate=n) == plain
    for r in range(1, n):
        rotated = generator_messages(task, problem, hide=True, rotate=r)
        assert rotated[0] == plain[0] and rotated[-1] == plain[-1]  # system prompt and problem unchanged
        qs = _example_questions(plain)
        assert _example_questions(rotated) == qs[r:] + qs[:r]
        assert sorted(map(str, rotated)) == sorted(map(str, plain))  # the same messages, reordered


class PromptLog(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[list[str]] = []  # the examples' questions of each generator prompt
        self.trained: list = []

    def generate(self, prompts, params, *, adapter: bool = True):
        if adapter:
            self.prompts += [_example_questions(m) for m in prompts]
        return super().generate(prompts, params, adapter=adapter)

    def train(self, pairs, cfg, **kw):
        self.trained += list(pairs)
        return super().train(pairs, cfg, **kw)


def _run_prompts(tmp_path, monkeypatch, explore: bool) -> PromptLog:
    from scoreflow.cli import main as cli

    backend = PromptLog()
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: backend)
    task = write_task(tmp_path)
    assert cli.main(["optimize", *task, "--run-dir", str(tmp_path / "run"), "--iterations", "1", "--problems", "2",
                     "-k", "3", "--test-problems", "2", "--no-dashboard", "--set", "run.compare=true",
                     "--set", f"generator.explore_examples={str(explore).lower()}"]) == 0
    return backend


def test_optimisation_samples_explore_and_training_and_evaluation_use_the_order(tmp_path, monkeypatch):
    b = _run_prompts(tmp_path, monkeypatch, explore=True)
    # 2 test problems before training, 2 problems x 3 optimisation samples, 2 test problems after
    assert len(b.prompts) == 10
    base, samples, trained = b.prompts[:2], b.prompts[2:8], b.prompts[8:]
    qs = base[0]
    n = len(qs)
    assert n >= 2 and base == trained == [qs, qs]

    def rot(r: int) -> list[str]:
        return qs[r % n:] + qs[:r % n]

    assert samples == [rot(i + j) for i in range(2) for j in range(3)]  # problem i, slot j
    assert b.trained and all(_example_questions(p.prompt) == qs for p in b.trained)

    (tmp_path / "off").mkdir()
    off = _run_prompts(tmp_path / "off", monkeypatch, explore=False)
    assert len(off.prompts) == 10 and all(p == qs for p in off.prompts)


# ==== run.fresh_problems: each iteration takes problems not used yet instead of the same ones. (was
# tests/test_fresh_problems.py)

def test_fresh_iterations_cover_the_split_before_repeating():
    problems = ArithTask().problems("validate")
    assert len(problems) == 60
    ids = [[p.id for p in select_fresh(problems, 12, 3, it)] for it in range(1, 7)]
    assert ids[0] == [p.id for p in select(problems, 12, 3)]  # the first iteration is unchanged
    assert all(len(set(i)) == 12 for i in ids)
    assert len(set().union(*ids[:5])) == 60  # five iterations of 12: every problem once
    assert ids[5] == ids[0]  # then round again
    assert ids[1] != [p.id for p in select_fresh(problems, 12, 4, 2)]  # the order follows the seed
    order = [p.id for p in problems]
    assert all(i == sorted(i, key=order.index) for i in ids)  # in file order
    assert select_fresh(problems, 0, 3, 2) == problems == select_fresh(problems, 60, 3, 2)


class TrainLog(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.trained: list[list] = []  # each iteration's training pairs

    def train(self, pairs, cfg, **kw):
        self.trained.append(list(pairs))
        return super().train(pairs, cfg, **kw)


def _run_fresh(tmp_path, monkeypatch, fresh: bool) -> tuple[TrainLog, dict[int, set[str]]]:
    from scoreflow.cli import main as cli

    backend = TrainLog()
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: backend)
    task = write_task(tmp_path)  # 10 records: 2 validate problems
    run = tmp_path / "run"
    assert cli.main(["optimize", *task, "--run-dir", str(run), "--iterations", "2", "--problems", "1",
                     "-k", "2", "--no-dashboard", "--set", f"run.fresh_problems={str(fresh).lower()}"]) == 0
    seen: dict[int, set[str]] = {}
    for line in (run / "workflows.jsonl").read_text().splitlines():
        r = json.loads(line)
        seen.setdefault(r["iteration"], set()).add(r["problem_id"])
    return backend, seen


def test_the_loop_trains_each_iteration_on_its_own_problems(tmp_path, monkeypatch, capsys):
    from scoreflow.cli import main as cli
    from scoreflow.config import build
    from scoreflow.loop.loop import recorded_pairs
    from scoreflow.run.rundir import RunDir

    (tmp_path / "fresh").mkdir()
    b, seen = _run_fresh(tmp_path / "fresh", monkeypatch, fresh=True)
    assert len(seen[1]) == len(seen[2]) == 1 and seen[1] != seen[2]
    assert len(b.trained) == 2 and all(b.trained)
    questions = [{p.prompt[-1]["content"] for p in pairs} for pairs in b.trained]
    assert len(questions[0]) == len(questions[1]) == 1 and questions[0] != questions[1]
    # What the run directory records rebuilds the pairs each iteration trained on.
    run = tmp_path / "fresh" / "run"
    cfg = build(RunDir(run).read_config())
    for it in (1, 2):
        assert [(p.prompt, p.chosen, p.rejected) for p in recorded_pairs(cfg, run, it)] == \
            [(p.prompt, p.chosen, p.rejected) for p in b.trained[it - 1]]

    # `show` prints each iteration's own problem beside its workflows.
    for it, question in ((1, questions[0]), (2, questions[1])):
        capsys.readouterr()
        assert cli.main(["show", str(run), "--problem", "0", "--iteration", str(it)]) == 0
        shown = capsys.readouterr().out
        asked = next(iter(question)).split("Problem:")[-1].strip().splitlines()[0]
        assert asked and asked in shown, (asked, shown[:500])

    (tmp_path / "same").mkdir()
    _, same = _run_fresh(tmp_path / "same", monkeypatch, fresh=False)
    assert same[1] == same[2] == seen[1]


# ==== train.lr_decay: iteration i trains at learning_rate x lr_decay^(i-1). (was tests/test_lr_decay.py)

def test_train_config_decays_the_rate_by_iteration():
    cfg = build({"train": {"learning_rate": 1e-4, "lr_decay": 0.5}})
    assert [train_config(cfg, it).learning_rate for it in (1, 2, 3)] == pytest.approx([1e-4, 5e-5, 2.5e-5])
    assert train_config(build({}), 3).learning_rate == build({}).train.learning_rate  # off by default


class RateLog(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def train(self, pairs, cfg, **kw):
        self.rates.append(cfg.learning_rate)
        return super().train(pairs, cfg, **kw)


def test_the_loop_trains_each_iteration_at_its_decayed_rate(tmp_path, monkeypatch):
    from scoreflow.cli import main as cli

    backend = RateLog()
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: backend)
    task = write_task(tmp_path)
    assert cli.main(["optimize", *task, "--run-dir", str(tmp_path / "run"), "--iterations", "3", "--problems", "2",
                     "-k", "2", "--no-dashboard", "--set", "train.learning_rate=2e-4",
                     "--set", "train.lr_decay=0.25"]) == 0
    assert backend.rates == pytest.approx([2e-4, 5e-5, 1.25e-5])


# ==== `generator.test_temperature`: evaluation and `solve` generate their one workflow per problem at it (0 =
# greedy), optimisation samples at `generator.temperature`, and a retry of an invalid workflow samples at
# `generator.temperature` (a greedy retry would only repeat itself). (was tests/test_test_temperature.py)

class GreedyWritesInvalid(FakeBackend):
    """Logs the temperature of every generator call; a greedy call writes an invalid workflow."""

    def __init__(self) -> None:
        super().__init__()
        self.temperatures: list[float] = []

    def generate(self, prompts, params, *, adapter: bool = True):
        if not adapter:
            return super().generate(prompts, params, adapter=adapter)
        self.temperatures += [params.temperature] * len(prompts)
        out = super().generate(prompts, params, adapter=adapter)
        if params.temperature == 0:
            for c in out:
                c.text = "<graph>\nasync def run_workflow(self):\n    return 'no operator'\n</graph>"
        return out


def test_evaluation_and_solve_generate_at_the_test_temperature_and_retry_at_the_sampling_one(tmp_path, monkeypatch):
    backend = GreedyWritesInvalid()
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: backend)
    cfg = config(tmp_path)
    cfg["run"].update(compare=True, test_problems=2)
    cfg["generator"].update(temperature=0.7, test_temperature=0.0, max_attempts=2)
    result = api.optimize(cfg, tmp_path / "run")
    assert result.status == "finished"
    # base evaluation: 2 greedy (invalid) then 2 retries; optimisation: 2 problems x k=2; trained evaluation likewise
    assert backend.temperatures == [0.0, 0.0, 0.7, 0.7] + [0.7] * 4 + [0.0, 0.0, 0.7, 0.7]
    evaluations = [m for m in result.metrics if m["kind"] == "evaluate"]
    assert [m["valid_rate"] for m in evaluations] == [1.0, 1.0]  # every problem valid at its retry

    backend.temperatures.clear()
    with api.Solver.from_run(tmp_path / "run") as solver:
        solved = solver.solve("What do bees make?")
    assert solved.attempts == 2 and backend.temperatures == [0.0, 0.7]

    backend.temperatures.clear()
    with api.Solver.from_run(tmp_path / "run") as solver:
        solver.cfg.generator.test_temperature = 0.4  # sampled: valid at once
        assert solver.solve("What do bees make?").attempts == 1
    assert backend.temperatures == [0.4]


def test_a_run_with_its_iterations_but_no_base_evaluation_evaluates_the_base_before_comparing(tmp_path, monkeypatch):
    """As benchmarks/learning.py --retest-from starts a run (a finished run's iterations and adapters,
    none of its evaluations): run.compare evaluates the base generator, then the trained one, and
    compares them, instead of failing for want of iteration 0's evaluation."""
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: FakeBackend())
    cfg = config(tmp_path)
    cfg["run"].update(compare=True, test_problems=2)
    run = tmp_path / "run"
    first = api.optimize(cfg, run)
    assert [m["kind"] for m in first.metrics] == ["evaluate", "iteration", "evaluate", "compare"]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in first.metrics if m["kind"] == "iteration"))
    for name in ("test_workflows", "test_executions"):
        (run / f"{name}.jsonl").unlink()
    again = api.optimize(None, run, resume=True)
    assert again.status == "finished"
    assert [(m["kind"], m.get("iteration")) for m in again.metrics] == [
        ("iteration", 1), ("evaluate", 0), ("evaluate", 1), ("compare", None)]
    assert [m for m in again.metrics if m["kind"] == "compare"] == [m for m in first.metrics if m["kind"] == "compare"]


# ==== The real runs (tests/runs.py): the demo preset, kill -9 and --resume, the MLX backend (were in
# tests/test_e2e.py)

@pytest.mark.slow
def test_demo_preset_trains_and_compares_with_the_base_generator(demo_run):
    """The README's main command at smaller test sizes: the demo preset's settings (hidden numbers,
    one attempt, valid-but-wrong above invalid) form pairs and take optimiser steps on arith, and the
    run ends by printing the held-out comparison of the trained and the base generator."""
    run, out = demo_run.run_dir, demo_run.out
    assert demo_run.rc == 0, out[-3000:] + demo_run.err[-3000:]
    metrics = records(run, "metrics")
    it = next(m for m in metrics if m["kind"] == "iteration")
    assert it["pairs"] > 0 and it["steps"] > 0, it
    steps = [r for r in records(run, "train") if r["iteration"] == 1]
    assert len(steps) == it["steps"] and all(r["loss"] > 0 for r in steps)
    evaluated = sorted(m["iteration"] for m in metrics if m["kind"] == "evaluate")
    assert evaluated == [0, 1]
    compared = next(m for m in metrics if m["kind"] == "compare")
    assert compared["problems"] == 2  # --test-problems of runs.DEMO_SIZES
    d = compared["difference"]
    assert d["low"] <= d["value"] <= d["high"]
    assert abs(d["value"] - (compared["trained_solve_rate"] - compared["base_solve_rate"])) < 1e-9
    last = out.strip().splitlines()[-1]
    assert "trained vs base" in last and "95% CI" in last, last
    # no solved workflow, in training or on the test split, holds the gold answer in its source
    from scoreflow.tasks.arith import ArithTask
    from scoreflow.execute.workflow import gold_in_source

    test = ArithTask().problems("test")
    sources = {(r["iteration"], r["problem"]): r for r in records(run, "test_workflows") if r["valid"]}
    for e in records(run, "test_executions"):
        if e["score"] > 0:
            w = sources[(e["iteration"], e["problem"])]
            problem = next(p for p in test if p.id == w["problem_id"])
            assert not gold_in_source(w["source"], problem.answer), w["source"]


@pytest.mark.slow
def test_a_run_killed_at_four_points_resumes_each_time_to_a_complete_run(killed_run):
    """kill -9 during generation, execution (between two workflows' executions), training (between two
    checkpointed steps) and the held-out evaluation of the trained generator; every resume picks up
    where the last left off: what was recorded before a kill is neither redone nor lost, training goes
    on from its checkpoint, the evaluation with the saved adapter, and the finished run has every
    record exactly once."""
    k = killed_run
    assert k.rc == 0, k.log[-3000:]
    assert [(x.meant, x.stage) for x in k.kills] == [
        ("generation", ("iteration 1/1", "generate")), ("execution", ("iteration 1/1", "execute")),
        ("training", ("iteration 1/1", "train")), ("evaluation", ("evaluate (adapter 1)", "generate"))], k.kills
    check_complete(k.run_dir, 1)
    for name, key in (("test_workflows", ("iteration", "problem", "slot", "attempt")),
                      ("test_executions", ("iteration", "problem", "slot", "run"))):  # the evaluations too
        seen = Counter(tuple(r[f] for f in key) for r in records(k.run_dir, name))
        assert seen and all(n == 1 for n in seen.values()), (name, seen)
    for kill in k.kills:  # nothing recorded before the kill was redone or lost
        for name in runs.RECORDS:
            before, after = kill.records[name], records(k.run_dir, name)
            assert after[: len(before)] == before, (kill.meant, name)
    executed = kill_of(k, "execution").records["executions"]
    assert 0 < len(executed) < len(records(k.run_dir, "executions"))  # killed between two executions
    trained = kill_of(k, "training").records["metrics"]
    assert not [m for m in trained if m["kind"] == "iteration"]  # killed before the iteration's end
    assert [r["step"] for r in records(k.run_dir, "train")] == [1, 2]
    after_training = k.logs[k.kills.index(kill_of(k, "training")) + 1]
    assert "train 1/2" in after_training  # went on from the checkpoint of step 1
    after_evaluation = k.logs[-1]
    assert "resumed with the adapter of iteration 1" in after_evaluation
    metrics = records(k.run_dir, "metrics")
    assert sorted(m["iteration"] for m in metrics if m["kind"] == "evaluate") == [0, 1]
    [compared] = [m for m in metrics if m["kind"] == "compare"]
    assert (compared["base"], compared["trained"], compared["problems"]) == (0, 1, 1)


def kill_of(k: runs.Killed, meant: str) -> runs.Kill:
    return next(x for x in k.kills if x.meant == meant)


@pytest.mark.slow
def test_the_resumed_run_as_an_uninterrupted_one(killed_run):
    """The killed run checked as an uninterrupted run was (formerly test_optimize_two_iterations): the
    iteration's line, metrics in range, a reason for every rejected workflow, the adapter, the losses,
    and a config that names the task and holds no API key."""
    run, out = killed_run.run_dir, killed_run.log
    for it in (1,):
        line = next(ln for ln in out.splitlines() if f"iteration {it} done" in ln)
        assert "valid" in line and ("mean score" in line or "no valid workflow" in line), line
    metrics = [m for m in records(run, "metrics") if m["kind"] == "iteration"]
    assert all(0 <= m["valid_rate"] <= 1 and 0 <= m["mean_score"] <= 1 for m in metrics)
    rejected = [r for r in records(run, "workflows") if not r["valid"]]
    assert all(r["reason"] for r in rejected)
    weights = list((run / "adapters" / "iter-1").glob("*.safetensors"))
    assert weights, "no adapter weights saved"
    assert sum(m["pairs"] for m in metrics)  # the seed of runs.KILLED_SIZES forms pairs here
    train = records(run, "train")
    assert all(t["loss"] > 0 for t in train)
    config = (run / "config.toml").read_text()
    assert 'task = "arith"' in config and "api_key =" not in config


@pytest.mark.mlx
def test_optimize_with_the_mlx_backend(mlx_run):
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    # find_spec, not importorskip: importing mlx here would defeat the OpenBLAS preload of the MLX tests
    if importlib.util.find_spec("mlx_lm") is None:
        pytest.skip("the mlx extra is not installed")
    run, out = mlx_run.run_dir, mlx_run.out
    assert mlx_run.rc == 0, out[-3000:] + mlx_run.err[-3000:]
    assert "backend mlx" in out
    check_complete(run, 1)
    it = next(m for m in records(run, "metrics") if m["kind"] == "iteration")
    assert it["pairs"] > 0 and it["steps"] > 0, it  # the seed of runs.MLX_SIZES forms pairs here
    adapter = run / "adapters" / "iter-1"
    assert (adapter / "adapters.safetensors").is_file() and (adapter / "adapter_config.json").is_file()
    profile = (run / "profile.md").read_text()  # --profile: FLOPs from the MLX model's own parameter count
    assert "135M parameters" in profile and "| iteration 1 | train |" in profile, profile
    exported = subprocess.run([sys.executable, "-m", "scoreflow", "export", str(run), "--to", "peft"],
                              cwd=mlx_run.cwd, env=runs.env(), capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    assert (Path(exported.stdout.strip()) / "adapter_model.safetensors").is_file()
