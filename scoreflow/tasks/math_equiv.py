"""The MATH scorer: the last `\\boxed{}` of an answer, normalised, then compared as text, as
numbers, element-wise (tuples, intervals, lists, matrices) and symbolically with sympy.

The symbolic comparison (the whitelisted LaTeX-to-sympy translation and the sympy process) lives in
math_sympy.py.
"""

from __future__ import annotations

import re
from fractions import Fraction

from scoreflow.tasks.math_sympy import braced, sympy_worker, to_python

# ---- finding the answer ------------------------------------------------------------------------


_BOX = re.compile(r"\\(?:boxed|fbox)\b\s*")


def last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (or `\\fbox{...}`, or `\\boxed x`), or None."""
    text = text or ""
    for m in reversed(list(_BOX.finditer(text))):
        got = braced(text, m.end())
        if got is not None:
            return got[0].strip()
        if text[m.end():m.end() + 1] == "{":  # cut off before its closing brace
            return text[m.end() + 1:].strip()
        rest = re.match(r"[^\s$]+", text[m.end():])  # `\boxed 5`
        if rest:
            return rest.group(0)
    return None


_FINAL = re.compile(r"(?:final answer|the answer)\s*(?:is|:)\s*(.+)", re.I)


def final_answer(text: str) -> str:
    """The answer a solution gives: its last boxed expression, else a 'final answer is' phrase,
    else its last non-empty line."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    text = (text or "").strip()
    found = _FINAL.findall(text)
    if found:
        return found[-1].strip().rstrip(".")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# ---- normalisation -----------------------------------------------------------------------------

UNITS = (
    "units", "unit", "sq", "square", "cubic", "cm", "centimeters", "centimetres", "mm", "m", "meters", "metres",
    "km", "kilometers", "inches", "inch", "in", "feet", "foot", "ft", "yards", "yard", "yd", "miles", "mile",
    "mph", "degrees", "degree", "dollars", "dollar", "cents", "cent", "hours", "hour", "minutes", "minute",
    "seconds", "second", "sec", "days", "day", "weeks", "week", "years", "year", "months", "month", "pounds",
    "pound", "lbs", "ounces", "oz", "grams", "gram", "g", "kg", "liters", "litres", "l", "ml", "gallons",
    "people", "students", "ways", "cups", "percent", "points", "times",
)
_UNIT_TAIL = re.compile(r"(?<=[\d}).\s])\s*(?:(?:" + "|".join(UNITS) + r")\b\s*(?:\^\s*\{?[23]\}?)?\s*)+$", re.I)
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*(?=\{)")


def _unwrap(s: str, pattern: re.Pattern) -> str:
    """Replace `\\cmd{x}` by `x` for every command matched by `pattern` (nested braces handled)."""
    while True:
        m = pattern.search(s)
        if not m:
            return s
        got = braced(s, m.end())
        if got is None:
            return s[:m.start()] + s[m.end():]
        s = s[:m.start()] + got[0] + s[got[1]:]


def _fix_shorthand(s: str) -> str:
    """`\\frac12` -> `\\frac{1}{2}`, `\\sqrt2` -> `\\sqrt{2}`."""
    s = re.sub(r"\\sqrt\s*([0-9a-zA-Z])", r"\\sqrt{\1}", s)
    s = re.sub(r"\\frac\s*([0-9a-zA-Z])\s*([0-9a-zA-Z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*([0-9a-zA-Z])", r"\\frac\1{\2}", s)
    s = re.sub(r"\\frac\s*([0-9a-zA-Z])\s*(\{)", r"\\frac{\1}\2", s)
    return s


# Digit-group separators that cannot be anything else: `5,\!460`, `14{,}916`, thin spaces. Only
# before exactly three digits, so `3{,}5` (a decimal comma) and lists are left alone.
_GROUP_SEP = re.compile(r"(?<=\d)(?:,\s*\\!|\{,\}|\\,|\\!|\\thinspace\s*|[\u2009\u202f])(?=\d{3}(?!\d))")
# A plain-comma grouped number filling a brace group (`\frac{12}{5,525}`): no list lives there.
_BRACED_GROUPED = re.compile(r"(?<!\\)\{(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?)\}")
# A mixed number, `11 \frac{2}{3}` or `-1\frac{1}{10}`: a whole number directly before a proper
# fraction of digits, standing alone (not after a digit, letter, `.`, `^`, `_` or closing bracket,
# nor followed by a variable, a command or a bracket, where it is a product).
_MIXED = re.compile(r"(?<![\w.}^)\]\\])(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}(?![\w.\\({\[^])")


def _mixed_to_fraction(m: re.Match) -> str:
    whole, num, den = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not 0 < num < den:  # `2\frac{4}{3}` is no mixed number: leave it (a product)
        return m.group(0)
    return "\\frac{%d}{%d}" % (whole * den + num, den)


def normalize(answer: str) -> str:
    """A canonical string for a MATH answer: formatting, units, degrees, percent, `x=` dropped."""
    s = str(answer or "").strip()
    s = s.replace("\n", " ")
    s = re.sub(r"^\$+|\$+$", "", s).strip()
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    s = _unwrap(s, re.compile(r"\\boxed\s*(?=\{)"))
    s = _GROUP_SEP.sub("", s)
    s = re.sub(r"\\[!,;:]", "", s)
    s = re.sub(r"\\qquad|\\quad|~|\\displaystyle", " ", s)
    s = re.sub(r"(?<!\\)\\ ", " ", s)
    s = re.sub(r"\\left(?![a-zA-Z])|\\right(?![a-zA-Z])|\\big(?![a-zA-Z])|\\Big(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ")
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree", "", s)
    s = re.sub(r"\\%|%|\\\$|\$", "", s)
    s = _unwrap(s, _TEXT_CMD)
    s = s.replace("{,}", "")
    s = re.sub(r"\s+", " ", s).strip().rstrip(".").strip()
    for _ in range(3):
        s = _UNIT_TAIL.sub("", s).strip()
    s = re.sub(r"^(?:percent|degrees)$", "", s)
    if re.fullmatch(r"[a-zA-Z]\s*=\s*[^=]+", s) or re.fullmatch(r"\\[a-zA-Z]+\s*=\s*[^=]+", s):
        s = s.split("=", 1)[1].strip()
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    s = _BRACED_GROUPED.sub(lambda m: "{" + m.group(1).replace(",", "") + "}", s)
    s = _fix_shorthand(s)
    s = _MIXED.sub(_mixed_to_fraction, s)
    s = s.replace(" ", "")
    # subscripts (bases): `_{3}` -> `_3`; all the digits of `_10` are its subscript, as in `_{10}`
    s = re.sub(r"_\{([A-Za-z]|\d+)\}(?!\d)", r"_\1", s)
    s = re.sub(r"(?<![\d}])\.(\d)", r"0.\1", s)
    s = re.sub(r"^(-?\d+)\.0+$", r"\1", s)
    s = re.sub(r"^(-?\d+\.\d*?[1-9])0+$", r"\1", s)
    return s


# ---- splitting compound answers ----------------------------------------------------------------


def _split_top(s: str, sep: str = ",") -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _bracketed(s: str) -> tuple[str, list[str], str] | None:
    """`(a,b]` -> ('(', ['a', 'b'], ']') when the outer brackets enclose the whole string."""
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return None
    depth = 0
    for i, ch in enumerate(s):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and i < len(s) - 1:
            return None
    inner = _split_top(s[1:-1])
    if len(inner) < 2:
        return None
    return s[0], inner, s[-1]


_MATRIX = re.compile(r"^\\begin\{[pbv]?matrix\}(.*)\\end\{[pbv]?matrix\}$")


def _matrix(s: str) -> list[str] | None:
    m = _MATRIX.match(s)
    if not m:
        return None
    return [cell for row in m.group(1).split("\\\\") for cell in row.split("&")]


# ---- numbers -----------------------------------------------------------------------------------


def _is_decimal(s: str) -> bool:
    """Whether a number `_frac_value` reads is written as a decimal (an approximation, maybe)."""
    return "." in s or "e" in s.lower()


def _frac_value(s: str) -> Fraction | None:
    """The exact value of an integer, a decimal, `a/b` or `\\frac{a}{b}`, else None."""
    try:
        if re.fullmatch(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d{1,3})?", s):
            return Fraction(s)
        m = re.fullmatch(r"(-?)(?:\\frac\{(-?\d+)\}\{(\d+)\}|(-?\d+)/(\d+))", s)
        if m:
            num, den = int(m.group(2) or m.group(4)), int(m.group(3) or m.group(5))
            value = Fraction(num, den)
            return -value if m.group(1) else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


# ---- equivalence -------------------------------------------------------------------------------


def _choice(s: str) -> str | None:
    m = re.fullmatch(r"\(?([A-Ea-e])\)?", s)
    return m.group(1).upper() if m else None


def _is_text(s: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z '\-]*", s))


def equivalent(pred: str, gold: str, symbolic: bool = True) -> bool:
    """Whether two MATH answers (raw or boxed contents) are the same answer."""
    a, b = normalize(pred), normalize(gold)
    return _equal_norm(a, b, symbolic, depth=0)


def _equal_norm(a: str, b: str, symbolic: bool, depth: int) -> bool:
    if a == b:
        return True
    if not a or not b or depth > 3:
        return False
    ca, cb = _choice(a), _choice(b)
    if ca and cb:
        return ca == cb
    if _is_text(a) or _is_text(b):
        return a.lower().replace(" ", "") == b.lower().replace(" ", "")
    ma, mb = _matrix(a), _matrix(b)
    if ma is not None or mb is not None:
        return ma is not None and mb is not None and len(ma) == len(mb) and all(
            _equal_norm(normalize(x), normalize(y), symbolic, depth + 1) for x, y in zip(ma, mb))
    ba, bb = _bracketed(a), _bracketed(b)
    if ba is not None or bb is not None:
        if ba is None or bb is None or ba[0] != bb[0] or ba[2] != bb[2] or len(ba[1]) != len(bb[1]):
            return False
        return all(_equal_norm(normalize(x), normalize(y), symbolic, depth + 1) for x, y in zip(ba[1], bb[1]))
    la, lb = _split_top(a), _split_top(b)
    if len(la) > 1 or len(lb) > 1:
        if len(la) != len(lb):
            return False
        left = [normalize(x) for x in la]
        right = [normalize(y) for y in lb]
        if all(_equal_norm(x, y, symbolic, depth + 1) for x, y in zip(left, right)):
            return True
        # unordered lists (e.g. all the roots): match greedily
        unused = list(right)
        for x in left:
            hit = next((y for y in unused if _equal_norm(x, y, symbolic, depth + 1)), None)
            if hit is None:
                return False
            unused.remove(hit)
        return True
    fa, fb = _frac_value(a), _frac_value(b)
    if fa is not None and fb is not None:
        if not _is_decimal(a) and not _is_decimal(b):  # integers and fractions: exact
            return fa == fb
        return abs(fa - fb) <= Fraction(1, 10 ** 6) * max(1, abs(fb))
    if not symbolic or "=" in a or "=" in b:
        return False
    pa, pb = to_python(a), to_python(b)
    if pa is None or pb is None:
        return False
    return bool(sympy_worker().equal(pa, pb))


def math_score(output: str, gold: str) -> float:
    """1.0 when the final answer of `output` equals the gold answer (a boxed expression or raw)."""
    gold_answer = last_boxed(gold)
    if gold_answer is None:
        gold_answer = gold
    return 1.0 if equivalent(final_answer(output), gold_answer) else 0.0
