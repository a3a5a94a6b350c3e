"""Peak memory and time of a training step against `train.recompute_share`, on a run's own pairs
(PyTorch backend).

Under `train.gradient_checkpointing` the first round(share x n) decoder layers recompute their
activations in the backward pass and the others keep them. Each share trains the same pairs one step
each, the shares' order alternating from pair to pair; per share: the step's wall and CPU seconds
(summed over the pairs after the first, which warms up) as a ratio to share 0 (no recomputation), and
the process's peak resident memory during its steps (the kernel's high-water mark, reset before each
step through /proc/self/clear_refs; Linux only). The loss and gradient do not depend on the share
(tests/test_torch_train.py checks them against the plain loop).

    python benchmarks/recompute.py --run-dir runs/RUN --pairs 5 --shares 0 0.5 0.6 1

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_info, emit, today  # noqa: E402


def high_water_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_high_water() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="a run of the PyTorch backend with pairs")
    ap.add_argument("--iteration", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=5, help="the iteration's first N pairs")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5, 0.6, 1.0],
                    help="recompute shares to compare; the first is the baseline of the ratios")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not Path("/proc/self/clear_refs").exists():
        sys.exit("recompute.py: needs Linux (/proc/self/clear_refs resets the peak memory)")

    import torch

    from scoreflow.cli.main import parser
    from scoreflow.cli.train_adapter import job_from_args
    from scoreflow.run.session import make_backend

    job = job_from_args(parser().parse_args(["train-adapter", "--run-dir", str(args.run_dir), "--iteration",
                                             str(args.iteration), "--out", str(args.run_dir / "unused")]))
    backend = make_backend(job.cfg)
    if job.init_adapter:
        backend.load_adapter(job.init_adapter)
    layers = len(backend.model.get_base_model().get_decoder().layers)
    loaded = high_water_mib()
    rows = {s: {"share": s, "recomputed_layers": round(s * layers), "wall_s": 0.0, "cpu_s": 0.0, "peak_mib": 0.0}
            for s in args.shares}
    for k, pair in enumerate(job.pairs[:args.pairs]):
        for share in args.shares if k % 2 == 0 else args.shares[::-1]:
            cfg = replace(job.train, gradient_checkpointing=share > 0, recompute_share=share, checkpoint_every=0)
            reset_high_water()
            wall, cpu = time.perf_counter(), time.process_time()
            backend.train([pair], cfg)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            row = rows[share]
            row["peak_mib"] = max(row["peak_mib"], round(high_water_mib()))
            if k:  # the first pair warms up
                row["wall_s"] += wall
                row["cpu_s"] += cpu
            print(f"pair {k} share {share}: {wall:.1f} s, peak {high_water_mib():.0f} MiB", file=sys.stderr, flush=True)
    base = rows[args.shares[0]]
    for row in rows.values():
        row["wall_ratio"] = round(row["wall_s"] / base["wall_s"], 3) if base["wall_s"] else None
        row["cpu_ratio"] = round(row["cpu_s"] / base["cpu_s"], 3) if base["cpu_s"] else None
        row["wall_s"], row["cpu_s"] = round(row["wall_s"], 1), round(row["cpu_s"], 1)
    emit({"benchmark": "recompute", "date": today(), "machine": device_info(), "run": str(args.run_dir),
          "iteration": args.iteration, "pairs": min(args.pairs, len(job.pairs)), "layers": layers,
          "threads": torch.get_num_threads(), "loaded_mib": round(loaded), "rows": list(rows.values())}, args.out)


if __name__ == "__main__":
    main()
