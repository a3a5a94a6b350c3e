"""The sandbox's second stage: runs one workflow, program or candidate solution. Standard library
only, and never ctypes: the first stage (confine.py) applied the OS layers and then exec'd this code
as `python -I -S -B -c <this file> <audit.py> <layers>` in the run's temporary directory.

Protocol (JSON lines on the original stdout; requests on stdin): the parent writes a
length-prefixed header {mode, source, ..., nonce, limits, audit, read_roots}, which this stage reads
after the first stage's header. On Linux the first line may be {"type": "pid"}, written by the first
stage, naming the init process of the run's PID namespace. In workflow mode each operator call goes
out as {"type": "call"} and comes back as {"type": "reply"}. The run ends with {"type": "done",
nonce, status, ...}; the parent rejects a "done" without the nonce.

The nonce lives only in main()'s locals. Untrusted code cannot reach that frame: sys._getframe,
tb_frame/gi_frame/cr_frame/ag_frame, gc and tracing are refused by the audit hook. Everything main()
calls after untrusted code ran was captured before it ran, and the hook refuses rewriting the code or
defaults of this file's functions, so monkeypatching cannot alter the verdict.
"""

import builtins
import json
import os
import sys

SAFE_BUILTINS = (
    "abs", "all", "any", "ascii", "bin", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float",
    "format", "hex", "int", "isinstance", "iter", "len", "list", "map", "max", "min", "next", "oct", "ord",
    "pow", "print", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple",
    "zip", "Exception", "ValueError", "TypeError", "KeyError", "IndexError", "RuntimeError",
    "ZeroDivisionError", "AttributeError", "StopIteration", "True", "False", "None",
)

# Compiled with a snapshot of the builtins taken before untrusted code ran: a candidate's return
# value is rebuilt from exact builtin types so it cannot carry an always-equal __eq__.
PURE_SOURCE = '''
def pure(v, depth=0):
    t = type(v)
    if depth > 100:
        raise TypeError("return value nested too deeply")
    if v is None or t is bool or t is int or t is float or t is str or t is bytes or t is complex:
        return v
    if t is list:
        return [pure(x, depth + 1) for x in v]
    if t is tuple:
        return tuple([pure(x, depth + 1) for x in v])
    if t is dict:
        return {pure(k, depth + 1): pure(x, depth + 1) for k, x in dict.items(v)}
    if t is set:
        return set([pure(x, depth + 1) for x in v])
    if t is frozenset:
        return frozenset([pure(x, depth + 1) for x in v])
    raise TypeError("the solution returned a " + t.__name__ + ", not a plain builtin value")

def wrap(fn):
    def candidate(*args, **kwargs):
        return pure(fn(*args, **kwargs))
    return candidate
'''


def read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, min(n - got, 1 << 20))
        if not b:
            raise EOFError("header cut short")
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


# ---- workflow mode ----------------------------------------------------------------------------

# Everything a workflow can touch (its operators, their replies) is defined in a namespace of its
# own, so no function it reaches has this module's globals (os, the protocol) as __globals__.
SUPPORT_SOURCE = '''
class Reply(str):
    """An operator's reply: a string that also answers reply["response"]-style lookups."""

    def __getitem__(self, key):
        if isinstance(key, str):
            return self
        return str.__getitem__(self, key)

    def get(self, key, default=None):
        return self


class Pending:
    """What `await self.<operator>(...)` yields to the driver: one call for the parent to answer."""

    __slots__ = ("method", "args", "kwargs")

    def __init__(self, method, args, kwargs):
        self.method, self.args, self.kwargs = method, args, kwargs

    def __await__(self):
        return (yield self)


def jsonable(value, depth=0):
    if depth > 20:  # the parent refuses messages nested deeper than its own bound
        raise ValueError("operator arguments nested too deeply")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in value.items()}
    return str(value)


def make_op(name):
    def op(*args, **kwargs):
        return Pending(name, jsonable(list(args)), jsonable(kwargs))
    return staticmethod(op)
'''


def safe_builtins():
    return {k: getattr(builtins, k) for k in SAFE_BUILTINS if hasattr(builtins, k)}


def prepare_workflow(header):
    support = {"__name__": "workflow", "__builtins__": {**safe_builtins(), "__build_class__": builtins.__build_class__,
                                                       "staticmethod": staticmethod}}
    exec(compile(SUPPORT_SOURCE, "<workflow-support>", "exec"), support)
    ns = {name: support["make_op"](name) for name in header.get("methods", [])}
    ns.update(header.get("attrs", {}))
    obj = type("Workflow", (), ns)()
    return {"__builtins__": safe_builtins()}, obj, support


def drive(coro, proto_in, write_line, Pending, Reply):
    """Runs the workflow coroutine: operator calls are sequential (workflows cannot import asyncio),
    so each one is a blocking request and reply with the parent."""
    buffer, next_id = b"", 0
    value, exc = None, None
    while True:
        try:
            req = coro.send(value) if exc is None else coro.throw(exc)
        except StopIteration as stop:
            return stop.value
        value, exc = None, None
        if type(req) is not Pending:
            exc = RuntimeError("a workflow may only await its operators")
            continue
        next_id += 1
        write_line(json.dumps({"type": "call", "id": next_id, "method": req.method, "args": req.args,
                               "kwargs": req.kwargs}))
        while b"\n" not in buffer:
            chunk = os.read(proto_in, 1 << 16)
            if not chunk:
                raise RuntimeError("parent closed the channel")
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        msg = json.loads(line)
        if msg.get("ok"):
            v = msg.get("value")
            value = Reply(v) if isinstance(v, str) else v
        else:
            exc = RuntimeError(msg.get("error") or "operator failed")


# ---- main -------------------------------------------------------------------------------------

def load_audit(source):
    """The audit hook's module, run into a namespace that no untrusted code can reach."""
    ns = {"__name__": "sandbox_audit"}
    exec(compile(source, "audit.py", "exec"), ns)
    return ns["install_audit_hook"]


def main():
    install_audit_hook, layers = load_audit(sys.argv[1]), json.loads(sys.argv[2])
    del sys.argv[1:]
    proto_in, proto_out = os.dup(0), os.dup(1)
    header = json.loads(read_exact(proto_in, int(read_exact(proto_in, 10))))
    nonce = header.pop("nonce")
    limits = header.get("limits", {})
    mode = header["mode"]
    workdir = os.path.realpath(os.getcwd())
    read_roots = [os.path.realpath(p) for p in header.get("read_roots", [])]

    # The program's own stdin/stdout/stderr: empty input, output to a file in the working directory.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    out_fd = os.open("output.txt", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    if mode != "workflow":
        os.close(proto_in)
    import io

    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0, closefd=False), write_through=True)
    sys.stderr = sys.stdout

    # Captured before untrusted code runs; the verdict below uses nothing else.
    import _thread
    import signal

    write, pread, exit_, fstat = os.write, os.pread, os._exit, os.fstat
    threads, sigmask, block, all_signals = _thread._count, signal.pthread_sigmask, signal.SIG_BLOCK, signal.valid_signals()
    channel = fstat(proto_out)
    channel_id = (channel.st_dev, channel.st_ino)
    enc = json.encoder.c_encode_basestring_ascii or json.encoder.py_encode_basestring_ascii
    str_t, type_, repr_, isinstance_, callable_, len_ = str, type, repr, isinstance, callable, len
    decode = bytes.decode
    max_out = int(limits.get("max_output_chars", 20000))
    restore, saved = _restore, []
    if mode == "solution":  # the modules the tests import, loaded now so their imports run no finder later
        try:
            exec(compile(header.get("test_imports") or "", "<test-imports>", "exec"), {"__name__": "__main__"})
        except Exception:
            pass  # the tests then fail on their own import
        saved = _snapshot(builtins)
    snapshot = dict(vars(builtins))
    pure_ns = {"__builtins__": dict(snapshot)}
    exec(compile(PURE_SOURCE, "<harness>", "exec"), pure_ns)
    wrap = pure_ns["wrap"]

    def write_line(text):
        write(proto_out, (text + "\n").encode())

    obj = None
    if mode == "workflow":
        g, obj, support = prepare_workflow(header)
    else:
        g = {"__name__": "__main__", "__builtins__": builtins}
    if header.get("audit", True):
        own = [f for f in globals().values() if type(f) is type(main)]  # this file's functions
        install_audit_hook(workdir, read_roots, mode, header.get("allow_imports"), own)
        layers.append("audit-hook")
    status, output, error, passed = "ok", None, None, None
    try:
        code = compile(header["source"], "<workflow>" if mode == "workflow" else "<solution>", "exec")
        exec(code, g)
        if mode == "workflow":
            result = drive(g["run_workflow"](obj), proto_in, write_line, support["Pending"], support["Reply"])
            output = result if isinstance_(result, str_t) else "" if result is None else repr_(result)
            output = str_t.__str__(output) if isinstance_(output, str_t) else "<unprintable>"
        elif mode == "solution":
            kept = restore(saved)  # noqa: F841  (alive until exit: no __del__ runs)
            entry = header.get("entry_point") or ""
            fn = g.get(entry) if entry else None
            if not callable_(fn):
                raise NameError(f"the solution defines no function {entry!r}")
            candidate = wrap(fn)
            tg = {"__name__": "__main__", "__builtins__": dict(snapshot), entry: candidate}
            exec(compile(header.get("tests") or "", "<tests>", "exec"), tg)
            tg[entry] = candidate  # whatever the test source bound to the name, the tests call the candidate
            check = tg.get("check")
            if check is not None and type_(check).__name__ == "function":
                check(candidate)
            passed = True
    except SystemExit as e:
        status, error = "error", f"SystemExit({e.code!r})"[:200]
    except MemoryError:
        status, error = "error", "MemoryError"
    except RecursionError:
        status, error = "error", "RecursionError: maximum recursion depth exceeded"
    except BaseException as e:  # everything the code raises is its own failure
        try:
            status, error = "error", f"{type(e).__name__}: {e}"[:2000]
        except BaseException:
            status, error = "error", "an exception that cannot be printed"
    # From here on, only captured locals: untrusted code may have patched any module. No signal
    # handler may run and no other thread may be alive, so nothing untrusted runs between the
    # check that our channel is still the parent's pipe and the write of the verdict to it.
    try:
        sigmask(block, all_signals)
    except BaseException:
        exit_(3)
    if threads() > 0:
        status, output, error, passed = "error", None, "threads were still running when the code finished", False
    try:
        data = pread(out_fd, max_out * 4 + 4, 0)
        stdout = decode(data, "utf-8", "replace")[:max_out]
    except BaseException:
        stdout = ""
    if type_(output) is str_t and len_(output) > max_out:
        status, output, error, passed = "error", None, "the workflow's output exceeds the size limit", False
    passed_s = "null" if mode != "solution" else ("true" if passed is True and status == "ok" else "false")
    text_out = "null" if type_(output) is not str_t else enc(output)
    text_err = "null" if type_(error) is not str_t else enc(error[:2000])
    layer_s = ",".join(enc(x) for x in layers)
    msg = ('{"type":"done","nonce":' + enc(nonce) + ',"status":' + enc(status) + ',"passed":' + passed_s
           + ',"output":' + text_out + ',"error":' + text_err + ',"stdout":' + enc(stdout)
           + ',"layers":[' + layer_s + ']}\n')
    try:
        now = fstat(proto_out)
        if (now.st_dev, now.st_ino) == channel_id:
            write(proto_out, msg.encode())
    finally:
        exit_(0)


# The import system's state, which a solution could change in place to steer the tests' imports.
IMPORT_STATE = ("meta_path", "path", "path_hooks", "path_importer_cache")


def _snapshot(builtins_module):
    """What _restore puts back: sys.modules, every module's dict, the builtins and the import
    system's lists and cache, each as (the object itself, a copy of its content)."""
    saved = [(sys.modules, dict(sys.modules)), (vars(builtins_module), dict(vars(builtins_module)))]
    saved += [(vars(m), dict(vars(m))) for m in list(sys.modules.values())
              if m is not None and type(vars(m)) is dict]
    saved += [(getattr(sys, name), type(getattr(sys, name))(getattr(sys, name))) for name in IMPORT_STATE]
    return saved


def _restore(saved, dict_=dict, list_=list, type_=type):
    """Puts back, by content and in place, everything _snapshot saved: the tests see the modules,
    builtins and import system as they were before the solution ran, including lists and dicts it
    changed in place. Uses captured defaults only, and no comparison (an always-equal value could
    fake equality); what is displaced is returned so that no finalizer runs now."""
    kept = []
    for obj, content in saved:
        if type_(obj) is dict_:
            kept.append(dict_.copy(obj))
            dict_.clear(obj)
            dict_.update(obj, content)
        elif type_(obj) is list_:
            kept.append(list_.copy(obj))
            list_.clear(obj)
            list_.extend(obj, content)
    return kept


if __name__ == "__main__":
    main()
