"""What run directories hold, as a Markdown report with plots (`scoreflow report`)."""

from __future__ import annotations

import time
from pathlib import Path

from scoreflow.fmt import fmt_number as _f
from scoreflow.errors import UserError
from scoreflow.records import Comparison
from scoreflow.report.frontier import CAPTION as FRONTIER_CAPTION, FRONTIER_PNG, NOTE as FRONTIER_NOTE
from scoreflow.report.frontier import frontier, weighs_cost
from scoreflow.run.rundir import RunData, load_run
from scoreflow.stats import Estimate


def load_runs(paths: list[Path]) -> list[RunData]:
    runs = [load_run(p) for p in paths]
    if len(runs) > 1:
        names = [r.path.name for r in runs]
        for r in runs:
            name = r.path.name if names.count(r.path.name) == 1 else str(r.path)
            loss = r.config.get("train", {}).get("loss")
            r.label = f"{name} [{loss}]" if loss else name
    return runs


def write_report(runs: list[RunData], out: Path) -> Path:
    from scoreflow.report.frontier import frontier_figure
    from scoreflow.report.plots import FIGURES
    from scoreflow.report.workflows import write_pngs

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror or e}") from None
    for name, (make, _) in FIGURES.items():
        make(runs).savefig(out / name, dpi=110)
    if weighted := [r for r in runs if weighs_cost(r)]:
        frontier_figure(weighted).savefig(out / FRONTIER_PNG, dpi=110)
    write_pngs(runs, out)
    path = out / "report.md"
    path.write_text(markdown(runs), encoding="utf-8")
    return path


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _table(head: list[str], rows: list[list[str]], numeric: bool = True) -> str:
    align = ["---"] + ["---:" if numeric else "---"] * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _spend(run: RunData) -> str:
    cost = run.cost()
    return f"{run.executor_calls()} calls, {run.executor_tokens():,} tokens" + (f", ${cost:.2f}" if cost is not None else "")


def _overview(run: RunData) -> str:
    c = run.config
    g, e, t = c.get("generator", {}), c.get("executor", {}), c.get("train", {})
    done, planned = len(run.iterations), run.planned_iterations()
    rows = [["run directory", f"`{run.path}`"], ["status", run.status_label() + (
                f" ({run.status['reason']})" if run.status.get("reason") else "")],
            ["task", str(c.get("run", {}).get("task", "–"))], ["loss", str(t.get("loss", "–"))],
            ["generator", f"{g.get('model', '–')} (k = {g.get('workflows_per_problem', '–')} workflows per problem)"],
            ["executor", " ".join(filter(None, [str(e.get("kind", "–")), e.get("model")]))
             + f" (r = {e.get('runs', '–')} runs per workflow)"],
            ["iterations", f"{done} of {planned if planned is not None else '?'}"],
            ["best mean score", _f(run.best_score())],
            ["executor use", _spend(run)]]
    if run.tests:
        rows.append(["test solve rate", ", ".join(f"{_f(m.solve_rate)} (iteration {m.iteration})"
                                                  for m in run.tests)])
    return _table(["summary", "value"], rows, numeric=False)


def _iterations(run: RunData) -> str:
    if not run.iterations:
        return "No iteration has finished yet.\n"
    rows = []
    for m in run.iterations:
        unique = m.unique_pairs if m.has("unique_pairs") else m.pairs  # older runs lack the field
        rows.append([str(m.iteration), f"{m.valid}/{m.workflows}",
                     _f(m.valid_rate, ".0%"), _f(m.first_attempt_valid_rate, ".0%"),
                     _f(m.mean_score if m.valid else None), _f(m.solve_rate),
                     f"{m.pairs} ({unique})", str(m.steps),
                     _f(m.loss, ".4f"), _f(m.margin, "+.4f"), str(m.executor_calls),
                     f"{m.executor_tokens:,}", _f(m.seconds / 60, ".1f")])
    return _table(["iteration", "valid", "valid rate", "first-attempt valid", "mean score", "solve rate",
                   "pairs (unique)", "steps", "loss", "margin", "executor calls", "executor tokens", "minutes"], rows)


def _ci(est: Estimate | None) -> str:
    return "–" if est is None else f"{est.low:.3f} to {est.high:.3f}"


def _tests(run: RunData) -> str:
    judged = any(m.has("judged_solve_rate") for m in run.tests)  # the executor-judged rate (run.judge), beside it
    rows = [[str(m.iteration) if m.iteration else "0 (base model)", str(m.problems),
             _f(m.valid_rate, ".0%"), _f(m.solve_rate), _ci(run.test_interval(m)),
             *([_f(m.judged_solve_rate)] if judged else [])]
            for m in run.tests]
    return _table(["adapter of iteration", "problems", "valid workflows", "solve rate", "95% CI",
                   *(["judged solve rate"] if judged else [])], rows)


def _frontier(run: RunData) -> str:
    points, unit = frontier(run)
    if not points:
        return "No finished iteration with recorded workflows yet.\n"
    rows = [[p.split, "0 (base model)" if p.split == "test" and not p.iteration else str(p.iteration),
             _f(p.solve_rate), f"${p.cost:#.3g}" if unit == "USD" else f"{p.cost:,.1f}",
             "yes" if p.on_frontier else "no"] for p in points]
    weight = run.config["train"]["cost_weight"]
    return (f"The solve rate (task score) against the executor cost per problem in {unit}; train.cost_weight = "
            f"{weight:g}. On the frontier: no other point of the split is as accurate for less, or more accurate "
            f"for as much.\n\n" + _table(["split", "iteration", "solve rate", f"cost per problem ({unit})",
                                           "on the frontier"], rows))


def _difference(c: Comparison) -> str:
    d = c.difference
    return f"{d['value']:+.3f} (95% CI {d['low']:+.3f} to {d['high']:+.3f})"


def _trained_vs_base(c: Comparison) -> str:
    d = c.difference
    verdict = ("the interval excludes 0: the trained generator is better" if d["low"] > 0 else
               "the interval excludes 0: the trained generator is worse" if d["high"] < 0 else
               "the interval includes 0: no difference shown at this size")
    return (f"Solve rate on the same {c.problems} held-out test problems: base generator (iteration "
            f"{c.base}) {c.base_solve_rate:.3f}, trained generator (iteration {c.trained}) "
            f"{c.trained_solve_rate:.3f}.\n\n**Trained − base: {_difference(c)}**, paired bootstrap over the "
            f"problems; {verdict}.\n")


def _reasons(run: RunData) -> str:
    counts = run.rejection_reasons()
    if not counts:
        return "No workflow was rejected.\n"
    total = sum(counts.values())
    rows = [[r, str(n), f"{n / total:.0%}"] for r, n in counts.most_common(10)]
    return f"{total} rejected attempts in all.\n\n" + _table(["reason", "attempts", "share"], rows)


def _comparison(runs: list[RunData]) -> str:
    rows = []
    for r in runs:
        its = r.iterations
        last = its[-1] if its else None
        rows.append([r.label, str(r.config.get("train", {}).get("loss", "–")), r.status_label(),
                     f"{len(its)}/{r.planned_iterations() or '?'}", _f(r.best_score()),
                     _f(last.mean_score if last and last.valid else None),
                     _f(last and last.solve_rate), _f(r.tests[-1].solve_rate) if r.tests else "–",
                     _f(last and last.valid_rate, ".0%"), f"{r.executor_tokens():,}",
                     _f(r.cost(), ".2f") if r.cost() is not None else "–"])
        if any(x.comparison for x in runs):
            rows[-1].append(_difference(r.comparison) if r.comparison else "–")
    head = ["run", "loss", "status", "iterations", "best mean score", "last mean score", "last solve rate",
            "test solve rate", "last valid rate", "executor tokens", "spend (USD)"]
    return _table(head + (["test: trained − base"] if any(x.comparison for x in runs) else []), rows)


PLOT_NOTES = {
    "learning.png": "Solve rate on the held-out test split per evaluated generator: iteration 0 is the base "
                    "generator, the others the adapter after that iteration. Bars: bootstrap 95% CI over the "
                    "test problems (none for records without per-problem scores). The legend gives the "
                    "trained-minus-base difference with its paired CI when the run compared them.",
    "score.png": "Left: on the optimisation split, the mean score of the valid workflows (solid) and the solve rate "
                 "counting invalid workflows as 0 (dotted), per iteration. Right: the solve rate on the test split "
                 "for each evaluated adapter (iteration 0 is the base model).",
    "valid.png": "Share of workflow slots whose workflow passed validation: after regenerating rejected ones "
                 "(solid) and at the first attempt (dashed). A rising first-attempt rate means the generator "
                 "learnt the workflow format.",
    "score_distribution.png": "Histogram of workflow scores (mean over the executor runs of each workflow), one "
                              "outline per iteration (per run when comparing, its last iteration). Preference "
                              "pairs need spread: all-equal scores give no pairs.",
    "training.png": "Loss and reward margin of every optimiser step, all iterations in order (dotted lines mark "
                    "iteration boundaries for a single run).",
    "executor.png": "Executor tokens and spend (calls when the executor has no prices), cumulative over "
                    "iterations.",
}


def markdown(runs: list[RunData]) -> str:
    from scoreflow.report.plots import FIGURES
    from scoreflow.report.workflows import section

    main_run = runs[0]
    title = " vs ".join(r.label for r in runs) if len(runs) > 1 else main_run.label
    parts = [f"# ScoreFlow report: {title}\n", f"Written {time.strftime('%Y-%m-%d %H:%M')}.\n"]
    if len(runs) > 1:
        parts += ["## Comparison\n", _comparison(runs)]
    for i, r in enumerate(runs, 1):
        h = "##" if len(runs) == 1 else "###"
        if len(runs) > 1:
            parts.append(f"## {r.label}\n")
        parts.append(_overview(r))
        if r.comparison:
            parts += [f"{h} Trained vs base\n", _trained_vs_base(r.comparison)]
        parts += [f"{h} Iterations\n", _iterations(r)]
        if r.tests:
            parts += [f"{h} Test split\n", _tests(r)]
        if weighs_cost(r):
            parts += [f"{h} {FRONTIER_CAPTION}\n", _frontier(r)]
        parts += [f"{h} Rejected workflows\n", _reasons(r)]
        parts += [f"{h} Best workflows\n", section(r, h, i if len(runs) > 1 else None)]
    parts.append("## Plots\n")
    for name, (_, caption) in FIGURES.items():
        parts += [f"### {caption}\n", f"![{caption}]({name})\n", PLOT_NOTES[name] + "\n"]
    if any(weighs_cost(r) for r in runs):
        parts += [f"### {FRONTIER_CAPTION}\n", f"![{FRONTIER_CAPTION}]({FRONTIER_PNG})\n", FRONTIER_NOTE + "\n"]
    return "\n".join(parts)


# ---- runs --------------------------------------------------------------------------------------
