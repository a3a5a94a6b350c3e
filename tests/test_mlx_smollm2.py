"""The MLX backend on the real embedded SmolLM2-135M (Q4_1 GGUF): log-prob, loss and gradient
parity with the PyTorch backend loading the same file, and Score-DPO steps that lower the loss."""

from __future__ import annotations

import importlib.util

import json
from pathlib import Path

import pytest

if importlib.util.find_spec("mlx_lm") is None:  # not importorskip: mlx.core must come after OpenBLAS
    pytest.skip("mlx-lm is not installed", allow_module_level=True)

import scoreflow.backends.mlx  # noqa: E402,F401  (preloads OpenBLAS before mlx.core)

from scoreflow.model.backend import LoraConfig, TrainConfig, TrainPair  # noqa: E402
from scoreflow.backends import mlx as B  # noqa: E402
from helpers import random_peft  # noqa: E402

pytestmark = [pytest.mark.mlx, pytest.mark.slow]
LORA = LoraConfig(rank=8, alpha=16.0, dropout=0.0)
SYSTEM = "You write agent workflows as Python inside <graph></graph>."
CHOSEN = ("<graph>\nasync def run_workflow(self):\n    plan = await self.custom(input=self.problem, "
          "instruction='Think step by step.')\n    code = await self.programmer(problem=self.problem, analysis=plan)\n"
          "    return await self.sc_ensemble(solutions=[plan, code], problem=self.problem)\n</graph>")
REJECTED = "<graph>\nasync def run_workflow(self):\n    return self.problem\n</graph>"


@pytest.fixture(scope="module")
def prompt(data_dir) -> list[dict]:
    line = (data_dir / "gsm8k" / "gsm8k_validate.jsonl").read_text().splitlines()[0]
    q = json.loads(line)["question"]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Problem: {q}\nWrite the workflow."}]


@pytest.fixture(scope="module")
def mb():
    return B.load("smollm2", device="cpu", lora=LORA, seed=0)


@pytest.fixture(scope="module")
def tb(smollm2_hf):
    pytest.importorskip("peft")
    from scoreflow.backends.cuda import load as torch_load

    return torch_load("smollm2", device="cpu", lora=LORA, seed=0)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    from scoreflow.model.adapters import peft_to_mlx

    root = tmp_path_factory.mktemp("smollm2-adapters")
    peft = random_peft(root / "peft", 30, 576, 192, scale=0.02, lora=LORA)
    return {"peft": peft, "mlx": peft_to_mlx(peft, root / "mlx")}


def test_gguf_config(mb):
    args = mb.model.args
    assert (args.num_hidden_layers, args.hidden_size, args.num_attention_heads, args.num_key_value_heads) == (30, 576, 9, 3)
    assert args.rope_theta == 100000.0 and args.tie_word_embeddings and not mb.quantized
    assert mb.model_name == "smollm2-135m"


def test_parity_with_pytorch(mb, tb, adapters, prompt):
    """Same GGUF, same LoRA weights (through the adapter conversion): same log-probs (1e-4) and the
    same Score-DPO loss and gradient norm at step 1 (1e-3)."""
    items = [(prompt, CHOSEN), (prompt, REJECTED)]
    tb.load_adapter(adapters["peft"])
    mb.load_adapter(adapters["mlx"])
    try:
        for adapter in (False, True):
            t, m = tb.logprobs(items, adapter=adapter), mb.logprobs(items, adapter=adapter)
            assert m == pytest.approx(t, rel=1e-4)
        cfg = TrainConfig(learning_rate=1e-4, checkpoint_every=0)
        pair = [TrainPair(prompt, CHOSEN, REJECTED, 0.8, 0.1)]
        ts, ms = tb.train(pair, cfg), mb.train(pair, cfg)
        assert ms.history[0].loss == pytest.approx(ts.history[0].loss, rel=1e-3)
        assert ms.history[0].grad_norm == pytest.approx(ts.history[0].grad_norm, rel=1e-3)
        assert ms.history[0].grad_norm > 0.1
    finally:
        tb.load_adapter(None)
        mb.load_adapter(None)


def test_score_dpo_steps_lower_the_loss(mb, prompt):
    mb.load_adapter(None)
    pair = TrainPair(prompt, CHOSEN, REJECTED, 0.8, 0.1)
    before = mb.logprobs([(prompt, CHOSEN), (prompt, REJECTED)])
    st = mb.train([pair], TrainConfig(learning_rate=1e-4, epochs=3, checkpoint_every=0))
    losses = [h.loss for h in st.history]
    assert losses[0] == pytest.approx(0.6931472, rel=1e-5)  # fresh LoRA: policy == reference
    assert losses[2] < losses[1] < losses[0]
    after = mb.logprobs([(prompt, CHOSEN), (prompt, REJECTED)])
    assert after[0] - after[1] > before[0] - before[1]  # the chosen workflow gained on the rejected
    mb.load_adapter(None)
    assert mb.logprobs([(prompt, CHOSEN)])[0] == pytest.approx(before[0], rel=1e-6)


def test_quantized_base_keeps_4bit_layers(mb):
    """The QLoRA path (the default on Metal): the GGUF's 4-bit blocks stay quantized and score
    like the dequantized fp32 model."""
    import mlx.nn as nn

    q = B.load("smollm2", device="cpu", lora=LORA, seed=0, quantized=True)
    assert q.quantized
    attn = q.model.layers[0].self_attn
    assert isinstance(attn.q_proj.linear, nn.QuantizedLinear) and attn.q_proj.linear.bits == 4
    assert isinstance(q.model.model.embed_tokens, nn.QuantizedEmbedding) and q.model.model.embed_tokens.bits == 8
    item = [([{"role": "user", "content": "What is 2 + 3?"}], "2 + 3 = 5.")]
    assert q.logprobs(item) == pytest.approx(mb.logprobs(item), rel=1e-3)
