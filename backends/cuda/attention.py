"""Attention for one packed row by segments: the same math as the row's custom (W, W) mask, less work.

A packed row (train.Tree) is an opening shared by several prompts, then each prompt's rest and its
completions; a segment sees the segments it builds on (the opening; then its prompt's rest) and
itself. With the custom mask, SDPA computes all W x W scores and throws most away (on CPU its flash
kernel skips no block of a custom mask). By segments, the opening attends to itself with the causal
kernel (which skips the upper triangle), and every other segment attends to what it sees and itself
with an (n, before + n) mask.

Used for single-row micro-batches on CPU (the default there) with SDPA models and no gradient
checkpointing (a checkpointed layer would recompute through the plain attention later); the mask
path stays for everything else.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch

NAME = "scoreflow_segments"
_registered: set[str] = set()  # the names given to transformers' AttentionInterface


def segment_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                      dropout: float = 0.0, scaling: float | None = None,
                      segments: Sequence[tuple[int, int, tuple[tuple[int, int], ...]]] | None = None, **kwargs):
    """transformers' SDPA attention, per segment when `segments` ((start, length, the earlier segments
    it sees) for each segment of the batch's one row) describes the row; plain SDPA otherwise."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    kwargs.pop("is_causal", None)
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    # Keys may begin with cached ones (an opening run earlier, train.py): queries are the row's last ones.
    cached = key.shape[2] - query.shape[2]
    assert query.shape[0] == 1 and sum(n for _, n, _ in segments) == key.shape[2], (query.shape, key.shape, segments)
    outs = []
    for at, n, seen in segments:
        if at < cached:
            assert at + n <= cached, (at, n, cached)
            continue
        q = query[:, :, at - cached:at - cached + n]
        if not seen:  # the opening, or a prompt alone: the causal kernel skips the upper triangle
            outs.append(sdpa_attention_forward(module, q, key[:, :, at:at + n],
                                               value[:, :, at:at + n], None, dropout=dropout, scaling=scaling,
                                               is_causal=True, **kwargs)[0])
            continue
        before = sum(m for _, m in seen)
        k = torch.cat([*(key[:, :, s:s + m] for s, m in seen), key[:, :, at:at + n]], 2)
        v = torch.cat([*(value[:, :, s:s + m] for s, m in seen), value[:, :, at:at + n]], 2)
        # Query i of the segment sees every earlier segment it builds on and its own tokens 0..i.
        mask = torch.ones(n, before + n, dtype=torch.bool, device=query.device).tril(before)[None, None]
        outs.append(sdpa_attention_forward(module, q, k, v, mask, dropout=dropout,
                                           scaling=scaling, **kwargs)[0])
    return torch.cat(outs, 1), None  # (batch, length, heads, head_dim), as sdpa_attention_forward returns


@contextmanager
def attention_by(config, name: str, function):
    """Dispatch the model's attention to `function`, registered under `name`, while the block runs
    (the decoder's layers read config._attn_implementation at each call)."""
    from transformers import AttentionInterface

    if name not in _registered:
        AttentionInterface.register(name, function)
        _registered.add(name)
    old = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = old


def by_segments(config):
    """segment_attention while the block runs. No mask function is registered under NAME, so
    transformers builds no (W, W) mask either."""
    return attention_by(config, NAME, segment_attention)
