"""Workflows: extracting the `<graph>` source from a completion and the static checks on it.

A workflow is the source of `async def run_workflow(self)` that calls the task's operators as
`await self.<operator>(...)` and reads `self.problem` (and `self.entry_point` for code tasks);
policy.py holds the static policy on its syntax. The dynamic checks, a run on the task's toy
problem and the runs with its operators' outputs perturbed (dependence.py), happen in
`Runner.validate` through the sandbox.

A workflow must also be general, as the paper asks: its answer comes from the operators, not from
Python written around the problem (`independent_check`), and it carries no problem-specific content
(`specific_check`, one rule per task family); general.py holds both (see docs/tasks.md).
"""

from __future__ import annotations

import ast
import difflib
import re
import textwrap

# The rules against problem-specific workflows live in general.py, the static policy (which syntax,
# names and attributes a workflow may use) in policy.py.
from scoreflow.execute.general import (ANSWER_RULES, SMALL_NUMBER, analysis, independent_check, specific_check,
                                       structural)
from scoreflow.execute.policy import ATTRIBUTES_OF_SELF, Check, method_name, static_check

__all__ = ["ATTRIBUTES_OF_SELF", "Check", "method_name", "static_check", "check", "extract", "similarity",
           "analysis", "independent_check", "specific_check", "gold_in_source", "literal_strings", "ANSWER_RULES",
           "SMALL_NUMBER"]

GRAPH = re.compile(r"<graph>(.*?)(?:</graph>|$)", re.S)
FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*$", re.M)


def extract(text: str) -> str | None:
    """The workflow source inside <graph>...</graph> (a missing close tag is tolerated), or None."""
    m = GRAPH.search(text or "")
    if not m:
        return None
    body = FENCE.sub("", m.group(1))
    body = textwrap.dedent(body).strip("\n")
    return body if body.strip() else None


def _normalise(source: str) -> str:
    lines = [ln.strip() for ln in source.splitlines()]
    return "\n".join(ln for ln in lines if ln and not ln.startswith("#"))


def similarity(source: str, template: str) -> float:
    """difflib ratio of the two sources, whitespace and comments ignored."""
    return difflib.SequenceMatcher(None, _normalise(source), _normalise(template), autojunk=False).ratio()


def check(source: str | None, operators: tuple[str, ...], template: str, threshold: float | None,
          attributes: tuple[str, ...] = ATTRIBUTES_OF_SELF, family: str | None = None,
          problem: str | None = None) -> Check:
    """The static policy; with `family`, also the rules against problem-specific workflows."""
    if source is None:
        return Check(False, "no <graph> block")
    if len(source) > 20000:
        return Check(False, "workflow longer than 20000 characters")
    c = static_check(source, operators, attributes)
    if not c.ok:
        return c
    if family is not None:
        found = analysis(source, attributes)
        c = independent_check(source, found)
        if c.ok:
            c = specific_check(source, family, problem, found)
        if not c.ok:
            return c
    if threshold is not None:
        r = similarity(source, template)
        if r >= threshold:
            return Check(False, f"too similar to the template (ratio {r:.2f} >= {threshold})")
    return c


def _strings(tree: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def literal_strings(source: str) -> list[str]:
    """The string literals of a workflow that parses."""
    return _strings(ast.parse(source))


def gold_in_source(source: str, gold: object) -> bool:
    """Whether the gold answer appears in a workflow's source: as a number token for numeric answers
    (loop counts and indices excluded, as the maths rule admits them), else as a phrase."""
    try:
        value = float(gold)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        text = str(gold).strip().lower()
        return bool(text) and text in source.lower()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = None
    in_structure = structural(tree) if tree is not None else set()
    numbers: list[float] = []
    if tree is not None:
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
                if id(n) not in in_structure:
                    numbers.append(float(n.value))
        texts = _strings(tree)
    else:
        texts = [source]
    for t in texts:
        numbers += [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*(?:\.\d+)?", t)]
    return any(abs(x - value) < 1e-9 for x in numbers)
