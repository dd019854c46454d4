"""`acl.util`: native threads for callbacks and the pointer helpers (pyacl.md sections 1, 2).

Host pointers handed out here are real process addresses; the object is registered so that
`rt.memcpy` may read or write through it (acllite writes model outputs into `bytes` objects).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from acl import _core, _memory
from acl._core import INVALID_PARAM, api, violation
from acl._reports import REPORTS

_THREADS: dict[int, threading.Thread] = {}

NPY_TYPES = {
    0: np.bool_, 1: np.int8, 2: np.uint8, 3: np.int16, 4: np.uint16, 5: np.int32, 6: np.uint32,
    7: np.int64, 8: np.uint64, 11: np.float32, 12: np.float64, 23: np.float16,
}


@api("pair")
def start_thread(fn: Callable[[Any], None], args_list: Any) -> tuple[int, int]:
    started = threading.Event()
    thread = threading.Thread(target=lambda: (started.set(), fn(args_list)),
                              name="acl-util-thread", daemon=True)
    thread.start()
    started.wait()
    assert thread.ident is not None
    _THREADS[thread.ident] = thread
    return thread.ident, 0


@api("ret")
def stop_thread(thread_id: int) -> int:
    thread = _THREADS.get(thread_id)
    if thread is None:
        violation("26", INVALID_PARAM, f"stop_thread({thread_id!r}): not a start_thread id")
        return INVALID_PARAM
    if REPORTS.subscribed(thread_id):
        violation("26", INVALID_PARAM, "callback thread stopped while a VDEC channel or stream "
                  "still reports to it (destroy the channel first)", tolerated=True)
    thread.join(_core.settings().drain_timeout)
    if thread.is_alive():
        violation("26", _core.RT_INTERNAL_ERROR, "stop_thread: the thread's loop did not exit "
                  "(set its stop flag before stop_thread)")
    del _THREADS[thread_id]
    return 0


def live_threads() -> list[int]:
    return [tid for tid, t in _THREADS.items() if t.is_alive()]


@api("value", needs_init=False)
def bytes_to_ptr(data: bytes) -> int:
    if isinstance(data, bytearray):
        addr = ctypes.addressof((ctypes.c_char * len(data)).from_buffer(data))
    elif isinstance(data, bytes):
        addr = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
    else:
        violation("args", INVALID_PARAM, f"bytes_to_ptr wants bytes, got {type(data).__name__}")
        return 0
    _memory.MEMORY.register_host(addr, len(data), data)
    return addr


@api("value", needs_init=False)
def numpy_to_ptr(array: np.ndarray[Any, Any]) -> int:
    if not array.flags.c_contiguous:
        violation("args", INVALID_PARAM, "numpy_to_ptr of a non-contiguous array",
                  tolerated=True)
    addr = int(array.ctypes.data)
    _memory.MEMORY.register_host(addr, array.nbytes, array)
    return addr


@api("pair", needs_init=False)
def numpy_contiguous_to_ptr(array: np.ndarray[Any, Any]) -> tuple[int, np.ndarray[Any, Any]]:
    contiguous = np.ascontiguousarray(array)
    addr = int(contiguous.ctypes.data)
    _memory.MEMORY.register_host(addr, contiguous.nbytes, contiguous)
    return addr, contiguous  # type: ignore[return-value]


def _readable(ptr: int, size: int) -> _memory.Span:
    span = _memory.resolve(ptr, "pointer")
    if span.on_device and _core.settings().run_mode == _core.ACL_HOST:
        violation("13", INVALID_PARAM, "the CPU reads a device pointer on ACL_HOST (a PCIe "
                  "card): copy it to the host with rt.memcpy first")
    if size > span.limit:
        violation("13", INVALID_PARAM, f"reads {size} bytes where {span.limit} remain")
    return span


@api("value")
def ptr_to_bytes(ptr: int, size: int) -> bytes:
    return bytes(_readable(ptr, size).view(size))


@api("value")
def ptr_to_numpy(ptr: int, shape: tuple[int, ...], npy_type: int) -> np.ndarray[Any, Any]:
    dtype = np.dtype(NPY_TYPES[npy_type])
    count = int(np.prod(shape)) * dtype.itemsize
    return _readable(ptr, count).view(count).view(dtype).reshape(shape)


__all__ = [
    "bytes_to_ptr", "numpy_contiguous_to_ptr", "numpy_to_ptr", "ptr_to_bytes", "ptr_to_numpy",
    "start_thread", "stop_thread",
]
