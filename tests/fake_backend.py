"""A scripted backend for running the real loop in seconds: as generator it writes one of two valid
workflows in turn, one asking the executor to answer "precisely" (the executor then knows the gold
answer) and one asking "vaguely" (a wrong answer), so every problem gets workflows with different
scores and pairs form; as executor (adapter off) it answers from the QUESTIONS table; training reports
one StepInfo per pair. Counts calls so tests can assert what ran."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from scoreflow.model.backend import Completion, Messages, SamplingParams, StepInfo, TrainStats

QUESTIONS = [
    ("Name the colour of a clear daytime sky.", "blue"), ("What do bees make?", "honey"),
    ("What is frozen water called?", "ice"), ("Which animal says meow?", "cat"),
    ("What is the opposite of hot?", "cold"), ("Which planet do we live on?", "earth"),
    ("What do cows drink?", "water"), ("What colour is grass?", "green"),
    ("What falls from clouds when it rains?", "water"), ("What is the capital of France?", "paris"),
]
GOOD = '''async def run_workflow(self):
    answer = await self.custom(input=self.problem, instruction="Answer precisely, in one word.")
    return answer'''
BAD = '''async def run_workflow(self):
    guess = await self.custom(input=self.problem, instruction="Answer vaguely.")
    return guess'''
SOLUTION = re.compile(r"\n\nSolution: (.*?)\n\n", re.S)


def write_task(folder: Path) -> list[str]:
    """A JSON Lines QA task (exact-match scorer) and the flags that select it."""
    data = folder / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n"
                            for i, (q, a) in enumerate(QUESTIONS)))
    cfg = folder / "task.toml"
    cfg.write_text('[task]\nscorer = "exact"\nfamily = "qa"\ndescription = "short general-knowledge questions"\n')
    return ["--task", "jsonl", "--data", str(data), "--config", str(cfg)]


def config(tmp: Path) -> dict:
    data = tmp / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n"
                            for i, (q, a) in enumerate(QUESTIONS)))
    return {"run": {"task": "jsonl", "data": str(data), "iterations": 1, "problems": 2, "compare": False},
            "task": {"scorer": "exact", "family": "qa", "description": "short general-knowledge questions"},
            "generator": {"workflows_per_problem": 2}, "executor": {"runs": 1}, "train": {"pairs": 2}}


class FakeBackend:
    name = "fake"
    device = "cpu"
    model_name = "fake-model"

    def __init__(self) -> None:
        self.generated = 0  # generator completions
        self.executor_calls = 0
        self.trained_pairs = 0
        self.adapter: Path | None = None

    def generate(self, prompts: Sequence[Messages], params: SamplingParams, *, adapter: bool = True) -> list[Completion]:
        out = []
        for messages in prompts:
            if adapter:
                source = GOOD if self.generated % 2 == 0 else BAD
                self.generated += 1
                out.append(Completion(f"<graph>\n{source}\n</graph>", 40, True))
            else:
                self.executor_calls += 1
                out.append(Completion(self.answer(messages[-1]["content"]), 3, True))
        return out

    @staticmethod
    def answer(prompt: str) -> str:
        solution = SOLUTION.search(prompt)
        if prompt.startswith("Problem: ") and solution:  # the answer-extraction call: keep the answer
            return solution.group(1).strip()
        if "precisely" in prompt:
            return next((a for q, a in QUESTIONS if q in prompt), "blue")
        return "something, perhaps"

    def logprobs(self, items: Sequence[tuple[Messages, str]], *, adapter: bool = True) -> list[float]:
        return [-float(len(c)) for _, c in items]

    def train(self, pairs: Sequence[Any], cfg: Any, *, on_step: Callable[[StepInfo], None] | None = None,
              checkpoint_dir: Path | None = None) -> TrainStats:
        steps = -(-len(pairs) // cfg.batch_size) * cfg.epochs
        for i in range(steps):
            self.trained_pairs += 1
            info = StepInfo(step=i + 1, total=steps, loss=0.69 - 0.05 * i, margin=0.01 * (i + 1),
                            chosen_reward=0.02 * i, rejected_reward=-0.01 * i, seconds=0.01, grad_norm=1.0 + i)
            if on_step:
                on_step(info)
        return TrainStats(steps=steps)

    def save_adapter(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))

    def load_adapter(self, path: Path | None) -> None:
        self.adapter = path

    def peak_memory_mb(self) -> float:
        return 0.0
