"""Workflows: extracting the `<graph>` source from a completion and the static checks on it.

A workflow is the source of `async def run_workflow(self)` that calls the task's operators as
`await self.<operator>(...)` and reads `self.problem` (and `self.entry_point` for code tasks).
The dynamic check, a run on the task's toy problem, happens in the loop through the sandbox.
"""

from __future__ import annotations

import ast
import difflib
import re
import textwrap
from dataclasses import dataclass

GRAPH = re.compile(r"<graph>(.*?)(?:</graph>|$)", re.S)
FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*$", re.M)

# Names a workflow may not mention: they reach the interpreter, files or other code.
FORBIDDEN_NAMES = frozenset({
    "open", "eval", "exec", "compile", "getattr", "setattr", "delattr", "hasattr", "globals", "locals",
    "vars", "dir", "input", "breakpoint", "help", "memoryview", "type", "object", "super", "classmethod",
    "staticmethod", "property", "exit", "quit", "copyright", "credits", "license", "id", "callable",
    "issubclass", "bytearray", "frozenset", "__import__", "__builtins__", "__loader__", "__spec__",
})
ATTRIBUTES_OF_SELF = ("problem", "entry_point")
# Attributes that reach frames, code or the type hierarchy without an underscore, and str.format
# (whose fields can read attributes: "{0.__class__}"), even when not called directly.
FORBIDDEN_ATTRIBUTES = frozenset({"format", "format_map", "mro"})
FORBIDDEN_ATTRIBUTE_PREFIXES = ("gi_", "cr_", "ag_", "f_", "tb_", "co_")


@dataclass
class Check:
    ok: bool
    reason: str = ""


def extract(text: str) -> str | None:
    """The workflow source inside <graph>...</graph> (a missing close tag is tolerated), or None."""
    m = GRAPH.search(text or "")
    if not m:
        return None
    body = FENCE.sub("", m.group(1))
    body = textwrap.dedent(body).strip("\n")
    return body if body.strip() else None


def method_name(operator: str) -> str:
    """`ScEnsemble` -> `sc_ensemble`: the attribute of `self` a workflow calls."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operator).lower()


def static_check(source: str, operators: tuple[str, ...], attributes: tuple[str, ...] = ATTRIBUTES_OF_SELF) -> Check:
    """Parse with `ast` and accept only plain Python calling the task's operators."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return Check(False, f"syntax error: {e.msg} (line {e.lineno})")
    except (ValueError, RecursionError, MemoryError) as e:
        return Check(False, f"unparsable: {type(e).__name__}")
    funcs = [n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.name == "run_workflow"]
    if len(funcs) != 1:
        return Check(False, "no `async def run_workflow(self)` at top level")
    others = [n for n in tree.body if n is not funcs[0]
              and not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    if others:
        return Check(False, f"only `run_workflow` may be defined at top level (found {type(others[0]).__name__})")
    fn = funcs[0]
    a = fn.args
    if [x.arg for x in a.args] != ["self"] or a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs:
        return Check(False, "run_workflow must take exactly one argument, self")
    if fn.decorator_list or a.defaults or fn.returns is not None or a.args[0].annotation is not None:
        return Check(False, "run_workflow may not have decorators, defaults or annotations")
    methods = {method_name(o) for o in operators}
    awaited = {id(n.value) for n in ast.walk(fn) if isinstance(n, ast.Await)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return Check(False, "imports are not allowed")
        if isinstance(node, (ast.Global, ast.Nonlocal)):
            return Check(False, "global/nonlocal are not allowed")
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) or (isinstance(node, ast.AsyncFunctionDef) and node is not fn):
            return Check(False, "nested function or class definitions are not allowed")
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return Check(False, "yield is not allowed")
        if isinstance(node, ast.Attribute):
            if node.attr.startswith("_"):
                return Check(False, f"attribute `{node.attr}` is not allowed (no underscore attributes)")
            if node.attr in ("format", "format_map"):
                return Check(False, "str.format is not allowed (use f-strings or +)")
            if node.attr in FORBIDDEN_ATTRIBUTES or node.attr.startswith(FORBIDDEN_ATTRIBUTE_PREFIXES):
                return Check(False, f"attribute `{node.attr}` is not allowed")
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                if node.attr not in methods and node.attr not in attributes:
                    return Check(False, f"`self.{node.attr}` is not an operator of this task")
        if isinstance(node, ast.Name):
            if node.id in FORBIDDEN_NAMES or node.id.startswith("__"):
                return Check(False, f"name `{node.id}` is not allowed")
            if node.id == "self" and isinstance(node.ctx, (ast.Store, ast.Del)):
                return Check(False, "assigning to self is not allowed")
            if node.id == "run_workflow":
                return Check(False, "run_workflow may not refer to itself")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "__" in node.value:
            return Check(False, "strings containing `__` are not allowed")
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self":
                if f.attr in methods and id(node) not in awaited:
                    return Check(False, f"`self.{f.attr}(...)` must be awaited")
                if f.attr in attributes:
                    return Check(False, f"`self.{f.attr}` is not callable")
    if not any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(fn)):
        return Check(False, "run_workflow returns nothing")
    if not any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
               and n.attr in methods for n in ast.walk(fn)):
        return Check(False, "run_workflow calls no operator")
    return Check(True)


def _normalise(source: str) -> str:
    lines = [ln.strip() for ln in source.splitlines()]
    return "\n".join(ln for ln in lines if ln and not ln.startswith("#"))


def similarity(source: str, template: str) -> float:
    """difflib ratio of the two sources, whitespace and comments ignored."""
    return difflib.SequenceMatcher(None, _normalise(source), _normalise(template), autojunk=False).ratio()


def check(source: str | None, operators: tuple[str, ...], template: str, threshold: float | None,
          attributes: tuple[str, ...] = ATTRIBUTES_OF_SELF) -> Check:
    if source is None:
        return Check(False, "no <graph> block")
    if len(source) > 20000:
        return Check(False, "workflow longer than 20000 characters")
    c = static_check(source, operators, attributes)
    if not c.ok:
        return c
    if threshold is not None:
        r = similarity(source, template)
        if r >= threshold:
            return Check(False, f"too similar to the template (ratio {r:.2f} >= {threshold})")
    return c
