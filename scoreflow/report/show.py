"""`scoreflow show`: one problem's workflows of one iteration, best first, each with its graph (Mermaid),
rejected ones with reasons."""

from __future__ import annotations

from statistics import mean
from typing import Any

from scoreflow.errors import UserError
from scoreflow.records import Execution, WorkflowAttempt
from scoreflow.run.rundir import RunData


def _problem(run: RunData, index: int, iteration: int) -> Any:
    """The problem, when the run's task can be rebuilt here (its data still where it was)."""
    try:
        from scoreflow import config as C
        from scoreflow.run.session import make_task, run_problems

        cfg = C.build(run.config)
        problems = run_problems(cfg, make_task(cfg), iteration=iteration)
        return problems[index]
    except Exception:
        return None


def _pick(records: list[WorkflowAttempt], problem: str, iteration: int | None) -> tuple[int, int]:
    iterations = sorted({r.iteration for r in records})
    if not iterations:
        raise UserError("this run has generated no workflow yet")
    if iteration is None:
        iteration = iterations[-1]
    elif iteration not in iterations:
        raise UserError(f"no workflows for iteration {iteration}; iterations with workflows: "
                        f"{', '.join(map(str, iterations))}")
    here = {r.problem: r.problem_id for r in records if r.iteration == iteration}
    if problem.lstrip("-").isdigit() and int(problem) in here:
        return int(problem), iteration
    by_id = [i for i, pid in here.items() if pid == problem]
    if by_id:
        return by_id[0], iteration
    raise UserError(f"no problem {problem!r} in iteration {iteration}; problems are 0..{max(here)} "
                    f"(or their ids, e.g. {here[min(here)]})")


def graph_text(source: str | None) -> Any:
    """The workflow's graph as Mermaid text with its operators and structures (scoreflow.report.graph)."""
    from rich.text import Text

    from scoreflow.report.graph import parse

    graph = parse(source)
    if graph is None:
        return Text("graph: none (the source does not parse)", style="dim")
    ops = ", ".join(f"{op} ×{n}" for op, n in sorted(graph.operators().items())) or "no operator call"
    out = Text(f"graph ({ops}; {', '.join(graph.structures()) or 'a single step'}):\n", style="bold")
    out.append(graph.mermaid(), style="cyan")
    return out


def show(run: RunData, problem: str, iteration: int | None, console: Any) -> None:
    from rich.rule import Rule
    from rich.syntax import Syntax
    from rich.text import Text

    index, iteration = _pick(run.workflows, problem, iteration)
    slots: dict[int, list[WorkflowAttempt]] = {}
    for r in run.workflows:
        if r.iteration == iteration and r.problem == index:
            slots.setdefault(r.slot, []).append(r)
    execs: dict[int, list[Execution]] = {}
    for e in run.executions:
        if e.iteration == iteration and e.problem == index:
            execs.setdefault(e.slot, []).append(e)
    final = {slot: next((a for a in atts if a.valid), max(atts, key=lambda a: a.attempt))
             for slot, atts in slots.items()}
    valid = [s for s, r in final.items() if r.valid]
    scored = sorted(valid, key=lambda s: (-mean(e.score for e in execs[s]) if execs.get(s) else 1.0, s))
    rejected = sorted(s for s, r in final.items() if not r.valid)

    pid = next(iter(final.values())).problem_id
    head = Text(f"Problem {index} ({pid}) · iteration {iteration} · {len(final)} workflows: ", style="bold")
    head.append(f"{len(valid)} valid", style="green")
    head.append(", ")
    head.append(f"{len(rejected)} rejected", style="red")
    console.print(head)
    p = _problem(run, index, iteration)
    if p is not None and p.id == pid:
        console.print(Text(p.question.strip(), style="italic"))
        console.print(Text(f"expected answer: {str(p.answer)[:200]}", style="dim"))

    for slot in scored:
        r, runs = final[slot], sorted(execs.get(slot, []), key=lambda e: e.run)
        title = f"slot {slot} · " + (f"score {mean(e.score for e in runs):.3f} over {len(runs)} "
                                     f"run{'s' if len(runs) != 1 else ''}" if runs else "not executed yet")
        console.print(Rule(f"[green]{title}[/] · attempt {r.attempt + 1}", align="left"))
        for e in runs:
            line = Text(f"  run {e.run}: {e.status} · score {e.score:.3f}", style="dim")
            if e.answer is not None:
                line.append(f" · answer {str(e.answer)[:80]!r}")
            if e.reason:
                line.append(f" · {e.reason[:120]}")
            console.print(line)
        console.print(Syntax(r.source or "", "python", theme="ansi_dark", word_wrap=True))
        console.print(graph_text(r.source))
    for slot in rejected:
        r = final[slot]
        n = len(slots[slot])
        console.print(Rule(f"[red]slot {slot} · rejected: {r.reason}[/]"
                           + (f" (after {n} attempts)" if n > 1 else ""), align="left"))
        if r.source:
            console.print(Syntax(r.source, "python", theme="ansi_dark", word_wrap=True))
        else:
            lines = (r.text or "").strip().splitlines()
            console.print(Text("\n".join(lines[:12]) + ("\n…" if len(lines) > 12 else ""), style="dim"))
