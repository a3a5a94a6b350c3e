"""Dependence over a workflow's syntax tree: an abstract interpretation of `run_workflow`, in which
every expression is `Known` (its value, computed here), `FREE` (independent of the operators' outputs
and of `self.problem`, but not computed) or `Input` (it may depend on them); folding.py holds these
values. What depends on neither is folded to its value whatever its spelling: string lengths,
`ord`/`chr`, escapes, boolean arithmetic, comprehensions and loops over small ranges. A dependence
that cannot change the value does not count: an empty slice (`x[:0]`), `* 0`, `x - x`, a conditional
whose arms are the same constant.

The analysis is conservative in one direction: when it cannot tell, a value is `Input`, never `Known`,
so a workflow is never rejected for a constant that it does not hold. What static folding cannot
decide, the perturbed runs of dependence.py decide.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass, field
from typing import Any

from scoreflow.execute.folding import (BINARY, COMPARE, FOLDED_BUILTINS, FREE, MAX_LEN, MUTATORS, NUM_RESULT,
                                       STR_RESULT, UNARY, Input, Known, Overflow, Value, all_known, element,
                                       empty_slice, fold, is_zero, items_of, iterable_ok, kind_of, method_ok,
                                       mutables, scalar, size_ok, spec_ok, truthy, join, same, taint)

UNROLL = 64  # loops over at most this many known items are unrolled
MAX_STEPS = 200_000  # evaluation steps before the analysis gives up (and decides nothing)


class GiveUp(Exception):
    """The analysis is too long: nothing is decided statically."""


@dataclass
class Return:
    value: Value
    control: Value | None  # an Input when whether this return is reached depends on the inputs
    node: ast.Return


@dataclass
class Analysis:
    folded: list[tuple[ast.AST, Any]] = field(default_factory=list)  # every folded value, with its node
    returns: list[Return] = field(default_factory=list)
    complete: bool = True  # False: the analysis gave up

    def depends(self) -> bool:
        """Whether the returned value can change with an operator's output (data or control)."""
        if not self.complete or not self.returns:
            return True  # undecided: the runs decide
        if any(isinstance(r.value, Input) and r.value.operator for r in self.returns):
            return True
        values = [r.value for r in self.returns]
        if all(isinstance(v, Known) for v in values) and all(same(v.value, values[0].value) for v in values):
            return False
        return any(r.control is not None and r.control.operator for r in self.returns)

    def constants(self) -> list[Return]:
        """The returns whose value is independent of the inputs: the workflow's own answers."""
        return [r for r in self.returns if not isinstance(r.value, Input)]


# ---- the interpreter ------------------------------------------------------------------------------

def _has(nodes: list[ast.stmt], kinds: tuple[type, ...]) -> bool:
    return any(isinstance(n, kinds) for s in nodes for n in ast.walk(s))


def _ends(nodes: list[ast.stmt]) -> bool:
    """Whether the block always leaves by return, raise, break or continue."""
    for s in nodes:
        if isinstance(s, (ast.Return, ast.Raise, ast.Break, ast.Continue)):
            return True
        if isinstance(s, ast.If) and _ends(s.body) and _ends(s.orelse):
            return True
    return False


class Interpreter:
    def __init__(self, attributes: tuple[str, ...]):
        self.attributes = attributes
        self.out = Analysis()
        self.steps = 0

    # -- statements --

    def block(self, stmts: list[ast.stmt], env: dict[str, Value], control: Value | None) -> dict[str, Value]:
        for s in stmts:
            self.step()
            if isinstance(s, ast.Return):
                value = self.ev(s.value, env) if s.value is not None else Known(None)
                self.out.returns.append(Return(value, control, s))
                return env
            if isinstance(s, (ast.Raise, ast.Break, ast.Continue)):
                if isinstance(s, ast.Raise) and s.exc is not None:
                    self.ev(s.exc, env)
                return env
            if isinstance(s, ast.Expr):
                self.ev(s.value, env)
            elif isinstance(s, ast.Assign):
                v = self.ev(s.value, env)
                for t in s.targets:
                    self.assign(t, v, env, control)
            elif isinstance(s, ast.AnnAssign):
                if s.value is not None:
                    self.assign(s.target, self.ev(s.value, env), env, control)
            elif isinstance(s, ast.AugAssign):
                current = self.ev(_load(s.target), env)
                v = self.binop(s.op, current, self.ev(s.value, env), _load(s.target), s.value)
                self.record(s, v)
                self.assign(s.target, v, env, control)
            elif isinstance(s, ast.Delete):
                for t in s.targets:
                    if isinstance(t, ast.Name):
                        env.pop(t.id, None)
                    else:
                        self.mutate(t, env, [self.ev(t, env)])
            elif isinstance(s, ast.If):
                env, control = self.if_(s, env, control)
            elif isinstance(s, (ast.For, ast.While)):
                env, control = self.loop(s, env, control)
            elif isinstance(s, ast.Try):
                env, control = self.try_(s, env, control)
            elif isinstance(s, ast.Assert):
                self.ev(s.test, env)
                if s.msg is not None:
                    self.ev(s.msg, env)
            # Pass: nothing
        return env

    def if_(self, s: ast.If, env: dict[str, Value], control: Value | None) -> tuple[dict[str, Value], Value | None]:
        t = self.ev(s.test, env)
        if isinstance(t, Known):
            try:
                taken = s.body if bool(t.value) else s.orelse
            except Exception:
                taken = None
            if taken is not None:
                return self.block(taken, env, control), control
        inner = _control(control, t)
        a = self.block(s.body, copy_env(env), inner)
        b = self.block(s.orelse, copy_env(env), inner)
        ends_a, ends_b = _ends(s.body), _ends(s.orelse)
        merged = b if ends_a and not ends_b else a if ends_b and not ends_a else merge(a, b, t)
        if isinstance(t, Input) and _has(s.body + s.orelse, (ast.Return, ast.Raise, ast.Break, ast.Continue)):
            control = _control(control, t)  # what follows runs only on some of the inputs
        return merged, control

    def loop(self, s: ast.For | ast.While, env: dict[str, Value], control: Value | None
             ) -> tuple[dict[str, Value], Value | None]:
        leaves = _has(s.body, (ast.Break, ast.Continue, ast.Return, ast.Raise))
        if isinstance(s, ast.For):
            it = self.ev(s.iter, env)
            items = items_of(it)
            if items is not None and len(items) <= UNROLL and not leaves:
                for item in items:
                    self.assign(s.target, Known(item), env, control)
                    env = self.block(s.body, env, control)
                return self.block(s.orelse, env, control), control
            decider: Value = it
            each: Value = element(it)
        else:
            decider = self.ev(s.test, env)
            if isinstance(decider, Known) and not truthy(decider.value):
                return self.block(s.orelse, env, control), control
            each = FREE
        if leaves:  # an exit inside the body can depend on anything the body computes
            inputs = _mentions_input(s.body, env, self.attributes)
            decider = join(decider, Input(inputs.operator)) if inputs is not None else decider
        inner = _control(control, decider)
        state = copy_env(env)
        for _ in range(8):  # to a fixed point: the values only move up (Known -> Free -> Input)
            body_env = copy_env(state)
            if isinstance(s, ast.For):
                self.assign(s.target, each, body_env, inner)
            else:
                decider = join(decider, self.ev(s.test, body_env))
            after = self.block(s.body, body_env, inner)
            new = merge(state, after, decider)
            if new == state:
                break
            state = new
        else:
            state = {k: (v if isinstance(v, Input) else taint(v, decider)) for k, v in state.items()}
        state = self.block(s.orelse, state, inner)
        if isinstance(decider, Input) and _has(s.body, (ast.Return, ast.Raise)):
            control = _control(control, decider)
        return state, control

    def try_(self, s: ast.Try, env: dict[str, Value], control: Value | None) -> tuple[dict[str, Value], Value | None]:
        before = copy_env(env)
        body = self.block(s.body, copy_env(env), control)
        raised = _mentions_input(s.body, env, self.attributes)  # an exception may depend on it
        inner = _control(control, raised) if raised is not None else control
        outs = [self.block(s.orelse, body, control)]
        for h in s.handlers:
            if h.type is not None:
                self.ev(h.type, before)
            start = merge(before, body, raised or FREE)
            if h.name:
                start[h.name] = raised if raised is not None else FREE
            outs.append(self.block(h.body, start, inner))
        merged = outs[0]
        for o in outs[1:]:
            merged = merge(merged, o, raised or FREE)
        merged = self.block(s.finalbody, merged, control)
        if raised is not None and _has(s.body + [x for h in s.handlers for x in h.body] + s.orelse,
                                       (ast.Return, ast.Raise)):
            control = _control(control, raised)
        return merged, control

    def assign(self, target: ast.AST, v: Value, env: dict[str, Value], control: Value | None) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = v
        elif isinstance(target, (ast.Tuple, ast.List)):
            items = items_of(v)
            starred = [i for i, e in enumerate(target.elts) if isinstance(e, ast.Starred)]
            if items is not None and not starred and len(items) == len(target.elts):
                for e, item in zip(target.elts, items):
                    self.assign(e, Known(item), env, control)
            else:
                for e in target.elts:
                    self.assign(e.value if isinstance(e, ast.Starred) else e, element(v), env, control)
        elif isinstance(target, ast.Starred):
            self.assign(target.value, element(v), env, control)
        elif isinstance(target, (ast.Subscript, ast.Attribute)):
            parts = [v, self.ev(target.slice, env)] if isinstance(target, ast.Subscript) else [v]
            if isinstance(target, ast.Subscript) and all_known(parts):
                base = self.ev(target.value, env)
                if isinstance(base, Known) and isinstance(base.value, (list, dict)):
                    try:
                        base.value[parts[1].value] = parts[0].value  # type: ignore[union-attr]
                        return
                    except Exception:
                        pass
            self.mutate(target, env, parts)

    def mutate(self, node: ast.AST, env: dict[str, Value], parts: list[Value]) -> None:
        """`node` (x[i], x.attr, or x in x.append(...)) changes in a way not folded: the name holding it,
        and every name holding an object it shares, become what `parts` make them."""
        root = node
        while isinstance(root, (ast.Subscript, ast.Attribute)):
            root = root.value
        if not isinstance(root, ast.Name) or root.id not in env:
            return
        change, old = taint(*parts), env[root.id]
        if isinstance(old, Known):
            shared = mutables(old.value)
            for name, value in list(env.items()):
                if name != root.id and isinstance(value, Known) and shared & mutables(value.value):
                    env[name] = join(change, value) if isinstance(change, Input) else FREE
        env[root.id] = join(change, old) if isinstance(change, Input) else taint(old)

    # -- expressions --

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise GiveUp

    def record(self, node: ast.AST, v: Value) -> Value:
        if isinstance(v, Known) and scalar(v.value):
            self.out.folded.append((node, v.value))
        return v

    def ev(self, node: ast.AST | None, env: dict[str, Value]) -> Value:
        self.step()
        if node is None:
            return Known(None)
        try:
            v = self._ev(node, env)
        except Overflow:
            v = Known(math.inf)  # larger than any bound; folded no further
        return self.record(node, v)

    def _ev(self, node: ast.AST, env: dict[str, Value]) -> Value:
        if isinstance(node, ast.Constant):
            return Known(node.value)
        if isinstance(node, ast.Name):
            return env.get(node.id, FREE)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and node.attr in self.attributes:
                return Input(False, "str")
            return taint(self.ev(node.value, env))
        if isinstance(node, ast.Await):
            call = node.value
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and \
                    isinstance(call.func.value, ast.Name) and call.func.value.id == "self" and \
                    call.func.attr not in self.attributes:
                for a in [*call.args, *(k.value for k in call.keywords)]:
                    self.ev(a, env)
                return Input(True, "str")  # an operator's output
            return taint(self.ev(call, env))  # awaiting anything else fails at run time
        if isinstance(node, ast.Call):
            return self.call(node, env)
        if isinstance(node, ast.BinOp):
            return self.binop(node.op, self.ev(node.left, env), self.ev(node.right, env), node.left, node.right)
        if isinstance(node, ast.UnaryOp):
            v = self.ev(node.operand, env)
            return fold(UNARY[type(node.op)], v) if isinstance(v, Known) else taint(v, kind="num")
        if isinstance(node, ast.BoolOp):
            return self.boolop(node, env)
        if isinstance(node, ast.Compare):
            return self.compare(node, env)
        if isinstance(node, ast.IfExp):
            t = self.ev(node.test, env)
            if isinstance(t, Known):
                try:
                    return self.ev(node.body if bool(t.value) else node.orelse, env)
                except Exception:
                    pass
            a, b = self.ev(node.body, env), self.ev(node.orelse, env)
            if isinstance(a, Known) and isinstance(b, Known) and same(a.value, b.value):
                return a  # both arms the same constant: the test cannot change the value
            return taint(t, a, b) if isinstance(t, Input) else join(a, b)
        if isinstance(node, ast.JoinedStr):
            return self.fstring(node, env)
        if isinstance(node, ast.FormattedValue):
            return self.ev(node.value, env)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return self.display(node, env)
        if isinstance(node, ast.Dict):
            keys = [self.ev(k, env) if k is not None else FREE for k in node.keys]
            values = [self.ev(v, env) for v in node.values]
            if all(k is not None for k in node.keys) and all_known(keys + values):
                return fold(lambda: {k.value: v.value for k, v in zip(keys, values)})  # type: ignore[union-attr]
            return taint(*keys, *values)
        if isinstance(node, ast.Subscript):
            return self.subscript(node, env)
        if isinstance(node, ast.Slice):
            parts = [self.ev(p, env) if p is not None else Known(None) for p in (node.lower, node.upper, node.step)]
            return Known(slice(*(p.value for p in parts))) if all_known(parts) else taint(*parts)  # type: ignore[union-attr]
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self.comprehension(node, env)
        if isinstance(node, ast.NamedExpr):
            v = self.ev(node.value, env)
            env[node.target.id] = v
            return v
        if isinstance(node, ast.Starred):
            return self.ev(node.value, env)
        if isinstance(node, ast.Lambda):
            inputs = _mentions_input([ast.Expr(node.body)], env, self.attributes)
            return inputs if inputs is not None else FREE
        return taint(*(self.ev(c, env) for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)))

    def call(self, node: ast.Call, env: dict[str, Value]) -> Value:
        args = [self.ev(a, env) for a in node.args]
        kwargs = {k.arg: self.ev(k.value, env) for k in node.keywords}
        values = args + list(kwargs.values())
        starred = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
        f = node.func
        if isinstance(f, ast.Name) and f.id in FOLDED_BUILTINS and f.id not in env:
            fn, kind = FOLDED_BUILTINS[f.id]
            if all_known(values) and not starred and iterable_ok(*(v.value for v in values)):  # type: ignore[union-attr]
                return fold(fn, *(a.value for a in args), **{k: v.value for k, v in kwargs.items()})  # type: ignore[union-attr]
            return taint(*values, kind=kind)
        if isinstance(f, ast.Attribute):
            recv = self.ev(f.value, env)
            if f.attr in MUTATORS:
                before = recv
                if isinstance(recv, Known) and isinstance(recv.value, (list, dict, set)) and all_known(values) \
                        and not starred:
                    try:
                        result = getattr(recv.value, f.attr)(*(a.value for a in args))  # type: ignore[union-attr]
                        if size_ok(recv.value):
                            return Known(result) if f.attr in ("pop", "setdefault", "popitem") else Known(None)
                    except Exception:
                        pass
                self.mutate(f.value, env, values or [FREE])
                return taint(before, *values)
            if isinstance(recv, Known) and all_known(values) and not starred and not kwargs \
                    and method_ok(recv.value, f.attr, [a.value for a in args]):  # type: ignore[union-attr]
                return fold(getattr(recv.value, f.attr), *(a.value for a in args))  # type: ignore[union-attr]
            kind = "str" if f.attr in STR_RESULT else "num" if f.attr in NUM_RESULT else "any"
            return taint(recv, *values, kind=kind)
        return taint(self.ev(f, env), *values)

    def binop(self, o: ast.operator, a: Value, b: Value, left: ast.AST, right: ast.AST) -> Value:
        if isinstance(a, Known) and isinstance(b, Known):
            return fold(BINARY[type(o)], a.value, b.value)
        if isinstance(o, ast.Mult):
            for zero, other in ((a, b), (b, a)):
                if isinstance(zero, Known) and is_zero(zero.value) and isinstance(other, Input):
                    if other.kind == "str":
                        return Known("")
                    if other.kind == "num":
                        return Known(0)
                    return FREE  # "", 0 or []: whichever, it does not depend on the input
        if isinstance(o, (ast.Sub, ast.BitXor)) and isinstance(a, Input) and a.kind == "num" and _pure(left) \
                and ast.dump(left) == ast.dump(right):
            return Known(0)  # x - x
        kind = "str" if isinstance(o, ast.Add) and "str" in (kind_of(a), kind_of(b)) else \
            "num" if "num" in (kind_of(a), kind_of(b)) and not isinstance(o, ast.Mod) else "any"
        return taint(a, b, kind=kind)

    def boolop(self, node: ast.BoolOp, env: dict[str, Value]) -> Value:
        rest: list[Value] = []
        for i, e in enumerate(node.values):
            v = self.ev(e, env)
            if rest:
                rest.append(v)
                continue
            if isinstance(v, Known):
                try:
                    decided = bool(v.value) if isinstance(node.op, ast.Or) else not bool(v.value)
                except Exception:
                    decided = False
                if decided or i == len(node.values) - 1:
                    return v  # `True or x`, `False and x`; or the last value
                continue
            rest.append(v)
        return taint(*rest) if any(isinstance(v, Input) for v in rest) else FREE

    def compare(self, node: ast.Compare, env: dict[str, Value]) -> Value:
        values = [self.ev(node.left, env)] + [self.ev(c, env) for c in node.comparators]
        if all_known(values):
            def run() -> bool:
                for o, a, b in zip(node.ops, values, values[1:]):
                    if not COMPARE[type(o)](a.value, b.value):  # type: ignore[union-attr]
                        return False
                return True
            return fold(run)
        return taint(*values, kind="num")

    def subscript(self, node: ast.Subscript, env: dict[str, Value]) -> Value:
        base, index = self.ev(node.value, env), self.ev(node.slice, env)
        if isinstance(base, Known) and isinstance(index, Known):
            return fold(lambda: base.value[index.value])
        if isinstance(index, Known) and isinstance(index.value, slice) and empty_slice(index.value):
            if isinstance(base, Input) and base.kind == "str":
                return Known("")  # x[:0] is "" whatever x is
            return FREE
        return taint(base, index, kind="str" if isinstance(base, Input) and base.kind == "str" else "any")

    def fstring(self, node: ast.JoinedStr, env: dict[str, Value]) -> Value:
        parts: list[Value] = []
        text = []
        for v in node.values:
            if isinstance(v, ast.Constant):
                text.append(str(v.value))
                continue
            assert isinstance(v, ast.FormattedValue)
            value = self.ev(v.value, env)
            spec = self.ev(v.format_spec, env) if v.format_spec is not None else Known("")
            parts += [value, spec]
            if isinstance(value, Known) and isinstance(spec, Known) and spec_ok(str(spec.value)):
                conv = {-1: lambda x: x, 115: str, 114: repr, 97: ascii}[v.conversion]
                try:
                    text.append(format(conv(value.value), str(spec.value)))
                    continue
                except Exception:
                    pass
            text.append(None)  # type: ignore[arg-type]
        if all(t is not None for t in text):
            s = "".join(text)
            return Known(s) if len(s) <= MAX_LEN else FREE
        return taint(*parts, kind="str") if any(isinstance(p, Input) for p in parts) else FREE

    def display(self, node: ast.List | ast.Tuple | ast.Set, env: dict[str, Value]) -> Value:
        values = [self.ev(e, env) for e in node.elts]
        items: list[Any] = []
        for e, v in zip(node.elts, values):
            expanded = items_of(v) if isinstance(e, ast.Starred) else [v.value] if isinstance(v, Known) else None
            if expanded is None:
                return taint(*values)
            items += expanded
        if len(items) > MAX_LEN:
            return FREE
        return fold({ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)], items)

    def comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp,
                      env: dict[str, Value]) -> Value:
        local = copy_env(env)
        results: list[Any] | None = []
        seen: list[Value] = []

        def walk(i: int, scope: dict[str, Value]) -> None:
            nonlocal results
            if i == len(node.generators):
                if isinstance(node, ast.DictComp):
                    k, v = self.ev(node.key, scope), self.ev(node.value, scope)
                    seen.extend([k, v])
                    if results is not None and isinstance(k, Known) and isinstance(v, Known):
                        results.append((k.value, v.value))
                    else:
                        results = None
                else:
                    v = self.ev(node.elt, scope)
                    seen.append(v)
                    if results is not None and isinstance(v, Known):
                        results.append(v.value)
                    else:
                        results = None
                return
            g = node.generators[i]
            it = self.ev(g.iter, scope)
            seen.append(it)
            items = items_of(it)
            if items is None or len(items) > UNROLL * 16:
                results = None
                inner = copy_env(scope)
                self.assign(g.target, element(it), inner, None)
                seen.extend(self.ev(c, inner) for c in g.ifs)
                walk(i + 1, inner)
                return
            for item in items:
                inner = copy_env(scope)
                self.assign(g.target, Known(item), inner, None)
                keep = True
                for c in g.ifs:
                    t = self.ev(c, inner)
                    seen.append(t)
                    if isinstance(t, Known):
                        keep = keep and truthy(t.value)
                    else:
                        results = None
                if keep:
                    walk(i + 1, inner)
                if results is not None and len(results) > MAX_LEN:
                    results = None

        walk(0, local)
        if results is not None:
            make = {ast.ListComp: list, ast.GeneratorExp: list, ast.SetComp: set, ast.DictComp: dict}[type(node)]
            return fold(make, results)
        return taint(*seen)


# ---- helpers --------------------------------------------------------------------------------------
def _load(target: ast.AST) -> ast.AST:
    node = copy.copy(target)
    if hasattr(node, "ctx"):
        node.ctx = ast.Load()  # type: ignore[attr-defined]
    return node

def _pure(node: ast.AST) -> bool:
    """No operator call, assignment or call of anything but a folded builtin or a method."""
    for n in ast.walk(node):
        if isinstance(n, (ast.Await, ast.NamedExpr, ast.Lambda)):
            return False
        if isinstance(n, ast.Call) and not (isinstance(n.func, ast.Name) and n.func.id in FOLDED_BUILTINS
                                            or isinstance(n.func, ast.Attribute) and n.func.attr not in MUTATORS):
            return False
    return True

def _control(control: Value | None, test: Value) -> Value | None:
    if not isinstance(test, Input):
        return control
    return test if control is None else join(control, test)

def _mentions_input(stmts: list[ast.stmt], env: dict[str, Value], attributes: tuple[str, ...]) -> Input | None:
    """Whether code may read an input: an operator call, self.<attribute>, or a name holding an input."""
    found: Input | None = None
    for s in stmts:
        for n in ast.walk(s):
            hit: Input | None = None
            if isinstance(n, ast.Await):
                hit = Input(True)  # conservative: any await may be an operator call
            elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self":
                hit = Input(n.attr not in attributes)  # an operator, or self.problem
            elif isinstance(n, ast.Name) and isinstance(env.get(n.id), Input):
                hit = env[n.id]  # type: ignore[assignment]
            if hit is not None:
                found = hit if found is None else Input(found.operator or hit.operator)
    return found

def copy_env(env: dict[str, Value]) -> dict[str, Value]:
    """A copy for a branch: known containers are copied (aliasing kept) so one branch's changes stay in it."""
    return copy.deepcopy(env)

def merge(a: dict[str, Value], b: dict[str, Value], decider: Value) -> dict[str, Value]:
    """The values after two paths: where they differ and the path taken depends on an input, so does the value."""
    out: dict[str, Value] = {}
    for name in a.keys() | b.keys():
        x, y = a.get(name, FREE), b.get(name, FREE)
        v = join(x, y)
        if isinstance(decider, Input) and not (isinstance(x, Known) and isinstance(y, Known) and same(x.value, y.value)) \
                and x != y:
            v = join(v, Input(decider.operator))
        out[name] = v
    return out





def analyse(source: str, attributes: tuple[str, ...]) -> Analysis:
    """The folded values and the returns of run_workflow in `source`, which passed the static policy:
    every `self.<name>` outside `attributes` is an awaited operator call."""
    fn = next(n for n in ast.parse(source).body if isinstance(n, ast.AsyncFunctionDef))
    it = Interpreter(attributes)
    try:
        it.block(fn.body, {}, None)
    except (GiveUp, RecursionError, MemoryError):
        it.out.complete = False
    return it.out
