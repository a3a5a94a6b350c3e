"""An LLM judge for test-split reports: does an answer mean the same as the gold answer?

Reported beside a task's exact metric, never instead of it (a judge is lenient and model-dependent).
As in the reference protocol (ScoreFlow's get_scores.py with its judger, test split only), the
tasks marked `judged` (MATH, HotpotQA, DROP) get the executor's 1/0 verdict on each extracted answer;
a MATH answer is judged by its last \\boxed{} content, and a HotpotQA answer at least 10 times
longer or shorter than the gold (in characters) is judged 0 without asking (`length_guard`).
"""

from __future__ import annotations

import re
from typing import Any

from scoreflow.tasks.base import Problem, Task
from scoreflow.tasks.math_equiv import last_boxed

JUDGE_PROMPT = (
    "You grade answers. Decide whether the response gives the same final answer as the reference "
    "answer (equivalent wording, units or formatting count as the same; a different or missing "
    "answer does not). Reply with <verdict>yes</verdict> or <verdict>no</verdict>.\n\n"
    "Question: {question}\n\nReference answer: {reference}\n\nResponse: {response}"
)
_VERDICT = re.compile(r"<verdict>\s*(yes|no)\b", re.I)


def reference_text(problem: Problem) -> str:
    gold = problem.answer
    if isinstance(gold, list):
        return " | ".join(str(g) for g in gold)
    if isinstance(gold, float) and gold.is_integer():
        return str(int(gold))
    return str(gold)


def parse_verdict(reply: str) -> float | None:
    """1.0 for yes, 0.0 for no, None when the reply gives no verdict."""
    m = _VERDICT.search(reply or "")
    if m:
        return 1.0 if m.group(1).lower() == "yes" else 0.0
    words = re.findall(r"[a-z]+", (reply or "").lower())
    if words and words[0] in ("yes", "no"):
        return 1.0 if words[0] == "yes" else 0.0
    return None


def judged_text(task: Task, response: str) -> str:
    """What the judge sees of `response`: for maths, the last \\boxed{} content when there is one."""
    if task.family == "math":
        boxed = last_boxed(response)
        if boxed is not None:
            return boxed.strip()
    return response


def length_guard(task: Task, problem: Problem, response: str) -> bool:
    """True when `response` fails the task's length-ratio guard (`Task.judge_length_ratio`): its
    length over the gold answer's, in characters, is >= the ratio or <= its inverse (an empty gold
    answer fails too). The reference applies it to HotpotQA with ratio 10."""
    r = task.judge_length_ratio
    if not r:
        return False
    gold = reference_text(problem)
    if not gold:
        return True
    ratio = len(response) / len(gold)
    return ratio >= r or ratio <= 1 / r


async def judge(executor: Any, task: Task, problem: Problem, response: str, max_tokens: int = 16) -> float | None:
    """The executor's verdict on `response` (None for code tasks, which their tests decide, and
    for an unparsable verdict); 0.0 without a call when the length guard rejects it."""
    if task.family == "code":
        return None
    response = judged_text(task, response)
    if length_guard(task, problem, response):
        return 0.0
    prompt = JUDGE_PROMPT.format(question=problem.question, reference=reference_text(problem), response=response)
    reply = await executor.chat([{"role": "user", "content": prompt}], max_tokens=max_tokens)
    return parse_verdict(reply.text)
