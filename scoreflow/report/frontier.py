"""The accuracy/cost frontier of a run that weighs executor cost (`train.cost_weight` > 0).

A point per iteration on the optimisation split and per evaluation on the test split: the solve rate
(the task score, not the cost-weighted one) against the executor cost per problem, the mean cost of
one run of a generated workflow on a problem over the slots the solve rate averages (an invalid
workflow runs nothing and costs 0). The cost is cost.py's: USD when the executor priced every
execution of the run, else tokens. A point is on the frontier of its split when no other point of
that split is at least as accurate and at most as costly, and strictly better in one of the two.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from scoreflow.loop.cost import priced, workflow_costs
from scoreflow.records import Execution
from scoreflow.run.rundir import RunData

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FRONTIER_PNG = "frontier.png"
CAPTION = "Accuracy/cost frontier"
NOTE = ("Solve rate (the task score, not the cost-weighted one) against the executor cost per problem, one "
        "point per iteration on the optimisation split (circles) and per evaluated generator on the test split "
        "(diamonds, iteration 0 = base), labelled by iteration. The staircase joins the points on the Pareto "
        "frontier of each split: no other point of the split is as accurate for less, or more accurate for as "
        "much.")


@dataclass
class Point:
    split: str  # "optimisation" or "test"
    iteration: int  # on the test split, the adapter evaluated (0 = the base generator)
    solve_rate: float
    cost: float  # executor cost per problem, in the run's unit
    on_frontier: bool = False


def weighs_cost(run: RunData) -> bool:
    return float(run.config.get("train", {}).get("cost_weight") or 0) > 0


def on_frontier(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For each (accuracy, cost), whether no other point is at least as accurate and at most as costly,
    and strictly better in one of the two: equal points are on the frontier together."""
    return [not any(a >= acc and c <= cost and (a > acc or c < cost) for a, c in points) for acc, cost in points]


def frontier(run: RunData) -> tuple[list[Point], str]:
    """The run's points, each split's frontier marked, and the unit of their cost ("USD" or "tokens")."""
    usd = priced([*run.executions, *run.test_executions])
    runs = int(run.config.get("executor", {}).get("runs") or sys.maxsize)  # all runs when the snapshot lacks it

    def per_problem(executions: list[Execution], iteration: int, slots: int) -> float:
        keys = {e.key for e in executions if e.iteration == iteration}
        return sum(workflow_costs(executions, iteration, keys, runs, usd).values()) / slots if slots else 0.0

    # an iteration whose workflows were not recorded (records older than them) has no known cost: no point
    splits = [[Point("optimisation", m.iteration, m.solve_rate, per_problem(run.executions, m.iteration, m.workflows))
               for m in run.iterations if any(w.iteration == m.iteration for w in run.workflows)],
              [Point("test", m.iteration, m.solve_rate, per_problem(run.test_executions, m.iteration, m.problems))
               for m in run.tests if any(w.iteration == m.iteration for w in run.test_workflows)]]
    for points in splits:
        for p, best in zip(points, on_frontier([(p.solve_rate, p.cost) for p in points])):
            p.on_frontier = best
    return splits[0] + splits[1], "USD" if usd else "tokens"


def frontier_figure(runs: list[RunData]) -> Figure:
    """One panel per run; every series carries a gid "LABEL:SPLIT" (the points) or
    "LABEL:SPLIT:frontier" (the staircase through the frontier)."""
    from matplotlib.figure import Figure

    from scoreflow.report.plots import _color, _empty

    fig = Figure(figsize=(6.5 * len(runs), 4.5), layout="constrained")
    for ax, run in zip(fig.subplots(1, len(runs), squeeze=False)[0], runs):
        points, unit = frontier(run)
        for i, (split, marker) in enumerate((("optimisation", "o"), ("test", "D"))):
            mine = [p for p in points if p.split == split]
            if not mine:
                continue
            ax.plot([p.cost for p in mine], [p.solve_rate for p in mine], marker, linestyle="none", color=_color(i),
                    gid=f"{run.label}:{split}", label=f"{split} split")
            best = sorted((p for p in mine if p.on_frontier), key=lambda p: (p.cost, p.solve_rate))
            ax.plot([p.cost for p in best], [p.solve_rate for p in best], "-", drawstyle="steps-post",
                    color=_color(i), alpha=0.6, gid=f"{run.label}:{split}:frontier", label=f"{split} frontier")
            labels: dict[tuple[float, float], list[str]] = {}  # equal points share one label
            for p in mine:
                labels.setdefault((p.cost, p.solve_rate), []).append(str(p.iteration))
            for xy, its in labels.items():
                ax.annotate(", ".join(its), xy, textcoords="offset points", xytext=(5, 4 - 14 * i), fontsize=8,
                            color=_color(i))
        ax.set_title(f"{run.label}: solve rate against executor cost" if len(runs) > 1 else
                     "Solve rate against executor cost (labels: iteration)", fontsize=11)
        ax.set_xlabel(f"executor cost per problem ({unit})")
        ax.set_ylabel("solve rate (task score)")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
        if points:
            ax.legend(fontsize=8, loc="best")
        else:
            _empty(ax, "no finished iteration with recorded workflows yet")
    return fig
