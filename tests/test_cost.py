"""train.cost_weight: the score pairs are made from is the task score less weight x the executor cost
normalised by the iteration's mean, never negative and never above the task score; checked on hand
values and on the pairs a real loop (scripted backend, real sandbox and executor) writes."""

from __future__ import annotations

from statistics import mean

import pytest

from fake_backend import FakeBackend, config
from scoreflow import api
from scoreflow.loop.cost import cost_weighted, execution_cost, workflow_costs
from scoreflow.records import Execution
from scoreflow.run.rundir import load_run



def test_cost_weighted_on_hand_values():
    scores = {(0, 0): 1.0, (0, 1): 1.0, (1, 0): 0.5, (1, 1): 0.0}
    costs = {(0, 0): 100.0, (0, 1): 300.0, (1, 0): 200.0, (1, 1): 200.0}  # mean 200
    got = cost_weighted(scores, costs, 0.2)
    assert got == pytest.approx({(0, 0): 0.9, (0, 1): 0.7, (1, 0): 0.3, (1, 1): 0.0})
    assert all(got[k] <= scores[k] for k in scores)
    assert cost_weighted(scores, costs, 0.0) == scores  # the paper's objective
    heavy = cost_weighted(scores, costs, 5.0)
    assert all(0.0 <= heavy[k] <= scores[k] for k in scores) and heavy[(0, 0)] == 0.0


def test_a_cost_is_never_negative():
    for bad in (-5, -0.1, float("nan"), float("-inf"), float("inf"), None, "x", object()):
        assert execution_cost(bad) == 0.0
    assert execution_cost(12) == 12.0 and execution_cost("0.5") == 0.5
    # a negative recorded cost (MaAS issue #17) would raise a score above the task score; here it reads as 0
    scores = {(0, 0): 0.5, (0, 1): 0.5}
    got = cost_weighted(scores, {(0, 0): -100.0, (0, 1): 10.0}, 1.0)
    assert got[(0, 0)] == 0.5 and got[(0, 1)] == 0.0
    assert cost_weighted(scores, {(0, 0): 0.0, (0, 1): 0.0}, 1.0) == scores  # no usage: nothing to weigh


def test_workflow_costs_prefer_usd_when_every_run_is_priced():
    ex = [Execution(iteration=1, problem=0, slot=0, run=0, tokens=10, cost_usd=0.01),
          Execution(iteration=1, problem=0, slot=0, run=1, tokens=30, cost_usd=0.03),
          Execution(iteration=1, problem=0, slot=1, run=0, tokens=50, cost_usd=0.05),
          Execution(iteration=2, problem=0, slot=0, run=0, tokens=999, cost_usd=9.0)]
    assert workflow_costs(ex, 1, [(0, 0), (0, 1)], runs=2) == pytest.approx({(0, 0): 0.02, (0, 1): 0.05})
    assert workflow_costs(ex, 1, [(0, 0)], runs=1) == pytest.approx({(0, 0): 0.01})
    unpriced = [Execution(iteration=1, problem=0, slot=0, run=0, tokens=10),
                Execution(iteration=1, problem=0, slot=1, run=0, tokens=-4, cost_usd=0.2)]
    assert workflow_costs(unpriced, 1, [(0, 0), (0, 1)], runs=1) == {(0, 0): 10.0, (0, 1): 0.0}


class CostlyPrecision(FakeBackend):
    """The scripted backend whose executor spends more tokens answering precisely than vaguely."""

    def generate(self, prompts, params, *, adapter=True):
        out = super().generate(prompts, params, adapter=adapter)
        if not adapter:
            for messages, c in zip(prompts, out):
                c.prompt_tokens = 40 if "precisely" in messages[-1]["content"] else 10
        return out


def test_a_cost_weighted_run_pairs_on_task_score_less_weighted_normalised_cost(tmp_path, monkeypatch):
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: CostlyPrecision())
    cfg = config(tmp_path)
    cfg["train"].update(cost_weight=0.3, valid_floor=0.0)  # the floor would lift a valid workflow's score
    result = api.optimize(cfg, tmp_path / "run")
    assert result.status == "finished"
    run = load_run(tmp_path / "run")
    task: dict[tuple[int, int], float] = {}
    tokens: dict[tuple[int, int], float] = {}
    for e in run.executions:
        task[e.key], tokens[e.key] = float(e.score), float(e.tokens)
    assert len(set(tokens.values())) > 1  # the costs differ, so the weighting is seen
    average = mean(tokens.values())
    assert run.pairs
    for p in run.pairs:
        for slot, used in ((p.chosen, p.score_chosen), (p.rejected, p.score_rejected)):
            key = (p.problem, slot)
            expected = max(0.0, task[key] - 0.3 * tokens[key] / average)
            assert used == pytest.approx(expected) and used <= task[key]
    assert any(p.score_chosen < task[(p.problem, p.chosen)] for p in run.pairs)
