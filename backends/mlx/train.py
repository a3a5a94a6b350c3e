"""Completion log-probs and the Score-DPO training loop for the MLX backend.

Speed without changing the math, as in the PyTorch backend: every unique sequence's reference
log-prob is computed once, adapter off; and each distinct prompt of a pass is run through the
decoder once, not once per completion. A ScoreFlow prompt (~1000 tokens) is far longer than a
workflow, and a pair's chosen and rejected completions (and every pair of one problem) share it.

mlx-lm models take no position ids, so instead of packing completions after the prompt (the
PyTorch way) the prompt runs alone and its keys and values are handed to the completions as a
KV cache: the completions of one prompt then run as one right-padded batch with positions
continuing after the prompt, each row attending to the prompt and to itself (causal mask aligned
at the end; padding sits after every scored position, so it changes nothing). The first token of a
completion is scored from the prompt's last position. In training the cache is built inside the
differentiated function, so gradients reach the prompt's keys and values (LoRA on q/v_proj moves
them), and one optimiser step runs one prompt's pairs per forward/backward pass, the gradients
summed with each pass weighted by its share of the batch. The steps themselves, their bookkeeping,
the checkpoints and the loss formula are the shared skeleton's (scoreflow/model/training.py); this module
supplies the tensor work (`_Work`). `plain_sequence_logprobs` (every
sequence in full) is the reference computation and the fallback for models whose layers do not
use mlx-lm's plain KVCache.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from scoreflow.model import training
from scoreflow.model.backend import StepInfo, TrainConfig, TrainPair, TrainStats
from scoreflow.model.chat import ChatFormat, Encoded

from scoreflow.backends.mlx.loss import OPS
from scoreflow.backends.mlx.model import adapter_disabled, lora_state

REF_CHUNK = 4  # sequences per forward pass when only scoring on the plain path
COMPLETION_TOKENS = 2048  # padded completion tokens per batch of completions of one prompt (at least one row)


def _head(model: nn.Module):
    head = getattr(model, "lm_head", None)
    return head if head is not None else model.model.embed_tokens.as_linear


def _split(model: nn.Module) -> bool:
    """Whether the model has the usual decoder (model.model) / LM head split."""
    return hasattr(model, "model") and hasattr(model.model, "embed_tokens")


def plain_sequence_logprobs(model: nn.Module, seqs: Sequence[list[int]], prompt_lens: Sequence[int],
                            pad_id: int) -> mx.array:
    """The unoptimised reference computation: summed log-prob of tokens [prompt_len:] of each
    sequence, every sequence in full, right-padded, one batch. Right padding needs no mask beyond
    the causal one. Only completion positions go through the LM head."""
    width = max(len(s) for s in seqs)
    ids = mx.array([s + [pad_id] * (width - len(s)) for s in seqs])
    rows, cols, targets = [], [], []
    for b, (s, p) in enumerate(zip(seqs, prompt_lens)):
        rows += [b] * (len(s) - p)
        cols += range(p - 1, len(s) - 1)
        targets += s[p:]
    rows_a, cols_a, tgt = mx.array(rows), mx.array(cols), mx.array(targets)
    if _split(model):
        hidden = model.model(ids)
        logits = _head(model)(hidden[rows_a, cols_a])
    else:  # a model family without the usual decoder/head split: full logits
        logits = model(ids)[rows_a, cols_a]
    logits = logits.astype(mx.float32)
    lp = mx.take_along_axis(logits, tgt[:, None], axis=-1)[:, 0] - mx.logsumexp(logits, axis=-1)
    owner = (mx.arange(len(seqs))[:, None] == rows_a[None, :]).astype(lp.dtype)  # (B, N)
    return owner @ lp


# -- each prompt once ---------------------------------------------------------------------------

def shareable(model: nn.Module) -> bool:
    """Whether prompts can be shared through a KV cache: a decoder/head split and mlx-lm's plain
    KVCache in every layer (not a rotating, quantized or state-space cache)."""
    from mlx_lm.models.cache import KVCache

    if not _split(model) or not getattr(model, "layers", None):
        return False
    make = getattr(model, "make_cache", None)
    return make is None or all(type(c) is KVCache for c in make())


class _PromptKV:
    """A layer's cache in the prompt pass: positions from 0, keeps the prompt's keys and values."""

    offset = 0

    def __init__(self):
        self.keys = self.values = None

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is None:  # a checkpointed layer runs again in the backward pass: keep the first
            self.keys, self.values = keys, values
        return keys, values

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None):
        from mlx_lm.models.cache import create_attention_mask

        return create_attention_mask(n, self.offset, return_array, window_size)


class _SharedPrompt(_PromptKV):
    """A layer's cache for a batch of completions of one prompt: the prompt's keys and values
    (batch 1, repeated for every row) before each row's own, positions continuing after the
    prompt. Never changes, so a checkpointed layer's second run sees the same."""

    def __init__(self, keys: mx.array, values: mx.array):
        self.keys, self.values, self.offset = keys, values, keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        b = keys.shape[0]
        k = mx.broadcast_to(self.keys, (b, *self.keys.shape[1:]))
        v = mx.broadcast_to(self.values, (b, *self.values.shape[1:]))
        return mx.concatenate([k, keys], axis=2), mx.concatenate([v, values], axis=2)


class _AfterOpening(_PromptKV):
    """A layer's cache for a prompt's rest after its opening ran apart: the opening's keys and values
    as constants (no gradient) before the rest's, positions continuing after the opening; keeps the
    whole prompt's."""

    def __init__(self, keys: mx.array, values: mx.array):
        self.opening = (mx.stop_gradient(keys), mx.stop_gradient(values))
        self.offset, self.keys, self.values = keys.shape[2], None, None

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        if self.keys is None:
            self.keys = mx.concatenate([self.opening[0], keys], axis=2)
            self.values = mx.concatenate([self.opening[1], values], axis=2)
        return self.keys, self.values


@dataclass
class Prompt:
    """One prompt after its pass: every layer's keys and values, and its last position's hidden state."""
    keys: list[mx.array]
    values: list[mx.array]
    last: mx.array  # (hidden,)

    def arrays(self) -> list[mx.array]:
        return [*self.keys, *self.values, self.last]


def run_prompt(model: nn.Module, prompt: list[int], opening: int = 0) -> Prompt:
    """opening > 0: the prompt's first `opening` tokens run first and pass no gradient (the rest, at
    least one token, attends to their keys and values as constants)."""
    caches = [_PromptKV() for _ in model.layers]
    if 0 < opening < len(prompt):
        model.model(mx.array([prompt[:opening]]), cache=caches)
        caches = [_AfterOpening(c.keys, c.values) for c in caches]
        prompt = prompt[opening:]
    hidden = model.model(mx.array([prompt]), cache=caches)
    return Prompt([c.keys for c in caches], [c.values for c in caches], hidden[0, -1])


def completion_logprobs(model: nn.Module, prompt: Prompt, completions: Sequence[list[int]], pad_id: int) -> mx.array:
    """Summed log-probs of completions of one prompt (already run), as one right-padded batch."""
    n = len(completions)
    # Token 0 of a completion is predicted from the prompt's last position (row 0 of `sel`),
    # token j > 0 from the completion's position j - 1.
    rows, cols, src, owner = [], [], [0] * n, list(range(n))
    targets = [c[0] for c in completions]
    for b, c in enumerate(completions):
        src += range(1 + len(rows), len(rows) + len(c))
        rows += [b] * (len(c) - 1)
        cols += range(len(c) - 1)
        owner += [b] * (len(c) - 1)
        targets += c[1:]
    sel = prompt.last[None]
    if rows:  # a completion's last token predicts nothing scored: it is not run
        width = max(len(c) for c in completions) - 1
        ids = mx.array([c[:-1] + [pad_id] * (width - len(c) + 1) for c in completions])
        caches = [_SharedPrompt(k, v) for k, v in zip(prompt.keys, prompt.values)]
        hidden = model.model(ids, cache=caches)
        sel = mx.concatenate([sel, hidden[mx.array(rows), mx.array(cols)]])
    logits = _head(model)(sel).astype(mx.float32)
    src_a = mx.array(src)
    lp = logits[src_a, mx.array(targets)] - mx.logsumexp(logits, axis=-1)[src_a]
    own = (mx.arange(n)[:, None] == mx.array(owner)[None, :]).astype(lp.dtype)  # (n, N)
    return own @ lp


@dataclass
class PromptGroup:
    """The wanted sequences that share one prompt: their completions and sequence indices."""
    prompt: list[int]
    completions: list[list[int]]
    seqs: list[int]


def group_by_prompt(seqs: Sequence[list[int]], prompt_lens: Sequence[int], wanted: Sequence[int]) -> list[PromptGroup]:
    groups: dict[tuple[int, ...], PromptGroup] = {}
    for i in wanted:
        s, p = seqs[i], prompt_lens[i]
        g = groups.setdefault(tuple(s[:p]), PromptGroup(list(s[:p]), [], []))
        g.completions.append(s[p:])
        g.seqs.append(i)
    return list(groups.values())


def completion_chunks(completions: Sequence[list[int]], max_tokens: int | None = None) -> list[list[int]]:
    """Indices of completions in batches of similar length, rows x longest <= max_tokens (or one
    row); None: COMPLETION_TOKENS."""
    max_tokens = COMPLETION_TOKENS if max_tokens is None else max_tokens
    chunks: list[list[int]] = []
    for k in sorted(range(len(completions)), key=lambda k: len(completions[k])):
        if chunks and (len(chunks[-1]) + 1) * len(completions[k]) <= max_tokens:
            chunks[-1].append(k)  # sorted ascending, so k is the longest of its chunk
        else:
            chunks.append([k])
    return chunks


def shared_sequence_logprobs(model: nn.Module, seqs: Sequence[list[int]], prompt_lens: Sequence[int],
                             pad_id: int, opening_lens: Sequence[int] | None = None) -> mx.array:
    """What plain_sequence_logprobs gives, each distinct prompt run once (differentiable, lazy).
    opening_lens: each sequence's leading tokens that pass no gradient (run_prompt)."""
    parts, order = [], []
    for g in group_by_prompt(seqs, prompt_lens, range(len(seqs))):
        prompt = run_prompt(model, g.prompt, opening_lens[g.seqs[0]] if opening_lens else 0)
        for chunk in completion_chunks(g.completions):
            parts.append(completion_logprobs(model, prompt, [g.completions[k] for k in chunk], pad_id))
            order += [g.seqs[k] for k in chunk]
    where = {i: j for j, i in enumerate(order)}
    return mx.concatenate(parts)[mx.array([where[i] for i in range(len(seqs))])]


def sequence_logprobs(model: nn.Module, seqs: Sequence[list[int]], prompt_lens: Sequence[int], pad_id: int,
                      shared: bool = True, opening_lens: Sequence[int] | None = None) -> mx.array:
    """Summed log-prob of tokens [prompt_len:] of each sequence; shared: each distinct prompt run once
    (opening_lens: see shared_sequence_logprobs; the plain path takes every gradient)."""
    if shared:
        return shared_sequence_logprobs(model, seqs, prompt_lens, pad_id, opening_lens)
    return plain_sequence_logprobs(model, seqs, prompt_lens, pad_id)


def scored(model: nn.Module, enc: Encoded, which: Sequence[int], pad_id: int,
           shared: bool | None = None) -> dict[int, float]:
    """Log-probs without gradients: one prompt at a time, its completions in batches (shared), or
    shortest first in small chunks of whole sequences (plain). shared None: wherever the model allows."""
    out: dict[int, float] = {}
    if shared if shared is not None else shareable(model):
        for g in group_by_prompt(enc.seqs, enc.prompt_lens, sorted(set(which))):
            prompt = run_prompt(model, g.prompt)
            mx.eval(prompt.arrays())
            for chunk in completion_chunks(g.completions):
                lp = completion_logprobs(model, prompt, [g.completions[k] for k in chunk], pad_id)
                for k, v in zip(chunk, lp.tolist()):
                    out[g.seqs[k]] = float(v)
        return out
    order = sorted(set(which), key=lambda i: len(enc.seqs[i]))
    for s in range(0, len(order), REF_CHUNK):
        chunk = order[s:s + REF_CHUNK]
        lp = plain_sequence_logprobs(model, [enc.seqs[i] for i in chunk], [enc.prompt_lens[i] for i in chunk], pad_id)
        for i, v in zip(chunk, lp.tolist()):
            out[i] = float(v)
    return out


def _unwrap_prompts(args: tuple, kwargs: dict) -> tuple[list, dict, Callable[[list, dict], tuple[list, dict]]]:
    """A layer's arguments with each shared-prompt cache replaced by its (keys, values), and the
    inverse. A checkpointed layer must take the prompt's arrays as inputs: arrays it merely
    captures are constants when it is recomputed in the backward pass (no gradient to the prompt)."""
    at = {i for i, a in enumerate(args) if isinstance(a, _SharedPrompt)}
    names = {k for k, v in kwargs.items() if isinstance(v, _SharedPrompt)}

    def rewrap(a: list, k: dict) -> tuple[list, dict]:
        return ([_SharedPrompt(*v) if i in at else v for i, v in enumerate(a)],
                {n: _SharedPrompt(*v) if n in names else v for n, v in k.items()})

    return ([(v.keys, v.values) if i in at else v for i, v in enumerate(args)],
            {n: (v.keys, v.values) if n in names else v for n, v in kwargs.items()}, rewrap)


@contextmanager
def checkpointed_layers(model: nn.Module, enabled: bool, share: float = 1.0) -> Iterator[None]:
    """Recompute the first round(share x n) transformer blocks in the backward pass instead of keeping
    their activations (the last ones keep theirs: the backward pass frees them before it recomputes any).
    Done per instance (a subclass swapped in and out) so no other model is affected."""
    if not enabled:
        yield
        return
    swapped = []
    for layer in model.layers[:round(share * len(model.layers))]:
        cls = type(layer)

        def call(self, *args, __fn=cls.__call__, **kwargs):
            args, kwargs, rewrap = _unwrap_prompts(args, kwargs)

            def inner(params, a, k):
                self.update(params)
                a, k = rewrap(a, k)
                return __fn(self, *a, **k)
            return mx.checkpoint(inner)(self.trainable_parameters(), args, kwargs)

        layer.__class__ = type(f"Checkpointed{cls.__name__}", (cls,), {"__call__": call})
        swapped.append((layer, cls))
    try:
        yield
    finally:
        for layer, cls in swapped:
            layer.__class__ = cls


def _micro_batches(enc: Encoded, index: list[tuple[int, int]], batch: list[int], shared: bool) -> list[list[int]]:
    """Pairs of a batch per forward/backward pass: those of one prompt together (shared), or all."""
    if not shared:
        return [batch]
    groups: dict[tuple[int, ...], list[int]] = {}
    for k in batch:
        i = index[k][0]
        groups.setdefault(tuple(enc.seqs[i][:enc.prompt_lens[i]]), []).append(k)
    return list(groups.values())


class _Work:
    """This backend's tensor work for the training skeleton: one prompt's pairs per pass, AdamW, safetensors.

    compiled: the pass and the update go through mx.compile the way mlx-lm's tuner compiles its
    step, the model, optimiser and random state (LoRA dropout) as the compiled functions' inputs
    and outputs. A pass's pairs and shapes are part of what is compiled, so each new pass is traced
    again; the compiled kernels are reused."""

    def __init__(self, model: nn.Module, plan: training.TrainPlan, cfg: TrainConfig, ref: mx.array, pad_id: int,
                 shared: bool, compiled: bool = False):
        self.model, self.plan, self.shared, self.grads = model, plan, shared, None
        self.opt = optim.AdamW(learning_rate=cfg.learning_rate, weight_decay=0.0, bias_correction=True)
        self.opt.init(model.trainable_parameters())
        enc = plan.enc

        def loss_fn(pairs: list[int], weight: float):
            """The pass's mean loss times its weight (differentiated), the loss and the statistics."""
            w, l = plan.chosen(pairs), plan.rejected(pairs)
            ids = w if plan.sft else w + l
            held = None if cfg.opening_gradient else [enc.opening_lens[i] for i in ids]
            lp = sequence_logprobs(model, [enc.seqs[i] for i in ids], [enc.prompt_lens[i] for i in ids], pad_id, shared,
                                   held)
            pl = None if plan.sft else lp[len(w):]
            loss, st = plan.pass_loss(cfg.beta, pairs, lp[:len(w)], pl, ref[mx.array(w)], ref[mx.array(l)], OPS)
            return loss * weight, loss, st

        value_and_grad = nn.value_and_grad(model, loss_fn)

        def accumulate(pairs: list[int], weight: float, grads: dict | None):
            """The pass's loss and statistics, and the step's gradient so far plus the pass's."""
            (_, loss, st), g = value_and_grad(pairs, weight)
            return loss, st, g if grads is None else tree_map(mx.add, grads, g)

        def apply(grads: dict, max_norm: float) -> mx.array:
            grads, norm = optim.clip_grad_norm(grads, max_norm)
            self.opt.update(model, grads)
            return norm

        if compiled:
            state = [model.state, self.opt.state, mx.random.state]
            accumulate = mx.compile(accumulate, inputs=state, outputs=state)
            apply = mx.compile(apply, inputs=state, outputs=state)
        self._accumulate, self._apply = accumulate, apply

    def zero_grad(self) -> None:
        self.grads = None

    def passes(self, pairs: list[int]) -> list[training.Pass]:
        return [training.Pass(m) for m in _micro_batches(self.plan.enc, self.plan.index, pairs, self.shared)]

    def backward(self, p: training.Pass, weight: float) -> dict[str, float]:
        loss, st, self.grads = self._accumulate(p.pairs, weight, self.grads)
        mx.eval(self.grads, loss, st)  # one pass's graph at a time
        return {"loss": loss.item(), **{k: v.item() for k, v in st.items()}}

    def update(self, max_norm: float, learning_rate: float) -> float:
        self.opt.learning_rate = learning_rate
        norm = self._apply(self.grads, max_norm)
        mx.eval(self.model.trainable_parameters(), self.opt.state, norm)
        return norm.item()

    def save(self, adapter: Path, optimizer: Path) -> None:
        mx.save_safetensors(str(adapter), lora_state(self.model))
        mx.save_safetensors(str(optimizer), dict(tree_flatten(self.opt.state)))

    def load(self, adapter: Path, optimizer: Path) -> None:
        self.model.load_weights(list(mx.load(str(adapter)).items()), strict=False)
        state = tree_unflatten(list(mx.load(str(optimizer)).items()))
        self.opt.state.clear()  # in place: the compiled functions hold this dict
        self.opt.state.update(state)
        self.opt.init(self.model.trainable_parameters())  # the tree's empty branches; loaded entries kept


def train(
    model: nn.Module, fmt: ChatFormat, pad_id: int, pairs: Sequence[TrainPair], cfg: TrainConfig,
    on_step: Callable[[StepInfo], None] | None = None, checkpoint_dir: Path | None = None,
    shared: bool | None = None, compiled: bool = False,
) -> TrainStats:
    """Train the adapter on `pairs` by the skeleton's steps (scoreflow.model.training). shared: run each
    distinct prompt once per pass (None: wherever the model allows; False: the plain path); compiled:
    through mx.compile (_Work)."""
    t0 = time.time()
    plan = training.TrainPlan.make(fmt, pairs, cfg)
    shared = shareable(model) if shared is None else shared
    # Reference log-probs: once per unique sequence, with the LoRA update scaled to zero (grpo: as it is).
    model.eval()
    with nullcontext() if plan.reference_with_adapter else adapter_disabled(model):
        ref_map = scored(model, plan.enc, range(len(plan.enc.seqs)), pad_id, shared)
    ref = mx.array([ref_map[i] for i in range(len(plan.enc.seqs))])
    work = _Work(model, plan, cfg, ref, pad_id, shared, compiled)
    model.train()
    try:
        with checkpointed_layers(model, cfg.gradient_checkpointing, cfg.recompute_share):
            return training.train(plan, cfg, work, on_step=on_step,
                                  checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
                                  started=t0)
    finally:
        model.eval()
