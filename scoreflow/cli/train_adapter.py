"""`scoreflow train-adapter`: train one adapter with Score-DPO by hand, through the backend contract.

From an existing run's iteration (its recorded pairs, its configuration, the loop's seed, starting
from the previous iteration's adapter) or from a JSON Lines file of pairs (scoreflow.model.backend.TrainPair
fields). The configuration merges as optimize's does (flags.build_config): the run's config.toml <
--config < flags < --set. With train.processes = N > 1 the PyTorch backend trains data-parallel on
N GPUs under `accelerate launch` (backends/cuda/ddp_train.py).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoreflow.model.backend import StepInfo, TrainConfig, TrainPair, read_pairs
from scoreflow.config import Config, read_toml, train_config
from scoreflow.errors import UserError
from scoreflow.cli.flags import FLAGS, build_config, config_file_args, debug_arg
from scoreflow.run.rundir import RunDir


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("train-adapter", help="train one adapter with Score-DPO: a run's iteration or a pairs file",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    debug_arg(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--pairs", type=Path, help="JSON Lines, one pair per line: prompt (chat messages), chosen, "
                     "rejected, score_chosen, score_rejected")
    src.add_argument("--run-dir", type=Path, help="an existing run: train on the pairs it sampled in --iteration")
    p.add_argument("--iteration", type=int, help="with --run-dir: whose pairs (and whose training seed)")
    p.add_argument("--out", type=Path, help="folder for the adapter (the backend's format); required")
    p.add_argument("--init-adapter", type=Path, help="adapter to start from (default: with --run-dir, the "
                   "previous iteration's if there is one; else a fresh LoRA seeded by run.seed)")
    p.add_argument("--checkpoint-dir", type=Path, help="resumable checkpoints (every rank must see this folder)")
    for flag, section, key, kind, help in FLAGS:
        if flag in ("--model", "--backend", "--device"):
            p.add_argument(flag, dest=f"{section}.{key}", type=kind, default=None, help=help)
    config_file_args(p, "override a config key (train.processes=N: data-parallel on N GPUs)")
    return p


@dataclass
class AdapterJob:
    cfg: Config
    pairs: list[TrainPair]
    train: TrainConfig
    out: Path
    init_adapter: Path | None = None
    checkpoint_dir: Path | None = None


def job_from_args(args: argparse.Namespace) -> AdapterJob:
    """The configuration, pairs and adapters of the command; with --run-dir the pairs are the ones the
    loop trained that iteration on."""
    if args.out is None:
        raise UserError("--out is required: the folder for the adapter")
    if not args.run_dir and not args.pairs:
        raise UserError("train on what? --run-dir RUN --iteration N (a run's pairs) or --pairs FILE.jsonl")
    base = None
    if args.run_dir:
        if args.iteration is None:
            raise UserError("--run-dir needs --iteration")
        base = read_toml(RunDir(args.run_dir).config_path)
    cfg = build_config(args, base)
    it = args.iteration or 0
    init = args.init_adapter
    if args.run_dir:
        from scoreflow.loop.loop import recorded_pairs

        pairs = recorded_pairs(cfg, args.run_dir, it)
        if not pairs:
            raise UserError(f"{args.run_dir} holds no pairs for iteration {it}")
        previous = RunDir(args.run_dir).adapter_dir(it - 1)
        if init is None and previous.is_dir():
            init = previous
    else:
        pairs = read_pairs(args.pairs)
    return AdapterJob(cfg, pairs, train_config(cfg, it), args.out, init, args.checkpoint_dir)


def run(args: argparse.Namespace) -> int:
    from scoreflow.run.session import make_backend

    job = job_from_args(args)
    policy = make_backend(job.cfg)
    if job.init_adapter:
        policy.load_adapter(job.init_adapter)

    def on_step(info: StepInfo) -> None:
        print(f"step {info.step}/{info.total} loss {info.loss:.4f} margin {info.margin:+.4f} "
              f"grad_norm {info.grad_norm:.3g} ({info.seconds:.1f} s)", flush=True)

    stats = policy.train(job.pairs, job.train, on_step=on_step, checkpoint_dir=job.checkpoint_dir)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    policy.save_adapter(job.out)
    print(f"adapter: {job.out} ({stats.steps} steps on {len(job.pairs)} pairs, mean loss {stats.loss:.4f})")
    return 0
