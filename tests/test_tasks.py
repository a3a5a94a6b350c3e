"""Loading the six AFlow tasks, arith and jsonl: splits, fields, templates, toys, few-shot examples."""

from __future__ import annotations

import json
import urllib.error

import pytest

from scoreflow.execute import workflow
from scoreflow.errors import UserError
from scoreflow.execute.operators import OPERATORS, documentation
from scoreflow.tasks import TASKS, load

SIZES = {"gsm8k": (264, 1055), "math": (119, 486), "humaneval": (33, 131), "mbpp": (86, 341),
         "hotpotqa": (200, 800), "drop": (200, 800)}
THRESHOLDS = {"arith": 0.8, "gsm8k": 0.8, "math": 0.75, "hotpotqa": 0.75, "drop": 0.75, "humaneval": None, "mbpp": None}
FAMILIES = {"arith": "math", "gsm8k": "math", "math": "math", "hotpotqa": "qa", "drop": "qa", "humaneval": "code",
            "mbpp": "code"}


def test_task_list():
    assert set(TASKS) == set(SIZES) | {"arith", "jsonl"}
    with pytest.raises(UserError):
        load("nope")


@pytest.mark.parametrize("name", sorted(SIZES))
def test_splits_and_fields(name, data_dir):
    for split, size in zip(("validate", "test"), SIZES[name]):
        for path in (data_dir, data_dir / name, data_dir / name / f"{name}_{split}.jsonl"):
            problems = load(name, path).problems(split)
            assert len(problems) == size
        assert len({p.id for p in problems}) == size
    validate_ids = {p.id for p in load(name, data_dir).problems("validate")}
    assert not validate_ids & {p.id for p in load(name, data_dir).problems("test")}
    for p in problems:
        assert p.question.strip() and p.inputs.strip()
        if FAMILIES[name] == "code":
            assert p.attributes()["entry_point"] == p.extra["entry_point"]
            assert p.question == p.inputs == p.extra["prompt"]
        if FAMILIES[name] == "qa":
            assert p.question in p.inputs and len(p.inputs) > len(p.question) + 50


@pytest.mark.parametrize("name", sorted(THRESHOLDS))
def test_task_definition_and_examples(name):
    task = load(name)
    assert task.family == FAMILIES[name]
    assert task.similarity_threshold == THRESHOLDS[name]
    assert task.description and "\n" not in task.description
    assert (task.extract is None) == (task.family == "code")
    assert all(op in OPERATORS for op in task.operators)
    assert workflow.static_check(task.template, task.operators).ok
    assert documentation(task).count("await self.") == len(task.operators)
    assert len(task.examples) >= 2
    for question, source in task.examples:
        assert question.strip()
        # every few-shot example obeys its family's rule against problem-specific workflows
        c = workflow.check(source, task.operators, task.template, task.similarity_threshold, family=task.family,
                           problem=question)
        assert c.ok, (c.reason, source)
        assert workflow.similarity(source, task.template) < 0.95
    if task.family == "code":
        assert task.toy.extra["entry_point"] and task.toy.extra["public_tests"]
        assert task.score(task.toy, "def add(a, b):\n    return a + b\n") == 1.0
        assert task.score(task.toy, "def add(a, b):\n    return a - b\n") == 0.0
    else:
        assert task.toy.inputs and task.toy.answer is not None


def test_code_operators_per_family():
    assert load("humaneval").operators == ("CustomCodeGenerate", "ScEnsemble", "Test")
    assert load("hotpotqa").operators == ("Custom", "AnswerGenerate", "ScEnsemble", "Review")
    assert load("math").operators == ("Custom", "Programmer", "ScEnsemble", "Review")


def test_public_tests_matched(data_dir):
    he = load("humaneval", data_dir)
    problems = he.problems("validate") + he.problems("test")
    missing = sorted(p.id for p in problems if not p.extra["public_tests"])
    assert missing == ["HumanEval/105", "HumanEval/32", "HumanEval/38", "HumanEval/50", "HumanEval/83"]
    mbpp = load("mbpp", data_dir)
    problems = mbpp.problems("validate") + mbpp.problems("test")
    for p in problems:
        tests = p.extra["public_tests"]
        assert tests, p.id
        raw = (p.answer or "").replace(" ", "")
        for t in tests:  # each public test is one of the problem's own asserts
            assert t.replace("candidate", p.extra["entry_point"]).replace(" ", "") in raw, (p.id, t)


def test_missing_data_is_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no gsm8k_validate.jsonl"):
        load("gsm8k", tmp_path).problems("validate")
    with pytest.raises(UserError, match="does not exist"):
        load("math", tmp_path / "nowhere").problems("test")
    bad = tmp_path / "drop_test.jsonl"
    bad.write_text('{"context": "Passage: x\\nQuestion: y\\nAnswer:", "ref_text": "1"}\nnot json\n')
    with pytest.raises(UserError, match=r"drop_test.jsonl:2: broken JSON"):
        load("drop", bad).problems("test")


def test_download_offline_fails_with_one_line(tmp_path, monkeypatch):
    from scoreflow.tasks import download

    monkeypatch.setenv("SCOREFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCOREFLOW_DATA", raising=False)
    monkeypatch.delenv("SCOREFLOW_OFFLINE", raising=False)

    def offline(url, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    with pytest.raises(UserError) as err:
        load("gsm8k").problems("validate")
    assert "\n" not in str(err.value) and "could not download gsm8k_validate.jsonl" in str(err.value)
    monkeypatch.setenv("SCOREFLOW_OFFLINE", "1")
    with pytest.raises(UserError, match="pass --data"):
        load("math").problems("test")


def test_download_verifies_and_caches(tmp_path, monkeypatch, data_dir):
    """A served file is kept only when its git blob hash is AFlow's (the network is faked here)."""
    from scoreflow.tasks import download

    monkeypatch.setenv("SCOREFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCOREFLOW_DATA", raising=False)
    monkeypatch.delenv("SCOREFLOW_OFFLINE", raising=False)
    real = (data_dir / "drop" / "drop_validate.jsonl").read_bytes()
    served = {"bytes": real}

    class Response:
        def __init__(self, url):
            self.url = url

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            if "MetaGPT" not in self.url:
                raise urllib.error.URLError("archive unavailable")
            return served["bytes"]

    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout=None: Response(url))
    assert len(load("drop").problems("validate")) == 200
    assert (tmp_path / "cache" / "data" / "drop" / "drop_validate.jsonl").read_bytes() == real
    served["bytes"] = real + b"\n"
    with pytest.raises(UserError, match="differs"):
        load("drop").problems("test")


def test_jsonl_task(tmp_path):
    f = tmp_path / "capitals.jsonl"
    rows = [{"q": f"Capital number {i}?", "a": f"City {i}|Town {i}", "key": f"c{i}"} for i in range(10)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    opts = {"question_field": "q", "answer_field": "a", "id_field": "key", "scorer": "f1", "family": "qa",
            "description": "capitals"}
    task = load("jsonl", f, opts)
    val, test = task.problems("validate"), task.problems("test")
    assert [p.id for p in val] == ["c0", "c5"] and len(test) == 8
    assert task.description == "capitals" and task.operators == load("hotpotqa").operators
    assert task.score(val[0], "town 0") == 1.0 and task.score(val[0], "nowhere") == 0.0

    nums = tmp_path / "n.jsonl"
    nums.write_text('{"question": "1+1?", "answer": "2"}\n' * 5)
    t = load("jsonl", nums, {"scorer": "number", "family": "math"})
    assert t.score(t.problems("validate")[0], "it is 2") == 1.0

    boxed = tmp_path / "b.jsonl"
    boxed.write_text('{"question": "half?", "answer": "so \\\\boxed{\\\\frac{1}{2}}"}\n')
    t = load("jsonl", boxed, {"scorer": "boxed", "family": "math"})
    assert t.score(t.problems("validate")[0], "\\boxed{0.5}") == 1.0

    code = tmp_path / "code.jsonl"
    code.write_text(json.dumps({"question": "Write def double(x): return twice x.",
                                "answer": ["assert double(2) == 4", "assert double(0) == 0"]}) + "\n")
    t = load("jsonl", code, {"scorer": "python-tests", "family": "code"})
    p = t.problems("validate")[0]
    assert p.extra["entry_point"] == "double"
    assert t.score(p, "def double(x):\n    return 2 * x\n") == 1.0
    assert t.score(p, "def double(x):\n    return x\n") == 0.0

    exact = tmp_path / "e.jsonl"
    exact.write_text('{"question": "colour?", "answer": "Blue"}\n')
    t = load("jsonl", exact, {"scorer": "exact"})
    assert t.score(t.problems("validate")[0], "blue.") == 1.0
    with pytest.raises(UserError, match="python-tests"):
        load("jsonl", exact, {"scorer": "python-tests", "family": "qa"})
    with pytest.raises(UserError, match="scorer"):
        load("jsonl", exact, {"scorer": "bleu"})
    with pytest.raises(UserError, match="lacks the field"):
        load("jsonl", exact, {"question_field": "prompt"}).problems("validate")
    with pytest.raises(UserError, match="--data"):
        load("jsonl", None, {})
