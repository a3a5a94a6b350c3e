"""Constant folding: the values an expression of a workflow can have, and folding what depends on
neither an operator's output nor `self.problem` to its value.

A value is `Known` (computed here), `FREE` (independent of the inputs, not computed) or `Input`
(it may depend on them). Folding is bounded (`MAX_LEN`, `MAX_BITS`), and a fold that would raise or
pass the bounds is not made: a number past `MAX_BITS` raises `Overflow`, a constant above any small
bound. interpret.py walks a workflow with these values.
"""

from __future__ import annotations

import ast
import math
import operator as op
from dataclasses import dataclass
from typing import Any, Callable

MAX_LEN = 100_000  # longest string or sequence folded
MAX_BITS = 4096  # largest integer folded, in bits


@dataclass(frozen=True)
class Known:
    value: Any


@dataclass(frozen=True)
class Free:
    """Independent of the inputs, value not computed."""


@dataclass(frozen=True)
class Input:
    """May depend on an operator's output (`operator`) or on `self.problem` alone."""

    operator: bool
    kind: str = "any"  # "str" | "num" | "any": what the value is, where that is certain


FREE = Free()
Value = Known | Free | Input


class Overflow(Exception):
    """A fold past the size limits: a number that large is a constant above any small bound."""


def join(a: Value, b: Value) -> Value:
    if isinstance(a, Input) or isinstance(b, Input):
        return Input(any(isinstance(v, Input) and v.operator for v in (a, b)),
                     a.kind if isinstance(a, Input) and isinstance(b, Input) and a.kind == b.kind else "any")
    if isinstance(a, Known) and isinstance(b, Known) and same(a.value, b.value):
        return a
    return FREE


def same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def taint(*values: Value, kind: str = "any") -> Value:
    """The value of an expression of `values` that is not folded."""
    inputs = [v for v in values if isinstance(v, Input)]
    if inputs:
        return Input(any(v.operator for v in inputs), kind)
    return FREE


# ---- what may be folded ---------------------------------------------------------------------------

def size_ok(v: Any) -> bool:
    if isinstance(v, bool):
        return True
    if isinstance(v, int):
        if v.bit_length() > MAX_BITS:
            raise Overflow
        return True
    if isinstance(v, (str, bytes, list, tuple, dict, set, frozenset, range)):
        return len(v) <= MAX_LEN
    return True


def _seq_len(v: Any) -> int:
    try:
        return len(v)
    except TypeError:
        return 0


def _mul(a: Any, b: Any) -> Any:
    for seq, n in ((a, b), (b, a)):
        if isinstance(n, int) and isinstance(seq, (str, bytes, list, tuple)) and _seq_len(seq) * max(n, 0) > MAX_LEN:
            return _skip()
    return a * b


def _pow(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1 and a.bit_length() * b > MAX_BITS:
        raise Overflow
    if isinstance(a, float) or isinstance(b, float):
        return math.pow(a, b) if not isinstance(a, complex) else a ** b
    return pow(a, b)


def _lshift(a: Any, b: Any) -> Any:
    if isinstance(b, int) and b > MAX_BITS:
        raise Overflow
    return a << b


def _skip() -> Any:
    raise TypeError("not folded")


BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: op.add, ast.Sub: op.sub, ast.Mult: _mul, ast.Div: op.truediv, ast.FloorDiv: op.floordiv,
    ast.Mod: lambda a, b: _skip() if isinstance(a, (str, bytes)) and not isinstance(b, (int, float, str, tuple))
    else op.mod(a, b),
    ast.Pow: _pow, ast.LShift: _lshift, ast.RShift: op.rshift, ast.BitOr: op.or_, ast.BitXor: op.xor,
    ast.BitAnd: op.and_, ast.MatMult: lambda a, b: _skip(),
}
UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: op.pos, ast.USub: op.neg, ast.Not: op.not_, ast.Invert: op.invert}
COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: op.eq, ast.NotEq: op.ne, ast.Lt: op.lt, ast.LtE: op.le, ast.Gt: op.gt, ast.GtE: op.ge,
    ast.Is: lambda a, b: _skip(), ast.IsNot: lambda a, b: _skip(), ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def iterable_ok(*args: Any) -> bool:
    return all(not hasattr(a, "__len__") or len(a) <= MAX_LEN for a in args)


# Builtins folded when every argument is known; the kind of their value otherwise.
FOLDED_BUILTINS: dict[str, tuple[Callable[..., Any], str]] = {
    "abs": (abs, "num"), "all": (all, "num"), "any": (any, "num"), "ascii": (ascii, "str"), "bin": (bin, "str"),
    "bool": (bool, "num"), "chr": (chr, "str"), "divmod": (divmod, "any"), "float": (float, "num"),
    "hex": (hex, "str"), "int": (int, "num"), "len": (len, "num"), "list": (list, "any"), "max": (max, "any"),
    "min": (min, "any"), "oct": (oct, "str"), "ord": (ord, "num"), "pow": (_pow, "num"), "range": (range, "any"),
    "repr": (repr, "str"), "reversed": (lambda x: list(reversed(x)), "any"), "round": (round, "num"),
    "set": (set, "any"), "sorted": (sorted, "any"), "str": (str, "str"), "sum": (sum, "num"),
    "tuple": (tuple, "any"), "zip": (lambda *a: list(zip(*a)), "any"), "enumerate": (lambda *a: list(enumerate(*a)), "any"),
    "dict": (dict, "any"),
    "format": (lambda v, spec="": format(v, spec) if spec_ok(str(spec)) else _skip(), "str"),
}
STR_METHODS = frozenset({
    "capitalize", "casefold", "center", "count", "endswith", "expandtabs", "find", "index", "isalnum", "isalpha",
    "isascii", "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "join", "ljust",
    "lower", "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
    "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper",
    "zfill", "encode", "decode", "hex",
})
STR_RESULT = frozenset({"capitalize", "casefold", "center", "expandtabs", "join", "ljust", "lower", "lstrip",
                        "removeprefix", "removesuffix", "replace", "rjust", "rstrip", "strip", "swapcase", "title",
                        "upper", "zfill"})
NUM_RESULT = frozenset({"count", "find", "index", "rfind", "rindex"})
SEQ_METHODS = frozenset({"count", "index", "copy", "get", "keys", "values", "items"})
MUTATORS = frozenset({"append", "extend", "insert", "pop", "remove", "clear", "update", "add", "discard", "sort",
                      "reverse", "setdefault", "popitem"})


def method_ok(value: Any, name: str, args: list[Any]) -> bool:
    if isinstance(value, (str, bytes)):
        if name not in STR_METHODS:
            return False
        width = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
        if name in ("center", "ljust", "rjust", "zfill", "expandtabs") and any(w > MAX_LEN for w in width):
            return False
        if name == "replace" and len(args) >= 2 and isinstance(args[1], (str, bytes)):
            return (len(value) + 1) * (len(args[1]) + 1) <= MAX_LEN
        if name == "join" and args:
            return iterable_ok(args[0]) and sum(_seq_len(x) for x in args[0]) + len(value) * _seq_len(args[0]) <= MAX_LEN
        return True
    return isinstance(value, (list, tuple, dict, range)) and name in SEQ_METHODS


def scalar(v: Any) -> bool:
    return isinstance(v, (str, bytes, int, float, complex)) and not isinstance(v, bool)


# ---- values ---------------------------------------------------------------------------------------
def fold(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Value:
    try:
        v = fn(*args, **kwargs)
    except Overflow:
        raise
    except Exception:
        return FREE  # raises at run time, or not folded here: independent either way
    if isinstance(v, range) or size_ok(v):
        return Known(v)
    return FREE

def spec_ok(spec: str) -> bool:
    return all(int(n) <= MAX_LEN for n in "".join(c if c.isdigit() else " " for c in spec).split())

def kind_of(v: Value) -> str:
    if isinstance(v, Input):
        return v.kind
    if isinstance(v, Known):
        return "str" if isinstance(v.value, str) else "num" if isinstance(v.value, (int, float)) else "any"
    return "any"

def is_zero(v: Any) -> bool:
    return isinstance(v, (int, float)) and v == 0

def empty_slice(s: slice) -> bool:
    """A slice that selects nothing from any sequence."""
    if s.step not in (None, 1) or not all(x is None or type(x) is int for x in (s.start, s.stop)):
        return False
    start = 0 if s.start is None else s.start
    if s.stop is None:
        return False
    stop = s.stop
    return (start >= 0 and stop >= 0 and start >= stop) or (start < 0 and stop < 0 and start >= stop) or \
        (stop == 0 and start >= 0)

def truthy(v: Any) -> bool:
    try:
        return bool(v)
    except Exception:
        return True

def all_known(values: list[Value]) -> bool:
    return all(isinstance(v, Known) for v in values)

def items_of(v: Value) -> list[Any] | None:
    if not isinstance(v, Known):
        return None
    x = v.value
    if isinstance(x, range) and len(x) > MAX_LEN:
        return None
    if isinstance(x, (str, bytes, list, tuple, set, frozenset, dict, range)):
        try:
            return list(x)
        except Exception:
            return None
    return None

def element(v: Value) -> Value:
    """An element of `v` when its elements are not listed."""
    if isinstance(v, Input):
        return Input(v.operator, "str" if v.kind == "str" else "any")
    items = items_of(v)
    if items and all(same(i, items[0]) for i in items):
        return Known(items[0])
    return FREE

def mutables(value: Any, depth: int = 0) -> set[int]:
    """ids of the mutable objects reachable from `value`."""
    if depth > 8 or not isinstance(value, (list, tuple, dict, set)):
        return set()
    out = {id(value)} if not isinstance(value, tuple) else set()
    for c in (value.values() if isinstance(value, dict) else value):
        out |= mutables(c, depth + 1)
    return out

