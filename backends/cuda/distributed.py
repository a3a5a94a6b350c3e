"""Data parallelism for the PyTorch backend's training, on plain torch.distributed.

Under `accelerate launch` or torchrun each process (rank) holds the whole model and adapter. Every
optimiser step, each rank computes the loss of its share of the step's pairs, weighted by
share / batch size; the LoRA gradients are then summed over ranks, so every rank holds the gradient
of the whole batch's mean loss and takes the same step that one process would take. No DDP wrapper:
training calls the decoder and the LM head directly, and the LoRA gradients are small enough to
reduce in one call after the backward passes.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
import torch.distributed as dist


def launched() -> bool:
    """Whether this process was started as one of several ranks (accelerate launch, torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: str = "auto") -> torch.device:
    """This rank's device: cuda:LOCAL_RANK when PyTorch sees a GPU (and `device` is not cpu), else CPU."""
    use_cpu = device == "cpu" or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if use_cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[int, int]:
    """(rank, world size). Joins the process group when launched and not yet joined: nccl on CUDA,
    gloo on CPU. A plain process is rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if not launched():
        return 0, 1
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's contiguous share of a batch. Shares differ in size by one at most; with fewer pairs
    than ranks some ranks get none (they still join the gradient sum, with zeros)."""
    n = len(batch)
    return list(batch[rank * n // world:(rank + 1) * n // world])


def broadcast_params(params: Sequence[torch.nn.Parameter]) -> None:
    """Rank 0's values of `params` on every rank."""
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def all_reduce_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """Replace each parameter's gradient by its sum over ranks (a missing gradient counts as zero),
    in one collective over a flat float32 buffer."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    at = 0
    for p in params:
        n = p.numel()
        p.grad = flat[at:at + n].view_as(p).to(p.dtype)
        at += n


def all_reduce_sums(sums: dict[str, float], device: torch.device) -> dict[str, float]:
    """Per-rank sums of logged statistics, summed over ranks."""
    t = torch.tensor(list(sums.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(sums, t.tolist()))
