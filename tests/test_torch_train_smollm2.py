"""A few Score-DPO steps on the real SmolLM2-135M lower the loss on the pairs it trained on."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from scoreflow.model.backend import LoraConfig, TrainConfig, TrainPair  # noqa: E402
from scoreflow.backends.cuda import load  # noqa: E402

PROMPT = [{"role": "system", "content": "You write workflows as Python inside <graph></graph>."},
          {"role": "user", "content": "Problem: Ava has 3 apples and gets 4 more. How many apples does she have?"}]
GOOD = ("<graph>async def run_workflow(self):\n    solution = await self.custom(input=self.problem, "
        "instruction=\"Solve the problem step by step.\")\n    return solution</graph>")
BAD = "I cannot write code. The apples are red."
MEH = "<graph>async def run_workflow(self):\n    return self.problem</graph>"


def _loss(b, pairs: list[TrainPair], beta: float) -> float:
    items = [(p.prompt, c) for p in pairs for c in (p.chosen, p.rejected)]
    pol, ref = b.logprobs(items), b.logprobs(items, adapter=False)
    total = 0.0
    for k, p in enumerate(pairs):
        z = beta * (p.score_chosen * (pol[2 * k] - ref[2 * k]) - (1 - p.score_rejected) * (pol[2 * k + 1] - ref[2 * k + 1]))
        total += math.log1p(math.exp(-z)) if z > 0 else -z + math.log1p(math.exp(z))
    return total / len(pairs)


def test_score_dpo_steps_lower_the_loss_on_smollm2(smollm2_hf):
    b = load(str(smollm2_hf), device="cpu", lora=LoraConfig(rank=8, alpha=16, dropout=0.0), seed=0)
    pairs = [TrainPair(PROMPT, GOOD, BAD, 1.0, 0.0), TrainPair(PROMPT, MEH, BAD, 0.5, 0.0),
             TrainPair(PROMPT, GOOD, MEH, 1.0, 0.5)]
    cfg = TrainConfig(loss="score-dpo", beta=0.1, learning_rate=5e-4, batch_size=3, epochs=4, max_grad_norm=1.0)
    before = _loss(b, pairs, cfg.beta)
    assert before == pytest.approx(math.log(2), abs=1e-5)  # a fresh LoRA is the reference
    stats = b.train(pairs, cfg)
    after = _loss(b, pairs, cfg.beta)
    assert stats.steps == 4 and all(math.isfinite(h.grad_norm) and h.grad_norm > 0 for h in stats.history)
    assert stats.history[-1].loss < stats.history[0].loss
    assert after < before - 0.01
