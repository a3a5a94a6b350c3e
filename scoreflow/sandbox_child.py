"""The sandboxed side: runs one workflow, program or candidate solution. Standard library only;
started as `python -I -S -B sandbox_child.py` in a fresh temporary directory, scrubbed environment.

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
CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x40000000, 0x20000000
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS = 1, 8, 38
CAP_DAC_READ_SEARCH = 2
SYS_LANDLOCK_CREATE, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT = 444, 445, 446

# Modules a program or solution may not import (most are also refused by audit events).
DENIED_IMPORTS = frozenset({
    "ctypes", "_ctypes", "_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase",
    "_testimportmultiple", "_testclinic", "_xxsubinterpreters", "_xxtestfuzz", "_posixsubprocess",
    "subprocess", "socket", "_socket", "ssl", "_ssl", "multiprocessing", "_multiprocessing", "pty",
    "mmap", "resource", "fcntl", "termios", "faulthandler", "tracemalloc", "asyncio", "selectors",
    "select", "concurrent", "http", "ftplib", "smtplib", "telnetlib", "webbrowser", "pdb",
    "bdb", "code", "codeop", "gc", "zipimport", "runpy",
})
BLOCKED_EVENTS = (
    "socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "os.kill", "os.killpg", "os.putenv", "os.unsetenv", "os.setxattr", "os.removexattr",
    "os.chmod", "os.chown", "os.link", "os.symlink", "os.truncate", "os.chdir", "os.chroot", "os.chflags",
    "os.lchflags", "os.lchmod", "os.lchown", "ctypes.", "sys.setprofile", "sys.settrace", "sys.addaudithook",
    "sys._current_frames", "sys._current_exceptions", "pty.", "mmap.",
    "resource.", "signal.", "shutil.", "gc.", "function.__new__", "code.__new__", "cpython.",
    "winreg.", "urllib.", "http.", "ftplib.", "smtplib.", "telnetlib.", "webbrowser.",
    "sqlite3.", "fcntl.", "msvcrt.",
)
FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "f_globals",
                         "f_locals", "f_builtins", "gi_code", "cr_code", "ag_code"})
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

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


# ---- OS layers (Linux) ------------------------------------------------------------------------

def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def unshare_namespaces(ctypes, libc, layers):
    """A new network and PID namespace (plus a user namespace when not root). True if PID ns made."""
    root = os.geteuid() == 0
    uid, gid = os.getuid(), os.getgid()
    for flags in ((CLONE_NEWNET | CLONE_NEWPID) if root else (CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWPID),
                  CLONE_NEWNET if root else (CLONE_NEWUSER | CLONE_NEWNET)):
        if libc.unshare(flags) != 0:
            continue
        if flags & CLONE_NEWUSER:
            try:
                for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                                   ("/proc/self/gid_map", f"{gid} {gid} 1")):
                    fd = os.open(path, os.O_WRONLY)
                    os.write(fd, text.encode())
                    os.close(fd)
            except OSError:
                pass
            layers.append("userns")
        layers.append("netns")
        if flags & CLONE_NEWPID:
            layers.append("pidns")
            return True
        return False
    return False


def fork_into_pidns(ctypes, libc, proto_out, proto_in):
    """Fork: the child becomes PID 1 of the namespace (killing it kills every process in it).
    This process reports the child's pid to the parent, then waits and mirrors its exit."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_w)
        libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
        os.read(ready_r, 1)  # the parent learns our pid before any untrusted code runs
        os.close(ready_r)
        return
    os.close(ready_r)
    os.write(proto_out, (json.dumps({"type": "pid", "pid": pid}) + "\n").encode())
    os.write(ready_w, b"x")
    os.close(ready_w)
    for fd in (0, 1, 2, proto_in, proto_out):
        try:
            os.close(fd)
        except OSError:
            pass
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        import signal

        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP keep their default anyway
            pass
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def drop_privileges(ctypes, libc, uid, keep_read, layers):
    """Root only: become a per-run uid (so RLIMIT_NPROC applies and nothing is writable by owner).
    keep_read keeps CAP_DAC_READ_SEARCH when the interpreter's files are not world-readable."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    if keep_read:
        libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setresuid(uid, uid, uid)
    if keep_read:
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        data = (Data * 2)()
        data[0].effective = data[0].permitted = 1 << CAP_DAC_READ_SEARCH
        if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
        layers.append("uid+read-cap")
    else:
        layers.append("uid")


def landlock(ctypes, libc, workdir, read_roots, layers):
    """Filesystem: read-only under read_roots, read-write in workdir, execute nowhere. TCP bind and
    connect refused (ABI >= 4); signals and abstract unix sockets scoped to the run (ABI >= 6)."""
    abi = libc.syscall(SYS_LANDLOCK_CREATE, None, 0, 1)
    if abi < 1:
        return False
    fs_all = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if abi >= 2:
        fs_all |= 1 << 13  # refer
    if abi >= 3:
        fs_all |= 1 << 14  # truncate
    if abi >= 5:
        fs_all |= 1 << 15  # ioctl_dev
    read = 4 | 8  # read_file | read_dir
    file_rights = 1 | 2 | 4 | (1 << 14 if abi >= 3 else 0) | (1 << 15 if abi >= 5 else 0)
    rw = fs_all & ~(1 | 64 | 2048)  # no execute, no char or block devices

    class Attr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class Beneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    attr = Attr(fs_all, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    rs = libc.syscall(SYS_LANDLOCK_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if rs < 0:
        return False
    try:
        rules = [(p, read) for p in read_roots] + [(workdir, rw), ("/dev/null", 2 | 4), ("/dev/urandom", 4),
                                                   ("/dev/zero", 4)]
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not os.path.isdir(path):
                    rights &= file_rights
                libc.syscall(SYS_LANDLOCK_ADD_RULE, rs, 1, ctypes.byref(Beneath(rights, fd)), 0)
            finally:
                os.close(fd)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        if libc.syscall(SYS_LANDLOCK_RESTRICT, rs, 0) != 0:
            return False
    finally:
        os.close(rs)
    layers.append(f"landlock-v{abi}" + ("+tcp" if abi >= 4 else "") + ("+scope" if abi >= 6 else ""))
    return True


# ---- the audit hook ---------------------------------------------------------------------------

def install_audit_hook(workdir, read_roots, mode, allow_imports):
    """Refuses processes, sockets, ctypes, frames, tracing, and file access outside `workdir`
    (reads also under `read_roots`). Uses only C-level operations on exact str values, so patching
    os.path, builtins or any module cannot change its decisions."""
    cwd = workdir
    roots = tuple(r.rstrip("/") + "/" for r in read_roots)
    inside_prefix = workdir + "/"
    blocked = BLOCKED_EVENTS
    frame_attrs = FRAME_ATTRS
    denied = DENIED_IMPORTS
    allowed = frozenset(allow_imports) if allow_imports is not None else None
    guard_frames = True
    str_t, bytes_t, int_t, type_, len_ = str, bytes, int, type, len
    perm, imp_err, val_err = PermissionError, ImportError, ValueError
    stat, write_flags = os.stat, WRITE_FLAGS

    def norm(p):
        if type_(p) is bytes_t:
            p = bytes_t.decode(p, "utf-8", "surrogateescape")
        if type_(p) is not str_t:
            return None  # path-like objects could answer differently to the hook and to open()
        if not str_t.startswith(p, "/"):
            p = cwd + "/" + p
        parts = []
        for seg in str_t.split(p, "/"):
            if seg == "" or seg == ".":
                continue
            if seg == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(seg)
        return "/" + "/".join(parts)

    def inside(p):
        n = norm(p)
        return n is not None and (n == cwd or str_t.startswith(n, inside_prefix))

    def readable(p):
        n = norm(p)
        if n is None:
            return False
        if n == cwd or str_t.startswith(n, inside_prefix):
            return True
        return str_t.startswith(n + "/", roots)

    def hook(event, args):
        if str_t.startswith(event, blocked):
            raise perm("sandbox: " + event + " is not allowed")
        if event == "open":
            path, mode_, flags = args[0], args[1], args[2]
            if type_(path) is int_t:
                return
            writing = type_(flags) is int_t and flags & write_flags
            if type_(mode_) is str_t:
                for c in "wax+":
                    if c in mode_:
                        writing = True
            if writing:
                if not inside(path):
                    raise perm("sandbox: writing outside the working directory is not allowed")
            elif not readable(path):
                raise perm("sandbox: reading outside the working directory is not allowed")
            elif not inside(path):
                try:
                    if stat(path).st_mode & 0o170000 == 0o040000:
                        raise perm("sandbox: opening a directory outside the working directory is not allowed")
                except OSError:
                    pass
        elif event in ("os.remove", "os.rmdir", "os.mkdir", "os.utime"):
            if not inside(args[0]) or (args[-1] is not None and args[-1] != -1):
                raise perm("sandbox: " + event + " outside the working directory is not allowed")
        elif event in ("os.rename", "os.replace"):
            if not (inside(args[0]) and inside(args[1])) or any(a is not None and a != -1 for a in args[2:]):
                raise perm("sandbox: " + event + " outside the working directory is not allowed")
        elif event in ("os.listdir", "os.scandir"):
            path = args[0] if args and args[0] is not None else "."
            if type_(path) is not int_t and not readable(path):
                raise perm("sandbox: " + event + " outside the working directory is not allowed")
        elif event == "import":
            top = str_t.split(str_t(args[0]), ".")[0]
            if mode != "workflow" and (top in denied or (allowed is not None and top not in allowed)):
                raise imp_err("sandbox: import of " + top + " is not allowed")
        elif guard_frames:
            if event == "sys._getframe":
                raise val_err("call stack is not available in the sandbox")
            if event == "object.__getattr__" and len_(args) > 1 and args[1] in frame_attrs:
                raise perm("sandbox: frame access is not allowed")

    sys.addaudithook(hook)


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
