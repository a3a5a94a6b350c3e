"""What a sandboxed run may read and execute besides its own folder: the Landlock rules.

The standard library and system libraries are readable. The extension modules that give raw memory
access (`_ctypes`, the `_test*` and `xx*` modules) are not: their files stay unreadable, so no route
inside the interpreter (`import`, `_imp.create_dynamic`, a hand-made loader) can load them. Other
Python installations and site-packages are not readable either (their extension modules, cffi for
one, would be raw-memory tools too). The interpreter is the only executable file, for the first
stage's exec of the second.
"""

from __future__ import annotations

import os
import struct
import sys
import sysconfig
from functools import lru_cache

# File-name prefixes of the extension modules that stay unreadable.
RAW_MEMORY_MODULES = ("_ctypes", "_test", "_xx", "xx")
# Folders of the standard library that hold no standard library.
NOT_STDLIB = ("site-packages", "dist-packages")
SYSTEM_LIBRARIES = ("/usr/lib", "/lib", "/lib64", "/usr/lib64", "/usr/local/lib")

Rule = tuple[str, str]  # (path, kind): tree | file | listing | exec (see layers.RULE_RIGHTS)


def _real(path: str) -> str:
    return os.path.realpath(path)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def stdlib_folders() -> tuple[str, str]:
    """The standard library's folder and its extension modules' folder (lib-dynload)."""
    stdlib = _real(os.path.dirname(os.__file__))
    dynload = sysconfig.get_config_var("DESTSHARED") or os.path.join(stdlib, "lib-dynload")
    return stdlib, _real(dynload)


def elf_interpreter(path: str) -> str | None:
    """The program interpreter (PT_INTERP) of an ELF executable, which exec opens too; None if static
    or not ELF."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or len(head) < 64:
                return None
            wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
            if wide:
                phoff, = struct.unpack(order + "Q", head[32:40])
                entsize, count = struct.unpack(order + "HH", head[54:58])
            else:
                phoff, = struct.unpack(order + "I", head[28:32])
                entsize, count = struct.unpack(order + "HH", head[42:46])
            for i in range(count):
                f.seek(phoff + i * entsize)
                ph = f.read(entsize)
                if struct.unpack(order + "I", ph[:4])[0] != 3:  # PT_INTERP
                    continue
                offset, size = struct.unpack(order + ("QxxxxxxxxxxxxxxxxQ" if wide else "IxxxxxxxxI"),
                                             ph[8:40] if wide else ph[4:20])
                f.seek(offset)
                return f.read(size).rstrip(b"\0").decode()
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return None


def _entry_rule(path: str) -> Rule:
    return (path, "tree" if os.path.isdir(path) else "file")


@lru_cache(maxsize=1)
def read_rules() -> tuple[Rule, ...]:
    """Every Landlock rule of a run, its own folder and devices aside."""
    stdlib, dynload = stdlib_folders()
    keep = (stdlib, dynload)
    rules: dict[str, str] = {}

    def ancestor(path: str) -> bool:  # holds the standard library: expanded, never granted whole
        return any(_within(k, path) for k in keep)

    def expand(folder: str, system: bool) -> None:
        if folder in keep or folder in rules:
            return
        rules[folder] = "listing"
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            return
        for name in names:
            path = _real(os.path.join(folder, name))
            if path in keep or path in rules:
                continue
            if ancestor(path):
                expand(path, system)
            elif name.startswith("python") or name in NOT_STDLIB:
                continue  # another interpreter's modules, or installed packages
            elif not system or not os.path.isdir(path) or "-linux-" in name or name == "locale":
                rules.setdefault(*_entry_rule(path))

    rules[stdlib] = "listing"
    for name in sorted(os.listdir(stdlib)):
        path = _real(os.path.join(stdlib, name))
        if path != dynload and name not in NOT_STDLIB and not _within(path, dynload):
            rules.setdefault(*_entry_rule(path))
    rules[dynload] = "listing"
    for name in sorted(os.listdir(dynload)):
        if not name.startswith(RAW_MEMORY_MODULES):
            rules[_real(os.path.join(dynload, name))] = "file"
    libdir = sysconfig.get_config_var("LIBDIR")
    for folder in ([libdir] if libdir else []) + list(SYSTEM_LIBRARIES):
        if os.path.isdir(folder):
            # System folders: their files, and only the multiarch and locale folders under them.
            expand(_real(folder), system=_real(folder) in {_real(p) for p in SYSTEM_LIBRARIES})
    if os.path.exists("/etc/ld.so.cache"):
        rules["/etc/ld.so.cache"] = "file"
    executable = _real(sys.executable)
    rules[executable] = "exec"
    interp = elf_interpreter(executable)
    if interp:
        rules[_real(interp)] = "exec"
    return tuple(rules.items())


@lru_cache(maxsize=1)
def read_roots() -> tuple[str, ...]:
    """The paths the audit hook lets a run read under (Landlock, where present, is narrower)."""
    return tuple(sorted(path for path, kind in read_rules() if kind != "exec"))
