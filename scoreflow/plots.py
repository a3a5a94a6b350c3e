"""The report's figures, one function per PNG. Each returns a matplotlib `Figure` (no pyplot, so no
global state and no display); every plotted series carries a gid "LABEL:SERIES" so tests and
tools can read the numbers back from the figure."""

from __future__ import annotations

from itertools import accumulate
from typing import Any, Callable

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .runload import RunData

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
SCORE_BINS = 10


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _iteration_axis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)


def _legend(ax, runs: list[RunData]) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def score_figure(runs: list[RunData]) -> Figure:
    fig = Figure(figsize=(10, 4), layout="constrained")
    opt, test = fig.subplots(1, 2)
    any_test = False
    for i, run in enumerate(runs):
        its = run.iterations
        x = [m["iteration"] for m in its]
        scored = [m for m in its if m.get("valid")]  # without a valid workflow there is no mean score
        opt.plot([m["iteration"] for m in scored], [m["mean_score"] for m in scored], "o-", color=_color(i),
                 gid=f"{run.label}:mean_score", label=f"{run.label}: mean score of valid workflows")
        opt.plot(x, [m["solve_rate"] for m in its], "s:", color=_color(i), alpha=0.8, gid=f"{run.label}:solve_rate",
                 label=f"{run.label}: solve rate (invalid = 0)")
        if run.tests:
            any_test = True
            test.plot([m["iteration"] for m in run.tests], [m["solve_rate"] for m in run.tests], "D-",
                      color=_color(i), gid=f"{run.label}:test_solve_rate", label=run.label)
    opt.set_title("Optimisation split (the problems trained on)")
    opt.set_ylabel("score")
    opt.set_ylim(-0.03, 1.03)
    _iteration_axis(opt)
    _legend(opt, runs)
    if any_test:
        test.set_title("Test split: solve rate (iteration 0 = base model)")
        test.set_ylim(-0.03, 1.03)
        _iteration_axis(test)
        _legend(test, runs)
    else:
        test.set_title("Test split")
        _empty(test, "not evaluated yet:\nscoreflow evaluate --run-dir RUN")
    if not any(run.iterations for run in runs):
        _empty(opt, "no finished iteration yet")
    return fig


def validity_figure(runs: list[RunData]) -> Figure:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    for i, run in enumerate(runs):
        its = run.iterations
        x = [m["iteration"] for m in its]
        ax.plot(x, [m["valid_rate"] for m in its], "o-", color=_color(i), gid=f"{run.label}:valid_rate",
                label=f"{run.label}: valid after regeneration")
        ax.plot(x, [m.get("first_attempt_valid_rate", 0.0) for m in its], "^--", color=_color(i), alpha=0.8,
                gid=f"{run.label}:first_attempt_valid_rate", label=f"{run.label}: valid at the first attempt")
    ax.set_title("Generated workflows that pass validation")
    ax.set_ylabel("share of workflow slots")
    ax.set_ylim(-0.03, 1.03)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _iteration_axis(ax)
    _legend(ax, runs)
    if not any(run.iterations for run in runs):
        _empty(ax, "no finished iteration yet")
    return fig


def score_histogram(scores: list[float], bins: int = SCORE_BINS) -> list[int]:
    counts = [0] * bins
    for s in scores:
        counts[min(bins - 1, max(0, int(s * bins)))] += 1
    return counts


def distribution_figure(runs: list[RunData]) -> Figure:
    """Grouped bars. Single run: up to four iterations (first, last, evenly between). Several runs:
    each run's last iteration."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    series: list[tuple[str, str, list[float], Any]] = []
    if len(runs) == 1:
        run = runs[0]
        its = [m["iteration"] for m in run.iterations]
        if len(its) > 4:
            its = sorted({its[round(j * (len(its) - 1) / 3)] for j in range(4)})
        ramp = _ramp(len(its))
        series = [(f"iteration {it}", f"{run.label}:scores:{it}", run.workflow_scores(it), ramp(j))
                  for j, it in enumerate(its)]
    else:
        for i, run in enumerate(runs):
            if run.iterations:
                it = run.iterations[-1]["iteration"]
                series.append((f"{run.label}, iteration {it}", f"{run.label}:scores:{it}",
                               run.workflow_scores(it), _color(i)))
    series = [s for s in series if s[2]]
    width = 1 / SCORE_BINS
    for j, (label, gid, scores, color) in enumerate(series):
        bar_w = 0.9 * width / len(series)
        x = [b * width + 0.05 * width + (j + 0.5) * bar_w for b in range(SCORE_BINS)]
        ax.bar(x, score_histogram(scores), width=bar_w, color=color, gid=gid,
               label=f"{label} ({len(scores)} workflows)")
    ax.set_title("Distribution of workflow scores (mean over executor runs)")
    ax.set_xlabel(f"workflow score ({SCORE_BINS} bins; 1.0 falls in the last)")
    ax.set_ylabel("workflows")
    ax.set_xlim(0, 1)
    ax.set_xticks([b / SCORE_BINS for b in range(SCORE_BINS + 1)])
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    if series:
        ax.legend(fontsize=8)
    else:
        _empty(ax, "no workflow was executed yet (none was valid)")
    return fig


def _ramp(n: int) -> Callable[[int], tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return lambda j: cmap(0.15 + 0.7 * (j / max(1, n - 1)))


def training_figure(runs: list[RunData]) -> Figure:
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    loss_ax, margin_ax = fig.subplots(2, 1, sharex=True)
    drawn = False
    for i, run in enumerate(runs):
        steps = sorted(run.train, key=lambda r: (r["iteration"], r["step"]))
        if not steps:
            continue
        drawn = True
        x = list(range(1, len(steps) + 1))
        loss_ax.plot(x, [r["loss"] for r in steps], "-", marker="." if len(x) < 60 else None, color=_color(i),
                     gid=f"{run.label}:loss", label=run.label)
        margin_ax.plot(x, [r["margin"] for r in steps], "-", marker="." if len(x) < 60 else None, color=_color(i),
                       gid=f"{run.label}:margin", label=run.label)
        if len(runs) == 1:
            for j in range(1, len(steps)):
                if steps[j]["iteration"] != steps[j - 1]["iteration"]:
                    for ax in (loss_ax, margin_ax):
                        ax.axvline(j + 0.5, color="0.6", linestyle=":", linewidth=1)
                    loss_ax.annotate(f"iteration {steps[j]['iteration']}", (j + 0.7, 0.97), xycoords=("data", "axes fraction"),
                                     va="top", fontsize=8, color="0.4")
    losses = sorted({str(r.config.get("train", {}).get("loss", "")) for r in runs} - {""})
    loss_ax.set_title(f"Training{' (' + ', '.join(losses) + ')' if losses else ''}: loss per optimiser step "
                      "(lower is better)")
    loss_ax.set_ylabel("loss")
    margin_ax.set_title("Reward margin, chosen minus rejected (higher is better)")
    margin_ax.set_ylabel("margin")
    margin_ax.axhline(0, color="0.5", linewidth=0.8)
    margin_ax.set_xlabel("optimiser step (all iterations in order)")
    for ax in (loss_ax, margin_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if drawn and len(runs) > 1:
        loss_ax.legend(fontsize=8)
    if not drawn:
        _empty(loss_ax, "no optimiser step yet (an iteration without preference pairs trains nothing)")
        _empty(margin_ax, "")
    return fig


def executor_figure(runs: list[RunData]) -> Figure:
    fig = Figure(figsize=(10, 4), layout="constrained")
    tok_ax, right = fig.subplots(1, 2)
    priced = any(run.cost() is not None for run in runs)
    for i, run in enumerate(runs):
        its = run.iterations
        x = [m["iteration"] for m in its]
        tok_ax.plot(x, list(accumulate(int(m.get("executor_tokens", 0)) for m in its)), "o-", color=_color(i),
                    gid=f"{run.label}:executor_tokens", label=run.label)
        if priced:
            right.plot(x, list(accumulate(run.iteration_cost(m) or 0.0 for m in its)), "o-", color=_color(i),
                       gid=f"{run.label}:cost_usd", label=run.label)
        else:
            right.plot(x, list(accumulate(int(m.get("executor_calls", 0)) for m in its)), "o-", color=_color(i),
                       gid=f"{run.label}:executor_calls", label=run.label)
    tok_ax.set_title("Executor tokens, cumulative")
    tok_ax.set_ylabel("tokens")
    if priced:
        right.set_title("Executor spend, cumulative")
        right.set_ylabel("USD")
    else:
        right.set_title("Executor calls, cumulative\n(no prices: local executor or unpriced model)", fontsize=10)
        right.set_ylabel("calls")
    for ax in (tok_ax, right):
        _iteration_axis(ax)
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))  # keep autoscale's headroom above the last point
        if len(runs) > 1:
            ax.legend(fontsize=8)
    if not any(run.iterations for run in runs):
        _empty(tok_ax, "no finished iteration yet")
    return fig


FIGURES: dict[str, tuple[Callable[[list[RunData]], Figure], str]] = {
    "score.png": (score_figure, "Score per iteration"),
    "valid.png": (validity_figure, "Valid-workflow rate"),
    "score_distribution.png": (distribution_figure, "Workflow score distribution"),
    "training.png": (training_figure, "Training loss and reward margin"),
    "executor.png": (executor_figure, "Executor tokens and spend"),
}
