"""Preference pairs: every two workflows of one problem with different scores, sampled with
probability proportional to d(s_w, s_l) = (s_w - s_l)^alpha (ScoreFlow uses alpha = 3)."""

from __future__ import annotations

import random
from dataclasses import dataclass
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


def sample_pairs(candidates: Sequence[Candidate], n: int, alpha: float = 3.0, seed: int = 0) -> list[Pair]:
    """`n` pairs drawn with replacement, P(pair) proportional to (s_w - s_l)^alpha."""
    pool = all_pairs(candidates)
    if not pool or n <= 0:
        return []
    weights = [weight(p, alpha) for p in pool]
    if sum(weights) <= 0:
        return []
    return random.Random(seed).choices(pool, weights=weights, k=n)
