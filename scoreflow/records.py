"""The typed records of a run directory, each with its JSON round-trip.

One JSON Lines file per kind (rundir.py owns the files):
    WorkflowAttempt   workflows.jsonl, test_workflows.jsonl    one generated workflow, valid or rejected
    Execution         executions.jsonl, test_executions.jsonl  one run of a valid workflow on a problem
    PairRecord        pairs.jsonl                              one sampled preference pair
    TrainStep         train.jsonl                              one optimiser step
    IterationMetrics, TestMetrics, Comparison   metrics.jsonl (by `kind`: iteration, evaluate, compare)

`from_json` reads what any version wrote: a field a record lacks takes its default, a key the class
does not know is kept in `extra` and written back by `to_json`. Optional fields that were absent stay
absent (`UNSET`), so a record read and written again is the same JSON.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Record")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()  # an optional field the record does not carry (written as no key at all)


@dataclass
class Record:
    RENAMED: ClassVar[dict[str, str]] = {}  # old JSON key -> field name

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**{k: v for k, v in out.items() if v is not UNSET}, **self.extra}

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any]) -> R:
        names = {f.name for f in fields(cls)} - {"extra"}
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in data.items():
            k = cls.RENAMED.get(k, k)
            (known if k in names else extra)[k] = v
        return cls(**known, extra=extra)

    def has(self, name: str) -> bool:
        """Whether the record carries the optional field `name`."""
        return getattr(self, name, UNSET) is not UNSET

    def but(self: R, **changes: Any) -> R:
        return replace(self, **changes)


@dataclass
class WorkflowAttempt(Record):
    iteration: int = 0
    problem: int = 0  # index in the iteration's problem list
    problem_id: str = ""
    slot: int = 0  # which of the k workflows of the problem
    attempt: int = 0  # 0 = first try; regenerated after a rejection
    valid: bool = False
    reason: str = ""  # why it was rejected ("" when valid)
    tokens: int = 0
    text: str = ""  # the generator's output
    source: str | None = None  # the extracted workflow

    @property
    def key(self) -> tuple[int, int]:
        return self.problem, self.slot


def short_reason(reason: str) -> str:
    """Group rejection reasons: drop line numbers and ratios, keep the kind of error."""
    r = re.sub(r"\s*\((line \d+|ratio [^)]*)\)", "", reason.strip().splitlines()[0] if reason.strip() else "")
    return r or "rejected"


@dataclass
class Execution(Record):
    """One run of a workflow on a problem: where (iteration, problem, slot, run) and what came out."""
    iteration: int = 0
    problem: int = 0
    problem_id: str = ""
    slot: int = 0
    run: int = 0  # which of the r runs
    status: str = "ok"  # ok | rejected | timeout | crashed | error
    score: float = 0.0
    output: str | None = None  # what run_workflow returned
    answer: str | None = None  # after answer extraction (what was scored)
    reason: str = ""
    calls: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cost_usd: Any = UNSET  # the executor's price of the run, when it prices calls
    judged: Any = UNSET  # the executor's verdict when judging (None = unparsable)

    @property
    def key(self) -> tuple[int, int]:
        return self.problem, self.slot


@dataclass
class PairRecord(Record):
    iteration: int = 0
    problem: int = 0
    chosen: int = 0  # slot of the winner
    rejected: int = 0
    score_chosen: float = 0.0
    score_rejected: float = 0.0
    advantage_chosen: Any = UNSET  # float, the group-relative loss only (loop/pairs.group_pairs)
    advantage_rejected: Any = UNSET
    weight: Any = UNSET


@dataclass
class TrainStep(Record):
    iteration: int = 0
    step: int = 0  # 1-based within the iteration
    total: int = 0
    loss: float = 0.0
    margin: float = 0.0
    chosen_reward: float = 0.0
    rejected_reward: float = 0.0
    seconds: float = 0.0
    grad_norm: float = 0.0
    tokens: Any = UNSET  # int: the step's prompt and completion tokens; older runs lack it


@dataclass
class Metrics(Record):
    """A record of metrics.jsonl; `metrics_from_json` picks the class by `kind`."""
    KIND: ClassVar[str] = ""


@dataclass
class IterationMetrics(Metrics):
    KIND: ClassVar[str] = "iteration"
    kind: str = "iteration"
    iteration: int = 0
    problems: int = 0
    workflows: int = 0  # workflow slots: problems x k
    valid: int = 0
    valid_rate: float = 0.0
    first_attempt_valid_rate: float = 0.0
    mean_score: float = 0.0  # over valid workflows
    solve_rate: float = 0.0  # over all slots (an invalid workflow solves nothing)
    pairs: int = 0
    unique_pairs: Any = UNSET  # int; older runs lack it
    steps: int = 0
    loss: float | None = None
    margin: float | None = None
    first_loss: Any = UNSET
    last_loss: Any = UNSET
    train_seconds: float = 0.0
    generator_tokens: int = 0
    executor_calls: int = 0
    executor_tokens: int = 0
    executor_cost_usd: Any = UNSET
    seconds: float = 0.0


@dataclass
class TestMetrics(Metrics):
    """One evaluation on the test split (`scoreflow evaluate`, or `run.compare`): kind "evaluate"."""
    __test__ = False  # not a pytest class
    KIND: ClassVar[str] = "evaluate"
    kind: str = "evaluate"
    iteration: int = 0  # the adapter evaluated; 0 = the base model
    split: str = "test"
    problems: int = 0
    valid_rate: float = 0.0
    solve_rate: float = 0.0
    scores: Any = UNSET  # per problem (runs older than the field lack it)
    generator_tokens: int = 0
    seconds: float = 0.0
    judged_solve_rate: Any = UNSET
    judged_scores: Any = UNSET


@dataclass
class Comparison(Metrics):
    KIND: ClassVar[str] = "compare"
    kind: str = "compare"
    base: int = 0
    trained: int = 0
    problems: int = 0
    base_solve_rate: float = 0.0
    trained_solve_rate: float = 0.0
    difference: dict[str, float] = field(default_factory=dict)  # value, low, high (paired bootstrap 95% CI)
    change: Any = UNSET  # str: what the trained generator's test workflows do differently, in words


METRICS: dict[str, type[Metrics]] = {c.KIND: c for c in (IterationMetrics, TestMetrics, Comparison)}


def metrics_from_json(data: dict[str, Any]) -> Metrics:
    """Records without `kind` (the oldest runs) are iterations; an unknown kind is kept as plain Metrics."""
    cls = METRICS.get(data.get("kind", "iteration"), Metrics)
    return cls.from_json(data)


def as_metrics(m: Metrics | dict[str, Any]) -> Metrics:
    return m if isinstance(m, Metrics) else metrics_from_json(m)
