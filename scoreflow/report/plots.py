"""The report's figures, one function per PNG. Each returns a matplotlib `Figure` (no pyplot, so no
global state and no display); every plotted series carries a gid "LABEL:SERIES" so tests and
tools can read the numbers back from the figure."""

from __future__ import annotations

from itertools import accumulate
from typing import Any, Callable

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from scoreflow.run.rundir import RunData

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
SCORE_BINS = 10


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _iteration_axis(ax, xs: list[int] | None = None) -> None:
    """Whole iterations only; a single iteration gets room around it instead of 0.945 … 1.055."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if xs and max(xs) == min(xs):
        ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)


def _xs(ax) -> list[int]:
    return [int(round(x)) for line in ax.get_lines() for x in line.get_xdata()]


def _legend(fig: Figure, axes: list, runs: list[RunData], styles: list[tuple[str, str]]) -> None:
    """One run: a legend in each axes with what each line style means. Several runs: one legend
    under the figure, a colour per run then the styles in grey, so no legend covers the data."""
    from matplotlib.lines import Line2D

    if len(runs) == 1:
        for ax in axes:
            if any(len(line.get_xdata()) for line in ax.get_lines()):
                ax.legend(fontsize=8, loc="best")
        return
    cols = max(min(4, len(runs)), len(styles))
    colours = [Line2D([], [], color=_color(i), linewidth=2.5, label=r.label) for i, r in enumerate(runs)]
    kinds = [Line2D([], [], color="0.35", linestyle=fmt.lstrip("osD^"), marker=fmt[0], label=text)
             for fmt, text in styles]
    rows = [colours[k:k + cols] for k in range(0, len(colours), cols)] + ([kinds] if kinds else [])
    rows = [row + [Line2D([], [], visible=False, label=" ")] * (cols - len(row)) for row in rows]
    handles = [row[c] for c in range(cols) for row in rows]  # legends fill by column: one row per line kind
    fig.legend(handles=handles, loc="outside lower center", ncols=cols, fontsize=8, frameon=False)


def _label(run: RunData, runs: list[RunData], text: str) -> str:
    return text if len(runs) == 1 else f"{run.label}: {text}"


def score_figure(runs: list[RunData]) -> Figure:
    fig = Figure(figsize=(10, 4 + 0.25 * ((len(runs) + 6) // 4) * (len(runs) > 1)), layout="constrained")
    opt, test = fig.subplots(1, 2)
    any_test = False
    for i, run in enumerate(runs):
        its = run.iterations
        x = [m.iteration for m in its]
        scored = [m for m in its if m.valid]  # without a valid workflow there is no mean score
        opt.plot([m.iteration for m in scored], [m.mean_score for m in scored], "o-", color=_color(i),
                 gid=f"{run.label}:mean_score", label=_label(run, runs, "mean score of valid workflows"))
        opt.plot(x, [m.solve_rate for m in its], "s:", color=_color(i), alpha=0.8, gid=f"{run.label}:solve_rate",
                 label=_label(run, runs, "solve rate (invalid = 0)"))
        if run.tests:
            any_test = True
            test.plot([m.iteration for m in run.tests], [m.solve_rate for m in run.tests], "D-",
                      color=_color(i), gid=f"{run.label}:test_solve_rate", label=_label(run, runs, "test solve rate"))
    opt.set_title("Optimisation split (the problems trained on)")
    opt.set_ylabel("score")
    opt.set_ylim(-0.03, 1.03)
    _iteration_axis(opt, _xs(opt))
    if any_test:
        test.set_title("Test split: solve rate (iteration 0 = base model)")
        test.set_ylabel("solve rate")
        test.set_ylim(-0.03, 1.03)
        _iteration_axis(test, _xs(test))
    else:
        test.set_title("Test split")
        _empty(test, "not evaluated yet:\nscoreflow evaluate --run-dir RUN")
    if not any(run.iterations for run in runs):
        _empty(opt, "no finished iteration yet")
    _legend(fig, [opt, test], runs, [("o-", "mean score of valid workflows"), ("s:", "solve rate (invalid = 0)")]
            + ([("D-", "test solve rate")] if any_test else []))
    return fig


def validity_figure(runs: list[RunData]) -> Figure:
    fig = Figure(figsize=(7, 4 + 0.25 * ((len(runs) + 5) // 4) * (len(runs) > 1)), layout="constrained")
    ax = fig.subplots()
    for i, run in enumerate(runs):
        its = run.iterations
        x = [m.iteration for m in its]
        ax.plot(x, [m.valid_rate for m in its], "o-", color=_color(i), gid=f"{run.label}:valid_rate",
                label=_label(run, runs, "valid after regeneration"))
        ax.plot(x, [m.first_attempt_valid_rate for m in its], "^--", color=_color(i), alpha=0.8,
                gid=f"{run.label}:first_attempt_valid_rate", label=_label(run, runs, "valid at the first attempt"))
    ax.set_title("Generated workflows that pass validation")
    ax.set_ylabel("share of workflow slots")
    ax.set_ylim(-0.03, 1.03)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _iteration_axis(ax, _xs(ax))
    _legend(fig, [ax], runs, [("o-", "valid after regeneration"), ("^--", "valid at the first attempt")])
    if not any(run.iterations for run in runs):
        _empty(ax, "no finished iteration yet")
    return fig


def learning_figure(runs: list[RunData]) -> Figure:
    """Held-out test solve rate by iteration (0 = the base generator) with bootstrap 95% CIs over
    the problems; several runs are dodged sideways so their bars do not hide each other."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    tested = [(i, run) for i, run in enumerate(runs) if run.tests]
    intervals = [[RunData.test_interval(m) for m in run.tests] for _, run in tested]
    with_ci = [any(ci is not None for ci in run_cis) for run_cis in intervals]
    mixed_ci = any(with_ci) and not all(with_ci)
    for j, (i, run) in enumerate(tested):
        dx = (j - (len(tested) - 1) / 2) * 0.08 if len(tested) > 1 else 0.0
        x = [m.iteration + dx for m in run.tests]
        y = [m.solve_rate for m in run.tests]
        label = run.label if len(runs) > 1 else "test solve rate"
        if mixed_ci and not with_ci[j]:
            label += " (no CI: no per-problem scores recorded)"
        cmp = run.comparison
        if cmp:
            d = cmp.difference
            label += (f" (iteration {cmp.trained} − base: {d['value']:+.3f}, "
                      f"95% CI {d['low']:+.3f} to {d['high']:+.3f})")
        ax.plot(x, y, "o-", color=_color(i), gid=f"{run.label}:test_solve_rate", label=label, zorder=3)
        cis = [(xi, yi, ci) for xi, yi, ci in zip(x, y, intervals[j]) if ci is not None]
        if cis:
            bars = ax.errorbar([c[0] for c in cis], [c[1] for c in cis],
                               yerr=[[c[1] - c[2].low for c in cis], [c[2].high - c[1] for c in cis]],
                               fmt="none", ecolor=_color(i), elinewidth=1.5, capsize=5, alpha=0.8)
            bars.lines[2][0].set_gid(f"{run.label}:test_ci")
    problems = sorted({m.problems for _, run in tested for m in run.tests} - {None})
    notes = ["iteration 0 = base generator"] + ([f"{'/'.join(format(n, 'g') for n in problems)} problems"]
                                               if problems else [])
    notes += (["bars: 95% bootstrap CI over the problems"] if any(with_ci) else
              ["no CI: no per-problem scores recorded"] if tested else [])
    ax.set_title("Learning curve: solve rate on held-out test problems\n(" + "; ".join(notes) + ")", fontsize=11)
    if tested:
        ax.set_ylabel("test solve rate")
        ax.set_ylim(-0.03, 1.03)
        _iteration_axis(ax, _xs(ax))
        long = any(run.comparison for _, run in tested) or mixed_ci
        fig.legend(loc="outside lower center", fontsize=8, frameon=False, ncols=1 if long else min(3, len(tested)))
    else:
        _empty(ax, "not evaluated on the test split yet: set run.compare = true, or\n"
                   "scoreflow evaluate --run-dir RUN --iteration 0, then again without --iteration")
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
        its = [m.iteration for m in run.iterations]
        if len(its) > 4:
            its = sorted({its[round(j * (len(its) - 1) / 3)] for j in range(4)})
        ramp = _ramp(len(its))
        series = [(f"iteration {it}", f"{run.label}:scores:{it}", run.workflow_scores(it), ramp(j))
                  for j, it in enumerate(its)]
    else:
        for i, run in enumerate(runs):
            if run.iterations:
                it = run.iterations[-1].iteration
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
        executed = any(m.valid for run in runs for m in run.iterations)
        _empty(ax, "no per-workflow scores in the executions" if executed else
               "no workflow was executed yet (none was valid)")
    return fig


def _ramp(n: int) -> Callable[[int], tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return lambda j: cmap(0.15 + 0.7 * (j / max(1, n - 1)))


def _loss_name(run: RunData) -> str:
    return str(run.config.get("train", {}).get("loss", ""))


def training_figure(runs: list[RunData]) -> Figure:
    """Loss and reward margin per optimiser step. Runs with different losses get one loss panel per
    loss: an SFT loss near 3 would flatten the DPO losses near 0.69 into one line."""
    kinds = list(dict.fromkeys(_loss_name(r) for r in runs if r.train)) or [""]
    fig = Figure(figsize=(10, 2.75 * (len(kinds) + 1) + 0.25 * (len(runs) > 1)), layout="constrained")
    *loss_axes, margin_ax = fig.subplots(len(kinds) + 1, 1, sharex=True)
    by_kind = dict(zip(kinds, loss_axes))
    for i, run in enumerate(runs):
        steps = sorted(run.train, key=lambda r: (r.iteration, r.step))
        if not steps:
            continue
        x = list(range(1, len(steps) + 1))
        marker = "." if len(x) < 60 else None
        by_kind[_loss_name(run)].plot(x, [r.loss for r in steps], "-", marker=marker, color=_color(i),
                                      gid=f"{run.label}:loss", label=run.label)
        margin_ax.plot(x, [r.margin for r in steps], "-", marker=marker, color=_color(i),
                       gid=f"{run.label}:margin", label=run.label)
        if len(runs) == 1:  # iteration boundaries, and each iteration named above its steps
            starts = [j for j in range(len(steps)) if not j or steps[j].iteration != steps[j - 1].iteration]
            for j in starts[1:]:
                for ax in (*loss_axes, margin_ax):
                    ax.axvline(j + 0.5, color="0.6", linestyle=":", linewidth=1)
            top = loss_axes[0].secondary_xaxis("top")
            top.set_xticks([(a + b + 1) / 2 for a, b in zip(starts, starts[1:] + [len(steps)])],
                           labels=[f"iteration {steps[j].iteration}" for j in starts])
            top.tick_params(length=0, labelsize=8, labelcolor="0.35")
    for kind, ax in by_kind.items():
        ax.set_title(f"Training{' (' + kind + ')' if kind else ''}: loss per optimiser step (lower is better)")
        ax.set_ylabel("loss")
    margin_ax.set_title("Reward margin, chosen minus rejected (higher is better)")
    margin_ax.set_ylabel("margin")
    margin_ax.axhline(0, color="0.5", linewidth=0.8)
    margin_ax.set_xlabel("optimiser step (all iterations in order)")
    for ax in (*loss_axes, margin_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    drawn = any(run.train for run in runs)
    if drawn:
        _legend(fig, [], runs, [])
    else:
        _empty(loss_axes[0], "no optimiser step yet (an iteration without preference pairs trains nothing)")
        _empty(margin_ax, "")
    return fig


def executor_figure(runs: list[RunData]) -> Figure:
    fig = Figure(figsize=(10, 4), layout="constrained")
    tok_ax, right = fig.subplots(1, 2)
    priced = any(run.cost() is not None for run in runs)
    for i, run in enumerate(runs):
        its = run.iterations
        x = [m.iteration for m in its]
        tok_ax.plot(x, list(accumulate(int(m.executor_tokens) for m in its)), "o-", color=_color(i),
                    gid=f"{run.label}:executor_tokens", label=run.label)
        if priced:
            right.plot(x, list(accumulate(run.iteration_cost(m) or 0.0 for m in its)), "o-", color=_color(i),
                       gid=f"{run.label}:cost_usd", label=run.label)
        else:
            right.plot(x, list(accumulate(int(m.executor_calls) for m in its)), "o-", color=_color(i),
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
        _iteration_axis(ax, _xs(ax))
        top = max((y for line in ax.get_lines() for y in line.get_ydata()), default=0.0)
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1], 1.1 * top))  # headroom above the last point
    _legend(fig, [], runs, [])
    if not any(run.iterations for run in runs):
        _empty(tok_ax, "no finished iteration yet")
        _empty(right, "")
    return fig


FIGURES: dict[str, tuple[Callable[[list[RunData]], Figure], str]] = {
    "learning.png": (learning_figure, "Learning curve on the test split"),
    "score.png": (score_figure, "Score per iteration"),
    "valid.png": (validity_figure, "Valid-workflow rate"),
    "score_distribution.png": (distribution_figure, "Workflow score distribution"),
    "training.png": (training_figure, "Training loss and reward margin"),
    "executor.png": (executor_figure, "Executor tokens and spend"),
}
