"""MATH (Hendrycks) in AFlow's split files: `problem`, `level`, `type`, `solution` (with `\\boxed{}`)."""

from __future__ import annotations

from pathlib import Path

from scoreflow.errors import UserError
from scoreflow.tasks.base import Problem, Task, read_jsonl, require, split_file
from scoreflow.tasks.families import EXTRACT_BOXED, MATH_OPERATORS, MATH_TEMPLATE
from scoreflow.tasks.math_equiv import last_boxed, math_score

EXAMPLES = (
    ("How many positive divisors does 360 have?",
     r'''async def run_workflow(self):
    count = await self.programmer(problem=self.problem, analysis="Count exactly with integers; do not estimate.")
    proof = await self.custom(input=self.problem, instruction="Solve it by reasoning, then give the answer in \\boxed{}.")
    best = await self.sc_ensemble(solutions=[proof, "The computed answer is " + count], problem=self.problem)
    return best'''),
    ("Find the remainder when $2^{100}$ is divided by 7.",
     r'''async def run_workflow(self):
    solution = await self.custom(input=self.problem, instruction="Find a pattern, solve step by step and box the answer.")
    reviewed = await self.review(problem=self.problem, solution=solution)
    final = await self.review(problem=self.problem, solution=reviewed)
    return final'''),
)


class MATHTask(Task):
    def __init__(self, path: str | Path | None = None):
        super().__init__(
            name="math",
            family="math",
            description="competition maths problems (MATH level 5); the answer is a LaTeX expression",
            operators=MATH_OPERATORS,
            template=MATH_TEMPLATE,
            toy=Problem("math-toy", "What is $\\frac{1}{2} + \\frac{1}{3}$?", "What is $\\frac{1}{2} + \\frac{1}{3}$?",
                        "\\frac{5}{6}"),
            similarity_threshold=0.75,
            extract=EXTRACT_BOXED,
            examples=EXAMPLES,
            judged=True,
        )
        self.path = path

    def problems(self, split: str) -> list[Problem]:
        f = split_file("math", split, self.path)
        out = []
        for n, rec in enumerate(read_jsonl(f), 1):
            require(rec, ("problem", "solution"), f"{f}:{n}")
            gold = last_boxed(str(rec["solution"]))
            if gold is None:
                raise UserError(f"{f}:{n}: the solution has no \\boxed{{}} answer")
            extra = {"solution": rec["solution"], "type": rec.get("type", ""), "level": rec.get("level", "")}
            out.append(Problem(str(rec.get("id", f"math-{split}-{n - 1}")), rec["problem"], rec["problem"], gold, extra))
        if not out:
            raise UserError(f"{f}: no problems (empty dataset)")
        return out

    def score(self, problem: Problem, output: str) -> float:
        return math_score(output, str(problem.answer))
