"""Score-DPO, DPO and SFT losses in MLX: the one place the preference math lives for this backend.

Score-DPO (ScoreFlow, eq. 5): -log sigmoid(beta * (s_w * (pi_w - ref_w) - (1 - s_l) * (pi_l - ref_l)))
with pi/ref the summed completion log-probs under the policy and the reference (adapter off).
DPO is the same with s_w = 1 and s_l = 0. SFT is the mean token negative log-likelihood of the winner.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

LOSSES = ("score-dpo", "dpo", "sft")


def preference_loss(
    kind: str,
    beta: float,
    policy_w: mx.array,
    policy_l: mx.array,
    ref_w: mx.array,
    ref_l: mx.array,
    score_w: mx.array,
    score_l: mx.array,
    tokens_w: mx.array,
) -> tuple[mx.array, dict[str, mx.array]]:
    """Mean loss over a batch of pairs, and per-batch diagnostics (chosen/rejected reward, margin)."""
    reward_w = beta * (policy_w - ref_w)
    reward_l = beta * (policy_l - ref_l)
    if kind == "score-dpo":
        margin = score_w * reward_w - (1.0 - score_l) * reward_l
        loss = -nn.log_sigmoid(margin)
    elif kind == "dpo":
        margin = reward_w - reward_l
        loss = -nn.log_sigmoid(margin)
    elif kind == "sft":
        margin = reward_w - reward_l
        loss = -policy_w / mx.maximum(tokens_w, 1)
    else:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
    stats = {
        "chosen_reward": mx.stop_gradient(reward_w).mean(),
        "rejected_reward": mx.stop_gradient(reward_l).mean(),
        "margin": mx.stop_gradient(margin).mean(),
    }
    return loss.mean(), stats
