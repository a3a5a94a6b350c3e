"""Completion log-probs and the Score-DPO training loop for the PyTorch backend."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file

from scoreflow.backend import StepInfo, TrainConfig, TrainPair, TrainStats
from scoreflow.chat import ChatFormat

from .loss import preference_loss


def _parts(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings(), getattr(base.config, "final_logit_softcapping", None)


def sequence_logprobs(model, seqs: Sequence[list[int]], prompt_lens: Sequence[int], pad_id: int,
                      device: torch.device) -> torch.Tensor:
    """Summed log-prob of tokens [prompt_len:] of each right-padded sequence. Only completion
    positions go through the LM head, which saves most of the logits memory."""
    decoder, head, softcap = _parts(model)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    rows, cols, targets = [], [], []
    for b, (s, p) in enumerate(zip(seqs, prompt_lens)):
        ids[b, :len(s)] = torch.tensor(s)
        mask[b, :len(s)] = 1
        rows += [b] * (len(s) - p)
        cols += range(p - 1, len(s) - 1)
        targets += s[p:]
    hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
    rows_t = torch.tensor(rows, device=device)
    logits = head(hidden[rows_t, torch.tensor(cols, device=device)]).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    lp = logits.log_softmax(-1).gather(1, torch.tensor(targets, device=device)[:, None]).squeeze(1)
    return torch.zeros(len(seqs), device=device, dtype=lp.dtype).index_add(0, rows_t, lp)


class Encoded:
    """Token ids of every unique (prompt, completion) in a set of pairs, cut to max_length."""

    def __init__(self, fmt: ChatFormat, max_length: int):
        self.fmt, self.max_length = fmt, max_length
        self.seqs: list[list[int]] = []
        self.prompt_lens: list[int] = []
        self._index: dict[tuple[str, str], int] = {}
        self._prompts: dict[str, list[int]] = {}

    def add(self, prompt, completion: str) -> int:
        ptext = self.fmt.render(prompt)
        key = (ptext, completion)
        if key not in self._index:
            pids = self._prompts.setdefault(ptext, self.fmt.encode_text(ptext))
            cids = self.fmt.completion_ids(completion)[: max(1, self.max_length - len(pids))]
            self._index[key] = len(self.seqs)
            self.seqs.append(pids + cids)
            self.prompt_lens.append(len(pids))
        return self._index[key]


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(root: Path, step: int, model, opt, history: list[StepInfo]) -> None:
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    save_file({n: t.contiguous().cpu() for n, t in lora_state(model).items()}, str(tmp / "adapter.safetensors"))
    opt_tensors = {}
    state = opt.state_dict()["state"]
    for i, n in enumerate(names):
        for k, v in state.get(i, {}).items():
            opt_tensors[f"{n}::{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).contiguous().cpu()
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "history": [vars(h) for h in history]}))
    os.replace(tmp, final)
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(root: Path, model, opt) -> tuple[int, list[StepInfo]]:
    done = sorted(root.glob("step-*")) if root.is_dir() else []
    if not done:
        return 0, []
    ck = done[-1]
    params = dict(model.named_parameters())
    for n, t in load_file(str(ck / "adapter.safetensors")).items():
        params[n].data.copy_(t)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    saved = load_file(str(ck / "optimizer.safetensors"))
    sd = opt.state_dict()
    for i, n in enumerate(names):
        entry = {k.split("::", 1)[1]: v for k, v in saved.items() if k.split("::", 1)[0] == n}
        if entry:
            sd["state"][i] = {k: (v.to(params[n].device) if k != "step" else v) for k, v in entry.items()}
    opt.load_state_dict(sd)
    state = json.loads((ck / "state.json").read_text())
    return state["step"], [StepInfo(**h) for h in state["history"]]


def train(
    model, fmt: ChatFormat, pad_id: int, device: torch.device, pairs: Sequence[TrainPair], cfg: TrainConfig,
    on_step: Callable[[StepInfo], None] | None = None, checkpoint_dir: Path | None = None,
) -> TrainStats:
    t0 = time.time()
    enc = Encoded(fmt, cfg.max_length)
    index = [(enc.add(p.prompt, p.chosen), enc.add(p.prompt, p.rejected)) for p in pairs]

    # Reference log-probs: once per unique sequence, adapter off, shortest first in small batches.
    ref = torch.zeros(len(enc.seqs))
    model.eval()
    with torch.no_grad(), model.disable_adapter():
        order = sorted(range(len(enc.seqs)), key=lambda i: len(enc.seqs[i]))
        for s in range(0, len(order), 4):
            chunk = order[s:s + 4]
            lp = sequence_logprobs(model, [enc.seqs[i] for i in chunk], [enc.prompt_lens[i] for i in chunk], pad_id, device)
            ref[chunk] = lp.float().cpu()

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    order = list(range(len(pairs)))
    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)] * cfg.epochs
    start, history = (0, [])
    if checkpoint_dir is not None:
        start, history = _load_checkpoint(checkpoint_dir, model, opt)
    model.train()
    tokens = 0
    for step in range(start, len(batches)):
        ts = time.time()
        batch = batches[step]
        group = [pairs[k] for k in batch]
        w = [index[k][0] for k in batch]
        l = [index[k][1] for k in batch]
        sft = cfg.loss == "sft"
        ids = w if sft else w + l
        lp = sequence_logprobs(model, [enc.seqs[i] for i in ids], [enc.prompt_lens[i] for i in ids], pad_id, device)
        pw = lp[: len(w)]
        pl = ref[l].to(device) if sft else lp[len(w):]
        sw = torch.tensor([p.score_chosen for p in group], device=device)
        sl = torch.tensor([p.score_rejected for p in group], device=device)
        ntok = torch.tensor([len(enc.seqs[i]) - enc.prompt_lens[i] for i in w], device=device, dtype=lp.dtype)
        loss, st = preference_loss(cfg.loss, cfg.beta, pw, pl, ref[w].to(device), ref[l].to(device), sw, sl, ntok)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        opt.step()
        tokens += sum(len(enc.seqs[i]) for i in ids)
        info = StepInfo(step + 1, len(batches), loss.item(), float(st["margin"]), float(st["chosen_reward"]),
                        float(st["rejected_reward"]), time.time() - ts, float(norm))
        history.append(info)
        if on_step:
            on_step(info)
        if checkpoint_dir is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                and step + 1 < len(batches):
            _save_checkpoint(checkpoint_dir, step + 1, model, opt, history)
    model.eval()
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    n = max(1, len(history))
    return TrainStats(
        steps=len(history), loss=sum(h.loss for h in history) / n, margin=sum(h.margin for h in history) / n,
        seconds=time.time() - t0, tokens=tokens, history=history,
    )
