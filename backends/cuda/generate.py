"""Batched sampled generation with left padding, stop strings and per-row token counts.

`generate` is a small decoding loop of its own: each prompt's opening (the generator prompt's
instructions and few-shot examples, ~97% of its tokens, before each problem) comes from a prompt
cache kept while the adapter is unchanged; identical prompts (the k samples per problem that
ScoreFlow draws) are prefilled once and their KV cache shared; the cache grows in place rather than
being copied at every step; and finished rows leave the batch so the rest decode at the size they
need. `hf_generate` is transformers' `generate`, kept as the reference (greedy outputs must
agree) and as the benchmarks' one-at-a-time baseline.
"""

from __future__ import annotations

import inspect
from typing import Sequence

from collections import OrderedDict

from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

import torch

from scoreflow.model.backend import Completion, Messages, SamplingParams
from scoreflow.model.chat import ChatFormat, cut_at_stop

from . import cascade


@torch.no_grad()
def hf_generate(
    model, tokenizer, fmt: ChatFormat, prompts: Sequence[Messages], params: SamplingParams,
    device: torch.device, batch_size: int,
) -> list[Completion]:
    encoded = [fmt.prompt_ids(m) for m in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding per batch
    results: list[Completion | None] = [None] * len(encoded)
    pad = tokenizer.pad_token_id
    sample = params.temperature > 0
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            n = len(encoded[i])
            ids[r, width - n:] = torch.tensor(encoded[i])
            mask[r, width - n:] = 1
        if params.seed is not None:
            torch.manual_seed(params.seed + start)
        kwargs = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            pad_token_id=pad,
            eos_token_id=fmt.stop_ids,
        )
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tokenizer)
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        new = out[:, width:].tolist()
        stops = set(fmt.stop_ids) | {pad}  # finished rows are padded
        for r, i in enumerate(rows):
            toks = new[r]
            end = next((j for j, t in enumerate(toks) if t in stops), None)
            body = toks if end is None else toks[:end]
            text, stopped = cut_at_stop(fmt.decode(body), params.stop)
            results[i] = Completion(
                text=text,
                tokens=len(body) + (end is not None),
                finished=stopped or end is not None,
                prompt_tokens=len(encoded[i]),
            )
    return [c for c in results if c is not None]


def _sample(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> torch.Tensor:
    """Next token per row: greedy at temperature 0, else temperature + nucleus (top-p) sampling."""
    if params.temperature <= 0:
        return logits.argmax(-1)
    probs = (logits.float() / params.temperature).softmax(-1)
    if params.top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    kept, idx = nucleus(probs, params.top_p)
    return idx.gather(-1, torch.multinomial(kept, 1, generator=gen)).squeeze(-1)


def nucleus(probs: torch.Tensor, top_p: float, k: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-p nucleus of each row: the smallest set of most likely tokens whose mass reaches
    `top_p`, as (probabilities with the rest zeroed, token ids), most likely first.

    Sorting the 49k-token vocabulary cost ~27 ms per batch-8 step on 2 CPU cores; the `k` most
    likely tokens cost ~1 ms. When they hold more than `top_p` of every row's mass, the nucleus lies
    inside them (any token further down has more than `top_p` before it), so the result is exact;
    otherwise the whole vocabulary is sorted."""
    top, idx = probs.topk(min(k, probs.shape[-1]), -1)
    if not bool((top.sum(-1) > top_p).all()):
        top, idx = probs.sort(-1, descending=True)
    drop = top.cumsum(-1) - top > top_p  # a token goes when the tokens before it already reach top_p
    return top.masked_fill(drop, 0.0), idx


def forward_keywords(model) -> tuple[str, bool]:
    """The cache keyword (`cache` from transformers 5.24, `past_key_values` before) and logits_to_keep support."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = inspect.signature(type(base).forward).parameters
    return ("cache" if "cache" in names else "past_key_values"), "logits_to_keep" in names


def _stop_window(stops: Sequence[str]) -> int:
    return max((len(s) for s in stops), default=0) + 2  # tokens: every token decodes to >= 1 character


class GrowingLayer(DynamicLayer):
    """A cache layer whose keys and values live in a buffer with room to grow: a decoding step writes
    its one position instead of copying the whole cache (DynamicLayer concatenates at every step).
    The first update reserves `reserve` positions beyond its own (the tokens still to generate), so a
    generation that stays within them never reallocates; finished rows leave the buffer in place."""

    CHUNK = 256
    MOVE = 8  # rows moved per copy when finished rows leave

    def __init__(self, reserve: int = CHUNK):
        super().__init__()
        self.reserve = reserve

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.device, self.is_initialized, self.length = key_states.device, True, 0
            self._k = key_states.new_empty((*key_states.shape[:2], 0, key_states.shape[3]))
            self._v = value_states.new_empty((*value_states.shape[:2], 0, value_states.shape[3]))
        end = self.length + key_states.shape[2]
        if end > self._k.shape[2]:
            room = self.reserve if self.length == 0 else self.CHUNK

            def grow(b: torch.Tensor) -> torch.Tensor:
                return torch.cat([b, b.new_empty((*b.shape[:2], end - b.shape[2] + room, b.shape[3]))], 2)
            self._k, self._v = grow(self._k), grow(self._v)
        self._k[:, :, self.length:end] = key_states
        self._v[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._k, self._v = self._k[indices], self._v[indices]
            self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]

    def keep_rows(self, keep: Sequence[int]) -> None:
        """Keep the rows `keep` (ascending), moved to the front of the same buffer in that order: a few
        rows at a time, so that no copy of the whole cache is ever made."""
        if not self.is_initialized:
            return
        first = next((j for j, r in enumerate(keep) if r != j), len(keep))
        for at in range(first, len(keep), self.MOVE):
            rows = torch.tensor(keep[at:at + self.MOVE], device=self._k.device)  # later copies read rows >= at + MOVE
            self._k[at:at + len(rows)] = self._k[rows]
            self._v[at:at + len(rows)] = self._v[rows]
        self._k, self._v = self._k[:len(keep)], self._v[:len(keep)]
        self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]


class PromptCache:
    """The key/value tensors of prompt prefixes (the system prompt and few-shot examples that open
    every generator prompt), kept across calls while the weights that made them are unchanged: the
    backend clears it whenever the adapter changes. A prefix is computed the same way whether it is
    kept or not, so keeping it changes no output."""

    def __init__(self, max_entries: int = 16, keep: bool = True):
        self.max_entries, self.keep = max_entries, keep
        self._store: OrderedDict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.hits = self.misses = 0

    def clear(self) -> None:
        self._store.clear()

    def follow(self, weights: object) -> None:
        """Forget everything when `weights` (a fingerprint of the trainable weights) changed since the last call."""
        if weights != getattr(self, "_weights", None):
            self.clear()
            self._weights = weights

    def get(self, model, key: tuple, ids: list[int], device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        kv = self._store.get(key)
        if kv is not None:
            self._store.move_to_end(key)
            self.hits += 1
            return kv
        self.misses += 1
        cache_kw, keep_kw = forward_keywords(model)
        cache = DynamicCache()
        model(input_ids=torch.tensor([ids], device=device), use_cache=True, **{cache_kw: cache},
              **({"logits_to_keep": 1} if keep_kw else {}))
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        if self.keep:
            self._store[key] = kv
            while len(self._store) > self.max_entries:
                self._store.popitem(last=False)
        return kv


def _forward(model, openings: cascade.Openings | None, **inputs):
    """The model on its own tokens (a 4D mask over them), the openings' attention joined in cascade."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if openings is None:
        if base.config._attn_implementation != "sdpa":  # eager attention adds its mask
            mask = inputs["attention_mask"]
            inputs["attention_mask"] = torch.zeros(mask.shape, dtype=base.dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(base.dtype).min)
        return model(**inputs)
    with cascade.over_openings(base.config):
        return model(**inputs, openings=openings)


# Below this many tokens a prompt's opening is prefilled with the rest: a separate pass would save little.
MIN_PREFIX = 32


@torch.no_grad()
def generate(
    model, tokenizer, fmt: ChatFormat, prompts: Sequence[Messages], params: SamplingParams,
    device: torch.device, batch_size: int, cache: PromptCache | None = None, adapter: bool = True,
) -> list[Completion]:
    """Completions of `prompts`, `batch_size` rows at a time. Each prompt's opening (everything before
    its last message: the system prompt and few-shot examples) comes from `cache`, computed once per
    distinct opening; only the rest is prefilled per prompt, once for identical prompts."""
    cache = cache or PromptCache(keep=False)
    encoded = [fmt.prompt_ids(m) for m in prompts]
    opening = [fmt.context_length(m, ids) for m, ids in zip(prompts, encoded)]
    # Shortest first (less padding); identical prompts adjacent, so they share a batch and a prefill.
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), encoded[i]))
    results: list[Completion | None] = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        gen = None
        if params.seed is not None and params.temperature > 0:
            gen = torch.Generator(device=device).manual_seed(params.seed + start)
        batch = [(encoded[i], opening[i] if opening[i] >= MIN_PREFIX else 0) for i in rows]
        for i, c in zip(rows, _generate_batch(model, fmt, batch, params, device, tokenizer.pad_token_id, gen,
                                              cache, adapter)):
            c.prompt_tokens = len(encoded[i])
            results[i] = c
    return [c for c in results if c is not None]


def _generate_batch(model, fmt: ChatFormat, prompts: list[tuple[list[int], int]], params: SamplingParams,
                    device: torch.device, pad: int, gen: torch.Generator | None, prompt_cache: PromptCache,
                    adapter: bool) -> list[Completion]:
    unique: dict[tuple[int, ...], int] = {}
    source = [unique.setdefault(tuple(p), len(unique)) for p, _ in prompts]
    opening = {tuple(p): n for p, n in prompts}
    keys = list(unique)
    cache_kw, keep_kw = forward_keywords(model)
    # Each row's cache holds its own tokens only (the rest of its prompt, left-padded, then what it
    # writes); its opening's keys and values come once from the prompt cache (cascade.py).
    lengths = [opening[k] for k in keys]
    distinct = list(dict.fromkeys(k[:n] for k, n in zip(keys, lengths) if n))
    kv = [prompt_cache.get(model, (adapter, o), list(o), device) for o in distinct]
    group = torch.tensor([distinct.index(k[:n]) if n else len(distinct) for k, n in zip(keys, lengths)],
                         device=device)
    openings = cascade.Openings([*kv, None], group) if kv else None
    rest = max(len(k) - n for k, n in zip(keys, lengths))
    ids = torch.full((len(keys), rest), pad, dtype=torch.long)
    own = torch.zeros((len(keys), rest), dtype=torch.bool)
    for r, (k, n) in enumerate(zip(keys, lengths)):
        ids[r, rest - (len(k) - n):] = torch.tensor(k[n:])
        own[r, rest - (len(k) - n):] = True
    ids, own = ids.to(device), own.to(device)
    starts = torch.tensor(lengths, device=device)[:, None]
    pos = (own.long().cumsum(-1) - 1).clamp(min=0) + starts
    cache = DynamicCache()
    cache.layers, cache.layer_class_to_replicate = [], lambda: GrowingLayer(params.max_new_tokens)
    # Query i sees own keys 0..i that are tokens (a padding query sees itself: no empty softmax).
    seen = torch.ones(rest, rest, dtype=torch.bool, device=device).tril() & own[:, None, :]
    seen |= torch.eye(rest, dtype=torch.bool, device=device)
    out = _forward(model, openings, input_ids=ids, attention_mask=seen[:, None], position_ids=pos, use_cache=True,
                   **{cache_kw: cache}, **({"logits_to_keep": 1} if keep_kw else {}))
    pick = torch.tensor(source, device=device)
    if len(keys) < len(prompts):  # each sample of a prompt gets its own copy of the prompt's cache
        cache.batch_select_indices(pick)
    if openings is not None:
        openings = openings.select(pick)
    logits = out.logits[pick, -1]
    own, last_pos = own[pick], pos[pick, -1]

    stop_ids = set(fmt.stop_ids) | {pad}
    window = _stop_window(params.stop)
    tokens: list[list[int]] = [[] for _ in prompts]
    done: list[Completion | None] = [None] * len(prompts)
    alive = list(range(len(prompts)))  # batch row r decodes prompt alive[r]
    for step in range(params.max_new_tokens):
        nxt = _sample(logits, params, gen).tolist()
        keep = []
        for r, (i, t) in enumerate(zip(alive, nxt)):
            if t in stop_ids:
                done[i] = _finish(fmt, tokens[i], params.stop, eos=True)
                continue
            tokens[i].append(t)
            if params.stop and any(s in fmt.decode(tokens[i][-window:]) for s in params.stop):
                done[i] = _finish(fmt, tokens[i], params.stop, eos=False)
                continue
            keep.append(r)
        if not keep or step + 1 == params.max_new_tokens:
            break
        if len(keep) < len(alive):  # drop finished rows from the batch and the cache
            sel = torch.tensor(keep, device=device)
            for layer in cache.layers:
                layer.keep_rows(keep)
            own, last_pos = own[sel], last_pos[sel]
            openings = openings.select(sel) if openings is not None else None
            nxt = [nxt[r] for r in keep]
            alive = [alive[r] for r in keep]
        own = torch.cat([own, own.new_ones((len(alive), 1))], dim=1)
        last_pos = last_pos + 1
        out = _forward(model, openings, input_ids=torch.tensor(nxt, device=device)[:, None],
                       attention_mask=own[:, None, None, :], position_ids=last_pos[:, None], use_cache=True,
                       **{cache_kw: cache})
        logits = out.logits[:, -1]
    for i in range(len(prompts)):
        if done[i] is None:
            done[i] = _finish(fmt, tokens[i], params.stop, eos=False)
    return [c for c in done if c is not None]


def _finish(fmt: ChatFormat, body: list[int], stops: Sequence[str], *, eos: bool) -> Completion:
    text, stopped = cut_at_stop(fmt.decode(body), stops)
    return Completion(text=text, tokens=len(body) + eos, finished=stopped or eos)
