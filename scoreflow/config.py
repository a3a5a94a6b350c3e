"""The one configuration format: TOML sections mirroring these dataclasses, every key documented here.

Precedence: built-in defaults < preset (with its values for the task, if any) < config file <
command-line flags. The `paper` preset is the reference implementation's recipe (docs/paper.md traces
every value); the `demo` preset (chosen automatically for the embedded SmolLM2) sizes a run for a
laptop CPU.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from scoreflow.model.backend import LOSSES, LR_SCHEDULES, LoraConfig, TrainConfig
from scoreflow.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def opt(default: Any, help: str, choices: tuple | None = None, min: float | None = None) -> Any:
    meta = {"help": help, "choices": choices, "min": min}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    task: str = opt("arith", "task name: arith, gsm8k, math, humaneval, mbpp, hotpotqa, drop, jsonl")
    data: str = opt("", "data file or folder of AFlow-format JSON Lines ('' = $SCOREFLOW_DATA or the cache)")
    iterations: int = opt(3, "optimisation iterations (generate, execute, pairs, train)", min=1)
    problems: int = opt(0, "problems of the optimisation split used per iteration (0 = all)", min=0)
    fresh_problems: bool = opt(False, "with `problems` below the split's size: each iteration takes the next "
                               "`problems` problems not used yet (cycling through the split) instead of the same "
                               "ones, so that later iterations do not fit the first iteration's problems")
    test_problems: int = opt(0, "problems of the test split used by `evaluate` (0 = all)", min=0)
    compare: bool = opt(False, "evaluate the base generator before training and the trained one after it on "
                        "test_problems held-out problems, and report the difference with its 95% CI")
    judge: bool = opt(True, "test split of math, hotpotqa and drop: also ask the executor whether each answer matches "
                      "the gold (1/0) and report judged_solve_rate beside the exact solve rate, as the reference "
                      "does; its calls count against the spend caps")
    seed: int = opt(0, "seed for problem selection, sampling, pair sampling and LoRA init")
    preset: str = opt("auto", "sizes: demo (laptop CPU), paper (the reference implementation's recipe, "
                      "docs/paper.md), auto (demo for the embedded model, else paper)",
                      choices=("auto", "demo", "paper"))


@dataclass
class TaskSection:
    question_field: str = opt("question", "task jsonl: the field holding the question")
    answer_field: str = opt("answer", "task jsonl: the field holding the gold answer")
    id_field: str = opt("id", "task jsonl: the field holding a record id (line number when absent)")
    scorer: str = opt("exact", "task jsonl: number, exact, f1, boxed or python-tests",
                      choices=("number", "exact", "f1", "boxed", "python-tests"))
    family: str = opt("qa", "task jsonl: operator family math, qa or code", choices=("math", "qa", "code"))
    description: str = opt("", "task jsonl: one line describing the problems to the generator")
    preload_imports: bool = opt(True, "code tasks: math, re, hashlib and List/Dict/Tuple/Optional/Any available "
                                "without an import, as in the reference harness")


@dataclass
class GeneratorConfig:
    model: str = opt("smollm2-135m", "generator base model: smollm2-135m (embedded), an HF folder, a .gguf file or a hub id")
    backend: str = opt("auto", "auto (mlx on Apple silicon, else PyTorch), cuda (PyTorch, CUDA or CPU) or mlx",
                       choices=("auto", "cuda", "torch", "pytorch", "mlx"))
    device: str = opt("auto", "PyTorch device: auto, cpu, cuda, cuda:N")
    dtype: str = opt("auto", "auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16")
    workflows_per_problem: int = opt(8, "k: workflows generated per problem per iteration", min=1)
    temperature: float = opt(0.2, "sampling temperature", min=0)
    test_temperature: float = opt(0.0, "temperature of the one workflow per problem that test-split evaluation and "
                                  "`solve` generate (0 = greedy: the generator's most likely workflow, so that a "
                                  "base-vs-trained comparison carries no sampling noise); a retry of an invalid one "
                                  "samples at `temperature`", min=0)
    top_p: float = opt(0.95, "nucleus sampling p", min=0)
    max_new_tokens: int = opt(1000, "token limit per workflow", min=1)
    hide_numbers: bool = opt(False, "show the generator each problem with its numbers as \"some\" (the executor still sees "
                             "them), so that workflows are written for the problem's kind and cannot copy its numbers")
    explore_examples: bool = opt(False, "in optimisation, workflow j of problem i sees the few-shot examples rotated by "
                                 "i + j, so the k samples start from different methods (a small model copies the last "
                                 "example); training, evaluation and solve use the examples in their order")
    max_attempts: int = opt(3, "generation rounds for a slot whose workflow is invalid", min=1)
    batch_size: int = opt(8, "workflows generated per batch: rows the backend decodes together, or the vllm "
                          "engine sends at once (raise it, e.g. to 256, on a GPU)", min=1)
    engine: str = opt("auto", "generation engine: backend (the model being trained), vllm (a vLLM server serving "
                      "the current adapter per request; PyTorch backend), auto (vllm when vllm_url or vllm_python "
                      "is set, or on CUDA with vLLM installed; else backend)", choices=("auto", "backend", "vllm"))
    vllm_python: str = opt("", "vllm engine: the Python that has vLLM installed ('' = this one)")
    vllm_url: str = opt("", "vllm engine: a vLLM server already running (started with --enable-lora and "
                        "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, on this filesystem); '' = start one")
    vllm_args: str = opt("", "vllm engine: extra arguments for the server we start, e.g. "
                         "'--gpu-memory-utilization 0.5' (default 0.4 on CUDA, leaving room for training)")


    def attempt_temperature(self, attempt: int, test: bool) -> float:
        """A test workflow's first attempt at `test_temperature`; optimisation samples and every retry
        at `temperature` (a greedy retry would only repeat itself)."""
        return self.test_temperature if test and attempt == 0 else self.temperature

@dataclass
class ExecutorConfig:
    kind: str = opt("local", "local (a backend model in this process) or openai (any OpenAI-compatible server)",
                    choices=("local", "openai"))
    model: str = opt("", "executor model: for local, a model like generator.model ('' = the generator's base); "
                         "for openai, the model name sent to the server")
    base_url: str = opt("", "OpenAI-compatible base URL ('' = api.openai.com), e.g. http://127.0.0.1:11434/v1")
    api_key_env: str = opt("OPENAI_API_KEY", "name of the environment variable holding the API key (never the key)")
    temperature: float = opt(0.0, "executor sampling temperature", min=0)
    max_tokens: int = opt(512, "token limit per executor call", min=1)
    runs: int = opt(3, "r: executions of each workflow; its score is the mean", min=1)
    concurrency: int = opt(8, "executor requests in flight at once", min=1)
    timeout_s: float = opt(120.0, "seconds per request before it is retried", min=1)
    max_retries: int = opt(6, "retries per request on 429, 5xx, timeouts and dropped connections", min=0)
    max_cost_usd: float = opt(0.0, "stop the run cleanly once executor spend reaches this many USD (0 = no cap)", min=0)
    max_total_tokens: int = opt(0, "stop the run cleanly once executor tokens reach this count (0 = no cap)", min=0)
    price_in_per_mtok: float = opt(-1.0, "USD per million prompt tokens (-1 = from the built-in table by model name)")
    price_out_per_mtok: float = opt(-1.0, "USD per million completion tokens (-1 = from the built-in table)")
    cache: bool = opt(True, "cache executor replies by (request, repetition index) within a run")
    extract_answer: bool = opt(True, "one executor call after a maths or QA workflow to extract its final answer")
    batch_size: int = opt(8, "local executor: calls gathered into one batched generation", min=1)


@dataclass
class LoraSection:
    rank: int = opt(8, "LoRA rank r", min=1)
    alpha: float = opt(16.0, "LoRA alpha (scale = alpha / rank)", min=0)
    dropout: float = opt(0.01, "LoRA dropout", min=0)
    targets: list = opt(["q_proj", "v_proj"], "module names that get LoRA")


@dataclass
class TrainSection:
    loss: str = opt("score-dpo", "score-dpo, dpo, sft (winners only), or grpo (group-relative: every pair of each "
                    "problem's k workflows, advantages normalised in the group, a clipped ratio to the generator "
                    "that wrote them; train.pairs unused, batch_size counts problems)", choices=LOSSES)
    beta: float = opt(0.1, "preference loss beta", min=0)
    clip: float = opt(0.2, "grpo: the ratio to the generator that wrote the workflows is clipped to 1 +- clip",
                      min=0)
    pairs: int = opt(2000, "N: pairs sampled per iteration, with replacement", min=1)
    invalid_as_zero: bool = opt(False, "workflows still invalid after max_attempts enter pairs with score 0, "
                                "so training also teaches the format (on in the demo preset for weak models)")
    valid_floor: float = opt(0.0, "with invalid_as_zero: a valid workflow's training score is valid_floor + "
                             "(1 - valid_floor) x its task score, so valid but wrong ranks above invalid (0)",
                             min=0)
    cost_weight: float = opt(0.0, "executor cost in the score pairs are made from: a workflow's task score less "
                             "cost_weight x its executor cost per run relative to the iteration's mean (USD when the "
                             "executor prices calls, else tokens), kept between 0 and the task score: 0.2 takes 0.2 "
                             "off a workflow of average cost, 0.4 off one costing twice that (0 = cost ignored, "
                             "as in the paper)", min=0)
    sampling_alpha: float = opt(3.0, "pairs drawn with probability proportional to (s_w - s_l)^alpha (0 = uniform)", min=0)
    pair_draw: str = opt("weighted", "weighted: every pair of the iteration by that weight (the paper's); per-problem: "
                         "a problem uniformly among those with pairs, then one of its pairs by that weight",
                         choices=("weighted", "per-problem"))
    learning_rate: float = opt(1e-4, "AdamW learning rate on the LoRA weights (the first step's, under lr_schedule)",
                               min=0)
    lr_schedule: str = opt("constant", "the learning rate over an iteration's optimiser steps: constant, or linear "
                           "(learning_rate at the first step, decaying linearly to 0 over the iteration's steps, "
                           "as the reference trains under trl's DPOTrainer)", choices=LR_SCHEDULES)
    lr_decay: float = opt(1.0, "iteration i trains at learning_rate x lr_decay^(i-1) (1 = the same every iteration); "
                          "below 1 keeps later iterations' samples, and so their pairs, spread over more problems",
                          min=0)
    epochs: int = opt(1, "passes over the sampled pairs", min=1)
    batch_size: int = opt(1, "pairs per optimiser step", min=1)
    gradient_checkpointing: bool = opt(False, "recompute activations in the backward pass instead of keeping them: "
                                       "less memory, more time (all layers: ~2x less peak, ~1.3x the step time "
                                       "on a CPU)")
    recompute_share: float = opt(1.0, "with gradient_checkpointing: the share of decoder layers (the first ones) "
                                 "that recompute; the others keep their activations (memory and time in between)",
                                 min=0)
    opening_gradient: bool = opt(True, "false: the opening all generator prompts share (system prompt and examples) "
                                 "runs without gradient in training, its keys and values taken as given: the same "
                                 "log-probs, a gradient without the path through the opening, less time and memory "
                                 "per step (PyTorch on CPU and MLX, elsewhere the exact gradient; not with "
                                 "gradient_checkpointing)")
    max_length: int = opt(2048, "prompt + completion token limit in training", min=16)
    checkpoint_every: int = opt(8, "steps between resumable training checkpoints (0 = none)", min=0)
    processes: int = opt(1, "data-parallel training processes, one per GPU (PyTorch backend; > 1 runs each "
                         "training step under `accelerate launch`)", min=1)


@dataclass
class SandboxSection:
    timeout_s: float = opt(30.0, "wall-clock seconds a workflow or program may run, executor waits excluded", min=0.1)
    memory_mb: int = opt(1024, "address-space limit of a sandboxed process", min=64)
    cpu_s: int = opt(30, "CPU-seconds limit of a sandboxed process", min=1)
    max_output_chars: int = opt(20000, "longest output kept from a run", min=100)
    concurrency: int = opt(8, "sandboxed processes at once", min=1)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    task: TaskSection = field(default_factory=TaskSection)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    sandbox: SandboxSection = field(default_factory=SandboxSection)


SECTIONS = {f.name: f.type for f in fields(Config)}

# Keys that may change when a run is resumed: they do not change what was computed.
RESUMABLE = {
    ("run", "iterations"), ("run", "test_problems"), ("run", "preset"), ("run", "judge"), ("generator", "device"),
    ("executor", "max_cost_usd"), ("executor", "max_total_tokens"), ("executor", "concurrency"),
    ("executor", "timeout_s"), ("executor", "max_retries"), ("sandbox", "concurrency"), ("train", "processes"),
    ("generator", "engine"), ("generator", "vllm_python"), ("generator", "vllm_url"), ("generator", "vllm_args"),
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The reference implementation's values where they differ from the defaults; docs/paper.md traces
    # every setting to the reference's files and says where and why scoreflow differs.
    "paper": {
        "generator": {"test_temperature": 0.2},
        "executor": {"max_tokens": 4096},
        "lora": {"dropout": 0.0},
        "train": {"learning_rate": 1e-6, "lr_schedule": "linear", "max_length": 10000},
    },
    # Sized for SmolLM2-135M on 2 CPU cores: one iteration, then the base and the trained generator on the
    # held-out test problems (docs/demo.md says why each value).
    "demo": {
        "run": {"iterations": 1, "problems": 12, "test_problems": 32, "compare": True},
        "generator": {"workflows_per_problem": 8, "temperature": 0.5, "max_new_tokens": 128, "max_attempts": 1,
                      "hide_numbers": True, "explore_examples": True, "batch_size": 96},
        "executor": {"runs": 1, "max_tokens": 48},
        "train": {"pairs": 32, "batch_size": 1, "invalid_as_zero": True, "valid_floor": 0.5,
                  "gradient_checkpointing": True, "recompute_share": 0.6},
    },
}


# A preset's values for one task, over the preset's own (the reference trains HumanEval on fewer pairs).
PRESET_TASKS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "paper": {"humaneval": {"train": {"pairs": 600}}},
}


def preset_layer(preset: str, task: str) -> dict[str, dict[str, Any]]:
    """The values a preset sets for a task: its own, then its per-task ones."""
    return merge(PRESETS[preset], PRESET_TASKS.get(preset, {}).get(task, {}))


def _section_classes() -> dict[str, type]:
    return {f.name: f.default_factory for f in fields(Config)}  # type: ignore[misc]


def _coerce(section: str, f, default: Any, value: Any) -> Any:
    where = f"{section}.{f.name}"
    kind = type(default)
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            value = value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, not {value!r}")
    elif kind is int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise UserError(f"{where} must be a whole number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be a whole number, not {value!r}")
    elif kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise UserError(f"{where} must be a number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, not {value!r}")
        value = float(value)
    elif kind is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
            raise UserError(f"{where} must be a non-empty list of strings")
    else:
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string, not {value!r}")
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise UserError(f"{where} = {value!r}: choose one of {', '.join(meta['choices'])}")
    if meta.get("min") is not None and value < meta["min"]:
        low = "positive" if meta["min"] == 1 else f"at least {meta['min']}"
        raise UserError(f"{where} = {value!r}: must be {low}")
    return value


def read_toml(path: str | Path) -> dict[str, dict[str, Any]]:
    p = Path(path).expanduser()
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file not found: {p}") from None
    except PermissionError:
        raise UserError(f"config file is not readable: {p}") from None
    except IsADirectoryError:
        raise UserError(f"config path is a folder, not a TOML file: {p}") from None
    except UnicodeDecodeError:
        raise UserError(f"config file is not UTF-8 text: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"malformed TOML in {p}: {e}") from None
    for section, values in raw.items():
        if section not in SECTIONS:
            raise UserError(f"{p}: unknown section [{section}]; sections are {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise UserError(f"{p}: {section} must be a [section] table")
    return raw


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """`--set section.key=value` flags."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise UserError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = value
    return out


def merge(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    return out


def build(user: dict[str, dict[str, Any]], snapshot: bool = False) -> Config:
    """Defaults < preset < `user` (file then flags, already merged). `snapshot`: `user` holds a run's
    saved configuration, which already carries its preset's values: a key it lacks (one added since
    the run began) takes the built-in default, the value the run was made with, not the preset's."""
    from scoreflow.model.source import EMBEDDED_ALIASES

    for section, values in user.items():
        if section not in SECTIONS:
            raise UserError(f"unknown config section {section!r}; sections are {', '.join(SECTIONS)}")
        known = {f.name for f in fields(_section_classes()[section])}
        for k in values:
            if k not in known:
                raise UserError(f"unknown config key {section}.{k}; keys of [{section}]: {', '.join(sorted(known))}")
    preset = user.get("run", {}).get("preset", "auto")
    if preset == "auto":
        model = str(user.get("generator", {}).get("model", GeneratorConfig.model))
        preset = "demo" if model.lower() in EMBEDDED_ALIASES else "paper"
    if preset not in PRESETS:
        raise UserError(f"run.preset = {preset!r}: choose auto, demo or paper")
    task = str(user.get("run", {}).get("task", RunConfig.task))
    layered = user if snapshot else merge(preset_layer(preset, task), user)
    cfg = Config()
    for section, values in layered.items():
        obj = getattr(cfg, section)
        by_name = {f.name: f for f in fields(obj)}
        for k, v in values.items():
            setattr(obj, k, _coerce(section, by_name[k], getattr(obj, k), v))
    cfg.run.preset = preset
    if not cfg.train.opening_gradient and cfg.train.gradient_checkpointing:
        if "gradient_checkpointing" in user.get("train", {}):
            raise UserError("train.opening_gradient = false does not combine with train.gradient_checkpointing "
                            "(a recomputed layer would run the opening again): set one of them")
        cfg.train.gradient_checkpointing = False  # the preset's gives way: the held opening keeps less anyway
    if cfg.train.recompute_share > 1:
        raise UserError(f"train.recompute_share = {cfg.train.recompute_share}: a share of the layers, 0 to 1")
    return cfg


def to_toml(cfg: Config, documented: bool = False) -> str:
    lines = []
    for sf in fields(cfg):
        section = getattr(cfg, sf.name)
        lines.append(f"[{sf.name}]")
        for f in fields(section):
            if documented:
                lines.append(f"# {f.metadata['help']}")
            lines.append(f"{f.name} = {_toml_value(getattr(section, f.name))}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def as_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    return {sf.name: {f.name: getattr(getattr(cfg, sf.name), f.name) for f in fields(getattr(cfg, sf.name))}
            for sf in fields(cfg)}


# ---- the backend's and the sandbox's objects, built from their sections --------------------------

def from_section(cls: type, section: Any, **given: Any) -> Any:
    """`cls` (a plain dataclass of a backend or the sandbox) from the same-named keys of a config
    section, lists as tuples; `given` sets keys the section lacks, the rest keep cls's defaults."""
    mine = {f.name for f in fields(section)}
    values = {}
    for f in fields(cls):
        if f.name in mine and f.name not in given:
            v = getattr(section, f.name)
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values, **given)


def lora_config(cfg: Config) -> LoraConfig:
    return from_section(LoraConfig, cfg.lora)


def train_config(cfg: Config, it: int) -> TrainConfig:
    """Iteration `it`'s training: the [train] keys, seeded by run.seed + it, its rate decayed by iteration."""
    rate = cfg.train.learning_rate * cfg.train.lr_decay ** (it - 1)
    return from_section(TrainConfig, cfg.train, seed=cfg.run.seed + it, learning_rate=rate)


def sandbox_limits(cfg: Config):
    from scoreflow.sandbox.parent import Limits

    return from_section(Limits, cfg.sandbox)
