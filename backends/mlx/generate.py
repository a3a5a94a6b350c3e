"""Batched sampled generation: left-padded prompts in a batched KV cache, finished rows dropped from
the batch as they stop (end of turn or a stop string)."""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx
import mlx.nn as nn

from scoreflow.model.backend import Completion, Messages, SamplingParams
from scoreflow.model.chat import ChatFormat, cut_at_stop


def _sampler(params: SamplingParams):
    """Next token per row from log-probabilities: greedy at temperature 0, else temperature and
    nucleus (top-p) sampling, with the PyTorch backend's definition of the nucleus."""
    temp, top_p = params.temperature, params.top_p
    if temp <= 0:
        return lambda logprobs: mx.argmax(logprobs, axis=-1)
    if top_p >= 1:
        return lambda logprobs: mx.random.categorical(logprobs / temp, axis=-1)

    def sample(logprobs: mx.array) -> mx.array:
        kept, ids = nucleus(logprobs / temp, top_p)
        pick = mx.random.categorical(kept, axis=-1)
        return mx.take_along_axis(ids, pick[:, None], axis=-1)[:, 0]

    return sample


def nucleus(logits: mx.array, top_p: float, k: int = 64) -> tuple[mx.array, mx.array]:
    """The top-p nucleus of each row, as (log-probabilities with the rest at -inf, token ids), most
    likely first: the smallest set of most likely tokens whose mass reaches `top_p`.

    The k most likely tokens are found with a partition instead of sorting the vocabulary. When
    they hold more than `top_p` of every row's mass the nucleus lies inside them (any token further
    down has more than `top_p` before it); otherwise the whole vocabulary is sorted."""
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    k = min(k, logp.shape[-1])
    ids = mx.argpartition(-logp, kth=k - 1, axis=-1)[:, :k]
    top = mx.take_along_axis(logp, ids, axis=-1)
    if not mx.all(mx.exp(top).sum(axis=-1) > top_p).item():
        ids = mx.argsort(-logp, axis=-1)
        top = mx.take_along_axis(logp, ids, axis=-1)
    else:
        order = mx.argsort(-top, axis=-1)
        ids, top = mx.take_along_axis(ids, order, axis=-1), mx.take_along_axis(top, order, axis=-1)
    p = mx.exp(top)
    drop = mx.cumsum(p, axis=-1) - p > top_p  # a token goes when the tokens before it already reach top_p
    return mx.where(drop, -mx.inf, top), ids


def _caches(model: nn.Module, left_padding: list[int]) -> list:
    from mlx_lm.models.cache import BatchKVCache

    return [BatchKVCache(left_padding) for _ in model.layers]


def _step(model: nn.Module, tokens: mx.array, cache: list) -> mx.array:
    logits = model(tokens, cache=cache)[:, -1, :].astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def _has_stop(fmt: ChatFormat, toks: list[int], stops: Sequence[str], window: int) -> bool:
    # A stop string completed by the newest token lies within its last few tokens.
    tail = fmt.decode(toks[-window:])
    return any(s in tail for s in stops)


def generate_batch(model: nn.Module, fmt: ChatFormat, prompts: list[list[int]], params: SamplingParams,
                   pad_id: int) -> list[tuple[list[int], bool]]:
    """Per prompt: the generated ids (a final end-of-turn id included) and whether it ended by itself."""
    width = max(len(p) for p in prompts)
    pads = [width - len(p) for p in prompts]
    ids = mx.array([[pad_id] * n + p for n, p in zip(pads, prompts)])
    cache = _caches(model, pads)
    sample = _sampler(params)
    stop_ids = set(fmt.stop_ids)
    window = max((len(s) for s in params.stop), default=0) + 4
    out: list[list[int]] = [[] for _ in prompts]
    ended = [False] * len(prompts)
    active = list(range(len(prompts)))
    logprobs = _step(model, ids, cache)
    for _ in range(params.max_new_tokens):
        nxt = sample(logprobs)
        mx.eval(nxt)
        keep = []
        for pos, (row, tok) in enumerate(zip(active, nxt.tolist())):
            out[row].append(tok)
            if tok in stop_ids or (params.stop and _has_stop(fmt, out[row], params.stop, window)):
                ended[row] = True
            else:
                keep.append(pos)
        if not keep:
            break
        if len(keep) < len(active):
            sel = mx.array(keep)
            for c in cache:
                c.filter(sel)
            nxt = nxt[sel]
            active = [active[k] for k in keep]
        logprobs = _step(model, nxt[:, None], cache)
    return list(zip(out, ended))


def generate(model: nn.Module, fmt: ChatFormat, prompts: Sequence[Messages], params: SamplingParams,
             pad_id: int, batch_size: int) -> list[Completion]:
    encoded = [fmt.prompt_ids(m) for m in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding per batch
    results: list[Completion | None] = [None] * len(encoded)
    stop_ids = set(fmt.stop_ids)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        if params.seed is not None:
            mx.random.seed(params.seed + start)
        outs = generate_batch(model, fmt, [encoded[i] for i in rows], params, pad_id)
        for i, (toks, ended) in zip(rows, outs):
            eot = bool(toks) and toks[-1] in stop_ids
            body = toks[:-1] if eot else toks
            text, stopped = cut_at_stop(fmt.decode(body), params.stop)
            results[i] = Completion(text=text, tokens=len(toks), finished=ended or stopped,
                                    prompt_tokens=len(encoded[i]))
    return [c for c in results if c is not None]
