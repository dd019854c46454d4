"""`acl.rt`: devices, contexts, streams, memory and callback reports (pyacl.md 1, 2, 5.2)."""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any

from acl import _core, _memory
from acl._core import (
    INVALID_PARAM,
    RT_CONTEXT_NULL,
    RT_INVALID_DEVICEID,
    RT_REPORT_TIMEOUT,
    RT_STREAM_CONTEXT,
    RT_THREAD_SUBSCRIBE,
    STATE,
    AclFail,
    Context,
    Device,
    api,
    require_context,
    violation,
)
from acl._reports import REPORTS

MEMCPY_HOST_TO_HOST = 0
MEMCPY_HOST_TO_DEVICE = 1
MEMCPY_DEVICE_TO_HOST = 2
MEMCPY_DEVICE_TO_DEVICE = 3
MEMCPY_DEFAULT = 4
KIND_NAMES = ("HOST_TO_HOST", "HOST_TO_DEVICE", "DEVICE_TO_HOST", "DEVICE_TO_DEVICE", "DEFAULT")


def _device(number: Any) -> Device:
    if not isinstance(number, int) or not 0 <= number < _core.settings().devices:
        violation("5", RT_INVALID_DEVICEID, f"device {number!r} does not exist")
    with STATE.lock:
        return STATE.devices.setdefault(number, Device())


def _new_context(device: int, default: bool) -> Context:
    ctx = Context(STATE.new_handle(), device, default, os.getpid())
    with STATE.lock:
        STATE.contexts[ctx.handle] = ctx
    return ctx


# ------------------------------------------------------------------ run mode, devices


@api("pair", needs_init=False)
def get_run_mode() -> tuple[int, int]:
    # 9a.1: acllite asks at import time, before acl.init, and ignores the code.
    return _core.settings().run_mode, 0


@api("pair")
def get_device_count() -> tuple[int, int]:
    return _core.settings().devices, 0


@api("pair")
def get_device() -> tuple[int, int]:
    ctx = require_context()
    return ctx.device, 0


@api("ret")
def set_device(device_id: int) -> int:
    device = _device(device_id)
    with STATE.lock:
        device.refcount += 1
        device.opened = True
        if not device.default_ctx or STATE.contexts[device.default_ctx].destroyed:
            device.default_ctx = _new_context(device_id, default=True).handle
    STATE.tls.ctx = device.default_ctx
    return 0


@api("ret")
def reset_device(device_id: int) -> int:
    device = _device(device_id)
    if device.refcount <= 0:
        violation("5", INVALID_PARAM, f"reset_device({device_id}) without a matching set_device")
    device.refcount -= 1
    if device.refcount == 0:
        _release_device(device_id, device)
    return 0


@api("ret")
def reset_device_force(device_id: int) -> int:
    device = _device(device_id)
    device.refcount = 0
    _release_device(device_id, device)
    return 0


def _release_device(device_id: int, device: Device) -> None:
    from acl import mdl

    loaded = mdl.loaded_on(device_id)
    with STATE.lock:
        if device.default_ctx:
            STATE.contexts[device.default_ctx].destroyed = True
        device.default_ctx = 0
    if loaded:
        violation("20", _core.FAILURE, f"reset_device({device_id}) with models still loaded: "
                  f"{loaded} (unload them first)", tolerated=True)


# ------------------------------------------------------------------ contexts


@api("pair")
def create_context(device_id: int) -> tuple[int, int]:
    # 9a.3: binds the device implicitly; not a set_device reference.
    device = _device(device_id)
    device.opened = True
    ctx = _new_context(device_id, default=False)
    STATE.tls.ctx = ctx.handle
    return ctx.handle, 0


@api("ret")
def destroy_context(context: int) -> int:
    ctx = STATE.contexts.get(context)
    if ctx is None or ctx.destroyed:
        violation("5", INVALID_PARAM, f"destroy_context({context!r}): not a live context")
        return INVALID_PARAM
    if ctx.default:
        violation("5", INVALID_PARAM, "the default context goes with reset_device, not destroy")
    ctx.destroyed = True
    if getattr(STATE.tls, "ctx", 0) == context:
        STATE.tls.ctx = 0
    return 0


@api("ret")
def set_context(context: int) -> int:
    ctx = STATE.contexts.get(context)
    if ctx is None:
        violation("5", INVALID_PARAM, f"set_context({context!r}): not a context")
        return INVALID_PARAM
    if ctx.destroyed:
        violation("5", RT_CONTEXT_NULL, "set_context on a destroyed context (or its device was "
                  "reset)")
    if ctx.pid != os.getpid():
        violation("3", _core.INVALID_RESOURCE_HANDLE, "context from another process")
    STATE.tls.ctx = context
    return 0


@api("pair")
def get_context() -> tuple[int, int]:
    ctx = _core.current_context()
    if ctx is None:
        violation("7", RT_CONTEXT_NULL, "this thread has no current context")
        return 0, RT_CONTEXT_NULL
    return ctx.handle, 0


# ------------------------------------------------------------------ streams


_DEFAULT_STREAMS: dict[int, _core.Resource] = {}


def _stream_key(stream: Any) -> _core.Resource:
    """The stream resource for `stream`; 0 is the current context's default stream."""
    ctx = require_context()
    if stream in (0, None):
        with STATE.lock:
            resource = _DEFAULT_STREAMS.get(ctx.handle)
            if resource is None:
                resource = _core.register("default-stream")
                resource.destroyed = True  # never a leak: it goes with its context
                _DEFAULT_STREAMS[ctx.handle] = resource
        return resource
    resource = _core.lookup(stream, "stream")
    if resource.ctx != ctx.handle:
        violation("9", RT_STREAM_CONTEXT,
                  "stream used under a context other than the one it was created in",
                  tolerated=True)
    return resource


def enqueue(stream: Any, work: Callable[[], None]) -> None:
    """Queue device work on a stream; it runs at synchronize_stream (rules 19, 22)."""
    resource = _stream_key(stream)
    resource.data.setdefault("queue", []).append(work)


@api("pair")
def create_stream() -> tuple[int, int]:
    require_context()
    resource = _core.register("stream")
    resource.data["queue"] = []
    return resource.handle, 0


@api("ret")
def destroy_stream(stream: int) -> int:
    require_context()
    resource = _core.lookup(stream, "stream")
    if resource.data.get("queue"):
        violation("19", INVALID_PARAM, "stream destroyed with queued work not synchronized",
                  tolerated=True)
    _core.destroy(resource)
    return 0


@api("ret")
def synchronize_stream(stream: int) -> int:
    resource = _stream_key(stream)
    work = resource.data.get("queue", [])
    resource.data["queue"] = []
    for item in work:
        with _core.device_time():
            item()
    return 0


# ------------------------------------------------------------------ memory


def _check_policy(policy: Any) -> None:
    if not isinstance(policy, int) or not 0 <= policy <= 5:
        violation("11", INVALID_PARAM, f"unknown malloc policy {policy!r}")


def _check_size(size: Any) -> None:
    if not isinstance(size, int) or size <= 0:
        violation("11", INVALID_PARAM, f"allocation size {size!r} (must be > 0)")


@api("pair")
def malloc(size: int, policy: int) -> tuple[int, int]:
    ctx = require_context()
    _check_size(size)
    _check_policy(policy)
    return _memory.MEMORY.allocate(size, _memory.RT, ctx.device), 0


@api("pair")
def malloc_cached(size: int, policy: int) -> tuple[int, int]:
    return malloc(size, policy)  # type: ignore[no-any-return]


@api("pair")
def malloc_host(size: int) -> tuple[int, int]:
    ctx = require_context()
    _check_size(size)
    return _memory.MEMORY.allocate(size, _memory.HOST, ctx.device), 0


@api("ret")
def free(dev_ptr: int) -> int:
    _memory.MEMORY.free(dev_ptr, _memory.RT)
    return 0


@api("ret")
def free_host(host_ptr: int) -> int:
    _memory.MEMORY.free(host_ptr, _memory.HOST)
    return 0


@api("tuple2")
def get_mem_info(attr: int) -> tuple[int, int, int]:
    require_context()
    total = 8 << 30
    used = sum(b.size for b in _memory.MEMORY.blocks.values() if not b.freed)
    return total - used, total, 0


def _check_kind(kind: Any, src: _memory.Span, dst: _memory.Span) -> None:
    if not isinstance(kind, int) or not 0 <= kind <= 4:
        violation("13", INVALID_PARAM, f"unknown memcpy kind {kind!r}")
    if _core.settings().run_mode == _core.ACL_DEVICE or kind == MEMCPY_DEFAULT:
        return  # 9a.6: on the board host and device share DDR; every kind works
    wanted = (
        (MEMCPY_DEVICE_TO_DEVICE if dst.on_device else MEMCPY_DEVICE_TO_HOST)
        if src.on_device
        else (MEMCPY_HOST_TO_DEVICE if dst.on_device else MEMCPY_HOST_TO_HOST)
    )
    if kind != wanted:
        violation(
            "13", INVALID_PARAM,
            f"memcpy kind {KIND_NAMES[kind]} but the copy goes "
            f"{'device' if src.on_device else 'host'} -> {'device' if dst.on_device else 'host'}"
            f" on ACL_HOST (a PCIe card): use {KIND_NAMES[wanted]}",
        )


def _copy(dst: int, dest_max: int, src: int, count: int, kind: int) -> None:
    if not isinstance(count, int) or not isinstance(dest_max, int) or count < 0:
        violation("13", INVALID_PARAM, f"memcpy sizes {dest_max!r}, {count!r}")
    if count > dest_max:
        violation("13", INVALID_PARAM, f"memcpy count {count} > dest_max {dest_max}")
    to = _memory.resolve(dst, "memcpy destination")
    frm = _memory.resolve(src, "memcpy source")
    _check_kind(kind, frm, to)
    if count > to.limit:
        violation("13", INVALID_PARAM, f"memcpy writes {count} bytes where {to.limit} remain")
    if count > frm.limit:
        violation("13", INVALID_PARAM, f"memcpy reads {count} bytes where {frm.limit} remain")
    _memory.check_unlocked(to, count, "memcpy")
    if count:
        ctypes.memmove(to.address(), frm.address(), count)
    _memory.account(frm, to, count)


@api("ret")
def memcpy(dst: int, dest_max: int, src: int, count: int, kind: int) -> int:
    require_context()
    _copy(dst, dest_max, src, count, kind)
    return 0


@api("ret")
def memcpy_async(dst: int, dest_max: int, src: int, count: int, kind: int, stream: int) -> int:
    require_context()
    _memory.resolve(dst, "memcpy destination")
    _memory.resolve(src, "memcpy source")
    enqueue(stream, lambda: _copy(dst, dest_max, src, count, kind))
    return 0


def _set(dev_ptr: int, max_size: int, value: int, count: int) -> None:
    if count > max_size:
        violation("13", INVALID_PARAM, f"memset count {count} > max {max_size}")
    span = _memory.resolve(dev_ptr, "memset destination")
    if count > span.limit:
        violation("13", INVALID_PARAM, f"memset of {count} bytes where {span.limit} remain")
    _memory.check_unlocked(span, count, "memset")
    span.view(count)[:] = value & 0xFF


@api("ret")
def memset(dev_ptr: int, max_size: int, value: int, count: int) -> int:
    require_context()
    _set(dev_ptr, max_size, value, count)
    return 0


@api("ret")
def memset_async(dev_ptr: int, max_size: int, value: int, count: int, stream: int) -> int:
    require_context()
    enqueue(stream, lambda: _set(dev_ptr, max_size, value, count))
    return 0


# ------------------------------------------------------------------ callbacks


@api("ret")
def subscribe_report(thread_id: int, stream: int) -> int:
    resource = _stream_key(stream)
    subscribers = resource.data.setdefault("subscribers", [])
    if thread_id in subscribers:
        violation("25", 100033, "thread already subscribed to this stream")
    subscribers.append(thread_id)
    REPORTS.subscribe(thread_id)
    return 0


@api("ret")
def unsubscribe_report(thread_id: int, stream: int) -> int:
    resource = _stream_key(stream)
    subscribers = resource.data.setdefault("subscribers", [])
    if thread_id not in subscribers:
        violation("25", 100035, "thread not subscribed to this stream")
    subscribers.remove(thread_id)
    REPORTS.unsubscribe(thread_id)
    return 0


@api("ret")
def launch_callback(fn: Callable[[Any], None], user_data: Any, block_type: int,
                    stream: int) -> int:
    resource = _stream_key(stream)
    subscribers = resource.data.get("subscribers") or []
    if not subscribers:
        violation("25", 100034, "launch_callback on a stream no thread subscribed to")
    tid = subscribers[0]

    def deliver() -> None:
        job = REPORTS.post(tid, lambda: fn(user_data))
        if block_type == 1:
            job.done.wait(_core.settings().drain_timeout)

    enqueue(stream, deliver)
    return 0


@api("ret")
def process_report(timeout: int) -> int:
    if not isinstance(timeout, int) or (timeout <= 0 and timeout != -1):
        violation("25", INVALID_PARAM, f"process_report timeout {timeout!r} (must be -1 or > 0)")
    tid = threading.get_ident()
    if not REPORTS.subscribed(tid) and not REPORTS.pending(tid):
        return RT_THREAD_SUBSCRIBE  # normal "nothing subscribed yet": not a violation
    if _core.current_context() is None:
        violation("25", RT_CONTEXT_NULL,
                  "callback thread has no current context: call acl.rt.set_context(ctx) at "
                  "the start of the thread (callbacks cannot run)")
    job = REPORTS.take(tid, None if timeout == -1 else timeout / 1000.0)
    if job is None:
        return RT_REPORT_TIMEOUT
    _run_outside(job)
    return 0


def _run_outside(job: Any) -> None:
    """Run a callback with no emulator lock held; a raising callback is printed, like pyACL."""
    outer = STATE.tls.call
    STATE.tls.call = "callback"
    try:
        job.run()
    except AclFail:
        pass
    except Exception:
        import traceback

        traceback.print_exc()
    finally:
        STATE.tls.call = outer
        job.done.set()
