"""Building what a run needs from its configuration: task, policy and sampler, executor, sandbox,
runner, and the run's problems."""

from __future__ import annotations

import importlib.util
import random
import time
from dataclasses import dataclass
from pathlib import Path

from scoreflow.model.backend import Backend, Sampler, load_backend, resolve_backend_name
from scoreflow.config import Config, lora_config, sandbox_limits
from scoreflow.errors import UserError
from scoreflow.execute.executor import Executor
from scoreflow.execute.executor import make_executor as build_executor
from scoreflow.run.reporter import Reporter
from scoreflow.run.rundir import RunDir
from scoreflow.execute.runner import Runner
from scoreflow.sandbox.parent import Sandbox
from scoreflow.tasks import load as load_task
from scoreflow.tasks.base import Problem, Task


@dataclass
class Session:
    cfg: Config
    task: Task
    backend: Backend  # the Policy: training and adapters (it samples too, for the backend engine)
    executor: Executor
    sandbox: Sandbox
    runner: Runner
    run: RunDir
    reporter: Reporter
    sampler: Sampler  # generation: the backend itself, or another engine (vLLM) that serves its adapter

    def close(self) -> None:
        close = getattr(self.sampler, "close", None)  # the vLLM engine stops its server
        if close is not None:
            close()
        self.run.close()


def make_task(cfg: Config) -> Task:
    from dataclasses import asdict

    return load_task(cfg.run.task, cfg.run.data or None, asdict(cfg.task))


def make_sandbox(cfg: Config) -> Sandbox:
    return Sandbox(sandbox_limits(cfg), concurrency=cfg.sandbox.concurrency)


def make_backend(cfg: Config) -> Backend:
    g, lora = cfg.generator, lora_config(cfg)
    if cfg.train.processes > 1 and resolve_backend_name(g.backend) != "cuda":
        raise UserError("train.processes > 1 (data-parallel training) needs the PyTorch backend: --backend cuda")
    return load_backend(g.backend, g.model, device=g.device, lora=lora, seed=cfg.run.seed, dtype=g.dtype,
                        batch_size=g.batch_size)


def with_engine(cfg: Config, backend: Backend, workdir: Path, reporter: Reporter) -> Sampler:
    """The sampler generator.engine names: the backend itself, or a vLLM server that serves its adapter."""
    g = cfg.generator
    engine = g.engine
    if engine == "auto":  # vLLM when asked for by its settings, or on a GPU where it is installed
        on_cuda = backend.name == "cuda" and str(backend.device).startswith("cuda")
        asked = g.vllm_url or g.vllm_python or (on_cuda and importlib.util.find_spec("vllm") is not None)
        engine = "vllm" if asked else "backend"
    if engine == "backend":
        return backend
    if backend.name != "cuda":  # before importing the PyTorch backend, which an MLX install may lack
        raise UserError("generator.engine = vllm needs the PyTorch backend (--backend cuda)")
    from scoreflow.backends.cuda import vllm_server

    where = g.vllm_url or f"a vLLM server (log: {workdir / 'vllm.log'})"
    reporter.log(f"generation on {where}")
    started = time.monotonic()
    gen = vllm_server.start(backend, python=g.vllm_python, url=g.vllm_url, extra_args=g.vllm_args,
                            workdir=workdir, seed=cfg.run.seed)
    if not g.vllm_url:
        reporter.log(f"vLLM server ready in {time.monotonic() - started:.0f} s")
    return gen


def run_executor(cfg: Config, sampler: Sampler | None, run: RunDir | None = None) -> Executor:
    """The executor LLM (by default the generator's base model in this process, adapter off), with
    spend caps, the reply cache and, on resume, what the run spent before."""
    usage = run.status().get("usage") if run is not None else None
    cache = run.executor_cache if run is not None else None
    return build_executor(cfg.executor, sampler, seed=cfg.run.seed, cache_path=cache, usage=usage)


def make_runner(cfg: Config, task: Task, executor: Executor | None) -> Runner:
    """What runs workflows on the task's problems: the sandbox and the executor, with the config's limits."""
    return Runner(task, executor, make_sandbox(cfg), max_tokens=cfg.executor.max_tokens,  # type: ignore[arg-type]
                  extract=cfg.executor.extract_answer)


def build_session(cfg: Config, run_dir: Path, reporter: Reporter | None = None, *,
                  task: Task | None = None) -> Session:
    task = task or make_task(cfg)
    run = RunDir.create(run_dir)
    reporter = reporter or Reporter()
    backend = make_backend(cfg)
    sampler = with_engine(cfg, backend, run.path, reporter)
    executor = run_executor(cfg, sampler, run)
    runner = make_runner(cfg, task, executor)
    return Session(cfg, task, backend, executor, runner.sandbox, runner, run, reporter, sampler)


def select(problems: list[Problem], n: int, seed: int) -> list[Problem]:
    """`n` problems chosen with `seed` (all when n is 0 or larger than the split), in file order."""
    if n <= 0 or n >= len(problems):
        return list(problems)
    return [problems[i] for i in _chosen(len(problems), n, seed)]


def _chosen(total: int, n: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(total), n))


def select_fresh(problems: list[Problem], n: int, seed: int, iteration: int) -> list[Problem]:
    """Iteration `iteration`'s `n` problems when each iteration takes fresh ones: the first iteration's
    are `select`'s, later ones the next `n` of a seeded order of the rest, cycling through the split."""
    if n <= 0 or n >= len(problems):
        return list(problems)
    first = _chosen(len(problems), n, seed)
    rest = sorted(set(range(len(problems))) - set(first))
    random.Random(seed + 1).shuffle(rest)
    order, start = first + rest, (iteration - 1) * n
    return [problems[i] for i in sorted(order[(start + j) % len(order)] for j in range(n))]


def run_problems(cfg: Config, task: Task, split: str = "validate", iteration: int = 1) -> list[Problem]:
    """This run's problems of `split`: run.problems of the optimisation split (validate) for `iteration`,
    run.test_problems of the test split, chosen with run.seed."""
    if split == "test":
        return select(task.problems(split), cfg.run.test_problems, cfg.run.seed)
    if cfg.run.fresh_problems:
        return select_fresh(task.problems(split), cfg.run.problems, cfg.run.seed, iteration)
    return select(task.problems(split), cfg.run.problems, cfg.run.seed)
