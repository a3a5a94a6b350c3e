"""Workflow evaluations per second through the sandbox and the async OpenAI executor.

A local OpenAI-compatible server (stdlib http.server on 127.0.0.1, in this process) answers every
chat completion after a fixed --latency. Each evaluation runs a workflow in the sandbox that makes
--calls sequential executor calls. Compared: evaluations run concurrently (sandbox and executor
both limited to --concurrency), run one at a time (sequential baseline), and the
concurrency-limited ideal, concurrency / (calls * latency) evaluations/s, which ignores every cost
but the server's latency. Also the sandbox overhead: spawn-to-verdict time of a trivial program.

    python benchmarks/execution.py            # full (about a minute)
    python benchmarks/execution.py --quick    # seconds, for CI

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, emit, today  # noqa: E402

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

    def log_message(self, *args) -> None:
        pass


def start_server(latency: float) -> tuple[ThreadingHTTPServer, type]:
    handler = type("LatencyHandler", (_Handler,), {"latency": latency, "calls": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


async def evaluate(n: int, concurrency: int, calls: int, base_url: str, sequential: bool) -> tuple[float, list]:
    from scoreflow.executor import OpenAIExecutor
    from scoreflow.sandbox import Sandbox

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
    from scoreflow.sandbox import Sandbox

    sandbox = Sandbox(concurrency=1)
    times, statuses = [], set()
    for _ in range(runs):
        t0 = time.perf_counter()
        r = await sandbox.run_program("x = 1 + 1\n")
        times.append(time.perf_counter() - t0)
        statuses.add(r.status)
    return {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times), "max_ms": 1000 * max(times),
            "runs": runs, "statuses": sorted(statuses)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--evaluations", type=int, default=None)
    ap.add_argument("--sequential-evaluations", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=None)
    ap.add_argument("--calls", type=int, default=3, help="executor calls per workflow, made one after another")
    ap.add_argument("--latency", type=float, default=None, help="seconds the server waits per call")
    ap.add_argument("--overhead-runs", type=int, default=None)
    a = ap.parse_args()
    n = a.evaluations or (8 if a.quick else 64)
    n_seq = a.sequential_evaluations or (2 if a.quick else 8)
    conc = a.concurrency or (4 if a.quick else 16)
    latency = a.latency if a.latency is not None else (0.05 if a.quick else 0.5)
    server, handler = start_server(latency)
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        overhead = asyncio.run(sandbox_overhead(a.overhead_runs or (5 if a.quick else 30)))
        asyncio.run(evaluate(1, 1, 1, base_url, True))  # warm-up: imports, first connection
        handler.calls = 0
        conc_s, conc_res = asyncio.run(evaluate(n, conc, a.calls, base_url, False))
        seq_s, seq_res = asyncio.run(evaluate(n_seq, conc, a.calls, base_url, True))
    finally:
        server.shutdown()
    ideal = conc / (a.calls * latency) if latency > 0 else float("inf")
    achieved = n / conc_s
    statuses = sorted({r.status for r in conc_res + seq_res})
    result = {
        "benchmark": "execution", "date": today(), "device": device_info("cpu"), "quick": a.quick,
        "sizes": {"evaluations": n, "sequential_evaluations": n_seq, "concurrency": conc, "calls_per_workflow": a.calls,
                  "latency_s": latency, "server_calls": handler.calls},
        "concurrent_evals_per_s": achieved, "sequential_evals_per_s": n_seq / seq_s, "ideal_evals_per_s": ideal,
        "fraction_of_ideal": achieved / ideal, "speedup_vs_sequential": achieved / (n_seq / seq_s),
        "statuses": statuses, "sandbox_overhead": overhead,
        "targets": {"fraction_of_ideal>=0.8": achieved / ideal >= 0.8, "sandbox_overhead<=50ms": overhead["median_ms"] <= 50},
    }
    emit(result)


if __name__ == "__main__":
    main()
