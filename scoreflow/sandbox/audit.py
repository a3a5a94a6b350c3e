"""The audit hook (PEP 578) of the sandbox's second stage, the interpreter that runs untrusted code.

Standard library only, and no ctypes: the first stage (confine.py) passes this file's source to the
second stage (child.py) on its command line, which runs it into a namespace of its own before any
untrusted code runs. See docs/sandbox.md for what the hook covers and what it does not.
"""

import os
import sys

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
# A function's code and defaults: rewriting those of the harness's own functions in place would turn a
# function the harness captured into untrusted code.
FUNCTION_STATE = frozenset({"__code__", "__defaults__", "__kwdefaults__"})
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PYC_HEADER = 16  # bytes before the marshalled code object in a .pyc file
RECENT_PYC = 8  # cached modules remembered between their open and their unmarshalling


def install_audit_hook(workdir, read_roots, mode, allow_imports, protected=()):
    """Refuses processes, sockets, ctypes, frames, tracing, rewriting the code or defaults of the
    `protected` functions, unmarshalling code that is not a cached standard-library module, and file
    access outside `workdir` (reads also under `read_roots`). Uses only C-level operations on exact str
    and bytes values, so patching os.path, builtins or any module, or passing a str subclass, cannot
    change its decisions."""
    cwd = workdir
    roots = tuple(r.rstrip("/") + "/" for r in read_roots)
    inside_prefix = workdir + "/"
    blocked = BLOCKED_EVENTS
    frame_attrs = FRAME_ATTRS
    function_state = FUNCTION_STATE
    protected = tuple(protected)
    denied = DENIED_IMPORTS
    allowed = frozenset(allow_imports) if allow_imports is not None else None
    str_t, bytes_t, int_t, type_, len_ = str, bytes, int, type, len
    tuple_, reversed_ = tuple, reversed
    perm, imp_err, val_err = PermissionError, ImportError, ValueError
    stat, write_flags = os.stat, WRITE_FLAGS
    os_open, os_read, os_close, os_fstat, rdonly = os.open, os.read, os.close, os.fstat, os.O_RDONLY
    recent_pyc = []  # paths of the .pyc files opened last, newest last

    def name_of(s):
        """`s` if it is an exact str. A str subclass could answer differently to the hook and to the
        interpreter (its own __str__, __hash__ and __eq__), so events naming one are refused."""
        if type_(s) is not str_t:
            raise perm("sandbox: a name that is not a plain str is not allowed here")
        return s

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

    def cached_module(data):
        """Whether `data` is the code of one of the .pyc files the import system just opened."""
        for path in reversed_(tuple_(recent_pyc)):  # reading one raises an open event, which reorders the list
            try:
                fd = os_open(path, rdonly)
            except OSError:
                continue
            try:
                size = os_fstat(fd).st_size
                content = os_read(fd, size + 1)
            finally:
                os_close(fd)
            if bytes_t.__eq__(content[PYC_HEADER:], data) is True:
                return True
        return False

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
                n = norm(path)
                if str_t.endswith(n, ".pyc"):
                    if n in recent_pyc:
                        recent_pyc.remove(n)
                    recent_pyc.append(n)
                    if len_(recent_pyc) > RECENT_PYC:
                        del recent_pyc[0]
        elif event == "marshal.load":
            raise perm("sandbox: unmarshalling code is not allowed")
        elif event == "marshal.loads":
            # Crafted bytecode reads and writes raw memory: only the import system's own loads of
            # cached standard-library modules are let through.
            data = args[0]
            if type_(data) is not bytes_t or not cached_module(data):
                raise perm("sandbox: unmarshalling code is not allowed")
        elif event in ("os.remove", "os.rmdir", "os.mkdir", "os.utime"):
            if not inside(args[0]) or (args[-1] is not None and args[-1] != -1):
                raise perm("sandbox: " + event + " outside the working directory is not allowed")
        elif event in ("os.rename", "os.replace"):
            if not (inside(args[0]) and inside(args[1])):
                raise perm("sandbox: " + event + " outside the working directory is not allowed")
            for fd in args[2:]:
                if fd is not None and fd != -1:
                    raise perm("sandbox: " + event + " relative to a folder descriptor is not allowed")
        elif event in ("os.listdir", "os.scandir"):
            path = args[0] if args and args[0] is not None else "."
            if type_(path) is not int_t and not readable(path):
                raise perm("sandbox: " + event + " outside the working directory is not allowed")
        elif event == "import":
            top = str_t.split(name_of(args[0]), ".")[0]
            if mode != "workflow" and (top in denied or (allowed is not None and top not in allowed)):
                raise imp_err("sandbox: import of " + top + " is not allowed")
        elif event == "sys._getframe":
            raise val_err("call stack is not available in the sandbox")
        elif event == "object.__getattr__":
            if len_(args) > 1 and name_of(args[1]) in frame_attrs:
                raise perm("sandbox: frame access is not allowed")
        elif event == "object.__setattr__":
            if len_(args) > 1 and name_of(args[1]) in function_state:
                for f in protected:
                    if args[0] is f:
                        raise perm("sandbox: rewriting the harness's functions is not allowed")

    sys.addaudithook(hook)
