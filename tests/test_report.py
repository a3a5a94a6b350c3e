"""`scoreflow report`, `runs` and `show` on synthetic run directories (numbers known in advance) and
on one real run made by `scoreflow optimize`; the plotted series are read back from the figures."""

from __future__ import annotations

import json
import re
import os
import random
import subprocess
import sys
from pathlib import Path
from statistics import mean
from typing import Any

import pytest

matplotlib = pytest.importorskip("matplotlib")  # the `report` extra; listed in the `test` extra too

from scoreflow.report import plots  # noqa: E402
from scoreflow.cli.main import main as cli_main  # noqa: E402
from scoreflow.report.report import load_runs, markdown  # noqa: E402
from scoreflow.run.rundir import load_run  # noqa: E402
from scoreflow.stats import bootstrap  # noqa: E402

SOURCE = 'async def run_workflow(self):\n    a = await self.custom(input=self.problem, instruction="solve")\n    return a\n'


def _jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def make_run(path: Path, *, loss: str = "score-dpo", iterations: int = 3, problems: int = 3, k: int = 4,
             seed: int = 0, status: str = "finished", pid: int | None = None, cost: bool = False,
             evaluate: bool = True, invalid: tuple[int, ...] = (), compare: int = 0) -> Path:
    """A run directory as the loop writes it, with made-up but consistent records. `compare`: that
    many test problems, evaluated (per-problem scores) before training and after it, then compared."""
    rng = random.Random(seed)
    path.mkdir(parents=True)
    (path / "config.toml").write_text(
        f'[run]\ntask = "arith"\niterations = {iterations}\nproblems = {problems}\nseed = 0\n'
        f'[generator]\nmodel = "smollm2-135m"\nworkflows_per_problem = {k}\n'
        f'[executor]\nkind = "local"\nmodel = ""\nruns = 2\n[train]\nloss = "{loss}"\nbatch_size = 1\n')
    (path / "status.json").write_text(json.dumps({"status": status, "reason": "", "pid": pid or os.getpid(),
                                                  "updated": "2025-01-02T03:04:05"}))
    workflows, executions, pairs, train, metrics = [], [], [], [], []
    if compare:
        metrics.append(_test_record(0, [float(rng.random() < 0.2) for _ in range(compare)]))
    for it in range(1, iterations + 1):
        valid_slots, first_valid, scores = 0, 0, {}
        for p in range(problems):
            for j in range(k):
                ok_first = rng.random() < 0.3 + 0.2 * it and it not in invalid
                ok = ok_first or (rng.random() < 0.5 and it not in invalid)
                workflows.append({"iteration": it, "problem": p, "problem_id": f"arith-validate-{p}", "slot": j,
                                  "attempt": 0, "valid": ok_first, "reason": "" if ok_first else
                                  rng.choice(["no <graph> block", "syntax error: invalid syntax (line 2)"]),
                                  "tokens": 50, "text": "<graph>...</graph>", "source": SOURCE if ok_first else None})
                if not ok_first:
                    workflows.append({"iteration": it, "problem": p, "problem_id": f"arith-validate-{p}", "slot": j,
                                      "attempt": 1, "valid": ok, "reason": "" if ok else "no <graph> block",
                                      "tokens": 40, "text": "x", "source": SOURCE if ok else None})
                if not ok:
                    continue
                valid_slots += 1
                first_valid += ok_first
                runs = [float(rng.random() < 0.2 * it + 0.1 * j) for _ in range(2)]
                for n, sc in enumerate(runs):
                    rec = {"iteration": it, "problem": p, "problem_id": f"arith-validate-{p}", "slot": j, "run": n,
                           "status": "ok", "score": sc, "output": "7", "answer": "7", "reason": "", "calls": 2,
                           "tokens": 100, "seconds": 0.5}
                    if cost:
                        rec["cost_usd"] = 0.001 * it
                    executions.append(rec)
                scores[(p, j)] = mean(runs)
        n_pairs = 4 if scores else 0
        for q in range(n_pairs):
            pairs.append({"iteration": it, "problem": q % problems, "chosen": 0, "rejected": 1,
                          "score_chosen": 1.0, "score_rejected": 0.0})
        for step in range(1, n_pairs + 1):
            train.append({"iteration": it, "step": step, "total": n_pairs, "loss": 0.7 - 0.05 * it - 0.01 * step + 0.03 * seed,
                          "margin": 0.02 * it + 0.005 * step, "chosen_reward": 0.01, "rejected_reward": -0.01,
                          "seconds": 1.5, "grad_norm": 1.0})
        slots = problems * k
        calls = sum(2 for r in executions if r["iteration"] == it)
        steps = [r for r in train if r["iteration"] == it]
        metrics.append({"kind": "iteration", "iteration": it, "problems": problems, "workflows": slots,
                        "valid": valid_slots, "valid_rate": valid_slots / slots,
                        "first_attempt_valid_rate": first_valid / slots,
                        "mean_score": mean(scores.values()) if scores else 0.0,
                        "solve_rate": sum(scores.values()) / slots, "pairs": n_pairs, "unique_pairs": n_pairs,
                        "steps": len(steps), "loss": mean(s["loss"] for s in steps) if steps else None,
                        "margin": mean(s["margin"] for s in steps) if steps else None, "train_seconds": 6.0,
                        "generator_tokens": 1000, "executor_calls": calls, "executor_tokens": 50 * calls,
                        "seconds": 90.0 + it})
        if evaluate and not compare and it in (1, iterations):
            metrics.append({"kind": "evaluate", "iteration": it, "split": "test", "problems": 10,
                            "valid_rate": 0.5 + 0.1 * it, "solve_rate": 0.1 * it + 0.05 * seed,
                            "generator_tokens": 300, "seconds": 30.0})
    if compare:
        metrics.append(_test_record(iterations, [float(rng.random() < 0.6) for _ in range(compare)]))
        base, trained = metrics[0]["scores"], metrics[-1]["scores"]
        metrics.append({"kind": "compare", "base": 0, "trained": iterations, "problems": compare,
                        "base_solve_rate": mean(base), "trained_solve_rate": mean(trained),
                        "difference": bootstrap([trained], [base]).as_dict()})
    for name, recs in (("workflows", workflows), ("evaluations", executions), ("pairs", pairs), ("train", train),
                       ("metrics", metrics)):
        _jsonl(path / f"{name}.jsonl", recs)
    return path


def _test_record(iteration: int, scores: list[float]) -> dict[str, Any]:
    return {"kind": "evaluate", "iteration": iteration, "split": "test", "problems": len(scores), "valid_rate": 0.9,
            "solve_rate": mean(scores), "scores": scores, "generator_tokens": 300, "seconds": 30.0}


def _lines(fig) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid():
                out[line.get_gid()] = [tuple(map(float, xy)) for xy in line.get_xydata()]
    return out


def _stairs(fig) -> dict[str, list[float]]:
    from matplotlib.patches import StepPatch

    return {p.get_gid(): [float(v) for v in p.get_data().values]
            for ax in fig.axes for p in ax.patches if isinstance(p, StepPatch) and p.get_gid()}


def _metrics(path: Path, kind: str = "iteration") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()
            if json.loads(line).get("kind") == kind]


# ---- the plotted numbers are the recorded numbers ---------------------------------------------------

def test_score_and_validity_figures_match_metrics(tmp_path):
    run = make_run(tmp_path / "a", iterations=4, invalid=(2,))
    its, tests = _metrics(run), _metrics(run, "evaluate")
    assert its[1]["valid"] == 0 and its[1]["pairs"] == 0 and all(m["valid"] for m in its if m["iteration"] != 2)
    lines = _lines(plots.score_figure(load_runs([run])))
    # an iteration without a valid workflow has no mean score: a gap, not a 0
    assert lines["a:mean_score"] == [(m["iteration"], pytest.approx(m["mean_score"])) for m in its if m["valid"]]
    assert [x for x, _ in lines["a:mean_score"]] == [1, 3, 4]
    assert lines["a:solve_rate"] == [(m["iteration"], pytest.approx(m["solve_rate"])) for m in its]
    assert lines["a:test_solve_rate"] == [(m["iteration"], pytest.approx(m["solve_rate"])) for m in tests]
    assert [x for x, _ in lines["a:test_solve_rate"]] == [1, 4]
    lines = _lines(plots.validity_figure(load_runs([run])))
    assert lines["a:valid_rate"] == [(m["iteration"], pytest.approx(m["valid_rate"])) for m in its]
    assert lines["a:first_attempt_valid_rate"] == [(m["iteration"], pytest.approx(m["first_attempt_valid_rate"]))
                                                   for m in its]
    # the synthetic run is built so these differ: the plot cannot pass by showing one series twice
    assert [y for _, y in lines["a:valid_rate"]] != [y for _, y in lines["a:first_attempt_valid_rate"]]


def test_training_and_executor_figures_match_records(tmp_path):
    run = make_run(tmp_path / "a", cost=True)
    train = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]
    lines = _lines(plots.training_figure(load_runs([run])))
    assert [y for _, y in lines["a:loss"]] == pytest.approx([r["loss"] for r in train])
    assert [y for _, y in lines["a:margin"]] == pytest.approx([r["margin"] for r in train])
    assert [x for x, _ in lines["a:loss"]] == list(range(1, len(train) + 1))
    its = _metrics(run)
    lines = _lines(plots.executor_figure(load_runs([run])))
    tokens = [sum(m["executor_tokens"] for m in its[:i + 1]) for i in range(len(its))]
    assert [y for _, y in lines["a:executor_tokens"]] == pytest.approx(tokens)
    execs = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    spend = [sum(r["cost_usd"] for r in execs if r["iteration"] <= m["iteration"]) for m in its]
    assert [y for _, y in lines["a:cost_usd"]] == pytest.approx(spend)
    unpriced = _lines(plots.executor_figure(load_runs([make_run(tmp_path / "b")])))
    assert "b:cost_usd" not in unpriced
    assert [y for _, y in unpriced["b:executor_calls"]] == pytest.approx(
        [sum(m["executor_calls"] for m in its[:i + 1]) for i in range(len(its))])


def test_score_distribution_counts_workflow_means(tmp_path):
    run = make_run(tmp_path / "a")
    fig = plots.distribution_figure(load_runs([run]))
    execs = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    for it in (1, 2, 3):
        per_workflow: dict[tuple[int, int], list[float]] = {}
        for r in execs:
            if r["iteration"] == it:
                per_workflow.setdefault((r["problem"], r["slot"]), []).append(r["score"])
        want = [0] * 10
        for scores in per_workflow.values():
            want[min(9, int(mean(scores) * 10))] += 1
        bars = [p.get_height() for p in fig.axes[0].patches if p.get_gid() == f"a:scores:{it}"]
        assert bars == want, it
        assert sum(want) == len(per_workflow) == _metrics(run)[it - 1]["valid"]


def test_compare_overlays_runs_in_every_plot_and_the_table(tmp_path):
    a, b = make_run(tmp_path / "sdpo", seed=0), make_run(tmp_path / "dpo", loss="dpo", seed=1)
    runs = load_runs([a, b])
    assert [r.label for r in runs] == ["sdpo [score-dpo]", "dpo [dpo]"]
    for make in (plots.score_figure, plots.validity_figure, plots.training_figure, plots.executor_figure,
                 plots.learning_figure):
        gids = {gid.split(":")[0] for gid in _lines(make(runs))}
        assert gids == {"sdpo [score-dpo]", "dpo [dpo]"}, make.__name__
    lines = _lines(plots.score_figure(runs))
    assert [y for _, y in lines["dpo [dpo]:mean_score"]] == pytest.approx([m["mean_score"] for m in _metrics(b)])
    lines = _lines(plots.training_figure(runs))
    train_b = [json.loads(line) for line in (b / "train.jsonl").read_text().splitlines()]
    assert [y for _, y in lines["dpo [dpo]:loss"]] == pytest.approx([r["loss"] for r in train_b])
    assert [y for _, y in lines["dpo [dpo]:loss"]] != [y for _, y in lines["sdpo [score-dpo]:loss"]]
    dist = plots.distribution_figure(runs)
    assert {p.get_gid() for p in dist.axes[0].patches} == {"sdpo [score-dpo]:scores:3", "dpo [dpo]:scores:3"}
    out = tmp_path / "cmp"
    assert cli_main(["report", str(a), "--compare", str(b), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    table = md.split("## Comparison")[1].split("\n## ")[0]
    row = next(line for line in table.splitlines() if line.startswith("| dpo [dpo]"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    last_b = _metrics(b)[-1]
    assert cells[1:5] == ["dpo", "finished", "3/3", f"{max(m['mean_score'] for m in _metrics(b)):.3f}"]
    assert cells[5:8] == [f"{last_b['mean_score']:.3f}", f"{last_b['solve_rate']:.3f}",
                          f"{_metrics(b, 'evaluate')[-1]['solve_rate']:.3f}"]


def test_report_writes_markdown_and_every_png(tmp_path, capsys):
    run = make_run(tmp_path / "a")
    assert cli_main(["report", str(run)]) == 0
    out = run / "report"
    assert capsys.readouterr().out.strip() == str(out / "report.md")
    for name in plots.FIGURES:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    md = (out / "report.md").read_text()
    for name in plots.FIGURES:
        assert f"]({name})" in md
    its = _metrics(run)
    row = next(line for line in md.split("## Iterations")[1].splitlines() if line.startswith("| 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:6] == [f"{its[1]['valid']}/{its[1]['workflows']}", f"{its[1]['valid_rate']:.0%}",
                          f"{its[1]['first_attempt_valid_rate']:.0%}", f"{its[1]['mean_score']:.3f}",
                          f"{its[1]['solve_rate']:.3f}"]
    assert "| no &lt;graph&gt; block |" in md  # rejection reasons, escaped for Markdown


def test_report_on_an_empty_run_and_bad_input(tmp_path, capsys):
    empty = tmp_path / "new"
    empty.mkdir()
    (empty / "config.toml").write_text('[run]\ntask = "arith"\niterations = 2\n')
    assert cli_main(["report", str(empty)]) == 0
    assert "No iteration has finished yet." in (empty / "report" / "report.md").read_text()
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    assert "no run directory" in capsys.readouterr().err
    assert cli_main(["report", str(tmp_path)]) == 2  # a folder, but not a run
    assert "not a run directory" in capsys.readouterr().err
    assert cli_main(["report", str(empty), "--bogus"]) == 2


# ---- the learning curve and the trained-vs-base comparison ----------------------------------------

def _ci_bars(fig) -> dict[str, list[tuple[float, float, float]]]:
    """gid -> [(x, low, high)] of the errorbar collections."""
    from matplotlib.collections import LineCollection

    return {c.get_gid(): [(float(seg[0][0]), float(seg[0][1]), float(seg[1][1])) for seg in c.get_segments()]
            for ax in fig.axes for c in ax.collections if isinstance(c, LineCollection) and c.get_gid()}


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for leg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if leg
            for t in leg.get_texts()]


def test_learning_curve_plots_test_solve_rate_with_bootstrap_ci(tmp_path):
    run = make_run(tmp_path / "a", iterations=3, compare=30)
    tests, cmp = _metrics(run, "evaluate"), _metrics(run, "compare")[0]
    assert [m["iteration"] for m in tests] == [0, 3] and all(len(m["scores"]) == 30 for m in tests)
    fig = plots.learning_figure(load_runs([run]))
    assert _lines(fig)["a:test_solve_rate"] == [(m["iteration"], pytest.approx(m["solve_rate"])) for m in tests]
    want = [v for m in tests for v in (m["iteration"], bootstrap([m["scores"]]).low, bootstrap([m["scores"]]).high)]
    assert [v for bar in _ci_bars(fig)["a:test_ci"] for v in bar] == pytest.approx(want)
    assert want[4] < tests[1]["solve_rate"] < want[5]  # a real interval around the point
    d = cmp["difference"]
    assert any(f"iteration 3 − base: {d['value']:+.3f}, 95% CI {d['low']:+.3f} to {d['high']:+.3f}" in t
               for t in _legend_texts(fig))
    ticks = fig.axes[0].get_xticks()
    assert list(ticks) == [round(t) for t in ticks] and {0, 3} <= set(ticks)


def test_report_has_trained_vs_base_and_a_proper_summary_header(tmp_path):
    run = make_run(tmp_path / "run", iterations=2, compare=25)  # a run named "run" gave "| run | run |"
    out = tmp_path / "out"
    assert cli_main(["report", str(run), "--out", str(out)]) == 0
    data = (out / "learning.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    md = (out / "report.md").read_text()
    assert "| run | run |" not in md and "| summary | value |" in md
    assert "](learning.png)" in md
    cmp = _metrics(run, "compare")[0]
    d = cmp["difference"]
    section = md.split("## Trained vs base\n")[1].split("\n## ")[0]
    assert (f"same 25 held-out test problems: base generator (iteration 0) {cmp['base_solve_rate']:.3f}, "
            f"trained generator (iteration 2) {cmp['trained_solve_rate']:.3f}") in section
    assert f"**Trained − base: {d['value']:+.3f} (95% CI {d['low']:+.3f} to {d['high']:+.3f})**" in section
    verdict = "better" if d["low"] > 0 else "worse" if d["high"] < 0 else "no difference"
    assert verdict in section
    base = _metrics(run, "evaluate")[0]
    est = bootstrap([base["scores"]])
    row = next(line for line in md.split("## Test split")[1].splitlines() if line.startswith("| 0 (base model)"))
    assert row.endswith(f"| {base['solve_rate']:.3f} | {est.low:.3f} to {est.high:.3f} |")


def test_learning_curve_of_older_runs_and_of_several_runs(tmp_path):
    old = make_run(tmp_path / "old", iterations=3)  # evaluate records without "scores", no compare record
    a, b = make_run(tmp_path / "sdpo", compare=20), make_run(tmp_path / "dpo", loss="dpo", seed=1, compare=20)
    fig = plots.learning_figure(load_runs([old]))
    assert _lines(fig)["old:test_solve_rate"] == [(m["iteration"], pytest.approx(m["solve_rate"]))
                                                  for m in _metrics(old, "evaluate")]
    assert _ci_bars(fig) == {} and "no CI: no per-problem scores recorded" in fig.axes[0].get_title()
    md = markdown(load_runs([old]))
    assert "Trained vs base" not in md and "| 3 | 10 | 80% | 0.300 | – |" in md
    runs = load_runs([a, b, old])
    fig = plots.learning_figure(runs)
    lines, bars = _lines(fig), _ci_bars(fig)
    assert set(lines) == {f"{r.label}:test_solve_rate" for r in runs}
    assert set(bars) == {"sdpo [score-dpo]:test_ci", "dpo [dpo]:test_ci"}
    no_ci = [t for t in _legend_texts(fig) if "no CI" in t]
    assert no_ci == ["old [score-dpo] (no CI: no per-problem scores recorded)"]
    for r in runs:  # dodged sideways by less than half an iteration, values as recorded
        assert [(round(x), y) for x, y in lines[f"{r.label}:test_solve_rate"]] == [
            (m.iteration, pytest.approx(m.solve_rate)) for m in r.tests]
    md = markdown(runs)
    head = next(line for line in md.split("## Comparison")[1].splitlines() if line.startswith("| run |"))
    assert head.endswith("| test: trained − base |")
    d = _metrics(b, "compare")[0]["difference"]
    row = next(line for line in md.splitlines() if line.startswith("| dpo [dpo] |"))
    assert row.endswith(f"| {d['value']:+.3f} (95% CI {d['low']:+.3f} to {d['high']:+.3f}) |")
    assert next(line for line in md.splitlines() if line.startswith("| old [score-dpo] |")).endswith("| – |")


def test_iteration_axes_have_whole_ticks_even_for_one_iteration(tmp_path):
    one = make_run(tmp_path / "one", iterations=1, compare=10)
    several = load_runs([one, make_run(tmp_path / "two", iterations=2, seed=1)])
    for runs in (load_runs([one]), several):
        for name, (make, _) in plots.FIGURES.items():
            for ax in make(runs).axes:
                if not any(w in ax.get_xlabel() for w in ("iteration", "step")):
                    continue
                ticks = list(ax.get_xticks())
                lo, hi = ax.get_xlim()
                shown = [t for t in ticks if lo <= t <= hi]
                assert ticks == [round(t) for t in ticks] and shown, (name, ax.get_title(), ticks)
    ax = plots.score_figure(load_runs([one])).axes[0]
    assert [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] == [1]


# ---- runs and show ---------------------------------------------------------------------------------

def test_runs_lists_statuses_including_a_crash(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is now free: a "running" status with it is a crashed run
    make_run(tmp_path / "done", iterations=2)
    make_run(tmp_path / "live", iterations=2, status="running")  # our own pid: alive
    make_run(tmp_path / "crashed", iterations=2, status="running", pid=dead.pid)
    make_run(tmp_path / "capped", iterations=2, status="stopped", cost=True)
    make_run(tmp_path / "broke", iterations=2, status="failed")
    make_run(tmp_path / "stopped", iterations=2, status="interrupted")
    (tmp_path / "not-a-run").mkdir()
    assert cli_main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    names = {"done", "live", "crashed", "capped", "broke", "stopped"}
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()[:1] and line.split()[0] in names}
    assert set(rows) == names and "not-a-run" not in out, out
    flat = " ".join(out.split())  # the title wraps where the folder's name ends, at 80 columns
    assert "6 runs in" in flat and "(task arith, loss score-dpo)" in flat
    assert "finished" in rows["done"] and "running" in rows["live"] and "crashed, resumable" in rows["crashed"]
    assert "stopped at cap" in rows["capped"] and "failed" in rows["broke"] and "interrupted" in rows["stopped"]
    best = max(m["mean_score"] for m in _metrics(tmp_path / "done"))
    assert " 2/2 " in rows["done"] and f"{best:.3f}" in rows["done"]
    assert "$" in rows["capped"] and "$" not in rows["done"]
    assert cli_main(["runs", str(tmp_path / "nowhere")]) == 2


def test_show_lists_a_problems_workflows_best_first(tmp_path, capsys):
    run = make_run(tmp_path / "a", iterations=2)
    assert cli_main(["show", str(run), "--problem", "1", "--iteration", "2"]) == 0
    out = capsys.readouterr().out
    execs = [json.loads(line) for line in (run / "evaluations.jsonl").read_text().splitlines()]
    wfs = [json.loads(line) for line in (run / "workflows.jsonl").read_text().splitlines()]
    means = {}
    for r in execs:
        if r["iteration"] == 2 and r["problem"] == 1:
            means.setdefault(r["slot"], []).append(r["score"])
    shown = [(int(m.group(1)), float(m.group(2))) for m in re.finditer(r"slot (\d) · score (\d\.\d{3})", out)]
    assert sorted(shown) == sorted((s, round(mean(v), 3)) for s, v in means.items())
    assert [sc for _, sc in shown] == sorted((sc for _, sc in shown), reverse=True)
    rejected = {r["slot"] for r in wfs if r["iteration"] == 2 and r["problem"] == 1} - set(means)
    assert {int(s) for s in re.findall(r"slot (\d) · rejected", out)} == rejected
    assert "async def run_workflow(self):" in out
    assert cli_main(["show", str(run), "--problem", "9"]) == 2
    assert "no problem '9' in iteration 2" in capsys.readouterr().err
    assert cli_main(["show", str(run), "--problem", "0", "--iteration", "7"]) == 2
    assert cli_main(["show", str(run)]) == 2  # --problem is required


# ---- a real run ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_report_and_show_on_a_real_run(demo_run, tmp_path, capsys):
    run = demo_run.run_dir  # the shared demo run (tests/runs.py)
    assert demo_run.rc == 0, demo_run.err
    assert cli_main(["report", str(run), "--out", str(tmp_path / "r")]) == 0
    its = _metrics(run)
    data = load_runs([run])
    lines = _lines(plots.score_figure(data))
    assert lines[f"{run.name}:mean_score"] == [(m["iteration"], pytest.approx(m["mean_score"])) for m in its
                                               if m["valid"]]
    assert lines[f"{run.name}:solve_rate"] == [(m["iteration"], pytest.approx(m["solve_rate"])) for m in its]
    lines = _lines(plots.validity_figure(data))
    assert lines[f"{run.name}:valid_rate"] == [(m["iteration"], pytest.approx(m["valid_rate"])) for m in its]
    wfs = [json.loads(line) for line in (run / "workflows.jsonl").read_text().splitlines()]
    md = (tmp_path / "r" / "report.md").read_text()
    rejected = sum(1 for w in wfs if not w["valid"])
    assert (f"{rejected} rejected attempts in all." in md) if rejected else ("No workflow was rejected." in md)
    assert "```mermaid\nflowchart TD" in md  # the best workflows drawn, with a picture beside each
    assert (tmp_path / "r" / "workflow-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert cli_main(["show", str(run), "--problem", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Problem 0 ({wfs[0]['problem_id']}) · iteration 1 · 2 workflows")
    from scoreflow.tasks import load

    question = next(p.question for p in load("arith", None).problems("validate") if p.id == wfs[0]["problem_id"])
    shown = out.split("\n", 1)[1].split("expected answer:")[0]  # the question, wrapped at the console's width
    assert shown.split() == question.split()  # the task rebuilt from config.toml gives the question
    assert load_run(run).status_label() == "finished"
