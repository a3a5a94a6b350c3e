"""`jsonl`: a user's own JSON Lines file, described by the `[task]` config section (no code edits).

`--data FILE` holds every record; the first of every five records (by line) forms the validate
split and the rest the test split (AFlow's 1:4 ratio). A folder holding `validate.jsonl` and
`test.jsonl` (or `<name>_validate.jsonl` and `<name>_test.jsonl`) gives the splits explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoreflow.errors import UserError
from scoreflow.tasks.base import SPLITS, Problem, Task, read_jsonl
from scoreflow.tasks.code_eval import CodeSpec, run_hidden_tests, run_hidden_tests_sync
from scoreflow.tasks.families import (EXTRACT_BOXED, EXTRACT_NUMBER, EXTRACT_SHORT, OPERATORS, TEMPLATES)
from scoreflow.tasks.math_equiv import last_boxed, math_score
from scoreflow.tasks.scoring import exact_score, last_number, max_f1, number_score

SCORERS = ("number", "exact", "f1", "boxed", "python-tests")
FAMILIES = ("math", "qa", "code")
THRESHOLDS = {"math": 0.75, "qa": 0.75, "code": None}
TOYS = {
    "math": Problem("jsonl-toy", "What is 2 + 3?", "What is 2 + 3?", "5"),
    "qa": Problem("jsonl-toy", "What colour is the sky on a clear day?",
                  "The sky on a clear day is blue.\nQuestion: What colour is the sky on a clear day?", "blue"),
    "code": Problem("jsonl-toy", "Write a function add(a, b) that returns a + b.",
                    "Write a function add(a, b) that returns a + b.", "assert add(2, 3) == 5",
                    {"entry_point": "add", "public_tests": ["assert candidate(2, 3) == 5"]}),
}


@dataclass
class JsonlOptions:
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str = "id"
    scorer: str = "exact"
    family: str = "qa"
    description: str = ""
    preload_imports: bool = True

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> "JsonlOptions":
        options = dict(options or {})
        unknown = set(options) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"[task]: unknown key(s) {', '.join(sorted(unknown))}")
        opts = cls(**{k: str(v) for k, v in options.items()})
        if opts.scorer not in SCORERS:
            raise UserError(f"[task] scorer must be one of {', '.join(SCORERS)}, not {opts.scorer!r}")
        if opts.family not in FAMILIES:
            raise UserError(f"[task] family must be one of {', '.join(FAMILIES)}, not {opts.family!r}")
        if (opts.scorer == "python-tests") != (opts.family == "code"):
            raise UserError("[task] scorer python-tests goes with family code, and family code with python-tests")
        return opts


def _entry_point(rec: dict, question: str) -> str | None:
    if rec.get("entry_point"):
        return str(rec["entry_point"])
    m = re.search(r"def\s+([A-Za-z_]\w*)\s*\(", question)
    return m.group(1) if m else None


def _tests_text(answer: Any) -> str:
    return "\n".join(str(t) for t in answer) if isinstance(answer, list) else str(answer)


def _examples(family: str) -> tuple[tuple[str, str], ...]:
    """Few-shot workflows of a built-in task of the same family: their operators are the same."""
    if family == "math":
        from scoreflow.tasks.gsm8k import EXAMPLES
    elif family == "qa":
        from scoreflow.tasks.qa_tasks import HOTPOT_EXAMPLES as EXAMPLES
    else:
        from scoreflow.tasks.code_tasks import MBPP_EXAMPLES as EXAMPLES
    return EXAMPLES


class JsonlTask(Task):
    def __init__(self, path: str | Path | None, options: dict[str, Any] | None = None):
        opts = JsonlOptions.from_dict(options)
        extract = {"number": EXTRACT_NUMBER, "boxed": EXTRACT_BOXED}.get(opts.scorer, EXTRACT_SHORT)
        super().__init__(
            name="jsonl",
            family=opts.family,
            description=opts.description or {"math": "maths problems", "qa": "questions to answer",
                                             "code": "Python functions to write"}[opts.family],
            operators=OPERATORS[opts.family],
            template=TEMPLATES[opts.family],
            toy=TOYS[opts.family],
            similarity_threshold=THRESHOLDS[opts.family],
            extract=None if opts.family == "code" else extract,
            examples=_examples(opts.family),
        )
        if path is None:
            raise UserError("task jsonl needs --data FILE (a JSON Lines file of your problems)")
        self.path = Path(path).expanduser()
        self.opts = opts

    def _file(self, split: str) -> tuple[Path, bool]:
        """The file for `split`, and whether it must be divided 1:4 itself."""
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}: use validate or test")
        p = self.path
        if p.is_file():
            m = re.fullmatch(r"(.*?)_?(validate|test)\.jsonl", p.name)
            if m and p.with_name(f"{m.group(1)}{'_' if m.group(1) else ''}{split}.jsonl").is_file():
                return p.with_name(f"{m.group(1)}{'_' if m.group(1) else ''}{split}.jsonl"), False
            return p, True
        if p.is_dir():
            found = sorted(p.glob(f"*{split}.jsonl"))
            if found:
                return found[0], False
            raise UserError(f"no {split}.jsonl (nor *_{split}.jsonl) in {p}")
        raise UserError(f"data path does not exist: {p}")

    def problems(self, split: str) -> list[Problem]:
        f, divide = self._file(split)
        o = self.opts
        out = []
        for n, rec in enumerate(read_jsonl(f), 1):
            if divide and ((n - 1) % 5 == 0) != (split == "validate"):
                continue
            for key in (o.question_field, o.answer_field):
                if key not in rec:
                    raise UserError(f"{f}:{n}: record lacks the field {key!r} (set [task] question_field/answer_field)")
            question = str(rec[o.question_field])
            answer = rec[o.answer_field]
            extra: dict[str, Any] = {}
            if o.scorer == "number":
                answer = last_number(str(answer))
                if answer is None:
                    raise UserError(f"{f}:{n}: answer {rec[o.answer_field]!r} is not a number")
            elif o.scorer == "boxed":
                answer = last_boxed(str(answer)) or str(answer)
            elif o.scorer == "f1":
                answer = [str(a) for a in answer] if isinstance(answer, list) else str(answer).split("|")
            elif o.scorer == "python-tests":
                entry = _entry_point(rec, question)
                if entry is None:
                    raise UserError(f"{f}:{n}: no entry_point field and no `def name(` in the question")
                answer = _tests_text(answer)
                public = rec.get("public_tests")
                extra = {"entry_point": entry, "prompt": question if "def " in question else "",
                         "public_tests": [str(t) for t in public] if isinstance(public, list) else []}
            else:
                answer = str(answer)
            pid = str(rec.get(o.id_field, f"jsonl-{n - 1}"))
            out.append(Problem(pid, question, question, answer, extra))
        if not out:
            raise UserError(f"{f}: no problems for the {split} split")
        return out

    def _spec(self, problem: Problem) -> CodeSpec:
        return CodeSpec(str(problem.extra["entry_point"]), str(problem.answer), str(problem.extra.get("prompt", "")),
                        preload=self.opts.preload_imports)

    def score(self, problem: Problem, output: str) -> float:
        s = self.opts.scorer
        if s == "number":
            return number_score(output, problem.answer)
        if s == "boxed":
            return math_score(output, str(problem.answer))
        if s == "f1":
            return max_f1(output, problem.answer)
        if s == "python-tests":
            return run_hidden_tests_sync(self._spec(problem), output)
        return exact_score(output, str(problem.answer))

    async def ascore(self, problem: Problem, output: str, sandbox=None) -> float:
        if self.opts.scorer == "python-tests":
            return await run_hidden_tests(self._spec(problem), output, sandbox)
        return await super().ascore(problem, output)
