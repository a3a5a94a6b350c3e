"""`scoreflow report`, `scoreflow runs` and `scoreflow show`: what a run directory holds, as a
Markdown report with plots, a list of runs, or one problem's workflows."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, NoReturn

from scoreflow.fmt import fmt_count, fmt_number as _f
from scoreflow.errors import UserError
from scoreflow.extras import require
from scoreflow.run.records import Comparison
from scoreflow.run.rundir import RunData, is_run_dir, load_run
from scoreflow.stats import Estimate


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}")


def main(command: str, argv: list[str]) -> int:
    return {"report": cmd_report, "runs": cmd_runs, "show": cmd_show}[command](argv)


def _console() -> Any:
    from rich.console import Console

    class PipedConsole(Console):
        def on_broken_pipe(self) -> None:
            # rich's own exits with 1; main() ends a closed pipe quietly with 0, as for every command.
            raise BrokenPipeError

    return PipedConsole(highlight=False)


# ---- report ------------------------------------------------------------------------------------

def cmd_report(argv: list[str]) -> int:
    p = _Parser(prog="scoreflow report", description="write report.md and PNG plots for a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--compare", type=Path, nargs="+", default=[], metavar="RUN",
                   help="other runs to overlay in the same plots (e.g. a DPO run beside Score-DPO)")
    p.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/report)")
    args = p.parse_args(argv)
    require("matplotlib", "scoreflow report")
    runs = load_runs([args.run_dir, *args.compare])
    out = args.out or args.run_dir / "report"
    path = write_report(runs, out)
    print(path)
    return 0


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
    from scoreflow.report.plots import FIGURES

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {out}: {e.strerror or e}") from None
    for name, (make, _) in FIGURES.items():
        make(runs).savefig(out / name, dpi=110)
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

    main_run = runs[0]
    title = " vs ".join(r.label for r in runs) if len(runs) > 1 else main_run.label
    parts = [f"# ScoreFlow report: {title}\n", f"Written {time.strftime('%Y-%m-%d %H:%M')}.\n"]
    if len(runs) > 1:
        parts += ["## Comparison\n", _comparison(runs)]
    for r in runs:
        h = "##" if len(runs) == 1 else "###"
        if len(runs) > 1:
            parts.append(f"## {r.label}\n")
        parts.append(_overview(r))
        if r.comparison:
            parts += [f"{h} Trained vs base\n", _trained_vs_base(r.comparison)]
        parts += [f"{h} Iterations\n", _iterations(r)]
        if r.tests:
            parts += [f"{h} Test split\n", _tests(r)]
        parts += [f"{h} Rejected workflows\n", _reasons(r)]
    parts.append("## Plots\n")
    for name, (_, caption) in FIGURES.items():
        parts += [f"### {caption}\n", f"![{caption}]({name})\n", PLOT_NOTES[name] + "\n"]
    return "\n".join(parts)


# ---- runs --------------------------------------------------------------------------------------

def cmd_runs(argv: list[str]) -> int:
    from rich.table import Table

    p = _Parser(prog="scoreflow runs", description="list the runs in a folder")
    p.add_argument("dir", type=Path, nargs="?", default=Path("runs"))
    args = p.parse_args(argv)
    if not args.dir.is_dir():
        raise UserError(f"no runs folder at {args.dir}")
    paths = [args.dir] if is_run_dir(args.dir) else sorted(
        (d for d in args.dir.iterdir() if is_run_dir(d)), key=lambda d: d.stat().st_mtime)
    console = _console()
    if not paths:
        console.print(f"no runs in {args.dir}")
        return 0
    runs = [load_run(d) for d in paths]
    task = {r.path: str(r.config.get("run", {}).get("task", "–")) for r in runs}
    loss = {r.path: str(r.config.get("train", {}).get("loss", "–")) for r in runs}
    shared = [f"{name} {next(iter(v.values()))}" for name, v in (("task", task), ("loss", loss))
              if len(set(v.values())) == 1]
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0),
                  title=f"{len(runs)} run{'s' if len(runs) != 1 else ''} in {args.dir}"
                  + (f" ({', '.join(shared)})" if shared else ""), title_justify="left")
    cols = ["run"] + [c for c, v in (("task", task), ("loss", loss)) if len(set(v.values())) > 1]
    judged = any(r.tests and r.tests[-1].has("judged_solve_rate") for r in runs)
    cols += ["status", "iters", "best", "test", *(["judged"] if judged else []), "tokens", "spend"]
    cols += ["updated"] if console.width >= 110 else []
    for col in cols:
        table.add_column(col, justify="right" if col in ("iters", "best", "test", "judged", "tokens", "spend")
                         else "left",
                         no_wrap=col != "run", overflow="fold",
                         min_width=min(12, max(len(r.path.name) for r in runs)) if col == "run" else None)
    for r in runs:
        status = r.status_label()
        style = {"finished": "green", "running": "cyan", "crashed, resumable": "red", "failed": "red"}.get(status,
                                                                                                      "yellow")
        cells = {"run": r.path.name, "task": task[r.path], "loss": loss[r.path], "status": f"[{style}]{status}[/]",
                 "iters": f"{len(r.iterations)}/{r.planned_iterations() or '?'}", "best": _f(r.best_score()),
                 "test": _f(r.tests[-1].solve_rate) if r.tests else "–",
                 "judged": _f(r.tests[-1].judged_solve_rate) if r.tests else "–",
                 "tokens": fmt_count(r.executor_tokens()),
                 "spend": f"${r.cost():.2f}" if r.cost() is not None else "–",
                 "updated": str(r.status.get("updated", "–")).replace("T", " ")[:16]}
        table.add_row(*(cells[c] for c in cols))
    console.print(table)
    return 0


# ---- show --------------------------------------------------------------------------------------

def cmd_show(argv: list[str]) -> int:
    from scoreflow.report.show import show

    p = _Parser(prog="scoreflow show", description="print a problem's workflows with their scores, best first")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--problem", required=True, metavar="I", help="problem index in the run (or its id)")
    p.add_argument("--iteration", type=int, metavar="N", help="iteration (default: the latest with workflows)")
    args = p.parse_args(argv)
    show(load_run(args.run_dir), args.problem, args.iteration, _console())
    return 0
