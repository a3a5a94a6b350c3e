"""MLX's array operations for the Score-DPO, DPO, SFT and group-relative losses, whose one statement
(for both backends) is `scoreflow.model.training.preference_loss` and `group_relative_loss`."""

from functools import partial

import mlx.core as mx
import mlx.nn as nn

from scoreflow.model.training import ArrayOps, group_relative_loss as _group, preference_loss as _formula

OPS = ArrayOps(nn.log_sigmoid, mx.stop_gradient, mx.maximum, lambda values, like: mx.array(values, dtype=mx.float32),
               mx.exp, mx.minimum)
preference_loss = partial(_formula, ops=OPS)  # the same arguments as the formula, ops fixed
group_relative_loss = partial(_group, ops=OPS)
