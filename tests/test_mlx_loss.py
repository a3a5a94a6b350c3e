"""The MLX preference and group-relative losses against the shared hand-computed reference numbers."""

from __future__ import annotations

import importlib.util

import pytest

if importlib.util.find_spec("mlx_lm") is None:  # not importorskip: mlx.core must come after OpenBLAS
    pytest.skip("mlx-lm is not installed", allow_module_level=True)

import scoreflow.backends.mlx  # noqa: E402,F401  (preloads OpenBLAS before mlx.core)

import mlx.core as mx  # noqa: E402

from scoreflow.backends.mlx.loss import group_relative_loss, preference_loss  # noqa: E402
from loss_cases import CASES, GROUPS, group_expected, group_pair_arrays  # noqa: E402

pytestmark = pytest.mark.mlx


def _loss(kind: str, c: dict, sw=None, sl=None) -> float:
    a = lambda v: mx.array([v], dtype=mx.float32)  # noqa: E731
    loss, st = preference_loss(kind, c["beta"], a(c["pw"]), a(c["pl"]), a(c["rw"]), a(c["rl"]),
                               a(c["sw"] if sw is None else sw), a(c["sl"] if sl is None else sl), a(10.0))
    return loss.item()


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_reference_numbers(case):
    assert _loss("score-dpo", case) == pytest.approx(case["score_dpo"], rel=1e-6, abs=1e-6)
    assert _loss("dpo", case) == pytest.approx(case["dpo"], rel=1e-6, abs=1e-6)
    # Score-DPO with a perfect winner and a worthless loser is plain DPO.
    assert _loss("score-dpo", case, sw=1.0, sl=0.0) == pytest.approx(case["dpo"], rel=1e-6, abs=1e-6)


def test_batch_mean_stats_and_sft():
    pw, pl = mx.array([-10.0, -20.0]), mx.array([-12.0, -18.0])
    rw, rl = mx.array([-11.0, -20.0]), mx.array([-12.0, -19.0])
    sw, sl = mx.array([0.5, 1.0]), mx.array([0.0, 0.5])
    loss, st = preference_loss("score-dpo", 0.1, pw, pl, rw, rl, sw, sl, mx.array([4.0, 5.0]))
    margins = [0.5 * 0.1 - 1.0 * 0.0, 1.0 * 0.0 - 0.5 * 0.1]
    assert st["margin"].item() == pytest.approx(sum(margins) / 2, abs=1e-7)
    assert st["chosen_reward"].item() == pytest.approx(0.05, abs=1e-7)
    sft, _ = preference_loss("sft", 0.1, pw, pl, rw, rl, sw, sl, mx.array([4.0, 5.0]))
    assert sft.item() == pytest.approx((10 / 4 + 20 / 5) / 2, rel=1e-6)
    with pytest.raises(ValueError):
        preference_loss("ipo", 0.1, pw, pl, rw, rl, sw, sl, mx.array([4.0, 5.0]))


@pytest.mark.parametrize("g", GROUPS, ids=range(len(GROUPS)))
def test_group_relative_loss(g):
    a = group_pair_arrays(g)
    t = lambda key: mx.array(a[key], dtype=mx.float32)  # noqa: E731
    loss, _ = group_relative_loss(g["clip"], 0.1, t("pw"), t("pl"), t("rw"), t("rl"), t("nw"), t("nl"), a["aw"],
                                  a["al"], a["weight"])
    assert loss.item() == pytest.approx(group_expected(g), rel=1e-5, abs=1e-6)
