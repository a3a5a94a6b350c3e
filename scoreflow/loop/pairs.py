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
