"""GSM8K in AFlow's split files: `question`, `answer` (the final number), `cot`, `id`."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .arith import MATH_TEMPLATE
from .base import Problem, Task, read_jsonl, require, split_file
from .scoring import last_number, number_score


class GSM8KTask(Task):
    def __init__(self, path: str | Path | None = None):
        super().__init__(
            name="gsm8k",
            family="math",
            description="grade-school maths word problems; the answer is one number",
            operators=("Custom", "Programmer", "ScEnsemble", "Review"),
            template=MATH_TEMPLATE,
            toy=Problem("gsm8k-toy", "Tom has 3 apples and buys 4 more. How many apples does he have?",
                        "Tom has 3 apples and buys 4 more. How many apples does he have?", 7),
            similarity_threshold=0.8,
            extract="Give the final answer to the problem as a single number, with nothing else.",
        )
        self.path = path

    def problems(self, split: str) -> list[Problem]:
        f = split_file("gsm8k", split, self.path)
        out = []
        for n, rec in enumerate(read_jsonl(f), 1):
            require(rec, ("question", "answer"), f"{f}:{n}")
            gold = last_number(str(rec["answer"]))
            if gold is None:
                raise UserError(f"{f}:{n}: answer {rec['answer']!r} is not a number")
            out.append(Problem(str(rec.get("id", f"gsm8k-{split}-{n - 1}")), rec["question"], rec["question"], gold))
        if not out:
            raise UserError(f"{f}: no problems (empty dataset)")
        return out

    def score(self, problem: Problem, output: str) -> float:
        return number_score(output, problem.answer)
