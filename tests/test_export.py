"""Exports other tools accept (scoreflow/report/export.py, card.py): an adapter trained by each backend
(on the tiny random Llama), exported with its model card, loads in PEFT (`PeftModel.from_pretrained`) or
in mlx-lm's own CLI (`mlx_lm.generate --adapter-path`, `mlx_lm.fuse`) and gives the log-probs / greedy
text of the backend that trained it; each problem's best workflow as a file `scoreflow run-workflow`
accepts; an exported adapter that names its base by hub id loads in PEFT on a fresh hub cache, and both
model cards load in huggingface_hub's ModelCard.load. (mlx-lm's side of the embedded model's exports:
test_interop_mlx.py, under -m mlx.)"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import random_peft, run_of_adapter
from scoreflow.model.backend import LoraConfig, SamplingParams, TrainConfig, TrainPair
from scoreflow.model.source import EMBEDDED_HUB_ID

LORA = LoraConfig(rank=4, alpha=8.0, dropout=0.0)
SMOLLM2_LORA = LoraConfig(rank=8, alpha=16.0, dropout=0.0)  # q_proj and v_proj of all 30 layers
TEXT_PROMPT = "Write a workflow that adds 17 and 25, then checks the sum with code."
needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="the cuda extra is not installed")
PROMPT = [{"role": "user", "content": "Write a workflow for: Ava has 3 apples and gets 4 more."}]
CHOSEN = "<graph>async def run_workflow(self):\n    return await self.custom(input=self.problem)</graph>"
REJECTED = "I think the answer is 7."
# SFT at a high rate: the tiny random model learns to start its reply like CHOSEN, so the adapter
# visibly changes the greedy text (and the text is made of ordinary tokens on both sides).
TRAIN = TrainConfig(loss="sft", learning_rate=2e-2, epochs=12, batch_size=1, checkpoint_every=0)
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=12, stop=())
METRICS = [
    {"kind": "evaluate", "iteration": 0, "split": "test", "problems": 20, "valid_rate": 0.4, "solve_rate": 0.1},
    {"kind": "iteration", "iteration": 1, "problems": 4, "workflows": 16, "valid": 9, "valid_rate": 0.5625,
     "first_attempt_valid_rate": 0.5, "mean_score": 0.3333, "solve_rate": 0.1875, "pairs": 12, "steps": 12,
     "loss": 0.6812},
    {"kind": "evaluate", "iteration": 1, "split": "test", "problems": 20, "valid_rate": 0.7, "solve_rate": 0.25},
    {"kind": "compare", "base": 0, "trained": 1, "problems": 20, "base_solve_rate": 0.1, "trained_solve_rate": 0.25,
     "difference": {"value": 0.15, "low": -0.05, "high": 0.35}},
]


def make_run(tmp: Path, model: Path, backend) -> Path:
    from scoreflow import config as C

    run = tmp / "run"
    (run / "adapters").mkdir(parents=True)
    (run / "config.toml").write_text(C.to_toml(C.build({"generator": {"model": str(model)},
                                                          "run": {"task": "arith", "iterations": 1}})))
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in METRICS))
    backend.train([TrainPair(PROMPT, CHOSEN, REJECTED, 1.0, 0.0)], TRAIN)
    backend.save_adapter(run / "adapters" / "iter-1")
    return run


def check_card(folder: Path, model: Path, library: str) -> None:
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and f"library_name: {library}" in card and "base_model:" not in card
    for text in (f"`{model}` (a local model)", "| task | arith |", "| loss | score-dpo, beta 0.1",
                 "adapter after iteration 1 of 1 run", "| 1 | 56% | 50% | 0.333 | 0.188 | 12 | 12 | 0.6812 |",
                 "| adapter of iteration 1 | 20 | 70% | 0.250 |", "+0.150 (paired bootstrap 95% CI -0.050 to +0.350)",
                 "PeftModel.from_pretrained", "mlx_lm.generate --model", "vllm serve"):
        assert text in card, text


@pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="the cuda extra is not installed")
def test_peft_export_loads_in_peft(tmp_path, tiny_llama):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from scoreflow.report.export import export_run
    from scoreflow.backends.cuda import load

    b = load(str(tiny_llama), device="cpu", lora=LORA, seed=0)
    run = make_run(tmp_path, tiny_llama, b)
    folder = export_run(run, "peft")
    check_card(folder, tiny_llama, "peft")
    want_lp = b.logprobs([(PROMPT, CHOSEN), (PROMPT, REJECTED)])
    want_text = b.generate([PROMPT], GREEDY)[0].text
    assert want_text != b.generate([PROMPT], GREEDY, adapter=False)[0].text  # the adapter matters
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llama)), str(folder)).eval()
    got = []
    with torch.no_grad():
        for completion in (CHOSEN, REJECTED):
            p, c = b.fmt.prompt_ids(PROMPT), b.fmt.completion_ids(completion)
            ids = torch.tensor([p + c])
            logp = model(ids).logits[0, :-1].float().log_softmax(-1)
            got.append(float(logp[len(p) - 1:].gather(1, ids[0, len(p):, None]).sum()))
        out = model.generate(torch.tensor([b.fmt.prompt_ids(PROMPT)]), max_new_tokens=12, do_sample=False,
                             eos_token_id=b.fmt.stop_ids, pad_token_id=b.tokenizer.pad_token_id)
    assert got == pytest.approx(want_lp, rel=1e-5, abs=1e-4)
    assert b.fmt.decode(out[0, len(b.fmt.prompt_ids(PROMPT)):]) == want_text


def _mlx_lm(*args: str) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "mlx_lm", *args], capture_output=True, text=True, timeout=600,
                         env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res.stdout


def _generated(stdout: str) -> str:
    """The text between mlx_lm.generate's two `==========` lines."""
    lines = stdout.split("==========\n")
    return lines[1].rstrip("\n")


@pytest.mark.mlx
def test_mlx_export_in_mlx_lm_generate_and_fuse(tmp_path, tiny_llama):
    if importlib.util.find_spec("mlx_lm") is None:  # not importorskip: mlx.core must come after OpenBLAS
        pytest.skip("the mlx extra is not installed")
    import scoreflow.backends.mlx as B
    from scoreflow.report.export import export_run

    b = B.load(str(tiny_llama), device="cpu", lora=LORA, seed=0)
    run = make_run(tmp_path, tiny_llama, b)
    folder = export_run(run, "mlx")
    check_card(folder, tiny_llama, "mlx")
    want = b.generate([PROMPT], GREEDY)[0].text
    assert want != b.generate([PROMPT], GREEDY, adapter=False)[0].text  # the adapter matters
    prompt = b.fmt.render(PROMPT)  # the chat-formatted prompt, as our backend sends it
    common = ["--prompt", prompt, "--ignore-chat-template", "--max-tokens", "12", "--temp", "0"]
    assert _generated(_mlx_lm("generate", "--model", str(tiny_llama), "--adapter-path", str(folder), *common)) == want
    fused = tmp_path / "fused"
    _mlx_lm("fuse", "--model", str(tiny_llama), "--adapter-path", str(folder), "--save-path", str(fused))
    assert _generated(_mlx_lm("generate", "--model", str(fused), *common)) == want
    import mlx.core as mx
    from mlx_lm import load as mlx_load

    model, _ = mlx_load(str(fused))
    p, c = b.fmt.prompt_ids(PROMPT), b.fmt.completion_ids(CHOSEN)
    logits = model(mx.array([p + c]))[0, :-1].astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    got = float(mx.take_along_axis(logp[len(p) - 1:], mx.array(c)[:, None], axis=1).sum())
    assert got == pytest.approx(b.logprobs([(PROMPT, CHOSEN)])[0], rel=1e-4, abs=1e-3)


def test_best_workflows_run_in_run_workflow(tmp_path, capsys):
    from fake_openai import FakeOpenAI
    from scoreflow.cli import main as cli
    from scoreflow import config as C
    from scoreflow.run.session import select
    from scoreflow.tasks.arith import EXAMPLES, ArithTask

    task = ArithTask()
    split = task.problems("validate")
    chosen = select(split, 2, 0)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(C.to_toml(C.build({"run": {"task": "arith", "problems": 2}})))
    wfs, evs = [], []
    # (iteration, problem, slot, example, scores): problem 0's best is iteration 2's slot 1 (1.0); problem 1
    # ties at 0.5 between iterations 1 and 2 (the later wins); an invalid attempt is never exported.
    plan = [(1, 0, 0, 0, [0.0]), (1, 1, 0, 1, [0.5]), (2, 0, 1, 2, [1.0]), (2, 1, 0, 3, [0.5]),
            (2, 0, 0, 0, [0.0])]
    for it, p, slot, ex, scores in plan:
        wfs.append({"iteration": it, "problem": p, "problem_id": chosen[p].id, "slot": slot, "attempt": 0,
                    "valid": True, "reason": "", "tokens": 50, "text": "", "source": EXAMPLES[ex][1]})
        evs += [{"iteration": it, "problem": p, "problem_id": chosen[p].id, "slot": slot, "run": n, "score": s}
                for n, s in enumerate(scores)]
    wfs.append({"iteration": 2, "problem": 1, "problem_id": chosen[1].id, "slot": 1, "attempt": 0, "valid": False,
                "reason": "syntax error", "tokens": 5, "text": "", "source": "async def ("})
    (run / "workflows.jsonl").write_text("".join(json.dumps(w) + "\n" for w in wfs))
    (run / "evaluations.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evs))
    out = tmp_path / "best"
    assert cli.main(["export", str(run), "--workflows", str(out)]) == 0
    assert "2 workflow(s)" in capsys.readouterr().out
    index = [json.loads(x) for x in (out / "index.jsonl").read_text().splitlines()]
    ids = [p.id for p in split]
    assert [(e["problem_id"], e["index"], e["iteration"], e["slot"], e["score"]) for e in index] == [
        (chosen[0].id, ids.index(chosen[0].id), 2, 1, 1.0), (chosen[1].id, ids.index(chosen[1].id), 2, 0, 0.5)]
    text = (out / index[0]["file"]).read_text()
    assert text.startswith("# ScoreFlow workflow: task arith") and EXAMPLES[2][1] in text
    with FakeOpenAI() as server:
        for e in index:
            assert cli.main(["run-workflow", "--config", str(run / "config.toml"), "--split", "validate",
                             "--index", str(e["index"]), "--workflow", str(out / e["file"]), "--executor", "openai",
                             "--executor-model", "m", "--base-url", server.base_url,
                             "--set", "executor.extract_answer=false"]) == 0
            verdict = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            assert verdict["problem"] == e["problem_id"] and verdict["status"] == "ok", verdict
            assert verdict["executor_calls"] >= 1
        assert server.requests
    assert cli.main(["export", str(run)]) == 2
    assert "--workflows OUT_DIR" in capsys.readouterr().err


# -- an exported adapter outside scoreflow ----------------------------------------------------------

@pytest.fixture(scope="module")
def torch_run(tmp_path_factory, smollm2_hf):
    """The PyTorch backend on the embedded model with a non-zero LoRA, its adapter saved in a run."""
    pytest.importorskip("peft")
    from scoreflow.backends.cuda import load

    root = tmp_path_factory.mktemp("torch-run")
    b = load("smollm2", device="cpu", lora=SMOLLM2_LORA, seed=0)
    b.load_adapter(random_peft(root / "random", 30, 576, 192, scale=0.02, lora=SMOLLM2_LORA))
    return b, run_of_adapter(root, b.save_adapter)


@needs_peft
def test_adapter_names_the_hub_id_and_records_the_local_base(torch_run, smollm2_hf):
    b, run = torch_run
    saved = run / "adapters" / "iter-1"
    assert json.loads((saved / "adapter_config.json").read_text())["base_model_name_or_path"] == EMBEDDED_HUB_ID
    assert json.loads((saved / "scoreflow.json").read_text()) == {"base_model": EMBEDDED_HUB_ID,
                                                                  "base_path": str(smollm2_hf)}


@needs_peft
def test_peft_loads_the_export_on_a_fresh_hub_cache(torch_run, smollm2_hf, tmp_path):
    """PEFT, offline with an empty hub cache, given the base as a local folder standing in for the hub,
    loads the exported adapter (which names only the hub id) and computes scoreflow's logits."""
    import torch

    from scoreflow.report.export import export_run

    b, run = torch_run
    folder = export_run(run, "peft", out=tmp_path / "peft")
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == EMBEDDED_HUB_ID
    ids = b.tokenizer(TEXT_PROMPT)["input_ids"]
    with torch.no_grad():
        want = b.model(torch.tensor([ids])).logits[0].float().numpy()
        with b.model.disable_adapter():
            base = b.model(torch.tensor([ids])).logits[0].float().numpy()
    code = textwrap.dedent(f"""
        import numpy as np, torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained({str(smollm2_hf)!r}, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, {str(folder)!r}).eval()
        with torch.no_grad():
            np.save({str(tmp_path / "peft.npy")!r}, model(torch.tensor([{ids!r}])).logits[0].float().numpy())
    """)
    hub = tmp_path / "empty-hub-cache"
    env = {**os.environ, "HF_HOME": str(hub), "HF_HUB_CACHE": str(hub / "hub"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Unexpected keyword" not in r.stderr  # PEFT reads every key of the adapter's config
    got = np.load(tmp_path / "peft.npy")
    assert np.abs(base - want).max() > 0.1  # the adapter matters
    assert np.abs(got - want).max() < 1e-4


def test_model_cards_load_in_huggingface_hub(tmp_path):
    """Both exports' cards parse with ModelCard.load and state base model, library and license."""
    from huggingface_hub import ModelCard

    from scoreflow.report.export import export_run

    run = run_of_adapter(tmp_path, lambda f: random_peft(f, 30, 576, 192, scale=0.02, lora=SMOLLM2_LORA))
    for fmt, library in (("peft", "peft"), ("mlx", "mlx")):
        card = ModelCard.load(export_run(run, fmt) / "README.md")
        assert card.data.base_model == EMBEDDED_HUB_ID and card.data.library_name == library
        assert card.data.license == "apache-2.0"
        assert "hf upload USER/REPO PATH/TO/THIS/FOLDER" in card.text


def test_model_card_license_of_a_local_model(tmp_path, tiny_llama):
    from huggingface_hub import ModelCard

    from scoreflow import config as C
    from scoreflow.report.export import export_run

    model = tmp_path / "licensed"
    shutil.copytree(tiny_llama, model)
    (model / "README.md").write_text("---\nlicense: other\nlicense_name: house licence\n"
                                     "license_link: https://example.org/licence\n---\n")
    run = run_of_adapter(tmp_path, lambda f: random_peft(f, 2, 64, 32, scale=0.02, lora=SMOLLM2_LORA))
    (run / "config.toml").write_text(C.to_toml(C.build({"generator": {"model": str(model)},
                                                          "run": {"task": "arith", "iterations": 1}})))
    data = ModelCard.load(export_run(run, "peft") / "README.md").data
    assert (data.license, data.license_name, data.license_link) == (
        "other", "house licence", "https://example.org/licence")
    assert data.base_model is None
    (model / "README.md").unlink()
    assert "license" not in ModelCard.load(export_run(run, "peft") / "README.md").data.to_dict()
