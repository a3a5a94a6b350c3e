"""The sandbox's first stage: applies the OS layers, then execs a fresh interpreter for the second
stage (child.py), which runs the untrusted code.

Started as `python -I -S -B confine.py` by the parent, in the run's temporary directory with a
scrubbed environment. It reads one length-prefixed JSON header from stdin, {isolation, limits,
executable}, and leaves the rest of stdin (the second stage's own header) unread. The layers need
ctypes (namespaces, the per-run uid's capability, Landlock, seccomp), so they are applied here; the
exec replaces this process's memory, and the second stage starts as `python -I -S -B -c` without
ctypes. Namespaces, uid, Landlock, the seccomp filter, no_new_privs and resource limits all survive
the exec. Its code comes on its command line, read here before any layer applies.
"""

import json
import os
import sys

LINUX = sys.platform.startswith("linux")
HERE = os.path.dirname(os.path.abspath(__file__))


def read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, n - got)
        if not b:
            raise EOFError("header cut short")
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def source(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def main():
    child, audit = source("child.py"), source("audit.py")
    layers_ns = {"__name__": "sandbox_layers", "__file__": os.path.join(HERE, "layers.py")}
    exec(compile(source("layers.py"), layers_ns["__file__"], "exec"), layers_ns)
    header = json.loads(read_exact(0, int(read_exact(0, 10))))
    iso, limits = header.get("isolation", {}), header.get("limits", {})
    executable = header.get("executable") or sys.executable
    layers = ["rlimits", "scrubbed-env", "tmpdir", "fresh-interpreter"]
    if LINUX:
        ctypes, libc = layers_ns["_libc"]()
        if iso.get("namespaces", True) and layers_ns["unshare_namespaces"](ctypes, libc, layers):
            layers_ns["fork_into_pidns"](ctypes, libc, 1, 0)
        layers_ns["set_limits"](limits)
        uid = iso.get("uid")
        if uid is not None and os.geteuid() == 0:
            layers_ns["drop_privileges"](ctypes, libc, uid, bool(iso.get("keep_read")), layers)
        if iso.get("landlock", True):
            layers_ns["landlock"](ctypes, libc, os.path.realpath(os.getcwd()), iso.get("rules", []), layers)
        if iso.get("seccomp", True):
            layers_ns["seccomp"](ctypes, libc, layers)
        libc.prctl(layers_ns["PR_SET_NO_NEW_PRIVS"], 1, 0, 0, 0)
    else:
        layers_ns["set_limits"](limits)
    os.execv(executable, [executable, "-I", "-S", "-B", "-c", child, audit, json.dumps(layers)])


if __name__ == "__main__":
    main()
