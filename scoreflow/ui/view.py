"""The live dashboard's screen, drawn from a `DashState` at the console's width and height.

Every line is cut rather than wrapped, so each section has a known height and the screen can be fitted
to the terminal: below `TALL` rows the score histogram shrinks to one line and blank lines go.
"""

from __future__ import annotations

import time

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from scoreflow.ui.state import EVAL_PIPELINE, PIPELINE, SCORE_BINS, DashState, StageProgress, comparison_text
from scoreflow.fmt import fmt_count, fmt_duration, fmt_number as _fmt, fmt_rate
from scoreflow.records import Comparison, IterationMetrics, Metrics, TestMetrics, as_metrics

SPARKS = "▁▂▃▄▅▆▇█"
TALL = 36


def sparkline(values: list[float], width: int) -> str:
    vals = values[-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        return SPARKS[3] * len(vals)
    return "".join(SPARKS[min(7, int((v - lo) / (hi - lo) * 8))] for v in vals)


def histogram(scores: list[float], bins: int = SCORE_BINS) -> list[int]:
    counts = [0] * bins
    for s in scores:
        counts[min(bins - 1, max(0, int(s * bins)))] += 1
    return counts


def _line(*parts: str | tuple[str, str]) -> Text:
    t = Text(no_wrap=True, overflow="ellipsis")
    for p in parts:
        if isinstance(p, tuple):
            t.append(*p)
        else:
            t.append(p)
    return t


def _bar(done: int, total: int, width: int, active: bool) -> Text:
    filled = width if total <= 0 else round(width * min(done, total) / total)
    t = Text(no_wrap=True)
    t.append("━" * filled, style="yellow" if active else "green")
    if filled < width:
        t.append("╺" + "─" * (width - filled - 1), style="grey35")
    return t


def _header(st: DashState, width: int) -> list[Text]:
    info = st.info
    if info is None:
        return [_line(("ScoreFlow", "bold magenta"), ("  starting", "dim"))]
    loss = st.config.get("train", {}).get("loss")
    first = _line(("ScoreFlow", "bold magenta"), ("  task ", "dim"), (info.task, "bold"))
    if loss:
        first.append_text(_line(("  loss ", "dim"), (str(loss), "bold")))
    first.append_text(_line(("  backend ", "dim"), f"{info.backend} on {info.device}",
                            ("  elapsed ", "dim"), fmt_duration(time.time() - st.t_start)))
    second = _line(("generator ", "dim"), info.generator, ("  executor ", "dim"), info.executor or "–")
    third = _line(("run ", "dim"), info.run_dir)
    if width >= 140:
        second.append_text(_line(("  run ", "dim"), info.run_dir))
        return [first, second]
    return [first, second, third]


def _stage_row(s: StageProgress | None, name: str, bar_w: int, now: float) -> Text:
    if s is None:
        return _line("  ", (f"{name:<9}", "dim"), _bar(0, 1, bar_w, False))
    done = s.ended is not None or s.done >= s.total
    t = _line(("✔ ", "green") if done else ("▶ ", "bold yellow"), (f"{name:<9}", "" if done else "bold"))
    t.append_text(_bar(s.done, s.total, bar_w, not done))
    t.append(f" {s.done:>4}/{s.total:<4}")
    t.append(f"{fmt_rate(s.rate(now)):>8}")
    t.append(f"  {fmt_duration(s.elapsed(now))}")
    if not done:
        t.append(f" ETA {fmt_duration(s.eta(now))}", style="bold")
    return t


def _stages(st: DashState, width: int) -> list[Text]:
    now = time.time()
    if st.evaluating:
        title = _line(("Evaluation", "bold cyan"), f" on the test split with the adapter of iteration {st.iteration}"
                      if st.iteration else " on the test split with the base model")
    elif st.iteration:
        total = st.info.iterations if st.info else 0
        title = _line((f"Iteration {st.iteration}/{total}", "bold cyan"))
        if st.current:
            title.append_text(_line("  stage ", (st.current, "bold")))
        attempt = max((s.attempt for s in st.stages.values()), default=1)
        if attempt > 1 and st.current in ("generate", "validate"):
            title.append(f"  (regenerating rejected workflows, attempt {attempt})", style="dim")
    else:
        title = _line(("Loading the models…", "dim"))
    names = list(EVAL_PIPELINE if st.evaluating else PIPELINE)
    names += [n for n in st.stages if n not in names]
    bar_w = max(10, width - 47)
    return [title] + [_stage_row(st.stages.get(n), n, bar_w, now) for n in names]


def _workflows(st: DashState, rows: int) -> list[Text]:
    n = st.valid + st.rejected
    valid = f"{st.valid}/{st.slots} valid" if st.slots >= st.valid else f"{st.valid} valid"
    head = _line(("Workflows ", "bold"), (valid, "green"), " · ", (f"{st.rejected} rejected", "red"))
    lines = [head]
    top = st.reasons.most_common(rows)
    for reason, count in top:
        lines.append(_line(f"{count:>4} ", (reason, "dim")))
    if not top:
        lines.append(_line(("     no rejections" if n else "     none validated yet", "dim")))
    return lines


def _scores(st: DashState, width: int, tall: bool) -> list[Text]:
    head = _line(("Scores ", "bold"))
    if st.scores:
        head.append_text(_line((f"mean {sum(st.scores) / len(st.scores):.3f}", "bold"), f" of {len(st.scores)}"))
    else:
        head.append("none yet", style="dim")
    if st.all_scores and len(st.all_scores) != len(st.scores):
        head.append(f" · run {sum(st.all_scores) / len(st.all_scores):.3f}", style="dim")
    counts = histogram(st.scores)
    top = max(counts) or 1
    if not tall:
        levels = "".join(" " if c == 0 else SPARKS[max(0, round(7 * c / top))] for c in counts)
        return [head, _line(("  0 ", "dim"), (levels, "blue"), (" 1", "dim"), "   ",
                            ("counts " + " ".join(str(c) for c in counts), "dim"))]
    bar_w = max(4, min(30, width - 18))
    lines = [head]
    for i, c in enumerate(counts):
        lines.append(_line((f"  {i / SCORE_BINS:.1f}–{(i + 1) / SCORE_BINS:.1f} ", "dim"),
                           ("█" * round(bar_w * c / top), "blue"), f" {c}"))
    return lines


def _executor(st: DashState, width: int) -> list[Text]:
    u = st.usage()
    t = _line(("Executor ", "bold"), f"{u['calls']} calls · {fmt_count(u['tokens'])} tokens")
    if u["max_total_tokens"]:
        t.append(f" / {fmt_count(u['max_total_tokens'])} cap")
    cost = u["cost_usd"]
    if cost is not None or u["max_cost_usd"]:
        t.append(" · spend " + (f"${cost:.2f}" if cost is not None else "n/a"))
        if u["max_cost_usd"]:
            t.append(f" / ${u['max_cost_usd']:.2f} cap")
    rest = _line(f"{fmt_rate(u['calls_per_s'])[:-2] if u['calls_per_s'] is not None else '–'} calls/s · retries ",
                 (str(u["retries"]), "yellow" if u["retries"] else ""), " · failures ",
                 (str(u["failures"]), "bold red" if u["failures"] else ""))
    if width >= 100:
        t.append(" · ")
        t.append_text(rest)
        return [t]
    return [t, _line("         ", rest)]


def _train(st: DashState, width: int) -> list[Text]:
    if st.step is None:
        return [_line(("Training ", "bold"), ("no optimiser step yet", "dim"))]
    sps = st.steps_per_s()
    head = _line(("Training ", "bold"), f"step {st.step[0]}/{st.step[1]} · "
                 f"{'–' if sps is None else f'{sps:.2f}'} steps/s · {len(st.losses)} steps in the run")
    spark_w = max(8, width - 20)
    return [head,
            _line(("  loss   ", "dim"), (f"{sparkline(st.losses, spark_w):<{spark_w}}", "magenta"),
                  f" {st.losses[-1]:.4f}"),
            _line(("  margin ", "dim"), (f"{sparkline(st.margins, spark_w):<{spark_w}}", "green"),
                  f" {st.margins[-1]:+.4f}")]


def iterations_table(finished: list[Metrics | dict]) -> Table:
    finished = [as_metrics(m) for m in finished]
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False)
    judged = any(m.has("judged_solve_rate") for m in finished)  # a judged test row: the executor-judged solve rate
    for name in ("iter", "valid", "1st try", "score", "solve", *(("judged",) if judged else ()), "pairs", "loss",
                 "margin", "min"):
        table.add_column(name, justify="right", no_wrap=True)
    for m in finished:
        if isinstance(m, TestMetrics):
            table.add_row(f"test@{m.iteration}", _fmt(m.valid_rate, ".0%"), "", "", _fmt(m.solve_rate, ".3f"),
                          *((_fmt(m.judged_solve_rate, ".3f"),) if judged else ()), "", "", "",
                          _fmt(m.seconds / 60, ".1f"), style="cyan")
        elif isinstance(m, IterationMetrics):  # a comparison is shown under the table as one line
            table.add_row(
                str(m.iteration), _fmt(m.valid_rate, ".0%"), _fmt(m.first_attempt_valid_rate, ".0%"),
                _fmt(m.mean_score if m.valid else None, ".3f"), _fmt(m.solve_rate, ".3f"),
                *(("",) if judged else ()), str(m.pairs), _fmt(m.loss, ".4f"), _fmt(m.margin, "+.4f"),
                _fmt(m.seconds / 60, ".1f"))
    return table


def render(st: DashState, width: int, height: int) -> RenderableType:
    """The whole screen; the table of finished iterations keeps its latest rows that fit."""
    with st.lock:
        tall = height >= TALL
        gap: list[RenderableType] = [Text()] if tall else []
        side = width >= 72
        reason_rows = SCORE_BINS if tall else 2
        half = (width - 2) // 2 if side else width
        wf, sc = _workflows(st, reason_rows), _scores(st, half, tall)
        if side:
            grid = Table.grid(padding=(0, 2), expand=True)
            grid.add_column(ratio=1, no_wrap=True)
            grid.add_column(ratio=1, no_wrap=True)
            for i in range(max(len(wf), len(sc))):
                grid.add_row(wf[i] if i < len(wf) else "", sc[i] if i < len(sc) else "")
            middle: list[RenderableType] = [grid]
            middle_h = max(len(wf), len(sc))
        else:
            middle, middle_h = [*wf, *sc], len(wf) + len(sc)
        head, stages, train = _header(st, width), _stages(st, width), _train(st, width)
        ex = _executor(st, width)
        parts: list[RenderableType] = [*head, *gap, *stages, *gap, *middle, *gap, *ex, *train]
        used = len(head) + len(stages) + middle_h + len(ex) + len(train) + 3 * len(gap)
        rows = height - used - 2 - len(gap) - 3  # title, table head and rule, the line rich keeps free
        compared = [m for m in st.finished if isinstance(m, Comparison)]
        if compared:
            rows -= 1
        if st.finished and rows > 0:
            parts += [*gap, _line(("Finished", "bold"), (f" ({len(st.finished)})", "dim")),
                      iterations_table(st.finished[-rows:])]
        if compared:
            parts.append(_line(("Trained vs base ", "bold green"), comparison_text(compared[-1])))
        return Group(*parts)
