"""Data-parallel Score-DPO training of one adapter, one process per GPU under `accelerate launch`.

Train iteration 2's adapter of an existing run on 8 GPUs (model, LoRA and training settings come from
the run's config.toml, --config / --set override them; it starts from iteration 1's adapter):

    accelerate launch --multi_gpu --num_processes 8 -m scoreflow.backends.cuda.ddp_train \\
        --run-dir runs/gsm8k-20260101-120000 --iteration 2 --out adapter-iter-2

or from a JSON Lines file of pairs, one per line with the fields of scoreflow.backend.TrainPair
(prompt: chat messages, chosen, rejected, score_chosen, score_rejected):

    accelerate launch --multi_gpu --num_processes 8 -m scoreflow.backends.cuda.ddp_train \\
        --pairs pairs.jsonl --model meta-llama/Llama-3.1-8B-Instruct --out adapter --set train.batch_size=32

Every rank loads the whole model on its GPU (cuda:LOCAL_RANK); distributed.py says how a step is
shared. Rank 0 prints one `scoreflow-step {json}` line per step and a final `scoreflow-done {json}`, and
alone writes the adapter (PEFT format) and the checkpoints. `scoreflow optimize` with
train.processes = N > 1 runs its training step through this module: see `launch` below.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from scoreflow.backend import LoraConfig, StepInfo, TrainConfig, TrainPair, TrainStats
from scoreflow.errors import UserError

from . import distributed

MODULE = "scoreflow.backends.cuda.ddp_train"
STEP, DONE = "scoreflow-step ", "scoreflow-done "


@dataclass
class Job:
    model: str  # base model: HF folder, .gguf file or hub id
    pairs: str  # JSON Lines file of TrainPair fields ('' when they are passed to run())
    out: str  # where rank 0 writes the adapter
    train: dict = field(default_factory=dict)  # TrainConfig fields
    lora: dict = field(default_factory=dict)  # LoraConfig fields
    dtype: str = "auto"
    device: str = "auto"  # auto: cuda:LOCAL_RANK when PyTorch sees a GPU, else cpu
    seed: int = 0  # LoRA initialisation when there is no init_adapter
    init_adapter: str | None = None
    checkpoint_dir: str | None = None


def read_pairs(path: Path) -> list[TrainPair]:
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UserError(f"cannot read pairs file {path}: {e.strerror or e}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            pair = TrainPair(r["prompt"], r["chosen"], r["rejected"], float(r["score_chosen"]),
                             float(r["score_rejected"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}:{n}: not a training pair ({type(e).__name__}: {e})") from None
        if not isinstance(pair.chosen, str) or not isinstance(pair.rejected, str) or not isinstance(pair.prompt, list):
            raise UserError(f"{path}:{n}: chosen and rejected must be texts and prompt a list of chat messages "
                            "(a run's pairs.jsonl holds workflow slots: use --run-dir RUN --iteration N)")
        out.append(pair)
    return out


def write_pairs(path: Path, pairs: Sequence[TrainPair]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")


def run(job: Job, pairs: Sequence[TrainPair] | None = None) -> TrainStats:
    """This rank's part of the job (all of it in a plain process); `pairs` default to job.pairs' contents."""
    from . import load

    device = distributed.local_device(job.device)
    rank, world = distributed.setup(device)
    try:
        lora = LoraConfig(**{**job.lora, "targets": tuple(job.lora.get("targets", LoraConfig.targets))})
        backend = load(job.model, device=str(device), lora=lora, seed=job.seed, dtype=job.dtype)
        if job.init_adapter:
            backend.load_adapter(Path(job.init_adapter))

        def on_step(info: StepInfo) -> None:
            if rank == 0:
                print(STEP + json.dumps(asdict(info)), flush=True)

        cfg = TrainConfig(**{**job.train, "processes": 1})  # this process is one rank already
        ck = Path(job.checkpoint_dir) if job.checkpoint_dir else None
        pairs = read_pairs(Path(job.pairs)) if pairs is None else pairs
        stats = backend.train(pairs, cfg, on_step=on_step, checkpoint_dir=ck)
        if rank == 0:
            out = Path(job.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            backend.save_adapter(out)
            print(DONE + json.dumps(asdict(stats)), flush=True)
        if world > 1:
            torch.distributed.barrier()
        return stats
    finally:
        distributed.close()


# ---- `scoreflow optimize` with train.processes > 1 ----------------------------------------------

def launch_command(processes: int, cpu: bool) -> list[str]:
    """`accelerate launch` of this module. With several processes accelerate's --multi_gpu launcher
    (torch.distributed.run) starts them, on CPU-only machines too (gloo); port 0 picks a free port."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        cmd += ["--multi_gpu", "--main_process_port", "0"]
    elif cpu:
        cmd += ["--cpu"]
    return cmd + ["-m", MODULE]


def launch(backend, pairs: Sequence[TrainPair], cfg: TrainConfig,
           on_step: Callable[[StepInfo], None] | None = None, checkpoint_dir: Path | None = None) -> TrainStats:
    """Train `backend`'s adapter on cfg.processes ranks under `accelerate launch`, then load the result
    into it. The ranks start from the backend's current adapter; meanwhile this process's copy of the
    model waits on the CPU, leaving the GPUs to them."""
    work = Path(tempfile.mkdtemp(prefix="scoreflow-ddp-"))
    try:
        write_pairs(work / "pairs.jsonl", pairs)
        backend.save_adapter(work / "init")
        cpu = backend.torch_device.type == "cpu"
        job = Job(model=backend.base_path, pairs=str(work / "pairs.jsonl"), out=str(work / "out"),
                  train={**asdict(cfg), "processes": 1}, lora=asdict(backend.lora),
                  dtype=str(backend.dtype).removeprefix("torch."), device="cpu" if cpu else "auto",
                  init_adapter=str(work / "init"), checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)
        (work / "job.json").write_text(json.dumps(asdict(job)))
        cmd = launch_command(cfg.processes, cpu) + ["--job", str(work / "job.json")]
        with backend._lock:
            if not cpu:
                backend.model.to("cpu")
                torch.cuda.empty_cache()
            try:
                stats = _follow(cmd, work / "launch.log", on_step)
            finally:
                if not cpu:
                    backend.model.to(backend.torch_device)
        backend.load_adapter(work / "out")
        return stats
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _follow(cmd: list[str], log: Path, on_step: Callable[[StepInfo], None] | None) -> TrainStats:
    """Run the launch, passing rank 0's step records to on_step; its other output goes to `log`."""
    done = None
    with open(log, "w", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(STEP) and on_step:
                    on_step(StepInfo(**json.loads(line[len(STEP):])))
                elif line.startswith(DONE):
                    done = json.loads(line[len(DONE):])
                else:
                    err.write(line)
            rc = proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    if rc != 0 or done is None:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
        raise RuntimeError(f"data-parallel training failed (exit code {rc}): {' '.join(cmd)}\n{tail}")
    history = [StepInfo(**h) for h in done.pop("history")]
    return TrainStats(**done, history=history)


# ---- the command line ---------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"accelerate launch ... -m {MODULE}", allow_abbrev=False, description=(
        "Train one adapter with Score-DPO, data-parallel over the launched processes."))
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", type=Path, help="JSON Lines, one pair per line: prompt (chat messages), chosen, "
                     "rejected, score_chosen, score_rejected")
    src.add_argument("--run-dir", type=Path, help="an existing run: train on the pairs it sampled in --iteration")
    src.add_argument("--job", type=Path, help=argparse.SUPPRESS)  # written by launch()
    ap.add_argument("--iteration", type=int, help="with --run-dir: whose pairs (and whose training seed)")
    ap.add_argument("--out", type=Path, help="folder for the adapter (PEFT format)")
    ap.add_argument("--model", help="base model (default: generator.model of the configuration)")
    ap.add_argument("--init-adapter", type=Path, help="adapter to start from (default: with --run-dir, the "
                    "previous iteration's if there is one; else a fresh LoRA seeded by run.seed)")
    ap.add_argument("--checkpoint-dir", type=Path, help="resumable checkpoints (every rank must see this folder)")
    ap.add_argument("--config", metavar="FILE.toml", help="configuration file (see `scoreflow config`)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config key")
    return ap


def job_from_args(args: argparse.Namespace) -> tuple[Job, list[TrainPair]]:
    """The job and its pairs; with --run-dir every rank rebuilds the pairs from the run's records."""
    from scoreflow import config as C
    from scoreflow.loop import recorded_pairs, train_config
    from scoreflow.session import lora_config

    if args.out is None:
        raise UserError("--out is required")
    layers = []
    if args.run_dir:
        if args.iteration is None:
            raise UserError("--run-dir needs --iteration")
        layers.append(C.read_toml(args.run_dir / "config.toml"))
    if args.config:
        layers.append(C.read_toml(args.config))
    layers.append(C.parse_set(args.set))
    if args.model:
        layers.append({"generator": {"model": args.model}})
    cfg = C.build(C.merge(*layers))
    it = args.iteration or 0
    init = args.init_adapter
    if args.run_dir:
        pairs = recorded_pairs(cfg, args.run_dir, it)
        if not pairs:
            raise UserError(f"{args.run_dir} holds no pairs for iteration {it}")
        previous = args.run_dir / "adapters" / f"iter-{it - 1}"
        if init is None and previous.is_dir():
            init = previous
    else:
        pairs = read_pairs(args.pairs)
    lora = lora_config(cfg)
    job = Job(model=cfg.generator.model, pairs=str(args.pairs or ""), out=str(args.out),
              train=asdict(train_config(cfg, it)), lora=asdict(lora),
              dtype=cfg.generator.dtype, device="cpu" if cfg.generator.device.startswith("cpu") else "auto",
              seed=cfg.run.seed, init_adapter=str(init) if init else None,
              checkpoint_dir=str(args.checkpoint_dir) if args.checkpoint_dir else None)
    return job, pairs


def main(argv: list[str] | None = None) -> int:
    from scoreflow.cli import _quiet

    _quiet()
    args = parser().parse_args(argv)
    try:
        if args.job:
            run(Job(**json.loads(args.job.read_text())))
        else:
            run(*job_from_args(args))
    except UserError as e:
        print(f"ddp_train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
