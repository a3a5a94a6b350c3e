"""Workflow generation throughput: the backend's batched `generate` vs one-at-a-time generation.

Two prompt sets on the same model: `samples` is ScoreFlow's shape (k = --batch-size samples of each
problem's prompt, so identical prompts share one prefill), `distinct` has a different problem in
every row. The baseline generates one prompt at a time with transformers' `generate` (batch 1).
Sampling is ScoreFlow's (temperature 0.2, top-p 0.95, stop at </graph>); workflows/s counts finished
or cut completions, tokens/s the generated tokens. With --backend mlx the MLX backend's numbers are
added as ratios against the PyTorch backend's batched generation (the MLX side runs in a subprocess).

    python benchmarks/generation.py            # full (a few minutes on 2 CPU cores)
    python benchmarks/generation.py --quick    # tiny sizes, for CI
    python benchmarks/generation.py --backend mlx   # add the MLX backend (Metal on Apple silicon, else CPU)
    python benchmarks/generation.py --engine vllm --vllm-python .venv-vllm/bin/python   # add the vLLM engine
    python benchmarks/generation.py --engine vllm --vllm-url http://127.0.0.1:8000/v1   # on a server already running
    python benchmarks/generation.py --cases arith   # only the product's own prompts, prompt cache on and off
    python benchmarks/generation.py --cases demo kernel   # the demo's iteration at batch 16 and 96; the attention kernels

With --engine vllm the generator's vLLM engine (a vLLM server serving the LoRA adapter per request,
`generator.engine = "vllm"`) generates the same prompts with the same adapter; its numbers are ratios
against the PyTorch backend's batched generation. Its server start is timed apart.

`arith` times the product's own generator prompts (~1,060 tokens, 8 different problems) with the
prompt cache kept across calls, against the same calls with nothing kept (the ratio of the second
calls: the cache's steady state).

`demo` generates the demo preset's iteration (12 problems x k = 8, the few-shot examples rotated per
sample, temperature 0.5, 128 tokens) with 16 rows decoded at a time and with all 96 in one batch
(the preset's generator.batch_size), openings cached. `kernel` times one layer's attention over the
openings at that batch's decoding shape: the portable matmul join (`cascade._attend`, the path GPUs
take) against the CPU flash-kernel join the backend uses on CPU, and checks that they agree.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, emit, last_json, model_folder, today  # noqa: E402

SYSTEM = ("You design workflows that solve math word problems. A workflow is the Python source of "
          "`async def run_workflow(self)` inside <graph></graph>. It calls operators with await: "
          "self.custom(input, instruction) asks the executor model, self.programmer(problem, analysis) writes "
          "and runs code, self.sc_ensemble(solutions, problem) picks the most consistent answer, "
          "self.review(problem, solution) checks a solution. `self.problem` holds the problem text. Return "
          "the final solution string.")
EXAMPLE = ('<graph>async def run_workflow(self):\n    solution = await self.custom(input=self.problem, '
           'instruction="Solve the problem step by step.")\n    return solution</graph>')


def prompts(n_problems: int, k: int, seed: int) -> tuple[list, list]:
    from scoreflow.tasks.arith import make_problem

    rng = random.Random(seed)
    problems = [make_problem(rng)[0] for _ in range(max(n_problems, k))]

    def chat(p: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Example workflow:\n{EXAMPLE}\n\nProblem: {p}\nWrite a better workflow."}]

    samples = [chat(p) for p in problems[:n_problems] for _ in range(k)]
    distinct = [chat(p) for p in problems[:n_problems * k]] if n_problems * k <= len(problems) else \
        [chat(make_problem(rng)[0]) for _ in range(n_problems * k)]
    return samples, distinct


def arith_prompts(n: int, seed: int) -> list:
    """The product's own generator prompts on `arith` (its few-shot examples, each problem's numbers
    hidden) for n different problems: ~900 tokens each, all but the problem's few dozen in common."""
    from scoreflow.loop.prompts import generator_messages
    from scoreflow.tasks.arith import ArithTask

    task = ArithTask()
    return [generator_messages(task, p, True, 0) for p in random.Random(seed).sample(task.problems("validate"), n)]


def timed(fn) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rates(outs: list, seconds: float) -> dict:
    return {"workflows_per_s": len(outs) / seconds, "tokens_per_s": sum(c.tokens for c in outs) / seconds,
            "seconds": seconds, "tokens": sum(c.tokens for c in outs), "finished": sum(c.finished for c in outs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes for CI: batch 4, 8 new tokens (the machinery, "
                    "not the numbers: most of its time is imports)")
    ap.add_argument("--model", default="smollm2",
                    help="model spec, or random:smollm2-135m / random:llama-3.1-8b (the shape with random weights)")
    ap.add_argument("--tokenizer", default=None, help="HF tokenizer folder for --model random:NAME (default: SmolLM2's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="auto: float32 on CPU, bfloat16 on CUDA")
    ap.add_argument("--backend", choices=["cuda", "mlx"], default="cuda",
                    help="mlx: also measure the MLX backend (ratios against the PyTorch backend)")
    ap.add_argument("--mlx-model", default=None, help="the MLX side's model (default: the same as --model)")
    ap.add_argument("--mlx-device", choices=["auto", "cpu", "gpu"], default="auto")
    ap.add_argument("--mlx-dtype", choices=["same", "auto", "float32", "bfloat16", "float16"], default="auto",
                    help="auto: the MLX backend's choice (float32 on CPU; bfloat16 on Metal, the embedded 4-bit GGUF "
                         "kept quantized); same: the PyTorch side's dtype")
    ap.add_argument("--engine", choices=["backend", "vllm"], default="backend",
                    help="vllm: also measure generation on a vLLM server (ratios against the PyTorch backend)")
    ap.add_argument("--vllm-python", default="", help="the Python that has vLLM ('' = this one)")
    ap.add_argument("--vllm-args", default="", help="extra vLLM server arguments")
    ap.add_argument("--vllm-url", default="", help="measure on a vLLM server already running for this model "
                    "(as generator.vllm_url) instead of starting one: startup_s is then not measured")
    ap.add_argument("--batch-size", type=int, default=None, help="rows per generate call (default 8, quick 4)")
    ap.add_argument("--problems", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", nargs="+", choices=("samples", "distinct", "arith", "demo", "kernel"),
                    default=["samples", "distinct", "arith"], help="which prompt sets to time")
    ap.add_argument("--worker", choices=["mlx"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.batch_size = a.batch_size or (4 if a.quick else 8)
    if (a.backend == "mlx" or a.engine == "vllm") and not {"samples", "distinct"} <= set(a.cases):
        ap.error("--backend mlx and --engine vllm are compared on samples and distinct: keep both in --cases")
    if a.worker:
        import json

        emit(worker_mlx(json.loads(Path(a.spec).read_text())))
        return

    import torch

    from scoreflow.model.backend import LoraConfig, SamplingParams
    from scoreflow.backends.cuda import generate as G
    from scoreflow.backends.cuda import load

    n_problems = a.problems or 1
    max_new = a.max_new_tokens or (8 if a.quick else 96)
    params = SamplingParams(temperature=0.2, top_p=0.95, max_new_tokens=max_new, stop=("</graph>",), seed=a.seed)
    samples, distinct = prompts(n_problems, a.batch_size, a.seed)
    model = model_folder(a.model, a.tokenizer, "bfloat16" if a.model.startswith("random:llama") else "float32")
    b = load(model, device=a.device, lora=LoraConfig(), seed=a.seed, dtype=a.dtype)
    b.generation_batch_size = a.batch_size

    def naive(ps):
        return [c for p in ps for c in G.hf_generate(b.model, b.tokenizer, b.fmt, [p], params, b.torch_device, 1)]

    b.generate(samples[:1], SamplingParams(max_new_tokens=2, stop=()))  # warm-up (first call allocations)
    result = {"benchmark": "generation", "date": today(), "device": device_info(b.device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "quick": a.quick, "model": a.model if a.model.startswith("random:") else b.model_name,
              "dtype": str(b.dtype).removeprefix("torch."),
              "sizes": {"problems": n_problems, "batch_size": a.batch_size, "rows": len(samples),
                        "prompt_tokens": len(b.fmt.prompt_ids(samples[0])), "max_new_tokens": max_new,
                        "temperature": params.temperature}}
    for name, ps in (("samples", samples), ("distinct", distinct)):
        if name not in a.cases:
            continue
        with b._lock:  # the same lock backend.generate takes
            base_out, base_s = timed(lambda: naive(ps))
        ours_out, ours_s = timed(lambda: b.generate(ps, params))
        base, ours = rates(base_out, base_s), rates(ours_out, ours_s)
        result[name] = {"naive": base, "batched": ours,
                        "ratio": ours["workflows_per_s"] / base["workflows_per_s"],
                        "token_ratio": ours["tokens_per_s"] / base["tokens_per_s"]}
    if "arith" in a.cases:
        result["arith"] = shared_opening(b, G, params, arith_prompts(a.batch_size, a.seed))
    if "demo" in a.cases:
        result["demo"] = demo_batches(b, a)
    if "kernel" in a.cases:
        result["kernel"] = attention_kernels(b, a.seed)
    result["targets"] = {f"{name} ratio>=4": result[name]["ratio"] >= 4.0
                         for name in ("samples", "distinct") if name in result}
    if a.backend == "mlx":
        result["mlx"] = measure_mlx(a, model, result["dtype"], params, samples, distinct, result)
    if a.engine == "vllm":
        result["vllm"] = measure_vllm(a, b, params, samples, distinct, result)
    emit(result)


def shared_opening(b, G, params, ps: list) -> dict:
    """The product's own prompts (each opening with the same instructions and few-shot examples),
    generated twice in a row with the prompt cache kept across calls (the backend's default: the
    second call prefills no opening) against the same calls with nothing kept, interleaved; the
    texts must not change. Greedy: the two paths add in another order, and a sampled draw from a flat
    distribution (the tiny random model's) can flip on that last-bit difference, where the argmax does not."""
    from dataclasses import replace

    params = replace(params, temperature=0.0)
    runs: dict[str, list] = {"cached": [], "uncached": []}
    caches = {"cached": b.prompt_cache, "uncached": G.PromptCache(keep=False)}
    kept = b.prompt_cache
    try:
        for _ in range(2):
            for name in ("uncached", "cached"):
                b.prompt_cache = caches[name]
                runs[name].append(timed(lambda: b.generate(ps, params)))
    finally:
        b.prompt_cache = kept
    texts = {name: [c.text for c in r[-1][0]] for name, r in runs.items()}
    secs = {name: [round(t, 2) for _, t in r] for name, r in runs.items()}
    return {"rows": len(ps), "prompt_tokens": len(b.fmt.prompt_ids(ps[0])), "temperature": params.temperature,
            "opening_tokens": b.fmt.context_length(ps[0]), "seconds": secs,
            "ratio": secs["uncached"][-1] / secs["cached"][-1],
            "same_text": sum(x == y for x, y in zip(texts["cached"], texts["uncached"]))}


def demo_batches(b, a) -> dict:
    """The demo's iteration (its prompts and sampling), 16 rows at a time against all at once."""
    from scoreflow.config import PRESETS, GeneratorConfig
    from scoreflow.loop.prompts import generator_messages
    from scoreflow.model.backend import SamplingParams
    from scoreflow.tasks.arith import ArithTask

    g = PRESETS["demo"]["generator"]
    n = 3 if a.quick else 12
    k = g["workflows_per_problem"]
    task = ArithTask()
    problems = random.Random(a.seed).sample(task.problems("validate"), n)
    ps = [generator_messages(task, p, True, i + j) for i, p in enumerate(problems) for j in range(k)]
    params = SamplingParams(g["temperature"], GeneratorConfig().top_p, 8 if a.quick else g["max_new_tokens"],
                            ("</graph>",), seed=a.seed)
    b.generate(ps, SamplingParams(max_new_tokens=1, stop=()))  # every opening into the prompt cache
    out = {"rows": len(ps), "openings": len({tuple(b.fmt.prompt_ids(m)[:b.fmt.context_length(m)]) for m in ps}),
           "max_new_tokens": params.max_new_tokens, "temperature": params.temperature}
    kept = b.generation_batch_size
    try:
        for rows in (16, len(ps)):
            b.generation_batch_size = rows
            outs, secs = timed(lambda: b.generate(ps, params))
            out[f"batch {rows}"] = rates(outs, secs)
    finally:
        b.generation_batch_size = kept
    out["ratio"] = out[f"batch {len(ps)}"]["tokens_per_s"] / out["batch 16"]["tokens_per_s"]
    return out


def attention_kernels(b, seed: int) -> dict:
    """One layer's attention at the demo batch's decoding step (96 rows in five groups over ~1,030-token
    openings, 170 own tokens each): the matmul join against the flash-kernel join, per call."""
    import torch

    from scoreflow.backends.cuda import cascade

    cfg = b.model.get_base_model().config
    kvh, heads = cfg.num_key_value_heads, cfg.num_attention_heads
    d = cfg.hidden_size // heads
    rows, own, opening = 96, 170, 1030
    g = torch.Generator().manual_seed(seed)

    class Layer:
        layer_idx = 0

    kv = [[(torch.randn(1, kvh, opening, d, generator=g), torch.randn(1, kvh, opening, d, generator=g))]
          for _ in range(5)]
    q = torch.randn(rows, heads, 1, d, generator=g)
    k, v = torch.randn(rows, kvh, own, d, generator=g), torch.randn(rows, kvh, own, d, generator=g)
    mask = torch.ones(rows, 1, 1, own, dtype=torch.bool)
    openings = cascade.Openings(kv, torch.arange(rows) % 5)

    def matmul_join():
        out = q.new_empty((rows, 1, heads, d))
        for grp, kvg in enumerate(kv):
            r = torch.nonzero(openings.group == grp).flatten()
            out[r] = cascade._attend(Layer, q[r], k[r], v[r], mask[r], d ** -0.5, kvg)
        return out

    def flash_join():
        return cascade._attend_cpu(Layer, q, k, v, mask, d ** -0.5, openings)

    out = {"rows": rows, "openings": 5, "opening_tokens": opening, "own_tokens": own,
           "max_abs_difference": (matmul_join() - flash_join()).abs().max().item()}
    for name, fn in (("matmul_ms", matmul_join), ("flash_ms", flash_join)):
        fn()
        out[name] = min(timed(fn)[1] for _ in range(20)) * 1000
    out["ratio"] = out["matmul_ms"] / out["flash_ms"]
    return out


def measure_vllm(a, b, params, samples, distinct, result) -> dict:
    """The same prompts on a vLLM server started by the engine, with a saved (non-zero) adapter
    served per request, so that the LoRA path is what gets timed."""
    import tempfile

    import torch

    from scoreflow.backends.cuda import vllm_server
    from scoreflow.model.backend import SamplingParams
    from scoreflow.errors import UserError

    g = torch.Generator().manual_seed(a.seed)
    for n, p in b.model.named_parameters():
        if "lora_B" in n:
            p.data.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p) * 1e-3)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            started = time.perf_counter()
            engine = vllm_server.start(b, python=a.vllm_python, url=a.vllm_url, extra_args=a.vllm_args,
                                       workdir=Path(tmp), seed=a.seed)
        except UserError as e:
            return {"error": str(e)[-2000:]}
        out: dict = {"startup_s": None if a.vllm_url else time.perf_counter() - started, "args": a.vllm_args,
                     "url": a.vllm_url or None}
        try:
            b.save_adapter(Path(tmp) / "adapter")  # the policy saves, the engine serves it
            engine.generate(samples[:1], SamplingParams(max_new_tokens=2, stop=()))  # warm-up, adapter registered
            for name, ps in (("samples", samples), ("distinct", distinct)):
                outs, secs = timed(lambda: engine.generate(ps, params))
                out[name] = rates(outs, secs)
                out[name]["ratio_vs_torch_batched"] = out[name]["workflows_per_s"] / result[name]["batched"]["workflows_per_s"]
                out[name]["token_ratio_vs_torch_batched"] = out[name]["tokens_per_s"] / result[name]["batched"]["tokens_per_s"]
                out[name]["ratio_vs_naive"] = out[name]["workflows_per_s"] / result[name]["naive"]["workflows_per_s"]
        except UserError as e:
            out["error"] = str(e)[-2000:]
        finally:
            engine.close()
    return out


def measure_mlx(a, model: str, dtype: str, params, samples, distinct, result) -> dict:
    """The MLX backend on the same prompts, in a subprocess: on Linux it preloads OpenBLAS, which
    must come before `import mlx.core` and does not mix with PyTorch's float64 kernels."""
    import importlib.util
    import json
    import os
    import subprocess
    import tempfile
    from dataclasses import asdict

    if importlib.util.find_spec("mlx_lm") is None or importlib.util.find_spec("mlx") is None:
        return {"status": "pending: mlx / mlx-lm are not installed (pip install 'scoreflow-cli[mlx]')"}
    spec = {"model": a.mlx_model or model, "device": a.mlx_device, "dtype": dtype if a.mlx_dtype == "same" else a.mlx_dtype,
            "batch_size": a.batch_size, "seed": a.seed, "params": asdict(params), "samples": samples, "distinct": distinct}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "spec.json")
        with open(path, "w") as f:
            json.dump(spec, f)
        proc = subprocess.run([sys.executable, __file__, "--worker", "mlx", "--spec", path], capture_output=True,
                              text=True, timeout=600 if a.quick else 3600, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        return {"error": f"MLX worker failed ({proc.returncode}):\n{proc.stderr[-1500:]}"}
    out = last_json(proc.stdout)
    for name in ("samples", "distinct"):
        out[name]["ratio_vs_torch_batched"] = out[name]["workflows_per_s"] / result[name]["batched"]["workflows_per_s"]
        out[name]["token_ratio_vs_torch_batched"] = out[name]["tokens_per_s"] / result[name]["batched"]["tokens_per_s"]
    return out


def worker_mlx(spec: dict) -> dict:
    from scoreflow.backends.mlx import load as load_mlx  # first: the OpenBLAS preload precedes mlx.core

    import mlx.core as mx

    from scoreflow.model.backend import LoraConfig, SamplingParams
    from scoreflow.backends.mlx.blas import preload

    params = SamplingParams(**{**spec["params"], "stop": tuple(spec["params"]["stop"])})
    m = load_mlx(spec["model"], device=spec["device"], lora=LoraConfig(), seed=spec["seed"], dtype=spec["dtype"])
    m.generation_batch_size = spec["batch_size"]
    m.generate(spec["samples"][:1], SamplingParams(max_new_tokens=2, stop=()))  # warm-up, as on the PyTorch side
    mx.reset_peak_memory()
    out = {"device": m.device, "dtype": str(m.dtype).removeprefix("mlx.core."), "quantized": m.quantized,
           "openblas": preload(), "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS") if preload() else None}
    for name in ("samples", "distinct"):
        outs, secs = timed(lambda: m.generate(spec[name], params))
        out[name] = rates(outs, secs)
    out["peak_mb"] = mx.get_peak_memory() / 2**20
    return out


if __name__ == "__main__":
    main()
