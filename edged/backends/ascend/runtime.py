"""The pyACL runtime of one worker process: init, device, context, checked calls, copies.

Runs in a worker process started with `spawn` (an Ascend context inherited through fork hangs):
`acl.init`, `set_device` and `create_context` happen here, in the child, and nowhere else. Every
thread that touches ACL calls `enter()` first, which binds the worker's context to it once
(pyacl.md section 1: a new thread has no current context and gets 107002). Every `ret` goes
through `check`, which raises `AclError` carrying the call's name, its code and
`acl.get_recent_err_msg()`. Released in reverse order by `close()`, never by `__del__`.
"""

from __future__ import annotations

import threading
from enum import IntEnum
from typing import Any

from edged.backends.base import BackendError

INSTALL_HINT = (
    "pyACL (the Python module `acl`) is not importable: install the Ascend CANN toolkit "
    "(Ascend-cann-toolkit, plus the driver and firmware for the card) and source its "
    "environment in the service, e.g. `. /usr/local/Ascend/ascend-toolkit/set_env.sh` "
    "(docs/ascend.md has a systemd drop-in that does it)"
)

# Release policy of rt.malloc; NORMAL_ONLY as Huawei's samples use.
MALLOC_NORMAL_ONLY = 2


class RunMode(IntEnum):
    """Where this program runs (acl.rt.get_run_mode)."""

    DEVICE = 0  # on the board's own CPU (Atlas 200 DK, 200I DK A2): host and device share DDR
    HOST = 1  # on a host with a PCIe card (Atlas 300I, 300I Pro/Duo)


class Copy(IntEnum):
    HOST_TO_HOST = 0
    HOST_TO_DEVICE = 1
    DEVICE_TO_HOST = 2
    DEVICE_TO_DEVICE = 3


class AclError(BackendError):
    """A pyACL call failed: the call, its return code and the runtime's own explanation."""

    def __init__(self, call: str, code: int, detail: str) -> None:
        self.call = call
        self.code = code
        self.detail = detail
        message = f"{call} failed with code {code}"
        super().__init__(f"{message}: {detail}" if detail else message)


def import_acl() -> Any:
    """The `acl` module, or a BackendError saying what to install (a boot error, backed off)."""
    try:
        import acl
    except ImportError as exc:
        raise BackendError(f"{INSTALL_HINT} ({exc})") from exc
    return acl


class AclRuntime:
    """acl.init -> set_device -> create_context in this process; close() undoes them in reverse."""

    def __init__(self, device: int) -> None:
        self.acl = import_acl()
        self.device = device
        self.context = 0
        self.run_mode = RunMode.HOST
        self.soc = ""
        self._bound = threading.local()
        self._initialized = False
        self._device_set = False

    def check(self, call: str, ret: int) -> None:
        if ret != 0:
            raise AclError(call, ret, self.recent_error())

    def value(self, call: str, result: tuple[Any, int]) -> Any:
        """Unpack a `(value, ret)` call and check it."""
        value, ret = result
        self.check(call, ret)
        return value

    def handle(self, call: str, value: Any) -> Any:
        """Check a value-only creator: 0 or None is failure."""
        if not value:
            raise AclError(call, -1, self.recent_error() or "returned no handle")
        return value

    def recent_error(self) -> str:
        try:
            return str(self.acl.get_recent_err_msg() or "").strip()
        except Exception:  # a broken runtime must not hide the original failure
            return ""

    def open(self) -> None:
        acl = self.acl
        self.check("acl.init", acl.init())
        self._initialized = True
        self.check("acl.rt.set_device", acl.rt.set_device(self.device))
        self._device_set = True
        self.context = self.value("acl.rt.create_context", acl.rt.create_context(self.device))
        self._bound.context = self.context
        self.run_mode = RunMode(self.value("acl.rt.get_run_mode", acl.rt.get_run_mode()))
        self.soc = str(acl.get_soc_name() or "")

    def enter(self) -> None:
        """Make the worker's context current in the calling thread (once per thread)."""
        if getattr(self._bound, "context", 0) != self.context:
            self.check("acl.rt.set_context", self.acl.rt.set_context(self.context))
            self._bound.context = self.context

    def to_device(self) -> Copy:
        """memcpy kind for host (numpy/bytes) -> device memory in this run mode."""
        return Copy.HOST_TO_DEVICE if self.run_mode is RunMode.HOST else Copy.DEVICE_TO_DEVICE

    def to_host(self) -> Copy:
        """memcpy kind for device memory -> host (numpy/bytes) in this run mode."""
        return Copy.DEVICE_TO_HOST if self.run_mode is RunMode.HOST else Copy.DEVICE_TO_DEVICE

    def close(self) -> None:
        """Destroy the context, reset the device, finalize; each step only if it was done."""
        acl = self.acl
        errors: list[AclError] = []
        for step, done in (
            ("acl.rt.destroy_context", lambda: acl.rt.destroy_context(self.context)),
            ("acl.rt.reset_device", lambda: acl.rt.reset_device(self.device)),
            ("acl.finalize", acl.finalize),
        ):
            if step == "acl.rt.destroy_context" and not self.context:
                continue
            if step == "acl.rt.reset_device" and not self._device_set:
                continue
            if step == "acl.finalize" and not self._initialized:
                continue
            try:
                self.check(step, done())
            except AclError as exc:
                errors.append(exc)
        self.context = 0
        self._device_set = self._initialized = False
        if errors:
            raise errors[0]
