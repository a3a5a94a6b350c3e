"""Loading a base model for the PyTorch backend: GGUF (converted once to a cached fp32 folder),
HF-format folders and hub ids; LoRA via PEFT."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch

from scoreflow.errors import UserError
from scoreflow.model.source import ModelSource, add_reader_keys, cache_dir, gguf_tokenizer


def pick_device(device: str) -> torch.device:
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: PyTorch sees no CUDA GPU here (use --device cpu)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype in ("auto", "", None):
        # fp32 is the fast path on CPU (bf16 is several times slower there).
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise UserError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return table[dtype]


def gguf_cache_folder(gguf_path: str) -> Path:
    st = os.stat(gguf_path)
    key = hashlib.sha256(f"{os.path.realpath(gguf_path)}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{Path(gguf_path).stem}-{key}-hf"


def convert_gguf(gguf_path: str) -> Path:
    """Dequantize a GGUF once into an fp32 HF folder (model + tokenizer) whose config.json every reader
    understands (`add_reader_keys`); later loads take ~0.5 s."""
    from transformers import AutoModelForCausalLM

    folder = gguf_cache_folder(gguf_path)
    if (folder / "config.json").is_file():
        add_reader_keys(folder)  # a folder written before the keys were added
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    p = Path(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(tmp)
    gguf_tokenizer(gguf_path).save_pretrained(tmp)
    add_reader_keys(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_base(source: ModelSource, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = convert_gguf(source.path) if source.kind == "gguf" else source.path
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except OSError as e:
        raise UserError(f"cannot load model {source.spec}: {str(e).splitlines()[0]}") from None
    model.to(device)
    model.eval()
    model.config.use_cache = True
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, str(path)
