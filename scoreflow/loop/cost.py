"""Executor cost in the score that pairs are made from (`train.cost_weight`).

A workflow's cost is its executor spend per run on its problem: USD when the executor priced every
execution of the iteration, else tokens (prompt and completion). It is normalised by the iteration's
mean cost per workflow, so that a weight means the same on every task and executor: weight w takes w
off a workflow of average cost and 2w off one costing twice the average. The score for pairing is

    max(0, task score - w x cost / mean cost)

never above the task score (a cost is never negative: a missing, malformed or negative count reads
as 0) and never below 0, the range Score-DPO's weights assume. An iteration whose executions report
no usage at all leaves the scores as they are.
"""

from __future__ import annotations

import math
from statistics import mean
from typing import Any, Iterable

Key = tuple[int, int]  # (problem, slot)


def execution_cost(value: Any) -> float:
    """A recorded count or price as a cost: missing, malformed, infinite or negative reads as 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) and v > 0 else 0.0


def priced(executions: Iterable[Any]) -> bool:
    """Whether there are executions and every one of them carries a price."""
    found = list(executions)
    return bool(found) and all(e.has("cost_usd") and e.cost_usd is not None for e in found)


def workflow_costs(executions: Iterable[Any], iteration: int, keys: Iterable[Key], runs: int,
                   usd: bool | None = None) -> dict[Key, float]:
    """Each workflow's mean cost per run over its first `runs` executions in `iteration`: USD when every
    one of them carries a price, else tokens (`usd` decides instead, for costs compared across iterations)."""
    wanted = set(keys)
    mine = [e for e in executions if e.iteration == iteration and e.key in wanted and e.run < runs]
    in_usd = priced(mine) if usd is None else usd
    per: dict[Key, list[float]] = {}
    for e in mine:
        per.setdefault(e.key, []).append(execution_cost(e.cost_usd if in_usd else e.tokens))
    return {key: mean(v) for key, v in per.items()}


def cost_weighted(scores: dict[Key, float], costs: dict[Key, float], weight: float) -> dict[Key, float]:
    """The scores for pairing: each task score less `weight` x its cost relative to the mean cost of
    the scored workflows, kept between 0 and the task score."""
    if weight <= 0 or not scores:
        return dict(scores)
    spent = {key: execution_cost(costs.get(key)) for key in scores}
    average = mean(spent.values())
    if average <= 0:  # no usage reported: nothing to weigh
        return dict(scores)
    return {key: min(score, max(0.0, score - weight * spent[key] / average)) for key, score in scores.items()}
