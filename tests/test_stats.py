"""The bootstrap behind every solve-rate CI: over problems, over seeds, and paired differences."""

from scoreflow.stats import bootstrap


def test_mean_and_interval_over_problems():
    scores = [1.0] * 3 + [0.0] * 7
    est = bootstrap([scores])
    assert abs(est.value - 0.3) < 1e-12
    assert 0.0 <= est.low < 0.3 < est.high <= 1.0
    assert bootstrap([[1.0] * 5]).as_dict() == {"value": 1.0, "low": 1.0, "high": 1.0}


def test_paired_difference_keeps_problems_together():
    base = [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert bootstrap([base], [base]).as_dict() == {"value": 0.0, "low": 0.0, "high": 0.0}
    better = [1.0 if i % 2 == 0 else b for i, b in enumerate(base)]  # solves 3 more problems, loses none
    d = bootstrap([better], [base])
    assert abs(d.value - 3 / 8) < 1e-12 and d.low >= 0.0  # never negative when no problem got worse


def test_seeds_widen_the_interval_when_they_disagree():
    agree = bootstrap([[1.0, 0.0] * 10, [1.0, 0.0] * 10])
    disagree = bootstrap([[1.0] * 20, [0.0] * 20])
    assert abs(agree.value - 0.5) < 1e-12 and abs(disagree.value - 0.5) < 1e-12
    assert disagree.high - disagree.low > agree.high - agree.low
