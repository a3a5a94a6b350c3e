"""The second red team's classes of attack (issue 34), each with cases of our own, through the real
sandbox: raw memory (ctypes) out of reach of untrusted code; no socket of any family, a host unix
socket included; a code-task harness the candidate cannot steer; a parent that gets a verdict
whatever a child sends or leaves; and a static policy that covers every node type of the syntax tree.
Every case is contained: a verdict, score 0, no connection, nothing left on the host. Where a layer
is switched off to test another, a positive control shows that the check can fail."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import os
import random
import socket
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from fake_backend import BAD, FakeBackend

from scoreflow.model.backend import Completion
from scoreflow.execute import policy
from scoreflow.execute.workflow import check, static_check
from scoreflow.sandbox import layers, protocol
from scoreflow.sandbox.access import stdlib_folders
from scoreflow.sandbox.cleanup import remove_tree
from scoreflow.sandbox.parent import Limits, RunResult, Sandbox
from scoreflow.tasks import load
from scoreflow.tasks.code_eval import CodeSpec, prepare

LINUX = sys.platform.startswith("linux")
LIMITS = Limits(timeout_s=10.0, memory_mb=512, cpu_s=10, max_output_chars=4000, max_calls=50)
needs_linux = pytest.mark.skipif(not LINUX, reason="Landlock and seccomp are Linux features")


def gather(*coros):
    async def main():
        return await asyncio.gather(*coros)

    return asyncio.run(main())


@pytest.fixture
def shared_tmp():
    """A sandbox root in the shared temporary folder that any uid may traverse (a per-run uid too)."""
    root = tempfile.mkdtemp(prefix="scoreflow-redteam-")
    os.chmod(root, 0o755)
    yield Path(root)
    removal = remove_tree(root)
    assert removal.ok, removal.summary()


# ---- 1. no raw-memory tool in the interpreter that runs untrusted code -------------------------------

CTYPES_PROBE = r'''
import json, sys
found = []

def attempt(route, get):
    try:
        value = get()
    except BaseException as e:
        return
    if value:
        found.append(route)

def subclasses():
    seen, todo = set(), [object]
    while todo:
        cls = todo.pop()
        for sub in type.__subclasses__(cls):
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    return [c for c in seen if str(getattr(c, "__module__", "")).lstrip("_").startswith("ctypes")
            or c.__name__ in ("CDLL", "PyCSimpleType", "PyCFuncPtrType", "_SimpleCData", "_Pointer", "CFuncPtr")]

attempt("object.__subclasses__", subclasses)
attempt("sys.modules", lambda: [m for m in sys.modules if "ctypes" in m])
attempt("__import__ ctypes", lambda: __import__("ctypes"))
attempt("__import__ _ctypes", lambda: __import__("_ctypes"))
attempt("importlib", lambda: __import__("importlib").import_module("_ctypes"))

class Spec:
    name = "_ctypes"
    origin = @SO@

attempt("_imp.create_dynamic", lambda: __import__("_imp").create_dynamic(Spec))
attempt("ExtensionFileLoader", lambda: __import__("importlib.machinery").machinery.ExtensionFileLoader(
    "_ctypes", Spec.origin).create_module(Spec))
attempt("read the extension", lambda: open(Spec.origin, "rb").read(16))
attempt("gc", lambda: [o for o in __import__("gc").get_objects() if "ctypes" in str(type(o))])
attempt("/proc/self/mem", lambda: open("/proc/self/mem", "rb"))
attempt("interpreter was given ctypes", lambda: "ctypes" in sys.modules or "_ctypes" in sys.modules)
print(json.dumps(found))
'''


def _ctypes_probe() -> str:
    _, dynload = stdlib_folders()
    so = next((os.path.join(dynload, n) for n in os.listdir(dynload) if n.startswith("_ctypes.")), "/nonexistent")
    return CTYPES_PROBE.replace("@SO@", repr(so))


@needs_linux
def test_no_ctypes_class_is_reachable_by_any_route():
    probe = _ctypes_probe()
    layers = [{}, {"audit": False}]  # everything; the OS layers alone (Landlock hides _ctypes, no import ran)
    control = {"audit": False, "landlock": False}  # neither: the probe must find ctypes
    runs = gather(*(Sandbox(LIMITS, **kw).run_program(probe) for kw in [*layers, control]))
    for kw, r in zip(layers, runs):
        assert r.status == "ok", (kw, r)
        assert json.loads(r.stdout) == [], (kw, r.stdout)
    found = json.loads(runs[-1].stdout)
    assert {"__import__ ctypes", "_imp.create_dynamic", "read the extension"} <= set(found), found


HOOK_PROBE = r'''
import json, sys
held = {}

def attempt(name, do):
    try:
        do()
        held[name] = False
    except BaseException as e:
        held[name] = True

class Sneaky(str):
    """Hashes and compares like the attribute it hides, answers its own name to str()."""
    def __hash__(self):
        return hash("tb_frame")
    def __eq__(self, other):
        return True
    def __str__(self):
        return "math"

def frame():
    try:
        raise ValueError
    except ValueError as e:
        return getattr(e.__traceback__, Sneaky("xx"))

def rewrite_restore():
    main = sys.modules["__main__"]
    main._restore.__code__ = (lambda *a, **k: []).__code__

def neuter_defaults():
    sys.modules["__main__"]._restore.__defaults__ = (None, None, None)

def crafted_code():
    import marshal
    marshal.loads(marshal.dumps(compile("1", "x", "eval")))

def replace_code():
    compile("1", "x", "eval").replace(co_consts=(2,))

attempt("rewrite the harness's restore", rewrite_restore)
attempt("the harness's defaults", neuter_defaults)
attempt("a frame through a str subclass", frame)
attempt("import through a lying str subclass", lambda: __import__(Sneaky("ctypes")))
attempt("crafted bytecode through marshal", crafted_code)
attempt("code.replace", replace_code)
attempt("sys._getframe", lambda: sys._getframe(0))
attempt("gc", lambda: __import__("gc"))
attempt("a second audit hook", lambda: sys.addaudithook(lambda *a: None) or 1 / 0)
print(json.dumps(held))
'''


def test_the_audit_hook_and_the_harness_cannot_be_rewritten():
    r = asyncio.run(Sandbox(LIMITS).run_program(HOOK_PROBE))
    assert r.status == "ok", r
    held = json.loads(r.stdout)
    assert held and all(held.values()), {k: v for k, v in held.items() if not v}
    # stdlib code that sets a new function's defaults (namedtuple) still works
    ok = asyncio.run(Sandbox(LIMITS).run_program("import collections\nP = collections.namedtuple('P', 'a', "
                                                   "defaults=[1])\nprint(P().a)\n"))
    assert (ok.status, ok.stdout.strip()) == ("ok", "1"), ok


# ---- 2. no socket of any family ---------------------------------------------------------------------

class UnixListener:
    """A host unix socket, world-writable, counting connections and bytes received."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o777)
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.connections, self.received = 0, b""
        self.stop = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(1)
            try:
                self.received += conn.recv(100)
            except OSError:
                pass
            conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


SOCKETS = r'''
import socket
outcomes = []
for make in (lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), lambda: socket.socketpair(),
             lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
             lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)):
    try:
        made = make()
        outcomes.append("made")
    except OSError as e:
        outcomes.append(type(e).__name__)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(@PATH@)
s.sendall(b"from the sandbox")
print("connected", outcomes)
'''


@needs_linux
def test_a_host_unix_socket_is_refused(shared_tmp):
    listener = UnixListener(shared_tmp / "host.sock")
    code = SOCKETS.replace("@PATH@", repr(str(listener.path)))
    try:
        layers = [{}, {"audit": False}, {"audit": False, "namespaces": False, "landlock": False}]
        runs = gather(*(Sandbox(LIMITS, tmp_root=str(shared_tmp), **kw).run_program(code) for kw in layers))
        for kw, r in zip(layers, runs):
            assert r.status == "error" and "connected" not in r.stdout, (kw, r)
            if kw:  # past the audit hook: the seccomp filter refuses every family
                assert "PermissionError" in r.error and "seccomp" in r.layers, (kw, r)
        time.sleep(0.3)
        assert (listener.connections, listener.received) == (0, b"")
        # Control: without the hook and the filter, the namespaces and Landlock do not stop it.
        r = asyncio.run(Sandbox(LIMITS, tmp_root=str(shared_tmp), audit=False, seccomp=False).run_program(code))
        assert "connected" in r.stdout and "netns" in r.layers, r
        deadline = time.monotonic() + 3
        while not listener.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener.received == b"from the sandbox"
    finally:
        listener.close()
    assert sorted(p.name for p in shared_tmp.iterdir()) == ["host.sock"]  # no run folder left


def _run_bpf(prog: list[tuple[int, int, int, int]], arch: int, nr: int) -> int:
    """What a classic BPF seccomp program returns for one system call (the loads, jumps and returns
    layers.seccomp_program uses)."""
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == layers.BPF_LD_W_ABS:
            acc = {0: nr, 4: arch}[k]
        elif code == layers.BPF_RET_K:
            return k
        elif code in (layers.BPF_JEQ_K, layers.BPF_JGE_K):
            hit = acc == k if code == layers.BPF_JEQ_K else acc >= k
            pc += jt if hit else jf
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
        pc += 1


@pytest.mark.parametrize("machine", sorted(layers.SECCOMP_DENIED))
def test_the_seccomp_program_refuses_exactly_its_list(machine):
    arch, denied = layers.SECCOMP_DENIED[machine]
    prog = layers.seccomp_program(machine)
    refused = layers.SECCOMP_RET_ERRNO | layers.EPERM
    for nr in range(500):
        want = refused if nr in denied else layers.SECCOMP_RET_ALLOW
        assert _run_bpf(prog, arch, nr) == want, nr
    assert _run_bpf(prog, 0x40000003, 102) == layers.SECCOMP_RET_KILL_PROCESS  # i386's socketcall
    if machine == "x86_64":
        assert _run_bpf(prog, arch, layers.X32_SYSCALL_BIT | 41) == refused  # x32's socket
    assert layers.seccomp_program("sparc") is None


# ---- 3. a code-task harness the candidate cannot steer ----------------------------------------------

# A module written at definition time into the run's folder, that folder put on sys.path in place,
# and an import of the module: in the old harness the import line was copied into the tests too.
PLANT = '''import os
import sys


def _plant(_=open("{mod}.py", "w").write({text!r}), __=sys.path.insert(0, os.getcwd())):
    return None


from {mod} import {name}


def {entry}({args}, _p=_plant):
    return {ret}
'''
YES = "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
HARNESS_ATTACKS = {
    "mbpp-127": {  # multiply_int, asserted with ==
        "a planted module rebinding the entry point": PLANT.format(
            mod="planted", text=YES + "def multiply_int(*a, **k):\n    return Yes()\n", name="multiply_int",
            entry="multiply_int", args="x, y", ret="None"),
        "builtins replaced in sys.modules": ("import sys\nclass Fake:\n    pass\n\ndef multiply_int(x, y, "
                                             "_=sys.modules.__setitem__('builtins', Fake())):\n    return None\n"),
    },
    "HumanEval/4": {  # mean_absolute_deviation, asserted with abs(...) < 1e-6
        "a planted abs": PLANT.format(mod="planted_abs", text="def abs(x):\n    return 0\n", name="abs",
                                      entry="mean_absolute_deviation", args="numbers", ret="0.0"),
        "builtins.abs rebound": ("import builtins\n\ndef mean_absolute_deviation(numbers, "
                                 "_=setattr(builtins, 'abs', lambda x: 0)):\n    return 0.0\n"),
        "an always-equal return value": ("class Anything(float):\n    def __eq__(self, o):\n        return True\n"
                                         "    def __sub__(self, o):\n        return 0.0\n\n"
                                         "def mean_absolute_deviation(numbers):\n    return Anything()\n"),
    },
    "mbpp-85": {  # surfacearea_sphere, asserted with math.isclose
        "math replaced in sys.modules": ("import sys\nclass M:\n    @property\n    def isclose(self):\n"
                                         "        return lambda *a, **k: True\n\ndef surfacearea_sphere(r, "
                                         "_=sys.modules.__setitem__('math', M())):\n    return None\n"),
    },
}
FINDER = '''import sys
from importlib.machinery import ModuleSpec


class Loader:
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        class Fraction:
            def __init__(self, *a):
                pass

            def __eq__(self, other):
                return True
            __hash__ = object.__hash__
        module.Fraction = Fraction


class Finder:
    def find_spec(self, name, path=None, target=None):
        return ModuleSpec(name, Loader()) if name == "fractions" else None
'''
IMPORT_STATE_ATTACKS = {  # on the tests' import of a module nothing imported before them
    "a finder put on sys.meta_path in place": FINDER + "\ndef add(a, b, _=sys.meta_path.insert(0, Finder())):\n"
                                                         "    return None\n",
    "finders put in sys.path_importer_cache": FINDER + ("\ndef add(a, b, _=[sys.path_importer_cache.__setitem__(p, "
                                                        "Finder()) for p in list(sys.path_importer_cache)]):\n"
                                                        "    return None\n"),
    "a path hook put on sys.path_hooks in place": FINDER + ("\ndef add(a, b, _=(sys.path_hooks.insert(0, lambda p: "
                                                            "Finder()), sys.path_importer_cache.clear())):\n"
                                                            "    return None\n"),
}
FRACTION_TESTS = ("import fractions\n\ndef check(candidate):\n"
                  "    assert fractions.Fraction(candidate(1, 2)) == fractions.Fraction(3)\n")


def test_candidates_that_steer_the_harness_score_zero(data_dir):
    mbpp, humaneval = load("mbpp", data_dir), load("humaneval", data_dir)
    problems = {p.id: (task, p) for task in (mbpp, humaneval)
                for p in task.problems("validate") + task.problems("test")}
    sandbox = Sandbox(LIMITS, 4)
    jobs, names = [], []
    for pid, attacks in HARNESS_ATTACKS.items():
        task, p = problems[pid]
        reference = p.extra.get("code") or p.extra["prompt"] + p.extra["canonical_solution"]
        for name, source in {"the reference": reference, **attacks}.items():
            names.append((pid, name))
            jobs.append(task.ascore(p, source, sandbox))
    for name, source in IMPORT_STATE_ATTACKS.items():
        names.append(("fractions", name))
        jobs.append(sandbox.run_solution(source, FRACTION_TESTS, "add"))
    names.append(("fractions", "the reference"))
    jobs.append(sandbox.run_solution("def add(a, b):\n    return a + b\n", FRACTION_TESTS, "add"))
    scores = {k: (float(r.passed) if isinstance(r, RunResult) else r) for k, r in zip(names, gather(*jobs))}
    assert scores == {k: 1.0 if k[1] == "the reference" else 0.0 for k in names}


def test_no_candidate_line_reaches_the_tests():
    spec = CodeSpec("f", "def check(candidate):\n    assert candidate(1) == sys.maxsize or True\n")
    code, tests = prepare(spec, "import os as sys\nfrom planted import f as g\n\ndef f(x):\n    return x\n")
    assert "import os as sys" in code and "planted" in code
    assert "planted" not in tests and "import os" not in tests
    assert "import sys" in tests  # a module the tests use unimported comes from the harness, not the candidate


# ---- 4. the parent gets a verdict whatever a child sends or leaves ---------------------------------

def _json_value(rng: random.Random, depth: int):
    kind = rng.randrange(8 if depth < 45 else 5)
    if kind == 0:
        return rng.choice([None, True, False, 0, -1, 10 ** rng.randrange(1, 30), 1.5, float("inf")])
    if kind in (1, 2, 3):
        alphabet = "ab\"\\\n\x00\u00e9\ud800\udfff\U0001f600{}[]"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
    if kind == 4:
        return rng.choice(["call", "done", "pid", "reply"])
    if kind in (5, 6):
        return [_json_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    return {rng.choice(["type", "nonce", "args", "kwargs", "method", "pid", "status", "layers", "\ud800"]):
            _json_value(rng, depth + 1) for _ in range(rng.randrange(4))}


FIELDS = {"call": ("id", "method", "args", "kwargs"), "pid": ("pid",), "x": ("v",),
          "done": ("nonce", "status", "passed", "output", "error", "stdout", "layers")}


def _typed(rng: random.Random, field: str):
    """A value of the type `field` takes, with hostile content."""
    value = _json_value(rng, 0)
    if field in ("args", "layers"):
        return value if isinstance(value, list) else [value]
    if field == "kwargs":
        return value if isinstance(value, dict) else {"input": value}
    if field in ("id", "pid"):
        return rng.choice([1, 0, -5, 2 ** 70, 4_000_000])
    if field == "passed":
        return rng.choice([True, False, None])
    return value if isinstance(value, str) else str(value)


def _fuzz_lines(n: int) -> list[bytes]:
    rng = random.Random(34)
    lines = [b"[" * 100_000 + b"]" * 100_000, b'{"type":"pid","pid":' + b"9" * 5000 + b"}", b"\xff\xfe\x00{}",
             b'{"type":"done","nonce":"\\ud800","status":"ok","passed":true,"layers":[1]}', b"", b"null",
             b'{"type":"call","method":"m","args":' + b"[" * 40 + b"]" * 40 + b',"kwargs":{}}', b"1e99999",
             b'{"type":"call","id":1,"method":"m","args":[NaN,-Infinity],"kwargs":{"\\udfff":"\\ud83d"}}']
    for _ in range(n):
        kind = rng.choice(list(FIELDS))
        msg = {"type": kind}
        for field in FIELDS[kind]:
            if rng.random() < 0.95:
                msg[field] = _typed(rng, field) if rng.random() < 0.8 else _json_value(rng, 0)
        line = json.dumps(msg).encode()
        damage = rng.randrange(5)
        if damage == 1:
            line = line[:rng.randrange(len(line) + 1)]
        elif damage == 2:
            i = rng.randrange(len(line))
            line = line[:i] + bytes([rng.randrange(256)]) + line[i + 1:]
        lines.append(line)
    return lines


def test_fuzz_the_decoder_always_gives_a_message_or_a_reason():
    decoded = 0
    for line in _fuzz_lines(3000):
        msg = protocol.decode(line)
        if isinstance(msg, protocol.Malformed):
            assert msg.reason
            continue
        decoded += 1
        text = json.dumps(msg, ensure_ascii=False)
        hashlib.sha256(text.encode("utf-8")).hexdigest()  # what the executor's cache does with arguments
    assert decoded > 100  # the fuzz reaches the typed checks, not only the JSON parser


HOSTILE_LINES = {
    "deep": b"[" * 30_000 + b"]" * 30_000,
    "deep call": b'{"type":"call","id":1,"method":"custom","args":' + b"[" * 40 + b"]" * 40 + b',"kwargs":{}}',
    "huge integer": b'{"type":"done","nonce":' + b"7" * 6000 + b"}",
    "not UTF-8": b'{"type":"done","nonce":"\xc3\x28"}',
    "lone surrogate": b'{"type":"done","nonce":"\\ud800","status":"ok","passed":true,"stdout":"\\udcff"}',
    "wrong types": b'{"type":"done","nonce":["x"],"status":{},"layers":7}',
    "not a dict": b'[{"type":"done"}]',
    "NUL bytes": b"\x00" * 64,
    "too long": b'{"type":"call","args":["' + b"x" * 200_000 + b'"]}',
    "no newline then exit": b'{"type":"do',
}
WRITE_TO_PARENT = '''import os, stat
for fd in range(3, 64):
    try:
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.write(fd, @LINE@)
    except OSError:
        pass
os._exit(0)
'''


def test_a_child_sending_anything_gets_a_verdict(shared_tmp):
    sandbox = Sandbox(LIMITS, 4, tmp_root=str(shared_tmp))
    lines = {k: v + (b"" if k == "no newline then exit" else b"\n") for k, v in HOSTILE_LINES.items()}
    runs = gather(*(sandbox.run_program(WRITE_TO_PARENT.replace("@LINE@", repr(line))) for line in lines.values()))
    for name, r in zip(lines, runs):
        assert r.status == "crashed" and r.passed is None and r.error, (name, r)
    assert list(shared_tmp.iterdir()) == []


SURROGATE_WORKFLOW = '''async def run_workflow(self):
    r = await self.custom(input=self.problem + "\\ud800", instruction="Solve.\\udfff")
    return r + "\\udcff"
'''
DEEP_ARGUMENTS = '''async def run_workflow(self):
    x = self.problem
    for i in range(10):
        for j in range(10):
            x = [x]
    return await self.custom(input=x, instruction="Solve.")
'''


def test_lone_surrogates_and_deep_arguments_from_a_workflow():
    seen: list[tuple[str, list, dict]] = []

    async def handler(method: str, args: list, kwargs: dict) -> str:
        seen.append((method, args, kwargs))
        blob = json.dumps([method, args, kwargs], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    sandbox = Sandbox(LIMITS)
    ok, deep = gather(sandbox.run_workflow(SURROGATE_WORKFLOW, {"problem": "p"}, ["custom"], handler),
                      sandbox.run_workflow(DEEP_ARGUMENTS, {"problem": "p"}, ["custom"], handler))
    assert ok.status == "ok" and ok.output.endswith("\ufffd"), ok
    ok.output.encode("utf-8")
    assert seen[0][2] == {"input": "p\ufffd", "instruction": "Solve.\ufffd"}
    assert deep.status == "error" and "nested too deeply" in deep.error and len(seen) == 1, deep


def _deep_tree(top: Path, depth: int) -> None:
    """`depth` nested folders below `top`, built through folder descriptors (past PATH_MAX)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("dddd", dir_fd=fd)
            sub = os.open("dddd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    finally:
        os.close(fd)


def test_cleanup_removes_deep_read_only_and_oddly_named_trees(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _deep_tree(run, 1100)  # 5500 characters of path in 1100 levels: past rmtree's recursion and PATH_MAX
    odd = run / "odd"
    odd.mkdir()
    (odd / "line\nbreak").write_text("x")
    with open(os.path.join(os.fsencode(odd), b"\xff\xfe-not-utf8"), "wb") as f:
        f.write(b"x")
    os.mkfifo(odd / "fifo")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    os.symlink(outside, odd / "link-out")
    os.symlink(odd / "loop", odd / "loop")
    locked = run / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner" / "f").write_text("x")
    os.chmod(locked / "inner" / "f", 0)
    os.chmod(locked / "inner", 0o500)
    os.chmod(locked, 0)
    t0 = time.monotonic()
    removal = remove_tree(str(run))
    assert removal.ok, removal.summary()
    assert not run.exists() and (outside / "keep.txt").read_text() == "keep"
    assert time.monotonic() - t0 < 10


def test_cleanup_reports_what_it_cannot_remove(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "a").mkdir(parents=True)
    (run / "a" / "stuck").write_text("x")
    real_unlink = os.unlink

    def unlink(path, *, dir_fd=None):
        if path == "stuck":
            raise PermissionError(1, "Operation not permitted")
        return real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    removal = remove_tree(str(run))
    assert not removal.ok and "stuck" in removal.summary() and (run / "a" / "stuck").exists()


# 1100 levels: past the recursion limit of shutil.rmtree, within PATH_MAX for the audit hook.
DEEP_TREE_PROGRAM = "import os\np = 'd'\nfor i in range(1100):\n    os.mkdir(p)\n    p += '/d'\nprint(len(p))\n"


def test_a_run_that_leaves_a_deep_tree_gets_a_verdict_and_leaves_nothing(shared_tmp):
    r = asyncio.run(Sandbox(LIMITS, tmp_root=str(shared_tmp)).run_program(DEEP_TREE_PROGRAM, timeout_s=30))
    assert r.status == "ok" and r.stdout.strip() == "2201", r
    assert list(shared_tmp.iterdir()) == []


# ---- 4b. a whole optimize iteration with such workflows among the generated ones --------------------

NORMAL_WORKFLOW = '''async def run_workflow(self):
    drafts = []
    for i in range(2):
        drafts.append(await self.custom(input=self.problem, instruction="Answer precisely, in one word."))
    return await self.sc_ensemble(solutions=drafts, problem=self.problem)'''
DEEP_TREE_WORKFLOW = '''async def run_workflow(self):
    r = await self.programmer(problem=self.problem, analysis="Build the folder tree first.")
    return r'''
QUESTIONS = [("What is two plus three?", "5"), ("What is four plus four?", "8"), ("What is one plus six?", "7")]


class HostileBackend(FakeBackend):
    """The scripted generator, writing hostile workflows between a normal one and one too close to the
    template; as executor it answers as FakeBackend does, and gives the Programmer code that builds a
    deep folder tree."""

    SOURCES = (NORMAL_WORKFLOW, SURROGATE_WORKFLOW.rstrip("\n"), DEEP_ARGUMENTS.rstrip("\n"), DEEP_TREE_WORKFLOW, BAD)

    def generate(self, prompts, params, *, adapter=True):
        if not adapter:
            return super().generate(prompts, params, adapter=False)
        out = []
        for _ in prompts:
            source = self.SOURCES[self.generated % len(self.SOURCES)]
            self.generated += 1
            out.append(Completion(f"<graph>\n{source}\n</graph>", 40, True))
        return out

    @staticmethod
    def answer(prompt: str) -> str:
        if "solve()" in prompt:
            return "```python\ndef solve():\n" + "".join(f"    {ln}\n" for ln in DEEP_TREE_PROGRAM.splitlines()[:5]) \
                + "    return 5\n```"
        return FakeBackend.answer(prompt)


def test_an_optimize_iteration_with_hostile_workflows_finishes(tmp_path, monkeypatch):
    from scoreflow.cli import main as cli

    sbx = tmp_path / "sbx"
    sbx.mkdir()
    os.chmod(sbx, 0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(sbx))  # where the sandbox makes its run folders
    backend = HostileBackend()
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: backend)
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n"
                            for i, (q, a) in enumerate(QUESTIONS * 2)))
    cfg = tmp_path / "task.toml"
    cfg.write_text('[task]\nscorer = "number"\nfamily = "math"\ndescription = "additions in words"\n')
    run = tmp_path / "run"
    assert cli.main(["optimize", "--task", "jsonl", "--data", str(data), "--config", str(cfg), "--run-dir", str(run),
                     "--iterations", "1", "--problems", "1", "-k", "5", "--no-dashboard",
                     "--set", "executor.runs=1", "--set", "generator.max_attempts=1",
                     "--set", "run.compare=false"]) == 0
    attempts = [json.loads(line) for line in (run / "workflows.jsonl").read_text(encoding="utf-8").splitlines()]
    executions = [json.loads(line) for line in (run / "executions.jsonl").read_text(encoding="utf-8").splitlines()]
    by_source = {a["source"]: a for a in attempts}
    assert not by_source[DEEP_ARGUMENTS.rstrip("\n")]["valid"]
    assert "nested too deeply" in by_source[DEEP_ARGUMENTS.rstrip("\n")]["reason"]
    assert by_source[SURROGATE_WORKFLOW.rstrip("\n")]["valid"] and by_source[DEEP_TREE_WORKFLOW]["valid"]
    assert by_source[NORMAL_WORKFLOW]["valid"] and not by_source[BAD]["valid"]
    assert any("\ufffd" in (e.get("output") or "") for e in executions)  # the surrogate, replaced
    ran = {(e["problem"], e["slot"]) for e in executions}
    valid = {(a["problem"], a["slot"]) for a in attempts if a["valid"]}
    assert valid and ran == valid and all(e["status"] for e in executions)
    assert list(sbx.iterdir()) == []


# ---- 5. the static policy covers every node type -----------------------------------------------------

PYTHON_312_NODES = ("TypeAlias", "TypeVar", "ParamSpec", "TypeVarTuple")


def _ast_node_names() -> set[str]:
    found, todo = set(), [ast.AST]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    found |= {n for n, c in vars(ast).items() if isinstance(c, type) and issubclass(c, ast.AST)}
    return found | set(PYTHON_312_NODES)


def test_every_node_type_is_allowed_or_rejected():
    allowed, rejected, abstract = policy.ALLOWED_NODES, set(policy.REJECTED_NODES), policy.ABSTRACT_NODES
    assert not (allowed & rejected) and not (allowed & abstract) and not (rejected & abstract)
    unreviewed = _ast_node_names() - allowed - rejected - abstract
    assert not unreviewed, f"node types with no decision: {sorted(unreviewed)}"


# Uses every allowed node type; the policy must accept it.
EVERY_ALLOWED = '''async def run_workflow(self):
    """Docstring."""
    xs: list = [await self.custom(input=self.problem, instruction="Solve.") for _ in range(2)]
    ys = {k: v for k, v in zip(xs, xs)}
    zs = {x for x in xs if x} | {"a", "b"}
    n = sum(len(x) for x in xs)
    n += 1
    flags = (n - 1) * 2 @ 1 if False else n / 2 // 1 % 3 ** 2 << 1 >> 1 | 1 ^ 1 & 1
    flags = ~n if not n else +n if n else -n
    ok = n == 1 or n != 2 and n < 3 or n <= 4 or n > 5 or n >= 6 or n is None or n is not None or n in xs or n not in xs
    first, *rest = xs
    del rest
    while n > 100:
        break
    for x in xs[0:1]:
        if (m := len(x)) > 0:
            continue
        pass
    try:
        assert ok, "checked"
    except ValueError:
        raise
    best = sorted(xs, key=lambda s: len(s))[-1]
    return f"{best!r:>{n}}" + str([flags, ys, zs, m, first, {**ys}])
'''
REJECTED_SOURCES = {
    "Import": "import os", "ImportFrom": "from os import path", "Global": "global g", "Nonlocal": "nonlocal g",
    "FunctionDef": "def f():\n        pass", "ClassDef": "class C:\n        pass",
    "AsyncFunctionDef": "async def f():\n        pass", "Yield": "yield 1", "YieldFrom": "yield from []",
    "With": "with self.problem:\n        pass", "AsyncWith": "async with self.problem:\n        pass",
    "AsyncFor": "async for x in self.problem:\n        pass",
    "Match": "match self.problem:\n        case _:\n            pass",
    "MatchClass": "match self.problem:\n        case str(mro=m):\n            pass",
}
if sys.version_info >= (3, 11):
    REJECTED_SOURCES["TryStar"] = "try:\n        pass\n    except* ValueError:\n        pass"


def _workflow(body: str) -> str:
    end = "return await self.custom(input=self.problem, instruction='x')"
    return f"async def run_workflow(self):\n    {body}\n    {end}\n"


def test_every_allowed_node_type_is_accepted_and_each_rejected_one_refused():
    tree = ast.parse(EVERY_ALLOWED)
    used = {type(n).__name__ for n in ast.walk(tree)}
    assert policy.ALLOWED_NODES <= used, sorted(policy.ALLOWED_NODES - used)
    assert static_check(EVERY_ALLOWED, ("Custom",)).ok, static_check(EVERY_ALLOWED, ("Custom",)).reason
    for name, body in REJECTED_SOURCES.items():
        source = _workflow(body)
        assert name in {type(n).__name__ for n in ast.walk(ast.parse(source))}, name
        c = static_check(source, ("Custom",))
        assert not c.ok and c.reason in (policy.REJECTED_NODES.get(name), policy._NESTED), (name, c.reason)
    # node types the parser never produces are refused when a tree holds them anyway
    for node in (ast.Expression(body=ast.Constant(1)), ast.Interactive(body=[])):
        assert not policy.check_tree(node, ("Custom",)).ok


@pytest.mark.parametrize("body, reason", [
    ("match self.problem:\n        case str(__class__=c):\n            pass", "match"),  # a class pattern's attribute
    ("s = '{0.gi_frame}'", "gi_frame"),  # a format field, even with str.format out of sight
    ("s = '{0[x]._secret}'", "_secret"),
    ("s = '{x:{0.mro}}'", "mro"),  # a field nested in a format spec
    ("op = self.custom", "awaited"),  # an operator referred to, not called
    ("r = str(self.custom)", "awaited"),
    ("r = self.custom(input=self.problem, instruction='x')", "awaited"),  # called, not awaited
    ("me = self", "self"),
    ("r = [s for s in [self]]", "self"),
    ("r = (lambda __builtins__: 0)", "__builtins__"),
    ("r = b'__class__'", "__"),
])
def test_the_policy_rejects_what_no_workflow_needs(body, reason):
    c = check(_workflow(body), ("Custom",), "", None)
    assert not c.ok and reason in c.reason, c.reason
