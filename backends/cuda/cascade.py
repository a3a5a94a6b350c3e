"""Attention for generation over shared openings: the same math as every row holding its own copy
of its prompt's opening, with the opening's keys and values read once per batch.

A generator prompt is ~97% opening (instructions and few-shot examples) shared by every row of a
batch, or by a few groups of rows (the rotated examples of the optimisation's samples). Copied into
each row, the opening's keys and values are what a decoding step spends its time reading. Here each
row's cache holds only its own tokens (the rest of its prompt, then what it generated); every query
attends to its group's opening (kept once, from the prompt cache) and to its own tokens, and the two
softmax parts are joined exactly through their shared maximum and sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scoreflow.backends.cuda.attention import attention_by

NAME = "scoreflow_cascade"
CPU_FLASH = True  # on CPU, join through the flash kernel's log-sum-exp (else the matmul join GPUs use)


@dataclass
class Openings:
    """The batch's distinct openings, each as its (key, value) per layer of shape (1, kv heads, length,
    head dim) or None (rows whose prompt opens with nothing worth sharing), and each batch row's one."""
    kv: list[list[tuple[torch.Tensor, torch.Tensor]] | None]
    group: torch.Tensor  # (batch,): the index in `kv` of each row's opening

    def select(self, indices: torch.Tensor) -> "Openings":
        """The same openings for the batch rows `indices` (rows leave, or a prompt's samples are copied)."""
        return Openings(self.kv, self.group[indices])


def cascade_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
                      dropout: float = 0.0, scaling: float | None = None, openings: Openings | None = None,
                      **kwargs):
    """query (B, H, q, d); key, value (B, kv heads, own length, d): each row's own tokens; attention_mask
    (B, 1, q, own length), True where a query sees an own key. Returns (B, q, H, d) as SDPA's does."""
    assert openings is not None
    b, heads, q, d = query.shape
    scale = scaling if scaling is not None else d ** -0.5
    if query.device.type == "cpu" and CPU_FLASH:
        return _attend_cpu(module, query, key, value, attention_mask, scale, openings), None
    if len(openings.kv) == 1 or bool((openings.group == openings.group[0]).all()):
        kv = openings.kv[int(openings.group[0])]
        return _attend(module, query, key, value, attention_mask, scale, kv), None
    out = query.new_empty((b, q, heads, d))
    for g, kv in enumerate(openings.kv):
        rows = torch.nonzero(openings.group == g).flatten()
        if len(rows):
            out[rows] = _attend(module, query[rows], key[rows], value[rows], attention_mask[rows], scale, kv)
    return out, None


def _attend(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, scale: float,
            kv: list[tuple[torch.Tensor, torch.Tensor]] | None) -> torch.Tensor:
    """Rows of one opening (or none). Laid out (kv head, row, head of the group, query, key) so that the
    opening's keys and values are read once for all rows, with no copy of anything opening-sized."""
    b, heads, q, d = query.shape
    kvh = key.shape[1]
    rep = heads // kvh
    qk = query.view(b, kvh, rep, q, d).transpose(0, 1)  # (kvh, b, rep, q, d)
    ko, vo = key.transpose(0, 1)[:, :, None], value.transpose(0, 1)[:, :, None]  # (kvh, b, 1, own, d)
    own = torch.matmul(qk, ko.transpose(-1, -2)).mul_(scale)  # (kvh, b, rep, q, own)
    own.masked_fill_(~mask.transpose(0, 1)[:, :, None], float("-inf"))
    if kv is None:
        out = torch.matmul(own.softmax(-1), vo)
    else:
        ks, vs = kv[module.layer_idx]  # (1, kvh, P, d)
        shared = torch.matmul(qk.reshape(kvh, b * rep * q, d), ks[0].transpose(-1, -2)).mul_(scale)
        shared = shared.view(kvh, b, rep, q, -1)
        top = torch.maximum(shared.amax(-1, keepdim=True), own.amax(-1, keepdim=True))
        es, eo = shared.sub_(top).exp_(), own.sub_(top).exp_()
        total = es.sum(-1, keepdim=True).add_(eo.sum(-1, keepdim=True))
        out = torch.matmul(es.view(kvh, b * rep * q, -1), vs[0]).view(kvh, b, rep, q, d)
        out = out.add_(torch.matmul(eo, vo)).div_(total)
    return out.permute(1, 3, 0, 2, 4).reshape(b, q, heads, d)  # (b, q, H, d), head h = kv head h // rep


def _attend_cpu(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                scale: float, openings: Openings) -> torch.Tensor:
    """The same join on CPU through PyTorch's flash kernel, which returns each query's log-sum-exp:
    every row's own tokens in one call, each opening in one call for all its rows (a kv head's queries
    of all rows as one sequence over the opening), joined by their log-sum-exps."""
    b, heads, q, d = query.shape
    kvh = key.shape[1]
    rep = heads // kvh
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    grouped = query.reshape(b, kvh, rep * q, d)  # head h = kv head h // rep, as repeat_kv lays them out
    bias = torch.zeros(mask.shape, dtype=query.dtype).masked_fill_(~mask, float("-inf")).repeat(1, 1, rep, 1)
    out, lse = flash(grouped, key, value, attn_mask=bias, scale=scale)  # (b, kvh, rep q, d), (b, kvh, rep q)
    for g, kv in enumerate(openings.kv):
        if kv is None:
            continue
        rows = torch.nonzero(openings.group == g).flatten()
        if not len(rows):
            continue
        ks, vs = kv[module.layer_idx]  # (1, kvh, P, d)
        part = grouped if len(rows) == b else grouped[rows]
        n = len(rows)
        shared, top = flash(part.transpose(0, 1).reshape(1, kvh, n * rep * q, d), ks, vs, scale=scale)
        shared = shared.view(kvh, n, rep * q, d).transpose(0, 1)
        top = top.view(kvh, n, rep * q).transpose(0, 1)
        own, own_lse = (out, lse) if n == b else (out[rows], lse[rows])
        m = torch.maximum(own_lse, top)
        wo, ws = (own_lse - m).exp_(), (top - m).exp_()
        joined = (own * wo[..., None] + shared * ws[..., None]) / (wo + ws)[..., None]
        if n == b:
            out = joined.to(out.dtype)
        else:
            out[rows] = joined.to(out.dtype)
    return out.view(b, kvh, rep, q, d).permute(0, 3, 1, 2, 4).reshape(b, q, heads, d)


def over_openings(config):
    """Dispatch the model's attention to cascade_attention while the block runs."""
    return attention_by(config, NAME, cascade_attention)
