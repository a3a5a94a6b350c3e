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
import importlib.util
import os
import platform
import sys
from pathlib import Path

_state: dict[str, str | None] = {}


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _link_folder(openblas: Path, gfortran: Path) -> Path:
    from scoreflow.models import cache_dir

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
    if "mlx.core" in sys.modules:  # too late to interpose; the reference BLAS stays
        return None
    ob_dir, libs_dir = _package_dir("ngsolve_openblas"), None
    mlx_cpu = importlib.util.find_spec("mlx")
    if mlx_cpu is not None and mlx_cpu.submodule_search_locations:
        libs_dir = Path(list(mlx_cpu.submodule_search_locations)[0]).parent / "mlx_cpu.libs"
    if ob_dir is None or libs_dir is None or not libs_dir.is_dir():
        return None
    openblas = next(iter(sorted(ob_dir.glob("libopenblas*.so*"))), None)
    gfortran = next(iter(sorted(libs_dir.glob("libgfortran*.so*"))), None)
    quadmath = next(iter(sorted(libs_dir.glob("libquadmath*.so*"))), None)
    if openblas is None or gfortran is None:
        return None
    # More threads were slower on small shared machines; respect an explicit setting.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        if quadmath is not None:  # libgfortran's own dependency, by its hashed soname
            ctypes.CDLL(str(quadmath), mode=ctypes.RTLD_GLOBAL)
        folder = _link_folder(openblas.resolve(), gfortran.resolve())
        ctypes.CDLL(str(folder / "libopenblas.so.0"), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        print(f"scoreflow: OpenBLAS preload failed ({e}); MLX on CPU will be slow", file=sys.stderr)
        return None
    _state["result"] = str(openblas)
    return _state["result"]
