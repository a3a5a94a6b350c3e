"""The generator's prompt: a few-shot chat that shows the operators, the template and two worked
examples, then asks for the workflow of one problem. The same messages are used to generate and,
in training, as the prompt of every pair, so the model is trained on exactly what it saw."""

from __future__ import annotations

import re

from scoreflow.model.backend import Messages
from scoreflow.execute.operators import documentation
from scoreflow.tasks.base import Problem, Task

SYSTEM = """You write workflows that solve {description}.
A workflow is a Python method `async def run_workflow(self)` that calls these operators with `await` and returns the final solution as a string. `self.problem` is the problem text.{attrs}

Operators:
{operators}

This is the template workflow. Write a better one: combine the operators differently.
<graph>
{template}
</graph>

Reply with the workflow between <graph> and </graph> and nothing else. No imports, no other functions."""


NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def hide_numbers(text: str) -> str:
    """The problem as the generator sees it with `generator.hide_numbers`: each number becomes "some", so
    the workflow is written for the problem's kind and cannot carry its numbers (the executor still
    reads the real problem through `self.problem`)."""
    return NUMBER.sub("some", text)


def _user(problem: str, hide: bool = False) -> str:
    return f"Problem: {(hide_numbers(problem) if hide else problem).strip()}\nWrite the workflow."


def _answer(source: str) -> str:
    return f"<graph>\n{source.strip()}\n</graph>"


def generator_messages(task: Task, problem: Problem, hide: bool = False, rotate: int = 0) -> Messages:
    """The chat for `problem`; `rotate` shows the few-shot examples rotated by that many places (0: in
    their order, the prompt that training and evaluation use)."""
    attrs = " `self.entry_point` is the name of the function to write." if task.family == "code" else ""
    messages: Messages = [{"role": "system", "content": SYSTEM.format(
        description=task.description, attrs=attrs, operators=documentation(task), template=task.template.strip())}]
    n = len(task.examples)
    examples = task.examples[rotate % n:] + task.examples[:rotate % n] if n else task.examples
    for question, source in examples:
        messages.append({"role": "user", "content": _user(question, hide)})
        messages.append({"role": "assistant", "content": _answer(source)})
    messages.append({"role": "user", "content": _user(problem.question, hide)})
    return messages
