"""The MLX backend: mlx-lm models with mlx-lm LoRA, on Apple silicon (Metal) or MLX's CPU build.

Never imports torch itself (mlx-lm's own `import transformers` may pull it in where installed)."""

from __future__ import annotations

from scoreflow.backends.mlx.blas import preload as _preload_blas

_preload_blas()  # before the first `import mlx.core`: OpenBLAS instead of the reference BLAS on Linux

import json  # noqa: E402
import threading  # noqa: E402
from contextlib import contextmanager, nullcontext  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Iterator, Sequence  # noqa: E402

import mlx.core as mx  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from scoreflow.model.backend import (  # noqa: E402
    AdapterSnapshots, Completion, LoraConfig, Messages, SamplingParams, StepInfo, TrainConfig, TrainPair, TrainStats,
)
from scoreflow.model.chat import ChatFormat  # noqa: E402
from scoreflow.model.adapters import write_base  # noqa: E402
from scoreflow.model.source import hub_id, resolve_model  # noqa: E402
from scoreflow.files import atomic_dir  # noqa: E402

from scoreflow.backends.mlx import generate as _generate  # noqa: E402
from scoreflow.backends.mlx import train as _train  # noqa: E402
from scoreflow.backends.mlx.model import (  # noqa: E402
    add_lora, adapter_disabled, load_base, lora_state, pick_device, pick_dtype, read_json, wire_memory,
)
from scoreflow.backends.mlx.prompt_cache import PromptCache  # noqa: E402

ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Measured on SmolLM2-135M (docs/mlx.md): with PEFT's alpha/rank scale and bias-corrected AdamW the
# MLX update equals the PyTorch one, so the shared TrainConfig default (1e-4) is safe; 5e-4 is not.
DEFAULT_LEARNING_RATE = 1e-4


class MLXBackend(AdapterSnapshots):
    name = "mlx"

    def __init__(self, model: str, *, device: str = "auto", lora: LoraConfig, seed: int = 0,
                 dtype: str = "auto", generation_batch_size: int = 8, quantized: bool | None = None,
                 prompt_cache: bool = True, top_p_sampler: str = "auto", compiled_step: bool | None = None):
        """prompt_cache: keep the prefilled openings of generator prompts (prompt_cache.py; off: prefill
        them for every prompt, with the same outputs). top_p_sampler: one of generate.TOP_P_SAMPLERS,
        auto: "mlx-lm" on Metal, "top-64" on CPU. compiled_step: compile the training step with
        mx.compile as mlx-lm's tuner does (None: on Metal only; on CPU it gained nothing)."""
        from scoreflow.errors import UserError

        self.source = resolve_model(model)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.model_name = self.source.name
        self.lora = lora
        self.generation_batch_size = generation_batch_size
        self.top_p_sampler = top_p_sampler if top_p_sampler != "auto" else ("mlx-lm" if self.device == "gpu" else "top-64")
        if self.top_p_sampler not in _generate.TOP_P_SAMPLERS:
            raise UserError(f"unknown top-p sampler {top_p_sampler!r}: auto, {', '.join(_generate.TOP_P_SAMPLERS)}")
        self.compiled_step = self.device == "gpu" if compiled_step is None else compiled_step
        self.prompts = PromptCache(enabled=prompt_cache)
        self.stream = mx.new_thread_local_stream(mx.default_device())  # the generator's (callers run in worker threads)
        wire_memory(self.device)
        # QLoRA on Metal: a quantized base stays quantized unless a dtype is asked for. On CPU,
        # quantized matmuls are ~40x slower than fp32, so dequantize there.
        keep_quantized = (self.device == "gpu" and dtype in ("auto", "", None)) if quantized is None else quantized
        loaded = load_base(self.source, self.dtype, keep_quantized)
        self.model, self.tokenizer, self.base_path = loaded.model, loaded.tokenizer, loaded.base_path
        self.quantized = loaded.quantized
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        try:
            self.fmt = ChatFormat(self.tokenizer)
        except ValueError as e:
            raise UserError(f"model {self.source.spec}: {e}") from None
        # The base's parameter count, for --profile's FLOPs (a quantized base's packed weights would undercount).
        self.parameters = None if self.quantized else sum(v.size for _, v in tree_flatten(self.model.parameters()))
        self.adapter_config = add_lora(self.model, lora, seed)
        self._initial = {k: mx.array(v) for k, v in lora_state(self.model).items()}
        self.model.eval()
        self._lock = threading.Lock()

    # -- generation and scoring -------------------------------------------------------------
    def generate(self, prompts: Sequence[Messages], params: SamplingParams, *, adapter: bool = True) -> list[Completion]:
        if not prompts:
            return []
        with self._lock:
            self.model.eval()
            with adapter_disabled(self.model) if not adapter else nullcontext():
                return _generate.generate(
                    self.model, self.fmt, prompts, params, batch_size=self.generation_batch_size,
                    openings=lambda ids: self.prompts.opening(self.model, ids, adapter),
                    top_p_sampler=self.top_p_sampler, stream=self.stream)

    def logprobs(self, items: Sequence[tuple[Messages, str]], *, adapter: bool = True) -> list[float]:
        if not items:
            return []
        enc = _train.Encoded(self.fmt, max_length=10**9)
        idx = [enc.add(p, c) for p, c in items]
        with self._lock:
            self.model.eval()
            if adapter:
                lp = _train.scored(self.model, enc, idx, self.pad_id)
            else:
                with adapter_disabled(self.model):
                    lp = _train.scored(self.model, enc, idx, self.pad_id)
        return [lp[i] for i in idx]

    # -- training -----------------------------------------------------------------------------
    def train(self, pairs: Sequence[TrainPair], cfg: TrainConfig, *,
              on_step: Callable[[StepInfo], None] | None = None, checkpoint_dir: Path | None = None) -> TrainStats:
        if not pairs:
            return TrainStats()
        mx.random.seed(cfg.seed)
        self.prompts.adapter_changed()  # stale from the first step on; its memory is the step's
        try:
            with self._lock:
                return _train.train(self.model, self.fmt, self.pad_id, pairs, cfg, on_step, checkpoint_dir,
                                    compiled=self.compiled_step)
        finally:
            self._adapter_trained()
            self.prompts.adapter_changed()

    @contextmanager
    def offloaded(self) -> Iterator[None]:
        """Unified memory: nothing to move; the model is left unused meanwhile."""
        with self._lock:
            yield

    # -- adapters -----------------------------------------------------------------------------
    def save_adapter(self, path: Path) -> None:
        """mlx-lm format (adapters.safetensors + adapter_config.json) and scoreflow.json (the local
        base), written atomically; loads with `mlx_lm.load(model, adapter_path=path)` and
        `mlx_lm fuse` where the base is an mlx-lm folder."""
        with atomic_dir(Path(path)) as tmp:
            with self._lock:
                mx.save_safetensors(str(tmp / ADAPTER_WEIGHTS), lora_state(self.model), metadata={"format": "mlx"})
            hub = hub_id(self.source)
            cfg = dict(self.adapter_config, model=hub or self.base_path)  # another machine resolves a hub id
            (tmp / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2))
            write_base(tmp, hub, self.base_path)
        self._adapter_is(path)

    def load_adapter(self, path: Path | None) -> None:
        from scoreflow.errors import UserError

        with self._lock:
            if path is None:
                self.model.load_weights(list(self._initial.items()), strict=False)
                mx.eval(self.model.trainable_parameters())
                self.prompts.adapter_changed()
                self._adapter_is(None)
                return
            path = Path(path)
            weights = path / ADAPTER_WEIGHTS
            if not weights.is_file():
                raise UserError(f"{path} holds no mlx-lm adapter ({ADAPTER_WEIGHTS}); convert with `scoreflow export`")
            cfg = read_json(path / ADAPTER_CONFIG).get("lora_parameters", {})
            mine = self.adapter_config["lora_parameters"]
            if int(cfg.get("rank", -1)) != mine["rank"] or sorted(cfg.get("keys") or []) != sorted(mine["keys"]):
                raise UserError(f"adapter {path} has rank {cfg.get('rank')} on {cfg.get('keys')}, "
                                f"but this run uses rank {mine['rank']} on {mine['keys']}")
            if abs(float(cfg.get("scale", mine["scale"])) - mine["scale"]) > 1e-9:
                raise UserError(f"adapter {path} has LoRA scale {cfg.get('scale')}, this run uses {mine['scale']} "
                                f"(alpha {self.lora.alpha} / rank {self.lora.rank})")
            own = lora_state(self.model)
            state = mx.load(str(weights))
            for k, v in state.items():
                if k not in own:
                    raise UserError(f"adapter {path} does not fit this base model (unexpected {k})")
                if own[k].shape != v.shape:
                    raise UserError(f"adapter {path} does not fit this base model ({k}: {tuple(v.shape)} "
                                    f"vs {tuple(own[k].shape)}); it was trained on another model")
            self.model.load_weights([(k, v.astype(own[k].dtype)) for k, v in state.items()], strict=False)
            mx.eval(self.model.trainable_parameters())
            self.prompts.adapter_changed()
            self._adapter_is(path)

    def peak_memory_mb(self) -> float:
        peak = mx.get_peak_memory() / 2**20
        if self.device == "gpu" or peak > 0:
            return peak
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(model: str, *, device: str = "auto", lora: LoraConfig, seed: int = 0, dtype: str = "auto",
         **kwargs) -> MLXBackend:
    return MLXBackend(model, device=device, lora=lora, seed=seed, dtype=dtype, **kwargs)
