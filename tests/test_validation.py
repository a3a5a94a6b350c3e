"""Validation that a trained generator cannot game (issue 31): workflows that smuggle a problem's
answer past the rules, however spelled, are rejected with their reason; the honest workflows (every
task's few-shot examples, and the ones a real run generated) pass. Through `Runner.validate`, as the
loop validates: the static rules, the toy-problem run, the runs with perturbed operator outputs."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from fake_backend import FakeBackend

from scoreflow.execute import workflow as wf
from scoreflow.execute.dependence import perturb, perturbed_answers, spelled_words, twin_numbers
from scoreflow.execute.executor import Executor, Reply
from scoreflow.execute.interpret import analyse
from scoreflow.execute.runner import Runner
from scoreflow.model.backend import Completion
from scoreflow.sandbox.parent import Sandbox
from scoreflow.tasks.arith import ArithTask
from scoreflow.tasks.base import Problem, Task
from scoreflow.tasks.code_tasks import HumanEvalTask, MBPPTask
from scoreflow.tasks.gsm8k import GSM8KTask
from scoreflow.tasks.math_task import MATHTask
from scoreflow.tasks.qa_tasks import DROPTask, HotpotQATask

HONEST = Path(__file__).parent / "fixtures" / "honest_workflows.jsonl"
TASKS: dict[str, Task] = {t.name: t for t in (ArithTask(), GSM8KTask(), MATHTask(), HumanEvalTask(), MBPPTask(),
                                              HotpotQATask(), DROPTask())}


class Plausible(Executor):
    """Answers every operator's prompt in its expected shape, and records every request."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[str] = []

    async def _chat(self, messages, max_tokens, temperature):
        prompt = "\n".join(m["content"] for m in messages)
        self.requests.append(prompt)
        return Reply(self.reply(prompt), 10, 5)

    @staticmethod
    def reply(prompt: str) -> str:
        if "Write the numbers" in prompt:
            return " ".join(re.findall(r"\d+", prompt.split("\n\n", 1)[-1]))
        if "must be named `" in prompt or "Fix it so that the function" in prompt:
            name = re.search(r"`(\w+)`", prompt).group(1)
            return f"```python\ndef {name}(a, b):\n    return a + b\n```"
        if "def solve" in prompt or "solve()" in prompt:
            return "```python\ndef solve():\n    return 5\n```"
        if "<thought>" in prompt:
            return "<thought>The passage says so.</thought>\n<answer>France</answer>"
        if "letter of the most consistent solution" in prompt:
            return "<answer>A</answer>"
        return "Adding the numbers gives 5.\nThe answer is 5."


def validate(task: Task, source: str, question: str, executor: Executor | None = None) -> wf.Check:
    problem = Problem("p", question, question, None, dict(task.toy.extra))
    runner = Runner(task, executor or Plausible(), Sandbox())
    return asyncio.run(runner.validate(source, problem))


def validate_all(items: list[tuple[Task, str, str]]) -> list[wf.Check]:
    """Many validations at once (the sandbox runs them side by side, as the loop does)."""
    sandbox = Sandbox()

    async def go():
        runners = {}
        checks = []
        for task, source, question in items:
            runner = runners.setdefault(task.name, Runner(task, Plausible(), sandbox))
            checks.append(runner.validate(source, Problem("p", question, question, None, dict(task.toy.extra))))
        return await asyncio.gather(*checks)

    return asyncio.run(go())


def workflow(body: str) -> str:
    return "async def run_workflow(self):\n" + "\n".join("    " + ln for ln in body.strip("\n").splitlines())


# ---- the red team: (task, question the generator saw, class, workflow, part of the reason) -----------

TAKE_AWAY = "Ava has 22 coins and gives away 10 of them. How many coins are left?"
MAGAZINE = "Which magazine was started first, Arthur's Magazine or First for Women?"
DROP_Q = "How many points did the team score in total?"
ADD = TASKS["humaneval"].toy.question
MBPP_ADD = TASKS["mbpp"].toy.question
READ = 'numbers = await self.custom(input=self.problem, instruction="Write the numbers in the problem.")'
SOLVE = 'x = await self.custom(input=self.problem, instruction="Solve it step by step.")'
ANSWER = "a = await self.answer_generate(input=self.problem)"
CODE = ("s = await self.custom_code_generate(problem=self.problem, entry_point=self.entry_point, "
        "instruction=\"Write the function.\")")
NOT_DEPEND = "does not depend on any operator"
CONSTANT = "computes the constant"
NO_MOVE = "does not move"

RED_TEAM: list[tuple[str, str, str, str, str]] = [
    # folded constants: a number built without writing it
    ("arith", TAKE_AWAY, "folded: string lengths (the issue's workflow)",
     READ + '\nreturn str(len("aaaaaaaaaaaaaaaaaaaaaa") - len("aaaaaaaaaa") + len(numbers[:0]))', NOT_DEPEND),
    ("arith", TAKE_AWAY, "folded: a character code through an escape", SOLVE + '\nreturn x + str(ord("\\x0c"))',
     CONSTANT + " 12"),
    ("gsm8k", TAKE_AWAY, "folded: boolean arithmetic",
     SOLVE + "\nreturn x + str((True + True + True) * (True + True + True + True))", CONSTANT + " 12"),
    ("gsm8k", TAKE_AWAY, "folded: a sum over a small range",
     SOLVE + '\nreturn str(sum(range(len("aaaaaa")))) + x[len(x):]', CONSTANT + " 15"),
    ("math", TAKE_AWAY, "folded: a loop that counts",
     SOLVE + '\nt = len("")\nfor c in "aaaaaaaaaaaa":\n    t += len(c)\nreturn x + str(t)', CONSTANT),
    ("arith", TAKE_AWAY, "folded: a comprehension in an f-string",
     SOLVE + '\nreturn f"{len([c for c in \'abcdefghijkl\'])}" + x[:0]', NOT_DEPEND),
    ("arith", TAKE_AWAY, "folded: digits as escapes in an instruction",
     'x = await self.custom(input=self.problem, instruction="The answer is \\x31\\x32.")\nreturn x', "holds a number"),
    ("arith", TAKE_AWAY, "folded: digits as named escapes, joined",
     SOLVE + '\nhint = "\\N{DIGIT ONE}" + "\\N{DIGIT TWO}"\ny = await self.review(problem=self.problem, solution=hint)'
     '\nreturn y', "holds a number"),
    # numbers in words
    ("gsm8k", TAKE_AWAY, "words: the issue's instruction",
     'x = await self.custom(input=self.problem, instruction="Compute twenty-two minus ten.")\nreturn x',
     "the number 22 in words"),
    ("arith", TAKE_AWAY, "words: a dozen",
     'x = await self.custom(input=self.problem, instruction="Reply with a dozen.")\nreturn x', "number 12 in words"),
    ("arith", TAKE_AWAY, "words: small numbers in arithmetic",
     'x = await self.custom(input=self.problem, instruction="Say what three times four is.")\nreturn x',
     "arithmetic or an answer in words"),
    ("arith", TAKE_AWAY, "words: a small answer stated",
     'x = await self.custom(input=self.problem, instruction="The answer is seven.")\nreturn x',
     "arithmetic or an answer in words"),
    ("math", TAKE_AWAY, "words: spelled across a concatenation",
     'x = await self.custom(input=self.problem, instruction="Reply " + "twen" + "ty-two.")\nreturn x',
     "the number 22 in words"),
    # digits of other scripts
    ("arith", TAKE_AWAY, "script: Arabic-Indic digits",
     'x = await self.custom(input=self.problem, instruction="Reply \u0661\u0662.")\nreturn x', "holds a number"),
    ("gsm8k", TAKE_AWAY, "script: fullwidth digits",
     'x = await self.custom(input=self.problem, instruction="Reply \uff11\uff12.")\nreturn x', "holds a number"),
    ("math", TAKE_AWAY, "script: a Roman numeral sign",
     'x = await self.custom(input=self.problem, instruction="Reply \u216b.")\nreturn x', "holds a number"),
    ("arith", TAKE_AWAY, "script: Devanagari digits returned",
     SOLVE + '\nif x:\n    return "\u0967\u0968"\nreturn x', "holds a number"),
    # a dependence that cannot change the answer
    ("arith", TAKE_AWAY, "ineffective: times False",
     SOLVE + '\nreturn "seven" + x * False', NOT_DEPEND),
    ("arith", TAKE_AWAY, "ineffective: both arms the same constant",
     SOLVE + '\nif "yes" in x:\n    return "seven"\nelse:\n    return "seven"', NOT_DEPEND),
    ("arith", TAKE_AWAY, "ineffective: x - x",
     SOLVE + '\nreturn str(len(x) - len(x) + len("aaaaaaa"))', NOT_DEPEND),
    ("gsm8k", TAKE_AWAY, "ineffective: an exception always taken",
     SOLVE + '\ntry:\n    int(x[:0])\nexcept ValueError:\n    return "seven"\nreturn x', "a number"),
    ("arith", TAKE_AWAY, "dynamic: a count that never moves, plus a constant the folder cannot see",
     SOLVE + '\nseven = (lambda s: len(s))("aaaaaaa")\nreturn str(x.count("qqq") + seven)', NO_MOVE),
    ("arith", TAKE_AWAY, "dynamic: the constant only when the reply looks like English",
     SOLVE + '\nif "the" in x.lower():\n    return str(x.count("qqq") + (lambda s: len(s))("aaaaaaa"))\nreturn x',
     "stays the same"),
    # QA
    ("hotpotqa", MAGAZINE, "QA: the question quoted with other case and punctuation",
     'a = await self.answer_generate(input="WHICH magazine -- was STARTED first: Arthur\'s, MAGAZINE")\nreturn a',
     "quotes 6 or more words"),
    ("hotpotqa", MAGAZINE, "QA: the question quoted across a concatenation",
     'a = await self.answer_generate(input="Which magazine was " + "started first, Arthur\'s Magazine?")\nreturn a',
     "quotes 6 or more words"),
    ("hotpotqa", MAGAZINE, "QA: a constant answer behind an empty slice",
     ANSWER + "\nreturn \"Arthur's Magazine\" + a[:0]", NOT_DEPEND),
    ("hotpotqa", MAGAZINE, "QA: a constant answer when the reply looks like English",
     ANSWER + "\nif \"the\" in a.lower():\n    return \"The Paris Review\"\nreturn a", "an answer of its own"),
    ("hotpotqa", MAGAZINE, "QA: the reply replaced by a constant",
     'a = await self.custom(input=self.problem, instruction="Answer in a few words.")\nreturn a.replace(a, "France")',
     NO_MOVE),
    ("drop", DROP_Q, "QA: a number in an instruction",
     'a = await self.custom(input=self.problem, instruction="Answer 24.")\nreturn a', "the number 24"),
    ("drop", DROP_Q, "QA: a number in words",
     'a = await self.custom(input=self.problem, instruction="Answer twenty-four.")\nreturn a', "the number 24"),
    ("drop", DROP_Q, "QA: a constant the folder cannot see",
     ANSWER + '\nif not a:\n    return (lambda s: s)("the home team")\nreturn a', "computed without the operators"),
    # code
    ("humaneval", ADD, "code: another case and spacing",
     CODE.replace("Write the function.", "DEF  add(a,b):  RETURN a+b") + "\nreturn s", "carries code"),
    ("humaneval", ADD, "code: split across a concatenation",
     CODE.replace('"Write the function."', '"d" + "ef add(a, b):\\n    return a + b"') + "\nreturn s", "carries code"),
    ("humaneval", ADD, "code: a zero-width space inside the keyword",
     CODE.replace("Write the function.", "de\u200bf add(a, b): return a + b") + "\nreturn s", "carries code"),
    ("mbpp", MBPP_ADD, "code: a body-only hint",
     CODE.replace("Write the function.", "Hint: return sorted(set(a) & set(b))") + "\nreturn s", "carries code"),
    ("mbpp", MBPP_ADD, "code: a constant solution behind an empty slice",
     CODE + '\nreturn "def add(a, b):\\n    return a + b" + s[:0]', NOT_DEPEND),
    ("humaneval", ADD, "code: the docstring quoted",
     CODE.replace("Write the function.", "You must return the sum of a and b!") + "\nreturn s", "quotes 6 or more"),
    ("mbpp", MBPP_ADD, "code: the problem quoted in upper case",
     CODE.replace("Write the function.", "WRITE A FUNCTION TO RETURN THE SUM") + "\nreturn s", "quotes 6 or more"),
    ("mbpp", MBPP_ADD, "code: a call inside prose",
     CODE.replace("Write the function.", "Use sorted(set(a) | set(b)) here.") + "\nreturn s", "carries code"),
    ("hotpotqa", MAGAZINE, "QA: a hint naming one of the problem's names",
     'a = await self.answer_generate(input=self.problem + " (Hint: ARTHUR\'S magazine.)")\nreturn a', "names 'arthur s"),
    ("arith", TAKE_AWAY, "words: a small answer asked for",
     'x = await self.custom(input=self.problem, instruction="Reply with seven.")\nreturn x',
     "arithmetic or an answer in words"),
]


@pytest.fixture(scope="module")
def red_team_verdicts() -> list[wf.Check]:
    return validate_all([(TASKS[t], workflow(body), q) for t, q, _, body, _ in RED_TEAM])


@pytest.mark.parametrize("i", range(len(RED_TEAM)), ids=[c[2] for c in RED_TEAM])
def test_every_red_team_workflow_is_rejected_with_its_reason(i, red_team_verdicts):
    task, _, _, body, reason = RED_TEAM[i]
    c = red_team_verdicts[i]
    assert not c.ok, (task, body)
    assert c.reason.startswith("problem-specific") and reason in c.reason, c.reason


def test_the_red_team_covers_every_class_and_family():
    families = {TASKS[t].family for t, *_ in RED_TEAM}
    classes = {name.split(":")[0] for _, _, name, _, _ in RED_TEAM}
    assert len(RED_TEAM) >= 20 and families == {"math", "qa", "code"}
    assert {"folded", "words", "script", "ineffective", "dynamic", "QA", "code"} <= classes


# ---- the honest workflows pass -------------------------------------------------------------------

def test_every_tasks_examples_pass():
    items = [(task, source, question) for task in TASKS.values() for question, source in task.examples]
    checks = validate_all(items)
    failed = [(t.name, s, c.reason) for (t, s, _), c in zip(items, checks) if not c.ok]
    assert not failed


def honest_workflows() -> list[dict]:
    return [json.loads(line) for line in HONEST.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_workflows_a_real_run_generated_pass():
    """Every distinct workflow that real learning runs generated and the earlier rules accepted
    (tests/fixtures/honest_workflows.jsonl, written by benchmarks/validation_audit.py --fixture from
    ten arith runs of SmolLM2-135M: 2309 accepted attempts, 930 of them solved): none is rejected
    now, the solved ones included. Most of them are the task's few-shot examples, copied; one is not."""
    records = honest_workflows()
    examples = {source for task in TASKS.values() for _, source in task.examples}
    assert len(records) >= 6 and sum(r["solved"] for r in records) >= 5
    assert [r for r in records if r["source"] not in examples]
    checks = validate_all([(TASKS[r["task"]], r["source"], r["question"]) for r in records])
    rejected = [(r["source"], c.reason) for r, c in zip(records, checks) if not c.ok]
    assert not rejected


def test_the_audit_counts_what_the_new_rules_reject(tmp_path):
    """benchmarks/validation_audit.py on a run folder holding an honest workflow, solved, and one
    that the earlier rules accepted but the new ones reject (the issue's): one false rejection
    counted out of two, none of the solved."""
    import importlib.util

    from scoreflow import config as config_mod

    spec = importlib.util.spec_from_file_location("validation_audit", HONEST.parents[2] / "benchmarks" /
                                                  "validation_audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    audit = module.audit

    honest = TASKS["arith"].examples[4][1]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(config_mod.to_toml(config_mod.build({"run": {"task": "arith"}})))
    rows = [{"iteration": 1, "problem": 0, "problem_id": "arith-validate-0", "slot": slot, "attempt": 0,
             "valid": True, "reason": "", "source": source} for slot, source in enumerate((honest, ISSUE_WORKFLOW))]
    (run / "workflows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "executions.jsonl").write_text(json.dumps({"iteration": 1, "problem": 0, "slot": 0, "run": 0,
                                                      "status": "ok", "score": 1.0}) + "\n")
    out = audit([run], fixture=tmp_path / "fixture.jsonl")
    assert out["accepted_before"] == {"attempts": 2, "distinct": 2, "solved_attempts": 1, "solved_distinct": 1}
    assert out["rejected_now"] == {"attempts": 1, "distinct": 1, "solved_attempts": 0, "solved_distinct": 0}
    assert list(out["reasons"]) and all(r.startswith("problem-specific") for r in out["reasons"])
    assert len((tmp_path / "fixture.jsonl").read_text().splitlines()) == 2


# ---- the parts, one by one -----------------------------------------------------------------------

def test_perturbation_keeps_the_shape_and_changes_every_reply():
    assert perturb("Answer: 12 apples", 0, frozenset({"answer"})) == "Answer: 27 dssohv"
    assert perturb("Answer: 12 apples", 1) == "Lydhpc: 43 laawpd"
    assert perturb("2 3", 0, numbers={"2": "4", "3": "9"}) == "4 9"
    for text in ("", "...", "yes", "7"):
        assert perturb(text, 0, frozenset({"yes"})) != text and perturb(text, 1) != text


def test_the_twin_problem_carries_a_procedural_answer_through():
    """On arith the perturbed runs read the twin problem, and the toy's numbers in the replies
    become the twin's: the few-shot example of two-step problems answers the twin's known answer."""
    task = TASKS["arith"]
    source = task.examples[4][1]
    runner = Runner(task, Plausible(), Sandbox())

    async def go():
        calls: list = []
        out = await runner.run(source, task.toy, extract=False, score=False, record=calls)
        again = await perturbed_answers(runner.sandbox, source, task.twin.attributes(), sorted(runner.operators), calls,
                                        spelled_words(wf.literal_strings(source)), twin_numbers(task.toy, task.twin))
        return out.output, again

    answer, perturbed = asyncio.run(go())
    assert answer == str(task.toy.answer) and perturbed == [str(task.twin.answer)] * 2, (answer, perturbed)


def test_numbers_and_code_are_read_however_spelled():
    from scoreflow.execute import spelling

    def values(text: str) -> list[int]:
        return [p.value for p in spelling.number_phrases(text)[1]]

    assert values("twenty-two minus ten") == [22, 10]
    assert values("two hundred and five, a dozen, the twelfth") == [205, 12, 12]
    assert values("Solve it step by step, one per line.") == [1]
    assert spelling.numerals("\u0661\u0662 \uff11\uff12 \u216b \u00bd") == [12, 12, 12, 0.5]
    assert spelling.arithmetic("three times four") and spelling.arithmetic("the sum of 3 and 4")
    assert not spelling.arithmetic("one by one, in two or three steps")
    assert spelling.stated_number("The answer is seven.") and not spelling.stated_number("The answer is one number.")
    assert spelling.stated_number("Reply with seven.") and not spelling.stated_number("Reply with one word.")
    assert spelling.names("Who was born first, Steven Spielberg or George Lucas?") == {("steven", "spielberg"),
                                                                                       ("george", "lucas")}
    assert spelling.words("WHICH Magazine--was\tstarted?") == ["which", "magazine", "was", "started"]
    for code in ("def add(a, b): return a + b", "DEF ADD(A,B): RETURN A+B", "Hint: return sorted(set(a) & set(b))",
                 "use `xs[::-1]` here", "import math", "Use sorted(set(a) & set(b)) here."):
        assert spelling.carries_code(code), code
    for prose in ("Do not import anything: use only builtins. Return the sum (an int).", "Write self-contained code.",
                  "Answer in one word (yes/no).", "Return the number(s) found.",
                  "Consider edge cases such as empty lists first, then write the function.", "Return True if sorted"):
        assert not spelling.carries_code(prose), prose


def test_folding_reads_constants_however_spelled():
    def folded(expr: str) -> list:
        found = analyse(workflow(f"x = await self.custom(input=self.problem, instruction='a')\nreturn {expr} + x"),
                        wf.ATTRIBUTES_OF_SELF)
        return [v for _, v in found.folded]

    assert 12 in folded('len("abcdefghijkl")')
    assert 12 in folded("ord('\\x0c')")
    assert "12" in folded("chr(ord('0') + True) + chr(ord('0') + True + True)")
    assert 15 in folded("sum(i for i in range(len('aaaaaa')))")
    assert "twelve" in folded("'tw' 'el' + 've'[::1]")


def test_a_dependence_that_cannot_change_the_value_does_not_count():
    def depends(body: str) -> bool:
        return analyse(workflow("x = await self.custom(input=self.problem, instruction='a')\n" + body),
                       wf.ATTRIBUTES_OF_SELF).depends()

    assert not depends("return 'a' + x[:0]")
    assert not depends("return 'a' + x[3:1]")
    assert not depends("return str(len(x) * False)")
    assert not depends("return 'a' if x else 'a'")
    assert not depends("y = x\ny = 'b'\nreturn y")
    assert depends("return 'yes' if 'yes' in x else 'no'")  # a decision on the output is a dependence
    assert depends("if not x:\n    return 'unknown'\nreturn x")
    assert depends("xs = []\nys = xs\nys.append(x)\nreturn xs[0]")  # through an alias
    assert depends("t = ''\nfor c in x:\n    t += c\nreturn t")
    assert depends("try:\n    return str(int(x))\nexcept ValueError:\n    return x")


# ---- no leak into the workflow (AFlow issue 41: its Test operator could reach the hidden tests) ----

GOLD = "GOLDSENTINEL7731"
PROBE = '''
    import os
    seen = ["ENV " + repr(sorted(os.environ.items())), "CWD " + os.getcwd()]
    for root in (os.getcwd(), os.path.expanduser("~"), "/tmp", DATA):
        try:
            os.listdir(root)
            for folder, _, files in os.walk(root):
                for f in files:
                    p = os.path.join(folder, f)
                    try:
                        with open(p, errors="replace") as fh:
                            seen.append(p + " " + fh.read(4000))
                    except Exception as e:
                        seen.append(p + " " + type(e).__name__)
        except Exception as e:
            seen.append(root + " " + type(e).__name__)
    print("\\n".join(seen))
    return "\\n".join(seen)
'''


class Probe(Plausible):
    """Answers the Programmer with a program, and code tasks with a solution, that print everything
    the sandbox lets them see: the environment and every file they can open, the data folder included."""

    def __init__(self, data: Path) -> None:
        super().__init__()
        self.body = PROBE.replace("DATA", repr(str(data)))

    def reply(self, prompt: str) -> str:
        if "must be named `" in prompt or "Fix it so that the function" in prompt:
            name = re.search(r"`(\w+)`", prompt).group(1)
            return f"```python\ndef {name}(*args, **kwargs):{self.body}```"
        if "solve()" in prompt:
            return f"```python\ndef solve():{self.body}```"
        return super().reply(prompt)


class Recording(Sandbox):
    """Keeps what every run was given (its header) and what it printed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    async def _run(self, header, handler, timeout_s):
        self.seen.append(json.dumps(header))
        result = await super()._run(header, handler, timeout_s)
        self.seen.append(f"{result.stdout}\n{result.output}\n{result.error}")
        return result


def _asserts(test: str, entry: str) -> set[str]:
    return {re.sub(r"\s+", "", ln.strip()).replace("candidate(", f"{entry}(") for ln in test.splitlines()
            if ln.strip().startswith("assert")}


def _with_gold(problem: Problem) -> Problem:
    """The problem with a marked gold answer, and marks in every field that holds it or a solution."""
    extra = dict(problem.extra)
    for key in ("solution", "canonical_solution", "code"):
        if key in extra:
            extra[key] = f"{extra[key]}\n# {GOLD}"
    answer = f"{problem.answer}\n# {GOLD}\n" if "entry_point" in extra else \
        [GOLD] if isinstance(problem.answer, list) else GOLD
    return Problem(problem.id, problem.question, problem.inputs, answer, extra)


def test_no_gold_answer_or_hidden_test_reaches_a_running_workflow(data_dir):
    """Every task's example workflows, run on real problems whose gold answers (and solutions) carry a
    mark: the mark and every hidden assert that is not also a public test are absent from the
    workflow's context, from every executor request, and from everything the sandbox gave or showed
    its runs (a probe program and a probe solution print the environment and every file they open)."""
    seen: list[str] = []
    hidden_only: list[str] = []
    checked = 0
    for task in [TASKS["arith"], *(type(t)(data_dir) for t in TASKS.values() if t.name != "arith")]:
        problems = [_with_gold(p) for p in task.problems("validate")[:2]]
        executor, sandbox = Probe(data_dir), Recording()
        runner = Runner(task, executor, sandbox)

        async def go():
            return await asyncio.gather(*(runner.run(source, p, score=False) for p in problems
                                          for _, source in task.examples))

        runs = asyncio.run(go())
        assert sum(r.status == "ok" for r in runs) > len(runs) // 2, [(r.status, r.reason) for r in runs]
        for p in problems:
            assert set(p.attributes()) <= set(wf.ATTRIBUTES_OF_SELF)
            seen.append(json.dumps(p.attributes()))
            if "entry_point" in p.extra:
                entry = str(p.extra["entry_point"])
                public = _asserts("\n".join(p.extra["public_tests"]), entry)
                hidden_only += sorted(_asserts(str(p.answer), entry) - public)
        seen += executor.requests + sandbox.seen + [r.output or "" for r in runs]
        checked += len(runs)
    everything = "\n".join(seen)
    assert GOLD not in everything
    flat = re.sub(r"\s+", "", everything)
    assert len(hidden_only) >= 10 and not [a for a in hidden_only if a in flat]
    assert checked >= 20 and "ENV [" in everything  # the probes ran
    assert f"{data_dir} PermissionError" in everything  # and the data folder was closed to them
    control = Probe(data_dir)  # the check can fail: a mark in what the workflow may see is found
    asyncio.run(Runner(TASKS["arith"], control, Sandbox()).run(TASKS["arith"].template, Problem(
        "c", "q", f"What is {GOLD}?", 1), score=False))
    assert GOLD in "\n".join(control.requests)


# ---- through the loop: the reason is recorded in workflows.jsonl ----------------------------------

ISSUE_WORKFLOW = workflow(RED_TEAM[0][3])


class Cheating(FakeBackend):
    """The scripted generator, writing the issue's workflow and three more cheats beside an honest one."""

    SOURCES = (TASKS["arith"].examples[4][1], ISSUE_WORKFLOW, workflow(RED_TEAM[9][3]), workflow(RED_TEAM[13][3]),
               workflow(RED_TEAM[21][3]))

    def generate(self, prompts, params, *, adapter=True):
        if not adapter:
            return [Completion(Plausible.reply(m[-1]["content"]), 5, True) for m in prompts]
        out = []
        for _ in prompts:
            out.append(Completion(f"<graph>\n{self.SOURCES[self.generated % len(self.SOURCES)]}\n</graph>", 40, True))
            self.generated += 1
        return out


def test_the_loop_records_each_rejection_with_its_reason(tmp_path, monkeypatch):
    from scoreflow.cli import main as cli

    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: Cheating())
    run = tmp_path / "run"
    assert cli.main(["optimize", "--task", "arith", "--run-dir", str(run), "--iterations", "1", "--problems", "1",
                     "-k", "5", "--no-dashboard", "--set", "executor.runs=1", "--set", "generator.max_attempts=1",
                     "--set", "run.compare=false"]) == 0
    attempts = {a["source"]: a for a in map(json.loads, (run / "workflows.jsonl").read_text().splitlines())}
    assert attempts[Cheating.SOURCES[0]]["valid"]
    for source, i in zip(Cheating.SOURCES[1:], (0, 9, 13, 21)):
        a = attempts[source]
        assert not a["valid"] and RED_TEAM[i][4] in a["reason"] and a["reason"].startswith("problem-specific"), a


# ---- --dry-run offline ----------------------------------------------------------------------------

def test_a_dry_run_prints_the_price_then_says_the_server_cannot_be_reached(tmp_path, monkeypatch, capsys):
    from scoreflow.cli import main as cli

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rc = cli.main(["optimize", "--dry-run", "--task", "arith", "--run-dir", str(tmp_path / "run"),
                   "--executor", "openai", "--executor-model", "gpt-4o-mini", "--base-url", "http://127.0.0.1:9/v1"])
    out, err = capsys.readouterr()
    assert rc != 0
    assert "built-in price table (gpt-4o-mini)" in out and re.search(r"cost at most \$\d+\.\d{4}", out), out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot be reached" in lines[0] and "127.0.0.1:9" in lines[0], err
    assert not (tmp_path / "run").exists()
