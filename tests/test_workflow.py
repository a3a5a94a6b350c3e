"""The rules against problem-specific workflows (the paper: a workflow is a method, not an answer)."""

import pytest

from scoreflow.execute import workflow as wf
from scoreflow.tasks.families import CODE_OPERATORS, MATH_OPERATORS, QA_OPERATORS, MATH_TEMPLATE

PROBLEM = "Ava has 22 coins. Ava gets 10 more. How many coins does Ava have now?"


def math_check(source: str, problem: str = PROBLEM) -> wf.Check:
    return wf.check(source, MATH_OPERATORS, MATH_TEMPLATE, 0.8, family="math", problem=problem)


HARD_CODED = '''async def run_workflow(self):
    steps = await self.custom(input=self.problem, instruction="Work it out carefully and end with the number.")
    return 22 * 10 + 10'''

ANSWER_IN_INSTRUCTION = '''async def run_workflow(self):
    answer = await self.custom(input=self.problem, instruction="The answer is 19.")
    return answer'''


def test_the_issue_workflow_is_rejected_for_ignoring_the_executor():
    c = math_check(HARD_CODED)
    assert not c.ok
    assert "does not depend on any operator" in c.reason


def test_a_computed_answer_in_an_instruction_is_rejected():
    c = math_check(ANSWER_IN_INSTRUCTION)
    assert not c.ok and "string holds a number" in c.reason


@pytest.mark.parametrize("body", [
    "    x = await self.custom(input=self.problem, instruction='Solve.')\n    return x + ' 32'",
    "    x = await self.custom(input=self.problem, instruction='Solve.')\n    return str(23 - 4)",
    "    x = await self.custom(input=self.problem, instruction='Solve.')\n    solution = 23 - 4\n    return x",
    "    x = await self.custom(input='Ava has 22 coins', instruction='Solve.')\n    return x",
    "    x = await self.programmer(problem=self.problem, analysis=f'add {22} and {10}')\n    return x",
    "    xs = []\n    for i in range(40):\n        xs.append(await self.custom(input=self.problem, instruction='Solve.'))\n"
    "    return await self.sc_ensemble(solutions=xs, problem=self.problem)",
])
def test_problem_numbers_in_code_or_strings_are_rejected(body):
    c = math_check("async def run_workflow(self):\n" + body)
    assert not c.ok and c.reason.startswith("problem-specific"), c.reason


@pytest.mark.parametrize("body", [
    "    x = await self.custom(input=self.problem, instruction='Answer with the number only.')\n    return x",
    "    xs = []\n    for i in range(3):\n        xs.append(await self.custom(input=self.problem, instruction='Solve.'))\n"
    "    best = await self.sc_ensemble(solutions=xs, problem=self.problem)\n    return best",
    "    xs = [await self.custom(input=self.problem, instruction='Solve.') for _ in range(2)]\n    return xs[-1]",
    "    a = await self.custom(input=self.problem, instruction='List the quantities.')\n"
    "    r = await self.programmer(problem=self.problem, analysis=a)\n"
    "    return await self.review(problem=self.problem, solution=r)",
    "    a = await self.custom(input=self.problem, instruction='Solve.')\n    b = a\n    if a:\n        b = a + '!'\n    return b",
])
def test_general_workflows_pass(body):
    c = math_check("async def run_workflow(self):\n" + body)
    assert c.ok, c.reason


def test_the_task_rule_is_applied_at_validation_with_its_reason(tmp_path):
    """Through the Runner, as the loop validates: the reason is what the run directory records."""
    import asyncio

    from scoreflow.execute.runner import Runner
    from scoreflow.sandbox.parent import Sandbox
    from scoreflow.tasks.arith import ArithTask

    task = ArithTask()
    problem = task.problems("validate")[0]
    runner = Runner(task, None, Sandbox())  # type: ignore[arg-type]  # rejected before any executor call
    c = asyncio.run(runner.validate(HARD_CODED, problem))
    assert not c.ok and "does not depend on any operator" in c.reason


def test_qa_rule_rejects_quoting_the_problem():
    problem = "Which magazine was started first, Arthur's Magazine or First for Women?"
    quoting = ('async def run_workflow(self):\n'
               '    a = await self.answer_generate(input="Which magazine was started first, Arthur\'s Magazine")\n'
               '    return a')
    c = wf.check(quoting, QA_OPERATORS, "", None, family="qa", problem=problem)
    assert not c.ok and "quotes" in c.reason
    general = 'async def run_workflow(self):\n    a = await self.answer_generate(input=self.problem)\n    return a'
    assert wf.check(general, QA_OPERATORS, "", None, family="qa", problem=problem).ok


def test_code_rule_rejects_code_in_strings():
    src = ('async def run_workflow(self):\n'
           '    s = await self.custom_code_generate(problem=self.problem, entry_point=self.entry_point, '
           'instruction="def add(a, b): return a + b")\n'
           '    return s')
    c = wf.check(src, CODE_OPERATORS, "", None, family="code")
    assert not c.ok and "carries code" in c.reason
    prose = src.replace("def add(a, b): return a + b", "Do not import anything: use only builtins. Return the sum (an int).")
    assert wf.check(prose, CODE_OPERATORS, "", None, family="code").ok  # instructions in words are fine


def test_gold_in_source():
    assert wf.gold_in_source(ANSWER_IN_INSTRUCTION, 19)
    assert wf.gold_in_source(HARD_CODED, 10)
    assert not wf.gold_in_source(HARD_CODED, 19)
    ensemble = "async def run_workflow(self):\n    xs = [await self.custom(input=self.problem, instruction='x') for _ in range(3)]\n    return xs[0]"
    assert not wf.gold_in_source(ensemble, 3)  # a loop count is not an answer


def test_arith_examples_are_methods_for_their_kind():
    """Each few-shot example holds no number of its problem: run in the sandbox with an executor
    that reads the numbers faithfully, it solves every problem of its own kind, and another kind's
    example fails them (the reward measures the generator's choice of operation)."""
    import asyncio
    import re

    from scoreflow.execute.executor import Executor, Reply
    from scoreflow.execute.runner import Runner
    from scoreflow.sandbox.parent import Sandbox
    from scoreflow.tasks.arith import EXAMPLES, ArithTask

    class Reader(Executor):
        async def _chat(self, messages, max_tokens, temperature):
            return Reply(" ".join(re.findall(r"\d+", messages[-1]["content"])), 10, 5)

    def kind_of(question: str) -> int:  # the example (0-4) written for this kind of problem
        return (0 if "more. How many" in question else 1 if "gives away" in question else
                2 if "boxes with" in question else 3 if "shared equally" in question else 4)

    task = ArithTask()
    problems = task.problems("validate")[:20]
    assert [kind_of(q) for q, _ in EXAMPLES] == [0, 1, 2, 3, 4]
    runner = Runner(task, Reader(), Sandbox())

    async def scores(source: str) -> list[float]:
        return [(await runner.run(source, p)).score for p in problems]

    for k, (_, source) in enumerate(EXAMPLES):
        got = asyncio.run(scores(source))
        assert all(s == 1.0 for p, s in zip(problems, got) if kind_of(p.question) == k), (k, got)
        assert sum(got) < len(problems), k  # not every kind's arithmetic is the same


def test_arith_says_which_operation_the_trained_workflows_apply_by_kind():
    from scoreflow.tasks.arith import EXAMPLES, ArithTask, kind_of, operations

    task = ArithTask()
    problems = task.problems("test")[:40]
    by_op = {operations(src): src for _, src in EXAMPLES}
    assert set(by_op) == {"+", "-", "*", "//", "+-"}
    right = [by_op[kind_of(p.question)[1]] for p in problems]
    adding = [by_op["+"]] * len(problems)
    text = task.describe_change(problems, adding, right)
    takeaway = sum(kind_of(p.question)[0] == "take-away" for p in problems)
    assert f"take-away 0 -> {takeaway} of {takeaway}" in text
    assert "adding" not in text  # the adding problems were right before and after
    assert task.describe_change(problems, right, right).startswith("the right operation for each kind")
    assert operations("not python(") == "" and operations(None) == ""
