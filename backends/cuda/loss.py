"""Score-DPO, DPO and SFT losses in PyTorch: the one place the preference math lives for this backend.

Score-DPO (ScoreFlow, eq. 5): -log sigmoid(beta * (s_w * (pi_w - ref_w) - (1 - s_l) * (pi_l - ref_l)))
with pi/ref the summed completion log-probs under the policy and the reference (adapter off).
DPO is the same with s_w = 1 and s_l = 0. SFT is the mean token negative log-likelihood of the winner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("score-dpo", "dpo", "sft")


def preference_loss(
    kind: str,
    beta: float,
    policy_w: torch.Tensor,
    policy_l: torch.Tensor,
    ref_w: torch.Tensor,
    ref_l: torch.Tensor,
    score_w: torch.Tensor,
    score_l: torch.Tensor,
    tokens_w: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean loss over a batch of pairs, and per-batch diagnostics (chosen/rejected reward, margin)."""
    reward_w = beta * (policy_w - ref_w)
    reward_l = beta * (policy_l - ref_l)
    if kind == "score-dpo":
        margin = score_w * reward_w - (1.0 - score_l) * reward_l
        loss = -F.logsigmoid(margin)
    elif kind == "dpo":
        margin = reward_w - reward_l
        loss = -F.logsigmoid(margin)
    elif kind == "sft":
        margin = reward_w - reward_l
        loss = -policy_w / tokens_w.clamp(min=1)
    else:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")
    stats = {
        "chosen_reward": reward_w.detach().mean(),
        "rejected_reward": reward_l.detach().mean(),
        "margin": margin.detach().mean(),
    }
    return loss.mean(), stats
