#!/usr/bin/env bash
# The MLX backend timed on this machine, as one JSON to paste into an issue: the demo
# (`scoreflow optimize --backend mlx`: its iterations, training steps and evaluations, from the
# run's own records), and generation and a Score-DPO step against mlx-lm itself
# (benchmarks/mlx_vs_mlx_lm.py: ratios, samplers, prompt cache, compiled or eager step). On Apple
# silicon MLX runs on Metal in bf16 (the defaults); where MLX sees no Metal GPU it runs on the CPU
# in fp32, so the script also runs on Linux.
#
#   bash benchmarks/mac.sh            # the demo as shipped (2 iterations) and the benchmark's full sizes
#   bash benchmarks/mac.sh --small    # minutes: a one-iteration demo on 2 problems, the benchmark's small sizes
#   bash benchmarks/mac.sh --quick    # the script itself: a one-problem demo, the benchmark on a tiny random model
#
# From the repository root's venv with the MLX backend installed (docs/mlx.md); PYTHON=... picks
# another interpreter. The demo's run folder and logs go to a temporary folder, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") size=full ;;
  --small) size=small ;;
  --quick) size=quick ;;
  *) echo "usage: bash benchmarks/mac.sh [--small|--quick]" >&2; exit 2 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python}" - "$size" "$work" <<'PY'
import json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

size, work = sys.argv[1], Path(sys.argv[2])


def sh(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run(name: str, cmd: list[str]) -> tuple[float, int]:
    """Seconds and exit status; output to a log, its tail to stderr on failure."""
    print(f"mac.sh: {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    log = work / f"{name}.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    secs = time.perf_counter() - t0
    if rc:
        print(log.read_text()[-3000:], file=sys.stderr)
    return secs, rc


import scoreflow.backends.mlx  # noqa: F401  (the OpenBLAS preload on Linux precedes mlx.core)
import mlx.core as mx
import mlx_lm

metal = mx.metal.is_available()
out = {
    "script": "bash benchmarks/mac.sh" + ("" if size == "full" else f" --{size}"),
    "machine": {"platform": platform.platform(), "machine": platform.machine(),
                "chip": sh("sysctl", "-n", "machdep.cpu.brand_string") or platform.processor(),
                "memory_gb": round(int(sh("sysctl", "-n", "hw.memsize") or 0) / 2**30, 1) or None,
                "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0]},
    "mlx": mx.__version__, "mlx_lm": mlx_lm.__version__, "metal": metal,
    "device": mx.device_info() if metal else "cpu (MLX sees no Metal GPU)",
    "commit": sh("git", "rev-parse", "--short", "HEAD"),
}

# The demo: scoreflow's own records give the stage times.
run_dir = work / "demo"
flags = ["optimize", "--backend", "mlx", "--no-dashboard"]
if size == "small":
    flags += ["--iterations", "1", "--problems", "2", "-k", "2", "--pairs", "2", "--test-problems", "2"]
elif size == "quick":
    flags += ["--iterations", "1", "--problems", "1", "-k", "2", "--pairs", "1", "--test-problems", "1"]
secs, rc = run("demo", [sys.executable, "-m", "scoreflow", *flags, "--run-dir", str(run_dir)])
d = {"command": " ".join(["scoreflow", *flags]), "seconds": round(secs, 1), "exit_status": rc}
metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()] if (run_dir / "metrics.jsonl").is_file() else []
steps = [json.loads(x) for x in (run_dir / "train.jsonl").read_text().splitlines()] if (run_dir / "train.jsonl").is_file() else []
d["iterations"] = [{k: m.get(k) for k in ("iteration", "workflows", "valid", "generator_tokens", "pairs", "steps",
                                          "train_seconds", "seconds")} for m in metrics if m.get("kind") == "iteration"]
d["evaluations"] = [{k: m.get(k) for k in ("iteration", "problems", "generator_tokens", "seconds")}
                    for m in metrics if m.get("kind") == "evaluate"]
d["compare"] = next(({k: m.get(k) for k in ("base_solve_rate", "trained_solve_rate", "difference")}
                     for m in metrics if m.get("kind") == "compare"), None)
d["train_step_seconds_median"] = statistics.median(s["seconds"] for s in steps) if steps else None
out["demo"] = d

# Generation and the training step against mlx-lm (and the backend's alternatives) on this device.
bench = work / "bench.json"
secs, rc = run("mlx_vs_mlx_lm", [sys.executable, "benchmarks/mlx_vs_mlx_lm.py", "--out", str(bench)]
               + ([] if size == "full" else [f"--{size}"]))
if bench.is_file():
    b = json.loads(bench.read_text())
    g, t = b.get("generation", {}), b.get("training", {})
    out["benchmark"] = {
        "seconds": round(secs, 1), "dtype": b.get("dtype"), "quantized": b.get("quantized"), "sizes": b.get("sizes"),
        "generation": {k: g.get(k) for k in ("tokens_per_s", "ratio", "ratio_cold", "prompt_cache_speedup",
                                             "own_sampler", "own_sampler_speedup", "peak_mb_ratio")},
        "training": {k: t.get(k) for k in t if k != "runs"},
        "targets": b.get("targets"),
    }
else:
    out["benchmark"] = {"exit_status": rc, "seconds": round(secs, 1)}
print(json.dumps(out, indent=1))
PY
