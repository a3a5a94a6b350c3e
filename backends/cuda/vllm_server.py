"""Generation on a vLLM server that serves the current LoRA adapter per request.

`VllmSampler` is a Sampler (scoreflow/model/backend.py): training, log-probs and adapters stay in the
PyTorch backend (the Policy); `generate` goes to a vLLM OpenAI-compatible server. Before each call it
asks the policy for a saved folder of its current adapter (Policy.saved_adapter: the one the loop
last saved or loaded, or a copy saved after training), registers it with the server by path
(`/v1/load_lora_adapter`) and names it in each request, so no merged model is ever written. With the
adapter off (the executor role, or iteration 1's fresh LoRA, whose B matrices are zero) requests
name the base model.

Prompts are sent as token ids from the policy's own chat format, so the server sees exactly the
tokens that training sees. The server is either started here (`python -m
vllm.entrypoints.openai.api_server` under `generator.vllm_python`, logging to `vllm.log` in the run
directory) or one the user already runs (`generator.vllm_url`), which must have been started with
`--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` and see the same filesystem.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

from scoreflow.model.backend import Completion, Messages, SamplingParams
from scoreflow.errors import UserError

BASE_NAME = "base"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for --max-lora-rank


def server_command(python: str, model: str, port: int, *, lora_rank: int, dtype: str, cuda: bool,
                   seed: int, extra: str = "") -> list[str]:
    """The command that starts a vLLM server for `model` (an HF folder) on 127.0.0.1:`port`."""
    rank = next((r for r in LORA_RANKS if r >= lora_rank), None)
    if rank is None:
        raise UserError(f"vLLM serves LoRA ranks up to {LORA_RANKS[-1]}; this run uses rank {lora_rank}")
    args = shlex.split(extra)
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
           "--served-model-name", BASE_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--enable-lora", "--max-lora-rank", str(rank), "--max-loras", "2",
           "--dtype", dtype, "--seed", str(seed)]
    given = {a.split("=")[0] for a in args if a.startswith("--")}
    # Our defaults, each unless the user's arguments set it: room on the GPU for training beside
    # the server, a context that fits that room, and on CPU eager mode (no torch.compile step at
    # start; the tests and benchmarks here ran that way).
    if cuda and "--gpu-memory-utilization" not in given:
        cmd += ["--gpu-memory-utilization", "0.4"]
    if "--max-model-len" not in given:
        cmd += ["--max-model-len", str(min(8192, _context_length(model)))]
    if not cuda and "--enforce-eager" not in given:
        cmd += ["--enforce-eager"]
    return cmd + args


def _context_length(model: str) -> int:
    try:
        cfg = json.loads((Path(model) / "config.json").read_text())
    except (OSError, ValueError):
        return 8192  # a hub id: vLLM reads its config itself
    return int(cfg.get("max_position_embeddings") or 8192)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    """The end of a log, led by its last line that names an error (vLLM's cause often sits above
    a long traceback)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [t for t in text if "Error:" in t or "Error " in t]
    lead = [errors[-1][:2000]] if errors and errors[-1] not in text[-lines:] else []
    return "\n".join(lead + text[-lines:])


class VllmServer:
    """A vLLM server process we own: started, waited for, stopped with its process group."""

    def __init__(self, cmd: list[str], port: int, log: Path, *, start_timeout_s: float = 900.0):
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True")
        # On CPU vLLM reserves 92% of RAM for its KV cache unless told a size in GiB.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        with open(log, "ab") as out:
            out.write(("$ " + shlex.join(cmd) + "\n").encode())
            out.flush()
            try:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)
            except OSError as e:
                raise UserError(f"cannot start the vLLM server ({cmd[0]}): {e}") from None
        atexit.register(self.stop)
        start = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise UserError(f"the vLLM server exited with status {self.proc.returncode} while starting; "
                                f"the end of {log}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() - start > start_timeout_s:
                self.stop()
                raise UserError(f"the vLLM server did not answer within {start_timeout_s:.0f} s; "
                                f"the end of {log}:\n{_tail(log)}")
            time.sleep(1.0)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


class VllmClient:
    """The three calls we make: register / drop an adapter, and one completion per prompt."""

    def __init__(self, url: str, *, timeout_s: float = 600.0, concurrency: int = 64):
        self.url = url.rstrip("/").removesuffix("/v1")
        self.timeout_s = timeout_s
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="vllm")

    def _post(self, path: str, body: dict[str, Any]) -> str:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return r.read().decode()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise UserError(f"vLLM server {self.url}{path}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"vLLM server {self.url} cannot be reached ({path}): {e}") from None

    def load_adapter(self, name: str, path: Path) -> None:
        try:
            self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(Path(path).resolve())})
        except UserError as e:
            if "already" not in str(e):  # another client sharing the server registered the same file
                raise

    def unload_adapter(self, name: str) -> None:
        try:
            self._post("/v1/unload_lora_adapter", {"lora_name": name})
        except UserError as e:
            if "HTTP 404" not in str(e) and "not" not in str(e):  # gone already: that is what we wanted
                raise

    def complete(self, model: str, prompt_ids: list[int], params: SamplingParams, seed: int | None) -> Completion:
        body: dict[str, Any] = {
            "model": model, "prompt": prompt_ids, "max_tokens": params.max_new_tokens,
            "temperature": params.temperature, "top_p": params.top_p if params.temperature > 0 else 1.0,
            "stop": list(params.stop), "include_stop_str_in_output": True, "skip_special_tokens": True,
        }
        if seed is not None:
            body["seed"] = seed
        reply = json.loads(self._post("/v1/completions", body))
        choice, usage = reply["choices"][0], reply["usage"]
        return Completion(text=choice["text"], tokens=int(usage["completion_tokens"]),
                          finished=choice.get("finish_reason") == "stop", prompt_tokens=int(usage.get("prompt_tokens") or 0))

    def complete_all(self, model: str, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        # One request per row, all in flight at once: the server batches them, and each row gets
        # its own seed (k samples of one prompt under one seed would be k copies).
        seeds = [None if params.seed is None else params.seed + i for i in range(len(prompts))]
        return list(self.pool.map(lambda a: self.complete(model, a[0], params, a[1]), zip(prompts, seeds)))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class VllmSampler:
    """A Sampler whose generation runs on a vLLM server, with the adapter `adapter(workdir)` names
    (Policy.saved_adapter: a saved folder, or None for the base model)."""

    name = "vllm"

    def __init__(self, client: VllmClient, *, model_name: str, prompt_ids: Callable[[Messages], list[int]],
                 adapter: Callable[[Path], Path | None], workdir: Path, server: VllmServer | None = None):
        self.client = client
        self.server = server
        self.model_name = model_name
        self.device = server.url if server is not None else client.url
        self.prompt_ids = prompt_ids
        self.adapter = adapter
        self.workdir = Path(workdir)  # where the policy saves copies of trained adapters for the server
        self._served: dict[str, str] = {}  # adapter key -> name registered on the server

    def generate(self, prompts: Sequence[Messages], params: SamplingParams, *, adapter: bool = True) -> list[Completion]:
        try:
            model = self._current_model() if adapter else BASE_NAME
            ids = [self.prompt_ids(m) for m in prompts]
            return self.client.complete_all(model, ids, params)
        except UserError as e:
            if self.server is None:
                raise
            raise UserError(f"{e}\nthe end of {self.server.log}:\n{_tail(self.server.log)}") from None

    def _current_model(self) -> str:
        path = self.adapter(self.workdir)
        if path is None:
            return BASE_NAME  # a fresh LoRA (B = 0) is the base model
        weights = path / "adapter_model.safetensors"
        key = f"{path.resolve()}:{weights.stat().st_mtime_ns}"
        if key not in self._served:
            # Named by path and time, so that clients sharing one server (vllm_url) never clash.
            name = "adapter-" + hashlib.sha1(key.encode()).hexdigest()[:12]
            for old in list(self._served.values()):  # keep one registered: the server holds few
                self.client.unload_adapter(old)
            self._served = {}
            self.client.load_adapter(name, path)
            self._served[key] = name
        return self._served[key]

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()


def vllm_installed(python: str) -> bool:
    if python == sys.executable:
        import importlib.util

        return importlib.util.find_spec("vllm") is not None
    return Path(python).is_file()  # another venv's Python: its server's log tells if vLLM is missing


def start(policy, *, python: str = "", url: str = "", extra_args: str = "", workdir: Path,
          seed: int = 0, start_timeout_s: float = 900.0) -> VllmSampler:
    """Generation on vLLM for `policy` (the PyTorch backend): a server at `url`, or one started here
    from `python` ('' = this interpreter) on the policy's base model."""
    if not hasattr(policy, "base_path"):
        raise UserError("generator.engine = vllm needs the PyTorch backend (--backend cuda)")
    workdir = Path(workdir)

    def sampler(client: VllmClient, server: VllmServer | None = None) -> VllmSampler:
        return VllmSampler(client, model_name=policy.model_name, prompt_ids=policy.fmt.prompt_ids,
                           adapter=policy.saved_adapter, workdir=workdir / "vllm-adapters", server=server)

    if url:
        return sampler(VllmClient(url))
    python = python or sys.executable
    if not vllm_installed(python):
        raise UserError(f"generator.engine = vllm, but vLLM is not installed for {python}: pip install vllm "
                        f"(or set generator.vllm_python to a Python that has it)")
    dtype = str(policy.dtype).removeprefix("torch.")
    cuda = policy.torch_device.type == "cuda"
    port = _free_port()
    cmd = server_command(python, policy.base_path, port, lora_rank=policy.lora.rank, dtype=dtype, cuda=cuda,
                         seed=seed, extra=extra_args)
    server = VllmServer(cmd, port, workdir / "vllm.log", start_timeout_s=start_timeout_s)
    return sampler(VllmClient(server.url), server)
