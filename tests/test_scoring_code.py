"""The HumanEval/MBPP scorer: sweeps of the reference solutions through the real sandbox
(concurrently; a fixed third and every known exception, all with SCOREFLOW_FULL_SWEEPS=1), corrupted
copies, sanitising, and hostile candidates."""

from __future__ import annotations

import asyncio
import os
import resource
import time

import pytest

from helpers import sweep_sample
from scoreflow.sandbox.parent import Sandbox
from scoreflow.tasks import load
from scoreflow.tasks.code_eval import (LIMITS, PRELOADED, CodeSpec, run_hidden_tests, run_public_tests, sanitize,
                                       with_preload)
from scoreflow.tasks.code_tasks import HumanEvalTask, MBPPTask

CONCURRENCY = 4
# MBPP references that cannot pass, each for a known reason:
MBPP_EXPLAINED_FAILURES = {
    # AFlow's copy of the reference `code` is broken: its helper `adjac` was rewritten to take one
    # argument but still reads the undefined names `ele` and `sub`.
    "mbpp-630",
    # The sandbox's solution harness only accepts plain builtin return values (so that an object
    # with an always-true __eq__ cannot pass); these references return a collections.Counter (88)
    # or a re.Match whose truthiness the tests assert (737, 787, 794).
    "mbpp-88", "mbpp-737", "mbpp-787", "mbpp-794",
}


async def _scores(task, pairs) -> list[float]:
    sandbox = Sandbox(LIMITS, CONCURRENCY)
    return list(await asyncio.gather(*(task.ascore(p, out, sandbox) for p, out in pairs)))


def test_humaneval_canonical_solutions_pass_and_corrupted_fail(data_dir):
    task = load("humaneval", data_dir)
    everything = task.problems("validate") + task.problems("test")
    assert len(everything) == 164
    problems = sweep_sample(everything, set())
    n = len(problems)
    good = [(p, p.extra["prompt"] + p.extra["canonical_solution"]) for p in problems]
    bad = [(p, p.extra["prompt"] + "    return None\n") for p in problems]
    scores = asyncio.run(_scores(task, good + bad))
    passed = [p.id for (p, _), s in zip(good, scores[:n]) if s == 1.0]
    wrongly_passed = [p.id for (p, _), s in zip(bad, scores[n:]) if s != 0.0]
    assert len(passed) == n, sorted({p.id for p in problems} - set(passed))
    assert wrongly_passed == []


def test_mbpp_reference_code_passes(data_dir):
    task = load("mbpp", data_dir)
    everything = task.problems("validate") + task.problems("test")
    assert len(everything) == 427
    problems = sweep_sample(everything, MBPP_EXPLAINED_FAILURES)
    scores = asyncio.run(_scores(task, [(p, p.extra["code"]) for p in problems]))
    failed = {p.id for p, s in zip(problems, scores) if s != 1.0}
    assert failed == MBPP_EXPLAINED_FAILURES
    assert sum(scores) == len(problems) - len(MBPP_EXPLAINED_FAILURES)


def test_mbpp_wrong_code_fails(data_dir):
    task = load("mbpp", data_dir)
    problems = task.problems("validate")[:20]
    wrong = [(p, f"def {p.extra['entry_point']}(*args, **kwargs):\n    return 'wrong'\n") for p in problems]
    assert asyncio.run(_scores(task, wrong)) == [0.0] * 20


def test_sanitize_keeps_what_the_entry_point_needs():
    reply = """Here is my solution:

```python
import math
from collections import Counter

LIMIT = 10

def helper(x):
    return math.sqrt(x) + LIMIT

def unused():
    return 1

def f(x):
    return helper(x)

print(f(4))
assert f(4) == 12
```
Hope it helps!"""
    code = sanitize(reply, "f")
    assert "def helper" in code and "LIMIT = 10" in code and "import math" in code
    assert "unused" not in code and "print(" not in code and "assert" not in code
    assert sanitize("no code at all", "f") is None
    # prose without a code fence around the function
    assert "def f" in sanitize("Sure!\ndef f(x):\n    return x\nThis returns x.", "f")


def test_body_only_candidates_and_prompt_helpers():
    prompt = 'from typing import List\n\ndef is_even(n):\n    return n % 2 == 0\n\ndef evens(xs: List[int]) -> List[int]:\n    """Keep the even numbers."""\n'
    body = "    return [x for x in xs if is_even(x)]\n"
    code = sanitize(body, "evens", prompt)
    assert "def is_even" in code and "from typing import List" in code
    full = "def evens(xs: List[int]) -> List[int]:\n    return [x for x in xs if is_even(x)]\n"
    code = sanitize(full, "evens", prompt)  # the candidate calls a helper only the prompt defines
    assert "def is_even" in code


HOSTILE = {
    "loops forever": "def add(a, b):\n    while True:\n        pass\n",
    "calls os.system": "import os\n\ndef add(a, b):\n    os.system('touch {marker}')\n    return a + b\n",
    "allocates 10 GB": "def add(a, b):\n    block = bytearray(10 * 1024 ** 3)\n    return a + b + len(block) * 0\n",
    "forks": "import os\n\ndef add(a, b):\n    os.fork()\n    return a + b\n",
    "spawns a process": "import subprocess\n\ndef add(a, b):\n    subprocess.run(['true'])\n    return a + b\n",
    "exits the interpreter": "import sys\n\ndef add(a, b):\n    sys.exit(0)\n",
    "returns an always-equal object": ("class Anything:\n    def __eq__(self, other):\n        return True\n\n"
                                       "def add(a, b):\n    return Anything()\n"),
    "exits the process early": "import os\n\ndef add(a, b):\n    os._exit(0)\n",
}


def test_hostile_candidates_are_contained(tmp_path):
    task = load("humaneval")
    toy = task.toy
    marker = tmp_path / "escaped"
    spec = task.spec(toy)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    async def run_all():
        sandbox = Sandbox(LIMITS, CONCURRENCY)
        jobs = [run_hidden_tests(spec, code.replace("{marker}", str(marker)), sandbox, timeout_s=3)
                for code in HOSTILE.values()]
        return await asyncio.gather(*jobs)

    t0 = time.monotonic()
    scores = asyncio.run(run_all())
    assert dict(zip(HOSTILE, scores)) == {name: 0.0 for name in HOSTILE}
    assert time.monotonic() - t0 < 60
    assert not marker.exists()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200_000  # KiB: no 10 GB here
    # the scoring process still works, synchronously too
    assert task.score(toy, "def add(a, b):\n    return a + b\n") == 1.0
    assert os.getpid() > 0


def test_broken_candidates_score_zero():
    task = load("humaneval")
    toy = task.toy
    for output in ("", "def add(a, b) return a+b", "def other(a, b):\n    return a + b\n", "I cannot do that."):
        assert task.score(toy, output) == 0.0, output
    spec = CodeSpec("add", "def check(candidate):\n    assert candidate(1, 2) == 3\n")
    assert asyncio.run(run_hidden_tests(spec, "```python\ndef add(a, b):\n    return a + b\n```")) == 1.0


# ---- what the reference harness pre-loads ------------------------------------------------------

def test_preloaded_names_match_the_reference_harness():
    # ScoreFlow's benchmark/humaneval.py and benchmark/mbpp.py: the `global_dict` of check_solution
    assert set(PRELOADED) == {"math", "re", "hashlib", "List", "Dict", "Tuple", "Optional", "Any"}
    ns: dict = {}
    exec(with_preload(""), ns)
    assert set(PRELOADED) <= set(ns)


def test_math_without_import_passes_by_default_and_fails_with_the_option_off(data_dir):
    """MBPP/742 (area of a tetrahedron) with the reference's `import math` left out: the reference
    harness pre-loads math, so this passes by default, and fails with preload_imports off."""
    on, off = MBPPTask(data_dir), MBPPTask(data_dir, preload_imports=False)
    assert on.preload_imports and not off.preload_imports
    problem = next(p for p in on.problems("validate") + on.problems("test") if p.id == "mbpp-742")
    assert problem.extra["code"].startswith("import math\n")
    unimported = "```python\ndef area_tetrahedron(side):\n    return math.sqrt(3) * (side * side)\n```"
    imported = "import math\n\n" + unimported.strip("`").removeprefix("python\n")
    assert on.score(problem, unimported) == 1.0
    assert off.score(problem, unimported) == 0.0
    assert on.score(problem, imported) == 1.0 and off.score(problem, imported) == 1.0
    assert asyncio.run(on.ascore(problem, unimported)) == 1.0
    assert asyncio.run(off.ascore(problem, unimported)) == 0.0


def test_preload_covers_re_hashlib_and_typing_names():
    on, off = HumanEvalTask(), HumanEvalTask(preload_imports=False)
    toy = on.toy
    uses = {
        "re": "def add(a, b):\n    return int(re.sub('x', '', str(a))) + b\n",
        "hashlib": "def add(a, b):\n    assert hashlib.md5(b'').hexdigest()\n    return a + b\n",
        "typing": "def add(a: Any, b: Optional[int]) -> Dict[str, List[Tuple[int]]]:\n    return a + b\n",
    }
    for name, code in uses.items():
        assert on.score(toy, code) == 1.0, name
        assert off.score(toy, code) == 0.0, name
    # the candidate's own definitions win over the pre-loaded names, as in the reference
    own = "def add(a, b):\n    return math(a, b)\n\ndef math(a, b):\n    return a + b\n"
    assert on.score(toy, own) == 1.0
    # `from __future__` imports still come first
    future = "from __future__ import annotations\n\ndef add(a: List[int], b) -> int:\n    return a + b\n"
    assert on.score(toy, future) == 1.0
    assert off.score(toy, future) == 1.0  # annotations are not evaluated


def test_public_tests_follow_the_preload_option():
    code = "def area(r):\n    return math.pi * r * r\n"
    tests = ["assert math.isclose(candidate(1), 3.141592653589793)"]  # MBPP's public tests call math unimported

    async def run(preload: bool) -> list[str]:
        return await run_public_tests(Sandbox(LIMITS, 1), code, "area", tests, preload=preload)

    assert asyncio.run(run(True)) == []
    failures = asyncio.run(run(False))
    assert len(failures) == 1 and "NameError" in failures[0] and "math" in failures[0]
    fixed = "import math\n\n" + code
    assert asyncio.run(run_public_tests(Sandbox(LIMITS, 1), fixed, "area", tests, preload=False)) == []
