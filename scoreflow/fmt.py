"""Numbers, durations, counts and rates as the dashboard, the report and the model card print them."""

from __future__ import annotations

from typing import Any


def fmt_number(v: Any, spec: str = ".3f") -> str:
    """A number as `spec`, or a dash for none (None, or a field the record does not carry)."""
    return format(v, spec) if isinstance(v, (int, float)) else "–"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def fmt_count(n: float) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def fmt_rate(r: float | None) -> str:
    if r is None:
        return "–"
    return f"{r:.2f}/s" if r < 10 else f"{fmt_count(r)}/s"
