"""Batched sampled generation with left padding, stop strings and per-row token counts.

`generate` is a small decoding loop of its own: identical prompts (the k samples per problem that
ScoreFlow draws) are prefilled once and their KV cache shared; distinct prompts that open alike (the
generator prompt's instructions and few-shot examples, ~97% of its tokens, before each problem)
prefill that common prefix once; and finished rows leave the batch so the rest decode at the size
they need. `hf_generate` is transformers' `generate`, kept as the reference (greedy outputs must
agree) and as the benchmarks' one-at-a-time baseline.
"""

from __future__ import annotations

import inspect
from typing import Sequence

from transformers import DynamicCache

import torch

from scoreflow.model.backend import Completion, Messages, SamplingParams
from scoreflow.model.chat import ChatFormat, cut_at_stop


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


def _forward_kwargs(model) -> tuple[str, bool]:
    """The cache keyword (`cache` from transformers 5.24, `past_key_values` before) and logits_to_keep support."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = inspect.signature(type(base).forward).parameters
    return ("cache" if "cache" in names else "past_key_values"), "logits_to_keep" in names


def _stop_window(stops: Sequence[str]) -> int:
    return max((len(s) for s in stops), default=0) + 2  # tokens: every token decodes to >= 1 character


@torch.no_grad()
def generate(
    model, tokenizer, fmt: ChatFormat, prompts: Sequence[Messages], params: SamplingParams,
    device: torch.device, batch_size: int,
) -> list[Completion]:
    encoded = [fmt.prompt_ids(m) for m in prompts]
    # Shortest first (less padding); identical prompts adjacent, so they share a batch and a prefill.
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), encoded[i]))
    results: list[Completion | None] = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        gen = None
        if params.seed is not None and params.temperature > 0:
            gen = torch.Generator(device=device).manual_seed(params.seed + start)
        for i, c in zip(rows, _generate_batch(model, fmt, [encoded[i] for i in rows], params, device,
                                              tokenizer.pad_token_id, gen)):
            c.prompt_tokens = len(encoded[i])
            results[i] = c
    return [c for c in results if c is not None]


def _generate_batch(model, fmt: ChatFormat, prompts: list[list[int]], params: SamplingParams, device: torch.device,
                    pad: int, gen: torch.Generator | None) -> list[Completion]:
    unique: dict[tuple[int, ...], int] = {}
    source = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
    keys = list(unique)
    cache = DynamicCache()
    cache_kw, keep_kw = _forward_kwargs(model)
    # The rows are [shared prefix][left padding][own suffix]: the padding sits where each suffix begins,
    # masked out, and positions run on without a gap, as with plain left padding (shared = 0).
    shared = common_prefix(keys) if len(keys) > 1 else 0
    if shared < MIN_SHARED:
        shared = 0
    else:
        model(input_ids=torch.tensor([keys[0][:shared]], device=device), use_cache=True, **{cache_kw: cache},
              **({"logits_to_keep": 1} if keep_kw else {}))
        cache.batch_select_indices(torch.zeros(len(keys), dtype=torch.long, device=device))
    width = max(len(k) for k in keys) - shared
    ids = torch.full((len(keys), width), pad, dtype=torch.long)
    mask = torch.zeros((len(keys), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for r, k in enumerate(keys):
        ids[r, width - (len(k) - shared):] = torch.tensor(k[shared:])
        mask[r, shared + width - (len(k) - shared):] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **{cache_kw: cache},
                **({"logits_to_keep": 1} if keep_kw else {}))
    pick = torch.tensor(source, device=device)
    if len(keys) < len(prompts):  # each sample of a prompt gets its own copy of the prompt's cache
        cache.batch_select_indices(pick)
    logits = out.logits[pick, -1]
    mask, last_pos = mask[pick], pos[pick, -1]

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
            cache.batch_select_indices(sel)
            mask, last_pos = mask[sel], last_pos[sel]
            nxt = [nxt[r] for r in keep]
            alive = [alive[r] for r in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        last_pos = last_pos + 1
        out = model(input_ids=torch.tensor(nxt, device=device)[:, None], attention_mask=mask,
                    position_ids=last_pos[:, None], use_cache=True, **{cache_kw: cache})
        logits = out.logits[:, -1]
    for i in range(len(prompts)):
        if done[i] is None:
            done[i] = _finish(fmt, tokens[i], params.stop, eos=False)
    return [c for c in done if c is not None]


# Below this many common tokens the prompts are prefilled whole: a separate call would save little.
MIN_SHARED = 32


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """The number of leading tokens all prompts share, leaving each at least one token of its own
    (the last prompt token's logits start the decoding)."""
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return max(n, 0)


def _finish(fmt: ChatFormat, body: list[int], stops: Sequence[str], *, eos: bool) -> Completion:
    text, stopped = cut_at_stop(fmt.decode(body), stops)
    return Completion(text=text, tokens=len(body) + eos, finished=stopped or eos)
