"""Helpers shared by the benchmarks: the machine's description, peak memory, one JSON line out."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import sys
from typing import Any

# Set before torch starts OpenMP (as scoreflow.backends.cuda does): spinning worker threads collapse
# throughput on a shared machine, and both sides of every comparison must run alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def device_info(device: str = "cpu") -> str:
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        load = os.getloadavg()[0]
        load_s = f", load average {load:.1f} at start"
    except OSError:
        load_s = ""
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores{load_s}"


def today() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=False), flush=True)


def last_json(text: str) -> dict[str, Any]:
    """The last line of a child's stdout that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise RuntimeError(f"no JSON result in output:\n{text[-2000:]}")
