"""An emulator of Huawei's pyACL (`import acl`), for edged's tests. Not the real runtime.

Put this file's parent folder on PYTHONPATH (spawned workers inherit it) and `import acl` gets
the emulator: device memory is numpy behind fake addresses, models are ONNX files run with ONNX
Runtime behind a small `.om` JSON file (see `acl/_om.py`), VDEC decodes with PyAV, VPC resizes
with OpenCV. The CPU time it spends standing in for the device is counted (`acl.emulator.stats`).

Environment:
  ACL_EMU_SOC          Ascend310 (default) | Ascend310P3 | Ascend310B1: alignment tables, VDEC ids
  ACL_EMU_RUN_MODE     ACL_HOST (default, a PCIe card) | ACL_DEVICE (a board): memcpy kind rules
  ACL_EMU_MODE         strict (default: a broken rule returns its error code) | realistic (what
                       the hardware tolerates goes through and is recorded)
  ACL_EMU_REPORT_DIR   where acl-<pid>.json is written at finalize and at exit (default
                       $TMPDIR/acl-emulator)
  ACL_EMU_DEVICES      number of devices (default 1)
  ACL_EMU_DRAIN_TIMEOUT seconds a VDEC drain / thread join may take before it is a deadlock (10)
  ACL_EMU_POISON       1 (default): new memory is filled with 0xCD; 0: zeros
  ACL_EMU_STATS_INTERVAL seconds: also write acl-<pid>.stats.json (device CPU, bytes) that often

An `acl.*` call never raises: failures come back as the real call's return shape (a code, a
`(value, code)` tuple, or 0 for value-only calls), and each broken rule is printed to stderr and
recorded in the report. Rules enforced (numbers of pyacl.md section 9, then 9a):
  1  init twice / calls before init or after finalize / finalize twice (get_run_mode, app_log
     and the pointer helpers excepted, 9a.1-2)
  2  ACL used in a child forked after acl.init (strict: error; realistic: hangs, like the device)
  3  handles and memory are per process
  4  report of leaks at finalize and at exit; strict finalize with live resources fails
  5  reset_device without set_device; set_context on a destroyed context; destroying the
     default context
  7  107002 without a current context (memory, copies, streams, models, DVPP, VDEC, reports)
  8  set_device shares the device's default context; create_context is current for its creator
  9  streams and models used under another context (strict: 107003/107004)
  10 concurrent execute of one model id
  11 malloc(0), unknown policy
  12 allocator/free pairing, double free, use after free, handles of the wrong kind
  13 memcpy bounds and registered pointers; kind checked against run mode on ACL_HOST
     (9a.6: any kind on ACL_DEVICE); device pointers read by the CPU on ACL_HOST
  14 new memory poisoned with 0xCD
  15 missing / invalid / other-SoC .om
  16 execute: buffer counts, exact input sizes (larger: 145000 in both modes), device memory only,
     output sizes
  17 dynamic batch: set_dynamic_batch_size before execute, gears only; the user writing into the
     dynamic-batch input (realistic: recorded)
  18 static AIPP: NV12/NV21 input of exactly src_w*src_h*3/2*N; CSC (9a.11 default matrix) and
     normalisation applied before ONNX
  19, 22 async work (execute_async, VPC, memcpy_async) lands only at synchronize_stream
  20 unload with async work pending; reset_device or finalize before unload
  21 picture descriptors: fields set, format, even sizes, strides (SoC table), buffer size,
     DVPP memory; ROI parity on 310, paste-left % 16; resize ratio [1/32, 16]
  23 VDEC channel id range and uniqueness, thread and callback set before create, send before
     create / after destroy, empty packets, Annex-B only (no cap on
     simultaneous decoder instances beyond the id range)
  24 buffers of a frame in flight (send_frame until its callback returns) not written or freed
  25 callbacks only inside process_report on the subscribed thread, which needs a context;
     timeout codes 100000 / 107012 / 507012; destroy that cannot drain is a deadlock error
  26 teardown order (channel desc before channel, callback thread stopped before the channel)
  27 callback gets both descriptors (0 where missing) and the original user_data
  9a.4 destroying after the resource's context is gone (strict only); 9a.5 calls after finalize
  return codes; 9a.7 vdec_destroy_channel flushes; 9a.8 one callback per send_frame; 9a.9 no
  emulator lock held during callbacks; 9a.10 NV21; 9a.12 crop-and-paste writes only the paste
  area; 9a.13 return shapes; 9a.14 VDEC output sized without stride alignment is reported
"""

from __future__ import annotations

from acl import _core, emulator, mdl, media, rt, util
from acl._core import INVALID_PARAM, STATE, api, violation


@api("ret", needs_init=False)
def init(config_path: str | None = None) -> int:
    if STATE.poisoned:
        _core._poisoned_call()
    if STATE.initialized and not STATE.finalized:
        violation("1", _core.REPEAT_INITIALIZE, "acl.init called twice")
    if STATE.finalized:
        violation("1", _core.REPEAT_INITIALIZE, "acl.init after acl.finalize in one process "
                  "(restart the process instead)")
    STATE.initialized = True
    _core.start_stats_writer()
    return 0


@api("ret", needs_init=False)
def finalize() -> int:
    if STATE.poisoned:
        _core._poisoned_call()
    if not STATE.initialized:
        violation("1", _core.UNINITIALIZE, "finalize before init")
    if STATE.finalized:
        violation("1", _core.REPEAT_FINALIZE, "acl.finalize called twice")
    import inspect

    if any(f.function == "__del__" for f in inspect.stack()[1:12]):
        violation("6", 0, "finalize called from __del__ (undefined teardown order)",
                  tolerated=True)
    left = _core.leaks()
    models = mdl.loaded_on(None)
    STATE.finalized = True
    code = 0
    if models:
        try:
            violation("20", _core.FAILURE, f"finalize with models still loaded: {models}",
                      tolerated=True)
        except _core.AclFail as failed:
            code = failed.code
    if left:
        kinds = sorted({str(leak["kind"]) for leak in left})
        try:
            violation("4", _core.FAILURE, f"finalize with {len(left)} live resources: "
                      f"{', '.join(kinds)}", tolerated=True)
        except _core.AclFail as failed:
            code = failed.code
    _core.write_report()
    return code


@api("value", needs_init=False)
def get_soc_name() -> str:
    return _core.settings().soc


@api("value", needs_init=False)
def get_recent_err_msg() -> str:
    message = getattr(STATE.tls, "err", "")
    STATE.tls.err = ""
    return str(message)


@api("none", needs_init=False)
def app_log(level: int, message: str) -> None:  # 9a.2
    return None


@api("tuple3", needs_init=False)
def get_version() -> tuple[int, int, int, int]:
    return 7, 0, 0, 0


# ------------------------------------------------------------------ data buffers


@api("value")
def create_data_buffer(data: int, size: int) -> int:
    if not isinstance(data, int) or not isinstance(size, int) or size < 0:
        violation("16", INVALID_PARAM, f"create_data_buffer({data!r}, {size!r})")
    return _core.register("data_buffer", addr=data, size=size).handle


@api("ret")
def destroy_data_buffer(data_buffer: int) -> int:
    _core.destroy(_core.lookup(data_buffer, "data_buffer"))
    return 0


@api("value")
def get_data_buffer_addr(data_buffer: int) -> int:
    return int(_core.lookup(data_buffer, "data_buffer").data["addr"])


@api("value")
def get_data_buffer_size(data_buffer: int) -> int:
    return int(_core.lookup(data_buffer, "data_buffer").data["size"])


@api("value")
def get_data_buffer_size_v2(data_buffer: int) -> int:
    return int(_core.lookup(data_buffer, "data_buffer").data["size"])


__all__ = [
    "app_log", "create_data_buffer", "destroy_data_buffer", "emulator", "finalize",
    "get_data_buffer_addr", "get_data_buffer_size", "get_data_buffer_size_v2",
    "get_recent_err_msg", "get_soc_name", "get_version", "init", "mdl", "media", "rt", "util",
]
