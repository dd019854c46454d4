"""What this machine's Ascend runtime offers, for `edged probe`.

Runs in a short-lived spawned child of the `edged probe` command (so that the command itself
never initialises ACL and a wedged driver cannot hang it): init, count and open the devices,
read the SoC, the run mode and the CANN version, release everything, finalize.
"""

from __future__ import annotations

from typing import Any

from edged.backends.ascend.runtime import AclError, AclRuntime, RunMode, import_acl
from edged.backends.base import BackendError


def probe_ascend() -> dict[str, Any]:
    """{"available": bool, "reason": str, "devices": [...], "soc": str, "run_mode": str, ...}"""
    try:
        acl = import_acl()
    except BackendError as exc:
        return {"available": False, "reason": str(exc)}
    runtime = AclRuntime(0)
    info: dict[str, Any] = {"available": False}
    try:
        runtime.check("acl.init", acl.init())
        count = runtime.value("acl.rt.get_device_count", acl.rt.get_device_count())
        mode = runtime.value("acl.rt.get_run_mode", acl.rt.get_run_mode())
        info["run_mode"] = "ACL_HOST" if mode == RunMode.HOST else "ACL_DEVICE"
        info["soc"] = str(acl.get_soc_name() or "")
        version = acl.get_version()
        if version[-1] == 0:
            info["version"] = ".".join(str(v) for v in version[:-1])
        info["devices"] = [_device(runtime, d) for d in range(count)]
        info["available"] = any(d["ok"] for d in info["devices"])
        if not info["available"]:
            info["reason"] = "no device could be opened" if count else "no Ascend device found"
    except AclError as exc:
        info["reason"] = str(exc)
    finally:
        acl.finalize()
    return info


def _device(runtime: AclRuntime, device: int) -> dict[str, Any]:
    acl = runtime.acl
    ret = acl.rt.set_device(device)
    if ret != 0:
        return {"device": device, "ok": False, "reason": str(AclError("acl.rt.set_device", ret,
                                                                       runtime.recent_error()))}
    try:
        free, total, ret = acl.rt.get_mem_info(0)
        memory = {"memory_total": total, "memory_free": free} if ret == 0 else {}
    finally:
        acl.rt.reset_device(device)
    return {"device": device, "ok": True, **memory}
