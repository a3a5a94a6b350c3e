"""`scoreflow config`: every configuration key with its value in a preset and its meaning, as TOML."""

from __future__ import annotations

import argparse
from typing import Any

from scoreflow.cli.flags import debug_arg


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("config", help="print every configuration key with its default and meaning")
    debug_arg(p)
    p.add_argument("--preset", default="paper", choices=("demo", "paper"))
    return p


def run(args: argparse.Namespace) -> int:
    from scoreflow import config as C

    print(C.to_toml(C.build({"run": {"preset": args.preset}}), documented=True))
    return 0
