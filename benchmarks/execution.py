"""Workflow evaluations per second through the sandbox and the async OpenAI executor.

A local OpenAI-compatible server (stdlib http.server on 127.0.0.1, in its own process) answers every
chat completion after a fixed --latency. Each evaluation runs a workflow in the sandbox that makes
--calls sequential executor calls. Compared: evaluations run concurrently (sandbox and executor
both limited to --concurrency), run one at a time (sequential baseline), and the
concurrency-limited ideal, concurrency / (calls * latency) evaluations/s, which ignores every cost
but the server's latency. Also the sandbox overhead: spawn-to-verdict time of a trivial program.

With --backend mlx, also the local executor (scoreflow.execute.executor.LocalExecutor: executor calls
gathered into batched `generate` calls on a backend model in the process, adapter off) on the MLX
backend vs the PyTorch backend: the same arith workflows (the task's template and its ensemble
example, whose call counts do not depend on the replies) on the same problems through the real
Runner (sandbox, operators, answer extraction, scoring), each backend in its own subprocess.

    python benchmarks/execution.py            # full (about a minute)
    python benchmarks/execution.py --quick    # seconds, for CI
    python benchmarks/execution.py --backend mlx   # + local executor, MLX vs PyTorch (a few minutes)

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, emit, last_json, peak_rss_mb, today  # noqa: E402

WORKFLOW = '''async def run_workflow(self):
    answer = self.problem
    for i in range({calls}):
        answer = await self.custom(input=answer, instruction="Improve the solution.")
    return answer'''


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    latency = 0.0
    calls = 0
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        time.sleep(self.latency)
        with self.lock:
            type(self).calls += 1
        text = "step: " + str(body.get("messages", [{}])[-1].get("content", ""))[-40:]
        data = json.dumps({
            "id": "bench", "object": "chat.completion", "created": int(time.time()), "model": body.get("model", "bench"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        """GET /calls: how many completions were answered (then reset to 0 with ?reset=1)."""
        with self.lock:
            data = str(type(self).calls).encode()
            if "reset=1" in self.path:
                type(self).calls = 0
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def serve(latency: float) -> None:
    """The server process: prints its port, then answers until killed."""
    handler = type("LatencyHandler", (_Handler,), {"latency": latency, "calls": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


class Server:
    """The fake API in its own process, as a real one would be: in this process its threads would
    compete for the GIL with the event loop being measured."""

    def __init__(self, latency: float):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(latency)], stdout=subprocess.PIPE,
                                     text=True)
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"
        self.url = self.base + "/v1"

    def calls(self, reset: bool = False) -> int:
        import urllib.request

        with urllib.request.urlopen(self.base + "/calls" + ("?reset=1" if reset else "")) as r:
            return int(r.read())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def evaluate(n: int, concurrency: int, calls: int, base_url: str, sequential: bool) -> tuple[float, list]:
    from scoreflow.execute.executor import OpenAIExecutor
    from scoreflow.sandbox.parent import Sandbox

    executor = OpenAIExecutor("bench", base_url=base_url, concurrency=concurrency)
    sandbox = Sandbox(concurrency=concurrency)
    source = WORKFLOW.format(calls=calls)

    async def handler(method: str, args: list, kwargs: dict) -> str:
        reply = await executor.chat([{"role": "user", "content": f"{kwargs.get('instruction')}\n{kwargs.get('input')}"}])
        return reply.text

    async def one(i: int):
        return await sandbox.run_workflow(source, {"problem": f"problem {i}"}, ["custom"], handler)

    t0 = time.perf_counter()
    if sequential:
        results = [await one(i) for i in range(n)]
    else:
        results = await asyncio.gather(*(one(i) for i in range(n)))
    seconds = time.perf_counter() - t0
    await executor.close()
    return seconds, results


async def sandbox_overhead(runs: int) -> dict:
    from scoreflow.sandbox.parent import Sandbox

    sandbox = Sandbox(concurrency=1)
    times, statuses = [], set()
    for _ in range(runs):
        t0 = time.perf_counter()
        r = await sandbox.run_program("x = 1 + 1\n")
        times.append(time.perf_counter() - t0)
        statuses.add(r.status)
    return {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times), "max_ms": 1000 * max(times),
            "runs": runs, "statuses": sorted(statuses)}


ENSEMBLE = '''async def run_workflow(self):
    first = await self.custom(input=self.problem, instruction="Solve step by step and end with the number.")
    second = await self.custom(input=self.problem, instruction="Answer with the number only.")
    third = await self.custom(input=self.problem, instruction="Check each step, then give the number.")
    best = await self.sc_ensemble(solutions=[first, second, third], problem=self.problem)
    return best'''


def local_workflows() -> list[str]:
    """arith's template (one Custom call) and an ensemble (three Custom calls and a ScEnsemble
    call): call counts and statuses that do not depend on what the model answers, so both backends
    do the same work. (arith's examples parse the reply into numbers and Programmer retries on
    failing code, which would not.)"""
    from scoreflow.tasks.families import MATH_TEMPLATE

    return [MATH_TEMPLATE, ENSEMBLE]


def worker_local(kind: str, spec: dict) -> dict:
    """One backend's local executor: every (workflow, problem) evaluation at once through the Runner."""
    if kind == "mlx":
        from scoreflow.backends.mlx import load  # first: the OpenBLAS preload precedes mlx.core
    else:
        from scoreflow.backends.cuda import load
    from scoreflow.model.backend import LoraConfig, SamplingParams
    from scoreflow.execute.executor import LocalExecutor
    from scoreflow.execute.runner import Runner
    from scoreflow.sandbox.parent import Sandbox
    from scoreflow.tasks.arith import ArithTask

    b = load(spec["model"], device=spec["device"], lora=LoraConfig(), seed=0, dtype=spec["dtype"])
    task = ArithTask()
    problems = task.problems("validate")[:spec["problems"]]
    jobs = [(w, p) for w in local_workflows() for p in problems]
    b.generate([[{"role": "user", "content": "Hello"}]], SamplingParams(max_new_tokens=2, stop=()), adapter=False)
    if kind == "mlx":
        import mlx.core as mx

        mx.reset_peak_memory()

    async def go() -> tuple[float, list, LocalExecutor]:
        executor = LocalExecutor(b, max_tokens=spec["max_tokens"], batch_size=spec["batch_size"], seed=0)
        runner = Runner(task, executor, Sandbox(concurrency=spec["concurrency"]), max_tokens=spec["max_tokens"])
        t0 = time.perf_counter()
        outs = await asyncio.gather(*(runner.run(w, p) for w, p in jobs))
        seconds = time.perf_counter() - t0
        await executor.close()
        return seconds, outs, executor

    seconds, outs, ex = asyncio.run(go())
    out = {"evaluations": len(outs), "seconds": seconds, "evals_per_s": len(outs) / seconds,
           "executor_calls": ex.usage.calls, "batches": ex._batches, "calls_per_batch": ex.usage.calls / max(1, ex._batches),
           "completion_tokens": ex.usage.completion_tokens, "completion_tokens_per_s": ex.usage.completion_tokens / seconds,
           "prompt_tokens": ex.usage.prompt_tokens, "statuses": sorted({o.status for o in outs}),
           "mean_score": sum(o.score for o in outs) / len(outs), "peak_rss_mb": peak_rss_mb(), "device": str(b.device),
           "dtype": str(b.dtype).removeprefix("torch.").removeprefix("mlx.core.")}
    if kind == "mlx":
        from scoreflow.backends.mlx.blas import preload

        out.update(peak_mb=mx.get_peak_memory() / 2**20, openblas=preload(),
                   openblas_threads=os.environ.get("OPENBLAS_NUM_THREADS") if preload() else None)
    else:
        import torch

        out["threads"] = torch.get_num_threads()
    return out


def measure_local(a) -> dict:
    """The local executor on the PyTorch backend, then on the MLX backend, one subprocess each."""
    import importlib.util

    quick = a.quick
    spec = {"model": a.local_model, "device": a.device, "dtype": a.dtype,
            "problems": a.local_problems or (1 if quick else 4), "max_tokens": a.local_max_tokens or (8 if quick else 48),
            "batch_size": a.local_batch_size, "concurrency": a.local_batch_size}
    result: dict = {"sizes": {"model": a.local_model, "problems": spec["problems"], "workflows": len(local_workflows()),
                              "max_tokens": spec["max_tokens"], "batch_size": spec["batch_size"],
                              "sandbox_concurrency": spec["concurrency"], "temperature": 0.0}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind in (("torch", "cuda"), ("mlx", "mlx")):
            side_spec = spec
            if kind == "mlx":  # `same`: the dtype the PyTorch side ended up with (auto resolved there)
                same = result["torch"].get("dtype", a.dtype) if a.dtype == "auto" else a.dtype
                side_spec = {**spec, "device": a.mlx_device, "dtype": same if a.mlx_dtype == "same" else a.mlx_dtype}
            if kind == "mlx" and (importlib.util.find_spec("mlx_lm") is None or importlib.util.find_spec("mlx") is None):
                result[name] = {"status": "pending: mlx / mlx-lm are not installed (pip install 'scoreflow-cli[mlx]')"}
                continue
            path = os.path.join(tmp, f"{name}.json")
            Path(path).write_text(json.dumps(side_spec))
            try:
                proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--spec", path], capture_output=True,
                                      text=True, timeout=600 if quick else 3600, env={**os.environ, "TQDM_DISABLE": "1"})
            except subprocess.TimeoutExpired as e:
                result[name] = {"error": f"timed out after {e.timeout} s"}
                continue
            if proc.returncode != 0:
                result[name] = {"error": f"{name} worker failed ({proc.returncode}):\n{proc.stderr[-1500:]}"}
                continue
            result[name] = last_json(proc.stdout)
    if "evals_per_s" in result["torch"] and "evals_per_s" in result.get("mlx", {}):
        result["ratio_vs_torch"] = result["mlx"]["evals_per_s"] / result["torch"]["evals_per_s"]
        result["token_ratio_vs_torch"] = result["mlx"]["completion_tokens_per_s"] / result["torch"]["completion_tokens_per_s"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--evaluations", type=int, default=None)
    ap.add_argument("--sequential-evaluations", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--calls", type=int, default=3, help="executor calls per workflow, made one after another")
    ap.add_argument("--latency", type=float, default=None, help="seconds the server waits per call")
    ap.add_argument("--overhead-runs", type=int, default=None)
    ap.add_argument("--backend", choices=["openai", "mlx"], default="openai",
                    help="mlx: also the local executor on the MLX backend vs the PyTorch backend")
    ap.add_argument("--local-model", default="smollm2", help="local executor: the model both backends load")
    ap.add_argument("--local-problems", type=int, default=None, help="local executor: arith problems (x 2 workflows)")
    ap.add_argument("--local-max-tokens", type=int, default=None, help="local executor: tokens per executor call")
    ap.add_argument("--local-batch-size", type=int, default=8,
                    help="local executor: calls per batched generation, and sandbox concurrency")
    ap.add_argument("--device", default="auto", help="local executor: the PyTorch backend's device")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="local executor: the PyTorch backend's dtype (auto: float32 on CPU)")
    ap.add_argument("--mlx-device", choices=["auto", "cpu", "gpu"], default="auto")
    ap.add_argument("--mlx-dtype", choices=["same", "auto", "float32", "bfloat16", "float16"], default="auto",
                    help="auto: the MLX backend's choice (float32 on CPU; bfloat16 on Metal, the embedded 4-bit GGUF "
                         "kept quantized); same: --dtype")
    ap.add_argument("--worker", choices=["cuda", "mlx"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve is not None:
        serve(a.serve)
        return
    if a.worker:
        emit(worker_local(a.worker, json.loads(Path(a.spec).read_text())))
        return
    n = a.evaluations or (8 if a.quick else 64)
    n_seq = a.sequential_evaluations or (2 if a.quick else 8)
    conc = a.concurrency or (4 if a.quick else 16)
    latency = a.latency if a.latency is not None else (0.05 if a.quick else 0.5)
    server = Server(latency)
    base_url = server.url
    try:
        overhead = asyncio.run(sandbox_overhead(a.overhead_runs or (5 if a.quick else 30)))
        asyncio.run(evaluate(1, 1, 1, base_url, True))  # warm-up: imports, first connection
        server.calls(reset=True)
        conc_s, conc_res = asyncio.run(evaluate(n, conc, a.calls, base_url, False))
        seq_s, seq_res = asyncio.run(evaluate(n_seq, conc, a.calls, base_url, True))
        server_calls = server.calls()
    finally:
        server.close()
    ideal = conc / (a.calls * latency) if latency > 0 else float("inf")
    achieved = n / conc_s
    statuses = sorted({r.status for r in conc_res + seq_res})
    result = {
        "benchmark": "execution", "date": today(), "device": device_info("cpu"), "quick": a.quick,
        "sizes": {"evaluations": n, "sequential_evaluations": n_seq, "concurrency": conc, "calls_per_workflow": a.calls,
                  "latency_s": latency, "server_calls": server_calls},
        "concurrent_evals_per_s": achieved, "sequential_evals_per_s": n_seq / seq_s, "ideal_evals_per_s": ideal,
        "fraction_of_ideal": achieved / ideal, "speedup_vs_sequential": achieved / (n_seq / seq_s),
        "statuses": statuses, "sandbox_overhead": overhead,
        "targets": {"fraction_of_ideal>=0.8": achieved / ideal >= 0.8, "sandbox_overhead<=50ms": overhead["median_ms"] <= 50},
    }
    if a.backend == "mlx":
        result["local"] = measure_local(a)
    emit(result)


if __name__ == "__main__":
    main()
