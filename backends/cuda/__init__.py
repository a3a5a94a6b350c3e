"""The PyTorch backend: transformers + PEFT LoRA, on CUDA when PyTorch sees a GPU, else on CPU."""

from __future__ import annotations

import os

# Before torch starts OpenMP: spinning worker threads starve the sandbox children on small machines.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _return_large_frees() -> None:
    """glibc keeps freed blocks of up to 32 MB for reuse once it has freed one (its mmap threshold
    grows), so a CPU training step's activations stay resident long after the step; a fixed
    threshold gives every block of 128 KB or more back to the system when torch frees it."""
    import ctypes
    import sys

    if sys.platform == "linux":
        try:
            ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        except (OSError, AttributeError):  # not glibc
            pass


_return_large_frees()

import contextlib  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import asdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Iterator, Sequence  # noqa: E402

import torch  # noqa: E402

from scoreflow.model.backend import (  # noqa: E402
    AdapterSnapshots, Completion, LoraConfig, Messages, SamplingParams, StepInfo, TrainConfig, TrainPair, TrainStats,
)
from scoreflow.model.chat import ChatFormat  # noqa: E402
from scoreflow.errors import UserError  # noqa: E402
from scoreflow.model.adapters import write_base  # noqa: E402
from scoreflow.model.source import hub_id, resolve_model  # noqa: E402
from scoreflow.files import atomic_dir  # noqa: E402

from scoreflow.backends.cuda import distributed as _distributed  # noqa: E402
from scoreflow.backends.cuda import generate as _generate  # noqa: E402
from scoreflow.backends.cuda import train as _train  # noqa: E402
from scoreflow.backends.cuda.model import load_base, pick_device, pick_dtype  # noqa: E402

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class TorchBackend(AdapterSnapshots):
    name = "cuda"

    def __init__(self, model: str, *, device: str = "auto", lora: LoraConfig, seed: int = 0,
                 dtype: str = "auto", generation_batch_size: int = 8, prompt_cache: bool = True):
        from peft import LoraConfig as PeftLoraConfig, get_peft_model

        self.source = resolve_model(model)
        self.torch_device = pick_device(device)
        self.device = str(self.torch_device)
        self.dtype = pick_dtype(dtype, self.torch_device)
        self.model_name = self.source.name
        self.lora = lora
        self.generation_batch_size = generation_batch_size
        base, self.tokenizer, self.base_path = load_base(self.source, self.torch_device, self.dtype)
        self.fmt = ChatFormat(self.tokenizer)
        torch.manual_seed(seed)
        cfg = PeftLoraConfig(
            r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.targets), task_type="CAUSAL_LM",
        )
        try:
            self.model = get_peft_model(base, cfg)
        except ValueError as e:
            raise UserError(f"cannot put LoRA on {self.model_name}: {e}") from None
        self.model.eval()
        self._initial = _train.lora_state(self.model)
        self._lock = threading.Lock()
        # Prompt openings' keys and values, with the adapter on and off; valid until the adapter changes.
        self.prompt_cache = _generate.PromptCache(keep=prompt_cache)
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.parameters = sum(p.numel() for p in self.model.get_base_model().parameters() if not p.requires_grad)

    # -- generation and scoring -------------------------------------------------------------
    def generate(self, prompts: Sequence[Messages], params: SamplingParams, *, adapter: bool = True) -> list[Completion]:
        with self._lock:
            # The cache follows the LoRA weights themselves, however they were changed (~1 ms per call).
            self.prompt_cache.follow(tuple(torch.stack([p.detach().sum() for p in self._trainable]).tolist()))
            with contextlib.nullcontext() if adapter else self.model.disable_adapter():
                return _generate.generate(self.model, self.tokenizer, self.fmt, prompts, params, self.torch_device,
                                          self.generation_batch_size, self.prompt_cache, adapter)

    @torch.no_grad()
    def logprobs(self, items: Sequence[tuple[Messages, str]], *, adapter: bool = True) -> list[float]:
        enc = _train.Encoded(self.fmt, max_length=10**9)
        idx = [enc.add(p, c) for p, c in items]
        with self._lock:
            self.model.eval()
            ctx = self.model.disable_adapter() if not adapter else _nullcontext()
            with ctx:
                lp = _train.sequence_logprobs(self.model, enc.seqs, enc.prompt_lens,
                                              self.tokenizer.pad_token_id, self.torch_device)
        return [float(lp[i]) for i in idx]

    # -- training -----------------------------------------------------------------------------
    def train(self, pairs: Sequence[TrainPair], cfg: TrainConfig, *,
              on_step: Callable[[StepInfo], None] | None = None, checkpoint_dir: Path | None = None) -> TrainStats:
        if not pairs:
            return TrainStats()
        self.prompt_cache.clear()  # stale from the first step on; its memory is the step's
        try:
            if cfg.processes > 1 and not _distributed.launched():  # data-parallel: ranks under accelerate launch
                from scoreflow.backends.cuda.ddp_train import Job, launch

                cpu = self.torch_device.type == "cpu"
                job = Job(model=self.base_path, pairs="", out="", lora=asdict(self.lora),
                          dtype=str(self.dtype).removeprefix("torch."), device="cpu" if cpu else "auto")
                return launch(self, job, pairs, cfg, on_step, checkpoint_dir)
            torch.manual_seed(cfg.seed)
            with self._lock:
                return _train.train(self.model, self.fmt, self.tokenizer.pad_token_id, self.torch_device,
                                    pairs, cfg, on_step, checkpoint_dir)
        finally:
            self.prompt_cache.clear()
            self._adapter_trained()

    @contextmanager
    def offloaded(self) -> Iterator[None]:
        """The model waits in CPU memory (and nothing here uses it), leaving the GPU to other processes."""
        with self._lock:
            if self.torch_device.type != "cuda":
                yield
                return
            self.model.to("cpu")
            torch.cuda.empty_cache()
            try:
                yield
            finally:
                self.model.to(self.torch_device)

    # -- adapters -----------------------------------------------------------------------------
    def save_adapter(self, path: Path) -> None:
        """PEFT format (adapter_model.safetensors + adapter_config.json) and scoreflow.json (the local
        base), written atomically."""
        with atomic_dir(Path(path)) as tmp:
            self.model.save_pretrained(str(tmp))
            cfg_path = tmp / ADAPTER_CONFIG
            cfg = json.loads(cfg_path.read_text())
            hub = hub_id(self.source)
            cfg["base_model_name_or_path"] = hub or self.base_path  # another machine resolves a hub id
            cfg_path.write_text(json.dumps(cfg, indent=2))
            write_base(tmp, hub, self.base_path)
        self._adapter_is(path)

    def load_adapter(self, path: Path | None) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        with self._lock:
            self.prompt_cache.clear()
            if path is None:
                params = dict(self.model.named_parameters())
                for n, t in self._initial.items():
                    params[n].data.copy_(t)
                self._adapter_is(None)
                return
            path = Path(path)
            weights = path / ADAPTER_WEIGHTS
            if not weights.is_file():
                raise UserError(f"{path} holds no PEFT adapter ({ADAPTER_WEIGHTS}); convert with `scoreflow export`")
            cfg = json.loads((path / ADAPTER_CONFIG).read_text())
            if int(cfg.get("r", -1)) != self.lora.rank or sorted(cfg.get("target_modules") or []) != sorted(self.lora.targets):
                raise UserError(f"adapter {path} has rank {cfg.get('r')} on {cfg.get('target_modules')}, "
                                f"but this run uses rank {self.lora.rank} on {list(self.lora.targets)}")
            state = load_file(str(weights))
            own = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
            for k, v in state.items():
                match = [p for n, p in own.items() if n.replace(".default", "") == k]
                if match and match[0].shape != v.shape:
                    raise UserError(f"adapter {path} does not fit this base model ({k}: {tuple(v.shape)} "
                                    f"vs {tuple(match[0].shape)}); it was trained on another model")
            result = set_peft_model_state_dict(self.model, state)
            if getattr(result, "unexpected_keys", None):
                raise UserError(f"adapter {path} does not fit this base model (unexpected {result.unexpected_keys[:2]})")
            self._adapter_is(path)

    def peak_memory_mb(self) -> float:
        if self.torch_device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.torch_device) / 2**20
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def load(model: str, *, device: str = "auto", lora: LoraConfig, seed: int = 0, dtype: str = "auto",
         **kwargs) -> TorchBackend:
    return TorchBackend(model, device=device, lora=lora, seed=seed, dtype=dtype, **kwargs)
