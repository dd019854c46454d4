"""The `edged bench` sub-command (placeholder until the benchmark lands)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="measure throughput against the machine's limit")
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    raise SystemExit("edged bench: not implemented yet")
