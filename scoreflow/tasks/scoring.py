"""Scorers shared by tasks: numbers (GSM8K, arith)."""

from __future__ import annotations

import math
import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")


def last_number(text: str) -> float | None:
    """The last number in `text`, thousands separators and currency signs ignored."""
    if text is None:
        return None
    cleaned = str(text).replace("$", "").replace("€", "").replace("£", "")
    found = _NUMBER.findall(cleaned)
    for raw in reversed(found):
        raw = raw.replace(",", "").rstrip(".")
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isfinite(value):
            return value
    return None


def number_score(output: str, gold: float, tol: float = 1e-6) -> float:
    value = last_number(output)
    if value is None:
        return 0.0
    return 1.0 if abs(value - float(gold)) <= tol else 0.0
