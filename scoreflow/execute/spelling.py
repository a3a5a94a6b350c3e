"""Reading text the way an executor would, whatever its spelling: numbers written with digits of any
script or as English words, words compared after normalising case, width, accents, whitespace and
punctuation, and code recognised by parsing it."""

from __future__ import annotations

import ast
import re
import unicodedata
from dataclasses import dataclass

UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
         "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
         "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fourty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
        "eighty": 80, "ninety": 90}
SCALES = {"thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9, "trillion": 10 ** 12}
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
            "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
            "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
            "twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50, "sixtieth": 60, "seventieth": 70,
            "eightieth": 80, "ninetieth": 90, "hundredth": 100, "thousandth": 1000, "millionth": 10 ** 6}
NUMBER_WORDS = UNITS.keys() | TENS.keys() | SCALES.keys() | ORDINALS.keys() | {"hundred", "dozen"}
# Words that make arithmetic of the numbers around them ("twenty-two minus ten", "three times four"),
# and the words that may stand between such numbers ("divided by", "subtract ... from").
OPERATIONS = frozenset({"plus", "minus", "times", "multiplied", "divided", "over", "less", "more", "added",
                        "subtracted", "add", "subtract", "multiply", "divide", "sum", "product", "difference",
                        "quotient", "total", "squared", "cubed", "power", "+", "-", "*", "/", "×", "÷", "^", "="})
GLUE = frozenset({"by", "to", "from", "and", "of", "the", "than", "with", "a"})
STATED = re.compile(r"\b(?:(?:answer|result|total|solution|sum|product)\s*(?:is|was|equals|=|:|should be|must be|"
                    r"will be)|(?:reply|respond|answer|write|say|output|print|return|give)\s+(?:with\s+|only\s+|just\s+)?"
                    r"(?:the\s+number\s+)?)\s*((?:[a-z]+[\s-]*){1,6}?)\s*(?:[.!,;)]|$)")


def plain(text: str) -> str:
    """NFKC, case-folded, without accents and invisible format characters (zero-width spaces)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")
    return text.casefold()


def words(text: str) -> list[str]:
    """The words of `text`, case, punctuation and whitespace aside."""
    return re.findall(r"[^\W_]+", plain(text))


def numerals(text: str) -> list[float]:
    """The numbers written with numeric characters of any script: runs of decimal digits (ASCII,
    Arabic-Indic, fullwidth, ...) and single numeric signs (`Ⅻ`, `½`, `²`)."""
    out: list[float] = []
    run = ""
    for ch in text + " ":
        if ch.isdecimal():
            run += str(unicodedata.decimal(ch))
            continue
        if run:
            out.append(float(int(run)))
            run = ""
        if ch.isnumeric():
            try:
                out.append(float(unicodedata.numeric(ch)))
            except (TypeError, ValueError):
                out.append(float("nan"))
    return out


@dataclass
class Phrase:
    value: int
    start: int  # token indices
    end: int


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z]+|[+\-*/×÷^=]", plain(text))


def number_phrases(text: str) -> tuple[list[str], list[Phrase]]:
    """The English number phrases of `text` with their values: "twenty-two" 22, "two hundred and
    five" 205, "a dozen" 12, "twelfth" 12."""
    toks = _tokens(text)
    found: list[Phrase] = []
    i = 0
    while i < len(toks):
        if toks[i] not in NUMBER_WORDS:
            i += 1
            continue
        total, current, last, j = 0, 0, "", i
        while j < len(toks):
            t = toks[j]
            if t == "-" and last and j + 1 < len(toks) and toks[j + 1] in NUMBER_WORDS:
                j += 1  # twenty-two
                continue
            if t == "and" and last in ("hundred", "scale") and j + 1 < len(toks) and toks[j + 1] in NUMBER_WORDS:
                j += 1
                continue
            if t in UNITS:
                if last in ("unit", "ordinal") or (last == "tens" and UNITS[t] >= 10) or (last == "tens" and UNITS[t] == 0):
                    break
                current += UNITS[t]
                last = "unit"
            elif t in TENS:
                if last in ("unit", "tens", "ordinal"):
                    break
                current += TENS[t]
                last = "tens"
            elif t == "hundred":
                if last == "ordinal":
                    break
                current = max(current, 1) * 100
                last = "hundred"
            elif t == "dozen":
                current = max(current, 1) * 12
                last = "hundred"
            elif t in SCALES:
                if last == "ordinal":
                    break
                total += max(current, 1) * SCALES[t]
                current, last = 0, "scale"
            elif t in ORDINALS:
                if last in ("unit", "ordinal") and ORDINALS[t] < 100:
                    break
                current = max(current, 1) * ORDINALS[t] if ORDINALS[t] >= 100 else current + ORDINALS[t]
                last = "ordinal"
                j += 1
                break
            else:
                break
            j += 1
        if j == i:
            j = i + 1
        value = total + current
        start = i - 1 if i > 0 and toks[i - 1] == "a" and toks[i] in ("hundred", "dozen", *SCALES) else i
        found.append(Phrase(value, start, j))
        i = j
    return toks, found


def arithmetic(text: str) -> str | None:
    """Two numbers (words or numerals) joined by an operation: "twenty-two minus ten", "add 3 and 4"."""
    toks, phrases = number_phrases(re.sub(r"\d+", " one ", plain(text)))
    for a, b in zip(phrases, phrases[1:]):
        gap = toks[a.end:b.start]
        if len(gap) > 3 or not all(t in OPERATIONS or t in GLUE for t in gap):
            continue
        before = toks[max(0, a.start - 3):a.start]
        if any(t in OPERATIONS for t in gap) or any(t in OPERATIONS for t in before):
            return " ".join(toks[a.start:b.end])
    return None


def stated_number(text: str) -> str | None:
    """An answer stated as a number word: "The answer is seven."."""
    for m in STATED.finditer(plain(text)):
        toks, phrases = number_phrases(m.group(1))
        if phrases and all(t in NUMBER_WORDS or t in ("and", "a", "-") for t in toks):
            return m.group(0).strip()
    return None


CONNECTORS = frozenset({"of", "for", "the", "and", "de", "la", "von", "van", "s"})


def names(text: str) -> set[tuple[str, ...]]:
    """The names of `text` that run over two words or more ("Arthur's Magazine", "First for Women"):
    capitalised words after the first of a sentence, joined by small connecting words."""
    found: set[tuple[str, ...]] = set()
    for sentence in re.split(r"(?<=[.!?:])\s+|\n", unicodedata.normalize("NFKC", text)):
        toks = re.findall(r"[^\W_]+", sentence)
        run: list[str] = []
        for i, t in enumerate(toks + [""]):
            capital = i > 0 and t[:1].isupper()
            if capital or (run and t.casefold() in CONNECTORS and i + 1 < len(toks) and
                           (toks[i + 1][:1].isupper() or toks[i + 1].casefold() in CONNECTORS)):
                run.append(plain(t))
                continue
            while run and run[-1] in CONNECTORS:
                run.pop()
            if len([w for w in run if w not in CONNECTORS]) >= 2:
                found.add(tuple(run))
            run = []
    return found


def quotes(text: str, source_words: list[str], n: int) -> str | None:
    """The first run of `n` consecutive words of `source_words` that `text` repeats, or None."""
    spans = {tuple(source_words[i:i + n]) for i in range(len(source_words) - n + 1)}
    w = words(text)
    for i in range(len(w) - n + 1):
        if tuple(w[i:i + n]) in spans:
            return " ".join(w[i:i + n])
    return None


CODE_WORDS = re.compile(r"\bdef\s+\w+\s*\(|\blambda\b[\w\s,*]*:|^\s*(?:import\s+\w|from\s+[\w.]+\s+import\b)", re.M)
_CODE_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.Import, ast.ImportFrom,
               ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.While, ast.If, ast.With, ast.Try,
               ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Subscript)


def _is_code(fragment: str) -> bool:
    fragment = fragment.strip().rstrip(".")
    if len(fragment) < 3 or not re.search(r"[()\[\]=:+*/<>%-]", fragment):
        return False
    try:
        tree = ast.parse(fragment)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, _CODE_NODES):
            return True
        if isinstance(node, ast.Return) and node.value is not None and not isinstance(node.value, (ast.Name, ast.Constant)):
            return True
        if isinstance(node, ast.Call) and (node.args or node.keywords):
            return True
        if isinstance(node, (ast.Compare, ast.BoolOp)):
            return True
        if isinstance(node, ast.BinOp) and not _hyphenated(node):
            return True
    return False


def _hyphenated(node: ast.AST) -> bool:
    """`self-contained`, `step-by-step`: words joined by hyphens, which parse as subtractions."""
    if isinstance(node, ast.Name):
        return True
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and _hyphenated(node.left) \
        and _hyphenated(node.right)


def _bracketed(line: str, start: int, opening: int) -> str:
    """`line` from `start` to the bracket that closes the one at `opening`."""
    depth = 0
    for i in range(opening, len(line)):
        depth += (line[i] in "([{") - (line[i] in ")]}")
        if depth == 0:
            return line[start:i + 1]
    return line[start:]


def carries_code(text: str) -> str | None:
    """A fragment of Python in `text` (after normalising case, width and invisible characters): the
    whole text, a line, a backtick span, what follows a colon or a sentence end, or what starts at a
    call written as code (`sorted(`), that parses as code (a definition, an import, a return of an expression, an assignment, a call with arguments,
    a comparison, arithmetic)."""
    t = unicodedata.normalize("NFKC", text)
    t = "".join(c for c in t if unicodedata.category(c) != "Cf")
    for variant in (t, t.casefold()):
        m = CODE_WORDS.search(variant)
        if m:
            return variant[m.start():m.start() + 40]
        fragments = [variant, *variant.splitlines(), *re.findall(r"`+([^`]+)`+", variant)]
        for line in variant.splitlines():
            fragments += re.split(r"(?<=[.:;!?])\s+", line)[1:]
            fragments += [line[m.end():] for m in re.finditer(r"[:;]\s*", line)]
            # code inside prose: a call or a subscript written as code, `use sorted(set(a)) here`
            fragments += [_bracketed(line, m.start(), m.end() - 1) for m in re.finditer(r"\b[A-Za-z_][\w.]*[(\[]", line)
                          if not re.match(r"\w+\((?:e?s)\)", line[m.start():])]  # "the number(s)" is prose
        for f in fragments[:200]:
            if _is_code(f):
                return f.strip()[:40]
    return None
