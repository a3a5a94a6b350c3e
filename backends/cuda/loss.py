"""The preference losses on PyTorch tensors: the formula is `scoreflow.model.training.preference_loss`
(stated once for both backends); this backend supplies only the array operations it needs."""

from functools import partial

import torch
import torch.nn.functional as F

from scoreflow.model.training import ArrayOps, preference_loss as _formula

OPS = ArrayOps(F.logsigmoid, torch.Tensor.detach, lambda x, v: x.clamp(min=v),
               lambda values, like: torch.tensor(values, dtype=like.dtype, device=like.device))
# preference_loss(kind, beta, policy_w, policy_l, ref_w, ref_l, score_w, score_l, tokens_w) -> (loss, stats)
preference_loss = partial(_formula, ops=OPS)
