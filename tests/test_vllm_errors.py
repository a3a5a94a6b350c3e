"""The vLLM engine's command line and its failures, without vLLM: a server that cannot start, a
Python without vLLM, an unreachable server, the wrong backend. (tests/test_vllm.py runs the real one.)"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from scoreflow.model.backend import SamplingParams
from scoreflow.config import build
from scoreflow.errors import UserError
from scoreflow.run.reporter import Reporter

vllm_server = pytest.importorskip("scoreflow.backends.cuda.vllm_server")


def test_server_command_defaults_and_overrides():
    cmd = vllm_server.server_command("py", "/m", 8000, lora_rank=4, dtype="bfloat16", cuda=True, seed=3)
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    flags = {a: cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a.startswith("--")}
    assert flags["--max-lora-rank"] == "8"  # vLLM's smallest allowed rank >= 4
    assert flags["--gpu-memory-utilization"] == "0.4" and flags["--host"] == "127.0.0.1"
    assert "--enable-lora" in cmd and "--enforce-eager" not in cmd
    mine = vllm_server.server_command("py", "/m", 8000, lora_rank=16, dtype="float32", cuda=True, seed=0,
                                      extra="--gpu-memory-utilization 0.7 --max-model-len=4096")
    assert mine.count("--gpu-memory-utilization") == 1 and mine[-3:] == ["--gpu-memory-utilization", "0.7",
                                                                           "--max-model-len=4096"]
    assert not any(a == "--max-model-len" for a in mine)
    cpu = vllm_server.server_command("py", "/m", 8000, lora_rank=8, dtype="float32", cuda=False, seed=0)
    assert "--enforce-eager" in cpu and "--gpu-memory-utilization" not in cpu
    with pytest.raises(UserError, match="ranks up to 512"):
        vllm_server.server_command("py", "/m", 8000, lora_rank=1024, dtype="float32", cuda=False, seed=0)


def test_a_server_that_dies_while_starting_reports_its_log(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'ValueError: no CUDA devices and no CPU build' >&2\nexit 3\n")
    fake.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"exited with status 3(.|\n)*no CUDA devices"):
        vllm_server.VllmServer([str(fake)], 9, tmp_path / "vllm.log")
    assert time.monotonic() - started < 10


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(UserError, match="did not answer within 2 s"):
        vllm_server.VllmServer(sleeper, vllm_server._free_port(), tmp_path / "vllm.log",
                                        start_timeout_s=2)
    log = (tmp_path / "vllm.log").read_text()
    assert log.startswith("$ ")  # the command, for the user to rerun by hand


def test_unreachable_server_is_a_clear_error():
    client = vllm_server.VllmClient(f"http://127.0.0.1:{vllm_server._free_port()}/v1", timeout_s=5)
    with pytest.raises(UserError, match="cannot be reached"):
        client.complete("base", [1, 2, 3], SamplingParams(max_new_tokens=4), None)
    client.close()


def test_missing_vllm_and_wrong_backend(tmp_path):
    backend = SimpleNamespace(base_path="/m", name="cuda")
    with pytest.raises(UserError, match="vLLM is not installed for /nonexistent/python"):
        vllm_server.start(backend, python="/nonexistent/python", workdir=tmp_path)
    from scoreflow.run.session import with_engine

    cfg = build({"generator": {"engine": "vllm"}})
    mlx = SimpleNamespace(name="mlx", device="cpu")
    with pytest.raises(UserError, match="needs the PyTorch backend"):
        with_engine(cfg, mlx, tmp_path, Reporter())
    auto = build({})
    cpu = SimpleNamespace(name="cuda", device="cpu")
    assert with_engine(auto, cpu, tmp_path, Reporter()) is cpu  # auto: vLLM on a GPU, or when asked for
    assert not Path(tmp_path / "vllm.log").exists()
    asked = build({"generator": {"vllm_python": "/nonexistent/python"}})
    with pytest.raises(UserError, match="vLLM is not installed for /nonexistent/python"):
        with_engine(asked, SimpleNamespace(name="cuda", device="cpu", base_path="/m"), tmp_path, Reporter())


def test_context_length_follows_the_model(tmp_path):
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 4096}')
    cmd = vllm_server.server_command("py", str(tmp_path), 8000, lora_rank=8, dtype="float32", cuda=False, seed=0)
    assert cmd[cmd.index("--max-model-len") + 1] == "4096"
    hub = vllm_server.server_command("py", "org/model", 8000, lora_rank=8, dtype="float32", cuda=False, seed=0)
    assert hub[hub.index("--max-model-len") + 1] == "8192"


def test_the_cause_leads_the_log_tail(tmp_path):
    log = tmp_path / "vllm.log"
    log.write_text("start\nValueError: max_model_len too large\n" + "".join(f"  frame {i}\n" for i in range(40)))
    tail = vllm_server._tail(log)
    assert tail.splitlines()[0] == "ValueError: max_model_len too large" and "frame 39" in tail


def test_a_failure_while_generating_shows_our_servers_log(tmp_path):
    """An engine that dies mid-run answers 500 or not at all; the error then carries the log's cause."""
    log = tmp_path / "vllm.log"
    log.write_text("RuntimeError: Unsupported CPU attention configuration: head_dim=16\n  traceback\n")
    client = vllm_server.VllmClient(f"http://127.0.0.1:{vllm_server._free_port()}", timeout_s=5)
    gen = vllm_server.VllmSampler(client, model_name="m", prompt_ids=lambda m: [1, 2, 3],
                                  adapter=lambda workdir: None, workdir=tmp_path / "adapters",
                                  server=SimpleNamespace(log=log, stop=lambda: None, url=client.url))
    with pytest.raises(UserError, match=r"cannot be reached(.|\n)*head_dim=16"):
        gen.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4), adapter=False)
    gen.close()


def test_the_sampler_follows_the_policys_adapter(tmp_path):
    """The vLLM Sampler asks the Policy for a saved folder of its current adapter before each call:
    none for a fresh LoRA (the base model is named), one copy saved after training (not one per call),
    the loop's own folder once it saved or loaded one."""
    from scoreflow.model.backend import AdapterSnapshots

    class Policy(AdapterSnapshots):
        def save_adapter(self, path: Path) -> None:
            path.mkdir(parents=True)
            (path / "adapter_model.safetensors").write_text("weights")
            self._adapter_is(path)

        def load_adapter(self, path: Path | None) -> None:
            self._adapter_is(path)

        def train(self) -> None:
            self._adapter_trained()

    class Client:
        url = "http://127.0.0.1:9"

        def __init__(self) -> None:
            self.loaded: list[Path] = []
            self.models: list[str] = []

        def load_adapter(self, name: str, path: Path) -> None:
            self.loaded.append(path)

        def unload_adapter(self, name: str) -> None:
            pass

        def complete_all(self, model: str, ids: list, params: SamplingParams) -> list:
            self.models.append(model)
            return []

    policy, client = Policy(), Client()
    sampler = vllm_server.VllmSampler(client, model_name="m", prompt_ids=lambda m: [1], adapter=policy.saved_adapter,
                                      workdir=tmp_path / "copies")
    prompt = [[{"role": "user", "content": "hi"}]]
    sampler.generate(prompt, SamplingParams())
    assert client.models == [vllm_server.BASE_NAME] and client.loaded == []
    policy.train()
    sampler.generate(prompt, SamplingParams())
    sampler.generate(prompt, SamplingParams())
    assert client.loaded == [tmp_path / "copies" / "adapter-1"] and sorted(p.name for p in (tmp_path / "copies").iterdir()) == ["adapter-1"]
    policy.save_adapter(tmp_path / "iter-1")
    sampler.generate(prompt, SamplingParams())
    assert client.loaded[-1] == tmp_path / "iter-1" and client.models[-1] != vllm_server.BASE_NAME
    sampler.generate(prompt, SamplingParams(), adapter=False)
    policy.load_adapter(None)
    sampler.generate(prompt, SamplingParams())
    assert client.models[-2:] == [vllm_server.BASE_NAME] * 2 and len(client.loaded) == 2
