"""The sandbox's OS layers, applied by its first stage (confine.py) before it execs the interpreter
that runs untrusted code: resource limits; on Linux new namespaces, the PID-namespace init, a per-run
uid, Landlock and a seccomp filter.

Standard library and ctypes only. confine.py runs this file into a namespace of its own; ctypes is
loaded here and never in the second stage. See docs/sandbox.md for what each layer does and its limits.
"""

import json
import os
import resource

CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x40000000, 0x20000000
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 8, 22, 38, 47
PR_CAP_AMBIENT_RAISE = 2
CAP_DAC_READ_SEARCH = 2
SYS_LANDLOCK_CREATE, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT = 444, 445, 446

# Landlock filesystem rights (ABI 1 unless noted).
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_MAKE_CHAR, FS_MAKE_SOCK, FS_MAKE_BLOCK = 64, 512, 2048
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
# What each kind of read rule (access.py) grants.
RULE_RIGHTS = {"tree": FS_READ_FILE | FS_READ_DIR, "file": FS_READ_FILE, "listing": FS_READ_DIR,
               "exec": FS_READ_FILE | FS_EXECUTE}


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
        data[0].effective = data[0].permitted = data[0].inheritable = 1 << CAP_DAC_READ_SEARCH
        if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed")
        # Ambient: the capability survives the exec of the second stage (an interpreter without file
        # capabilities), which must read the standard library too.
        if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "raising the ambient capability failed")
        layers.append("uid+read-cap")
    else:
        layers.append("uid")


def landlock(ctypes, libc, workdir, rules, layers):
    """Filesystem: what `rules` name ([path, kind], kind a key of RULE_RIGHTS) read-only, workdir
    read-write, and execute only the "exec" rules (the interpreter, for the second stage). TCP bind
    and connect refused (ABI >= 4); signals and abstract unix sockets scoped to the run (ABI >= 6)."""
    abi = libc.syscall(SYS_LANDLOCK_CREATE, None, 0, 1)
    if abi < 1:
        return False
    fs_all = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if abi >= 2:
        fs_all |= FS_REFER
    if abi >= 3:
        fs_all |= FS_TRUNCATE
    if abi >= 5:
        fs_all |= FS_IOCTL_DEV
    file_rights = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (FS_TRUNCATE if abi >= 3 else 0)
    file_rights |= FS_IOCTL_DEV if abi >= 5 else 0
    rw = fs_all & ~(FS_EXECUTE | FS_MAKE_CHAR | FS_MAKE_BLOCK | FS_MAKE_SOCK)

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
        granted = [(path, RULE_RIGHTS[kind]) for path, kind in rules]
        granted += [(workdir, rw), ("/dev/null", FS_WRITE_FILE | FS_READ_FILE), ("/dev/urandom", FS_READ_FILE),
                    ("/dev/zero", FS_READ_FILE)]
        for path, rights in granted:
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


# ---- seccomp: no sockets ------------------------------------------------------------------------

# The system calls refused with EPERM, per architecture (AUDIT_ARCH value, numbers): sockets of any
# family (socket, socketpair, and io_uring, which can open them too); another process's memory
# (ptrace, process_vm_readv/writev); files by handle rather than path (open_by_handle_at); new
# namespaces and mounts (unshare, setns, mount, umount2, pivot_root, chroot, open_tree, move_mount,
# fsopen, fsconfig, fsmount).
SECCOMP_DENIED = {
    "x86_64": (0xC000003E, (41, 53, 425, 426, 427, 101, 310, 311, 304, 272, 308, 165, 166, 155, 161,
                            428, 429, 430, 431, 432)),
    "aarch64": (0xC00000B7, (198, 199, 425, 426, 427, 117, 270, 271, 265, 97, 268, 40, 39, 41, 51,
                             428, 429, 430, 431, 432)),
}
X32_SYSCALL_BIT = 0x40000000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x06
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ERRNO, SECCOMP_RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
EPERM = 1


def seccomp_program(machine):
    """The classic BPF program, as (code, jt, jf, k) tuples, or None for an unknown architecture.
    Another architecture's calls (i386 on x86_64) kill the process; x32 calls are refused."""
    if machine not in SECCOMP_DENIED:
        return None
    arch, denied = SECCOMP_DENIED[machine]
    checks = ([(BPF_JGE_K, X32_SYSCALL_BIT)] if machine == "x86_64" else []) + [(BPF_JEQ_K, nr) for nr in denied]
    prog = [(BPF_LD_W_ABS, 0, 0, 4), (BPF_JEQ_K, 1, 0, arch), (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
            (BPF_LD_W_ABS, 0, 0, 0)]
    for i, (code, k) in enumerate(checks):
        prog.append((code, len(checks) - i, 0, k))  # true: jump over the rest and the allow, to the refusal
    prog += [(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW), (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | EPERM)]
    return prog


def seccomp(ctypes, libc, layers):
    """Installs the filter (no_new_privs must be set). False when the architecture or kernel has none."""
    prog = seccomp_program(os.uname().machine)
    if prog is None:
        return False

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]

    insns = (Filter * len(prog))(*[Filter(*x) for x in prog])
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(Program(len(prog), insns)), 0, 0) != 0:
        return False
    layers.append("seccomp")
    return True
