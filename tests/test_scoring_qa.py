"""Number, token-F1 and DROP scorers, and every gold answer of GSM8K, HotpotQA and DROP."""

from __future__ import annotations

import pytest

from scoreflow.tasks import load
from scoreflow.tasks.scoring import drop_f1, exact_score, max_f1, normalize_answer, number_score, token_f1


def test_normalize_answer():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a pear.") == "apple pear"


@pytest.mark.parametrize("pred,gold,f1", [
    ("Paris", "paris", 1.0),
    ("the city of Paris", "Paris", 0.5),
    ("Yes.", "yes", 1.0),
    ("yes", "no", 0.0),
    ("no it is not", "no", 0.0),  # yes/no answers must match exactly (as in HotpotQA's metric)
    ("London", "Paris", 0.0),
    ("", "Paris", 0.0),
])
def test_token_f1(pred, gold, f1):
    assert token_f1(pred, gold) == pytest.approx(f1)


def test_drop_f1_numbers_and_alternatives():
    assert drop_f1("20.0", ["20"]) == 1.0
    assert drop_f1("1,000 yards", ["1000 yards"]) == 1.0
    assert drop_f1("$2.50", ["2.5"]) == 1.0
    assert drop_f1("Bears", ["Chicago Bears", "Bears"]) == 1.0
    assert drop_f1("Chicago", ["Chicago Bears"]) == pytest.approx(2 / 3)
    assert drop_f1("21", ["20"]) == 0.0
    assert drop_f1("anything", []) == 0.0


def test_number_and_exact():
    assert number_score("so the total is $1,250.", 1250) == 1.0
    assert number_score("12.5", 12) == 0.0
    assert number_score("no number", 3) == 0.0
    assert exact_score("The Beatles", "beatles") == 1.0
    assert max_f1("red", ["blue", "Red"]) == 1.0


def test_every_gsm8k_gold_scores_one(data_dir):
    task = load("gsm8k", data_dir)
    problems = task.problems("validate") + task.problems("test")
    assert len(problems) == 1319
    for p in problems:
        gold = int(p.answer) if float(p.answer).is_integer() else p.answer
        assert task.score(p, f"The answer is {gold}.") == 1.0, p.id
        assert task.score(p, f"{gold + 1}") == 0.0, p.id


def test_every_hotpotqa_gold_scores_one(data_dir):
    task = load("hotpotqa", data_dir)
    problems = task.problems("validate") + task.problems("test")
    assert len(problems) == 1000
    for p in problems:
        assert task.score(p, p.answer) == 1.0, p.id
        assert task.score(p, p.answer + " or perhaps something else") < 1.0, p.id
        assert task.score(p, "zzqx") == 0.0, p.id
        assert p.question in p.inputs and p.inputs.startswith("Context:")


def test_every_drop_gold_scores_one(data_dir):
    task = load("drop", data_dir)
    problems = task.problems("validate") + task.problems("test")
    assert len(problems) == 1000
    for p in problems:
        for gold in p.answer:
            assert task.score(p, gold) == 1.0, (p.id, gold)
        assert task.score(p, "zzqx qqzx") == 0.0, p.id
        assert p.question and p.question in p.inputs and not p.inputs.rstrip().endswith("Answer:")
