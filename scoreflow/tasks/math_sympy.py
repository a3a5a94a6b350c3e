"""The symbolic side of the MATH scorer: a normalised LaTeX answer as a whitelisted Python/sympy
expression, and the sympy process that compares two of them.

Sympy runs in a separate worker process (sympy_worker.py) that is killed when one comparison
takes longer than its time limit, because parsing or simplifying some inputs can hang.
Expressions go to sympy only after a whitelist check, since sympy's parser evaluates Python.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
from pathlib import Path


def braced(text: str, start: int) -> tuple[str, int] | None:
    """The contents of the `{...}` group opening at `start` (nested braces), and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


_FUNCS = {"sqrt", "pi", "oo", "log", "exp", "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos", "atan"}


def to_python(latex: str) -> str | None:
    """A Python/sympy expression for a normalised LaTeX answer, or None when it falls outside the
    small whitelisted grammar (numbers, one-letter variables, + - * / ^, fractions, roots, trig)."""
    s = latex
    if len(s) > 300:
        return None

    def frac(m_s: str) -> str | None:
        out = ""
        i = 0
        while i < len(m_s):
            if m_s.startswith("\\frac", i):
                a = braced(m_s, i + 5)
                if a is None:
                    return None
                b = braced(m_s, a[1])
                if b is None:
                    return None
                na, nb = frac(a[0]), frac(b[0])
                if na is None or nb is None:
                    return None
                out += f"(({na})/({nb}))"
                i = b[1]
            elif m_s.startswith("\\sqrt[", i):
                j = m_s.find("]", i)
                if j < 0:
                    return None
                a = braced(m_s, j + 1)
                if a is None:
                    return None
                n, inner = frac(m_s[i + 6:j]), frac(a[0])
                if n is None or inner is None:
                    return None
                out += f"(({inner})**(1/({n})))"
                i = a[1]
            else:
                out += m_s[i]
                i += 1
        return out

    s = frac(s)
    if s is None:
        return None
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/")
    s = s.replace("\\arcsin", "asin").replace("\\arccos", "acos").replace("\\arctan", "atan")
    s = s.replace("\\ln", "log").replace("\\infty", "oo")
    s = re.sub(r"\\(sqrt|pi|log|exp|sin|cos|tan|cot|sec|csc)(?![a-zA-Z])", r"\1", s)
    s = s.replace("{", "(").replace("}", ")").replace("^", "**")
    if "\\" in s or "__" in s or not re.fullmatch(r"[0-9a-zA-Z+\-*/(). ]*", s) or not s.strip():
        return None
    for word in re.findall(r"[a-zA-Z]+", s):
        if len(word) > 1 and word not in _FUNCS:
            return None
    if _towering(s):  # huge powers: not worth a worker's time
        return None
    return s


def _towering(expr: str) -> bool:
    """A power with a 4-digit exponent or a power in its exponent (10^(10^10) would hang sympy)."""
    if re.search(r"\*\*\s*\(*\s*\d{4,}", expr):
        return True
    for m in re.finditer(r"\*\*\s*\(", expr):
        depth, i = 0, m.end() - 1
        while i < len(expr):
            depth += expr[i] == "("
            depth -= expr[i] == ")"
            if depth == 0:
                break
            i += 1
        if "**" in expr[m.end():i]:
            return True
    return False


class SympyWorker:
    """One sympy process shared by the threads of this process, restarted after a timeout."""

    def __init__(self, timeout_s: float = 5.0, start_timeout_s: float = 60.0):
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        atexit.register(self.close)

    def _start(self) -> subprocess.Popen | None:
        proc = subprocess.Popen(
            [sys.executable, "-u", str(Path(__file__).with_name("sympy_worker.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        if self._readline(proc, self.start_timeout_s) is None:
            self._kill(proc)
            return None
        return proc

    @staticmethod
    def _readline(proc: subprocess.Popen, timeout: float) -> str | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = proc.stdout.readline()
        return line or None

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            proc.kill()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def equal(self, a: str, b: str) -> bool | None:
        """True/False, or None when sympy cannot decide within the time limit."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
                if self._proc is None:
                    return None
            proc = self._proc
            try:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"a": a, "b": b}) + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._kill(proc)
                self._proc = None
                return None
            line = self._readline(proc, self.timeout_s)
            if line is None:
                self._kill(proc)
                self._proc = None
                return None
            try:
                return json.loads(line).get("eq")
            except json.JSONDecodeError:
                return None

    def close(self) -> None:
        if self._proc is not None:
            self._kill(self._proc)
            self._proc = None


_WORKER: SympyWorker | None = None


def sympy_worker() -> SympyWorker:
    global _WORKER
    if _WORKER is None:
        _WORKER = SympyWorker()
    return _WORKER
