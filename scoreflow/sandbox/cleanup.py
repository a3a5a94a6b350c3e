"""Removing a run's temporary folder, whatever the run left in it: folders nested deeper than any
recursion or path length allows, read-only folders, links, names that are not valid UTF-8.

The walk holds one folder descriptor at a time and goes back up through "..", so neither depth nor
width is bounded by the stack, PATH_MAX or the number of open files. Links are removed, never
followed. Nothing raises: what cannot be removed is returned, for the caller to report.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_PROBLEMS = 20  # problems kept for the report; the rest are only counted


@dataclass
class Removal:
    problems: list[str] = field(default_factory=list)
    more: int = 0  # problems beyond MAX_PROBLEMS

    def note(self, where: str, err: OSError) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where!r}: {err.strerror or err}")
        else:
            self.more += 1

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return "; ".join(self.problems) + (f"; and {self.more} more" if self.more else "")


@dataclass
class _Level:
    name: str  # this folder's name in its parent ("" for the top)
    subfolders: list[str]


def _open_folder(name: str, parent: int | None) -> int:
    """Opens folder `name` of the open folder `parent` (None: `name` is a path), never through a link."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except PermissionError:  # a folder the run made unreadable (only its owner, or root, gets here)
        os.chmod(name, 0o700, dir_fd=parent)
        return os.open(name, DIR_FLAGS, dir_fd=parent)


def _empty_files(fd: int, where: str, out: Removal) -> list[str]:
    """Removes every non-folder entry of the open folder `fd`; returns its subfolders' names."""
    try:
        os.fchmod(fd, 0o700)  # entries of a read-only folder cannot be removed
    except OSError:
        pass
    subfolders = []
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    except OSError as e:
        out.note(where, e)
        return []
    for name, is_dir in entries:
        if is_dir:
            subfolders.append(name)
            continue
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as e:
            out.note(os.path.join(where, name), e)
    return subfolders


def remove_tree(path: str) -> Removal:
    """Removes `path` and everything under it, links included but never followed."""
    out = Removal()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return out
    except OSError as e:
        out.note(path, e)
        return out
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
        except OSError as e:
            out.note(path, e)
        return out
    try:
        fd = _open_folder(path, None)
    except OSError as e:
        out.note(path, e)
        return out
    stack = [_Level("", _empty_files(fd, path, out))]
    depth_path = [path]  # where each level is, for reports only: past 64 levels the 64th is named
    try:
        while True:
            level = stack[-1]
            if level.subfolders:
                name = level.subfolders.pop()
                where = os.path.join(depth_path[-1], name) if len(depth_path) < 64 else depth_path[-1]
                try:
                    sub = _open_folder(name, fd)
                except OSError as e:
                    out.note(where, e)
                    continue
                os.close(fd)
                fd = sub
                depth_path.append(where)
                stack.append(_Level(name, _empty_files(fd, where, out)))
                continue
            if len(stack) == 1:
                break
            up = os.open("..", DIR_FLAGS & ~os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = up
            done = stack.pop()
            where = depth_path.pop()
            try:
                os.rmdir(done.name, dir_fd=fd)
            except OSError as e:
                out.note(where, e)
    except OSError as e:  # the way back up failed: nothing sensible is left to try
        out.note(depth_path[-1], e)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except OSError as e:
        out.note(path, e)
    return out
