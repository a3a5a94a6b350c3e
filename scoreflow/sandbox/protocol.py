"""Reading the sandbox child's messages in the parent: whatever a child sends, the parent gets a
message it can use or a reason to end the run, never an exception.

A message is one line of JSON, at most the stream's line limit long (the parent's reader enforces
it). It must be ASCII (the child's encoder escapes everything else), decode without error, nest at
most MAX_DEPTH levels, and have the fields its type needs with the right types. Every string in it is
made valid UTF-8 (a lone surrogate becomes U+FFFD), so that nothing downstream fails to hash, score
or write it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 32  # levels of lists and dicts in one message; operator arguments stay well under it
SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Malformed:
    reason: str


def valid_text(s: str) -> str:
    """`s` as valid UTF-8: each lone surrogate (JSON's \\ud800 escapes can produce them) becomes U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return SURROGATE.sub("\ufffd", s)


class _TooDeep(Exception):
    pass


def _clean(value: Any, depth: int) -> Any:
    """A copy of a decoded JSON value with valid strings; _TooDeep past MAX_DEPTH."""
    if depth > MAX_DEPTH:
        raise _TooDeep
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, list):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {valid_text(k): _clean(v, depth + 1) for k, v in value.items()}
    return value  # int, float, bool, None


FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    # type: {field: accepted types}; a field may be missing unless named in REQUIRED
    "pid": {"pid": (int,)},
    "call": {"id": (int, str), "method": (str,), "args": (list,), "kwargs": (dict,)},
    "done": {"nonce": (str,), "status": (str,), "passed": (bool, type(None)), "output": (str, type(None)),
             "error": (str, type(None)), "stdout": (str,), "layers": (list,)},
}
REQUIRED = {"pid": ("pid",), "call": ("method",), "done": ("nonce", "status")}


def decode(line: bytes) -> dict[str, Any] | Malformed:
    """One protocol line: the message with valid strings, or why it is not one."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return Malformed("a message that is not ASCII")
    try:
        value = json.loads(text)
    except RecursionError:
        return Malformed("a message nested too deeply")
    except (ValueError, MemoryError):  # JSONDecodeError, and integers past the digit limit
        return Malformed("malformed message")
    try:
        msg = _clean(value, 0)
    except (_TooDeep, RecursionError):
        return Malformed("a message nested too deeply")
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        return Malformed("malformed message")
    kind = msg["type"]
    fields = FIELDS.get(kind)
    if fields is None:
        return Malformed(f"unexpected message: {kind[:40]}")
    for name in REQUIRED[kind]:
        if name not in msg:
            return Malformed(f"a {kind} message without {name}")
    for name, types in fields.items():
        if name in msg and (not isinstance(msg[name], types) or (types == (int,) and isinstance(msg[name], bool))):
            return Malformed(f"a {kind} message with a malformed {name}")
    if kind == "done" and not all(isinstance(x, str) for x in msg.get("layers", [])):
        return Malformed("a done message with a malformed layers")
    return msg
