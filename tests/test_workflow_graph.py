"""Pictures of workflows: the graph read from a workflow's source (operators as nodes, data flow as
edges), its Mermaid text, and `scoreflow report` / `scoreflow show` drawing the best workflows of a
run made by the real loop, sandbox and executor (the scripted backend of fake_backend.py)."""

from __future__ import annotations

import re

import pytest

from fake_backend import GOOD, FakeBackend, config
from scoreflow import api
from scoreflow.cli.main import main as cli_main
from scoreflow.report.graph import parse


ENSEMBLE = '''async def run_workflow(self):
    solutions = []
    for i in range(3):
        s = await self.custom(input=self.problem, instruction="Solve it step by step.")
        solutions.append(s)
    best = await self.sc_ensemble(solutions=solutions, problem=self.problem)
    checked = await self.review(problem=self.problem, solution=best)
    return checked.strip()
'''
REFINE = '''async def run_workflow(self):
    draft = await self.custom(input=self.problem, instruction="Draft")
    while "done" not in draft:
        draft = await self.custom(input=self.problem + draft, instruction="Improve the \\"draft\\" <here>")
    return draft
'''


def edges(graph) -> set[tuple[str, str, str, bool]]:
    ops = {n.id: n.op for n in graph.nodes}
    return {(ops[e.src], ops[e.dst], e.label, e.back) for e in graph.edges}


def test_an_ensemble_with_a_review_as_a_graph():
    g = parse(ENSEMBLE)
    assert [n.op for n in g.nodes] == ["problem", "custom", "sc_ensemble", "review", "result"]
    assert edges(g) == {("problem", "custom", "", False), ("custom", "sc_ensemble", "solutions", False),
                        ("problem", "sc_ensemble", "", False), ("problem", "review", "", False),
                        ("sc_ensemble", "review", "best", False), ("review", "result", "checked", False)}
    assert g.repeat(g.nodes[1]) == "×3" and g.node("result").text == "checked.strip()"
    assert g.structures() == ["chain", "loop", "ensemble", "review", "computed result"]
    text = g.mermaid()
    assert text.startswith("flowchart TD\n") and 'subgraph loop1 ["repeated ×3"]' in text
    assert 'n2{{"sc_ensemble"}}' in text and 'n3{"review"}' in text and "n2 -->|best| n3" in text


def test_a_refinement_loop_carries_its_value_back_and_labels_are_escaped():
    g = parse(REFINE)
    assert ("custom", "custom", "draft", True) in edges(g)  # the second call feeds its own next round
    assert ("custom", "custom", "draft", False) in edges(g)  # the first call feeds the loop
    assert "-.->|draft|" in g.mermaid() and "#quot;draft#quot; #lt;here#gt;" in g.mermaid()
    assert parse("def nope(:\n") is None and parse("x = 1\n") is None


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: FakeBackend())
    assert api.optimize(config(tmp_path), tmp_path / "run").status == "finished"
    return tmp_path / "run"


def test_report_draws_the_best_workflows_of_a_run(run, tmp_path):
    from matplotlib.image import imread

    assert cli_main(["report", str(run), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    graphs = re.findall(r"```mermaid\n(.*?)```", md, re.S)
    assert len(graphs) == 2  # the run's two distinct workflows, the precise one first
    assert graphs[0] == parse(GOOD).mermaid() and "custom: Answer precisely, in one word." in graphs[0]
    first = md.split("### Workflow 1")[1].split("### Workflow 2")[0]
    assert "- score 1.000 over 2 problem(s)" in first and "- executor calls per run: 2.0" in first
    assert "- operator call sites: custom ×1" in first and "- cost per run: not priced" in first
    assert "executor tokens per run: " in first and "![workflow 1](workflow-1.png)" in first
    for name in ("workflow-1.png", "workflow-2.png"):
        data = (tmp_path / "r" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = imread(tmp_path / "r" / name)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0  # something is drawn
    mix = md.split("### Operators and structures per iteration")[1]
    assert "| iteration | valid workflows | custom per workflow |" in mix and "| 1 | 4 | 1.00 |" in mix


def test_show_prints_each_workflows_graph(run, capsys):
    capsys.readouterr()
    assert cli_main(["show", str(run), "--problem", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("graph (custom ×1; a single step):") == 2
    assert "flowchart TD" in out and "n1 -->|answer| result" in out and "n1 -->|guess| result" in out
