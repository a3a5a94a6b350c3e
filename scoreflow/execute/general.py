"""The rules that make a workflow general, as the paper asks: a method for a kind of problem, not an
answer to one. Its answer comes from the operators (`independent_check`), and it carries no
problem-specific content, whatever its spelling (`specific_check`, one rule per task family). Both
read the folded values and returns of interpret.py; the dynamic half is dependence.py."""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Callable

from scoreflow.execute import spelling
from scoreflow.execute.folding import Known
from scoreflow.execute.interpret import Analysis, analyse
from scoreflow.execute.policy import ATTRIBUTES_OF_SELF, Check


def analysis(source: str, attributes: tuple[str, ...] = ATTRIBUTES_OF_SELF) -> Analysis:
    """The folded values and returns of a workflow that passed the static policy (where every
    `self.<name>` outside `attributes` is an awaited operator call)."""
    return analyse(source, attributes)


def independent_check(source: str, found: Analysis | None = None) -> Check:
    """The value run_workflow returns must depend on an operator's output, through data or through
    which return is reached: a workflow that computes its answer in Python has not been designed, it
    has been solved. A dependence that cannot change the value (`x[:0]`, `x * 0`, arms that return
    the same constant) does not count."""
    found = found or analysis(source)
    if not found.depends():
        return Check(False, "problem-specific: the returned value does not depend on any operator's output")
    return Check(True)


SMALL_NUMBER = 10  # loop counts and indices; a maths workflow has no use for larger numbers
QUOTE_WORDS = 6  # a workflow may not quote this many consecutive words of its problem
# The only constants a QA workflow may return: a yes/no, or a way of saying it found no answer.
NON_ANSWERS = frozenset({"yes", "no", "unknown", "none", "n", "a", "i", "don", "t", "do", "not", "know", "answer",
                         "found", "cannot", "can", "be", "determined", "error", "insufficient", "information"})


@dataclass
class Texts:
    """What a family rule reads in a workflow: its strings (literal and folded), its numbers (literal
    and folded) and the constants it can return."""

    tree: ast.AST
    found: Analysis
    problem: str | None

    def strings(self) -> list[str]:
        literal = [n.value.decode("latin-1") if isinstance(n.value, bytes) else n.value for n in ast.walk(self.tree)
                   if isinstance(n, ast.Constant) and isinstance(n.value, (str, bytes))]
        folded = [v.decode("latin-1") if isinstance(v, bytes) else v for node, v in self.found.folded
                  if isinstance(v, (str, bytes)) and not isinstance(node, ast.Constant)]
        return literal + folded

    def answers(self) -> list[tuple[int, str | None]]:
        """(line, text) of each constant the workflow can return; text None when it is not folded."""
        out: list[tuple[int, str | None]] = []
        for r in self.found.constants():
            if isinstance(r.value, Known):
                v = r.value.value
                out.append((r.node.lineno, v if isinstance(v, str) else repr(v)))
            else:
                out.append((r.node.lineno, None))
        return out


def _constant_answers(t: Texts, rule: Callable[[str], str | None]) -> Check:
    for line, text in t.answers():
        if text is None:
            return Check(False, f"problem-specific: line {line} returns a value computed without the operators")
        why = rule(text)
        if why:
            return Check(False, f"problem-specific: line {line} returns the constant {text[:40]!r}: {why}")
    return Check(True)


def structural(tree: ast.AST) -> set[int]:
    """ids of the nodes inside loop counts and indices: `range(3)`, `xs[-1]`, `xs[0:2]`."""
    ok: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "range":
            ok |= {id(c) for a in n.args for c in ast.walk(a)}
        elif isinstance(n, ast.Subscript):
            ok |= {id(c) for c in ast.walk(n.slice)}
    return ok


def _number(v: object) -> bool:
    return isinstance(v, (int, float, complex)) and not isinstance(v, bool)


def math_text(text: str) -> str | None:
    """Why a string of a maths workflow is problem-specific: it holds a number, spelled any way."""
    if spelling.numerals(text):
        return "a string holds a number"
    _, phrases = spelling.number_phrases(text)
    big = [p.value for p in phrases if p.value > SMALL_NUMBER]
    if big:
        return f"a string holds the number {big[0]} in words"
    found = spelling.arithmetic(text) or spelling.stated_number(text)
    if found:
        return f"a string holds arithmetic or an answer in words ({found!r})"
    return None


def math_answer(text: str) -> str | None:
    """Why a constant a maths workflow returns is an answer: any number in it, however small."""
    _, phrases = spelling.number_phrases(text)
    if spelling.numerals(text) or phrases:
        return "a number, which a maths workflow may not return of its own"
    return None


def _math_rule(t: Texts) -> Check:
    in_structure = structural(t.tree)
    for n in ast.walk(t.tree):
        if isinstance(n, ast.Constant) and _number(n.value):
            if id(n) not in in_structure or abs(n.value) > SMALL_NUMBER:
                return Check(False, f"problem-specific: the number {n.value!r} in the code (a maths workflow may "
                                    f"only hold loop counts and indices up to {SMALL_NUMBER})")
    computed = [(node, v) for node, v in t.found.folded if _number(v) and not isinstance(node, (ast.Constant, ast.Name))
                and (id(node) not in in_structure or not abs(v) <= SMALL_NUMBER)]
    if computed:
        node, v = max(computed, key=lambda nv: abs(nv[1]) if not math.isnan(abs(nv[1])) else math.inf)
        shown = "a number too large to compute" if v == math.inf else repr(v)
        return Check(False, f"problem-specific: the code computes the constant {shown} on line "
                            f"{getattr(node, 'lineno', '?')} (a maths workflow may only hold loop counts and "
                            f"indices up to {SMALL_NUMBER}, however spelled)")
    for text in t.strings():
        why = math_text(text)
        if why:
            return Check(False, f"problem-specific: {why} ({text[:40]!r}); the problem's numbers reach the executor "
                                "through self.problem")
    return _constant_answers(t, math_answer)


def qa_answer(text: str) -> str | None:
    w = spelling.words(text)
    if all(x in NON_ANSWERS for x in w):
        return None
    return "an answer of its own (a QA workflow returns what the operators answered, or yes/no)"


def _quote(t: Texts, what: str) -> Check:
    if not t.problem:
        return Check(True)
    source = spelling.words(t.problem)
    for text in t.strings():
        quoted = spelling.quotes(text, source, QUOTE_WORDS)
        if quoted:
            return Check(False, f"problem-specific: a string quotes {QUOTE_WORDS} or more words of the problem "
                                f"({quoted[:60]!r}); {what}")
    return Check(True)


def _qa_rule(t: Texts) -> Check:
    c = _quote(t, "the problem reaches the executor through self.problem")
    if not c.ok:
        return c
    named = spelling.names(t.problem or "")
    for text in t.strings():
        w = spelling.words(text)
        for name in named:
            if any(tuple(w[i:i + len(name)]) == name for i in range(len(w) - len(name) + 1)):
                return Check(False, f"problem-specific: a string names {' '.join(name)!r}, as the problem does "
                                    f"({text[:40]!r}); a QA workflow leaves the problem's names to self.problem")
    for text in t.strings():
        _, phrases = spelling.number_phrases(text)
        big = [x for x in spelling.numerals(text) + [p.value for p in phrases] if not x <= SMALL_NUMBER]
        if big:
            return Check(False, f"problem-specific: a string holds the number {big[0]:g} ({text[:40]!r})")
    return _constant_answers(t, qa_answer)


def code_answer(text: str) -> str | None:
    found = spelling.carries_code(text)
    return f"code ({found!r})" if found else None


def _code_rule(t: Texts) -> Check:
    for text in t.strings():
        found = spelling.carries_code(text)
        if found:
            return Check(False, f"problem-specific: a string carries code ({found!r}); the solution must come "
                                "from the operators")
    c = _quote(t, "the problem reaches the executor through self.problem")
    return c if not c.ok else _constant_answers(t, code_answer)


# Each task family's rule against problem-specific content (the paper: a workflow is a method for
# the problem's kind, and may not hold its answer or the pieces of it).
SPECIFIC_RULES: dict[str, Callable[[Texts], Check]] = {"math": _math_rule, "qa": _qa_rule, "code": _code_rule}
# What a constant answer of each family may not be: the dynamic check applies it to an answer that
# stays the same when the operators' outputs change.
ANSWER_RULES: dict[str, Callable[[str], str | None]] = {"math": math_answer, "qa": qa_answer, "code": code_answer}


def specific_check(source: str, family: str, problem: str | None = None, found: Analysis | None = None) -> Check:
    rule = SPECIFIC_RULES.get(family)
    if rule is None:
        return Check(True)
    return rule(Texts(ast.parse(source), found or analysis(source), problem))
