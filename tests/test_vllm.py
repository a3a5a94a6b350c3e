"""Generation on a real vLLM server (vLLM's CPU build) with the real SmolLM2 and our PEFT adapters.

The server runs under the Python named by SCOREFLOW_TEST_VLLM_PYTHON, or `.venv-vllm/bin/python`
in the repository (the README's test command makes it on Linux x86_64). Without either, these
tests skip; with SCOREFLOW_TEST_VLLM_PYTHON set, a server that does not start fails them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from runs import ROOT, env, records

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

torch = pytest.importorskip("torch")

from scoreflow.model.backend import LoraConfig, SamplingParams, TrainConfig, TrainPair  # noqa: E402

PROMPTS = [
    [{"role": "user", "content": "Write a haiku about rivers."}],
    [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "Add two numbers."}],
]


def vllm_python() -> str | None:
    given = os.environ.get("SCOREFLOW_TEST_VLLM_PYTHON")
    if given:
        return given
    local = ROOT / ".venv-vllm" / "bin" / "python"
    return str(local) if local.exists() else None


@pytest.fixture(scope="module")
def backend(smollm2_hf):
    from scoreflow.backends.cuda import TorchBackend

    return TorchBackend(str(smollm2_hf), device="cpu", lora=LoraConfig(), seed=0)


@pytest.fixture(scope="module")
def engine(backend, tmp_path_factory):
    from scoreflow.backends.cuda import vllm_server

    python = vllm_python()
    if python is None:
        pytest.skip("no vLLM: set SCOREFLOW_TEST_VLLM_PYTHON or make .venv-vllm (see the README's test command)")
    gen = vllm_server.start(backend, python=python, workdir=tmp_path_factory.mktemp("vllm"), seed=0)
    yield gen
    gen.close()
    assert gen.server.proc.poll() is not None  # stopped with the session


def perturb(backend, seed: int) -> None:
    """Non-zero LoRA B matrices, so that the adapter changes what the model writes."""
    g = torch.Generator().manual_seed(seed)
    for n, p in backend.model.named_parameters():
        if "lora_B" in n:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)


def served(engine) -> dict[str, str]:
    """Model name -> what it was loaded from, as the server lists them."""
    with urllib.request.urlopen(engine.client.url + "/v1/models") as r:
        return {m["id"]: m.get("root") for m in json.loads(r.read())["data"]}


def texts(outs) -> list[tuple[str, bool]]:
    return [(o.text, o.finished) for o in outs]


@pytest.mark.parametrize("stop", [(), ("\n",)])
def test_our_peft_adapter_on_vllm_writes_what_pytorch_writes(engine, backend, tmp_path, stop):
    """Greedy decoding with and without the adapter: vLLM (adapter loaded unchanged from our PEFT
    folder, served per request) gives the PyTorch backend's exact text, stop strings included."""
    params = SamplingParams(temperature=0.0, max_new_tokens=40, stop=stop)
    perturb(backend, 1)
    backend.save_adapter(tmp_path / "adapter")
    ours_on, ours_off = backend.generate(PROMPTS, params), backend.generate(PROMPTS, params, adapter=False)
    theirs_on, theirs_off = engine.generate(PROMPTS, params), engine.generate(PROMPTS, params, adapter=False)
    assert texts(theirs_on) == texts(ours_on)
    assert texts(theirs_off) == texts(ours_off)
    assert texts(ours_on) != texts(ours_off)  # the adapter matters, so the check above means something
    if stop:
        assert all(o.text.endswith("\n") and o.finished for o in theirs_on if "\n" in o.text)
    assert str((tmp_path / "adapter").resolve()) in served(engine).values()


def test_generation_follows_training_and_loading(engine, backend, tmp_path):
    """After train() the next generate() serves the trained weights (saved for the server on the
    way); load_adapter(None) goes back to the base model."""
    params = SamplingParams(temperature=0.0, max_new_tokens=24, stop=())
    backend.load_adapter(None)
    base = texts(engine.generate(PROMPTS[:1], params, adapter=False))
    assert texts(engine.generate(PROMPTS[:1], params)) == base  # a fresh LoRA is the base model
    pair = TrainPair(PROMPTS[0], "Rivers run to the sea, always.", "No.", 1.0, 0.0)
    backend.train([pair] * 3, TrainConfig(learning_rate=5e-2, beta=1.0, checkpoint_every=0))
    after = engine.generate(PROMPTS[:1], params)
    assert texts(after) == texts(backend.generate(PROMPTS[:1], params))
    assert texts(after) != base
    saved = sorted(p.name for p in (engine.workdir).iterdir())
    assert saved == ["adapter-1"]  # one copy for the server, not one per call
    engine.generate(PROMPTS[:1], params)
    assert sorted(p.name for p in engine.workdir.iterdir()) == saved


def test_sampling_seeds_differ_per_row_and_repeat(engine):
    """k samples of one prompt in one call are k different draws; the same seed repeats them."""
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16, stop=(), seed=5)
    first = engine.generate(PROMPTS[:1] * 4, params, adapter=False)
    again = engine.generate(PROMPTS[:1] * 4, params, adapter=False)
    assert len({o.text for o in first}) > 1
    assert texts(first) == texts(again)
    assert all(o.tokens == 16 and not o.finished for o in first if not o.finished)


def test_optimize_with_the_vllm_engine(engine, tmp_path, qa_task):
    """The real loop through the CLI, generating on the running server (generator.vllm_url): two
    iterations, the second served iteration 1's adapter."""
    run = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "scoreflow", "optimize", *qa_task, "--backend", "cuda", "--run-dir", str(run),
         "--iterations", "2", "--problems", "1", "-k", "3", "--pairs", "2", "--no-dashboard",
         "--set", "generator.max_new_tokens=120", "--set", "executor.max_tokens=24",
         "--set", "generator.max_attempts=1", "--set", "generator.engine=vllm", "--set", "run.compare=false",
         "--set", f"generator.vllm_url={engine.client.url}/v1"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "generation on http://127.0.0.1" in out.stdout + out.stderr
    assert len(records(run, "workflows")) >= 6
    assert (run / "adapters" / "iter-1" / "adapter_model.safetensors").is_file()
    assert str((run / "adapters" / "iter-1").resolve()) in served(engine).values()


def test_generation_benchmark_quick_with_vllm(engine, smollm2_hf):
    """benchmarks/generation.py --engine vllm in quick mode prints the vLLM side's ratios, measured on
    this module's server (--vllm-url; its start from .venv-vllm is the `engine` fixture's). (SmolLM2:
    vLLM's CPU kernels fail on the tiny random model's 16-wide attention heads.)"""
    from helpers import run_benchmark

    out = run_benchmark("generation.py", "--model", str(smollm2_hf), "--device", "cpu", "--engine", "vllm",
                        "--vllm-url", f"{engine.client.url}/v1", "--cases", "samples", "distinct", timeout=900)
    assert "error" not in out["vllm"], out["vllm"]
    for case in ("samples", "distinct"):
        side = out["vllm"][case]
        assert side["workflows_per_s"] > 0 and side["tokens"] > 0 and side["ratio_vs_torch_batched"] > 0
    assert out["vllm"]["url"] == f"{engine.client.url}/v1" and out["vllm"]["startup_s"] is None
