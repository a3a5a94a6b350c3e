"""Make MLX's CPU build use OpenBLAS on Linux.

The mlx-cpu wheel links a reference BLAS (a 1024x1024 fp32 matmul takes ~580 ms); OpenBLAS from
the `ngsolve-openblas` wheel does it in ~25 ms. Its symbols win when it is loaded RTLD_GLOBAL
before `mlx.core`. It needs `libgfortran.so.5`, which the mlx-cpu wheel ships under a hashed name,
so a private folder of symlinks gives the loader the names it looks for ($ORIGIN rpath).
A no-op on macOS (Accelerate) and wherever the wheels are missing.
"""

from __future__ import annotations

import ctypes
import hashlib
import fnmatch
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

_state: dict[str, str | None] = {}


def _dist_file(dist: str, pattern: str) -> Path | None:
    """A file of an installed distribution, found through its RECORD (not the import path, where
    `mlx` is a namespace package that any folder named mlx on sys.path joins)."""
    try:
        files = importlib.metadata.distribution(dist).files or ()
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in sorted(files, key=str):
        if fnmatch.fnmatch(f.name, pattern):
            path = Path(f.locate()).resolve()
            if path.is_file():
                return path
    return None


def _link_folder(openblas: Path, gfortran: Path) -> Path:
    from scoreflow.model.source import cache_dir

    key = hashlib.sha256(f"{openblas}:{gfortran}".encode()).hexdigest()[:12]
    folder = cache_dir() / "openblas" / key
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in (("libopenblas.so.0", openblas), ("libgfortran.so.5", gfortran)):
        link = folder / name
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        tmp = folder / f".{name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)
    return folder


def preload() -> str | None:
    """Load OpenBLAS (one thread) before mlx.core; return its path, or None when not applicable.
    Idempotent. Must run before the first `import mlx.core` to have any effect."""
    if "result" in _state:
        return _state["result"]
    _state["result"] = None
    if platform.system() != "Linux" or os.environ.get("SCOREFLOW_MLX_OPENBLAS", "1") == "0":
        return None
    if "mlx.core" in sys.modules:  # too late: Python binds libmlx's symbols at import (RTLD_NOW)
        print("scoreflow: mlx.core was imported before the MLX backend; MLX on CPU keeps its slow "
              "reference BLAS (import scoreflow.backends.mlx first)", file=sys.stderr)
        return None
    openblas = _dist_file("ngsolve-openblas", "libopenblas*.so*")
    gfortran = _dist_file("mlx-cpu", "libgfortran*.so*")
    quadmath = _dist_file("mlx-cpu", "libquadmath*.so*")
    if openblas is None or gfortran is None:
        return None
    # More threads were slower on small shared machines; respect an explicit setting.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        if quadmath is not None:  # libgfortran's own dependency, by its hashed soname
            ctypes.CDLL(str(quadmath), mode=ctypes.RTLD_GLOBAL)
        folder = _link_folder(openblas, gfortran)
        ctypes.CDLL(str(folder / "libopenblas.so.0"), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        print(f"scoreflow: OpenBLAS preload failed ({e}); MLX on CPU will be slow", file=sys.stderr)
        return None
    _state["result"] = str(openblas)
    return _state["result"]
