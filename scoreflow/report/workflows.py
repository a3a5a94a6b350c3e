"""Pictures of what a run learned: its best workflows (ranked as `export --library` ranks them) as
Mermaid graphs in report.md with a PNG each, their operator call sites, executor calls, tokens and
cost beside them, and how the mix of operators and structures changed across iterations."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from scoreflow.report.graph import STRUCTURES, Graph, figure, parse
from scoreflow.report.library import Workflow, collect
from scoreflow.run.rundir import RunData

BEST = 3  # workflows drawn per run


def best(run: RunData, n: int = BEST) -> list[Workflow]:
    return collect(run.workflows, run.executions)[:n]


def png_name(rank: int, run_index: int | None = None) -> str:
    """The PNG of the rank-th workflow (run_index tells runs apart when a report compares several)."""
    return f"workflow-{rank}.png" if run_index is None else f"workflow-{run_index}-{rank}.png"


def notes(w: Workflow, graph: Graph | None) -> list[str]:
    """What is shown beside a workflow's graph."""
    cost = w.cost_per_run
    lines = [f"score {w.score:.3f} over {len(w.problem_scores)} problem(s) of the validate split, {w.runs} run(s)",
             f"executor calls per run: {w.calls_per_run:.1f}", f"executor tokens per run: {w.tokens_per_run:.0f}",
             "cost per run: " + (f"${cost:.6f}" if cost is not None else "not priced (the executor has no prices)"),
             f"generated {w.generated}× in iteration(s) {', '.join(map(str, sorted(w.iterations)))}"]
    if graph is not None:
        ops = graph.operators()
        lines.insert(1, "operator call sites: " + (", ".join(f"{op} ×{n}" for op, n in sorted(ops.items()))
                                                  or "none"))
        lines.insert(2, "structure: " + (", ".join(graph.structures()) or "a single step"))
    return lines


def write_pngs(runs: list[RunData], out: Path) -> list[Path]:
    """One PNG per drawn workflow of each run, named as section() links them."""
    written = []
    for i, run in enumerate(runs, 1):
        for rank, w in enumerate(best(run), 1):
            graph = parse(w.source)
            fig = figure(graph, f"{run.label}: workflow {rank}", notes(w, graph), w.source)
            path = out / png_name(rank, i if len(runs) > 1 else None)
            fig.savefig(path, dpi=100)
            written.append(path)
    return written


def section(run: RunData, h: str, run_index: int | None = None) -> str:
    """The report's workflows section of one run: each best workflow's graph, notes and PNG, then the mix."""
    ranked = best(run)
    if not ranked:
        return "No valid workflow was executed yet.\n"
    parts = [f"The run's {len(ranked)} best distinct workflows on the validate split (ranked as "
             "`scoreflow export --library` ranks them): operators as nodes, data flow as edges, loop edges "
             "dashed.\n"]
    for rank, w in enumerate(ranked, 1):
        graph = parse(w.source)
        parts.append(f"{h}# Workflow {rank}\n")
        parts.append("```mermaid\n" + graph.mermaid() + "```\n" if graph is not None
                     else "```python\n" + w.source.strip() + "\n```\n")
        parts.append("\n".join(f"- {line}" for line in notes(w, graph)) + "\n")
        parts.append(f"![workflow {rank}]({png_name(rank, run_index)})\n")
    parts += [f"{h}# Operators and structures per iteration\n", mix(run)]
    return "\n".join(parts)


def mix(run: RunData) -> str:
    """Per iteration, over its valid workflows: call sites per workflow of each operator, and the share
    of workflows with each structure."""
    graphs: dict[int, list[Graph]] = {}
    for w in run.workflows:
        graph = parse(w.source) if w.valid else None
        if graph is not None:
            graphs.setdefault(w.iteration, []).append(graph)
    if not graphs:
        return "No valid workflow yet.\n"
    ops = sorted({op for gs in graphs.values() for g in gs for op in g.operators()})
    head = ["iteration", "valid workflows", *(f"{op} per workflow" for op in ops), *STRUCTURES]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for it, gs in sorted(graphs.items()):
        calls: Counter[str] = Counter()
        shapes: Counter[str] = Counter()
        for g in gs:
            calls.update(g.operators())
            shapes.update(g.structures())
        row = [str(it), str(len(gs)), *(f"{calls[op] / len(gs):.2f}" for op in ops),
               *(f"{shapes[s] / len(gs):.0%}" for s in STRUCTURES)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
