"""The emulator's process state: configuration, handles, contexts, violations and the report.

Runs in whichever process imports `acl` (a worker, a test, a sample program). Nothing here raises
out of an `acl.*` call: `api()` turns every failure into the return shape of the real call.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import itertools
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

# Return codes (pyacl.md section 6).
SUCCESS = 0
INVALID_PARAM = 100000
UNINITIALIZE = 100001
REPEAT_INITIALIZE = 100002
INVALID_FILE = 100003
INVALID_MODEL_ID = 100011
PARSE_MODEL = 100014
MODEL_INPUT_NOT_MATCH = 100017
MODEL_OUTPUT_NOT_MATCH = 100018
MODEL_NOT_DYNAMIC = 100019
REPEAT_FINALIZE = 100037
FAILURE = 500001
INVALID_RESOURCE_HANDLE = 200005
RT_INVALID_DEVICEID = 107001
RT_CONTEXT_NULL = 107002
RT_STREAM_CONTEXT = 107003
RT_MODEL_CONTEXT = 107004
RT_THREAD_SUBSCRIBE = 107012
RT_INTERNAL_ERROR = 507000
RT_REPORT_TIMEOUT = 507012
RT_DEV_SETUP_ERROR = 507033
GE_PARAM_INVALID = 145000
GE_DYNAMIC_INPUT = 145011
GE_DYNAMIC_BATCH = 145013

ACL_HOST = 1
ACL_DEVICE = 0

# VPC / VDEC stride tables per SoC (pyacl.md 4.2, 5.4).
SOCS = ("Ascend310", "Ascend310P3", "Ascend310B1")


class Mode(Enum):
    STRICT = "strict"
    REALISTIC = "realistic"


@dataclass(frozen=True)
class Settings:
    soc: str
    run_mode: int
    mode: Mode
    devices: int
    report_dir: Path
    drain_timeout: float
    poison: bool

    @staticmethod
    def from_env() -> Settings:
        soc = os.environ.get("ACL_EMU_SOC", "Ascend310")
        if soc not in SOCS:
            soc = "Ascend310"
        mode_name = os.environ.get("ACL_EMU_RUN_MODE", "ACL_HOST").upper()
        run_mode = ACL_DEVICE if mode_name in ("ACL_DEVICE", "DEVICE", "0") else ACL_HOST
        strictness = os.environ.get("ACL_EMU_MODE", "strict").lower()
        mode = Mode.REALISTIC if strictness == "realistic" else Mode.STRICT
        report_dir = Path(
            os.environ.get("ACL_EMU_REPORT_DIR", Path(tempfile.gettempdir()) / "acl-emulator")
        )
        return Settings(
            soc=soc,
            run_mode=run_mode,
            mode=mode,
            devices=int(os.environ.get("ACL_EMU_DEVICES", "1")),
            report_dir=report_dir,
            drain_timeout=float(os.environ.get("ACL_EMU_DRAIN_TIMEOUT", "10")),
            poison=os.environ.get("ACL_EMU_POISON", "1") != "0",
        )


class AclFail(Exception):
    """Raised inside the emulator to return `code` from the current call."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class Resource:
    """Anything behind a handle: its kind, owner process, context, and when it was made."""

    kind: str
    handle: int
    pid: int
    ctx: int
    device: int
    where: str
    destroyed: bool = False
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    handle: int
    device: int
    default: bool
    pid: int
    destroyed: bool = False


@dataclass
class Device:
    refcount: int = 0
    default_ctx: int = 0
    opened: bool = False


class State:
    """Everything one process's `acl` holds. Guarded by `lock`, never held while user code runs."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self.lock = threading.RLock()
        self.initialized = False
        self.finalized = False
        self.poisoned = False
        self.pid = os.getpid()
        self.handles = itertools.count(0x5E00_0000_0010, 16)
        self.resources: dict[int, Resource] = {}
        self.contexts: dict[int, Context] = {}
        self.devices: dict[int, Device] = {}
        self.tls = threading.local()
        self.violations: list[dict[str, Any]] = []
        self.violation_counts: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.device_cpu_s = 0.0
        self.bytes_copied: Counter[str] = Counter()
        self.batches: Counter[int] = Counter()  # model executions by batch size
        self.report_written: Path | None = None

    def new_handle(self) -> int:
        return next(self.handles)


STATE = State()
F = TypeVar("F", bound=Callable[..., Any])

MAX_VIOLATIONS_KEPT = 500


def settings() -> Settings:
    return STATE.settings


def strict() -> bool:
    return STATE.settings.mode is Mode.STRICT


def _caller() -> str:
    """The first frame outside the emulator: where the user's call came from."""
    here = os.path.dirname(__file__)
    for frame in reversed(traceback.extract_stack(limit=40)):
        if not frame.filename.startswith(here):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "?"


def set_error(message: str) -> None:
    STATE.tls.err = message


def violation(rule: str, code: int, message: str, *, tolerated: bool = False) -> None:
    """Record a broken rule. Raises AclFail(code) unless the rule is tolerated in realistic mode.

    `tolerated`: the hardware lets it through (corrupting data or leaking), so realistic mode
    records it and carries on; strict mode always returns the documented code.
    """
    call = getattr(STATE.tls, "call", "?")
    entry = {
        "rule": rule,
        "code": code,
        "call": call,
        "message": message,
        "thread": threading.current_thread().name,
        "where": _caller(),
        "time": round(time.time(), 3),
    }
    with STATE.lock:
        STATE.violation_counts[rule] += 1
        if len(STATE.violations) < MAX_VIOLATIONS_KEPT:
            STATE.violations.append(entry)
    set_error(f"EE9999: [emulator rule {rule}] {call}: {message}")
    print(f"acl emulator: rule {rule} broken in {call}: {message}", file=sys.stderr)
    if STATE.poisoned:
        # A forked child leaves through os._exit (multiprocessing): no atexit, so write now.
        write_report()
    if tolerated and not strict():
        return
    raise AclFail(code)


def fail(code: int, message: str) -> None:
    """A plain error return that breaks no rule of the emulator (e.g. a missing model file)."""
    set_error(f"EE1001: {getattr(STATE.tls, 'call', '?')}: {message}")
    raise AclFail(code)


def require_init() -> None:
    if not STATE.initialized:
        violation("1", UNINITIALIZE, "called before acl.init")
    if STATE.finalized:
        violation("1", UNINITIALIZE, "called after acl.finalize")


def current_context() -> Context | None:
    handle = getattr(STATE.tls, "ctx", 0)
    ctx = STATE.contexts.get(handle)
    if ctx is None or ctx.destroyed:
        return None
    return ctx


def require_context() -> Context:
    ctx = current_context()
    if ctx is None:
        violation("7", RT_CONTEXT_NULL, "this thread has no current context (call set_context)")
        raise AclFail(RT_CONTEXT_NULL)
    return ctx


def register(kind: str, *, device: int | None = None, **data: Any) -> Resource:
    ctx = current_context()
    handle = STATE.new_handle()
    resource = Resource(
        kind=kind,
        handle=handle,
        pid=os.getpid(),
        ctx=ctx.handle if ctx else 0,
        device=device if device is not None else (ctx.device if ctx else -1),
        where=_caller(),
        data=dict(data),
    )
    with STATE.lock:
        STATE.resources[handle] = resource
    return resource


def lookup(handle: Any, *kinds: str, destroyed_ok: bool = False) -> Resource:
    """The live resource behind `handle`, of one of `kinds`; a rule violation otherwise."""
    if not isinstance(handle, int) or handle == 0:
        violation("12", INVALID_PARAM, f"{kinds[0]} handle is {handle!r}")
    resource = STATE.resources.get(handle)
    if resource is None:
        violation("12", INVALID_PARAM, f"{handle:#x} is not a {'/'.join(kinds)} handle")
        raise AclFail(INVALID_PARAM)
    if resource.kind not in kinds:
        violation(
            "12", INVALID_PARAM, f"{handle:#x} is a {resource.kind}, not a {'/'.join(kinds)}"
        )
    if resource.pid != os.getpid():
        violation("3", INVALID_RESOURCE_HANDLE, f"{resource.kind} made by pid {resource.pid}")
    if resource.destroyed and not destroyed_ok:
        violation("12", INVALID_PARAM, f"{resource.kind} {handle:#x} used after it was destroyed")
    return resource


def destroy(resource: Resource) -> None:
    """Mark destroyed; destroying after its context is gone is a strict-only violation (9a.4)."""
    ctx = STATE.contexts.get(resource.ctx)
    if ctx is not None and ctx.destroyed:
        violation(
            "9a.4",
            INVALID_PARAM,
            f"{resource.kind} destroyed after the context it was made under was destroyed",
            tolerated=True,
        )
    resource.destroyed = True


@contextlib.contextmanager
def device_time() -> Iterator[None]:
    """Account the host CPU this thread spends standing in for the device."""
    depth = getattr(STATE.tls, "device_depth", 0)
    STATE.tls.device_depth = depth + 1
    started = time.thread_time()
    try:
        yield
    finally:
        STATE.tls.device_depth = depth
        if depth == 0:  # nested device work is counted once, by the outermost
            spent = time.thread_time() - started
            with STATE.lock:
                STATE.device_cpu_s += spent


def _failure_value(shape: str, code: int) -> Any:
    if shape == "ret":
        return code
    if shape == "pair":
        return 0, code
    if shape.startswith("tuple"):
        return (*([0] * int(shape[5:])), code)
    return 0 if shape == "value" else None


def api(shape: str, *, needs_init: bool = True) -> Callable[[F], F]:
    """Wrap a public call: poison and init checks, and every failure as a return value.

    shape: "ret" (status only), "pair" ((value, ret)), "tupleN" (N values then ret),
    "value" (value only, 0 on failure), "none" (returns None).
    """

    def wrap(fn: F) -> F:
        name = f"{fn.__module__}.{fn.__name__}"

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            outer = getattr(STATE.tls, "call", None)
            STATE.tls.call = name
            STATE.calls[name] += 1
            try:
                if STATE.poisoned and needs_init:
                    _poisoned_call()
                if needs_init:
                    require_init()
                return fn(*args, **kwargs)
            except AclFail as failed:
                return _failure_value(shape, failed.code)
            except Exception as exc:  # an acl call never raises: a bad argument is a code
                with contextlib.suppress(AclFail):
                    violation("args", INVALID_PARAM, f"bad arguments: {exc!r}")
                return _failure_value(shape, INVALID_PARAM)
            finally:
                STATE.tls.call = outer

        return call  # type: ignore[return-value]

    return wrap


def _poisoned_call() -> None:
    if not strict():
        # Realistic: what the seeds saw, a child that never comes back.
        print("acl emulator: forked child touched ACL: hanging like the device", file=sys.stderr)
        violation("2", RT_DEV_SETUP_ERROR, "ACL used in a child forked after acl.init (hang)",
                  tolerated=True)
        threading.Event().wait()
    violation(
        "2",
        RT_DEV_SETUP_ERROR,
        "ACL used in a child forked after the parent called acl.init: real devices hang here; "
        "start workers with the spawn method",
    )


def _after_fork_in_child() -> None:
    if STATE.initialized and not STATE.finalized:
        STATE.poisoned = True
        STATE.pid = os.getpid()
        STATE.violations = []
        STATE.violation_counts = Counter()
        STATE.report_written = None


os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------- report


def leaks() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with STATE.lock:
        for resource in STATE.resources.values():
            if not resource.destroyed and resource.pid == os.getpid():
                found.append(
                    {
                        "kind": resource.kind,
                        "handle": hex(resource.handle),
                        "created_at": resource.where,
                        **{k: v for k, v in resource.data.items() if isinstance(v, int | str)},
                    }
                )
        for ctx in STATE.contexts.values():
            if not ctx.default and not ctx.destroyed and ctx.pid == os.getpid():
                found.append({"kind": "context", "handle": hex(ctx.handle), "device": ctx.device})
        for number, device in STATE.devices.items():
            if device.refcount > 0:
                found.append({"kind": "set_device", "device": number, "refcount": device.refcount})
    from acl import _memory  # the memory registry lives there; imported late (cycle)

    found.extend(_memory.leaks())
    return found


def stats() -> dict[str, Any]:
    with STATE.lock:
        return {
            "device_cpu_s": round(STATE.device_cpu_s, 6),
            "bytes_copied": dict(STATE.bytes_copied),
            "executes_by_batch": {str(k): v for k, v in sorted(STATE.batches.items())},
            "calls": sum(STATE.calls.values()),
        }


def report() -> dict[str, Any]:
    s = STATE.settings
    return {
        "pid": os.getpid(),
        "soc": s.soc,
        "run_mode": "ACL_HOST" if s.run_mode == ACL_HOST else "ACL_DEVICE",
        "mode": s.mode.value,
        "initialized": STATE.initialized,
        "finalized": STATE.finalized,
        "forked_child": STATE.poisoned,
        "violations": list(STATE.violations),
        "violation_counts": dict(STATE.violation_counts),
        "leaks": leaks() if not STATE.poisoned else [],
        "calls_by_name": dict(sorted(STATE.calls.items())),
        **stats(),
    }


def report_path() -> Path:
    return STATE.settings.report_dir / f"acl-{os.getpid()}.json"


def write_report() -> Path | None:
    """Write the JSON report for this process (at finalize, at exit, on a fork violation)."""
    if not STATE.initialized and not STATE.violations:
        return None  # imported (say, for get_run_mode) but never used: nothing to say
    path = report_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report(), indent=1, default=str))
        tmp.replace(path)
    except OSError as exc:
        print(f"acl emulator: cannot write report {path}: {exc}", file=sys.stderr)
        return None
    STATE.report_written = path
    return path


def start_stats_writer() -> None:
    """With ACL_EMU_STATS_INTERVAL=seconds, write stats() to acl-<pid>.stats.json that often, so
    a bench can read the device stand-in's CPU over a window while the process runs."""
    interval = float(os.environ.get("ACL_EMU_STATS_INTERVAL", "0") or 0)
    if interval <= 0:
        return
    path = STATE.settings.report_dir / f"acl-{os.getpid()}.stats.json"

    def loop() -> None:
        while True:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"time": time.monotonic(), **stats()}))
                tmp.replace(path)
            except OSError:
                pass
            time.sleep(interval)

    threading.Thread(target=loop, name="acl-emulator-stats", daemon=True).start()


@atexit.register
def _at_exit() -> None:
    if STATE.initialized and not STATE.finalized:
        with contextlib.suppress(AclFail):
            STATE.tls.call = "atexit"
            violation("4", FAILURE, "process exits without acl.finalize", tolerated=True)
    write_report()
