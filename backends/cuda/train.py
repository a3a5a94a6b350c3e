"""Completion log-probs and the Score-DPO training loop for the PyTorch backend.

Speed without changing the math: every unique sequence's reference log-prob is computed once,
adapter off; the prompt shared by a pair (or by any pairs of one problem in a batch) is run once,
with its completions packed after it in one row whose attention mask lets each completion see only
the prompt and itself; a batch is processed one prompt group at a time (gradients accumulated), so
there is no padding on CPU, and groups are length-bucketed into padded micro-batches on GPUs.

The steps, their bookkeeping, the checkpoints and the loss formula are the shared skeleton's
(scoreflow/model/training.py); this module supplies the tensor work (`_Work`). Under `accelerate launch`
or torchrun, each step's pairs are split over the ranks and the LoRA gradients summed (see
distributed.py, `_Ranks`): every rank takes the step one process would take.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache

from scoreflow.model import training
from scoreflow.model.backend import StepInfo, TrainConfig, TrainPair, TrainStats
from scoreflow.model.chat import ChatFormat, Encoded

from scoreflow.backends.cuda import attention, distributed
from scoreflow.backends.cuda.generate import forward_keywords
from scoreflow.backends.cuda.loss import OPS

# Tokens per packed micro-batch (summed over padded rows). On CPU one prompt group per micro-batch
# is fastest (padding is pure waste there); GPUs want several rows at once.
CPU_TOKEN_BUDGET = 0
GPU_TOKEN_BUDGET = 16384
# No-grad rows (reference, scoring) are split so one row holds at most this many tokens, or one completion.
NOGRAD_ROW_TOKENS = 4096
HEAD_CHUNK = 1024  # completion positions per LM-head call


def _parts(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings(), getattr(base.config, "final_logit_softcapping", None)


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _token_logprobs(head, softcap, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) per position, the LM head applied in chunks; logsumexp keeps only the logits
    (not a second vocabulary-sized log_softmax copy) for the backward pass."""
    out = []
    for s in range(0, hidden.shape[0], HEAD_CHUNK):
        logits = _upcast(head(hidden[s:s + HEAD_CHUNK]))
        if softcap:
            logits = softcap * torch.tanh(logits / softcap)
        t = targets[s:s + HEAD_CHUNK, None]
        out.append(logits.gather(1, t).squeeze(1) - logits.logsumexp(-1))
    return torch.cat(out)


def plain_sequence_logprobs(model, seqs: Sequence[list[int]], prompt_lens: Sequence[int], pad_id: int,
                            device: torch.device) -> torch.Tensor:
    """The unoptimised reference computation: every sequence in full, right-padded, one batch."""
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
    logits = _upcast(head(hidden[rows_t, torch.tensor(cols, device=device)]))
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    lp = logits.log_softmax(-1).gather(1, torch.tensor(targets, device=device)[:, None]).squeeze(1)
    return torch.zeros(len(seqs), device=device, dtype=lp.dtype).index_add(0, rows_t, lp)


@dataclass
class Row:
    """One prompt (its tokens after the tree's opening) and its completions."""
    prompt: list[int]
    completions: list[list[int]]
    out: list[int]  # where each completion's log-prob goes in the result

    @property
    def width(self) -> int:
        return len(self.prompt) + sum(len(c) for c in self.completions)


@dataclass
class Tree:
    """One packed row: an opening shared by its prompts (the system prompt and few-shot turns that
    every generator prompt begins with), then each prompt's rest and its completions. A token sees
    the opening, its own prompt's rest and its own segment, causally: each completion's log-prob
    is the one it has after its whole prompt alone, and the shared tokens run once."""
    opening: list[int]
    rows: list[Row]

    @property
    def width(self) -> int:
        return len(self.opening) + sum(r.width for r in self.rows)

    @property
    def completions(self) -> list[list[int]]:
        return [c for r in self.rows for c in r.completions]

    @property
    def out(self) -> list[int]:
        return [o for r in self.rows for o in r.out]

    def segments(self) -> list[tuple[int, int, tuple[tuple[int, int], ...]]]:
        """(start, length, the segments it sees before itself) for the opening, each prompt's rest and
        each completion, in row order."""
        o = len(self.opening)
        out: list[tuple[int, int, tuple[tuple[int, int], ...]]] = [(0, o, ())] if o else []
        at = o
        for r in self.rows:
            seen: tuple[tuple[int, int], ...] = ((0, o),) if o else ()
            if r.prompt:
                out.append((at, len(r.prompt), seen))
                seen = (*seen, (at, len(r.prompt)))
                at += len(r.prompt)
            for c in r.completions:
                out.append((at, len(c), seen))
                at += len(c)
        return out


PACKABLE = ("sdpa", "eager", attention.NAME)  # attention.NAME: SDPA by segments, or plain SDPA


def _attn_impl(model) -> str:
    return getattr(_parts(model)[0].config, "_attn_implementation", None) or "eager"


def packable(model) -> bool:
    """Whether the attention implementation takes a custom 4D mask (flash-attention kernels do not)."""
    return _attn_impl(model) in PACKABLE


def _mask_for(model, allowed: torch.Tensor) -> torch.Tensor:
    """A custom 4D mask in the form the attention implementation takes: boolean for SDPA, additive for eager."""
    if _attn_impl(model) in ("sdpa", attention.NAME):
        return allowed
    dtype = _parts(model)[0].dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _segments(model, trees: Sequence[Tree], device: torch.device):
    """The segments of a lone tree on CPU, for attention by segments (attention.py); None where the
    custom mask is used instead."""
    if len(trees) != 1 or device.type != "cpu" or _attn_impl(model) not in ("sdpa", attention.NAME):
        return None
    return trees[0].segments()


def _kernels(mask, device: torch.device):
    """SDPA kernels for a custom boolean mask on CUDA: the memory-efficient one (math where it cannot
    run, e.g. float64). torch otherwise picks cuDNN's, whose per-shape setup costs host time every step."""
    if device.type != "cuda" or mask.dtype != torch.bool:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _opening_kept(trees: Sequence[Tree], segments) -> bool:
    """Whether the opening can run apart, without gradient: a lone tree run by segments (CPU), whose
    every row has a prompt of its own after the opening (its first completion token is predicted from
    a position that runs with gradient)."""
    return bool(segments) and bool(trees[0].opening) and all(r.prompt for r in trees[0].rows)


def packed_logprobs(model, trees: Sequence[Tree], n_out: int, pad_id: int, device: torch.device,
                    opening_gradient: bool = True) -> torch.Tensor:
    """Summed completion log-probs for packed trees (right-padded to one width), as a vector of n_out.
    opening_gradient=False: the opening runs first under no_grad and the rest attends to its keys and
    values as constants (same log-probs; the gradient drops the path through the opening)."""
    decoder, head, softcap = _parts(model)
    width = max(t.width for t in trees)
    ids = torch.full((len(trees), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(trees), width), dtype=torch.long)
    seg = torch.full((len(trees), width), -1, dtype=torch.long)  # the token's segment, -1 pad
    most = max(len(t.segments()) for t in trees)
    sees = torch.zeros((len(trees), most + 1, most + 1), dtype=torch.bool)  # segment -> segments it sees
    hid_rows, hid_cols, targets, owner = [], [], [], []
    for b, t in enumerate(trees):
        spans = t.segments()
        starts = {start: k for k, (start, _, _) in enumerate(spans)}
        for k, (start, n, seen) in enumerate(spans):
            seg[b, start:start + n] = k
            sees[b, k, k] = True
            for s0, _ in seen:
                sees[b, k, starts[s0]] = True
        o = len(t.opening)
        ids[b, :o] = torch.tensor(t.opening, dtype=torch.long)
        pos[b, :o] = torch.arange(o)
        at = o
        for r in t.rows:
            p = len(r.prompt)
            ids[b, at:at + p] = torch.tensor(r.prompt, dtype=torch.long)
            pos[b, at:at + p] = torch.arange(o, o + p)
            last = at + p - 1 if p else o - 1  # the prompt's last position (its rest's, or the opening's)
            at += p
            for c, out in zip(r.completions, r.out):
                n = len(c)
                ids[b, at:at + n] = torch.tensor(c)
                pos[b, at:at + n] = torch.arange(o + p, o + p + n)
                # token j of the completion is predicted from the prompt's last position, then from its own.
                hid_rows += [b] * n
                hid_cols += [last, *range(at, at + n - 1)]
                targets += c
                owner += [out] * n
                at += n
    segments = _segments(model, trees, device)
    if segments:  # no (W, W) mask: the attention runs by segments
        mask = None
    elif packable(model):
        seg_d = seg.to(device)
        # Built on the device: a width x width mask per row is tens of MB, slow to make on a host CPU.
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        q, k = seg_d.clamp(min=0)[:, :, None], seg_d.clamp(min=0)[:, None, :]
        rows = torch.arange(len(trees), device=device)[:, None, None]
        allowed = causal & sees.to(device)[rows, q, k] & (seg_d[:, None, :] >= 0)
        allowed |= torch.eye(width, dtype=torch.bool, device=device)  # pad queries see themselves: no NaN rows
        mask = _mask_for(model, allowed[:, None])
    else:  # one prompt and one completion per row: a plain padding mask does
        assert all(len(t.completions) == 1 for t in trees)
        mask = (seg >= 0).long().to(device)
    skip = 0
    if not opening_gradient and torch.is_grad_enabled() and _opening_kept(trees, segments):
        skip = len(trees[0].opening)
        cache = {forward_keywords(model)[0]: DynamicCache()}
        with torch.no_grad(), attention.by_segments(decoder.config):
            decoder(input_ids=ids[:, :skip].to(device), position_ids=pos[:, :skip].to(device), use_cache=True,
                    segments=segments[:1], **cache)
        with attention.by_segments(decoder.config):
            hidden = decoder(input_ids=ids[:, skip:].to(device), position_ids=pos[:, skip:].to(device),
                             use_cache=True, segments=segments, **cache).last_hidden_state
    else:
        with attention.by_segments(decoder.config) if segments else _kernels(mask, device):
            # (under gradient checkpointing, train() keeps the attention by segments for the recomputation too)
            hidden = decoder(input_ids=ids.to(device), position_ids=pos.to(device), attention_mask=mask,
                             **({"segments": segments} if segments else {})).last_hidden_state
    sel = hidden[torch.tensor(hid_rows, device=device), torch.tensor(hid_cols, device=device) - skip]
    lp = _token_logprobs(head, softcap, sel, torch.tensor(targets, device=device))
    return torch.zeros(n_out, device=device, dtype=lp.dtype).index_add(0, torch.tensor(owner, device=device), lp)


def group_trees(seqs: Sequence[list[int]], prompt_lens: Sequence[int], wanted: Sequence[int],
                max_tokens: int | None, opening_lens: Sequence[int] | None = None) -> list[Tree]:
    """Packed trees for the sequences `wanted` (indices into seqs): one tree per distinct opening
    (`opening_lens`: how many leading prompt tokens sequences may share across prompts; None: the
    whole prompt, one tree per distinct prompt), one row per distinct prompt in it; a tree is split
    when it would exceed max_tokens (None: never). Result slots are positions in `wanted`."""
    trees: list[Tree] = []
    open_tree: dict[tuple[int, ...], Tree] = {}
    rows: dict[tuple[int, tuple[int, ...]], Row] = {}
    for slot, i in enumerate(wanted):
        s, p = seqs[i], prompt_lens[i]
        o = p if opening_lens is None else min(opening_lens[i], p)
        opening, rest, completion = tuple(s[:o]), tuple(s[o:p]), s[p:]
        tree = open_tree.get(opening)
        row = rows.get((id(tree), rest)) if tree is not None else None
        grows = len(completion) + (0 if row is not None else len(rest))
        if tree is None or (max_tokens is not None and tree.rows and tree.width + grows > max_tokens):
            tree = open_tree[opening] = Tree(list(opening), [])
            trees.append(tree)
            row = None
        if row is None:
            row = rows[(id(tree), rest)] = Row(list(rest), [], [])
            tree.rows.append(row)
        row.completions.append(completion)
        row.out.append(slot)
    return trees


def bucket(rows: Sequence[Tree], budget: int) -> list[list[Tree]]:
    """Trees sorted by width and gathered into micro-batches whose padded size stays within budget."""
    out: list[list[Tree]] = []
    for r in sorted(rows, key=lambda r: r.width):
        if out and budget > 0 and r.width * (len(out[-1]) + 1) <= budget:
            out[-1].append(r)  # sorted ascending, so r is the widest row of the micro-batch
        else:
            out.append([r])
    return out


def sequence_logprobs(model, seqs: Sequence[list[int]], prompt_lens: Sequence[int], pad_id: int,
                      device: torch.device, opening_lens: Sequence[int] | None = None) -> torch.Tensor:
    """Summed log-prob of tokens [prompt_len:] of each sequence. Sequences sharing a prompt, or the
    opening of their prompts (`opening_lens`), run it once."""
    if not seqs:
        return torch.zeros(0, device=device)
    pack = packable(model)
    rows = group_trees(seqs, prompt_lens, range(len(seqs)), NOGRAD_ROW_TOKENS if pack else 0,
                       opening_lens if pack else None)
    budget = GPU_TOKEN_BUDGET if device.type == "cuda" else CPU_TOKEN_BUDGET
    out = torch.zeros(len(seqs), device=device)
    for micro in bucket(rows, budget):
        n = len(seqs)
        lp = packed_logprobs(model, micro, n, pad_id, device)
        out = out.to(lp.dtype) + lp
    return out


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _micro_batches(enc: Encoded, index: list[tuple[int, int]], batch: list[int], sft: bool, budget: int,
                   pack: bool = True):
    """Yield (trees, needed, batch positions) per micro-batch: each opening and prompt once, each unique
    sequence once."""
    if not batch:  # a rank with no share of this step
        return
    needed: list[int] = []
    slot: dict[int, int] = {}
    for k in batch:
        for i in (index[k][:1] if sft else index[k]):
            if i not in slot:
                slot[i] = len(needed)
                needed.append(i)
    rows = group_trees(enc.seqs, enc.prompt_lens, needed, None if pack else 0, enc.opening_lens if pack else None)
    # Unpacked, a pair's two sequences sit in different rows: keep the whole batch together then.
    for micro in bucket(rows, budget) if pack else [rows]:
        slots = {o for r in micro for o in r.out}
        members = [j for j, k in enumerate(batch) if slot[index[k][0]] in slots]
        yield micro, needed, members, slot


def reference_logprobs(model, enc: Encoded, pad_id: int, device: torch.device,
                       wanted: Sequence[int] | None = None, adapter: bool = False) -> torch.Tensor:
    """Log-probs of every unique sequence with the adapter off (on: `adapter`), each shared opening and
    prompt run once. wanted: only these sequences (the others are NaN), as a rank of data-parallel
    training needs."""
    model.eval()
    with torch.no_grad(), contextlib.nullcontext() if adapter else model.disable_adapter():
        if wanted is None:
            return sequence_logprobs(model, enc.seqs, enc.prompt_lens, pad_id, device, enc.opening_lens).cpu()
        wanted = list(wanted)
        lp = sequence_logprobs(model, [enc.seqs[i] for i in wanted], [enc.prompt_lens[i] for i in wanted],
                               pad_id, device, [enc.opening_lens[i] for i in wanted]).cpu()
    out = torch.full((len(enc.seqs),), float("nan"), dtype=lp.dtype)
    out[wanted] = lp
    return out


class _Work:
    """This backend's tensor work for the training skeleton: packed rows, AdamW, safetensors."""

    def __init__(self, model, plan: training.TrainPlan, cfg: TrainConfig, ref: torch.Tensor, pad_id: int,
                 device: torch.device, budget: int):
        self.model, self.plan, self.cfg, self.ref = model, plan, cfg, ref
        self.pad_id, self.device, self.budget = pad_id, device, budget
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=0.0)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def passes(self, pairs: list[int]):
        plan = self.plan
        for rows, needed, members, slot in _micro_batches(plan.enc, plan.index, pairs, plan.sft, self.budget,
                                                          packable(self.model)):
            yield training.Pass([pairs[j] for j in members], (rows, needed, slot))

    def backward(self, p: training.Pass, weight: float) -> dict[str, float]:
        rows, needed, slot = p.data
        lp = packed_logprobs(self.model, rows, len(needed), self.pad_id, self.device, self.cfg.opening_gradient)
        w, l = self.plan.chosen(p.pairs), self.plan.rejected(p.pairs)
        pl = None if self.plan.sft else lp[[slot[i] for i in l]]
        loss, st = self.plan.pass_loss(self.cfg.beta, p.pairs, lp[[slot[i] for i in w]], pl,
                                       self.ref[w].to(self.device), self.ref[l].to(self.device), OPS)
        (loss * weight).backward()
        return {"loss": loss.item(), **{k: float(v) for k, v in st.items()}}

    def update(self, max_norm: float, learning_rate: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        for group in self.opt.param_groups:
            group["lr"] = learning_rate
        self.opt.step()
        return float(norm)

    def save(self, adapter: Path, optimizer: Path) -> None:
        opt_tensors = {}
        state = self.opt.state_dict()["state"]
        for i, n in enumerate(self.names):
            for k, v in state.get(i, {}).items():
                opt_tensors[f"{n}::{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).contiguous().cpu()
        save_file({n: t.contiguous().cpu() for n, t in lora_state(self.model).items()}, str(adapter))
        save_file(opt_tensors, str(optimizer))

    def load(self, adapter: Path, optimizer: Path) -> None:
        params = dict(self.model.named_parameters())
        for n, t in load_file(str(adapter)).items():
            params[n].data.copy_(t)
        saved = load_file(str(optimizer))
        sd = self.opt.state_dict()
        for i, n in enumerate(self.names):
            entry = {k.split("::", 1)[1]: v for k, v in saved.items() if k.split("::", 1)[0] == n}
            if entry:
                sd["state"][i] = {k: (v.to(params[n].device) if k != "step" else v) for k, v in entry.items()}
        self.opt.load_state_dict(sd)


@dataclass
class _Ranks:
    """Data-parallel ranks (distributed.py) as the skeleton's collective."""
    rank: int
    world: int
    params: list
    device: torch.device

    def share(self, pairs: list[int]) -> list[int]:
        return distributed.shard(pairs, self.rank, self.world)

    def broadcast(self) -> None:
        distributed.broadcast_params(self.params)

    def all_reduce(self, sums: dict[str, float]) -> dict[str, float]:
        distributed.all_reduce_grads(self.params)
        return distributed.all_reduce_sums(sums, self.device)


def train(
    model, fmt: ChatFormat, pad_id: int, device: torch.device, pairs: Sequence[TrainPair], cfg: TrainConfig,
    on_step: Callable[[StepInfo], None] | None = None, checkpoint_dir: Path | None = None,
    token_budget: int | None = None,
) -> TrainStats:
    """Train the adapter on `pairs` by the skeleton's steps (scoreflow.model.training). token_budget:
    padded tokens per micro-batch (None: one prompt group at a time on CPU, GPU_TOKEN_BUDGET on CUDA).
    Launched as several ranks, each computes its share of every batch and only rank 0 writes checkpoints."""
    t0 = time.time()
    plan = training.TrainPlan.make(fmt, pairs, cfg)
    rank, world = distributed.setup(device)
    ranks = None
    if world > 1:
        ranks = _Ranks(rank, world, [p for p in model.parameters() if p.requires_grad], device)
    wanted = None if ranks is None else plan.sequences(k for b in plan.steps for k in ranks.share(b))
    ref = reference_logprobs(model, plan.enc, pad_id, device, wanted, plan.reference_with_adapter)
    budget = token_budget if token_budget is not None else (GPU_TOKEN_BUDGET if device.type == "cuda" else CPU_TOKEN_BUDGET)
    work = _Work(model, plan, cfg, ref, pad_id, device, budget)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        # The last layers keep their activations: the backward pass frees them before it recomputes any.
        layers = _parts(model)[0].layers
        for layer in layers[round(cfg.recompute_share * len(layers)):]:
            layer.gradient_checkpointing = False
    model.train()
    # A checkpointed layer recomputes its forward during backward: the attention by segments must then
    # still be the model's (it falls back to plain SDPA where a pass has no segments).
    keep = attention.by_segments(_parts(model)[0].config) if cfg.gradient_checkpointing and \
        _attn_impl(model) == "sdpa" and device.type == "cpu" else contextlib.nullcontext()
    try:
        with keep:
            return training.train(plan, cfg, work, on_step=on_step, checkpoint_dir=checkpoint_dir, collective=ranks,
                                  started=t0)
    finally:
        model.eval()
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_disable()
