"""Completion log-probs and the Score-DPO training loop for the MLX backend."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from scoreflow.backend import StepInfo, TrainConfig, TrainPair, TrainStats
from scoreflow.chat import ChatFormat, Encoded
from scoreflow.rundir import atomic_dir

from .loss import LOSSES, preference_loss
from .model import adapter_disabled, lora_state

REF_CHUNK = 4  # sequences per forward pass when only scoring


def _head(model: nn.Module):
    head = getattr(model, "lm_head", None)
    return head if head is not None else model.model.embed_tokens.as_linear


def sequence_logprobs(model: nn.Module, seqs: Sequence[list[int]], prompt_lens: Sequence[int],
                      pad_id: int) -> mx.array:
    """Summed log-prob of tokens [prompt_len:] of each right-padded sequence. Right padding needs no
    mask beyond the causal one. Only completion positions go through the LM head."""
    width = max(len(s) for s in seqs)
    ids = mx.array([s + [pad_id] * (width - len(s)) for s in seqs])
    rows, cols, targets = [], [], []
    for b, (s, p) in enumerate(zip(seqs, prompt_lens)):
        rows += [b] * (len(s) - p)
        cols += range(p - 1, len(s) - 1)
        targets += s[p:]
    rows_a, cols_a, tgt = mx.array(rows), mx.array(cols), mx.array(targets)
    if hasattr(model, "model") and hasattr(model.model, "embed_tokens"):
        hidden = model.model(ids)
        logits = _head(model)(hidden[rows_a, cols_a])
    else:  # a model family without the usual decoder/head split: full logits
        logits = model(ids)[rows_a, cols_a]
    logits = logits.astype(mx.float32)
    lp = mx.take_along_axis(logits, tgt[:, None], axis=-1)[:, 0] - mx.logsumexp(logits, axis=-1)
    owner = (mx.arange(len(seqs))[:, None] == rows_a[None, :]).astype(lp.dtype)  # (B, N)
    return owner @ lp


def scored(model: nn.Module, enc: Encoded, which: Sequence[int], pad_id: int) -> dict[int, float]:
    """Log-probs without gradients, shortest first in small chunks."""
    out: dict[int, float] = {}
    order = sorted(set(which), key=lambda i: len(enc.seqs[i]))
    for s in range(0, len(order), REF_CHUNK):
        chunk = order[s:s + REF_CHUNK]
        lp = sequence_logprobs(model, [enc.seqs[i] for i in chunk], [enc.prompt_lens[i] for i in chunk], pad_id)
        for i, v in zip(chunk, lp.tolist()):
            out[i] = float(v)
    return out


@contextmanager
def checkpointed_layers(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Recompute each transformer block in the backward pass instead of keeping its activations.
    Done per instance (a subclass swapped in and out) so no other model is affected."""
    if not enabled:
        yield
        return
    swapped = []
    for layer in model.layers:
        cls = type(layer)

        def call(self, *args, __fn=cls.__call__, **kwargs):
            def inner(params, *a, **k):
                self.update(params)
                return __fn(self, *a, **k)
            return mx.checkpoint(inner)(self.trainable_parameters(), *args, **kwargs)

        layer.__class__ = type(f"Checkpointed{cls.__name__}", (cls,), {"__call__": call})
        swapped.append((layer, cls))
    try:
        yield
    finally:
        for layer, cls in swapped:
            layer.__class__ = cls


def make_batches(enc: Encoded, index: list[tuple[int, int]], batch_size: int, epochs: int) -> list[list[int]]:
    """Pairs in order at batch size 1; larger batches group pairs of similar length (within windows
    of 8 batches, so the order stays roughly the given one) to cut padding."""
    n = len(index)
    if batch_size <= 1:
        one = [[k] for k in range(n)]
    else:
        one = []
        span = batch_size * 8
        for w in range(0, n, span):
            window = sorted(range(w, min(n, w + span)),
                            key=lambda k: max(len(enc.seqs[index[k][0]]), len(enc.seqs[index[k][1]])))
            one += [window[i:i + batch_size] for i in range(0, len(window), batch_size)]
    return one * epochs


def _save_checkpoint(root: Path, step: int, model: nn.Module, opt: optim.Optimizer,
                     history: list[StepInfo]) -> None:
    final = root / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        mx.save_safetensors(str(tmp / "adapter.safetensors"), lora_state(model))
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(opt.state)))
        (tmp / "state.json").write_text(json.dumps({"step": step, "history": [vars(h) for h in history]}))
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(root: Path, model: nn.Module, opt: optim.Optimizer) -> tuple[int, list[StepInfo]]:
    done = sorted(root.glob("step-*")) if root.is_dir() else []
    if not done:
        return 0, []
    ck = done[-1]
    model.load_weights(list(mx.load(str(ck / "adapter.safetensors")).items()), strict=False)
    opt.state = tree_unflatten(list(mx.load(str(ck / "optimizer.safetensors")).items()))
    state = json.loads((ck / "state.json").read_text())
    return state["step"], [StepInfo(**h) for h in state["history"]]


def train(
    model: nn.Module, fmt: ChatFormat, pad_id: int, pairs: Sequence[TrainPair], cfg: TrainConfig,
    on_step: Callable[[StepInfo], None] | None = None, checkpoint_dir: Path | None = None,
) -> TrainStats:
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; expected one of {LOSSES}")
    t0 = time.time()
    enc = Encoded(fmt, cfg.max_length)
    index = [(enc.add(p.prompt, p.chosen), enc.add(p.prompt, p.rejected)) for p in pairs]

    # Reference log-probs: once per unique sequence, with the LoRA update scaled to zero.
    model.eval()
    with adapter_disabled(model):
        ref_map = scored(model, enc, range(len(enc.seqs)), pad_id)
    ref = mx.array([ref_map[i] for i in range(len(enc.seqs))])

    opt = optim.AdamW(learning_rate=cfg.learning_rate, weight_decay=0.0, bias_correction=True)
    opt.init(model.trainable_parameters())
    batches = make_batches(enc, index, cfg.batch_size, cfg.epochs)
    start, history = (0, [])
    if checkpoint_dir is not None:
        start, history = _load_checkpoint(Path(checkpoint_dir), model, opt)
    sft = cfg.loss == "sft"

    def loss_fn(ids: list[int], n_w: int, ref_w, ref_l, sw, sl, ntok):
        lp = sequence_logprobs(model, [enc.seqs[i] for i in ids], [enc.prompt_lens[i] for i in ids], pad_id)
        pw = lp[:n_w]
        pl = ref_l if sft else lp[n_w:]
        loss, st = preference_loss(cfg.loss, cfg.beta, pw, pl, ref_w, ref_l, sw, sl, ntok)
        return loss, st

    value_and_grad = nn.value_and_grad(model, loss_fn)
    tokens = 0
    model.train()
    try:
        with checkpointed_layers(model, cfg.gradient_checkpointing):
            for step in range(start, len(batches)):
                ts = time.time()
                batch = batches[step]
                w = [index[k][0] for k in batch]
                l = [index[k][1] for k in batch]
                ids = w if sft else w + l
                ref_w, ref_l = ref[mx.array(w)], ref[mx.array(l)]
                sw = mx.array([pairs[k].score_chosen for k in batch], dtype=mx.float32)
                sl = mx.array([pairs[k].score_rejected for k in batch], dtype=mx.float32)
                ntok = mx.array([enc.completion_len(i) for i in w], dtype=mx.float32)
                (loss, st), grads = value_and_grad(ids, len(w), ref_w, ref_l, sw, sl, ntok)
                max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
                grads, norm = optim.clip_grad_norm(grads, max_norm)
                opt.update(model, grads)
                mx.eval(model.trainable_parameters(), opt.state, loss, norm, st)
                tokens += sum(len(enc.seqs[i]) for i in ids)
                info = StepInfo(step + 1, len(batches), loss.item(), st["margin"].item(),
                                st["chosen_reward"].item(), st["rejected_reward"].item(),
                                time.time() - ts, norm.item())
                history.append(info)
                if on_step:
                    on_step(info)
                if checkpoint_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                        and step + 1 < len(batches):
                    _save_checkpoint(Path(checkpoint_dir), step + 1, model, opt, history)
    finally:
        model.eval()
    n = max(1, len(history))
    return TrainStats(
        steps=len(history), loss=sum(h.loss for h in history) / n, margin=sum(h.margin for h in history) / n,
        seconds=time.time() - t0, tokens=tokens, history=history,
    )
