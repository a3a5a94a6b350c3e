"""The contract between the backend-agnostic loop and a model backend.

A backend holds one base model with one LoRA adapter on it. It generates (with the adapter
on, or off for the executor role), computes completion log-probs, trains the adapter with
Score-DPO / DPO / SFT, and saves and loads the adapter in its framework's native format.
Two implementations: `scoreflow.backends.cuda` (PyTorch + PEFT, CUDA or CPU) and
`scoreflow.backends.mlx` (MLX + mlx-lm, Apple silicon or MLX's CPU build).
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

from .errors import UserError

Message = dict[str, str]  # {"role": ..., "content": ...}
Messages = list[Message]


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.01
    targets: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass
class SamplingParams:
    temperature: float = 0.2
    top_p: float = 0.95
    max_new_tokens: int = 1000
    stop: tuple[str, ...] = ("</graph>",)
    seed: int | None = None


@dataclass
class Completion:
    text: str  # decoded, cut after the first stop string (which is kept)
    tokens: int  # generated tokens, the stop string's included
    finished: bool  # stopped at a stop string or end of turn, not at max_new_tokens


@dataclass
class TrainPair:
    prompt: Messages
    chosen: str
    rejected: str
    score_chosen: float
    score_rejected: float


@dataclass
class TrainConfig:
    loss: str = "score-dpo"  # "score-dpo" | "dpo" | "sft"
    beta: float = 0.1
    learning_rate: float = 1e-4
    epochs: int = 1
    batch_size: int = 1
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    max_length: int = 2048  # prompt + completion tokens; longer completions are cut
    checkpoint_every: int = 8  # steps between resumable checkpoints (0 = never)
    seed: int = 0
    processes: int = 1  # data-parallel ranks (PyTorch backend: > 1 trains under `accelerate launch`)


@dataclass
class StepInfo:
    step: int  # 1-based
    total: int
    loss: float
    margin: float  # beta * (weighted chosen reward - weighted rejected reward), batch mean
    chosen_reward: float  # beta * (logp_w - ref_logp_w), batch mean
    rejected_reward: float
    seconds: float
    grad_norm: float = 0.0  # total gradient norm before clipping


@dataclass
class TrainStats:
    steps: int = 0
    loss: float = 0.0  # mean over steps
    margin: float = 0.0
    seconds: float = 0.0
    tokens: int = 0
    history: list[StepInfo] = field(default_factory=list)


class Backend(Protocol):
    name: str  # "cuda" | "mlx"
    device: str  # "cuda:0", "cpu", "gpu" ...
    model_name: str

    def generate(
        self, prompts: Sequence[Messages], params: SamplingParams, *, adapter: bool = True
    ) -> list[Completion]: ...

    def logprobs(
        self, items: Sequence[tuple[Messages, str]], *, adapter: bool = True
    ) -> list[float]:
        """Summed log-probability of each completion (with its end-of-turn token) given its prompt."""

    def train(
        self,
        pairs: Sequence[TrainPair],
        cfg: TrainConfig,
        *,
        on_step: Callable[[StepInfo], None] | None = None,
        checkpoint_dir: Path | None = None,
    ) -> TrainStats:
        """Train the current adapter on `pairs` in order, cfg.batch_size consecutive pairs a step
        (scoreflow.training.batches); resume from `checkpoint_dir` if it holds a checkpoint."""

    def save_adapter(self, path: Path) -> None: ...

    def load_adapter(self, path: Path | None) -> None:
        """Load an adapter saved by `save_adapter`; None resets to a freshly initialised LoRA."""

    def peak_memory_mb(self) -> float: ...


BACKENDS = {
    "cuda": ("scoreflow.backends.cuda", ("torch", "peft"), 'pip install "scoreflow-cli[cuda]"'),
    "mlx": ("scoreflow.backends.mlx", ("mlx", "mlx_lm"), 'pip install "scoreflow-cli[mlx]"'),
}
ALIASES = {"torch": "cuda", "pytorch": "cuda", "cpu": "cuda"}


def _installed(modules: Sequence[str]) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def resolve_backend_name(name: str) -> str:
    """`auto`: mlx on Apple silicon, else the PyTorch backend (CUDA when it sees a GPU, else CPU)."""
    name = ALIASES.get(name, name)
    if name == "auto":
        apple = platform.system() == "Darwin" and platform.machine() == "arm64"
        if apple and _installed(BACKENDS["mlx"][1]):
            return "mlx"
        if _installed(BACKENDS["cuda"][1]):
            return "cuda"
        if _installed(BACKENDS["mlx"][1]):
            return "mlx"
        raise UserError(
            'no backend is installed: pip install "scoreflow-cli[cuda]" (PyTorch) '
            'or "scoreflow-cli[mlx]" (Apple silicon)'
        )
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}: choose auto, cuda (PyTorch, also on CPU) or mlx")
    module, needs, install = BACKENDS[name]
    if not _installed(needs):
        missing = [m for m in needs if importlib.util.find_spec(m) is None]
        raise UserError(f"backend {name!r} needs {', '.join(missing)}: {install}")
    return name


def load_backend(
    name: str,
    model: str,
    *,
    device: str = "auto",
    lora: LoraConfig | None = None,
    seed: int = 0,
    dtype: str = "auto",
) -> Backend:
    name = resolve_backend_name(name)
    module = importlib.import_module(BACKENDS[name][0])
    return module.load(model, device=device, lora=lora or LoraConfig(), seed=seed, dtype=dtype)
