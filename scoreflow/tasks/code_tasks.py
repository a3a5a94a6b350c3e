"""Code generation: HumanEval and MBPP in AFlow's split files, scored by their hidden tests.

Each problem carries its entry point (`self.entry_point` in a workflow) and the public tests of
`<name>_public_test.jsonl` (asserts on `candidate`, run by the Test operator). The hidden tests
are the record's `test` and never reach the executor.
"""

from __future__ import annotations

from pathlib import Path

from scoreflow.errors import UserError
from scoreflow.sandbox.parent import Sandbox
from scoreflow.tasks.base import SPLITS, Problem, Task, read_jsonl, require, split_file
from scoreflow.tasks.code_eval import PRELOAD_IMPORTS, CodeSpec, clean_public_tests, run_hidden_tests, run_hidden_tests_sync
from scoreflow.tasks.families import CODE_OPERATORS, CODE_TEMPLATE

HUMANEVAL_EXAMPLES = (
    ("def below_zero(operations: List[int]) -> bool:\n    \"\"\"Return True if the running balance ever falls below zero.\"\"\"",
     '''async def run_workflow(self):
    solution = await self.custom_code_generate(problem=self.problem, entry_point=self.entry_point, instruction="Consider edge cases such as empty lists first, then write the function.")
    tested = await self.test(problem=self.problem, solution=solution, entry_point=self.entry_point)
    return tested'''),
    ("def sort_third(l: list):\n    \"\"\"Sort the values at indices divisible by three, keep the others.\"\"\"",
     '''async def run_workflow(self):
    solutions = []
    for i in range(3):
        solution = await self.custom_code_generate(problem=self.problem, entry_point=self.entry_point, instruction="Write a short, correct implementation.")
        solutions.append(solution)
    best = await self.sc_ensemble(solutions=solutions, problem=self.problem)
    tested = await self.test(problem=self.problem, solution=best, entry_point=self.entry_point)
    return tested'''),
)

MBPP_EXAMPLES = (
    ("Write a function to find the shared elements from the given two lists.\n\ndef similar_elements(test_tup1, test_tup2):",
     '''async def run_workflow(self):
    solution = await self.custom_code_generate(problem=self.problem, entry_point=self.entry_point, instruction="Return exactly the type the examples expect, then write the function.")
    tested = await self.test(problem=self.problem, solution=solution, entry_point=self.entry_point)
    return tested'''),
    ("Write a python function to identify non-prime numbers.\n\ndef is_not_prime(n):",
     '''async def run_workflow(self):
    first = await self.custom_code_generate(problem=self.problem, entry_point=self.entry_point, instruction="Write a simple loop-based solution.")
    second = await self.custom_code_generate(problem=self.problem, entry_point=self.entry_point, instruction="Write a solution using built-in functions.")
    best = await self.sc_ensemble(solutions=[first, second], problem=self.problem)
    return best'''),
)

TOY_PROMPT = 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b.\n    >>> add(2, 3)\n    5\n    """\n'


def public_test_file(name: str, path: str | Path | None) -> Path | None:
    """`<name>_public_test.jsonl` beside the split files, or None when there is none."""
    filename = f"{name}_public_test.jsonl"
    if path is None:
        try:
            return split_file(name, "test", None, filename)
        except UserError:
            return None
    p = Path(path).expanduser()
    cands = [p.with_name(filename)] if p.is_file() else [p / filename, p / name / filename]
    return next((c for c in cands if c.is_file()), None)


def _tests(value: object) -> list[str]:
    return [str(t) for t in value] if isinstance(value, list) else [str(value)] if value else []


class CodeTask(Task):
    """Shared by HumanEval and MBPP: hidden-test scoring and public-test lookup.

    `preload_imports` (on by default, the reference protocol): `math`, `re`, `hashlib` and the
    typing names `List`, `Dict`, `Tuple`, `Optional` and `Any` are available to a candidate and
    its tests without an import, as in the reference harness. Off: a candidate imports what it uses.
    """

    def __init__(self, path: str | Path | None, preload_imports: bool = PRELOAD_IMPORTS, **kw):
        super().__init__(**kw)
        self.path = path
        self.preload_imports = bool(preload_imports)

    def spec(self, problem: Problem) -> CodeSpec:
        return CodeSpec(str(problem.extra["entry_point"]), str(problem.answer), str(problem.extra.get("prompt", "")),
                        tuple(problem.extra.get("test_imports", ())), self.preload_imports)

    def score(self, problem: Problem, output: str) -> float:
        return run_hidden_tests_sync(self.spec(problem), output)

    async def ascore(self, problem: Problem, output: str, sandbox: Sandbox | None = None) -> float:
        return await run_hidden_tests(self.spec(problem), output, sandbox)

    def records(self, split: str) -> tuple[Path, list[dict]]:
        f = split_file(self.name, split, self.path)
        recs = list(read_jsonl(f))
        if not recs:
            raise UserError(f"{f}: no problems (empty dataset)")
        return f, recs

    def public_records(self) -> list[dict]:
        f = public_test_file(self.name, self.path)
        return list(read_jsonl(f)) if f is not None else []


class HumanEvalTask(CodeTask):
    def __init__(self, path: str | Path | None = None, preload_imports: bool = PRELOAD_IMPORTS):
        super().__init__(
            path,
            preload_imports,
            name="humaneval",
            family="code",
            description="Python functions from a signature and docstring; scored by hidden unit tests",
            operators=CODE_OPERATORS,
            template=CODE_TEMPLATE,
            toy=Problem("humaneval-toy", TOY_PROMPT, TOY_PROMPT,
                        "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
                        {"entry_point": "add", "prompt": TOY_PROMPT, "public_tests": ["assert candidate(2, 3) == 5"]}),
            similarity_threshold=None,
            extract=None,
            examples=HUMANEVAL_EXAMPLES,
        )

    def problems(self, split: str) -> list[Problem]:
        f, recs = self.records(split)
        public = {str(r.get("problem_id")): _tests(r.get("test")) for r in self.public_records()}
        out = []
        for n, rec in enumerate(recs, 1):
            require(rec, ("task_id", "prompt", "entry_point", "test"), f"{f}:{n}")
            tid = str(rec["task_id"])
            extra = {"entry_point": rec["entry_point"], "prompt": rec["prompt"],
                     "public_tests": clean_public_tests(public.get(tid, []), str(rec["entry_point"])),
                     "canonical_solution": rec.get("canonical_solution", "")}
            out.append(Problem(tid, rec["prompt"], rec["prompt"], rec["test"], extra))
        return out


class MBPPTask(CodeTask):
    def __init__(self, path: str | Path | None = None, preload_imports: bool = PRELOAD_IMPORTS):
        toy_prompt = "Write a function to return the sum of two numbers.\n\ndef add(a, b):"
        super().__init__(
            path,
            preload_imports,
            name="mbpp",
            family="code",
            description="short Python programming problems with a function signature; scored by hidden unit tests",
            operators=CODE_OPERATORS,
            template=CODE_TEMPLATE,
            toy=Problem("mbpp-toy", toy_prompt, toy_prompt,
                        "def check():\n    assert add(2, 3) == 5\n    assert add(-1, 1) == 0\n",
                        {"entry_point": "add", "prompt": toy_prompt, "public_tests": ["assert candidate(2, 3) == 5"]}),
            similarity_threshold=None,
            extract=None,
            examples=MBPP_EXAMPLES,
        )

    def problems(self, split: str) -> list[Problem]:
        f, recs = self.records(split)
        by_entry: dict[str, list[list[str]]] = {}
        for r in self.public_records():
            by_entry.setdefault(str(r.get("entry_point")), []).append(_tests(r.get("test")))
        out = []
        for n, rec in enumerate(recs, 1):
            require(rec, ("task_id", "prompt", "entry_point", "test"), f"{f}:{n}")
            entry = str(rec["entry_point"])
            extra = {"entry_point": entry, "prompt": rec["prompt"], "code": rec.get("code", ""),
                     "test_imports": [str(i) for i in rec.get("test_imports") or []],
                     "public_tests": clean_public_tests(_match_public(by_entry.get(entry, []), entry, rec), entry)}
            out.append(Problem(f"mbpp-{rec['task_id']}", rec["prompt"], rec["prompt"], rec["test"], extra))
        return out


def _match_public(options: list[list[str]], entry: str, rec: dict) -> list[str]:
    """MBPP's public tests are keyed by entry point, which eight pairs of problems share: take the
    set whose asserts (with `candidate` renamed) occur in this problem's own test list."""
    if len(options) <= 1:
        return options[0] if options else []
    hidden = " ".join(str(t).replace(" ", "") for t in rec.get("test_list") or [rec.get("test", "")])
    for tests in options:
        if all(t.replace("candidate", entry).replace(" ", "") in hidden for t in tests):
            return tests
    return []


__all__ = ["HumanEvalTask", "MBPPTask", "CodeTask", "SPLITS"]
