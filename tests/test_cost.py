"""train.cost_weight: the score pairs are made from is the task score less weight x the executor cost
normalised by the iteration's mean, never negative and never above the task score; checked on hand
values and on the pairs a real loop (scripted backend, real sandbox and executor) writes. The report
of such a run shows its accuracy/cost frontier."""

from __future__ import annotations

from pathlib import Path
from statistics import mean

import pytest

from fake_backend import FakeBackend, config
from scoreflow import api
from scoreflow.loop.cost import cost_weighted, execution_cost, workflow_costs
from scoreflow.report.frontier import on_frontier
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
    assert workflow_costs(ex, 1, [(0, 0)], runs=2, usd=False) == {(0, 0): 20.0}  # one unit across iterations
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


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory) -> Path:
    """One real run with cost_weight 0.3 that also evaluates the base and the trained generator on a
    test problem; the tests below only read it."""
    tmp = tmp_path_factory.mktemp("cost")
    cfg = config(tmp)
    cfg["run"].update(compare=True, test_problems=1)
    cfg["train"].update(cost_weight=0.3, valid_floor=0.0)  # the floor would lift a valid workflow's score
    with pytest.MonkeyPatch.context() as m:
        m.setattr("scoreflow.run.session.make_backend", lambda cfg: CostlyPrecision())
        assert api.optimize(cfg, tmp / "run").status == "finished"
    return tmp / "run"


def test_a_cost_weighted_run_pairs_on_task_score_less_weighted_normalised_cost(weighted_run):
    run = load_run(weighted_run)
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


def test_the_frontier_keeps_points_no_other_point_beats():
    assert on_frontier([]) == []
    assert on_frontier([(0.5, 10.0)]) == [True]
    assert on_frontier([(0.5, 10.0), (0.5, 10.0)]) == [True, True]  # a tie: neither beats the other
    assert on_frontier([(0.5, 10.0), (0.5, 20.0)]) == [True, False]  # as accurate for more
    assert on_frontier([(0.5, 10.0), (0.6, 10.0)]) == [False, True]  # less accurate for as much
    points = [(0.8, 30.0), (0.5, 10.0), (0.4, 20.0), (0.0, 0.0), (0.8, 40.0), (0.9, 90.0)]
    assert on_frontier(points) == [True, True, False, True, False, True]


def test_a_cost_weighted_runs_report_shows_its_frontier(weighted_run, tmp_path, monkeypatch):
    imread = pytest.importorskip("matplotlib.image").imread
    from scoreflow.report.frontier import frontier, frontier_figure
    from scoreflow.report.report import markdown, write_report

    run = load_run(weighted_run)
    points, unit = frontier(run)
    assert unit == "tokens"  # the local executor prices nothing
    assert [(p.split, p.iteration) for p in points] == [("optimisation", 1), ("test", 0), ("test", 1)]
    for p, m in zip(points, [*run.iterations, *run.tests]):
        executions = run.executions if p.split == "optimisation" else run.test_executions
        spent = sum(e.tokens for e in executions if e.iteration == p.iteration)  # one run per workflow
        assert p.solve_rate == m.solve_rate
        assert p.cost > 0 and p.cost == pytest.approx(spent / (m.workflows if p.split == "optimisation" else m.problems))
    for split in ("optimisation", "test"):
        mine = [p for p in points if p.split == split]
        assert [p.on_frontier for p in mine] == on_frontier([(p.solve_rate, p.cost) for p in mine])

    # the other figures and the workflow drawings are test_report.py's; here they would only take time
    monkeypatch.setattr("scoreflow.report.plots.FIGURES", {})
    monkeypatch.setattr("scoreflow.report.workflows.write_pngs", lambda runs, out: None)
    text = write_report([run], tmp_path / "report").read_text()
    assert "## Accuracy/cost frontier" in text and "![Accuracy/cost frontier](frontier.png)" in text
    assert "| split | iteration | solve rate | cost per problem (tokens) | on the frontier |" in text
    for p in points:
        it = "0 (base model)" if p.split == "test" and not p.iteration else p.iteration
        assert f"| {p.split} | {it} | {p.solve_rate:.3f} | {p.cost:,.1f} | {'yes' if p.on_frontier else 'no'} |" in text
    assert imread(tmp_path / "report" / "frontier.png").shape[2] in (3, 4)
    drawn = {line.get_gid(): line.get_xydata().tolist() for ax in frontier_figure([run]).axes for line in ax.get_lines()}
    assert drawn["run:test"] == [[p.cost, p.solve_rate] for p in points if p.split == "test"]

    run.config["train"]["cost_weight"] = 0.0  # the paper's objective: no frontier in the report
    assert "frontier" not in markdown([run]).lower()
