"""The run directory: JSON Lines records appended and flushed as work completes, atomic snapshots.

Layout:
    config.toml          the configuration snapshot (no secrets)
    status.json          running | finished | stopped | interrupted | failed, with a reason
    workflows.jsonl      every generated workflow attempt, valid or rejected with its reason
    evaluations.jsonl    every execution of a valid workflow: output, score, status
    pairs.jsonl          the sampled preference pairs of each iteration
    train.jsonl          one record per optimiser step
    metrics.jsonl        one record per iteration (and per `evaluate`)
    test_workflows.jsonl, test_evaluations.jsonl   what `evaluate` generated and ran
    adapters/iter-N/     the adapter after iteration N (PEFT or mlx-lm format)
    checkpoints/iter-N/  resumable training state of the iteration in progress
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

RECORDS = ("workflows", "evaluations", "pairs", "train", "metrics", "test_workflows", "test_evaluations")


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """A folder written whole or not at all: fill the temporary sibling this yields; on success it
    replaces `path` (a crash leaves the old folder, or none, and a hidden temporary)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Complete records only: a line cut short by a crash is ignored."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class Records:
    """Append-only JSON Lines file; each record is written, flushed and fsynced on its own."""

    def __init__(self, path: Path):
        self.path = path
        self._repair()
        self._f = open(path, "a", encoding="utf-8")

    def _repair(self) -> None:
        # A kill in the middle of a write leaves a partial last line: cut it off before appending.
        if not self.path.is_file():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self._f.write(json.dumps(r, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def all(self) -> list[dict[str, Any]]:
        return list(read_jsonl(self.path))

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        self._f.close()
        atomic_write(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._f = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self._f.close()


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.records = {name: Records(self.path / f"{name}.jsonl") for name in RECORDS}

    def __getitem__(self, name: str) -> Records:
        return self.records[name]

    def adapter_dir(self, iteration: int) -> Path:
        return self.path / "adapters" / f"iter-{iteration}"

    def checkpoint_dir(self, iteration: int) -> Path:
        return self.path / "checkpoints" / f"iter-{iteration}"

    def latest_adapter(self) -> tuple[int, Path] | None:
        done = [(int(p.name.split("-")[1]), p) for p in (self.path / "adapters").glob("iter-*")
                if p.name.split("-")[1].isdigit() and p.is_dir()]
        return max(done) if done else None

    def set_status(self, status: str, reason: str = "", **extra: Any) -> None:
        """`extra` may carry `usage` (the executor's spend so far), which a resumed run starts from."""
        atomic_write(self.path / "status.json", json.dumps(
            {"status": status, "reason": reason, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(),
             **extra}, indent=2) + "\n")

    def status(self) -> dict[str, Any]:
        p = self.path / "status.json"
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def close(self) -> None:
        for r in self.records.values():
            r.close()
