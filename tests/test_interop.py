"""What leaves scoreflow, read back by each tool's own reader: the model folder it writes (transformers'
AutoConfig), an exported adapter that names its base by hub id (PEFT on a fresh hub cache), both
model cards (huggingface_hub's ModelCard.load), and its output through a pipe the reader closes early.
mlx-lm's side is in test_interop_mlx.py (its own pytest process: -m mlx)."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from scoreflow.model.backend import LoraConfig
from scoreflow.model.source import (
    EMBEDDED_HUB_ID, ModelSource, add_reader_keys, hub_id, license_metadata, reader_keys,
)

ROOT = Path(__file__).resolve().parents[1]
LORA = LoraConfig(rank=8, alpha=16.0, dropout=0.0)
PROMPT = "Write a workflow that adds 17 and 25, then checks the sum with code."
needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="the cuda extra is not installed")


# -- config.json keys ----------------------------------------------------------------------------

def test_reader_keys_mirror_rope_parameters():
    flat = {"rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}, "dtype": "float32"}
    assert reader_keys(flat) == {"rope_theta": 100000.0, "torch_dtype": "float32"}
    scaled = {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                  "partial_rotary_factor": 0.5}}
    assert reader_keys(scaled) == {"rope_theta": 500000.0, "partial_rotary_factor": 0.5,
                                   "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    # transformers 5 takes rope_parameters over a stale top-level value; the readers must too
    assert reader_keys({"rope_theta": 10000.0, "rope_parameters": {"rope_theta": 1e6}}) == {"rope_theta": 1e6}
    assert reader_keys({**flat, "rope_theta": 100000.0, "torch_dtype": "float32"}) == {}
    nested = {"rope_parameters": {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}}
    assert reader_keys(nested) == {}


def test_converted_folder_and_an_old_cache_carry_the_reader_keys(smollm2_gguf, smollm2_hf, tmp_path, monkeypatch):
    """The folder convert_gguf writes holds rope_theta at the top level, as transformers reads it; a
    cache folder written without it (before this fix) is repaired on its next use."""
    from transformers import AutoConfig

    from scoreflow.backends.cuda.model import convert_gguf, gguf_cache_folder

    cfg = json.loads((smollm2_hf / "config.json").read_text())
    assert cfg["rope_theta"] == cfg["rope_parameters"]["rope_theta"] == 100000.0
    assert AutoConfig.from_pretrained(str(smollm2_hf)).rope_parameters["rope_theta"] == 100000.0

    monkeypatch.setenv("SCOREFLOW_CACHE", str(tmp_path))
    old = gguf_cache_folder(str(smollm2_gguf))
    old.mkdir(parents=True)
    stale = {k: v for k, v in cfg.items() if k not in ("rope_theta", "torch_dtype")}
    (old / "config.json").write_text(json.dumps(stale))
    assert convert_gguf(str(smollm2_gguf)) == old
    repaired = json.loads((old / "config.json").read_text())
    assert repaired == cfg and not add_reader_keys(old)


# -- hub ids and licenses ---------------------------------------------------------------------------

def test_hub_id_and_license_of_each_kind_of_source(tmp_path, smollm2_gguf, monkeypatch):
    import gguf

    assert hub_id(ModelSource("smollm2", "gguf", str(smollm2_gguf), "smollm2-135m")) == EMBEDDED_HUB_ID
    assert hub_id(ModelSource("org/m", "hub", "org/m", "m")) == "org/m"
    snapshot = tmp_path / "hub" / "models--Org--Some-Model.v2" / "snapshots" / "abc123"
    assert hub_id(ModelSource(str(snapshot), "folder", str(snapshot), "abc123")) == "Org/Some-Model.v2"
    plain = tmp_path / "my-model"
    assert hub_id(ModelSource(str(plain), "folder", str(plain), "my-model")) is None
    # a GGUF other than the embedded one: its general.license
    other = tmp_path / "other.gguf"
    writer = gguf.GGUFWriter(str(other), "llama")
    writer.add_license("mit")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert license_metadata(ModelSource(str(other), "gguf", str(other), "other")) == {"license": "mit"}
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert license_metadata(ModelSource(str(plain), "folder", str(plain), "my-model")) == {}
    (plain / "README.md").write_text("---\nlicense: other\nlicense_name: house-licence\nlanguage: en\n---\n# M\n")
    assert license_metadata(ModelSource(str(plain), "folder", str(plain), "my-model")) == {
        "license": "other", "license_name": "house-licence"}
    # a hub id: the hub cache's copy of its README.md, offline
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--Org--M"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "README.md").write_text("---\nlicense: llama3.2\n---\n")
    assert license_metadata(ModelSource("Org/M", "hub", "Org/M", "M")) == {"license": "llama3.2"}
    assert license_metadata(ModelSource("Org/Absent", "hub", "Org/Absent", "Absent")) == {}


# -- an exported adapter outside scoreflow ----------------------------------------------------------

def random_peft(folder: Path, n_layers: int, hidden: int, kv: int, scale: float = 0.02) -> Path:
    """A PEFT LoRA on q_proj and v_proj with non-zero A and B (a fresh LoRA's B is zero: no effect)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    t = {}
    for i in range(n_layers):
        for mod, out in (("q_proj", hidden), ("v_proj", kv)):
            p = f"base_model.model.model.layers.{i}.self_attn.{mod}"
            t[f"{p}.lora_A.weight"] = (rng.normal(size=(LORA.rank, hidden)) * scale).astype(np.float32)
            t[f"{p}.lora_B.weight"] = (rng.normal(size=(out, LORA.rank)) * scale).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(t, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": LORA.rank, "lora_alpha": LORA.alpha,
        "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}))
    return folder


def make_run(root: Path, adapter_of: Callable[[Path], object]) -> Path:
    """A run of the embedded model whose iteration 1 is the adapter `adapter_of(folder)` saves."""
    from scoreflow import config as C

    run = root / "run"
    (run / "adapters").mkdir(parents=True)
    (run / "config.toml").write_text(C.to_toml(C.build({"generator": {"model": "smollm2"},
                                                          "run": {"task": "arith", "iterations": 1}})))
    (run / "metrics.jsonl").write_text(json.dumps({
        "kind": "iteration", "iteration": 1, "problems": 2, "workflows": 8, "valid": 4, "valid_rate": 0.5,
        "first_attempt_valid_rate": 0.5, "mean_score": 0.25, "solve_rate": 0.25, "pairs": 2, "steps": 2,
        "loss": 0.69}) + "\n")
    adapter_of(run / "adapters" / "iter-1")
    return run


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory, smollm2_hf):
    """The PyTorch backend on the embedded model with a non-zero LoRA, its adapter saved in a run."""
    pytest.importorskip("peft")
    from scoreflow.backends.cuda import load

    root = tmp_path_factory.mktemp("torch-run")
    b = load("smollm2", device="cpu", lora=LORA, seed=0)
    b.load_adapter(random_peft(root / "random", 30, 576, 192))
    return b, make_run(root, b.save_adapter)


@needs_peft
def test_adapter_names_the_hub_id_and_records_the_local_base(torch_run, smollm2_hf):
    b, run = torch_run
    saved = run / "adapters" / "iter-1"
    assert json.loads((saved / "adapter_config.json").read_text())["base_model_name_or_path"] == EMBEDDED_HUB_ID
    assert json.loads((saved / "scoreflow.json").read_text()) == {"base_model": EMBEDDED_HUB_ID,
                                                                  "base_path": str(smollm2_hf)}


@needs_peft
def test_peft_loads_the_export_on_a_fresh_hub_cache(torch_run, smollm2_hf, tmp_path):
    """PEFT, offline with an empty hub cache, given the base as a local folder standing in for the hub,
    loads the exported adapter (which names only the hub id) and computes scoreflow's logits."""
    import torch

    from scoreflow.report.export import export_run

    b, run = torch_run
    folder = export_run(run, "peft", out=tmp_path / "peft")
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == EMBEDDED_HUB_ID
    ids = b.tokenizer(PROMPT)["input_ids"]
    with torch.no_grad():
        want = b.model(torch.tensor([ids])).logits[0].float().numpy()
        with b.model.disable_adapter():
            base = b.model(torch.tensor([ids])).logits[0].float().numpy()
    code = textwrap.dedent(f"""
        import numpy as np, torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained({str(smollm2_hf)!r}, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, {str(folder)!r}).eval()
        with torch.no_grad():
            np.save({str(tmp_path / "peft.npy")!r}, model(torch.tensor([{ids!r}])).logits[0].float().numpy())
    """)
    hub = tmp_path / "empty-hub-cache"
    env = {**os.environ, "HF_HOME": str(hub), "HF_HUB_CACHE": str(hub / "hub"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Unexpected keyword" not in r.stderr  # PEFT reads every key of the adapter's config
    got = np.load(tmp_path / "peft.npy")
    assert np.abs(base - want).max() > 0.1  # the adapter matters
    assert np.abs(got - want).max() < 1e-4


def test_model_cards_load_in_huggingface_hub(tmp_path):
    """Both exports' cards parse with ModelCard.load and state base model, library and license."""
    from huggingface_hub import ModelCard

    from scoreflow.report.export import export_run

    run = make_run(tmp_path, lambda f: random_peft(f, 30, 576, 192))
    for fmt, library in (("peft", "peft"), ("mlx", "mlx")):
        card = ModelCard.load(export_run(run, fmt) / "README.md")
        assert card.data.base_model == EMBEDDED_HUB_ID and card.data.library_name == library
        assert card.data.license == "apache-2.0"
        assert "hf upload USER/REPO PATH/TO/THIS/FOLDER" in card.text


def test_model_card_license_of_a_local_model(tmp_path, tiny_llama):
    from huggingface_hub import ModelCard

    from scoreflow import config as C
    from scoreflow.report.export import export_run

    model = tmp_path / "licensed"
    shutil.copytree(tiny_llama, model)
    (model / "README.md").write_text("---\nlicense: other\nlicense_name: house licence\n"
                                     "license_link: https://example.org/licence\n---\n")
    run = make_run(tmp_path, lambda f: random_peft(f, 2, 64, 32))
    (run / "config.toml").write_text(C.to_toml(C.build({"generator": {"model": str(model)},
                                                          "run": {"task": "arith", "iterations": 1}})))
    data = ModelCard.load(export_run(run, "peft") / "README.md").data
    assert (data.license, data.license_name, data.license_link) == (
        "other", "house licence", "https://example.org/licence")
    assert data.base_model is None
    (model / "README.md").unlink()
    assert "license" not in ModelCard.load(export_run(run, "peft") / "README.md").data.to_dict()


# -- pipes ------------------------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="needs Linux pipes of a settable size")
@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_piped_output_closes_quietly(tmp_path, unbuffered):
    """`scoreflow config | head -1`: the reader closes after one line while scoreflow still has output
    to write; scoreflow exits 0, says nothing, and saves no error log."""
    read, write = os.pipe()
    # One page: `config` (~7 kB) cannot fit, so scoreflow is still writing when the reader closes.
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update(TMPDIR=str(tmp_path), PYTHONUNBUFFERED=unbuffered)
    proc = subprocess.Popen([sys.executable, "-m", "scoreflow", "config"], stdout=write, stderr=subprocess.PIPE,
                            env=env, cwd=ROOT)
    os.close(write)
    line = b""
    while not line.endswith(b"\n"):  # byte by byte: the page stays full until the pipe closes
        line += os.read(read, 1)
    os.close(read)
    _, err = proc.communicate(timeout=120)
    assert line.strip()  # the first line arrived
    assert proc.returncode == 0, err.decode()[-2000:]
    assert err == b""
    assert not list(tmp_path.glob("scoreflow-error-*.log"))


@pytest.mark.parametrize("args", [["--help"], ["runs", "tests"], ["config"]], ids=" ".join)
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, args):
    """The reader is gone before the first write (argparse's help, rich's table, plain print)."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "scoreflow", *args], stdout=write, stderr=subprocess.PIPE, env=env,
                       cwd=ROOT, timeout=120)
    os.close(write)
    assert (r.returncode, r.stderr) == (0, b"")
    assert not list(tmp_path.glob("scoreflow-error-*.log"))
