"""An optional LLM judge for test-split reports: does an answer mean the same as the gold answer?

Reported beside a task's exact metric, never instead of it (a judge is lenient and model-dependent).
"""

from __future__ import annotations

import re
from typing import Any

from .base import Problem, Task

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


async def judge(executor: Any, task: Task, problem: Problem, response: str, max_tokens: int = 16) -> float | None:
    """The executor's verdict on `response` (None for code tasks, which their tests decide, and
    for an unparsable verdict)."""
    if task.family == "code":
        return None
    prompt = JUDGE_PROMPT.format(question=problem.question, reference=reference_text(problem), response=response)
    reply = await executor.chat([{"role": "user", "content": prompt}], max_tokens=max_tokens)
    return parse_verdict(reply.text)
