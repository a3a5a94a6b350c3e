"""Batched sampled generation on mlx-lm's BatchGenerator: continuous batching (a finished row leaves
the batch and the next prompt takes its place), each prompt's opening handed over as a prefilled KV
cache (prompt_cache.py), the chat format's end-of-turn tokens as stop tokens, and stop strings
checked on the decoded text: `</graph>` is no fixed token sequence, as the tokenizer merges it with
what comes before it."""

from __future__ import annotations

from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn

from scoreflow.model.backend import Completion, Messages, SamplingParams
from scoreflow.model.chat import ChatFormat, cut_at_stop

# How top-p sampling finds the nucleus. "mlx-lm": its apply_top_p, which sorts the vocabulary at
# every step on the device, without a host sync (the default on Metal). "top-64": `nucleus` below,
# a partition instead of a sort and one host sync per step (the default on CPU, where sorting
# 8 x 49k logits costs about half of a SmolLM2 decoding step; benchmarks/mlx_vs_mlx_lm.py measures
# both). Both keep the PyTorch backend's nucleus: temperature first, then top-p.
TOP_P_SAMPLERS = ("mlx-lm", "top-64")


def make_sampler(params: SamplingParams, top_p_sampler: str) -> Callable[[mx.array], mx.array]:
    """Next token per row from log-probabilities: greedy at temperature 0, else temperature and
    top-p (nucleus) sampling."""
    from mlx_lm.sample_utils import apply_top_p, categorical_sampling, greedy_sampler

    temp, top_p = params.temperature, params.top_p
    if temp <= 0:
        return greedy_sampler
    if top_p >= 1:
        return lambda logprobs: categorical_sampling(logprobs, temp)
    if top_p_sampler == "mlx-lm":
        return lambda logprobs: categorical_sampling(apply_top_p(logprobs * (1 / temp), top_p), 1.0)
    if top_p_sampler != "top-64":
        raise ValueError(f"unknown top-p sampler {top_p_sampler!r}: one of {TOP_P_SAMPLERS}")

    def sample(logprobs: mx.array) -> mx.array:
        kept, ids = nucleus(logprobs * (1 / temp), top_p)
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


def _has_stop(fmt: ChatFormat, toks: list[int], stops: Sequence[str], window: int) -> bool:
    # A stop string completed by the newest token lies within its last few tokens.
    tail = fmt.decode(toks[-window:])
    return any(s in tail for s in stops)


Openings = Callable[[list[int]], list]  # an opening's token ids -> its prefilled mlx-lm prompt cache


def generate(model: nn.Module, fmt: ChatFormat, prompts: Sequence[Messages], params: SamplingParams, *,
             batch_size: int, openings: Openings, top_p_sampler: str, stream: mx.Stream | None = None) -> list[Completion]:
    """Completions of `prompts`, at most `batch_size` rows decoding at once, shortest prompts first.
    A seed seeds the whole call."""
    from mlx_lm.generate import BatchGenerator

    encoded = [fmt.prompt_ids(m) for m in prompts]
    cut = [fmt.context_length(m, ids) for m, ids in zip(prompts, encoded)]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # less padding per batch
    gen = BatchGenerator(model, max_tokens=params.max_new_tokens, stop_tokens=[[t] for t in fmt.stop_ids],
                         sampler=make_sampler(params, top_p_sampler), completion_batch_size=batch_size,
                         prefill_batch_size=batch_size, stream=stream)
    try:
        with mx.stream(gen.stream):
            caches: dict[tuple[int, ...], list] = {}
            for i in order:
                head = tuple(encoded[i][:cut[i]])
                if head and head not in caches:
                    caches[head] = openings(list(head))
            uids = gen.insert([encoded[i][cut[i]:] for i in order],
                              caches=[caches[tuple(encoded[i][:cut[i]])] if cut[i] else None for i in order])
        row = dict(zip(uids, order))
        out: dict[int, list[int]] = {i: [] for i in order}
        ended = dict.fromkeys(order, False)
        window = max((len(s) for s in params.stop), default=0) + 4
        if params.seed is not None:
            mx.random.seed(params.seed)
        while responses := gen.next_generated():
            for r in responses:
                i = row[r.uid]
                out[i].append(r.token)
                if r.finish_reason == "stop":  # an end-of-turn token
                    ended[i] = True
                elif r.finish_reason is None and params.stop and _has_stop(fmt, out[i], params.stop, window):
                    ended[i] = True
                    gen.remove([r.uid])
    finally:
        gen.close()
    stop_ids = set(fmt.stop_ids)
    results = []
    for i, ids in enumerate(encoded):
        toks = out[i]
        eot = bool(toks) and toks[-1] in stop_ids
        text, stopped = cut_at_stop(fmt.decode(toks[:-1] if eot else toks), params.stop)
        results.append(Completion(text=text, tokens=len(toks), finished=ended[i] or stopped, prompt_tokens=len(ids)))
    return results
