"""The MATH scorer: boxed extraction, normalisation, an equivalence table, the sympy time limit,
and every gold answer of the MATH splits."""

from __future__ import annotations

import random
import time

import pytest

from scoreflow.tasks import load
from scoreflow.tasks.math_equiv import equivalent, final_answer, last_boxed, math_score, normalize
from scoreflow.tasks.math_sympy import SympyWorker, to_python

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
    # mixed numbers are sums (test 84: 11 \frac{2}{3}; test 96: 1\frac{1}{10})
    (r"\frac{35}{3}", r"11 \frac{2}{3}", True),
    (r"11\frac{2}{3}", r"\frac{35}{3}", True),
    (r"\frac{22}{3}", r"11 \frac{2}{3}", False),
    (r"\frac{11}{10}", r"1\frac{1}{10}", True),
    ("1.1", r"1\frac{1}{10}", True),
    (r"\frac{1}{10}", r"1\frac{1}{10}", False),
    (r"-1\dfrac{1}{2}", "-1.5", True),
    (r"2\frac{\sqrt{3}}{2}", r"\sqrt{3}", True),  # not a mixed number: a product
    # exact rationals compare exactly, decimals within a relative 1e-6 (test 373)
    ("1", r"\frac{4036082}{4036081}", False),
    (r"\frac{4036081}{4036082}", r"\frac{4036082}{4036081}", False),
    (r"\frac{4036083}{4036081}", r"\frac{4036082}{4036081}", False),
    (r"\frac{4036082}{4036080}", r"\frac{4036082}{4036081}", False),
    (r"\frac{4036082}{4036082}", r"\frac{4036082}{4036081}", False),
    (r"\frac{8072164}{8072162}", r"\frac{4036082}{4036081}", True),
    (r"1+\frac{1}{2009^2}", r"\frac{4036082}{4036081}", True),
    (r"\frac{2009^2}{2009^2+1}", r"\frac{4036082}{4036081}", False),
    ("1.0000002478", r"\frac{4036082}{4036081}", True),
    (r"\frac{355}{113}", r"\pi", False),
    # digit-group separators inside numbers, wherever they stand (test 470: \frac{12}{5,\!525})
    (r"\frac{12}{5525}", r"\frac{12}{5,\!525}", True),
    (r"\frac{12}{5,525}", r"\frac{12}{5525}", True),
    (r"\frac{12}{5{,}525}", r"\frac{12}{5525}", True),
    (r"\frac{12}{5\,525}", r"\frac{12}{5525}", True),
    (r"\frac{12}{5526}", r"\frac{12}{5,\!525}", False),
    (r"12,\!000,\!085", "12000085", True),
    ("5\u2009525", "5525", True),
    (r"(1,\!000, 2)", "(1000, 2)", True),
    ("27,93", "27, 93", True),  # test 347: a list, no separator
    # base subscripts with and without braces (validate 61, tests 165 and 195)
    ("1112112_{3}", "1112112_3", True),
    ("1112112_3", "1112112_{3}", True),
    ("-221_{3}", "-221_3", True),
    ("0.0011_2", "0.0011_{2}", True),
    ("123_{10}", "123_10", True),
    ("1112112_{4}", "1112112_3", False),
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


def test_issue_classes_on_real_gold_answers(data_dir):
    """The four classes that were scored wrongly, on the gold answers where they occur."""
    task = load("math", data_dir)
    by_id = {p.id: p for p in task.problems("validate") + task.problems("test")}
    cases = {
        "math-test-84": ([r"\frac{35}{3}", r"11\frac{2}{3}"], [r"\frac{22}{3}", "11"]),
        "math-test-96": ([r"\frac{11}{10}", "1.1"], [r"\frac{1}{10}"]),
        "math-test-373": ([r"\frac{4036082}{4036081}"], ["1", r"\frac{4036081}{4036082}", r"\frac{4036083}{4036081}",
                                                         r"\frac{4036082}{4036080}"]),
        "math-test-470": ([r"\frac{12}{5525}", r"\frac{12}{5,525}"], [r"\frac{12}{5524}"]),
        "math-validate-61": (["1112112_{3}", "1112112_3"], ["1112112_{4}"]),
        "math-test-165": (["-221_{3}", "-221_3"], ["221_3"]),
        "math-test-195": (["0.0011_2", "0.0011_{2}"], ["0.0011_{3}"]),
    }
    for pid, (right, wrong) in cases.items():
        p = by_id[pid]
        for answer in right:
            assert task.score(p, "So $\\boxed{" + answer + "}$.") == 1.0, (pid, answer)
        for answer in wrong:
            assert task.score(p, "So $\\boxed{" + answer + "}$.") == 0.0, (pid, answer)
