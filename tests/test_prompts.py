"""The generator's prompt: few-shot examples in their order for training, evaluation and solve, and
rotated per sample in optimisation with `generator.explore_examples`."""

from __future__ import annotations

from fake_backend import FakeBackend, write_task

from scoreflow.loop.prompts import generator_messages
from scoreflow.tasks.arith import ArithTask


def _example_questions(messages) -> list[str]:
    return [m["content"] for m in messages[1:-1] if m["role"] == "user"]


def test_rotate_shows_the_examples_in_another_order_and_the_same_problem():
    task = ArithTask()
    problem = task.problems("validate")[0]
    n = len(task.examples)
    plain = generator_messages(task, problem, hide=True)
    assert generator_messages(task, problem, hide=True, rotate=0) == plain
    assert generator_messages(task, problem, hide=True, rotate=n) == plain
    for r in range(1, n):
        rotated = generator_messages(task, problem, hide=True, rotate=r)
        assert rotated[0] == plain[0] and rotated[-1] == plain[-1]  # system prompt and problem unchanged
        qs = _example_questions(plain)
        assert _example_questions(rotated) == qs[r:] + qs[:r]
        assert sorted(map(str, rotated)) == sorted(map(str, plain))  # the same messages, reordered


class PromptLog(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[list[str]] = []  # the examples' questions of each generator prompt
        self.trained: list = []

    def generate(self, prompts, params, *, adapter: bool = True):
        if adapter:
            self.prompts += [_example_questions(m) for m in prompts]
        return super().generate(prompts, params, adapter=adapter)

    def train(self, pairs, cfg, **kw):
        self.trained += list(pairs)
        return super().train(pairs, cfg, **kw)


def _run(tmp_path, monkeypatch, explore: bool) -> PromptLog:
    from scoreflow.cli import main as cli

    backend = PromptLog()
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: backend)
    task = write_task(tmp_path)
    assert cli.main(["optimize", *task, "--run-dir", str(tmp_path / "run"), "--iterations", "1", "--problems", "2",
                     "-k", "3", "--test-problems", "2", "--no-dashboard", "--set", "run.compare=true",
                     "--set", f"generator.explore_examples={str(explore).lower()}"]) == 0
    return backend


def test_optimisation_samples_explore_and_training_and_evaluation_use_the_order(tmp_path, monkeypatch):
    b = _run(tmp_path, monkeypatch, explore=True)
    # 2 test problems before training, 2 problems x 3 optimisation samples, 2 test problems after
    assert len(b.prompts) == 10
    base, samples, trained = b.prompts[:2], b.prompts[2:8], b.prompts[8:]
    qs = base[0]
    n = len(qs)
    assert n >= 2 and base == trained == [qs, qs]

    def rot(r: int) -> list[str]:
        return qs[r % n:] + qs[:r % n]

    assert samples == [rot(i + j) for i in range(2) for j in range(3)]  # problem i, slot j
    assert b.trained and all(_example_questions(p.prompt) == qs for p in b.trained)

    (tmp_path / "off").mkdir()
    off = _run(tmp_path / "off", monkeypatch, explore=False)
    assert len(off.prompts) == 10 and all(p == qs for p in off.prompts)

