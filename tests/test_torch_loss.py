"""Score-DPO / DPO / SFT and group-relative losses of the PyTorch backend against the shared
hand-computed numbers."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from loss_cases import CASES, GROUPS, group_expected, group_pair_arrays  # noqa: E402
from scoreflow.backends.cuda.loss import group_relative_loss, preference_loss  # noqa: E402


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


@pytest.mark.parametrize("g", GROUPS, ids=range(len(GROUPS)))
def test_group_relative_loss_over_pairs_is_grpo_per_text(g):
    a = group_pair_arrays(g)
    t = lambda key: torch.tensor(a[key], dtype=torch.float64)  # noqa: E731
    pw = t("pw").requires_grad_()
    loss, st = group_relative_loss(g["clip"], 0.1, pw, t("pl"), t("rw"), t("rl"), t("nw"), t("nl"), a["aw"], a["al"],
                                   a["weight"])
    assert loss.item() == pytest.approx(group_expected(g), abs=1e-12)
    assert st["chosen_reward"].item() == pytest.approx(0.1 * sum(x - y for x, y in zip(a["pw"], a["rw"])) / len(a["pw"]))


def test_group_relative_gradient_is_zero_where_clipped_and_advantage_over_length_where_not():
    """d loss / d pi_i = -(1/k) A_i r_i / n_i where text i is not clipped, 0 where it is (text 0 and 2 of
    the first group): the pair form's gradient, summed over the pairs a text is in."""
    g = GROUPS[0]
    k = len(g["scores"])
    pi = torch.tensor(g["pi"], dtype=torch.float64, requires_grad=True)
    ref, n = torch.tensor(g["ref"], dtype=torch.float64), torch.tensor(g["n"], dtype=torch.float64)
    from scoreflow.loop.pairs import Candidate, group_pairs

    pairs = group_pairs([Candidate(0, i, x) for i, x in enumerate(g["scores"])])
    w, l = [p.chosen for p in pairs], [p.rejected for p in pairs]
    loss, _ = group_relative_loss(g["clip"], 0.1, pi[w], pi[l], ref[w], ref[l], n[w], n[l],
                                  [p.advantage_chosen for p in pairs], [p.advantage_rejected for p in pairs],
                                  [p.weight for p in pairs])
    loss.backward()
    s = g["scores"]
    mean = sum(s) / k
    std = math.sqrt(sum((x - mean) ** 2 for x in s) / k)
    want = []
    for i in range(k):
        a, r = (s[i] - mean) / std, math.exp((g["pi"][i] - g["ref"][i]) / g["n"][i])
        clipped = (a > 0 and r > 1 + g["clip"]) or (a < 0 and r < 1 - g["clip"])
        want.append(0.0 if clipped else -a * r / (k * g["n"][i]))
    assert want[0] == want[2] == 0.0 and want[1] != 0 and want[3] != 0
    assert pi.grad.tolist() == pytest.approx(want, abs=1e-12)
