"""Finding a task's data when no --data path is given: $SCOREFLOW_DATA, then the cache."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from ..models import cache_dir


def data_roots() -> list[Path]:
    roots = [Path(p) for p in os.environ.get("SCOREFLOW_DATA", "").split(os.pathsep) if p]
    return roots + [cache_dir() / "data"]


def fetch(name: str, filename: str) -> Path:
    for root in data_roots():
        for cand in (root / filename, root / name / filename):
            if cand.is_file():
                return cand
    raise UserError(
        f"no data for {name}: pass --data PATH (a folder holding {filename}) or set SCOREFLOW_DATA"
    )
