"""A workflow as a picture: its operator calls as nodes, the data flowing between them as edges.

A node is one `await self.<operator>(...)` call site of run_workflow; `problem` (self.problem and
self.entry_point) and `result` (what run_workflow returns) are the two ends. An edge runs from a
call to another call, or to the result, when the first call's value reaches the second's arguments
(or the return): through a name assigned from it, through Python computed from that name, or
through a list it was appended to. A call inside a `for`, `while` or comprehension is repeated,
with its count when the loop runs over `range(<number>)`; an edge that carries a value from a later
call of a loop back to an earlier one (its next round) is a loop edge, drawn dashed. The flow is
found statically, so both branches of an `if` count, and a loop body may run zero times.

`parse` gives a Graph (None for a source that does not parse); `Graph.mermaid()` the Mermaid text
GitHub renders in Markdown; `figure` a matplotlib Figure for a PNG.
"""

from __future__ import annotations

import ast
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

PROBLEM, RESULT = "problem", "result"
ENSEMBLES = frozenset({"sc_ensemble"})  # operators that pick one of several candidates
CHECKS = frozenset({"review", "test"})  # operators that check a solution and return a corrected one
MUTATORS = frozenset({"append", "extend", "insert", "add", "update"})  # xs.append(v): v flows into xs
STRUCTURES = ("chain", "loop", "ensemble", "review", "branch", "computed result")
TEXT_CHARS = 40  # longest instruction or result expression shown in a node


@dataclass
class Loop:
    id: str
    count: int | None  # rounds, when the loop runs over range(<number>)
    kind: str  # "for", "while" or "comprehension"
    parent: str | None = None

    @property
    def label(self) -> str:
        if self.count is not None:
            return f"repeated ×{self.count}"
        return "repeated (while)" if self.kind == "while" else "repeated (for each)"


@dataclass
class Node:
    id: str
    op: str  # the operator's method name, or PROBLEM / RESULT
    text: str = ""  # the call's instruction, or the returned expression when it is computed
    loops: tuple[str, ...] = ()  # enclosing loops, outermost first
    branch: bool = False  # under an `if`: may not run
    line: int = 0


@dataclass
class Edge:
    src: str
    dst: str
    label: str = ""  # the name the value travelled under ("" when passed directly)
    back: bool = False  # carried to the next round of a loop


@dataclass
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    loops: dict[str, Loop] = field(default_factory=dict)

    @property
    def calls(self) -> list[Node]:
        return [n for n in self.nodes if n.op not in (PROBLEM, RESULT)]

    def node(self, id: str) -> Node:
        return next(n for n in self.nodes if n.id == id)

    def rounds(self, node: Node) -> int | None:
        """How many times the call runs: the product of its loops' counts (None: not known statically)."""
        total = 1
        for lid in node.loops:
            count = self.loops[lid].count
            if count is None:
                return None
            total *= count
        return total

    def repeat(self, node: Node) -> str:
        """'' for a call that runs once, else ×N (or ×n when the count is not known statically)."""
        if not node.loops:
            return ""
        n = self.rounds(node)
        return f"×{n}" if n is not None else "×n"

    def operators(self) -> Counter[str]:
        """Call sites per operator."""
        return Counter(n.op for n in self.calls)

    def structures(self) -> list[str]:
        """Which of STRUCTURES the workflow has: chain (one call feeds another), loop (a repeated
        call), ensemble (a call picking among candidates), review (a call checking a solution),
        branch (a call under an `if`), computed result (the return is Python over operator outputs)."""
        calls = {n.id for n in self.calls}
        found = {
            "chain": any(e.src in calls and e.dst in calls and not e.back for e in self.edges),
            "loop": any(n.loops for n in self.calls),
            "ensemble": any(n.op in ENSEMBLES for n in self.calls),
            "review": any(n.op in CHECKS for n in self.calls),
            "branch": any(n.branch for n in self.calls),
            "computed result": bool(self.node(RESULT).text),
        }
        return [s for s in STRUCTURES if found[s]]

    def layers(self) -> dict[str, int]:
        """Each node's depth: the longest path of forward edges from the problem (the result last)."""
        depth = {n.id: 0 for n in self.nodes}
        order = {n.id: i for i, n in enumerate(self.nodes)}
        forward = [e for e in self.edges if not e.back and e.dst != RESULT]
        for _ in range(len(self.nodes)):  # longest paths over a DAG in node order: settles in |V| rounds
            changed = False
            for e in sorted(forward, key=lambda e: order[e.dst]):
                if depth[e.dst] < depth[e.src] + 1:
                    depth[e.dst], changed = depth[e.src] + 1, True
            if not changed:
                break
        calls = [depth[n.id] for n in self.calls]
        depth[PROBLEM] = 0
        depth[RESULT] = max(calls, default=0) + 1
        return depth

    def mermaid(self) -> str:
        """A Mermaid flowchart: loops as subgraphs titled with their count, ensembles as hexagons,
        reviews as rhombi, loop edges dashed."""
        lines = ["flowchart TD"]
        children: dict[str | None, list[str]] = {}
        for lid, loop in self.loops.items():
            children.setdefault(loop.parent, []).append(lid)
        inner = {n.id: n.loops[-1] if n.loops else None for n in self.nodes}

        def emit(where: str | None, indent: str) -> None:
            for n in self.nodes:
                if inner[n.id] == where:
                    lines.append(indent + _mermaid_node(n))
            for lid in children.get(where, []):
                if not any(lid in n.loops for n in self.nodes):
                    continue  # a loop without calls shows nothing
                lines.append(f'{indent}subgraph {lid} ["{_esc(self.loops[lid].label)}"]')
                emit(lid, indent + "    ")
                lines.append(indent + "end")

        emit(None, "    ")
        for e in self.edges:
            arrow = "-.->" if e.back else "-->"
            lines.append(f"    {e.src} {arrow}{f'|{_esc(e.label)}|' if e.label else ''} {e.dst}")
        return "\n".join(lines) + "\n"


def _esc(text: str) -> str:
    """Text inside a quoted Mermaid label: its entity codes for the characters Mermaid reads."""
    for ch, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("|", "#124;")):
        text = text.replace(ch, code)
    return " ".join(text.split())


def node_label(n: Node, repeat: str = "") -> str:
    if n.op == PROBLEM:
        return "problem"
    if n.op == RESULT:
        return f"return {n.text}" if n.text else "result"
    head = n.op + (f" {repeat}" if repeat else "") + (" (if)" if n.branch else "")
    return f"{head}: {n.text}" if n.text else head


def _mermaid_node(n: Node) -> str:
    label = _esc(node_label(n))
    if n.op in (PROBLEM, RESULT):
        return f'{n.id}(["{label}"])'
    if n.op in ENSEMBLES:
        return f'{n.id}{{{{"{label}"}}}}'
    if n.op in CHECKS:
        return f'{n.id}{{"{label}"}}'
    return f'{n.id}["{label}"]'


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS - 1].rstrip() + "…"


# ---- from source to graph -------------------------------------------------------------------------

def parse(source: str | None) -> Graph | None:
    """The graph of a workflow's run_workflow; None when the source does not parse or defines none."""
    try:
        tree = ast.parse(source or "")
    except (SyntaxError, ValueError, RecursionError):
        return None
    fn = next((n for n in tree.body if isinstance(n, (ast.AsyncFunctionDef, ast.FunctionDef))
               and n.name == "run_workflow"), None)
    if fn is None:
        return None
    try:
        return _Builder().build(fn)
    except RecursionError:
        return None


def _self_call(e: ast.AST) -> ast.Call | None:
    """The call of `await self.<name>(...)`, else None."""
    if (isinstance(e, ast.Await) and isinstance(e.value, ast.Call) and isinstance(e.value.func, ast.Attribute)
            and isinstance(e.value.func.value, ast.Name) and e.value.func.value.id == "self"):
        return e.value
    return None


def _range_count(e: ast.AST) -> int | None:
    """N for range(N) and range(a, b) with number literals, else None."""
    if not (isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "range"
            and not e.keywords and 1 <= len(e.args) <= 2):
        return None
    values = [a.value for a in e.args if isinstance(a, ast.Constant) and type(a.value) is int]
    if len(values) != len(e.args):
        return None
    return max(0, values[0]) if len(values) == 1 else max(0, values[1] - values[0])


def _instruction(call: ast.Call) -> str:
    """The call's instruction when it is a string literal (keyword `instruction` or `analysis`)."""
    for k in call.keywords:
        if k.arg in ("instruction", "analysis") and isinstance(k.value, ast.Constant) and isinstance(k.value.value, str):
            return _short(k.value.value)
    return ""


Env = dict[str, frozenset[str]]


class _Builder:
    """Walks run_workflow once in order (loop bodies twice, so that values carried to the next round
    are seen), keeping for every name the calls whose values it may hold."""

    def __init__(self) -> None:
        self.env: Env = {}
        self.calls: dict[int, Node] = {}  # by id() of the ast.Call: a call site is one node
        self.order: dict[str, int] = {PROBLEM: -1}
        self.edges: dict[tuple[str, str], Edge] = {}
        self.loops: dict[str, Loop] = {}
        self.stack: list[str] = []
        self.branch = 0
        self.returns: list[ast.expr | None] = []
        self.result_edges: dict[str, str] = {}

    def build(self, fn: ast.AsyncFunctionDef | ast.FunctionDef) -> Graph:
        self.block(fn.body)
        nodes = [Node(PROBLEM, PROBLEM), *sorted(self.calls.values(), key=lambda n: self.order[n.id])]
        nodes.append(Node(RESULT, RESULT, self._result_text(), line=getattr(fn, "end_lineno", 0) or 0))
        edges = list(self.edges.values()) + [Edge(src, RESULT, label) for src, label in self.result_edges.items()]
        return Graph(nodes, edges, self.loops)

    def _result_text(self) -> str:
        """The returned expression, when there is one return and it computes rather than passes a value on."""
        if len(self.returns) != 1 or self.returns[0] is None:
            return ""
        value = self.returns[0]
        if isinstance(value, ast.Name) or _self_call(value) is not None:
            return ""
        return _short(ast.unparse(value))

    # ---- expressions: which calls' values an expression may carry, and under which name ----------

    def flows(self, e: ast.AST | None) -> dict[str, str]:
        if e is None:
            return {}
        call = _self_call(e)
        if call is not None:
            return {self.call(call).id: ""}
        if isinstance(e, ast.Name):
            return {src: e.id for src in sorted(self.env.get(e.id, ()))}
        if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "self":
            return {PROBLEM: ""}
        if isinstance(e, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self.comprehension(e)
        if isinstance(e, ast.Lambda):
            return {}
        out: dict[str, str] = {}
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Attribute) and isinstance(e.func.value, ast.Name) \
                and e.func.attr in MUTATORS:  # solutions.append(answer): answer now flows through solutions
            added = _merge(*(self.flows(a) for a in [*e.args, *(k.value for k in e.keywords)]))
            name = e.func.value.id
            self.env[name] = self.env.get(name, frozenset()) | frozenset(added)
            out.update(added)
        for child in ast.iter_child_nodes(e):
            if isinstance(child, ast.keyword):
                child = child.value
            if isinstance(child, ast.expr):
                for src, label in self.flows(child).items():
                    out.setdefault(src, label)
        if isinstance(e, ast.NamedExpr):
            self.env[e.target.id] = frozenset(out)
        return out

    def call(self, c: ast.Call) -> Node:
        args = [*c.args, *(k.value for k in c.keywords)]
        incoming = _merge(*(self.flows(a) for a in args))  # arguments run before the call
        node = self.calls.get(id(c))
        if node is None:
            assert isinstance(c.func, ast.Attribute)
            node = Node(f"n{len(self.calls) + 1}", c.func.attr, _instruction(c), tuple(self.stack),
                        self.branch > 0, c.lineno)
            self.calls[id(c)] = node
            self.order[node.id] = len(self.order)
        for src, label in incoming.items():
            self.edge(src, node.id, label)
        return node

    def edge(self, src: str, dst: str, label: str) -> None:
        old = self.edges.get((src, dst))
        if old is None:
            self.edges[(src, dst)] = Edge(src, dst, label, back=self.order[src] >= self.order[dst])
        elif label and not old.label:
            old.label = label

    def comprehension(self, e: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> dict[str, str]:
        saved = dict(self.env)
        pushed = 0
        for gen in e.generators:
            it = self.flows(gen.iter)
            self.push(_range_count(gen.iter), "comprehension")
            pushed += 1
            self.assign(gen.target, frozenset(it))
            for cond in gen.ifs:
                self.flows(cond)
        parts = [e.key, e.value] if isinstance(e, ast.DictComp) else [e.elt]
        out = _merge(*(self.flows(p) for p in parts))
        for _ in range(pushed):
            self.stack.pop()
        named = {k: v for k, v in self.env.items() if k not in saved or saved[k] != v}
        self.env = {**saved, **{k: v for k, v in named.items() if k in saved}}  # loop names stay inside
        return out

    def push(self, count: int | None, kind: str) -> None:
        lid = f"loop{len(self.loops) + 1}"
        self.loops[lid] = Loop(lid, count, kind, self.stack[-1] if self.stack else None)
        self.stack.append(lid)

    def assign(self, target: ast.AST, srcs: frozenset[str]) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = srcs
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                self.assign(t, srcs)
        elif isinstance(target, ast.Starred):
            self.assign(target.value, srcs)
        elif isinstance(target, (ast.Subscript, ast.Attribute)):  # xs[i] = v: v flows into xs
            base = target.value
            while isinstance(base, (ast.Subscript, ast.Attribute)):
                base = base.value
            if isinstance(base, ast.Name) and base.id != "self":
                self.env[base.id] = self.env.get(base.id, frozenset()) | srcs
            self.flows(target.slice if isinstance(target, ast.Subscript) else None)

    # ---- statements --------------------------------------------------------------------------------

    def block(self, body: Iterable[ast.stmt]) -> None:
        for s in body:
            self.stmt(s)

    def stmt(self, s: ast.stmt) -> None:
        if isinstance(s, ast.Assign):
            srcs = frozenset(self.flows(s.value))
            for t in s.targets:
                self.assign(t, srcs)
        elif isinstance(s, ast.AnnAssign):
            if s.value is not None:
                self.assign(s.target, frozenset(self.flows(s.value)))
        elif isinstance(s, ast.AugAssign):
            srcs = frozenset(self.flows(s.value))
            if isinstance(s.target, ast.Name):
                self.env[s.target.id] = self.env.get(s.target.id, frozenset()) | srcs
            else:
                self.assign(s.target, srcs)
        elif isinstance(s, ast.Return):
            self.returns.append(s.value)
            for src, label in self.flows(s.value).items():
                self.result_edges.setdefault(src, label)
        elif isinstance(s, ast.If):
            self.flows(s.test)
            self.branch += 1
            before = dict(self.env)
            self.block(s.body)
            after_body, self.env = self.env, dict(before)
            self.block(s.orelse)
            self.env = _union(after_body, self.env)
            self.branch -= 1
        elif isinstance(s, (ast.For, ast.AsyncFor)):
            it = frozenset(self.flows(s.iter))
            self.loop(_range_count(s.iter), "for", lambda: (self.assign(s.target, it), self.block(s.body)))
            self.block(s.orelse)
        elif isinstance(s, ast.While):
            self.loop(None, "while", lambda: (self.flows(s.test), self.block(s.body)))
            self.block(s.orelse)
        elif isinstance(s, ast.Try):
            before = dict(self.env)
            self.block(s.body)
            self.block(s.orelse)
            for h in s.handlers:  # a handler may start from any point of the body
                after, self.env = self.env, _union(before, self.env)
                self.block(h.body)
                self.env = _union(after, self.env)
            self.block(s.finalbody)
        else:  # Expr, Assert, Raise, Delete and the rest: their expressions may hold calls
            for child in ast.iter_child_nodes(s):
                if isinstance(child, ast.expr):
                    self.flows(child)

    def loop(self, count: int | None, kind: str, body: Any) -> None:
        """The body walked twice: the second walk sees the names the first left for the next round. The body
        may run zero times, so the names before the loop stay possible after it."""
        before = dict(self.env)
        self.push(count, kind)
        body()
        body()
        self.stack.pop()
        self.env = _union(before, self.env)


def _merge(*flows: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in flows:
        for src, label in f.items():
            if src not in out or (label and not out[src]):
                out[src] = label
    return out


def _union(a: Env, b: Env) -> Env:
    return {k: a.get(k, frozenset()) | b.get(k, frozenset()) for k in {*a, *b}}


# ---- a picture -------------------------------------------------------------------------------------

COLORS = {PROBLEM: "#e8e8e8", RESULT: "#e8e8e8", "ensemble": "#ffd8a8", "review": "#c3e6cb", "call": "#cfe2ff"}
NODE_CHARS = 24  # a node's text wraps at this width in the PNG


def _color(n: Node) -> str:
    if n.op in (PROBLEM, RESULT):
        return COLORS[n.op]
    return COLORS["ensemble" if n.op in ENSEMBLES else "review" if n.op in CHECKS else "call"]


def figure(graph: Graph | None, title: str = "", notes: list[str] | None = None, source: str | None = None) -> Any:
    """A matplotlib Figure: the graph top to bottom (a node per call, its repetitions as ×N, loop edges
    dashed), `notes` beside it. A source without a graph is shown as text, so a report never fails
    on an unparsable workflow."""
    from matplotlib.figure import Figure

    notes = notes or []
    if graph is None:
        fig = Figure(figsize=(8, 3), layout="constrained")
        ax = fig.subplots()
        ax.axis("off")
        text = "no graph: the source does not parse\n\n" + "\n".join(notes)
        if source:
            text += "\n\n" + "\n".join((source or "").splitlines()[:12])
        ax.text(0, 1, text, va="top", ha="left", family="monospace", fontsize=8, transform=ax.transAxes)
        if title:
            ax.set_title(title, fontsize=10, loc="left")
        return fig
    depth = graph.layers()
    rows: dict[int, list[Node]] = {}
    for n in graph.nodes:
        rows.setdefault(depth[n.id], []).append(n)
    width = max(len(r) for r in rows.values())
    fig = Figure(figsize=(2.6 * max(2, width) + 3.2, 1.25 * len(rows) + 0.8))
    ax = fig.add_axes((0.0, 0.0, 2.6 * max(2, width) / (2.6 * max(2, width) + 3.2), 0.92 if title else 1.0))
    ax.axis("off")
    ax.set_xlim(-0.5, max(2, width) - 0.5)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    boxes: dict[str, Any] = {}
    centre: dict[str, tuple[float, float]] = {}
    for level, row in sorted(rows.items()):
        for i, n in enumerate(row):
            x = i + (max(2, width) - len(row)) / 2
            y = -level
            repeat = graph.repeat(n)
            label = textwrap.fill(node_label(n, repeat), NODE_CHARS, max_lines=3, placeholder=" …")
            style = "round4,pad=0.5" if n.op in (PROBLEM, RESULT) else "round,pad=0.45"
            boxes[n.id] = ax.text(x, y, label, ha="center", va="center", fontsize=8, gid=f"node:{n.id}:{n.op}",
                                  bbox=dict(boxstyle=style, fc=_color(n), ec="0.25", lw=2.4 if repeat else 1.0,
                                            ls="-"))
            centre[n.id] = (x, y)
    for e in graph.edges:
        (x1, y1), (x2, y2) = centre[e.src], centre[e.dst]
        if e.src == e.dst:  # a call fed by its own previous round: a loop on the box's right side
            half = 0.1 + 0.012 * max(len(line) for line in boxes[e.src].get_text().splitlines())
            ax.annotate("", xy=(x1 + half, y1 - 0.12), xytext=(x1 + half, y1 + 0.12), gid=f"edge:{e.src}:{e.dst}",
                        arrowprops=dict(arrowstyle="-|>", color="0.45", lw=1.0, ls="--",
                                        connectionstyle="arc3,rad=-1.6"))
            if e.label:
                ax.text(x1 + half + 0.22, y1, e.label, fontsize=7, color="0.3", style="italic", va="center")
            continue
        # a loop edge bends right; an edge skipping a row bends around the rows between (the
        # problem's to the left, the others to the right), so no edge runs through a box
        skip = abs(y1 - y2) > 1
        bend = 0.45 if e.back else (0.0 if not skip else 0.25 if e.src == PROBLEM else -0.25)
        ax.annotate("", xy=(x2, y2), xytext=(x1, y1), gid=f"edge:{e.src}:{e.dst}",
                    arrowprops=dict(arrowstyle="-|>", color="0.45" if e.back else "0.15", lw=1.0,
                                    ls="--" if e.back else "-", connectionstyle=f"arc3,rad={bend}",
                                    patchA=boxes[e.src].get_bbox_patch(), patchB=boxes[e.dst].get_bbox_patch(),
                                    shrinkA=2, shrinkB=2))
        if e.label and not skip:  # a skipping edge's name is the one its neighbours show
            ax.text((x1 + x2) / 2 + 0.05, (y1 + y2) / 2, e.label, fontsize=7, color="0.3", style="italic",
                    ha="left", va="center")
    side = fig.add_axes((ax.get_position().x1, 0.0, 1 - ax.get_position().x1, 0.92 if title else 1.0))
    side.axis("off")
    side.text(0.02, 0.95, "\n".join(textwrap.fill(line, 38) for line in notes), va="top", ha="left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    return fig
