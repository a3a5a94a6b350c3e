"""run.fresh_problems: each iteration takes problems not used yet instead of the same ones."""

from __future__ import annotations

import json

from fake_backend import FakeBackend, write_task

from scoreflow.run.session import select, select_fresh
from scoreflow.tasks.arith import ArithTask


def test_fresh_iterations_cover_the_split_before_repeating():
    problems = ArithTask().problems("validate")
    assert len(problems) == 60
    ids = [[p.id for p in select_fresh(problems, 12, 3, it)] for it in range(1, 7)]
    assert ids[0] == [p.id for p in select(problems, 12, 3)]  # the first iteration is unchanged
    assert all(len(set(i)) == 12 for i in ids)
    assert len(set().union(*ids[:5])) == 60  # five iterations of 12: every problem once
    assert ids[5] == ids[0]  # then round again
    assert ids[1] != [p.id for p in select_fresh(problems, 12, 4, 2)]  # the order follows the seed
    order = [p.id for p in problems]
    assert all(i == sorted(i, key=order.index) for i in ids)  # in file order
    assert select_fresh(problems, 0, 3, 2) == problems == select_fresh(problems, 60, 3, 2)


class TrainLog(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.trained: list[list] = []  # each iteration's training pairs

    def train(self, pairs, cfg, **kw):
        self.trained.append(list(pairs))
        return super().train(pairs, cfg, **kw)


def _run(tmp_path, monkeypatch, fresh: bool) -> tuple[TrainLog, dict[int, set[str]]]:
    from scoreflow.cli import main as cli

    backend = TrainLog()
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: backend)
    task = write_task(tmp_path)  # 10 records: 2 validate problems
    run = tmp_path / "run"
    assert cli.main(["optimize", *task, "--run-dir", str(run), "--iterations", "2", "--problems", "1",
                     "-k", "2", "--no-dashboard", "--set", f"run.fresh_problems={str(fresh).lower()}"]) == 0
    seen: dict[int, set[str]] = {}
    for line in (run / "workflows.jsonl").read_text().splitlines():
        r = json.loads(line)
        seen.setdefault(r["iteration"], set()).add(r["problem_id"])
    return backend, seen


def test_the_loop_trains_each_iteration_on_its_own_problems(tmp_path, monkeypatch, capsys):
    from scoreflow.cli import main as cli
    from scoreflow.config import build
    from scoreflow.loop.loop import recorded_pairs
    from scoreflow.run.rundir import RunDir

    (tmp_path / "fresh").mkdir()
    b, seen = _run(tmp_path / "fresh", monkeypatch, fresh=True)
    assert len(seen[1]) == len(seen[2]) == 1 and seen[1] != seen[2]
    assert len(b.trained) == 2 and all(b.trained)
    questions = [{p.prompt[-1]["content"] for p in pairs} for pairs in b.trained]
    assert len(questions[0]) == len(questions[1]) == 1 and questions[0] != questions[1]
    # What the run directory records rebuilds the pairs each iteration trained on.
    run = tmp_path / "fresh" / "run"
    cfg = build(RunDir(run).read_config())
    for it in (1, 2):
        assert [(p.prompt, p.chosen, p.rejected) for p in recorded_pairs(cfg, run, it)] == \
            [(p.prompt, p.chosen, p.rejected) for p in b.trained[it - 1]]

    # `show` prints each iteration's own problem beside its workflows.
    for it, question in ((1, questions[0]), (2, questions[1])):
        capsys.readouterr()
        assert cli.main(["show", str(run), "--problem", "0", "--iteration", str(it)]) == 0
        shown = capsys.readouterr().out
        asked = next(iter(question)).split("Problem:")[-1].strip().splitlines()[0]
        assert asked and asked in shown, (asked, shown[:500])

    (tmp_path / "same").mkdir()
    _, same = _run(tmp_path / "same", monkeypatch, fresh=False)
    assert same[1] == same[2] == seen[1]
