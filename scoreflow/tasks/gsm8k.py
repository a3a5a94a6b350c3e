"""GSM8K in AFlow's split files: `question`, `answer` (the final number), `cot`, `id`."""

from __future__ import annotations

from pathlib import Path

from scoreflow.errors import UserError
from scoreflow.tasks.base import Problem, Task, read_jsonl, require, split_file
from scoreflow.tasks.families import EXTRACT_NUMBER, MATH_OPERATORS, MATH_TEMPLATE
from scoreflow.tasks.scoring import last_number, number_score

EXAMPLES = (
    ("A baker makes 48 muffins and sells 3/4 of them. How many muffins are left?",
     '''async def run_workflow(self):
    plan = await self.custom(input=self.problem, instruction="Write the equations that lead to the answer, one per line.")
    result = await self.programmer(problem=self.problem, analysis=plan)
    checked = await self.review(problem=self.problem, solution=plan + "\\nProgram output: " + result)
    return checked'''),
    ("Sam earns $15 an hour and works 6 hours a day for 5 days. How much does he earn?",
     '''async def run_workflow(self):
    first = await self.custom(input=self.problem, instruction="Solve step by step and end with the number.")
    second = await self.programmer(problem=self.problem)
    best = await self.sc_ensemble(solutions=[first, second], problem=self.problem)
    return best'''),
)


class GSM8KTask(Task):
    def __init__(self, path: str | Path | None = None):
        super().__init__(
            name="gsm8k",
            family="math",
            description="grade-school maths word problems; the answer is one number",
            operators=MATH_OPERATORS,
            template=MATH_TEMPLATE,
            toy=Problem("gsm8k-toy", "Tom has 3 apples and buys 4 more. How many apples does he have?",
                        "Tom has 3 apples and buys 4 more. How many apples does he have?", 7),
            similarity_threshold=0.8,
            extract=EXTRACT_NUMBER,
            examples=EXAMPLES,
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
