"""The contract between the backend-agnostic loop and a model backend.

Two roles. A **Sampler** generates completions, with the current adapter on or off (off: the
base model, the executor role). A **Policy** holds one base model with one LoRA adapter on it:
it computes completion log-probs, trains the adapter with Score-DPO / DPO / SFT, and saves and
loads the adapter in its framework's native format. A backend (`scoreflow.backends.cuda`: PyTorch
+ PEFT, CUDA or CPU; `scoreflow.backends.mlx`: MLX + mlx-lm) is both at once: it samples from the
model it trains. Another engine is one Sampler class that reads the Policy's saved adapters
(`backends/cuda/vllm_server.py`: a vLLM server).

Nothing here knows the loop, the configuration or the CLI; everything crosses as the plain
dataclasses below (and JSON Lines of TrainPair, read_pairs / write_pairs).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import platform
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

from scoreflow.errors import UserError

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
    prompt_tokens: int = 0  # the prompt's tokens (0 where the engine does not say)


@dataclass
class TrainPair:
    prompt: Messages
    chosen: str
    rejected: str
    score_chosen: float
    score_rejected: float
    advantage_chosen: float = 0.0  # grpo only: the group-relative advantages of the two texts
    advantage_rejected: float = 0.0
    weight: float = 1.0  # grpo only: the group's pairs / k^2


LOSSES = ("score-dpo", "dpo", "sft", "grpo")  # the training losses (the formulas: training.preference_loss)
LR_SCHEDULES = ("constant", "linear")  # the learning rate over an iteration's steps (training.learning_rate_at)


@dataclass
class TrainConfig:
    loss: str = "score-dpo"  # one of LOSSES
    beta: float = 0.1
    clip: float = 0.2  # grpo: the policy ratio's clip range, 1 - clip to 1 + clip
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"  # one of LR_SCHEDULES
    epochs: int = 1
    batch_size: int = 1
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    recompute_share: float = 1.0  # under gradient_checkpointing: the first layers' share that recompute
    opening_gradient: bool = True  # False: the prompts' shared opening runs without gradient
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
    tokens: int = 0  # prompt and completion tokens of the step's pairs (each pair's prompt counted)


@dataclass
class TrainStats:
    steps: int = 0
    loss: float = 0.0  # mean over steps
    margin: float = 0.0
    seconds: float = 0.0
    tokens: int = 0
    history: list[StepInfo] = field(default_factory=list)
    truncated: int = 0  # training sequences whose completion was cut at max_length


class Sampler(Protocol):
    """Generation. `adapter=False` samples the base model (the local executor's role)."""

    name: str  # "cuda" | "mlx" | "vllm"
    device: str  # "cuda:0", "cpu", "gpu", a server URL ...
    model_name: str

    def generate(
        self, prompts: Sequence[Messages], params: SamplingParams, *, adapter: bool = True
    ) -> list[Completion]: ...


class Policy(Protocol):
    """The trained model: log-probs, training, adapters."""

    name: str
    device: str
    model_name: str

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
        """Train the current adapter on `pairs` in order, cfg.batch_size consecutive pairs (grpo: groups)
        a step (scoreflow.model.training.batches); resume from `checkpoint_dir` if it holds a checkpoint."""

    def save_adapter(self, path: Path) -> None: ...

    def load_adapter(self, path: Path | None) -> None:
        """Load an adapter saved by `save_adapter`; None resets to a freshly initialised LoRA."""

    def saved_adapter(self, workdir: Path) -> Path | None:
        """A folder in `save_adapter`'s format holding the current adapter (the one last saved or
        loaded, else a new save under `workdir`); None while the adapter is a fresh LoRA, whose
        outputs are the base model's. How another engine (a Sampler) follows training."""

    def offloaded(self) -> AbstractContextManager[None]:
        """A context in which this process holds the model off the accelerator and uses it not at
        all, leaving the device to other processes (data-parallel training ranks)."""

    def peak_memory_mb(self) -> float: ...


class Backend(Sampler, Policy, Protocol):
    """An in-process backend: it samples from the model it trains."""


class AdapterSnapshots:
    """Policy.saved_adapter for a backend: it calls _adapter_is(path) when it saves or loads an
    adapter (None: reset to a fresh LoRA) and _adapter_trained() when training changes it."""

    _adapter_path: Path | None = None  # a saved folder equal to the current adapter
    _adapter_dirty = False  # trained since it was saved or loaded
    _adapter_saves = 0

    def _adapter_is(self, path: Path | None) -> None:
        self._adapter_path, self._adapter_dirty = (Path(path) if path is not None else None), False

    def _adapter_trained(self) -> None:
        self._adapter_dirty = True

    def saved_adapter(self, workdir: Path) -> Path | None:
        if self._adapter_dirty:  # trained but not saved: save a copy another engine can read
            self._adapter_saves += 1
            self.save_adapter(Path(workdir) / f"adapter-{self._adapter_saves}")  # type: ignore[attr-defined]
        return self._adapter_path


def write_pairs(path: Path, pairs: Sequence[TrainPair]) -> None:
    """Training pairs as JSON Lines, one TrainPair's fields per line."""
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")


def read_pairs(path: Path) -> list[TrainPair]:
    """The pairs of a JSON Lines file (write_pairs' format); a malformed line is a UserError naming it."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UserError(f"cannot read pairs file {path}: {e.strerror or e}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            pair = TrainPair(r["prompt"], r["chosen"], r["rejected"], float(r["score_chosen"]),
                             float(r["score_rejected"]), float(r.get("advantage_chosen", 0.0)),
                             float(r.get("advantage_rejected", 0.0)), float(r.get("weight", 1.0)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}:{n}: not a training pair ({type(e).__name__}: {e})") from None
        if not isinstance(pair.chosen, str) or not isinstance(pair.rejected, str) or not isinstance(pair.prompt, list):
            raise UserError(f"{path}:{n}: chosen and rejected must be texts and prompt a list of chat messages "
                            "(a run's pairs.jsonl holds workflow slots: use --run-dir RUN --iteration N)")
        out.append(pair)
    return out


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
    batch_size: int = 8,
) -> Backend:
    """`batch_size`: rows the backend's own generation decodes at once."""
    name = resolve_backend_name(name)
    module = importlib.import_module(BACKENDS[name][0])
    return module.load(model, device=device, lora=lora or LoraConfig(), seed=seed, dtype=dtype,
                       generation_batch_size=batch_size)
