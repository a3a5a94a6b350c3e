"""Preference pairs: every two workflows of one problem with different scores, sampled with
probability proportional to d(s_w, s_l) = (s_w - s_l)^alpha (ScoreFlow uses alpha = 3); or, for the
group-relative objective, all of them with their group's advantages (`group_pairs`)."""

from __future__ import annotations

import random
import math
from dataclasses import dataclass, replace
from typing import Sequence


@dataclass(frozen=True)
class Candidate:
    problem: int  # index of the problem in this iteration's list
    slot: int  # which of the k workflows
    score: float


@dataclass(frozen=True)
class Pair:
    problem: int
    chosen: int  # slot of the winner
    rejected: int
    score_chosen: float
    score_rejected: float
    advantage_chosen: float = 0.0  # group_pairs only: (s - group mean) / group std
    advantage_rejected: float = 0.0
    weight: float = 1.0  # group_pairs only: the group's pairs / k^2 (see group_pairs)

    @property
    def gap(self) -> float:
        return self.score_chosen - self.score_rejected


def all_pairs(candidates: Sequence[Candidate]) -> list[Pair]:
    """Every (winner, loser) of the same problem; ties give no pair."""
    by_problem: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_problem.setdefault(c.problem, []).append(c)
    out = []
    for problem in sorted(by_problem):
        group = sorted(by_problem[problem], key=lambda c: c.slot)
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                if a.score == b.score:
                    continue
                w, l = (a, b) if a.score > b.score else (b, a)
                out.append(Pair(problem, w.slot, l.slot, w.score, l.score))
    return out


def weight(pair: Pair, alpha: float) -> float:
    return 1.0 if alpha == 0 else pair.gap ** alpha


DRAWS = ("weighted", "per-problem")


def sample_pairs(candidates: Sequence[Candidate], n: int, alpha: float = 3.0, seed: int = 0,
                 draw: str = "weighted") -> list[Pair]:
    """`n` pairs drawn with replacement, P(pair) proportional to (s_w - s_l)^alpha over all pairs
    (`weighted`, the paper's), or first a problem uniformly among those with pairs and then one of its
    pairs by that weight (`per-problem`: a problem whose samples disagree a lot no longer supplies most
    of the pairs)."""
    pool = [p for p in all_pairs(candidates) if weight(p, alpha) > 0]
    if not pool or n <= 0:
        return []
    rng = random.Random(seed)
    if draw == "weighted":
        return rng.choices(pool, weights=[weight(p, alpha) for p in pool], k=n)
    if draw != "per-problem":
        raise ValueError(f"unknown pair draw {draw!r}; expected one of {DRAWS}")
    by_problem: dict[int, list[Pair]] = {}
    for p in pool:
        by_problem.setdefault(p.problem, []).append(p)
    problems = sorted(by_problem)
    return [rng.choices(by_problem[q], weights=[weight(p, alpha) for p in by_problem[q]])[0]
            for q in (rng.choice(problems) for _ in range(n))]


def group_pairs(candidates: Sequence[Candidate]) -> list[Pair]:
    """Every pair of every problem once, in problem order, each with its group's advantages.

    The k scored workflows of a problem form a group; A_i = (s_i - mean) / std (population std). A
    group-relative policy objective (1/k) sum_i A_i x_i is a sum over the group's pairs, since
    sum_i A_i x_i = (1/k) sum_{i<j} (A_i - A_j)(x_i - x_j) and tied pairs add 0: so the mean over
    a group's P pairs of weight * (A_w - A_l) * (x_w - x_l), weight = P / k^2, is exactly it, and the
    pair-based training skeleton trains it unchanged. A group whose scores all tie has no pairs
    (every advantage is 0)."""
    by_problem: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_problem.setdefault(c.problem, []).append(c)
    out: list[Pair] = []
    for problem in sorted(by_problem):
        group = by_problem[problem]
        pairs = all_pairs(group)
        if not pairs:
            continue
        k = len(group)
        mean = sum(c.score for c in group) / k
        std = math.sqrt(sum((c.score - mean) ** 2 for c in group) / k)
        adv = {c.slot: (c.score - mean) / std for c in group}
        out += [replace(p, advantage_chosen=adv[p.chosen], advantage_rejected=adv[p.rejected],
                        weight=len(pairs) / k ** 2) for p in pairs]
    return out
