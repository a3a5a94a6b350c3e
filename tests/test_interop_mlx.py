"""The same model in every framework: transformers, the MLX backend and mlx-lm's own loader give the
same logits on the folder scoreflow writes, with and without an exported adapter (PEFT, mlx-lm's
adapter_path); and on a folder whose config.json holds its RoPE settings in `rope_parameters` only
(as transformers 5 writes it), the MLX backend still builds transformers' model."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("mlx_lm") is None:  # not importorskip: mlx.core must come after OpenBLAS
    pytest.skip("mlx-lm is not installed", allow_module_level=True)

import scoreflow.backends.mlx  # noqa: E402,F401  (preloads OpenBLAS before mlx.core)

import mlx.core as mx  # noqa: E402

from scoreflow.backends.mlx.model import load_base  # noqa: E402
from scoreflow.model.source import resolve_model  # noqa: E402
from helpers import random_peft, run_of_adapter  # noqa: E402
from scoreflow.model.backend import LoraConfig  # noqa: E402

pytestmark = pytest.mark.mlx
LORA = LoraConfig(rank=8, alpha=16.0, dropout=0.0)
PROMPT = "Write a workflow that adds 17 and 25, then checks the sum with code."
# fp32 on both sides: what differs is the order of float operations (~1e-4 on SmolLM2's logits).
TOLERANCE = 1e-3


def torch_logits(folder: Path, ids: list[int], adapter: Path | None = None) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    with torch.no_grad():
        return model.eval()(torch.tensor([ids])).logits[0].numpy()


def mlx_logits(model, ids: list[int]) -> np.ndarray:
    return np.array(model(mx.array([ids]))[0].astype(mx.float32))


def prompt_ids(folder: Path) -> list[int]:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    return tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                   tokenize=True, return_dict=True)["input_ids"]


# -- the embedded model, from the folder scoreflow writes ----------------------------------------------

@pytest.fixture(scope="module")
def embedded(smollm2_hf, tmp_path_factory) -> dict:
    """Logits of the embedded model's folder in each framework, base and with one exported adapter
    (a random non-zero LoRA, exported to PEFT and to mlx-lm by `scoreflow export`)."""
    pytest.importorskip("peft")
    from mlx_lm.utils import load, load_model

    from scoreflow.report.export import export_run

    root = tmp_path_factory.mktemp("interop-embedded")
    run = run_of_adapter(root, lambda f: random_peft(f, 30, 576, 192, scale=0.02, lora=LORA))
    peft, mlx_adapter = export_run(run, "peft"), export_run(run, "mlx")
    ids = prompt_ids(smollm2_hf)
    out = {"ids": ids, "transformers": torch_logits(smollm2_hf, ids),
           "peft": torch_logits(smollm2_hf, ids, peft),
           "backend": mlx_logits(load_base(resolve_model(str(smollm2_hf)), mx.float32, False).model, ids),
           "mlx_lm": mlx_logits(load(str(smollm2_hf))[0], ids),
           "mlx_lm_adapter": mlx_logits(load(str(smollm2_hf), adapter_path=str(mlx_adapter))[0], ids)}
    # What mlx-lm computed before the folder carried rope_theta: its default base, 10000.
    out["rope_10000"] = mlx_logits(load_model(smollm2_hf, model_config={"rope_theta": 10000.0})[0], ids)
    return out


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def test_embedded_model_same_logits_in_every_framework(embedded):
    want = embedded["transformers"]
    assert max_diff(embedded["rope_10000"], want) > 1.0  # the prompt is long enough to show a wrong RoPE
    assert max_diff(embedded["backend"], want) < TOLERANCE
    assert max_diff(embedded["mlx_lm"], want) < TOLERANCE


def test_embedded_model_with_exported_adapter_same_logits(embedded):
    want = embedded["peft"]
    assert max_diff(want, embedded["transformers"]) > 0.1  # the adapter matters
    assert max_diff(embedded["mlx_lm_adapter"], want) < TOLERANCE


# -- a folder with rope_parameters only ------------------------------------------------------------

ROPE = {
    "default": {"rope_type": "default", "rope_theta": 500000.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
}


@pytest.mark.parametrize("rope", sorted(ROPE))
def test_rope_parameters_only_folder(tiny_llama, tmp_path, rope):
    """A tiny random Llama whose config.json names RoPE in `rope_parameters` only: the MLX backend (and
    mlx-lm given scoreflow's keys) builds transformers' model; mlx-lm alone reads it otherwise."""
    from mlx_lm.utils import load_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_llama, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("rope_theta")
    cfg["rope_parameters"] = ROPE[rope]
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    ids = prompt_ids(folder)
    want = torch_logits(folder, ids)
    got = mlx_logits(load_base(resolve_model(str(folder)), mx.float32, False).model, ids)
    as_written = mlx_logits(load_model(folder)[0], ids)
    assert max_diff(got, want) < 1e-4
    assert max_diff(as_written, want) > 100 * max_diff(got, want)


def test_mlx_adapter_names_the_hub_id_of_a_hub_cache_folder(tiny_llama, tmp_path):
    """The MLX backend's adapter names the base by hub id (mlx-lm's `model` key) when the folder is a
    hub-cache snapshot, and records the folder itself in scoreflow.json."""
    from scoreflow.backends import mlx as B

    folder = tmp_path / "hub" / "models--Org--Tiny" / "snapshots" / "abc"
    shutil.copytree(tiny_llama, folder)
    b = B.load(str(folder), device="cpu", lora=LORA, seed=0)
    b.save_adapter(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["model"] == "Org/Tiny"
    assert json.loads((tmp_path / "adapter" / "scoreflow.json").read_text()) == {
        "base_model": "Org/Tiny", "base_path": str(folder)}
