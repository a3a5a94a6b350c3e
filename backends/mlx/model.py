"""Loading a base model for the MLX backend (GGUF, HF-format folders, mlx-community hub ids) and
putting mlx-lm LoRA layers on it."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from scoreflow.model.backend import LoraConfig
from scoreflow.errors import UserError
from scoreflow.model.source import ModelSource, gguf_tokenizer, read_config, reader_keys

GGUF_GROUP = 32  # every GGUF block format MLX reads (Q4_0, Q4_1, Q8_0) uses blocks of 32
_GGUF_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_DTYPES = {"float32": mx.float32, "fp32": mx.float32, "bfloat16": mx.bfloat16, "bf16": mx.bfloat16,
           "float16": mx.float16, "fp16": mx.float16}


@dataclass
class Loaded:
    model: nn.Module
    tokenizer: object  # a transformers PreTrainedTokenizerFast
    config: dict
    base_path: str
    quantized: bool


def pick_device(device: str) -> str:
    """'cpu' or 'gpu'; sets MLX's default device accordingly."""
    if device in ("auto", "", None):
        return "gpu" if mx.default_device() == mx.gpu else "cpu"
    if device == "cpu":
        mx.set_default_device(mx.cpu)
        return "cpu"
    if device in ("gpu", "metal", "mps"):
        if not mx.metal.is_available():
            raise UserError(f"--device {device}: MLX sees no Metal GPU here (use --device cpu)")
        mx.set_default_device(mx.gpu)
        return "gpu"
    raise UserError(f"unknown device {device!r} for the mlx backend: use auto, cpu or gpu")


def pick_dtype(dtype: str, device: str) -> mx.Dtype:
    if dtype in ("auto", "", None):
        # fp32 is the fast path on CPU; bf16 halves memory and bandwidth on Metal.
        return mx.bfloat16 if device == "gpu" else mx.float32
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


def _scalar(v):
    return v.item() if isinstance(v, mx.array) else v


def _unpermute(w: mx.array, heads: int) -> mx.array:
    # llama.cpp's converter interleaves the two rotary halves of every q/k head; undo it.
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _gguf_config(meta: dict, has_output: bool) -> dict:
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise UserError(f"GGUF architecture {arch!r} is not supported by the mlx backend (llama only); "
                        "use the model's HF-format folder or hub id")
    g = lambda k, d=None: _scalar(meta.get(f"llama.{k}", d))  # noqa: E731
    heads = int(g("attention.head_count"))
    hidden = int(g("embedding_length"))
    cfg = {
        "model_type": "llama", "hidden_size": hidden, "num_hidden_layers": int(g("block_count")),
        "intermediate_size": int(g("feed_forward_length")), "num_attention_heads": heads,
        "num_key_value_heads": int(g("attention.head_count_kv", heads)),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(g("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(g("context_length", 4096)),
        "tie_word_embeddings": not has_output,
    }
    head_dim = g("rope.dimension_count")
    if head_dim is not None and int(head_dim) != hidden // heads:
        cfg["head_dim"] = int(head_dim)
    return cfg


def _gguf_weights(raw: dict[str, mx.array], cfg: dict) -> dict[str, mx.array]:
    out = {}
    for name, w in raw.items():
        if name.startswith("token_embd."):
            key = "model.embed_tokens." + name.split(".", 1)[1]
        elif name.startswith("output_norm."):
            key = "model.norm." + name.split(".", 1)[1]
        elif name.startswith("output."):
            key = "lm_head." + name.split(".", 1)[1]
        elif name.startswith("blk."):
            _, i, module, leaf = name.split(".", 3)
            if module not in _GGUF_NAMES:
                continue
            key = f"model.layers.{i}.{_GGUF_NAMES[module]}.{leaf}"
            if module == "attn_q":
                w = _unpermute(w, cfg["num_attention_heads"])
            elif module == "attn_k":
                w = _unpermute(w, cfg["num_key_value_heads"])
        else:
            continue
        out[key] = w
    return out


def _dequantize_flat(weights: dict[str, mx.array], dtype: mx.Dtype) -> dict[str, mx.array]:
    out = {}
    for key, w in weights.items():
        if key.endswith((".scales", ".biases")) and key.rsplit(".", 1)[0] + ".weight" in weights:
            continue
        stem = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and stem + ".scales" in weights:
            s, b = weights[stem + ".scales"], weights.get(stem + ".biases")
            bits = w.shape[-1] * 32 // (s.shape[-1] * GGUF_GROUP)
            # fp32 scales: with the file's fp16 ones the result is rounded to fp16 (~1e-3 off).
            w = mx.dequantize(w, s.astype(mx.float32), None if b is None else b.astype(mx.float32),
                              group_size=GGUF_GROUP, bits=bits)
        out[key] = w.astype(dtype)
    return out


def _quantize_like(model: nn.Module, weights: dict[str, mx.array]) -> None:
    """Turn the model's Linear/Embedding layers into quantized ones wherever the GGUF is quantized
    (4-bit blocks for most, 8-bit for the embeddings in SmolLM2's Q4_1 file)."""
    def predicate(path: str, module: nn.Module):
        s = weights.get(path + ".scales")
        if s is None or not hasattr(module, "to_quantized"):
            return False
        w = weights[path + ".weight"]
        return {"group_size": GGUF_GROUP, "bits": w.shape[-1] * 32 // (s.shape[-1] * GGUF_GROUP)}

    nn.quantize(model, class_predicate=predicate)


def load_gguf(path: str, dtype: mx.Dtype, keep_quantized: bool) -> tuple[nn.Module, dict, bool]:
    from mlx_lm.models.llama import Model, ModelArgs

    raw, meta = mx.load(path, return_metadata=True)
    cfg = _gguf_config(meta, has_output="output.weight" in raw)
    tokens = meta.get("tokenizer.ggml.tokens")
    cfg["vocab_size"] = int(_scalar(meta.get("llama.vocab_size")) or raw["token_embd.weight"].shape[0]) \
        if tokens is None else len(tokens)
    weights = _gguf_weights(raw, cfg)
    model = Model(ModelArgs.from_dict(cfg))
    quantized = keep_quantized and any(k.endswith(".scales") for k in weights)
    if quantized:
        _quantize_like(model, weights)
        weights = {k: (v.astype(dtype) if k.endswith("norm.weight") else v) for k, v in weights.items()}
    else:
        weights = _dequantize_flat(weights, dtype)
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    return model, cfg, quantized


def _folder_tokenizer(folder: Path):
    # PreTrainedTokenizerFast, not AutoTokenizer: the latter imports torch when it is installed.
    from transformers import PreTrainedTokenizerFast

    if not (folder / "tokenizer.json").is_file():
        raise UserError(f"model folder {folder} has no tokenizer.json (a fast tokenizer is required)")
    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    if getattr(tok, "chat_template", None) is None and (folder / "chat_template.jinja").is_file():
        tok.chat_template = (folder / "chat_template.jinja").read_text()
    return tok


def _cast(model: nn.Module, dtype: mx.Dtype, keep_quantized: bool) -> bool:
    from mlx_lm.utils import dequantize_model

    quantized = any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())
    if quantized and not keep_quantized:
        model = dequantize_model(model)
        quantized = False
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return quantized


def load_base(source: ModelSource, dtype: mx.Dtype, keep_quantized: bool) -> Loaded:
    if source.kind == "gguf":
        model, cfg, quantized = load_gguf(source.path, dtype, keep_quantized)
        return Loaded(model, gguf_tokenizer(source.path), cfg, source.path, quantized)
    if source.kind == "folder":
        from mlx_lm.utils import load_model

        folder = Path(source.path)
        try:
            # mlx-lm reads RoPE settings at the top level only: without reader_keys it builds a
            # transformers 5 folder's model with rope_theta 10000, whatever the folder says.
            model, cfg = load_model(folder, model_config=reader_keys(read_config(folder)))
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise UserError(f"cannot load model {source.spec} with mlx-lm: {str(e).splitlines()[0]}") from None
        tok = _folder_tokenizer(folder)
        quantized = _cast(model, dtype, keep_quantized)
        return Loaded(model, tok, cfg, str(folder), quantized)
    # A hub id (mlx-community/... or any HF repo mlx-lm can convert on the fly): needs the network once.
    import mlx_lm
    from huggingface_hub import hf_hub_download

    try:
        keys = reader_keys(read_config(Path(hf_hub_download(source.path, "config.json")).parent))
        model, wrapper, cfg = mlx_lm.load(source.path, model_config=keys, return_config=True)
    except Exception as e:  # hub errors come in many types; all mean the same to the user
        raise UserError(f"cannot load {source.spec} from the Hugging Face hub: {str(e).splitlines()[0]}") from None
    quantized = _cast(model, dtype, keep_quantized)
    return Loaded(model, getattr(wrapper, "_tokenizer", wrapper), cfg, source.path, quantized)


# -- LoRA ---------------------------------------------------------------------------------------

def lora_keys(model: nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Paths inside one transformer block (e.g. 'self_attn.q_proj') whose last part is a target."""
    layers = getattr(model, "layers", None)
    if not layers:
        raise UserError("cannot put LoRA on this model: mlx-lm exposes no transformer layers")
    keys = sorted(
        name for name, m in layers[0].named_modules()
        if name and (name in targets or name.rsplit(".", 1)[-1] in targets)
        and isinstance(m, (nn.Linear, nn.QuantizedLinear))
    )
    if not keys:
        raise UserError(f"cannot put LoRA on this model: no linear layer named {list(targets)}")
    return keys


def lora_parameters(lora: LoraConfig, keys: list[str]) -> dict:
    # PEFT scales the update by alpha / rank; mlx-lm calls that factor `scale`.
    return {"rank": lora.rank, "scale": lora.alpha / lora.rank, "dropout": lora.dropout, "keys": keys}


def add_lora(model: nn.Module, lora: LoraConfig, seed: int) -> dict:
    from mlx_lm.tuner.utils import linear_to_lora_layers

    keys = lora_keys(model, tuple(lora.targets))
    params = lora_parameters(lora, keys)
    model.freeze()
    mx.random.seed(seed)
    linear_to_lora_layers(model, len(model.layers), params)
    mx.eval(model.trainable_parameters())
    return {"fine_tune_type": "lora", "num_layers": len(model.layers), "lora_parameters": params}


def lora_state(model: nn.Module) -> dict[str, mx.array]:
    return dict(tree_flatten(model.trainable_parameters()))


def _lora_modules(model: nn.Module) -> list[nn.Module]:
    from mlx_lm.tuner.lora import LoRALinear

    return [m for _, m in model.named_modules() if isinstance(m, LoRALinear)]


@contextmanager
def adapter_disabled(model: nn.Module) -> Iterator[None]:
    """The base model without a second copy: the LoRA update is scaled by 0 (y + 0 * BAx == y)."""
    mods = _lora_modules(model)
    old = [m.scale for m in mods]
    for m in mods:
        m.scale = 0.0
    try:
        yield
    finally:
        for m, s in zip(mods, old):
            m.scale = s


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None


def wire_memory(device: str) -> int | None:
    """On Metal, raise the wired memory limit to the GPU's recommended working set, as mlx-lm's
    generator, server and tuner do, so that macOS keeps the weights resident instead of paging them
    out; the previous limit. None (nothing done) on CPU, which has no such limit."""
    if device != "gpu":
        return None
    from mlx_lm.utils import maybe_set_recommended_wired_limit

    return maybe_set_recommended_wired_limit()
