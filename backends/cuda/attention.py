"""Attention for one packed row by segments: the same math as the row's custom (W, W) mask, less work.

A packed row (train.Tree) is an opening shared by several prompts, then each prompt's rest and its
completions; a segment sees the segments it builds on (the opening; then its prompt's rest) and
itself. With the custom mask, SDPA computes all W x W scores and throws most away (on CPU its flash
kernel skips no block of a custom mask). By segments, the opening attends to itself with the causal
kernel (which skips the upper triangle), and each prompt's rest with its completions attends in one
call to what they see and themselves, with a mask over just those keys.

Used for single-row micro-batches on CPU (the default there) with SDPA models and no gradient
checkpointing (a checkpointed layer would recompute through the plain attention later); the mask
path stays for everything else.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
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
    assert all(at + n <= cached for at, n, _ in segments if at < cached), (segments, cached)
    segs = [g for g in segments if g[0] >= cached]
    outs = []
    i = 0
    while i < len(segs):
        at, n, seen = segs[i]
        if not seen:  # the opening, or a prompt alone: the causal kernel skips the upper triangle
            outs.append(sdpa_attention_forward(module, query[:, :, at - cached:at - cached + n], key[:, :, at:at + n],
                                               value[:, :, at:at + n], None, dropout=dropout, scaling=scaling,
                                               is_causal=True, **kwargs)[0])
            i += 1
            continue
        # A run: this segment (a prompt's rest, or a completion) and the segments after it that build on
        # it too (its completions): one call over the keys the run's first segment sees and the run's own,
        # the mask keeping what each token sees.
        j = i + 1
        while j < len(segs) and len(segs[j][2]) > len(seen) and segs[j][2][:len(seen)] == seen and \
                set(segs[j][2][len(seen):]) <= {g[:2] for g in segs[i:j]}:
            j += 1
        stop = segs[j - 1][0] + segs[j - 1][1]
        spans = (*seen, (at, stop - at))
        if all(a + m == b for (a, m), (b, _) in zip(spans, spans[1:])):  # contiguous: a view, no copy
            lo = spans[0][0]
            k, v = (key, value) if (lo, stop) == (0, key.shape[2]) else (key[:, :, lo:stop], value[:, :, lo:stop])
        else:
            k = torch.cat([key[:, :, a:a + m] for a, m in spans], 2)
            v = torch.cat([value[:, :, a:a + m] for a, m in spans], 2)
        outs.append(sdpa_attention_forward(module, query[:, :, at - cached:stop - cached], k, v,
                                           _run_mask(tuple(segs[i:j]), spans, query.device), dropout=dropout,
                                           scaling=scaling, **kwargs)[0])
        i = j
    return torch.cat(outs, 1), None  # (batch, length, heads, head_dim), as sdpa_attention_forward returns


@lru_cache(maxsize=8)
def _run_mask(run: tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...], spans: tuple[tuple[int, int], ...],
              device: torch.device) -> torch.Tensor:
    """(1, 1, the run's tokens, its keys: `spans` laid end to end): a token sees the segments its own
    builds on and its own segment's tokens up to itself. Made once per forward, shared by its layers."""
    where, col = {}, 0
    for a, m in spans:
        where[a] = col
        col += m
    start = run[0][0]

    def column(a: int) -> int:  # a run segment's first key column: inside the run's own span
        return where[start] + (a - start)

    mask = torch.zeros(sum(n for _, n, _ in run), col, dtype=torch.bool)
    for at, n, seen in run:
        rows = slice(at - start, at - start + n)
        for a, m in seen:
            c = where[a] if a in where else column(a)
            mask[rows, c:c + m] = True
        c = column(at)
        mask[rows, c:c + n] = torch.ones(n, n, dtype=torch.bool).tril()
    return mask.to(device)[None, None]


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
