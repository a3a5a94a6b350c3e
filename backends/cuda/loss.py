"""The training losses on PyTorch tensors: the formulas are `scoreflow.model.training.preference_loss`
and `group_relative_loss` (stated once for both backends); this backend supplies only the array
operations they need."""

from functools import partial

import torch
import torch.nn.functional as F

from scoreflow.model.training import ArrayOps, group_relative_loss as _group, preference_loss as _formula

OPS = ArrayOps(F.logsigmoid, torch.Tensor.detach, lambda x, v: x.clamp(min=v),
               lambda values, like: torch.tensor(values, dtype=like.dtype, device=like.device),
               torch.exp, lambda x, v: x.clamp(max=v))
# preference_loss(kind, beta, policy_w, policy_l, ref_w, ref_l, score_w, score_l, tokens_w) -> (loss, stats)
preference_loss = partial(_formula, ops=OPS)
group_relative_loss = partial(_group, ops=OPS)
