"""The static policy on workflows: which syntax, names and attributes a workflow may use.

A workflow is plain Python calling the task's operators, so the policy is an allowlist. Every node
type of the syntax tree is either in ALLOWED_NODES or rejected (REJECTED_NODES gives the reasons
for the known ones; a node type a later Python adds is rejected until it is reviewed). The attribute
rules apply wherever the syntax can name an attribute: `x.attr`, a class pattern's keywords, and the
fields of a format string (`"{0.attr}"`), even where `str.format` is not in sight.
"""

from __future__ import annotations

import _string  # the C parser of format fields that str.format itself uses
import ast
import re
from dataclasses import dataclass
from string import Formatter

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

ALLOWED_NODES = frozenset({
    # the module and run_workflow itself (AsyncFunctionDef: run_workflow only, checked below)
    "Module", "AsyncFunctionDef", "arguments", "arg",
    # statements
    "Return", "Delete", "Assign", "AugAssign", "AnnAssign", "For", "While", "If", "Raise", "Try",
    "ExceptHandler", "Assert", "Expr", "Pass", "Break", "Continue",
    # expressions
    "BoolOp", "NamedExpr", "BinOp", "UnaryOp", "Lambda", "IfExp", "Dict", "Set", "ListComp", "SetComp",
    "DictComp", "GeneratorExp", "comprehension", "Await", "Compare", "Call", "keyword", "FormattedValue",
    "JoinedStr", "Constant", "Attribute", "Subscript", "Starred", "Name", "List", "Tuple", "Slice",
    # contexts and operators
    "Load", "Store", "Del", "And", "Or", "Add", "Sub", "Mult", "MatMult", "Div", "Mod", "Pow", "LShift",
    "RShift", "BitOr", "BitXor", "BitAnd", "FloorDiv", "Invert", "Not", "UAdd", "USub", "Eq", "NotEq", "Lt",
    "LtE", "Gt", "GtE", "Is", "IsNot", "In", "NotIn",
})
_NESTED = "nested function or class definitions are not allowed"
_MATCH = "match statements are not allowed (their class patterns read attributes by name)"
_TYPES = "type parameters and type aliases are not allowed"
_OBSOLETE = "an obsolete syntax node (never produced by the parser) is not allowed"
REJECTED_NODES = {
    "Import": "imports are not allowed", "ImportFrom": "imports are not allowed", "alias": "imports are not allowed",
    "Global": "global/nonlocal are not allowed", "Nonlocal": "global/nonlocal are not allowed",
    "FunctionDef": _NESTED, "ClassDef": _NESTED,
    "Yield": "yield is not allowed", "YieldFrom": "yield is not allowed",
    "With": "with statements are not allowed", "AsyncWith": "with statements are not allowed",
    "withitem": "with statements are not allowed",
    "AsyncFor": "async for is not allowed (operators are awaited one by one)",
    "TryStar": "except* is not allowed",
    "Match": _MATCH, "match_case": _MATCH, "MatchValue": _MATCH, "MatchSingleton": _MATCH,
    "MatchSequence": _MATCH, "MatchMapping": _MATCH, "MatchClass": _MATCH, "MatchStar": _MATCH,
    "MatchAs": _MATCH, "MatchOr": _MATCH,
    "TypeAlias": _TYPES, "TypeVar": _TYPES, "ParamSpec": _TYPES, "TypeVarTuple": _TYPES,  # Python 3.12
    "TemplateStr": "template strings are not allowed", "Interpolation": "template strings are not allowed",  # 3.14
    "Expression": "a workflow is a module", "Interactive": "a workflow is a module",
    "FunctionType": "a workflow is a module", "TypeIgnore": "type-ignore comments are not allowed",
    "Num": _OBSOLETE, "Str": _OBSOLETE, "Bytes": _OBSOLETE, "NameConstant": _OBSOLETE, "Ellipsis": _OBSOLETE,
    "Index": _OBSOLETE, "ExtSlice": _OBSOLETE, "Suite": _OBSOLETE, "AugLoad": _OBSOLETE, "AugStore": _OBSOLETE,
    "Param": _OBSOLETE,
}
# Base classes of the node types: never in a tree themselves.
ABSTRACT_NODES = frozenset({"AST", "mod", "stmt", "expr", "expr_context", "boolop", "operator", "unaryop", "cmpop",
                            "excepthandler", "pattern", "type_ignore", "type_param", "slice"})


@dataclass
class Check:
    ok: bool
    reason: str = ""


def method_name(operator: str) -> str:
    """`ScEnsemble` -> `sc_ensemble`: the attribute of `self` a workflow calls."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operator).lower()


def attribute_rule(name: str) -> str | None:
    """Why a workflow may not read attribute `name`, or None."""
    if name.startswith("_"):
        return f"attribute `{name}` is not allowed (no underscore attributes)"
    if name in ("format", "format_map"):
        return "str.format is not allowed (use f-strings or +)"
    if name in FORBIDDEN_ATTRIBUTES or name.startswith(FORBIDDEN_ATTRIBUTE_PREFIXES):
        return f"attribute `{name}` is not allowed"
    return None


def format_attributes(text: str, depth: int = 0) -> list[str]:
    """The attribute names the replacement fields of `text` read when used as a format string
    (`"{0.real}"` reads `real`), nested fields in format specs included."""
    out: list[str] = []
    try:
        fields = list(Formatter().parse(text))
    except ValueError:  # not a valid format string: str.format would refuse it too
        return out
    for _, field, spec, _ in fields:
        if field:
            try:
                _, rest = _string.formatter_field_name_split(field)
                out += [key for is_attr, key in rest if is_attr]
            except ValueError:
                pass
        if spec and depth < 2:  # format specs nest at most two levels
            out += format_attributes(spec, depth + 1)
    return out


def attribute_names(node: ast.AST) -> list[str]:
    """Every attribute name `node` reads by name."""
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if type(node).__name__ == "MatchClass":
        return list(node.kwd_attrs)  # type: ignore[attr-defined]
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and "{" in node.value:
        return format_attributes(node.value)
    return []


def _parents(tree: ast.AST) -> dict[int, ast.AST]:
    return {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def node_rule(node: ast.AST, fn: ast.AST) -> str | None:
    """Why a node of this type may not appear, or None. `fn` is run_workflow's definition."""
    name = type(node).__name__
    if name == "AsyncFunctionDef" and node is not fn:
        return _NESTED
    if name in ALLOWED_NODES and type(node) is getattr(ast, name, None):
        return None
    return REJECTED_NODES.get(name, f"`{name}` is not allowed in a workflow")


def name_rule(node: ast.AST) -> str | None:
    ident = node.id if isinstance(node, ast.Name) else node.arg if isinstance(node, ast.arg) else \
        node.name if isinstance(node, ast.ExceptHandler) else None
    if ident is None:
        return None
    if ident in FORBIDDEN_NAMES or ident.startswith("__"):
        return f"name `{ident}` is not allowed"
    if ident == "run_workflow" and isinstance(node, ast.Name):
        return "run_workflow may not refer to itself"
    return None


def self_rule(node: ast.AST, parents: dict[int, ast.AST], methods: set[str], attributes: tuple[str, ...]) -> str | None:
    """`self` is used only as `self.<attribute>` or as `await self.<operator>(...)`."""
    if isinstance(node, ast.Name) and node.id == "self":
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            return "assigning to self is not allowed"
        up = parents.get(id(node))
        if not (isinstance(up, ast.Attribute) and up.value is node):
            return "`self` may only be used as `self.<operator>` or `self.<attribute>`"
        return None
    if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"):
        return None
    if node.attr in attributes:
        call = parents.get(id(node))
        if isinstance(call, ast.Call) and call.func is node:
            return f"`self.{node.attr}` is not callable"
        return None
    if node.attr not in methods:
        return f"`self.{node.attr}` is not an operator of this task"
    call = parents.get(id(node))
    awaited = parents.get(id(call)) if call is not None else None
    if not (isinstance(call, ast.Call) and call.func is node and isinstance(awaited, ast.Await)):
        return f"`self.{node.attr}(...)` must be awaited where it is called (no other use of an operator)"
    return None


def static_check(source: str, operators: tuple[str, ...], attributes: tuple[str, ...] = ATTRIBUTES_OF_SELF) -> Check:
    """Parse with `ast` and accept only plain Python calling the task's operators."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return Check(False, f"syntax error: {e.msg} (line {e.lineno})")
    except (ValueError, RecursionError, MemoryError) as e:
        return Check(False, f"unparsable: {type(e).__name__}")
    return check_tree(tree, operators, attributes)


def check_tree(tree: ast.AST, operators: tuple[str, ...], attributes: tuple[str, ...] = ATTRIBUTES_OF_SELF) -> Check:
    """The policy on a parsed workflow."""
    if type(tree) is not ast.Module:
        return Check(False, REJECTED_NODES.get(type(tree).__name__, "a workflow is a module"))
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
    if getattr(fn, "type_params", None):
        return Check(False, _TYPES)
    methods = {method_name(o) for o in operators}
    parents = _parents(tree)
    for node in ast.walk(tree):
        reason = node_rule(node, fn) or name_rule(node)
        if reason is None:
            reason = next((r for r in map(attribute_rule, attribute_names(node)) if r), None)
        if reason is None and isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            if ("__" if isinstance(node.value, str) else b"__") in node.value:
                reason = "strings containing `__` are not allowed"
        if reason is None:
            reason = self_rule(node, parents, methods, attributes)
        if reason is not None:
            return Check(False, reason)
    if not any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(fn)):
        return Check(False, "run_workflow returns nothing")
    if not any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
               and n.attr in methods for n in ast.walk(fn)):
        return Check(False, "run_workflow calls no operator")
    return Check(True)
