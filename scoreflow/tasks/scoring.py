"""Scorers shared by tasks: numbers (GSM8K, arith), exact text, and token F1 (HotpotQA, DROP).

The MATH scorer lives in math_equiv.py and the code scorer in code_eval.py.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Iterable

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


# ---- text answers (SQuAD-style normalisation) --------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—"}


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, squeeze whitespace."""
    text = str(text or "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(pred: list[str], gold: list[str]) -> float:
    if not pred and not gold:
        return 1.0
    if not pred or not gold:
        return 0.0
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 after `normalize_answer`; as in HotpotQA, yes/no must match exactly."""
    p, g = normalize_answer(prediction), normalize_answer(gold)
    if (p in ("yes", "no", "noanswer") or g in ("yes", "no", "noanswer")) and p != g:
        return 0.0
    return _f1(p.split(), g.split())


def exact_score(prediction: str, gold: str) -> float:
    return 1.0 if normalize_answer(prediction) == normalize_answer(gold) else 0.0


# ---- DROP: numbers normalised per token ---------------------------------------------------------

def _drop_tokens(text: str) -> list[str]:
    out = []
    for tok in re.split(r"[\s\-–—]+", str(text or "").lower()):
        bare = tok.strip("".join(_PUNCT - {"."})).rstrip(".").replace(",", "")
        if re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", bare):
            value = float(bare)
            out.append(str(int(value)) if value.is_integer() else repr(value))
            continue
        tok = "".join(ch for ch in tok if ch not in _PUNCT)
        if tok and tok not in ("a", "an", "the"):
            out.append(tok)
    return out


def drop_f1(prediction: str, golds: Iterable[str]) -> float:
    """The best token F1 of `prediction` against any gold answer, numbers compared by value."""
    pred = _drop_tokens(prediction)
    return max((_f1(pred, _drop_tokens(g)) for g in golds), default=0.0)


def max_f1(prediction: str, golds: Iterable[str]) -> float:
    return max((token_f1(prediction, g) for g in golds), default=0.0)
