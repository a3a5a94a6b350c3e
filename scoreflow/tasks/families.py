"""What the tasks of one family share: operators, template workflow, answer extraction."""

from __future__ import annotations

MATH_OPERATORS = ("Custom", "Programmer", "ScEnsemble", "Review")
QA_OPERATORS = ("Custom", "AnswerGenerate", "ScEnsemble", "Review")
CODE_OPERATORS = ("CustomCodeGenerate", "ScEnsemble", "Test")
OPERATORS = {"math": MATH_OPERATORS, "qa": QA_OPERATORS, "code": CODE_OPERATORS}

MATH_TEMPLATE = '''async def run_workflow(self):
    solution = await self.custom(input=self.problem, instruction="Solve the problem step by step.")
    return solution'''

QA_TEMPLATE = '''async def run_workflow(self):
    answer = await self.answer_generate(input=self.problem)
    return answer'''

CODE_TEMPLATE = '''async def run_workflow(self):
    solution = await self.custom_code_generate(problem=self.problem, entry_point=self.entry_point, instruction="Write the function.")
    return solution'''

TEMPLATES = {"math": MATH_TEMPLATE, "qa": QA_TEMPLATE, "code": CODE_TEMPLATE}

EXTRACT_NUMBER = "Give the final answer to the problem as a single number, with nothing else."
EXTRACT_BOXED = ("Give the final answer to the problem in simplest form, written in LaTeX inside \\boxed{}, "
                 "with nothing else.")
EXTRACT_SHORT = ("Give only the final answer to the question: a short phrase, name, date, number, or yes/no, "
                 "with no explanation.")
EXTRACT_SPAN = ("Give only the final answer to the question: a number, a date, or a short span of words from "
                "the passage, with no explanation.")
