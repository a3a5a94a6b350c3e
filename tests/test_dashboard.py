"""The live dashboard and the plain logger: the screen drawn from synthetic events (at 80x24 and
wider, with training events from another thread), the plain lines, and the real `scoreflow optimize`
watched in a pseudo-terminal (rendered with pyte) and through a pipe: the shared runs `terminal` and
`demo` of tests/runs.py."""

from __future__ import annotations

import io
import re
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from scoreflow.model.backend import StepInfo
from scoreflow.ui.dashboard import LiveReporter, PlainReporter, display, iteration_line
from scoreflow.ui.state import DashState
from scoreflow.ui.view import render
from scoreflow.run.reporter import RunInfo

from runs import STAMP  # the plain logger's line stamp
ITERATION_1 = {"kind": "iteration", "iteration": 1, "problems": 2, "workflows": 8, "valid": 3, "valid_rate": 0.375,
               "first_attempt_valid_rate": 0.25, "mean_score": 0.3333, "solve_rate": 0.125, "pairs": 6,
               "unique_pairs": 6, "steps": 6, "loss": 0.6921, "margin": 0.0012, "executor_calls": 14,
               "executor_tokens": 2100, "seconds": 143.2}


def _run_info(tmp_path: Path, usage: object) -> RunInfo:
    config = {"train": {"loss": "score-dpo"}, "executor": {"max_cost_usd": 5.0}}  # the loop's, not read back
    return RunInfo("arith", "cuda", "cpu", "smollm2-135m", "local:smollm2-135m", str(tmp_path), 3, usage, config)


def _drive(rep, tmp_path: Path, usage: object) -> None:
    """Iteration 1 finished, iteration 2 in its execute stage after a regeneration round, training steps."""
    rep.start(_run_info(tmp_path, usage))
    rep.iteration_end(ITERATION_1)
    rep.stage(2, "generate", 8)
    rep.advance(8)
    rep.stage(2, "validate", 8)
    reasons = ["no <graph> block", "syntax error: invalid syntax (line 3)", "syntax error: invalid syntax (line 7)"]
    for i in range(8):
        rep.workflow(i < 3, "" if i < 3 else reasons[i % 3])
        rep.advance()
    rep.stage(2, "execute", 6)
    for s in (0.0, 1.0, 0.5):
        rep.score(s)
        rep.advance()


def _usage() -> SimpleNamespace:
    return SimpleNamespace(calls=37, prompt_tokens=12000, completion_tokens=3400, tokens=15400, retries=1,
                           failures=2, cost_usd=0.0123)


def _screen(st: DashState, width: int, height: int) -> list[str]:
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None)
    console.print(render(st, width, height))
    return console.file.getvalue().rstrip("\n").split("\n")


@pytest.mark.parametrize("size", [(80, 24), (132, 43)])
def test_screen_shows_every_section_and_fits(tmp_path, size):
    width, height = size
    rep = PlainReporter(io.StringIO())  # any state-keeping reporter; the screen is drawn from its state
    _drive(rep, tmp_path, _usage())
    for step in range(1, 5):
        rep.train_step(StepInfo(step, 6, 0.69 - 0.02 * step, 0.01 * step, 0.005 * step, -0.005 * step, 2.0))
    lines = _screen(rep, width, height)
    text = "\n".join(lines)
    assert len(lines) <= height - 1 and max(map(len, lines)) <= width, text
    for want in ("task arith", "loss score-dpo", "cuda on cpu", "smollm2-135m", str(tmp_path)[:20],
                 "Iteration 2/3", "stage execute", "Workflows 3/8 valid · 5 rejected", "mean 0.500 of 3",
                 "37 calls", "15.4k tokens", "spend $0.01 / $5.00 cap", "retries 1", "failures 2",
                 "step 4/6", "0.50 steps/s", "0.6100", "+0.0400"):
        assert want in text, (want, text)
    rows = {m.group(1): line for line in lines
            if (m := re.match(r"^(?:[✔▶] |  )(generate|validate|execute|pairs|train) ", line))}
    assert list(rows) == ["generate", "validate", "execute", "pairs", "train"], text
    assert rows["generate"].startswith("✔") and " 8/8 " in rows["generate"]
    assert rows["execute"].startswith("▶") and " 3/6 " in rows["execute"]
    assert re.search(r"\d:\d\d ETA \d+:\d\d$", rows["execute"].rstrip()), rows["execute"]  # not cut off
    assert "━" in rows["execute"] and "─" in rows["execute"]
    assert not re.search(r"\d/\d", rows["pairs"]), "a stage not started shows no count"
    # rejection reasons grouped without their line numbers, most frequent first
    assert re.search(r"3 syntax error: invalid syntax\b", text) and re.search(r"2 no <graph> block", text)
    # the sparklines: loss falls, margin rises
    spark = {line.split()[0]: line.split()[1] for line in lines if line.strip().startswith(("loss ", "margin "))}
    assert spark["loss"] == "█▆▃▁" and spark["margin"] == "▁▃▆█"
    # the finished-iterations table row of iteration 1
    row = next(line for line in lines if line.split()[:1] == ["1"])
    assert row.split() == ["1", "38%", "25%", "0.333", "0.125", "6", "0.6921", "+0.0012", "2.4"]
    if height >= 36:  # tall: the score histogram gets one row per bin
        assert sum(1 for line in lines if re.search(r"\d\.\d–\d\.\d", line)) == 5


def test_regenerated_workflows_count_slots_and_attempts(tmp_path):
    rep = PlainReporter(io.StringIO())
    _drive(rep, tmp_path, _usage())  # 3 of 8 slots valid after the first attempt
    rep.stage(2, "generate", 5)
    rep.advance(5)
    rep.stage(2, "validate", 5)
    for i in range(5):
        rep.workflow(i < 2, "" if i < 2 else "run_workflow calls no operator")
    text = "\n".join(_screen(rep, 80, 24))
    assert "Workflows 5/8 valid · 8 rejected" in text, text  # rejected counts attempts
    assert "regenerating rejected workflows, attempt 2" in text
    assert re.search(r"^ +3 run_workflow calls no operator", text, re.M)


def test_screen_during_evaluation_and_resume(tmp_path):
    rep = PlainReporter(io.StringIO())
    (tmp_path / "metrics.jsonl").write_text(__import__("json").dumps(ITERATION_1) + "\n")
    rep.start(_run_info(tmp_path, None))  # resumed: iteration 1 comes from metrics.jsonl
    rep.stage(1, "generate", 20)  # evaluate reuses the stage names with a finished iteration's adapter
    rep.advance(5)
    text = "\n".join(_screen(rep, 100, 30))
    assert "Evaluation on the test split with the adapter of iteration 1" in text
    assert "pairs" not in text.split("Evaluation")[1].split("Workflows")[0]
    assert "5/20" in text and "0 calls" in text and "spend" in text  # no usage object: zeros, cap still shown


def test_concurrent_training_events_while_drawing(tmp_path):
    """Training events arrive on a worker thread while rich's refresh thread draws."""
    rep = PlainReporter(io.StringIO(), every=3600)
    _drive(rep, tmp_path, _usage())
    rep.stage(2, "train", 400)
    errors: list[BaseException] = []

    def trainer() -> None:
        try:
            for step in range(1, 401):
                rep.train_step(StepInfo(step, 400, 1.0 / step, 0.001 * step, 0, 0, 0.001))
                rep.advance()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=trainer)
    t.start()
    screens = 0
    while t.is_alive() or screens < 3:
        _screen(rep, 80, 24)
        screens += 1
    t.join()
    assert not errors
    lines = _screen(rep, 80, 24)
    assert any("step 400/400" in line for line in lines)
    assert any("train" in line and "400/400" in line for line in lines)


def test_plain_lines_rate_limited_and_ascii(tmp_path):
    out = io.StringIO()
    rep = PlainReporter(out, every=3600)
    _drive(rep, tmp_path, _usage())
    rep.log("resumed with the adapter of iteration 1")
    rep.finish("finished", "run directory: x")
    lines = out.getvalue().splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    assert "\x1b" not in out.getvalue() and out.getvalue().isascii()
    # start, one per stage change (3), iteration end, log, finish: the 11 advance() calls print nothing
    assert len(lines) == 7, lines
    assert "iteration 1 done | valid 3/8 (38%, first attempt 25%) | mean score 0.333" in lines[1]
    assert lines[3].endswith("validate 0/8 | generate 8/8 took 0:00")
    assert "execute 0/6" in lines[4] and "validate 8/8 took 0:00 (valid 3, rejected 5)" in lines[4]
    assert "resumed with the adapter" in lines[5]
    assert lines[6].split(" ", 2)[2].startswith("finished | 1 iteration | best mean score 0.333")
    # with `every` = 0 each advance() prints a progress line
    out2 = io.StringIO()
    rep2 = PlainReporter(out2, every=0.0)
    rep2.start(_run_info(tmp_path, None))
    rep2.stage(1, "execute", 3)
    for _ in range(3):
        rep2.advance()
    progress = out2.getvalue().splitlines()[1:]
    assert [line.split("| ")[1].strip() for line in progress] == ["execute 0/3", "execute 1/3", "execute 2/3",
                                                                   "execute 3/3"], progress


def test_iteration_line_of_an_evaluation():
    line = iteration_line({"kind": "evaluate", "iteration": 2, "problems": 20, "valid_rate": 0.85,
                           "solve_rate": 0.4, "seconds": 60.0})
    assert line == ("evaluation done · adapter of iteration 2 · test solve rate 0.400 · valid 85% of 20 problems"
                    " · 1.0 min")


def test_display_without_a_terminal():
    assert isinstance(display(plain=True), PlainReporter)
    assert not sys.stdout.isatty()  # pytest captures stdout
    assert isinstance(display(plain=False), PlainReporter)


def test_live_reporter_leaves_the_final_screen_and_a_summary(tmp_path):
    console = Console(width=80, height=24, file=io.StringIO(), force_terminal=True, color_system=None)
    rep = LiveReporter(console)
    with rep:
        _drive(rep, tmp_path, _usage())
        rep.finish("stopped", "the executor token cap was reached")
    out = console.file.getvalue()
    assert "Iteration 2/3" in out and "mean 0.500 of 3" in out
    tail = re.sub(r"\s+", " ", out[out.rindex("Finished"):])
    assert "stopped · 1 iteration · best mean score 0.333 · 37 executor calls, 15.4k tokens · $0.01 · in 0:00 · " \
           "the executor token cap was reached" in tail, tail
    assert rep.live is None


# ---- the real command in a pseudo-terminal and through a pipe (the shared runs of tests/runs.py) ----

def _metrics(run_dir: Path) -> dict:
    import json

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m for m in records if m.get("kind") == "iteration"][-1]


@pytest.mark.slow
def test_real_run_in_a_terminal(terminal_run):
    real = terminal_run
    assert real.rc == 0, real.final
    # whole frames caught before the run ended (a snapshot can fall inside a redraw)
    mid = [text for t, text in real.screens if "Iteration 1/1" in text and "Training" in text
           and "✔ train" not in text]
    assert mid, "no screen caught mid-run:\n" + real.final
    first = mid[0]
    for name in ("generate", "validate", "execute", "pairs", "train"):
        assert re.search(rf"^[ ✔▶] {name}\b", first, re.M), (name, first)
    assert re.search(r"^▶ generate .*[━╺─]+ +\d+/2 ", first, re.M), first
    assert "ScoreFlow  task arith  loss score-dpo" in first and str(real.run_dir)[:40] in first
    # the end: every stage ticked, the finished iteration's numbers, the one-line summary
    final = real.final
    m = _metrics(real.run_dir)
    for name in ("generate", "validate", "execute", "pairs", "train"):
        assert re.search(rf"^✔ {name}\b", final, re.M), (name, final)
    lines = final.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["iter", "valid", "1st"])
    row = next(line for line in lines[header:] if line.split()[:1] == ["1"])  # the finished table's row
    assert row.split()[:6] == ["1", f"{m['valid_rate']:.0%}", f"{m['first_attempt_valid_rate']:.0%}",
                               f"{m['mean_score']:.3f}" if m["valid"] else "–", f"{m['solve_rate']:.3f}",
                               str(m["pairs"])], (row, m)
    assert f"Workflows {m['valid']}/{m['workflows']} valid · {m['workflows'] - m['valid']} rejected" in final
    # "best mean score" appears once a valid workflow was scored
    best = f"best mean score {m['mean_score']:.3f} · " if m["valid"] else ""
    assert re.search(rf"^finished · 1 iteration · {re.escape(best)}\d+ executor calls", final, re.M), final


@pytest.mark.slow
def test_the_profile_of_the_demo_run(demo_run):
    """--profile: RUN/profile.md holds a row per stage the run went through, in order, the embedded
    model's parameter count, the machine's measured limit, and for training its tokens and its share
    of that limit."""
    assert demo_run.rc == 0, demo_run.err[-3000:]
    text = (demo_run.run_dir / "profile.md").read_text()
    assert "135M parameters" in text and re.search(r"on this machine, \d+ GFLOP/s", text), text
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| where")]
    stages = ("generate", "validate", "execute")
    assert [(r[0], r[1]) for r in rows] == [("evaluate base", s) for s in stages] + \
        [("iteration 1", s) for s in (*stages, "pairs", "train")] + [("evaluate 1", s) for s in stages], text
    train = rows[7]
    assert train[3] == "1" and train[4] != "–" and train[7].endswith("%"), train  # one step, its tokens


@pytest.mark.slow
def test_real_run_without_a_terminal_prints_plain_lines(demo_run):
    real = demo_run  # the demo run, through a pipe
    assert real.rc == 0, real.err
    out = real.out
    assert "\x1b" not in out and "\x1b" not in real.err
    lines = out.splitlines()
    assert lines and all(STAMP.match(line) for line in lines), out
    m = _metrics(real.run_dir)
    stages = [g.group(1) for line in lines if (g := re.search(r"iteration 1/1 \| (\w+)", line))]
    assert [s for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]] == \
        ["generate", "validate", "execute", "pairs", "train"], out
    assert any(f"iteration 1 done | valid {m['valid']}/{m['workflows']} ({m['valid_rate']:.0%}" in line
               for line in lines), out
    assert lines[-1].split(" ", 2)[2].startswith("finished | 1 iteration"), out
