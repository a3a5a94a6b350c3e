"""The sandboxed side: runs one workflow, program or candidate solution. Standard library only;
started as `python -I -S -B child.py` in a fresh temporary directory, scrubbed environment.

Protocol (JSON lines on the original stdout; requests on stdin): the parent writes a
length-prefixed header {mode, source, ..., nonce, limits, isolation}. On Linux the first line may
be {"type": "pid"} naming the init process of the run's PID namespace. In workflow mode each
operator call goes out as {"type": "call"} and comes back as {"type": "reply"}. The run ends with
{"type": "done", nonce, status, ...}; the parent rejects a "done" without the nonce.

The nonce lives only in main()'s locals. Untrusted code cannot reach that frame: sys._getframe,
tb_frame/gi_frame/cr_frame/ag_frame, gc and tracing are refused by the audit hook. Everything main()
calls after untrusted code ran was captured before it ran, so monkeypatching cannot alter the verdict.
"""

import builtins
import json
import os
import resource
import sys

LINUX = sys.platform.startswith("linux")

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


def set_limits(limits):
    mb = 1024 * 1024
    for name, value in (
        ("RLIMIT_AS", limits.get("memory_mb", 1024) * mb),
        ("RLIMIT_CPU", limits.get("cpu_s", 30)),  # soft: SIGXCPU; SIGKILL a second later
        ("RLIMIT_FSIZE", limits.get("fsize_mb", 16) * mb),
        ("RLIMIT_NPROC", limits.get("nproc", 64)),
        ("RLIMIT_NOFILE", 256),
        ("RLIMIT_CORE", 0),
    ):
        kind = getattr(resource, name, None)
        if kind is None:
            continue
        try:
            soft, hard = resource.getrlimit(kind)
            top = value + 1 if name == "RLIMIT_CPU" else value
            if hard != resource.RLIM_INFINITY:
                value, top = min(value, hard), min(top, hard)
            resource.setrlimit(kind, (value, top))
        except (ValueError, OSError):
            pass


# ---- the isolation layers: layers.py ----------------------------------------------------

def _sibling(name):
    """Run a standard-library-only file beside this one into a namespace: `-I` keeps this folder off
    sys.path, so that a program cannot import our modules, hence no import statement."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    with open(path, encoding="utf-8") as f:
        ns = {"__name__": "sandbox_" + name[:-3], "__file__": path}
        exec(compile(f.read(), path, "exec"), ns)
    return ns


_LAYERS = _sibling("layers.py")
(_libc, unshare_namespaces, fork_into_pidns, drop_privileges, landlock, install_audit_hook,
 PR_SET_NO_NEW_PRIVS) = (_LAYERS[n] for n in ("_libc", "unshare_namespaces", "fork_into_pidns", "drop_privileges",
                                              "landlock", "install_audit_hook", "PR_SET_NO_NEW_PRIVS"))
del _LAYERS


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


def jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
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

def main():
    proto_in, proto_out = os.dup(0), os.dup(1)
    header = json.loads(read_exact(proto_in, int(read_exact(proto_in, 10))))
    nonce = header.pop("nonce")
    iso = header.get("isolation", {})
    limits = header.get("limits", {})
    mode = header["mode"]
    workdir = os.path.realpath(os.getcwd())
    read_roots = [os.path.realpath(p) for p in iso.get("read_roots", [])]
    layers = ["rlimits", "audit-hook", "scrubbed-env", "tmpdir"]

    # The program's own stdin/stdout/stderr: empty input, output to a file in the working directory.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    out_fd = os.open("output.txt", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    if mode != "workflow":
        os.close(proto_in)

    if LINUX:
        ctypes, libc = _libc()
        if iso.get("namespaces", True) and unshare_namespaces(ctypes, libc, layers):
            fork_into_pidns(ctypes, libc, proto_out, proto_in if mode == "workflow" else -1)
        set_limits(limits)
        uid = iso.get("uid")
        if uid is not None and os.geteuid() == 0:
            os.fchown(out_fd, uid, uid)
            drop_privileges(ctypes, libc, uid, bool(iso.get("keep_read")), layers)
        if not (iso.get("landlock", True) and landlock(ctypes, libc, workdir, read_roots, layers)):
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        del ctypes, libc
        for name in ("ctypes", "_ctypes", "ctypes._endian"):
            sys.modules.pop(name, None)
    else:
        set_limits(limits)
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
    restore, b_dict, mods = _restore, vars(builtins), sys.modules
    max_out = int(limits.get("max_output_chars", 20000))
    snapshot = dict(vars(builtins))
    modules = {name: dict(vars(m)) for name, m in list(sys.modules.items()) if m is not None}
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
    if iso.get("audit", True):
        install_audit_hook(workdir, read_roots, mode, header.get("allow_imports"))
    else:  # only the OS layers' own tests turn this off
        layers.remove("audit-hook")
    status, output, error, passed = "ok", None, None, None
    try:
        code = compile(header["source"], "<workflow>" if mode == "workflow" else "<solution>", "exec")
        exec(code, g)
        if mode == "workflow":
            result = drive(g["run_workflow"](obj), proto_in, write_line, support["Pending"], support["Reply"])
            output = result if isinstance_(result, str_t) else "" if result is None else repr_(result)
            output = str_t.__str__(output) if isinstance_(output, str_t) else "<unprintable>"
        elif mode == "solution":
            kept = restore(snapshot, modules, b_dict, mods)  # noqa: F841  (alive until exit: no __del__ runs)
            entry = header.get("entry_point") or ""
            fn = g.get(entry) if entry else None
            if not callable_(fn):
                raise NameError(f"the solution defines no function {entry!r}")
            candidate = wrap(fn)
            tg = {"__name__": "__main__", "__builtins__": dict(snapshot), entry: candidate}
            exec(compile(header.get("tests") or "", "<tests>", "exec"), tg)
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


def _restore(snapshot, modules, b_dict, mods, dict_=dict, list_=list, vars_=vars, type_=type):
    """Undo monkeypatching of builtins and already-imported modules before the tests run, and
    drop modules the solution imported so the tests import fresh copies. Uses captured defaults
    only; every dict is restored without comparing (an always-equal value could fake equality),
    and what is dropped is returned so that no finalizer runs now."""
    kept = [dict_.copy(b_dict)]
    dict_.clear(b_dict)
    dict_.update(b_dict, snapshot)
    for name in list_(dict_.keys(mods)):
        if name not in modules:
            kept.append(dict_.pop(mods, name, None))
    for name, saved in dict_.items(modules):
        m = dict_.get(mods, name)
        if m is None:
            continue
        d = vars_(m)
        if type_(d) is dict_:
            kept.append(dict_.copy(d))
            dict_.clear(d)
            dict_.update(d, saved)
    return kept


if __name__ == "__main__":
    main()
