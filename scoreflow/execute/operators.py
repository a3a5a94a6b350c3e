"""Operators: the building blocks a workflow calls as `await self.<operator>(...)`.

Each operator is defined once: its parameters and description produce the documentation the
generator sees, and its `run` produces its behaviour. Operators run in the parent process; the
sandboxed workflow only sends their names and arguments. Every operator returns a string.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from scoreflow.execute.executor import Executor
from scoreflow.sandbox.parent import Sandbox
from scoreflow.tasks.base import Problem, Task
from scoreflow.tasks.code_eval import run_public_tests, sanitize
from scoreflow.execute.workflow import method_name

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "str" | "list"
    help: str
    default: Any = REQUIRED


@dataclass
class Context:
    """What an operator call may use. Counts the executor calls and tokens of one workflow run."""

    executor: Executor
    sandbox: Sandbox
    task: Task
    problem: Problem
    max_tokens: int | None = None
    rep: int = 0  # which of the r runs: keys the executor's reply cache, so runs are not collapsed
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0  # at the executor's price (a reply from its cache costs what it cost first)

    async def llm(self, prompt: str, system: str | None = None) -> str:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        reply = await self.executor.chat(messages, max_tokens=self.max_tokens, rep=self.rep)
        self.calls += 1
        self.tokens += reply.prompt_tokens + reply.completion_tokens
        price_in, price_out = self.executor.price
        self.cost_usd += (reply.prompt_tokens * price_in + reply.completion_tokens * price_out) / 1e6
        return reply.text


@dataclass(frozen=True)
class Operator:
    name: str
    doc: str
    params: tuple[Param, ...]
    returns: str
    run: Callable[..., Awaitable[str]] = field(repr=False)

    @property
    def method(self) -> str:
        return method_name(self.name)

    def documentation(self) -> str:
        args = ", ".join(p.name + ("=..." if p.default is REQUIRED else f"={p.default!r}") for p in self.params)
        lines = [f"- await self.{self.method}({args}) -> {self.returns}", f"  {self.doc}"]
        lines += [f"  {p.name}: {p.help}" for p in self.params]
        return "\n".join(lines)

    def bind(self, args: list, kwargs: dict) -> dict[str, Any]:
        if len(args) > len(self.params):
            raise TypeError(f"{self.method}() takes {len(self.params)} arguments, got {len(args)}")
        bound = {p.name: a for p, a in zip(self.params, args)}
        for k, v in kwargs.items():
            if k not in {p.name for p in self.params}:
                raise TypeError(f"{self.method}() got an unexpected argument {k!r}")
            if k in bound:
                raise TypeError(f"{self.method}() got two values for {k!r}")
            bound[k] = v
        out = {}
        for p in self.params:
            if p.name not in bound:
                if p.default is REQUIRED:
                    raise TypeError(f"{self.method}() is missing the argument {p.name!r}")
                bound[p.name] = p.default
            v = bound[p.name]
            if p.kind == "list":
                v = [str(x) for x in v] if isinstance(v, list) else [str(v)]
            else:
                v = v if isinstance(v, str) else str(v)
            out[p.name] = v
        return out

    async def __call__(self, ctx: Context, args: list, kwargs: dict) -> str:
        return await self.run(ctx, **self.bind(args, kwargs))


# ---- helpers ---------------------------------------------------------------------------------

CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.S)
FIELD = re.compile(r"<(\w+)>(.*?)(?:</\1>|$)", re.S)


def code_from(text: str) -> str:
    """The first fenced code block, else the text itself."""
    m = CODE_BLOCK.search(text or "")
    return (m.group(1) if m else text or "").strip()


def field_from(text: str, name: str) -> str | None:
    """`<name>...</name>` from a structured reply (a missing close tag is tolerated)."""
    for m in FIELD.finditer(text or ""):
        if m.group(1).lower() == name:
            return m.group(2).strip()
    return None


def answer_key(text: str) -> str:
    """What two solutions must share to count as agreeing: their last number, else their last line."""
    nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text or "")
    if nums:
        return nums[-1].replace(",", "").rstrip(".")
    lines = [ln.strip().lower() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def majority(solutions: list[str]) -> str:
    keys = [answer_key(s) for s in solutions]
    best, _ = Counter(keys).most_common(1)[0]
    return solutions[keys.index(best)]


# ---- the operators ---------------------------------------------------------------------------

async def _custom(ctx: Context, input: str, instruction: str) -> str:
    return await ctx.llm(f"{instruction}\n\n{input}")


async def _programmer(ctx: Context, problem: str, analysis: str = "") -> str:
    prompt = ("Write a Python function `solve()` that computes and returns the answer to the problem. "
              "Use only the Python standard library. Reply with one ```python code block.\n\n"
              f"Problem: {problem}")
    if analysis:
        prompt += f"\n\nNotes: {analysis}"
    error = "no code"
    for _ in range(3):
        code = code_from(await ctx.llm(prompt))
        if "def solve" not in code:
            error = "the reply defines no solve() function"
        else:
            run = await ctx.sandbox.run_program(code + "\n\nprint(solve())\n", timeout_s=10)
            if run.status == "ok" and run.stdout.strip():
                return run.stdout.strip()[-2000:]
            error = (run.error or "no output")[-500:]
        prompt += f"\n\nYour previous code:\n```python\n{code}\n```\nIt failed: {error}\nWrite corrected code."
    return f"The program failed: {error}"


async def _sc_ensemble(ctx: Context, solutions: list[str], problem: str) -> str:
    solutions = [s for s in solutions if s.strip()]
    if not solutions:
        return ""
    if len(solutions) == 1:
        return solutions[0]
    letters = [chr(ord("A") + i) for i in range(min(len(solutions), 26))]
    listing = "\n\n".join(f"{l}: {s}" for l, s in zip(letters, solutions))
    reply = await ctx.llm(
        "Several solutions to the problem are given. Find the answer that most of them agree on and "
        "reply with the letter of the most consistent solution inside <answer></answer>, e.g. <answer>A</answer>."
        f"\n\nProblem: {problem}\n\n{listing}"
    )
    choice = (field_from(reply, "answer") or reply).strip().strip(".:)( ").upper()
    m = re.match(r"(?:SOLUTION\s+)?([A-Z])\b", choice)
    if m and m.group(1) in letters:
        return solutions[letters.index(m.group(1))]
    return majority(solutions)  # unparsable choice: majority vote


async def _review(ctx: Context, problem: str, solution: str) -> str:
    reply = await ctx.llm(
        "Check the solution to the problem step by step. If it is wrong, correct it. Reply with the full "
        f"corrected solution and end with the final answer.\n\nProblem: {problem}\n\nSolution: {solution}"
    )
    return reply if reply.strip() else solution


CUSTOM = Operator(
    "Custom", "Asks the executor model to follow an instruction on an input.",
    (Param("input", "str", "the text to work on, e.g. self.problem"),
     Param("instruction", "str", "what to do with it")),
    "the model's reply", _custom)
PROGRAMMER = Operator(
    "Programmer", "Has the model write a Python solve() function, runs it, and retries on errors.",
    (Param("problem", "str", "the problem to compute"),
     Param("analysis", "str", "optional notes on how to solve it", "")),
    "the program's printed result", _programmer)
SC_ENSEMBLE = Operator(
    "ScEnsemble", "Picks the most self-consistent solution among several.",
    (Param("solutions", "list", "a list of candidate solutions"),
     Param("problem", "str", "the problem they solve")),
    "the chosen solution", _sc_ensemble)
REVIEW = Operator(
    "Review", "Checks a solution and returns a corrected version.",
    (Param("problem", "str", "the problem"), Param("solution", "str", "the solution to check")),
    "the reviewed solution", _review)

async def _answer_generate(ctx: Context, input: str) -> str:
    reply = await ctx.llm(
        "Answer the question using the text given with it. Think it through first, then answer briefly. "
        "Reply in exactly this format:\n<thought>your step-by-step reasoning</thought>\n"
        f"<answer>the final answer only: a few words, a name, a number or yes/no</answer>\n\n{input}"
    )
    return answer_from(reply)


def answer_from(reply: str) -> str:
    """The <answer> field of a reply; else the text after its last 'answer:'; else the whole reply."""
    found = field_from(reply, "answer")
    if found:
        return found
    m = list(re.finditer(r"answer\s*(?:is|:)\s*(.+)", reply or "", re.I))
    if m:
        return m[-1].group(1).strip()
    return (reply or "").strip()


def _code_problem(ctx: Context, problem: str) -> str:
    return str(ctx.problem.extra.get("prompt") or problem)


async def _custom_code_generate(ctx: Context, problem: str, entry_point: str, instruction: str) -> str:
    reply = await ctx.llm(
        f"{instruction}\n\nWrite a complete, self-contained Python solution to the problem below. The function "
        f"must be named `{entry_point}`. Include the imports it needs, use only the standard library, and "
        "do not write tests or example calls. Reply with one ```python code block.\n\n"
        f"{problem}"
    )
    return sanitize(reply, entry_point, _code_problem(ctx, problem)) or code_from(reply)


TEST_ROUNDS = 3


async def _test(ctx: Context, problem: str, solution: str, entry_point: str) -> str:
    prompt = _code_problem(ctx, problem)
    tests = [str(t) for t in ctx.problem.extra.get("public_tests") or []]
    code = sanitize(solution, entry_point, prompt) or code_from(solution)
    for _ in range(TEST_ROUNDS):
        failures = await run_public_tests(ctx.sandbox, code, entry_point, tests,
                                          preload=getattr(ctx.task, "preload_imports", True))
        if not failures:
            return code
        report = "\n".join(f"- {f}" for f in failures[:8])
        reply = await ctx.llm(
            f"The Python solution below fails some tests. Fix it so that the function `{entry_point}` passes "
            "them and solves the problem. Reply with the complete corrected code in one ```python code block."
            f"\n\nProblem:\n{problem}\n\nSolution:\n```python\n{code}\n```\n\nFailures:\n{report}"
        )
        fixed = sanitize(reply, entry_point, prompt)
        if fixed is None:
            continue  # an unusable reply: keep the current code and ask again
        code = fixed
    return code


ANSWER_GENERATE = Operator(
    "AnswerGenerate", "Reasons step by step about a question (with its context) and gives a short answer.",
    (Param("input", "str", "the question with its context, e.g. self.problem"),),
    "the short answer", _answer_generate)
CUSTOM_CODE_GENERATE = Operator(
    "CustomCodeGenerate", "Asks the model for a Python solution that defines the entry-point function.",
    (Param("problem", "str", "the problem, e.g. self.problem"),
     Param("entry_point", "str", "the function name to define, e.g. self.entry_point"),
     Param("instruction", "str", "extra guidance for the model")),
    "the solution code", _custom_code_generate)
TEST = Operator(
    "Test", "Runs the solution on the problem's public tests and has the model fix failures (up to "
    f"{TEST_ROUNDS} rounds).",
    (Param("problem", "str", "the problem, e.g. self.problem"),
     Param("solution", "str", "the code to test"),
     Param("entry_point", "str", "the function name, e.g. self.entry_point")),
    "the tested (possibly fixed) code", _test)

OPERATORS: dict[str, Operator] = {op.name: op for op in (CUSTOM, PROGRAMMER, SC_ENSEMBLE, REVIEW, ANSWER_GENERATE,
                                                         CUSTOM_CODE_GENERATE, TEST)}


def for_task(task: Task) -> dict[str, Operator]:
    """The task's operators keyed by method name (`sc_ensemble`)."""
    return {OPERATORS[name].method: OPERATORS[name] for name in task.operators}


def documentation(task: Task) -> str:
    return "\n".join(OPERATORS[name].documentation() for name in task.operators)


BARE_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?")


async def extract_answer(ctx: Context, output: str) -> str:
    """The paper's answer-extraction step: one executor call after a maths or QA workflow."""
    if not ctx.task.extract or not output.strip():
        return output
    if ctx.task.family == "math" and BARE_NUMBER.fullmatch(output.strip()):
        return output  # already the answer: a small executor asked again can only change it
    reply = await ctx.llm(f"Problem: {ctx.problem.question}\n\nSolution: {output}\n\n{ctx.task.extract}")
    return reply.strip() or output
