"""Data-parallel Score-DPO training of one adapter, one process (rank) per GPU under `accelerate launch`.

`TorchBackend.train` with TrainConfig.processes = N > 1 calls `launch`: it writes the pairs and a job
file (plain data: the Job below, TrainPair JSON Lines) to a temporary folder, runs `accelerate launch
-m scoreflow.backends.cuda.ddp_train --job JOB` while the backend's own copy of the model is offloaded
(Policy.offloaded), follows rank 0's step records and loads the adapter the ranks wrote. `scoreflow
train-adapter` is the command for training one adapter by hand; it reaches this module through the
backend's `train` too.

Every rank loads the whole model on its GPU (cuda:LOCAL_RANK); distributed.py says how a step is
shared. Rank 0 prints one `scoreflow-step {json}` line per step and a final `scoreflow-done {json}`, and
alone writes the adapter (PEFT format) and the checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from scoreflow.model.backend import LoraConfig, Policy, StepInfo, TrainConfig, TrainPair, TrainStats, read_pairs, write_pairs
from scoreflow.errors import UserError

from scoreflow.backends.cuda import distributed

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


def run(job: Job, pairs: Sequence[TrainPair] | None = None) -> TrainStats:
    """This rank's part of the job (all of it in a plain process); `pairs` default to job.pairs' contents."""
    from scoreflow.backends.cuda import load

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


def launch(policy: Policy, job: Job, pairs: Sequence[TrainPair], cfg: TrainConfig,
           on_step: Callable[[StepInfo], None] | None = None, checkpoint_dir: Path | None = None) -> TrainStats:
    """Train `policy`'s adapter on cfg.processes ranks under `accelerate launch`, then load the result
    into it. `job` names the model (model, lora, dtype, device); the ranks start from the policy's
    current adapter, and meanwhile the policy is offloaded, leaving the GPUs to them."""
    work = Path(tempfile.mkdtemp(prefix="scoreflow-ddp-"))
    try:
        write_pairs(work / "pairs.jsonl", pairs)
        policy.save_adapter(work / "init")
        job = replace(job, pairs=str(work / "pairs.jsonl"), out=str(work / "out"), train={**asdict(cfg), "processes": 1},
                      init_adapter=str(work / "init"), checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None)
        (work / "job.json").write_text(json.dumps(asdict(job)))
        cmd = launch_command(cfg.processes, job.device == "cpu") + ["--job", str(work / "job.json")]
        with policy.offloaded():
            stats = _follow(cmd, work / "launch.log", on_step)
        policy.load_adapter(work / "out")
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


# ---- a rank -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """One rank of `launch`'s job (`--job JOB.json`, written by launch)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ap = argparse.ArgumentParser(prog=f"accelerate launch ... -m {MODULE}", allow_abbrev=False, description=(
        "One rank of a data-parallel training job; `scoreflow train-adapter` is the command to train by hand."))
    ap.add_argument("--job", type=Path, required=True, help="the job file that launch() writes")
    args = ap.parse_args(argv)
    try:
        run(Job(**json.loads(args.job.read_text())))
    except UserError as e:
        print(f"ddp_train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
