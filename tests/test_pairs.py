"""Pair construction and (s_w - s_l)^alpha sampling."""

import math
from collections import Counter

from scoreflow.loop.pairs import Candidate, all_pairs, sample_pairs


def test_every_unequal_pair_once_and_ties_dropped():
    c = [Candidate(0, 0, 1.0), Candidate(0, 1, 0.0), Candidate(0, 2, 1.0), Candidate(1, 0, 0.5), Candidate(1, 1, 0.5)]
    pairs = all_pairs(c)
    assert {(p.problem, p.chosen, p.rejected) for p in pairs} == {(0, 0, 1), (0, 2, 1)}
    assert all(p.score_chosen > p.score_rejected for p in pairs)


def test_no_pairs_across_problems():
    assert all_pairs([Candidate(0, 0, 1.0), Candidate(1, 0, 0.0)]) == []


def test_all_ties_give_nothing():
    assert sample_pairs([Candidate(0, j, 1 / 3) for j in range(5)], 100) == []


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


def test_per_problem_draw_gives_every_problem_with_pairs_its_share():
    from collections import Counter

    from scoreflow.loop.pairs import Candidate, sample_pairs

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
