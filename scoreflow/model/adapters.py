"""Converting LoRA adapters between PEFT (PyTorch backend) and mlx-lm (MLX backend) formats.

PEFT:   adapter_model.safetensors, keys `base_model.model.<path>.lora_A.weight` (rank, in) and
        `.lora_B.weight` (out, rank); adapter_config.json with r, lora_alpha, target_modules.
        The update is (alpha / r) * B @ A.
mlx-lm: adapters.safetensors, keys `<path>.lora_a` (in, rank) and `.lora_b` (rank, out);
        adapter_config.json with num_layers and lora_parameters {rank, scale, dropout, keys}.
        The update is scale * (x @ a) @ b, so a = A.T, b = B.T and scale = alpha / r.
Both:   the base model is named portably in the config (base_model_name_or_path / model: its hub id
        where known); scoreflow.json beside it records the local base it was trained on. That file,
        not a config key: PEFT warns about keys its LoraConfig lacks.
Pure numpy + safetensors: no torch, no mlx.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from scoreflow.errors import UserError
from scoreflow.files import atomic_dir

PEFT_WEIGHTS, MLX_WEIGHTS, CONFIG = "adapter_model.safetensors", "adapters.safetensors", "adapter_config.json"
BASE = "scoreflow.json"
FORMATS = ("peft", "mlx")
_PEFT_KEY = re.compile(r"^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$")
_MLX_KEY = re.compile(r"^(.+)\.lora_([ab])$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


def detect_format(folder: Path) -> str:
    folder = Path(folder)
    if (folder / PEFT_WEIGHTS).is_file():
        return "peft"
    if (folder / MLX_WEIGHTS).is_file():
        return "mlx"
    raise UserError(f"{folder} holds no adapter ({PEFT_WEIGHTS} or {MLX_WEIGHTS})")


def _read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {folder / CONFIG}: {e}") from None


def write_base(folder: Path, hub_id: str | None, path: str) -> None:
    """scoreflow.json: the base model's hub id (None if unknown) and the local file or folder the
    adapter was trained on, for offline use on this machine."""
    (Path(folder) / BASE).write_text(json.dumps({"base_model": hub_id, "base_path": path}, indent=2) + "\n")


def _write(out: Path, weights_name: str, tensors: dict[str, np.ndarray], config: dict, src: Path) -> Path:
    out = Path(out)
    with atomic_dir(out) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / weights_name),
                  metadata={"format": "pt" if weights_name == PEFT_WEIGHTS else "mlx"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
        if (src / BASE).is_file():
            shutil.copyfile(src / BASE, tmp / BASE)
    return out


def peft_to_mlx(src: Path, out: Path, *, num_layers: int | None = None) -> Path:
    """A PEFT LoRA adapter as an mlx-lm adapter (same update, transposed factors)."""
    src = Path(src)
    cfg = _read_config(src)
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise UserError(f"{src}: only LoRA adapters convert (peft_type {cfg.get('peft_type')})")
    if cfg.get("use_rslora") or cfg.get("use_dora"):
        raise UserError(f"{src}: rsLoRA/DoRA adapters do not convert to mlx-lm LoRA")
    rank = int(cfg["r"])
    alpha = float(cfg.get("lora_alpha", rank))
    tensors: dict[str, np.ndarray] = {}
    keys, layers = set(), set()
    for name, t in load_file(str(src / PEFT_WEIGHTS)).items():
        m = _PEFT_KEY.match(name)
        if not m:
            raise UserError(f"{src}: unexpected tensor {name} in a PEFT LoRA adapter")
        path, ab = m.groups()
        tensors[f"{path}.lora_{ab.lower()}"] = t.T
        lm = _LAYER.search(path)
        if lm:
            layers.add(int(lm.group(1)))
            keys.add(lm.group(2))
    if not tensors:
        raise UserError(f"{src}: the adapter holds no LoRA tensors")
    n = num_layers or cfg.get("num_layers") or (max(layers) + 1 if layers else 0)
    config = {
        "fine_tune_type": "lora",
        "num_layers": int(n),
        "lora_parameters": {"rank": rank, "scale": alpha / rank, "dropout": float(cfg.get("lora_dropout", 0.0)),
                            "keys": sorted(keys)},
    }
    if cfg.get("base_model_name_or_path"):
        config["model"] = cfg["base_model_name_or_path"]
    return _write(out, MLX_WEIGHTS, tensors, config, src)


def mlx_to_peft(src: Path, out: Path) -> Path:
    """An mlx-lm LoRA adapter as a PEFT adapter (PEFT's LoraConfig fields, task CAUSAL_LM)."""
    src = Path(src)
    cfg = _read_config(src)
    if cfg.get("fine_tune_type", "lora") != "lora":
        raise UserError(f"{src}: only LoRA adapters convert (fine_tune_type {cfg.get('fine_tune_type')})")
    lp = cfg.get("lora_parameters") or {}
    rank = int(lp["rank"])
    scale = float(lp.get("scale", 20.0))  # mlx-lm's own default when unset
    tensors: dict[str, np.ndarray] = {}
    targets = set()
    for name, t in load_file(str(src / MLX_WEIGHTS)).items():
        m = _MLX_KEY.match(name)
        if not m:
            raise UserError(f"{src}: unexpected tensor {name} in an mlx-lm LoRA adapter")
        path, ab = m.groups()
        tensors[f"base_model.model.{path}.lora_{ab.upper()}.weight"] = t.T
        targets.add(path.rsplit(".", 1)[-1])
    if not tensors:
        raise UserError(f"{src}: the adapter holds no LoRA tensors")
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": scale * rank,
        "lora_dropout": float(lp.get("dropout", 0.0)), "target_modules": sorted(targets), "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "inference_mode": True,
        "base_model_name_or_path": cfg.get("model"),
    }
    return _write(out, PEFT_WEIGHTS, tensors, config, src)


def convert(src: Path, to: str, out: Path) -> Path:
    """Convert the adapter in `src` to format `to` ("peft" | "mlx") in folder `out`; a copy when
    it already is in that format."""
    if to not in FORMATS:
        raise UserError(f"unknown adapter format {to!r}: use peft or mlx")
    src, out = Path(src), Path(out)
    have = detect_format(src)
    if have == to:
        name = PEFT_WEIGHTS if to == "peft" else MLX_WEIGHTS
        return _write(out, name, load_file(str(src / name)), _read_config(src), src)
    return peft_to_mlx(src, out) if to == "mlx" else mlx_to_peft(src, out)


# ---- model card ----------------------------------------------------------------------------------

