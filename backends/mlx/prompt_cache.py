"""The generator prompt's opening, prefilled once: the system prompt and few-shot examples are ~97% of
each ~1,000-token prompt, and a run asks for it again with every batch. Its KV cache is kept in
mlx-lm's LRUPromptCache and handed to mlx-lm's BatchGenerator, which prefills only the rest (the
problem) of each prompt.

The opening is the chat format's `context_length`: the leading tokens every prompt that differs only
in its last message shares (the system prompt and few-shot turns, up to the last message's role
header), the split the PyTorch backend uses too. Where a prompt splits depends on the
prompt alone: with the cache off the opening is prefilled for each prompt the same way (one row,
the same chunks) and the generated tokens are the same as with it on, bit for bit. With
`generator.explore_examples` the examples are rotated per sample, so a run has a handful of
openings; the cache keeps the latest few. Openings prefilled with the adapter on are dropped when
the adapter changes (training, load_adapter); those of the base model (adapter off: the executor
role) stay valid for the whole run.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

MAX_OPENINGS = 8  # distinct openings kept per adapter state (explore_examples rotates through ~5)
PREFILL_STEP = 2048  # tokens per forward pass while prefilling, as mlx-lm's generator


def prefill(model: nn.Module, ids: list[int]) -> list[Any]:
    """A fresh mlx-lm prompt cache holding `ids`, one row, PREFILL_STEP tokens per forward pass."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    for start in range(0, len(ids), PREFILL_STEP):
        model(mx.array([ids[start:start + PREFILL_STEP]]), cache=cache)
        mx.eval([c.state for c in cache])
    return cache


class PromptCache:
    """Opening KV caches per adapter state (on, off). `enabled` False: every opening is prefilled
    anew (the same computation, nothing kept), to compare against."""

    def __init__(self, enabled: bool = True, size: int = MAX_OPENINGS):
        from mlx_lm.models.cache import LRUPromptCache

        self.enabled, self.size = enabled, size
        self._lru = {True: LRUPromptCache(max_size=size), False: LRUPromptCache(max_size=size)}
        self.hits = self.misses = 0

    def opening(self, model: nn.Module, ids: list[int], adapter: bool) -> list[Any]:
        """The KV cache of `ids`, to be read, not extended: mlx-lm's BatchGenerator copies the
        caches it is given into its batch cache."""
        if self.enabled:
            cache, rest = self._lru[adapter].fetch_nearest_cache("opening", ids)
            if cache is not None and not rest:  # only an exact opening: a trimmed longer one would split elsewhere
                self.hits += 1
                return cache
        self.misses += 1
        cache = prefill(model, ids)
        if self.enabled:
            self._lru[adapter].insert_cache("opening", ids, cache)
        return cache

    def adapter_changed(self) -> None:
        """Drop the openings prefilled with the adapter on."""
        from mlx_lm.models.cache import LRUPromptCache

        self._lru[True] = LRUPromptCache(max_size=self.size)

    @property
    def nbytes(self) -> int:
        return sum(lru.nbytes for lru in self._lru.values())
