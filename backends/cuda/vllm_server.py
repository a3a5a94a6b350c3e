"""Generation on a vLLM server that serves the current LoRA adapter per request.

`VllmGeneration` wraps the PyTorch backend: training, log-probs and adapters stay in the backend;
`generate` goes to a vLLM OpenAI-compatible server. The adapter the loop last saved or loaded is
registered with the server by path (`/v1/load_lora_adapter`) and named in each request, so no
merged model is ever written. With the adapter off (the executor role, or iteration 1's fresh LoRA,
whose B matrices are zero) requests name the base model.

Prompts are sent as token ids from the backend's own chat format, so the server sees exactly the
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

from scoreflow.backend import Completion, Messages, SamplingParams, StepInfo, TrainConfig, TrainPair, TrainStats
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
        choice = reply["choices"][0]
        return Completion(text=choice["text"], tokens=int(reply["usage"]["completion_tokens"]),
                          finished=choice.get("finish_reason") == "stop")

    def complete_all(self, model: str, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        # One request per row, all in flight at once: the server batches them, and each row gets
        # its own seed (k samples of one prompt under one seed would be k copies).
        seeds = [None if params.seed is None else params.seed + i for i in range(len(prompts))]
        return list(self.pool.map(lambda a: self.complete(model, a[0], params, a[1]), zip(prompts, seeds)))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class VllmGeneration:
    """A Backend whose `generate` runs on vLLM; everything else is the wrapped PyTorch backend's."""

    def __init__(self, backend, client: VllmClient, workdir: Path, server: VllmServer | None = None):
        self.backend = backend
        self.client = client
        self.server = server
        self.workdir = Path(workdir)
        self.name, self.device, self.model_name = backend.name, backend.device, backend.model_name
        self._adapter: Path | None = None  # the saved adapter equal to the backend's current one
        self._dirty = False  # trained since it was saved
        self._served: dict[str, str] = {}  # adapter key -> name registered on the server
        self._saves = 0

    # -- generation -------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Messages], params: SamplingParams, *, adapter: bool = True) -> list[Completion]:
        try:
            model = self._current_model() if adapter else BASE_NAME
            ids = [self.backend.fmt.prompt_ids(m) for m in prompts]
            return self.client.complete_all(model, ids, params)
        except UserError as e:
            if self.server is None:
                raise
            raise UserError(f"{e}\nthe end of {self.server.log}:\n{_tail(self.server.log)}") from None

    def _current_model(self) -> str:
        if self._dirty:  # trained but not saved: save a copy the server can read
            self._saves += 1
            path = self.workdir / f"adapter-{self._saves}"
            self.backend.save_adapter(path)
            self._adapter, self._dirty = path, False
        if self._adapter is None:
            return BASE_NAME  # a fresh LoRA (B = 0) is the base model
        weights = self._adapter / "adapter_model.safetensors"
        key = f"{self._adapter.resolve()}:{weights.stat().st_mtime_ns}"
        if key not in self._served:
            # Named by path and time, so that clients sharing one server (vllm_url) never clash.
            name = "adapter-" + hashlib.sha1(key.encode()).hexdigest()[:12]
            for old in list(self._served.values()):  # keep one registered: the server holds few
                self.client.unload_adapter(old)
            self._served = {}
            self.client.load_adapter(name, self._adapter)
            self._served[key] = name
        return self._served[key]

    # -- the backend's own work, tracked so that generation follows the adapter -------------------
    def logprobs(self, items: Sequence[tuple[Messages, str]], *, adapter: bool = True) -> list[float]:
        return self.backend.logprobs(items, adapter=adapter)

    def train(self, pairs: Sequence[TrainPair], cfg: TrainConfig, *,
              on_step: Callable[[StepInfo], None] | None = None, checkpoint_dir: Path | None = None) -> TrainStats:
        self._dirty = True
        return self.backend.train(pairs, cfg, on_step=on_step, checkpoint_dir=checkpoint_dir)

    def save_adapter(self, path: Path) -> None:
        self.backend.save_adapter(path)
        self._adapter, self._dirty = Path(path), False

    def load_adapter(self, path: Path | None) -> None:
        self.backend.load_adapter(path)
        self._adapter, self._dirty = (Path(path) if path is not None else None), False

    def peak_memory_mb(self) -> float:
        return self.backend.peak_memory_mb()

    def __getattr__(self, item: str) -> Any:  # fmt, tokenizer, model ... for code that reaches in
        return getattr(self.backend, item)

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()


def vllm_installed(python: str) -> bool:
    if python == sys.executable:
        import importlib.util

        return importlib.util.find_spec("vllm") is not None
    return Path(python).is_file()  # another venv's Python: its server's log tells if vLLM is missing


def start(backend, *, python: str = "", url: str = "", extra_args: str = "", workdir: Path,
          seed: int = 0, start_timeout_s: float = 900.0) -> VllmGeneration:
    """Wrap `backend` (the PyTorch backend) with generation on vLLM: a server at `url`, or one
    started here from `python` ('' = this interpreter)."""
    if not hasattr(backend, "base_path"):
        raise UserError("generator.engine = vllm needs the PyTorch backend (--backend cuda)")
    workdir = Path(workdir)
    if url:
        return VllmGeneration(backend, VllmClient(url), workdir / "vllm-adapters")
    python = python or sys.executable
    if not vllm_installed(python):
        raise UserError(f"generator.engine = vllm, but vLLM is not installed for {python}: pip install vllm "
                        f"(or set generator.vllm_python to a Python that has it)")
    dtype = str(backend.dtype).removeprefix("torch.")
    cuda = backend.torch_device.type == "cuda"
    port = _free_port()
    cmd = server_command(python, backend.base_path, port, lora_rank=backend.lora.rank, dtype=dtype, cuda=cuda,
                         seed=seed, extra=extra_args)
    server = VllmServer(cmd, port, workdir / "vllm.log", start_timeout_s=start_timeout_s)
    return VllmGeneration(backend, VllmClient(server.url), workdir / "vllm-adapters", server)
