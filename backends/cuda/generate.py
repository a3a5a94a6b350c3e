"""Batched sampled generation with left padding, stop strings and per-row token counts."""

from __future__ import annotations

from typing import Sequence

import torch

from scoreflow.backend import Completion, Messages, SamplingParams
from scoreflow.chat import ChatFormat, cut_at_stop


@torch.no_grad()
def generate(
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
            )
    return [c for c in results if c is not None]
