"""`arith`: procedural arithmetic word problems from a seed, so the tool runs with no data file."""

from __future__ import annotations

import ast
import random
from collections import Counter

from scoreflow.tasks.base import Problem, Task
from scoreflow.tasks.families import EXTRACT_NUMBER, MATH_OPERATORS, MATH_TEMPLATE
from scoreflow.tasks.scoring import number_score

NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jack", "Lena", "Omar"]
ITEMS = ["apples", "books", "coins", "marbles", "pencils", "stickers", "cookies", "shells", "cards", "stamps"]
SIZES = {"validate": 60, "test": 200}
SEEDS = {"validate": 1001, "test": 2002}


# Few-shot workflows: one per kind of problem, the general two-step one last. Each asks the executor
# only to read the problem's numbers and leaves the arithmetic to the workflow's code, in the
# operation the generator chose for the problem's kind; the workflow holds no number of its problem
# (indices only), so it solves any problem of that kind. A 135M executor copies numbers reliably
# but computes badly, so the reward measures the generator's choice of operation rather than the
# executor's arithmetic (benchmarks/RESULTS.md compares this with one Custom call). A small generator copies the
# last example's wording, so with `generator.explore_examples` each sample of a problem starts from
# another one (see prompts.generator_messages).
READ = "Write the numbers in the problem, in order, separated by spaces. Write nothing else."


def _read_then(expression: str) -> str:
    return ("async def run_workflow(self):\n"
            f"    numbers = await self.custom(input=self.problem, instruction=\"{READ}\")\n"
            "    n = [int(w) for w in numbers.replace(\",\", \" \").replace(\".\", \" \").split() if w.isdigit()]\n"
            f"    return str({expression})")


EXAMPLES = (
    ("Sam has 9 shells. Sam gets 4 more. How many shells does Sam have now?", _read_then("n[0] + n[1]")),
    ("Leo has 30 stamps and gives away 8 of them. How many stamps are left?", _read_then("n[0] - n[1]")),
    ("Nia buys 7 boxes with 6 eggs in each box. How many eggs does Nia buy?", _read_then("n[0] * n[1]")),
    ("21 cookies are shared equally among 3 children. How many cookies does each child get?",
     _read_then("n[0] // n[1]")),
    ("Mia has 12 pencils, buys 5 more and then gives 4 away. How many pencils does Mia have?",
     _read_then("n[0] + n[1] - n[2]")),
)


def make_problem(rng: random.Random) -> tuple[str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.choice(["add", "sub", "mul", "div", "two"])
    a, b = rng.randint(2, 20), rng.randint(2, 12)
    if kind == "add":
        return f"{name} has {a} {item}. {name} gets {b} more. How many {item} does {name} have now?", a + b
    if kind == "sub":
        a += b
        return f"{name} has {a} {item} and gives away {b} of them. How many {item} are left?", a - b
    if kind == "mul":
        a = rng.randint(2, 9)
        return f"{name} buys {a} boxes with {b} {item} in each box. How many {item} does {name} buy?", a * b
    if kind == "div":
        a = rng.randint(2, 9)
        return f"{a * b} {item} are shared equally among {b} friends. How many {item} does each friend get?", a
    c = rng.randint(1, a + b - 1)
    return f"{name} has {a} {item}, buys {b} more and then gives {c} away. How many {item} does {name} have?", a + b - c


# The kinds of problem (their words survive hidden numbers) and the operation each needs, as a
# workflow's code applies it to the numbers the executor read.
KINDS = (("sharing", "shared equally", "//"), ("multiplying", "boxes with", "*"),
         ("two-step", "then gives", "+-"), ("take-away", "gives away", "-"), ("adding", "", "+"))
OPERATORS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Div: "//"}


def kind_of(question: str) -> tuple[str, str]:
    """(the kind's name, the operation it needs)."""
    return next((name, op) for name, words, op in KINDS if words in question)


def operations(source: str | None) -> str:
    """The arithmetic a workflow applies, as a sorted string of operators ('' when none or unparsable)."""
    try:
        found = {OPERATORS[type(n.op)] for n in ast.walk(ast.parse(source or ""))
                 if isinstance(n, ast.BinOp) and type(n.op) in OPERATORS}
    except SyntaxError:
        return ""
    return "".join(sorted(found, key="+-*//".index))


class ArithTask(Task):
    def __init__(self, size: dict[str, int] | None = None):
        super().__init__(
            name="arith",
            family="math",
            description="short arithmetic word problems; the answer is one whole number",
            operators=MATH_OPERATORS,
            template=MATH_TEMPLATE,
            toy=Problem("arith-toy", "What is 2 + 3?", "What is 2 + 3?", 5),
            similarity_threshold=0.8,
            extract=EXTRACT_NUMBER,
            examples=EXAMPLES,
        )
        self.size = {**SIZES, **(size or {})}

    def problems(self, split: str) -> list[Problem]:
        rng = random.Random(SEEDS[split])
        out = []
        for i in range(self.size[split]):
            q, a = make_problem(rng)
            out.append(Problem(f"arith-{split}-{i}", q, q, a))
        return out

    def score(self, problem: Problem, output: str) -> float:
        return number_score(output, problem.answer)

    def describe_change(self, problems: list[Problem], base: list[str | None], trained: list[str | None]) -> str:
        """Per kind of problem, how many workflows apply the operation it needs, before and after:
        the kinds whose count moved, largest change first."""
        right: Counter[tuple[str, str]] = Counter()
        total: Counter[str] = Counter()
        for p, b, t in zip(problems, base, trained):
            name, op = kind_of(p.question)
            total[name] += 1
            right[(name, "base")] += operations(b) == op
            right[(name, "trained")] += operations(t) == op
        moved = sorted(total, key=lambda k: -abs(right[(k, "trained")] - right[(k, "base")]))
        parts = [f"{k} {right[(k, 'base')]} -> {right[(k, 'trained')]} of {total[k]}" for k in moved
                 if right[(k, "trained")] != right[(k, "base")]]
        if not parts:
            return "the right operation for each kind of problem as often as before"
        return "workflows applying the right operation, by kind of problem: " + ", ".join(parts)
