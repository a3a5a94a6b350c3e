"""Score-DPO / DPO / SFT losses of the PyTorch backend against the shared hand-computed numbers."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from loss_cases import CASES  # noqa: E402
from scoreflow.backends.cuda.loss import preference_loss  # noqa: E402


def _t(x: float) -> torch.Tensor:
    return torch.tensor([x], dtype=torch.float64)


def _loss(kind: str, c: dict, sw: float | None = None, sl: float | None = None) -> float:
    loss, _ = preference_loss(kind, c["beta"], _t(c["pw"]), _t(c["pl"]), _t(c["rw"]), _t(c["rl"]),
                              _t(c["sw"] if sw is None else sw), _t(c["sl"] if sl is None else sl), _t(10.0))
    return loss.item()


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_score_dpo_and_dpo_match_reference_numbers(case):
    assert _loss("score-dpo", case) == pytest.approx(case["score_dpo"], abs=1e-6)
    assert _loss("dpo", case) == pytest.approx(case["dpo"], abs=1e-6)
    assert math.isfinite(_loss("score-dpo", case))


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_score_dpo_is_dpo_at_full_and_zero_scores(case):
    assert _loss("score-dpo", case, sw=1.0, sl=0.0) == pytest.approx(_loss("dpo", case), abs=1e-12)


def test_batch_mean_and_stats_in_float32():
    pw = torch.tensor([c["pw"] for c in CASES])
    pl = torch.tensor([c["pl"] for c in CASES])
    rw = torch.tensor([c["rw"] for c in CASES])
    rl = torch.tensor([c["rl"] for c in CASES])
    sw = torch.tensor([c["sw"] for c in CASES])
    sl = torch.tensor([c["sl"] for c in CASES])
    beta = 0.5  # one beta for the batch
    expect = [math.log1p(math.exp(-z)) if z > 0 else -z + math.log1p(math.exp(z)) for z in
              (beta * (c["sw"] * (c["pw"] - c["rw"]) - (1 - c["sl"]) * (c["pl"] - c["rl"])) for c in CASES)]
    loss, st = preference_loss("score-dpo", beta, pw, pl, rw, rl, sw, sl, torch.ones(len(CASES)))
    assert loss.item() == pytest.approx(sum(expect) / len(expect), abs=1e-5)
    assert st["chosen_reward"].item() == pytest.approx(float((beta * (pw - rw)).mean()), abs=1e-6)


def test_sft_is_mean_token_nll_of_the_winner():
    loss, _ = preference_loss("sft", 0.1, _t(-30.0), _t(-5.0), _t(0.0), _t(0.0), _t(1.0), _t(0.0), _t(12.0))
    assert loss.item() == pytest.approx(2.5, abs=1e-12)
    with pytest.raises(ValueError):
        preference_loss("ipo", 0.1, _t(0.0), _t(0.0), _t(0.0), _t(0.0), _t(1.0), _t(0.0), _t(1.0))
