"""The HumanEval/MBPP scorer: sanitise a candidate to the entry point's definitions, then run the
hidden tests with the sandbox's solution harness (the candidate's return values are rebuilt from
plain builtin types, so an always-equal object cannot pass, and only a verdict carrying the run's
nonce counts). The test source is built from the problem alone: no line of the candidate reaches it.
Also the runner of public tests used by the Test operator."""

from __future__ import annotations

import ast
import json
import re
import sys
import warnings
from dataclasses import dataclass

from scoreflow.sandbox.parent import Limits, Sandbox

STDLIB: list[str] = sorted(sys.stdlib_module_names)
FENCED = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
CODE_START = re.compile(r"^(?:def |async def |class |import |from |@)", re.M)
# What the reference harness (ScoreFlow's benchmark/humaneval.py and benchmark/mbpp.py, whose
# `check_solution` execs the candidate and then the tests in one prepared namespace) makes available
# without an import: a candidate that uses `math.sqrt` or `List[int]` unimported passes there.
PRELOADED = ("math", "re", "hashlib", "List", "Dict", "Tuple", "Optional", "Any")
PRELOAD_SOURCE = "import math\nimport re\nimport hashlib\nfrom typing import Any, Dict, List, Optional, Tuple\n"
PRELOAD_IMPORTS = True  # the default of the code tasks' `preload_imports` option
TEST_TIMEOUT_S = 30.0  # MBPP/123's reference takes ~7 s of CPU; a contended machine doubles that
LIMITS = Limits(timeout_s=TEST_TIMEOUT_S, memory_mb=1024, cpu_s=30)


# ---- sanitising ---------------------------------------------------------------------------------

def _parse(code: str) -> ast.Module | None:
    try:
        with warnings.catch_warnings():  # invalid escapes in model code are its business
            warnings.simplefilter("ignore")
            return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _parse_tolerant(code: str) -> ast.Module | None:
    """Parse `code`; failing that, start at its first definition or import and drop trailing lines
    (prose around the code) until it parses."""
    tree = _parse(code)
    if tree is not None:
        return tree
    m = CODE_START.search(code)
    if not m:
        return None
    lines = code[m.start():].splitlines()
    for end in range(len(lines), max(0, len(lines) - 60), -1):
        tree = _parse("\n".join(lines[:end]))
        if tree is not None:
            return tree
    return None


def _defined(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _is_import(node: ast.stmt) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, ast.Try):  # try: import x / except ImportError: ...
        return all(isinstance(n, (ast.Import, ast.ImportFrom, ast.Pass)) for n in node.body)
    return False


def _is_future(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and node.module == "__future__"


def with_preload(code: str) -> str:
    """`code` after PRELOAD_SOURCE, its `from __future__` imports (which must come first) before it."""
    tree = _parse(code)
    if tree is None or not any(_is_future(n) for n in tree.body):
        return PRELOAD_SOURCE + code
    future = [n for n in tree.body if _is_future(n)]
    rest = [n for n in tree.body if not _is_future(n)]
    return ("\n".join(ast.unparse(n) for n in future) + "\n" + PRELOAD_SOURCE
            + ast.unparse(ast.Module(body=rest, type_ignores=[])))


def _used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _needed(nodes: list[ast.stmt], roots: list[str]) -> list[ast.stmt]:
    """The imports, plus the definitions the roots reach, in their original order."""
    defs: dict[str, list[ast.stmt]] = {}
    for node in nodes:
        for name in _defined(node):
            defs.setdefault(name, []).append(node)
    keep: set[int] = set()
    todo = list(roots)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in defs.get(name, []):
            if id(node) not in keep:
                keep.add(id(node))
                todo.extend(_used(node))
    return [n for n in nodes if _is_import(n) or id(n) in keep]


def defines(tree: ast.Module, entry_point: str) -> bool:
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == entry_point
               for n in tree.body)


def code_candidates(text: str) -> list[str]:
    """Fenced code blocks (longest first), then the whole text."""
    blocks = sorted((b for b in FENCED.findall(text or "") if b.strip()), key=len, reverse=True)
    return blocks + [text or ""]


def sanitize(text: str, entry_point: str, prompt: str = "", also: tuple[str, ...] = ()) -> str | None:
    """The candidate reduced to imports and the definitions the entry point needs.

    Helpers and imports from the problem's prompt are added where the candidate lacks them (the
    prompt may define helpers the solution calls, and `from typing import List` for annotations).
    A candidate that only holds a function body is tried after the prompt. None when no candidate
    defines `entry_point`. `also` names further roots, such as the prompt helpers a test calls.
    """
    base = _parse(prompt) if prompt else None
    base_nodes = list(base.body) if base is not None else []
    trees = [_parse_tolerant(c) for c in code_candidates(text)]
    chosen = next((t for t in trees if t is not None and defines(t, entry_point)), None)
    if chosen is None and prompt:
        joined = _parse(prompt.rstrip() + "\n" + (text or "").strip("\n"))
        if joined is None:
            body = "\n".join("    " + ln if ln.strip() else ln for ln in (text or "").strip("\n").splitlines())
            joined = _parse(prompt.rstrip() + "\n" + body)
        if joined is not None and defines(joined, entry_point):
            chosen = joined
    if chosen is None:
        return None
    own = {name for n in chosen.body for name in _defined(n)}
    helpers = [n for n in base_nodes if not _is_import(n) and not (_defined(n) & own) and _defined(n)]
    imports = [n for n in base_nodes if _is_import(n)]
    nodes = imports + helpers + list(chosen.body)
    kept = _needed(nodes, [entry_point, *also])
    kept = [n for n in kept if _is_future(n)] + [n for n in kept if not _is_future(n)]  # they must come first
    try:
        return ast.unparse(ast.Module(body=kept, type_ignores=[]))
    except (ValueError, RecursionError):
        return None


# ---- hidden tests ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CodeSpec:
    """What a code problem needs for scoring: its entry point, hidden tests and prompt."""

    entry_point: str
    test: str  # hidden test code: `def check(candidate)` (HumanEval), `def check()` (MBPP) or asserts
    prompt: str = ""
    test_imports: tuple[str, ...] = ()
    preload: bool = PRELOAD_IMPORTS  # the candidate and its tests get PRELOADED without importing it


def _free_modules(tree: ast.Module | None) -> list[str]:
    """Standard-library modules the tests read attributes of without importing or defining them
    (MBPP's `sys.maxsize`): the reference harness shares the candidate's namespace with the tests,
    where such a module came from the candidate's imports."""
    if tree is None:
        return []
    defined = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(n.name)
        elif isinstance(n, ast.arg):
            defined.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            defined |= {(a.asname or a.name).split(".")[0] for a in n.names}
    read = {n.value.id for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    return sorted(name for name in read - defined if name in sys.stdlib_module_names)


def solution_tests(spec: CodeSpec) -> str:
    """The hidden tests as the sandbox's solution harness runs them: in their own namespace, where the
    harness binds the entry point to the (wrapped) candidate after this source ran. Built from the
    problem alone, never from the candidate: the record's test imports, the pre-loaded names (with
    `preload`), the standard-library modules the tests use without importing, and the prompt helpers
    they call (HumanEval/38 and 50 call the prompt's encoder); MBPP's argument-less `check()` is
    adapted to the harness's `check(candidate)`."""
    tree = _parse(spec.test)
    used = _used(tree) if tree is not None else set()
    parts = list(spec.test_imports)
    if spec.preload:
        parts.append(PRELOAD_SOURCE)
    parts += [f"import {name}" for name in _free_modules(tree)]
    base = _parse(spec.prompt) if spec.prompt else None
    if base is not None:
        nodes = [n for n in base.body if _is_import(n) or (_defined(n) and spec.entry_point not in _defined(n))]
        helpers = _needed(nodes, sorted(used - {spec.entry_point}))
        parts += [ast.unparse(n) for n in helpers]
    parts.append(spec.test)
    if tree is not None and any(isinstance(n, ast.FunctionDef) and n.name == "check" and not n.args.args
                                for n in tree.body):
        parts.append("_check_all = check\n\n\ndef check(candidate):\n    _check_all()\n")
    return "\n\n".join(parts) + "\n"


def prepare(spec: CodeSpec, output: str) -> tuple[str, str] | None:
    """(solution source, test source) for the sandbox, or None when no candidate defines the entry point."""
    tree = _parse(spec.test)
    also = tuple(sorted(_used(tree))) if tree is not None else ()
    code = sanitize(output, spec.entry_point, spec.prompt, also)
    if code is None:
        return None
    if spec.preload:  # before the candidate, so that its own definitions win, as in the reference
        code = with_preload(code)
    return code, solution_tests(spec)


async def run_hidden_tests(spec: CodeSpec, output: str, sandbox: Sandbox | None = None,
                           timeout_s: float = TEST_TIMEOUT_S) -> float:
    job = prepare(spec, output)
    if job is None:
        return 0.0
    sandbox = sandbox or Sandbox(LIMITS, 1)
    run = await sandbox.run_solution(job[0], job[1], spec.entry_point, timeout_s=timeout_s)
    return 1.0 if run.passed else 0.0


def run_hidden_tests_sync(spec: CodeSpec, output: str, timeout_s: float = TEST_TIMEOUT_S) -> float:
    job = prepare(spec, output)
    if job is None:
        return 0.0
    run = Sandbox(LIMITS, 1).run_solution_sync(job[0], job[1], spec.entry_point, timeout_s=timeout_s)
    return 1.0 if run.passed else 0.0


# ---- public tests (the Test operator) ----------------------------------------------------------

MARKER = "@@public-test-results@@"


def clean_public_tests(tests: list[str], entry_point: str) -> list[str]:
    """AFlow's public tests, minus those that do not parse (HumanEval/33's is cut off), with one
    mechanical slip repaired: in some MBPP asserts the outer `set(` call was renamed to
    `candidate(`, as in `candidate(similar_elements(a, b)) == set(...)`."""
    out = []
    for t in tests:
        t = t.strip()
        if entry_point and f"candidate({entry_point}(" in t:
            t = t.replace(f"candidate({entry_point}(", "set(candidate(")
        if _parse(t) is not None:
            out.append(t)
    return out


def _left_side(assertion: str) -> str | None:
    """For `assert X == Y`, the source of X (shown to the model as what the code returned)."""
    tree = _parse(assertion.strip())
    if tree is None or len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    test = tree.body[0].test
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
        return ast.unparse(test.left)
    return None


def public_test_program(code: str, entry_point: str, tests: list[str], preload: bool = PRELOAD_IMPORTS) -> str:
    """The public tests run as one program. The tests run in a namespace of their own, a copy of
    the candidate's with `math` added (MBPP's public tests call math.isclose without importing
    it), so that the candidate sees PRELOADED exactly when `preload` is on, as in scoring."""
    cases = [(t.strip(), _left_side(t)) for t in tests]
    return "\n".join([
        with_preload(code) if preload else code, "",
        "import json as _json",
        "import math as _math",
        f"candidate = {entry_point}",
        f"_cases = {cases!r}",
        "_failures = []",
        "_tg = dict(globals())",
        "_tg.setdefault('math', _math)",
        "for _src, _left in _cases:",
        "    try:",
        "        exec(_src, _tg)",
        "    except AssertionError:",
        "        _got = ''",
        "        if _left is not None:",
        "            try:",
        "                _got = repr(eval(_left, _tg))[:300]",
        "            except Exception as _e:",
        "                _got = type(_e).__name__ + ': ' + str(_e)[:200]",
        "        _failures.append(_src + (' -> got ' + _got if _got else ' -> assertion failed'))",
        "    except Exception as _e:",
        "        _failures.append(_src + ' -> raised ' + type(_e).__name__ + ': ' + str(_e)[:200])",
        f"print({MARKER!r} + _json.dumps(_failures))",
    ])


async def run_public_tests(sandbox: Sandbox, code: str, entry_point: str, tests: list[str],
                           timeout_s: float = 10.0, preload: bool = PRELOAD_IMPORTS) -> list[str]:
    """The failures of `code` on the public tests (an empty list when all pass). Without tests,
    only checks that the code runs and defines the entry point. `preload`: the task's
    `preload_imports` option, so that the Test operator judges imports as the scorer does."""
    run = await sandbox.run_program(public_test_program(code, entry_point, tests, preload), timeout_s=timeout_s,
                                    allow_imports=STDLIB)
    if run.status != "ok":
        return [f"the program failed: {(run.error or run.status)[-500:]}"]
    for line in reversed(run.stdout.splitlines()):
        if line.startswith(MARKER):
            try:
                failures = json.loads(line[len(MARKER):])
            except json.JSONDecodeError:
                break
            return [str(f) for f in failures]
    return ["the test run produced no result"]
