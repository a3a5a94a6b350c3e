"""Workflows: extracting the `<graph>` source from a completion and the static checks on it.

A workflow is the source of `async def run_workflow(self)` that calls the task's operators as
`await self.<operator>(...)` and reads `self.problem` (and `self.entry_point` for code tasks);
policy.py holds the static policy on its syntax. The dynamic check, a run on the task's toy
problem, happens in the loop through the sandbox.

A workflow must also be general, as the paper asks: its answer comes from the operators, not from
Python written around the problem (`independent_check`), and it carries no problem-specific content
(`specific_check`, one rule per task family; see docs/tasks.md).
"""

from __future__ import annotations

import ast
import difflib
import re
import textwrap

# The static policy (which syntax, names and attributes a workflow may use) lives in policy.py.
from scoreflow.execute.policy import ATTRIBUTES_OF_SELF, Check, method_name, static_check

__all__ = ["ATTRIBUTES_OF_SELF", "Check", "method_name", "static_check", "check", "extract", "similarity",
           "independent_check", "specific_check", "gold_in_source"]

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
        c = independent_check(source, operators)
        if c.ok:
            c = specific_check(source, family, problem)
        if not c.ok:
            return c
    if threshold is not None:
        r = similarity(source, template)
        if r >= threshold:
            return Check(False, f"too similar to the template (ratio {r:.2f} >= {threshold})")
    return c


# ---- general, not problem-specific ---------------------------------------------------------------

def _operator_call(node: ast.AST, methods: set[str]) -> bool:
    return (isinstance(node, ast.Await) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and isinstance(node.value.func.value, ast.Name)
            and node.value.func.value.id == "self" and node.value.func.attr in methods)


def _uses(node: ast.AST, tainted: set[str], methods: set[str]) -> bool:
    return any(_operator_call(n, methods) or (isinstance(n, ast.Name) and n.id in tainted) for n in ast.walk(node))


def _targets(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def operator_derived(fn: ast.AsyncFunctionDef, methods: set[str]) -> set[str]:
    """Names whose value depends on an operator's output (assignments, loops, `x.append(...)`),
    followed to a fixed point so that loops are covered."""
    tainted: set[str] = set()
    while True:
        before = len(tainted)
        for n in ast.walk(fn):
            if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and n.value is not None:
                if _uses(n.value, tainted, methods):
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target]):
                        tainted |= _targets(t)
            elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)) and _uses(n.iter, tainted, methods):
                tainted |= _targets(n.target)
            elif isinstance(n, ast.NamedExpr) and _uses(n.value, tainted, methods):
                tainted.add(n.target.id)
            elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
                  and any(_uses(a, tainted, methods) for a in [*n.args, *(k.value for k in n.keywords)])):
                tainted.add(n.func.value.id)  # solutions.append(solution), parts.extend(...)
        if len(tainted) == before:
            return tainted


def independent_check(source: str, operators: tuple[str, ...]) -> Check:
    """Every value run_workflow returns must depend on an operator's output: a workflow that
    computes its answer in Python from the problem has not been designed, it has been solved."""
    fn = next(n for n in ast.parse(source).body if isinstance(n, ast.AsyncFunctionDef))
    methods = {method_name(o) for o in operators}
    tainted = operator_derived(fn, methods)
    for n in ast.walk(fn):
        if isinstance(n, ast.Return) and n.value is not None and not _uses(n.value, tainted, methods):
            return Check(False, "problem-specific: the returned value does not depend on any operator's output")
    return Check(True)


SMALL_NUMBER = 10  # loop counts and indices; a maths workflow has no use for larger numbers
_WORD = re.compile(r"[a-z0-9]+")
QUOTE_WORDS = 6  # a QA workflow may not quote this many consecutive words of its problem


def _structural(tree: ast.AST) -> set[int]:
    """ids of number literals used as loop counts or indices: `range(3)`, `xs[-1]`, `xs[0:2]`."""
    ok: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "range":
            ok |= {id(c) for a in n.args for c in ast.walk(a)}
        elif isinstance(n, ast.Subscript):
            ok |= {id(c) for c in ast.walk(n.slice)}
    return ok


def _strings(tree: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _math_rule(tree: ast.AST, problem: str | None) -> Check:
    structural = _structural(tree)
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float, complex)) and not isinstance(n.value, bool):
            if id(n) not in structural or abs(n.value) > SMALL_NUMBER:
                return Check(False, f"problem-specific: the number {n.value!r} in the code (a maths workflow may "
                                    f"only hold loop counts and indices up to {SMALL_NUMBER})")
    for text in _strings(tree):
        if re.search(r"\d", text):
            return Check(False, f"problem-specific: a string holds a number ({text[:40]!r}); the problem's numbers "
                                "reach the executor through self.problem")
    return Check(True)


def _qa_rule(tree: ast.AST, problem: str | None) -> Check:
    if not problem:
        return Check(True)
    words = _WORD.findall(problem.lower())
    spans = {tuple(words[i:i + QUOTE_WORDS]) for i in range(len(words) - QUOTE_WORDS + 1)}
    for text in _strings(tree):
        w = _WORD.findall(text.lower())
        if any(tuple(w[i:i + QUOTE_WORDS]) in spans for i in range(len(w) - QUOTE_WORDS + 1)):
            return Check(False, f"problem-specific: a string quotes {QUOTE_WORDS} or more words of the problem "
                                f"({text[:40]!r}); the problem reaches the executor through self.problem")
    return Check(True)


CODE_IN_TEXT = re.compile(r"\bdef\s+\w+\s*\(|\blambda\b[\w\s,*]*:|^\s*(?:import\s+\w|from\s+[\w.]+\s+import\b)", re.M)


def _code_rule(tree: ast.AST, problem: str | None) -> Check:
    for text in _strings(tree):
        if CODE_IN_TEXT.search(text):
            return Check(False, f"problem-specific: a string carries code ({text[:40]!r}); the solution must come "
                                "from the operators")
    return Check(True)


# Each task family's rule against problem-specific content (the paper: a workflow is a method for
# the problem's kind, and may not hold its answer or the pieces of it).
SPECIFIC_RULES = {"math": _math_rule, "qa": _qa_rule, "code": _code_rule}


def specific_check(source: str, family: str, problem: str | None = None) -> Check:
    rule = SPECIFIC_RULES.get(family)
    return rule(ast.parse(source), problem) if rule else Check(True)


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
    structural = _structural(tree) if tree is not None else set()
    numbers: list[float] = []
    if tree is not None:
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
                if id(n) not in structural:
                    numbers.append(float(n.value))
        texts = _strings(tree)
    else:
        texts = [source]
    for t in texts:
        numbers += [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*(?:\.\d+)?", t)]
    return any(abs(x - value) < 1e-9 for x in numbers)
