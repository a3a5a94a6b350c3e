"""Question answering over a given text: HotpotQA (distractor paragraphs) and DROP (a passage).

The generator sees the question alone; the workflow sees it with its paragraphs or passage.
"""

from __future__ import annotations

import re
from pathlib import Path

from scoreflow.errors import UserError
from scoreflow.tasks.base import Problem, Task, read_jsonl, require, split_file
from scoreflow.tasks.families import EXTRACT_SHORT, EXTRACT_SPAN, QA_OPERATORS, QA_TEMPLATE
from scoreflow.tasks.scoring import drop_f1, token_f1

HOTPOT_EXAMPLES = (
    ("Which city is the birthplace of the director of the film Jaws?",
     '''async def run_workflow(self):
    facts = await self.custom(input=self.problem, instruction="Quote the sentences from the context that are needed to answer the question.")
    answer = await self.answer_generate(input=self.problem + "\\n\\nRelevant facts:\\n" + facts)
    return answer'''),
    ("Are both Cadillac and Lincoln American car brands?",
     '''async def run_workflow(self):
    answers = []
    for i in range(3):
        answer = await self.answer_generate(input=self.problem)
        answers.append(answer)
    best = await self.sc_ensemble(solutions=answers, problem=self.problem)
    return best'''),
)

DROP_EXAMPLES = (
    ("How many more yards was the longest field goal than the shortest?",
     '''async def run_workflow(self):
    numbers = await self.custom(input=self.problem, instruction="List every number in the passage that the question needs, with what it measures.")
    answer = await self.answer_generate(input=self.problem + "\\n\\nNumbers:\\n" + numbers)
    return answer'''),
    ("Which team scored first?",
     '''async def run_workflow(self):
    draft = await self.answer_generate(input=self.problem)
    checked = await self.review(problem=self.problem, solution=draft)
    return checked'''),
)


def hotpot_inputs(question: str, context: list) -> str:
    paragraphs = []
    for item in context:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            title, sentences = item
            text = "".join(sentences) if isinstance(sentences, list) else str(sentences)
            paragraphs.append(f"{title}: {text.strip()}")
    return "Context:\n" + "\n".join(paragraphs) + f"\n\nQuestion: {question}"


class HotpotQATask(Task):
    def __init__(self, path: str | Path | None = None):
        super().__init__(
            name="hotpotqa",
            family="qa",
            description="multi-hop questions answered from ten Wikipedia paragraphs; the answer is a short phrase",
            operators=QA_OPERATORS,
            template=QA_TEMPLATE,
            toy=Problem("hotpotqa-toy", "Paris is the capital of which country?",
                        hotpot_inputs("Paris is the capital of which country?",
                                      [["Paris", ["Paris is the capital of France."]],
                                       ["Berlin", ["Berlin is the capital of Germany."]]]),
                        "France"),
            similarity_threshold=0.75,
            extract=EXTRACT_SHORT,
            examples=HOTPOT_EXAMPLES,
            judged=True,
            judge_length_ratio=10.0,  # the reference's benchmark/hotpotqa.py rule
        )
        self.path = path

    def problems(self, split: str) -> list[Problem]:
        f = split_file("hotpotqa", split, self.path)
        out = []
        for n, rec in enumerate(read_jsonl(f), 1):
            require(rec, ("question", "answer", "context"), f"{f}:{n}")
            q = str(rec["question"]).strip()
            out.append(Problem(str(rec.get("_id", f"hotpotqa-{split}-{n - 1}")), q,
                               hotpot_inputs(q, rec["context"]), str(rec["answer"]),
                               {"type": rec.get("type", "")}))
        if not out:
            raise UserError(f"{f}: no problems (empty dataset)")
        return out

    def score(self, problem: Problem, output: str) -> float:
        return token_f1(output, str(problem.answer))


_DROP_Q = re.compile(r"\n\s*Question:\s*", re.I)


def drop_parts(context: str) -> tuple[str, str]:
    """(question, passage with question) from `Passage: ...\\nQuestion: ...\\nAnswer:`."""
    text = re.sub(r"\s*Answer:\s*$", "", context.strip())
    parts = _DROP_Q.split(text)
    question = parts[-1].strip() if len(parts) > 1 else text
    return question, text


class DROPTask(Task):
    def __init__(self, path: str | Path | None = None):
        super().__init__(
            name="drop",
            family="qa",
            description="reading comprehension with counting and arithmetic over a passage; the answer is a number, date or span",
            operators=QA_OPERATORS,
            template=QA_TEMPLATE,
            toy=Problem("drop-toy", "How many points did the team score in total?",
                        "Passage: The team scored 14 points in the first half and 10 in the second half.\n"
                        "Question: How many points did the team score in total?", ["24"]),
            similarity_threshold=0.75,
            extract=EXTRACT_SPAN,
            examples=DROP_EXAMPLES,
            judged=True,
        )
        self.path = path

    def problems(self, split: str) -> list[Problem]:
        f = split_file("drop", split, self.path)
        out = []
        for n, rec in enumerate(read_jsonl(f), 1):
            require(rec, ("context",), f"{f}:{n}")
            if "ref_text" not in rec and "completion" not in rec:
                raise UserError(f"{f}:{n}: record lacks field(s) ref_text, completion")
            golds = [g.strip() for g in str(rec.get("ref_text") or "").split("|") if g.strip()]
            completion = str(rec.get("completion") or "").strip()
            if completion and completion not in golds:
                golds.append(completion)
            question, inputs = drop_parts(str(rec["context"]))
            out.append(Problem(str(rec.get("id", f"drop-{split}-{n - 1}")), question, inputs, golds))
        if not out:
            raise UserError(f"{f}: no problems (empty dataset)")
        return out

    def score(self, problem: Problem, output: str) -> float:
        golds = problem.answer if isinstance(problem.answer, list) else [str(problem.answer)]
        return drop_f1(output, golds)
