"""Emulator-only helpers (no such module in the real pyACL): figures and the report.

edged's bench reads `stats()` when it exists to subtract the CPU the emulator spent standing in
for the device; tests read the JSON report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acl import _core


def stats() -> dict[str, Any]:
    """CPU seconds spent emulating the device and bytes copied by direction, in this process."""
    return _core.stats()


def report() -> dict[str, Any]:
    return _core.report()


def report_path() -> Path:
    return _core.report_path()


def write_report() -> Path | None:
    return _core.write_report()
