"""The MATH scorer: boxed extraction, normalisation, an equivalence table, the sympy time limit,
and every gold answer of the MATH splits."""

from __future__ import annotations

import random
import time

import pytest

from scoreflow.tasks import load
from scoreflow.tasks.math_equiv import (SympyWorker, equivalent, final_answer, last_boxed, math_score, normalize,
                                        to_python)

# (prediction, gold, equivalent?)
TABLE = [
    # fractions, decimals, signs
    ("0.5", r"\frac{1}{2}", True),
    (r"\dfrac{3}{4}", "0.75", True),
    (r"\tfrac{3}{4}", r"\frac34", True),
    (r"\frac12", "0.5", True),
    ("5/6", r"\frac{5}{6}", True),
    ("-3", "-3.0", True),
    (r"-\frac{1}{3}", r"\frac{-1}{3}", True),
    ("0.33", r"\frac{1}{3}", False),
    (".5", "0.5", True),
    ("2.50", "2.5", True),
    ("-7", "7", False),
    ("3", "4", False),
    # radicals and constants
    (r"2\sqrt{3}", r"\sqrt{12}", True),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
    (r"\sqrt2", r"\sqrt{2}", True),
    (r"3\sqrt{2}", r"2\sqrt{3}", False),
    (r"\sqrt[3]{8}", "2", True),
    (r"7\pi", r"\pi \cdot 7", True),
    (r"\pi", "3.14159265358979", True),
    (r"\frac{\pi}{2}", r"\frac{\pi}{3}", False),
    # algebra
    ("x^2+2x+1", "(x+1)^2", True),
    ("2x+2", "2(x+1)", True),
    ("x+1", "x-1", False),
    ("x = 5", "5", True),
    (r"y=\frac{1}{2}", "0.5", True),
    # units, degrees, percent, money, thousands separators
    (r"10\text{ cm}", "10", True),
    (r"6\text{ square units}", "6", True),
    ("12 inches", "12", True),
    (r"45^\circ", "45", True),
    (r"45^{\circ}", "45", True),
    (r"25\%", "25", True),
    ("25 percent", "25", True),
    (r"\$18.90", "18.9", True),
    ("1,000", "1000", True),
    (r"5,\!460", "5460", True),
    (r"1{,}234{,}567", "1234567", True),
    ("1,001", "1000", False),
    # tuples, intervals, lists, matrices
    ("(1,2)", "(1, 2)", True),
    (r"\left(3,\frac{\pi}{2}\right)", r"(3,\frac{\pi}{2})", True),
    ("(2,1)", "(1,2)", False),
    ("[1,2)", "[1,2]", False),
    (r"(-\infty, 3]", r"(-\infty,3]", True),
    ("(0.5, 2]", r"(\frac{1}{2}, 2]", True),
    ("1, -2", "-2, 1", True),
    ("1, 2, 3", "1, 2", False),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}", True),
    (r"\begin{pmatrix} 0.5 & 1 \end{pmatrix}", r"\begin{pmatrix} \frac{1}{2} & 1 \end{pmatrix}", True),
    # text answers and choices
    (r"\text{Tuesday}", "Tuesday", True),
    ("tuesday", r"\text{Tuesday}", True),
    (r"\text{(B)}", "B", True),
    ("(C)", "B", False),
    (r"\text{even}", r"\text{odd}", False),
]


@pytest.mark.parametrize("pred,gold,same", TABLE)
def test_equivalence_table(pred, gold, same):
    assert equivalent(pred, gold) is same


def test_table_is_big_enough():
    assert len(TABLE) >= 40


def test_last_boxed_nested_and_fbox():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{1}{\sqrt{2}}}.") == r"\frac{1}{\sqrt{2}}"
    assert last_boxed(r"so \fbox{3}") == "3"
    assert last_boxed(r"$\boxed 5$") == "5"
    assert last_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxed{unclosed") == "unclosed"  # a reply cut off by the token limit


def test_final_answer_fallbacks():
    assert final_answer("Work...\nThe final answer is 12.") == "12"
    assert final_answer("Work...\n42") == "42"
    assert math_score("The final answer is $\\frac{1}{2}$.", r"\boxed{0.5}") == 1.0


def test_normalize_examples():
    assert normalize(r"\left( 1, 2 \right)") == "(1,2)"
    assert normalize(r"\$1,000.00") == "1000"
    assert normalize(r"\text{ 5 dollars}") == "5"


def test_whitelist_keeps_python_out_of_sympy():
    assert to_python("__import__('os')") is None
    assert to_python(r"\frac{1}{2}") == "((1)/(2))"
    assert to_python("x.real") is None
    assert to_python("abc") is None  # unknown multi-letter names are never evaluated
    assert to_python("10^{10^{10}}") is None  # towers are refused before reaching sympy


def test_sympy_hang_is_cut_off_and_worker_recovers():
    w = SympyWorker(timeout_s=1.5)
    try:
        assert w.equal("1/2", "0.5") is True
        t0 = time.monotonic()
        assert w.equal("10**(10**10)", "5") is None  # would take far longer than the limit
        assert time.monotonic() - t0 < 10
        assert w.equal("x**2 + 2*x + 1", "(x+1)**2") is True  # a fresh worker answers
    finally:
        w.close()


def test_every_math_gold_scores_one(data_dir):
    task = load("math", data_dir)
    problems = task.problems("validate") + task.problems("test")
    assert len(problems) == 605
    for p in problems:
        assert task.score(p, p.extra["solution"]) == 1.0, p.id
        assert task.score(p, "Therefore the answer is $\\boxed{" + p.answer + "}$.") == 1.0, p.id


def test_wrong_math_answers_score_zero(data_dir):
    task = load("math", data_dir)
    problems = task.problems("test")
    rng = random.Random(0)
    checked = 0
    for p in rng.sample(problems, 60):
        other = rng.choice(problems)
        if normalize(other.answer) == normalize(p.answer):
            continue
        assert task.score(p, "\\boxed{" + other.answer + "}") == 0.0, (p.answer, other.answer)
        checked += 1
    assert checked >= 40
    assert task.score(problems[0], "I do not know.") == 0.0
