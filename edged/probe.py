"""`edged probe`: which backends this machine can run, and with what.

Runs in the `edged probe` command. Each accelerator is probed in a spawned child with a deadline,
so a missing or wedged runtime is reported, never inherited or waited on forever.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from typing import Any

PROBE_TIMEOUT_S = 30.0


def probe_cpu() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        runtime = f"onnxruntime {version('onnxruntime')}"
    except PackageNotFoundError:
        return {"available": False, "reason": "onnxruntime is not installed"}
    from edged.config.auto import cores

    return {"available": True, "runtime": runtime, "cores": cores()}


def _child(queue: Any) -> None:
    from edged.backends.ascend.probe import probe_ascend

    queue.put(probe_ascend())


def probe_in_child(timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    child = spawn.Process(target=_child, args=(queue,), daemon=True)
    child.start()
    try:
        result: dict[str, Any] = queue.get(timeout=timeout)
    except Exception:
        result = {"available": False,
                  "reason": f"the Ascend runtime did not answer within {timeout:g} s "
                            f"(exit code {child.exitcode})"}
    child.join(5)
    if child.is_alive():
        child.kill()
        child.join()
    return result


def probe() -> dict[str, dict[str, Any]]:
    return {"cpu": probe_cpu(), "ascend": probe_in_child()}


def describe(name: str, info: dict[str, Any]) -> str:
    if not info.get("available"):
        return f"{name}: not available: {info.get('reason', 'unknown reason')}"
    if name == "cpu":
        return f"{name}: available: {info['runtime']}, {info['cores']} core(s)"
    devices = ", ".join(
        f"device {d['device']}" + ("" if d["ok"] else f" (cannot open: {d['reason']})")
        for d in info["devices"]
    )
    where = "a PCIe card in this host" if info["run_mode"] == "ACL_HOST" else "on the board"
    version = f", CANN runtime {info['version']}" if info.get("version") else ""
    return (f"{name}: available: {info['soc'] or 'unknown SoC'}, {devices}; run mode "
            f"{info['run_mode']} ({where}){version}")


def run(as_json: bool) -> int:
    """Print the report; exit 0 (a probe reports, it does not judge)."""
    found = probe()
    if as_json:
        json.dump(found, sys.stdout, indent=1)
        print()
    else:
        for name, info in found.items():
            print(describe(name, info))
    return 0
