"""Confidence intervals for solve rates: a bootstrap over problems, and over seeds when there are
several runs, paired where two rates were measured on the same problems."""

from __future__ import annotations

import random
from dataclasses import dataclass
from statistics import mean
from typing import Sequence

Scores = Sequence[float]  # one score per problem, in one fixed problem order


@dataclass
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        return f"{self.value:+.3f} (95% CI {self.low:+.3f} to {self.high:+.3f})"


def _interval(samples: list[float], value: float, level: float) -> Estimate:
    samples.sort()
    lo = samples[int((1 - level) / 2 * (len(samples) - 1))]
    hi = samples[int((1 + level) / 2 * (len(samples) - 1))]
    return Estimate(value, lo, hi)


def bootstrap(runs: Sequence[Scores], base: Sequence[Scores] | None = None, *, reps: int = 4000,
              level: float = 0.95, seed: int = 0) -> Estimate:
    """Mean score over runs (seeds) and their problems, or with `base` (the same problems of the
    same runs, e.g. iteration 0) the mean difference runs - base, with a percentile interval:
    resample the runs, then the problems within each, keeping each problem's pair together."""
    runs = [list(r) for r in runs if len(r)]
    pairs = [list(zip(r, b)) for r, b in zip(runs, base)] if base is not None else [[(x, 0.0) for x in r] for r in runs]
    if not pairs:
        return Estimate(0.0, 0.0, 0.0)
    value = mean(a - b for run in pairs for a, b in run)
    rng = random.Random(seed)
    samples = []
    for _ in range(reps):
        total, count = 0.0, 0
        for run in rng.choices(pairs, k=len(pairs)) if len(pairs) > 1 else pairs:
            for a, b in rng.choices(run, k=len(run)):
                total += a - b
                count += 1
        samples.append(total / count)
    return _interval(samples, value, level)
