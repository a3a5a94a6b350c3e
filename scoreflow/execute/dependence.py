"""The dynamic half of the rule that a workflow's answer comes from its operators: the workflow runs
again in the sandbox with its operators' outputs perturbed, and its answer must move.

The outputs are those of the validation run on the task's toy problem, replayed in call order with
other numbers and other letters, so they keep their shape (a number stays a number, a tag stays a
tag) and no model is called. Two variants: the first keeps the words the workflow itself spells (so
that parsing such as `reply.split("Answer:")` still finds its marker), the second changes every word.
For a task whose problems are made from numbers (`Task.twin`), the workflow also reads a twin of the
toy problem, and the toy's numbers in the replies become the twin's.

A workflow is rejected when its answer moves in no variant (or no variant runs), and when an answer
that stays put is one its family may not return as a constant (a number, for maths). A fallback that
does not move in one variant ("unknown", or a yes/no decided by a marker the workflow spells) is fine.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from scoreflow.execute.policy import Check
from scoreflow.sandbox.parent import Sandbox
from scoreflow.tasks.base import Problem

# (number n becomes a*n + b, letter shift, keep the workflow's own words): every number changes, none
# becomes 0, and their ratios change too
VARIANTS = ((2, 3, 3, True), (3, 7, 11, False))
FILLER = (" zq", " Xk 4")  # added where a reply has nothing to change


@dataclass
class Call:
    method: str
    output: str


def _shift(word: str, k: int) -> str:
    return "".join(chr((ord(c) - base + k) % 26 + base) if c.isascii() and c.isalpha() else c
                   for c in word for base in [ord("a") if c.islower() else ord("A")])


def perturb(text: str, variant: int, keep: frozenset[str] = frozenset(), numbers: dict[str, str] | None = None) -> str:
    """`text` with other numbers and other letters, in the same shape. `keep`: words left as they are
    (first variant only); `numbers`: whole numbers replaced by given ones (a twin problem's)."""
    a, b, letters, keeping = VARIANTS[variant]
    numbers = numbers or {}

    def number(m: re.Match) -> str:
        return numbers.get(m.group(0)) or str(a * int(m.group(0)) + b)

    def word(m: re.Match) -> str:
        w = m.group(0)
        return w if keeping and w.lower() in keep else _shift(w, letters)

    out = re.sub(r"[A-Za-z]+", word, re.sub(r"[0-9]+", number, text))
    return out if out != text else text + FILLER[variant]


def twin_numbers(toy: Problem, twin: Problem | None) -> dict[str, str]:
    """The toy problem's numbers mapped to its twin's, in order."""
    if twin is None:
        return {}
    return dict(zip(re.findall(r"\d+", toy.inputs), re.findall(r"\d+", twin.inputs)))


def spelled_words(strings: list[str]) -> frozenset[str]:
    return frozenset(w.lower() for s in strings for w in re.findall(r"[A-Za-z]+", s))


async def perturbed_answers(sandbox: Sandbox, source: str, attrs: dict[str, str], methods: list[str],
                            calls: list[Call], keep: frozenset[str], numbers: dict[str, str]) -> list[str | None]:
    """The workflow's answer in each variant (None where it failed), operator outputs replayed."""

    async def one(variant: int) -> str | None:
        seen = 0

        async def handler(method: str, args: list, kwargs: dict) -> Any:
            nonlocal seen
            if seen < len(calls):
                base = calls[seen].output
            else:  # more calls than the first run made: the last output of the same operator
                base = next((c.output for c in reversed(calls) if c.method == method), "")
            seen += 1
            return perturb(base, variant, keep, numbers)

        for _ in range(2):  # a run the machine cut short (a deadline under load) gets a second chance
            seen = 0
            res = await sandbox.run_workflow(source, attrs, methods, handler)
            if res.status not in ("timeout", "crashed"):
                break
        return res.output if res.status == "ok" and (res.output or "").strip() else None

    return list(await asyncio.gather(*(one(v) for v in range(len(VARIANTS)))))


def verdict(answer: str, perturbed: list[str | None], answer_rule) -> Check:
    """Reject an answer that does not move, or that stays put and is a constant its family may not return."""
    moved = [p for p in perturbed if p is not None and p != answer]
    if not moved:
        how = "it fails with any other outputs" if all(p is None for p in perturbed) else \
            f"it stays {answer[:40]!r}"
        return Check(False, f"problem-specific: the answer does not move when the operators' outputs change ({how})")
    if any(p == answer for p in perturbed):
        why = answer_rule(answer) if answer_rule else None
        if why:
            return Check(False, f"problem-specific: the answer {answer[:40]!r} stays the same when the operators' "
                                f"outputs change: {why}")
    return Check(True)
