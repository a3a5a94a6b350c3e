"""The executor against a real OpenAI-compatible server: mlx_lm.server serving the embedded
SmolLM2 (fp32 HF folder) on 127.0.0.1, then a sandboxed workflow whose operator calls it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import importlib.util

import pytest

from scoreflow.config import ExecutorConfig
from scoreflow.execute.executor import RetryPolicy, make_executor
from scoreflow.sandbox.parent import Limits, Sandbox

# find_spec, not importorskip: importing mlx at collection would defeat the MLX tests' OpenBLAS preload.
if importlib.util.find_spec("mlx_lm") is None:
    pytest.skip("the mlx extra is not installed", allow_module_level=True)

# OpenBLAS first (see ENVIRONMENT.md: the mlx-cpu wheel's reference BLAS is ~20x slower).
LAUNCH = ("import runpy, sys\nfrom scoreflow.backends.mlx.blas import preload\npreload()\n"
          "sys.argv[0] = 'mlx_lm.server'\nrunpy.run_module('mlx_lm.server', run_name='__main__')\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlx_server(smollm2_hf, tmp_path_factory):
    port = free_port()
    hub = tmp_path_factory.mktemp("hf-hub")  # /v1/models fails unless this folder exists
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "OPENBLAS_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("OPENAI_API_KEY", None)
    log = tmp_path_factory.mktemp("mlx-log") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "--model", str(smollm2_hf), "--host", "127.0.0.1",
                                 "--port", str(port), "--max-tokens", "16"],
                                cwd=str(Path(__file__).resolve().parents[1]), env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 45
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlx_lm.server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlx_lm.server did not answer in 45 s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def config(url: str) -> ExecutorConfig:
    c = ExecutorConfig()
    c.kind, c.model, c.base_url, c.max_tokens, c.timeout_s = "openai", "default_model", url, 8, 30.0
    return c


def test_real_server_chat_cache_and_sandboxed_workflow(mlx_server):
    async def main():
        ex = make_executor(config(mlx_server), retry=RetryPolicy(max_retries=2, base_s=0.1))
        msgs = [{"role": "user", "content": "Say hello."}]
        t0 = time.monotonic()
        a = await ex.chat(msgs, max_tokens=8, temperature=0.0, rep=0)
        first = time.monotonic() - t0
        b = await ex.chat(msgs, max_tokens=8, temperature=0.0, rep=0)  # from the cache
        c = await ex.chat(msgs, max_tokens=8, temperature=0.0, rep=1)  # another repetition: the server

        async def handler(method, args, kwargs):
            reply = await ex.chat([{"role": "user", "content": f"{kwargs.get('instruction', '')}\n\n{args[0]}"}],
                                  max_tokens=8)
            return reply.text

        src = ("async def run_workflow(self):\n"
               "    r = await self.custom(self.problem, instruction='Answer briefly.')\n"
               "    return 'model: ' + r\n")
        run = await Sandbox(Limits(timeout_s=5)).run_workflow(src, {"problem": "What is 2+3?"}, ["custom"], handler)
        await ex.close()
        return ex, a, b, c, run, first

    ex, a, b, c, run, first = asyncio.run(main())
    print(f"first reply {first:.2f}s: {a.text!r}; workflow output {run.output!r}")
    assert a.text.strip() and a.prompt_tokens > 0 and 0 < a.completion_tokens <= 8
    assert b == a and c.text.strip()
    assert ex.usage.calls == 3 and ex.usage.cache_hits == 1 and ex.usage.cost_usd == 0.0
    assert run.status == "ok" and run.output.startswith("model: ") and len(run.output) > len("model: ")
    assert run.calls == 1
