"""The sandbox child's isolation layers: on Linux namespaces, the PID-namespace init, a per-run uid
and Landlock; everywhere the audit hook.

Standard library only. child.py runs this file into a namespace of its own before any
untrusted code runs (the child starts with `python -I`, which keeps this folder off sys.path); see
docs/sandbox.md for what each layer does and its limits.
"""

import json
import os
import resource
import sys

CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x40000000, 0x20000000
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS = 1, 8, 38
CAP_DAC_READ_SEARCH = 2
SYS_LANDLOCK_CREATE, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT = 444, 445, 446


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
