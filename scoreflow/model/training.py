"""The one training skeleton both backends run: pair indexing, the batching rule, step bookkeeping
and logged statistics, the checkpoint layout with resume and rotation, and the loss formula.

A backend supplies only tensor work (`TensorWork`): its passes over a step's pairs (packed rows in
PyTorch, prompt KV sharing in MLX), the forward/backward of one pass, the optimiser update, and
tensor save and load; under several processes also the collectives (`Collective`). In the spirit of
mlx-lm's tuner, `train()` takes that work and the batches (a `TrainPlan`) as parameters.

The batching rule, the only one: the pairs are taken in the order given (the loop has already
sampled them at random, seeded) and cut into consecutive optimiser steps of `batch_size` pairs, the
last of an epoch smaller when they do not divide; each epoch repeats the same steps. Under the
group-relative loss a step holds `batch_size` whole groups instead (a group: consecutive pairs of
one prompt), as its objective is a sum over each group's pairs. Nothing sorts
or shuffles, so the same pairs and config give the same steps on every backend. Inside a step a
backend may run the pairs in any passes it likes; the step's gradient is that of the mean loss over
all its pairs (each pass weighted by its share of the step), and the logged statistics are the
same weighted means. Under several ranks each rank takes a contiguous share of every step.

Checkpoints (resumable, one kept): CHECKPOINTS/step-NNNNNN/ with adapter.safetensors (the LoRA
tensors by the backend's own names), optimizer.safetensors and state.json ({"step", "history"}: the
StepInfo records so far). Written whole or not at all; each new one replaces the older ones.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Protocol, Sequence, TypeVar

from scoreflow.model.backend import LOSSES, LR_SCHEDULES, StepInfo, TrainConfig, TrainPair, TrainStats
from scoreflow.model.chat import ChatFormat, Encoded
from scoreflow.files import atomic_dir

STATS = ("loss", "margin", "chosen_reward", "rejected_reward")  # logged per step, weighted batch means
ADAPTER_FILE, OPTIMIZER_FILE, STATE_FILE = "adapter.safetensors", "optimizer.safetensors", "state.json"

A = TypeVar("A")  # one framework's array type


# -- the loss, stated once ------------------------------------------------------------------------

@dataclass(frozen=True)
class ArrayOps(Generic[A]):
    """The few operations the loss needs beyond arithmetic, from one framework."""
    log_sigmoid: Callable[[A], A]
    detach: Callable[[A], A]  # the same values, no gradient through them
    at_least: Callable[[A, float], A]  # elementwise max(x, v)
    array: Callable[[list[float], A], A]  # values as an array of the kind (dtype, device) of the second
    exp: Callable[[A], A]
    at_most: Callable[[A, float], A]  # elementwise min(x, v)


def preference_loss(kind: str, beta: float, policy_w: A, policy_l: A, ref_w: A, ref_l: A, score_w: A,
                    score_l: A, tokens_w: A, *, ops: ArrayOps) -> tuple[A, dict[str, A]]:
    """Mean loss over a batch of pairs, and per-batch diagnostics (chosen/rejected reward, margin).

    With pi/ref the summed completion log-probs under the policy and the reference (adapter off):
      Score-DPO (ScoreFlow, eq. 5): -log sigmoid(beta * (s_w * (pi_w - ref_w) - (1 - s_l) * (pi_l - ref_l)))
      DPO: the same with s_w = 1 and s_l = 0
      SFT: the mean token negative log-likelihood of the winner, -pi_w / tokens_w
    """
    reward_w = beta * (policy_w - ref_w)
    reward_l = beta * (policy_l - ref_l)
    if kind == "score-dpo":
        margin = score_w * reward_w - (1.0 - score_l) * reward_l
        loss = -ops.log_sigmoid(margin)
    elif kind == "dpo":
        margin = reward_w - reward_l
        loss = -ops.log_sigmoid(margin)
    elif kind == "sft":
        margin = reward_w - reward_l
        loss = -policy_w / ops.at_least(tokens_w, 1)
    else:
        raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES} (grpo: group_relative_loss)")
    stats = {
        "chosen_reward": ops.detach(reward_w).mean(),
        "rejected_reward": ops.detach(reward_l).mean(),
        "margin": ops.detach(margin).mean(),
    }
    return loss.mean(), stats


def group_relative_loss(clip: float, beta: float, policy_w: A, policy_l: A, ref_w: A, ref_l: A, tokens_w: A,
                        tokens_l: A, adv_w: Sequence[float], adv_l: Sequence[float], weight: Sequence[float], *,
                        ops: ArrayOps) -> tuple[A, dict[str, A]]:
    """The group-relative policy loss (GRPO's clipped surrogate with a sequence-level ratio, as GSPO),
    written over a group's pairs (loop/pairs.group_pairs) so that the pair skeleton trains it.

    Per text i: ratio r_i = exp((pi_i - ref_i) / tokens_i), ref the generator that wrote the texts,
    and x_i = min(r_i, 1 + clip) where its advantage A_i > 0, max(r_i, 1 - clip) where A_i < 0 (the
    clipped surrogate min(r A, clip(r) A) divided by A). Per pair: -weight * (A_w - A_l) * (x_w - x_l);
    the mean over one group's pairs is -(1/k) sum_i A_i x_i, GRPO's objective for that group.
    """
    def surrogate(policy: A, ref: A, tokens: A, adv: Sequence[float]) -> A:
        ratio = ops.exp((policy - ref) / ops.at_least(tokens, 1))
        up = ops.array([float(a > 0) for a in adv], policy)
        down = ops.array([float(a < 0) for a in adv], policy)
        return ratio + up * (ops.at_most(ratio, 1 + clip) - ratio) + down * (ops.at_least(ratio, 1 - clip) - ratio)

    scale = ops.array([wt * (a - b) for wt, a, b in zip(weight, adv_w, adv_l)], policy_w)
    loss = -scale * (surrogate(policy_w, ref_w, tokens_w, adv_w) - surrogate(policy_l, ref_l, tokens_l, adv_l))
    reward_w, reward_l = beta * (policy_w - ref_w), beta * (policy_l - ref_l)
    stats = {"chosen_reward": ops.detach(reward_w).mean(), "rejected_reward": ops.detach(reward_l).mean(),
             "margin": ops.detach(reward_w - reward_l).mean()}
    return loss.mean(), stats


# -- the learning rate of each step ----------------------------------------------------------------

def learning_rate_at(cfg: TrainConfig, step: int, total: int) -> float:
    """The learning rate of optimiser step `step` (0-based) of a run of `total` steps.

    constant: cfg.learning_rate at every step.
    linear: cfg.learning_rate x (total - step) / total, from the full rate at the first step down to
      1/total of it at the last (0 after it): transformers' default "linear" schedule without warm-up,
      which trl's DPOTrainer, and so the reference implementation, trains with.
    A resumed run continues the same schedule, as the rate depends on the step's index only.
    """
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    if cfg.lr_schedule == "linear":
        return cfg.learning_rate * max(0, total - step) / max(1, total)
    raise ValueError(f"unknown learning-rate schedule {cfg.lr_schedule!r}; expected one of {LR_SCHEDULES}")


# -- pairs and batches ----------------------------------------------------------------------------

def batches(n_pairs: int, batch_size: int, epochs: int, groups: Sequence[int] | None = None) -> list[list[int]]:
    """The batching rule: pair indices in order, batch_size per optimiser step, repeated per epoch;
    with `groups` (a group number per pair, consecutive), batch_size whole groups per step."""
    size = max(1, batch_size)
    if groups is None:
        one = [list(range(s, min(s + size, n_pairs))) for s in range(0, n_pairs, size)]
    else:
        starts = [k for k in range(n_pairs) if k == 0 or groups[k] != groups[k - 1]][::size] + [n_pairs]
        one = [list(range(a, b)) for a, b in zip(starts, starts[1:])]
    return [list(b) for _ in range(epochs) for b in one]


def steps_of(pairs: Sequence[TrainPair], cfg: TrainConfig) -> list[list[int]]:
    """The pairs of every optimiser step of training on `pairs` (the batching rule)."""
    groups = None
    if cfg.loss == "grpo":  # a group: consecutive pairs of one prompt
        groups = [0] * len(pairs)
        for k in range(1, len(pairs)):
            groups[k] = groups[k - 1] + (pairs[k].prompt != pairs[k - 1].prompt)
    return batches(len(pairs), cfg.batch_size, cfg.epochs, groups)


@dataclass
class TrainPlan:
    """The pairs, indexed into their unique token sequences, and the pairs of every optimiser step."""
    pairs: Sequence[TrainPair]
    enc: Encoded  # unique (prompt, completion) token sequences
    index: list[tuple[int, int]]  # pair -> (chosen sequence, rejected sequence)
    steps: list[list[int]]  # pair indices per optimiser step, from `batches`
    loss: str = "score-dpo"
    clip: float = 0.2  # grpo's ratio clip

    @classmethod
    def make(cls, fmt: ChatFormat, pairs: Sequence[TrainPair], cfg: TrainConfig) -> TrainPlan:
        if cfg.loss not in LOSSES:
            raise ValueError(f"unknown loss {cfg.loss!r}; expected one of {LOSSES}")
        learning_rate_at(cfg, 0, 1)  # an unknown schedule fails here, before any tensor work
        enc = Encoded(fmt, cfg.max_length)
        index = [(enc.add(p.prompt, p.chosen), enc.add(p.prompt, p.rejected)) for p in pairs]
        return cls(pairs, enc, index, steps_of(pairs, cfg), cfg.loss, cfg.clip)

    @property
    def sft(self) -> bool:
        return self.loss == "sft"

    @property
    def reference_with_adapter(self) -> bool:
        """grpo's ratio is to the generator that wrote the texts (the adapter as training begins); the
        preference losses' reference is the base model (the adapter off)."""
        return self.loss == "grpo"

    def chosen(self, pairs: Sequence[int]) -> list[int]:
        return [self.index[k][0] for k in pairs]

    def rejected(self, pairs: Sequence[int]) -> list[int]:
        return [self.index[k][1] for k in pairs]

    def sequences(self, pairs: Iterable[int]) -> list[int]:
        """The sequences of these pairs, chosen and rejected, each once, ascending."""
        return sorted({i for k in pairs for i in self.index[k]})

    def tokens(self, pairs: Sequence[int]) -> int:
        """Tokens one step on these pairs trains on (prompts included; SFT: the winners only)."""
        return sum(len(self.enc.seqs[w]) + (0 if self.sft else len(self.enc.seqs[l]))
                   for w, l in (self.index[k] for k in pairs))

    def pass_loss(self, beta: float, pairs: Sequence[int], policy_w: A, policy_l: A | None, ref_w: A, ref_l: A,
                  ops: ArrayOps) -> tuple[A, dict[str, A]]:
        """The mean loss of `pairs` from their log-probs (policy_l None with SFT: the reference stands in)."""
        like = policy_w
        sw = ops.array([self.pairs[k].score_chosen for k in pairs], like)
        sl = ops.array([self.pairs[k].score_rejected for k in pairs], like)
        ntok = ops.array([self.enc.completion_len(i) for i in self.chosen(pairs)], like)
        pl = ref_l if policy_l is None else policy_l
        if self.loss == "grpo":
            ntok_l = ops.array([self.enc.completion_len(i) for i in self.rejected(pairs)], like)
            these = [self.pairs[k] for k in pairs]
            return group_relative_loss(self.clip, beta, policy_w, pl, ref_w, ref_l, ntok, ntok_l,
                                       [p.advantage_chosen for p in these], [p.advantage_rejected for p in these],
                                       [p.weight for p in these], ops=ops)
        return preference_loss(self.loss, beta, policy_w, pl, ref_w, ref_l, sw, sl, ntok, ops=ops)


# -- what a backend supplies ----------------------------------------------------------------------

@dataclass
class Pass:
    """One forward/backward pass over some pairs of a step; `data` is the backend's own (rows, ...)."""
    pairs: list[int]
    data: Any = None


class TensorWork(Protocol):
    """A backend's tensor work for one training run (its model, optimiser and log-probs)."""

    def zero_grad(self) -> None:
        """Start a step: forget the gradient accumulated so far."""

    def passes(self, pairs: list[int]) -> Iterable[Pass]:
        """Passes covering these pairs of a step (every pair in exactly one)."""

    def backward(self, p: Pass, weight: float) -> dict[str, float]:
        """Add the gradient of weight x the pass's mean loss; return the pass's STATS, unweighted."""

    def update(self, max_norm: float, learning_rate: float) -> float:
        """Clip the gradient to max_norm, take the optimiser step at this learning rate (the
        skeleton's learning_rate_at); the norm before clipping."""

    def save(self, adapter: Path, optimizer: Path) -> None:
        """Write the trainable tensors and the optimiser state as safetensors files."""

    def load(self, adapter: Path, optimizer: Path) -> None: ...


class Collective(Protocol):
    """Several ranks training one adapter: every rank takes the step one process would take."""
    rank: int
    world: int

    def share(self, pairs: list[int]) -> list[int]:
        """This rank's pairs of a step."""

    def broadcast(self) -> None:
        """Rank 0's trainable tensors on every rank."""

    def all_reduce(self, sums: dict[str, float]) -> dict[str, float]:
        """Sum the gradients over ranks, and these statistics; the summed statistics."""


# -- checkpoints ----------------------------------------------------------------------------------

def save_checkpoint(root: Path, step: int, work: TensorWork, history: list[StepInfo]) -> Path:
    final = Path(root) / f"step-{step:06d}"
    with atomic_dir(final) as tmp:
        work.save(tmp / ADAPTER_FILE, tmp / OPTIMIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, "history": [asdict(h) for h in history]}))
    for old in Path(root).glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resume(root: Path | None, work: TensorWork) -> tuple[int, list[StepInfo]]:
    """(steps done, their records) from the latest checkpoint under root, its tensors loaded; (0, []) if none."""
    done = sorted(Path(root).glob("step-*")) if root is not None and Path(root).is_dir() else []
    if not done:
        return 0, []
    ck = done[-1]
    work.load(ck / ADAPTER_FILE, ck / OPTIMIZER_FILE)
    state = json.loads((ck / STATE_FILE).read_text())
    return state["step"], [StepInfo(**h) for h in state["history"]]


# -- the loop -------------------------------------------------------------------------------------

def train(plan: TrainPlan, cfg: TrainConfig, work: TensorWork, *, on_step: Callable[[StepInfo], None] | None = None,
          checkpoint_dir: Path | None = None, collective: Collective | None = None,
          started: float | None = None) -> TrainStats:
    """Run plan.steps from the last checkpoint on: one optimiser step per batch, its StepInfo to on_step.
    started: when the run began (time.time()), for TrainStats.seconds; default now. Only rank 0 writes
    checkpoints."""
    started = time.time() if started is None else started
    start, history = resume(checkpoint_dir, work)
    if collective is not None:
        collective.broadcast()  # every rank starts from rank 0's adapter
    writer = collective is None or collective.rank == 0
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
    total, tokens = len(plan.steps), 0
    for step in range(start, total):
        ts = time.time()
        batch = plan.steps[step]
        mine = batch if collective is None else collective.share(batch)
        work.zero_grad()
        sums = dict.fromkeys(STATS, 0.0)
        for p in work.passes(mine) if mine else ():  # a rank may have no share of a small step
            weight = len(p.pairs) / len(batch)
            st = work.backward(p, weight)
            for k in STATS:
                sums[k] += st[k] * weight
        if collective is not None:  # every rank now holds the whole step's gradient and statistics
            sums = collective.all_reduce(sums)
        norm = work.update(max_norm, learning_rate_at(cfg, step, total))
        tokens += plan.tokens(batch)
        info = StepInfo(step + 1, total, sums["loss"], sums["margin"], sums["chosen_reward"],
                        sums["rejected_reward"], time.time() - ts, float(norm), plan.tokens(batch))
        history.append(info)
        if on_step:
            on_step(info)
        if writer and checkpoint_dir is not None and cfg.checkpoint_every \
                and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
            save_checkpoint(Path(checkpoint_dir), step + 1, work, history)
    n = max(1, len(history))
    return TrainStats(steps=len(history), loss=sum(h.loss for h in history) / n,
                      margin=sum(h.margin for h in history) / n, seconds=time.time() - started, tokens=tokens,
                      history=history, truncated=plan.enc.truncated)
