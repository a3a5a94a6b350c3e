"""Attention for one packed row by segments: the same math as the row's custom (W, W) mask, less work.

A packed row is a prompt of p tokens followed by completions of n_1, n_2, ... tokens, each seeing
the prompt and itself. With the custom mask, SDPA computes all W x W scores and throws most away
(on CPU its flash kernel skips no block of a custom mask). By segments, the prompt attends to itself
with the causal kernel (which skips the upper triangle), and each completion attends to the prompt
and itself with an (n, p + n) mask: for a 1000-token prompt and two completions of 330 and 540
tokens that is half the scores, and the attention's forward and backward took ~0.6x the time.

Used for single-row micro-batches on CPU (the default there) with SDPA models and no gradient
checkpointing (a checkpointed layer would recompute through the plain attention later); the mask
path stays for everything else.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch

NAME = "scoreflow_segments"
_registered = False


def segment_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                      dropout: float = 0.0, scaling: float | None = None, segments: Sequence[int] | None = None,
                      **kwargs):
    """transformers' SDPA attention, per segment when `segments` (prompt length, then each completion's)
    describes the one row of the batch; plain SDPA otherwise."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kwargs.pop("is_causal", None)
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    assert query.shape[0] == 1 and sum(segments) == query.shape[2], (query.shape, segments)
    p = segments[0]
    outs = [sdpa_attention_forward(module, query[:, :, :p], key[:, :, :p], value[:, :, :p], None, dropout=dropout,
                                   scaling=scaling, is_causal=True, **kwargs)[0]]
    at = p
    for n in segments[1:]:
        k = torch.cat([key[:, :, :p], key[:, :, at:at + n]], 2)
        v = torch.cat([value[:, :, :p], value[:, :, at:at + n]], 2)
        # Query i of the completion sees the whole prompt and completion tokens 0..i.
        mask = torch.ones(n, p + n, dtype=torch.bool, device=query.device).tril(p)[None, None]
        outs.append(sdpa_attention_forward(module, query[:, :, at:at + n], k, v, mask, dropout=dropout,
                                           scaling=scaling, **kwargs)[0])
        at += n
    return torch.cat(outs, 1), None  # (batch, length, heads, head_dim), as sdpa_attention_forward returns


@contextmanager
def by_segments(config):
    """Dispatch the model's attention to segment_attention while the block runs (the decoder's layers
    read config._attn_implementation at each call). No mask function is registered under NAME, so
    transformers builds no (W, W) mask either."""
    global _registered
    from transformers import AttentionInterface

    if not _registered:
        AttentionInterface.register(NAME, segment_attention)
        _registered = True
    old = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = old
