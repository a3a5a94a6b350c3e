"""The sandboxed side: runs one workflow or one program. Standard library only; started as
`python -I -S -B sandbox_child.py` in a fresh temporary directory with a scrubbed environment.

Protocol (JSON lines): the parent writes a header {mode, source, attrs, methods, limits}; in
workflow mode each operator call goes to the parent as {"type": "call", ...} and comes back as
{"type": "reply", ...}; the child ends with {"type": "done", status, output, error, stdout}.
"""

import asyncio
import builtins
import io
import json
import os
import resource
import sys

PROTO_OUT = None


def send(msg):
    data = (json.dumps(msg) + "\n").encode()
    os.write(PROTO_OUT, data)


def set_limits(limits):
    mb = 1024 * 1024
    for name, value in (
        ("RLIMIT_AS", limits.get("memory_mb", 1024) * mb),
        ("RLIMIT_CPU", limits.get("cpu_s", 30)),
        ("RLIMIT_FSIZE", limits.get("fsize_mb", 16) * mb),
        ("RLIMIT_NPROC", limits.get("nproc", 64)),
        ("RLIMIT_CORE", 0),
    ):
        kind = getattr(resource, name, None)
        if kind is None:
            continue
        try:
            soft, hard = resource.getrlimit(kind)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError):
            pass


BLOCKED_EVENTS = (
    "socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "os.kill", "os.killpg", "os.putenv", "os.unsetenv", "ctypes.", "sys.setprofile",
    "sys.settrace", "sys.addaudithook", "pty.", "mmap.", "winreg.", "urllib.", "http.", "ftplib.",
    "smtplib.", "telnetlib.", "webbrowser.", "shutil.rmtree", "os.chmod", "os.chown", "os.link",
    "os.symlink", "os.truncate", "os.setxattr", "os.removexattr", "resource.setrlimit", "resource.prlimit",
    "sys._current_frames", "sys.setrecursionlimit", "signal.", "os.chdir", "os.chroot", "gc.get_referrers",
    "gc.get_referents", "gc.get_objects", "function.__new__", "code.__new__", "object.__delattr__",
)


def install_audit_hook(workdir, allow_imports):
    workdir = os.path.realpath(workdir)
    allowed = set(allow_imports) if allow_imports is not None else None

    def inside(path):
        try:
            p = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else "")
        except Exception:
            return False
        return p == workdir or p.startswith(workdir + os.sep)

    def hook(event, args):
        if event.startswith(BLOCKED_EVENTS):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode = args[0], args[1]
            if isinstance(path, int):
                return
            writing = mode is not None and any(c in str(mode) for c in "wax+")
            if isinstance(mode, int):
                writing = bool(mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC))
            if writing and not inside(path):
                raise PermissionError("sandbox: writing outside the working directory is not allowed")
            if not writing and not inside(path) and not _stdlib(path):
                raise PermissionError("sandbox: reading outside the working directory is not allowed")
        elif event in ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.replace", "os.utime"):
            if args and not inside(args[0] if args[0] is not None else "."):
                raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")
        elif event in ("os.listdir", "os.scandir"):
            path = args[0] if args and args[0] is not None else "."
            if not inside(path) and not _stdlib(path):
                raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")
        elif event == "import" and allowed is not None:
            top = str(args[0]).split(".")[0]
            if top not in allowed and top not in sys.modules:
                raise ImportError(f"sandbox: import of {args[0]} is not allowed")

    sys.addaudithook(hook)


_PREFIXES = tuple({os.path.realpath(p) + os.sep for p in (sys.base_prefix, os.path.dirname(os.__file__))})


def _stdlib(path):
    try:
        p = os.path.realpath(os.fsdecode(path)) + os.sep
    except Exception:
        return False
    return p.startswith(_PREFIXES) and "site-packages" not in p and "dist-packages" not in p


SAFE_BUILTINS = (
    "abs", "all", "any", "ascii", "bin", "bool", "chr", "dict", "divmod", "enumerate", "filter", "float",
    "format", "hex", "int", "isinstance", "iter", "len", "list", "map", "max", "min", "next", "oct", "ord",
    "pow", "print", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple",
    "zip", "Exception", "ValueError", "TypeError", "KeyError", "IndexError", "RuntimeError",
    "ZeroDivisionError", "AttributeError", "StopIteration", "True", "False", "None",
)


class Reply(str):
    """An operator's reply: a string that also answers `reply["response"]`-style lookups."""

    def __getitem__(self, key):
        if isinstance(key, str):
            return self
        return str.__getitem__(self, key)

    def get(self, key, default=None):
        return self


class Channel:
    def __init__(self):
        self.pending = {}
        self.next_id = 0
        self.buffer = b""

    def feed(self, data):
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            msg = json.loads(line)
            fut = self.pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                if msg.get("ok"):
                    fut.set_result(msg.get("value"))
                else:
                    fut.set_exception(RuntimeError(msg.get("error") or "operator failed"))

    def eof(self):
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError("parent closed the channel"))

    async def call(self, method, args, kwargs):
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        send({"type": "call", "id": self.next_id, "method": method, "args": args, "kwargs": kwargs})
        value = await fut
        return Reply(value) if isinstance(value, str) else value


def jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def make_self(channel, attrs, methods):
    ns = {}
    for name in methods:
        def op(*args, _name=name, **kwargs):
            return channel.call(_name, jsonable(list(args)), jsonable(kwargs))
        ns[name] = staticmethod(op)
    ns.update(attrs)
    cls = type("Workflow", (), ns)
    return cls()


def main():
    global PROTO_OUT
    proto_in = os.dup(0)
    PROTO_OUT = os.dup(1)
    header = json.loads(_read_exact(proto_in, int(_read_exact(proto_in, 10))))
    limits = header.get("limits", {})
    workdir = os.getcwd()
    # The program's own stdin/stdout/stderr: empty input, output to a file in the working directory.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    out_fd = os.open("output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
    sys.stderr = sys.stdout
    set_limits(limits)
    mode = header["mode"]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    channel = Channel()

    class Reader(asyncio.Protocol):
        def data_received(self, data):
            channel.feed(data)

        def eof_received(self):
            channel.eof()

    if mode == "workflow":
        loop.run_until_complete(loop.connect_read_pipe(Reader, os.fdopen(proto_in, "rb", buffering=0)))
    max_out = int(limits.get("max_output_chars", 20000))
    install_audit_hook(workdir, header.get("allow_imports"))
    status, output, error = "ok", None, None
    try:
        if mode == "workflow":
            g = {"__builtins__": {k: getattr(builtins, k) for k in SAFE_BUILTINS if hasattr(builtins, k)}}
            exec(compile(header["source"], "<workflow>", "exec"), g)
            obj = make_self(channel, header.get("attrs", {}), header.get("methods", []))
            result = loop.run_until_complete(g["run_workflow"](obj))
            output = result if isinstance(result, str) else repr(result) if result is not None else ""
            output = str(output)
        else:
            g = {"__name__": "__main__"}
            exec(compile(header["source"], "<program>", "exec"), g)
    except SystemExit as e:
        status, error = "error", f"SystemExit({e.code})"
    except MemoryError:
        status, error = "error", "MemoryError"
    except RecursionError:
        status, error = "error", "RecursionError: maximum recursion depth exceeded"
    except BaseException as e:  # everything the program raises is its own failure
        status, error = "error", f"{type(e).__name__}: {e}"[:2000]
    try:
        sys.stdout.flush()
    except Exception:
        pass
    stdout = _tail("output.txt", max_out)
    send({"type": "done", "status": status, "output": None if output is None else output[:max_out],
          "error": error, "stdout": stdout})
    os._exit(0)


def _tail(path, limit):
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, limit * 4 + 4)
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace")[:limit]


def _read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, min(n - got, 1 << 20))
        if not b:
            raise EOFError("header cut short")
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


if __name__ == "__main__":
    main()
