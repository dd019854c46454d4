"""Worker threads ask the kernel for batch scheduling; the rest of the process keeps its own.

The refusal case runs under a real seccomp filter (libseccomp, the library systemd itself uses
for SystemCallFilter=) in a child process, so the test's own process is not filtered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from edged.worker.scheduling import ThreadRole, batch_scheduling, name_thread

REPO = Path(__file__).resolve().parents[2]

# The child: deny sched_setscheduler with EPERM the way systemd's SystemCallFilter=~@resources
# with SystemCallErrorNumber=EPERM does, then ask for SCHED_BATCH from three threads.
_FILTERED_CHILD = r"""
import ctypes, ctypes.util, errno, json, os, threading, sys
name = ctypes.util.find_library("seccomp")
if name is None:
    sys.exit("libseccomp not found: apt-get install libseccomp2 (scripts/setup.sh --dev)")
lib = ctypes.CDLL(name, use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000 | errno.EPERM
ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
nr = lib.seccomp_syscall_resolve_name(b"sched_setscheduler")
assert ctx and nr >= 0
assert lib.seccomp_rule_add(ctx, SCMP_ACT_ERRNO, nr, 0) == 0
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS, needed without CAP_SYS_ADMIN
assert lib.seccomp_load(ctx) == 0

from edged.logs import configure_logging
from edged.worker.scheduling import ThreadRole, batch_scheduling, name_thread
configure_logging("info", process="worker:test")
results = []
def decode():
    results.append(batch_scheduling())
    results.append(os.sched_getscheduler(threading.get_native_id()) == os.SCHED_BATCH)
threads = [threading.Thread(target=decode) for _ in range(3)]
for t in threads: t.start()
for t in threads: t.join(10)
print(json.dumps(results))
"""


def test_only_the_calling_thread_becomes_batch() -> None:
    seen: dict[str, object] = {}

    def worker_thread() -> None:
        seen["ok"] = batch_scheduling()
        seen["thread"] = os.sched_getscheduler(threading.get_native_id())

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join(5)
    assert seen == {"ok": True, "thread": os.SCHED_BATCH}
    assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER


def test_a_refused_call_is_logged_once_at_warning() -> None:
    env = {**os.environ, "EDGED_LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-c", _FILTERED_CHILD],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=env,
    )
    assert done.returncode == 0, done.stderr
    # Every thread was refused, and none pretends to run SCHED_BATCH.
    assert json.loads(done.stdout) == [False] * 6
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    warnings = [e for e in events if "SCHED_BATCH refused" in e["event"]]
    assert len(warnings) == 1, done.stderr
    assert warnings[0]["level"] == "warning"
    assert warnings[0]["error"] == "Operation not permitted"
    assert "sched_setscheduler" in warnings[0]["event"]


# The child: letterbox 720p frames through the worker's own preprocess and report how many
# threads the process runs before and after; with the worker's OpenCV setting or without.
_LETTERBOX_CHILD = r"""
import json, os, sys
import av, cv2, numpy as np
from edged.backends.host_media import HostPreprocess
from edged.worker.scheduling import opencv_in_caller_thread
if sys.argv[1] == "worker":
    opencv_in_caller_thread()
frame = av.VideoFrame.from_ndarray(
    np.random.default_rng(1).integers(0, 255, (720, 1280, 3), np.uint8), format="bgr24"
).reformat(format="yuv420p")
preprocess = HostPreprocess((416, 416))
before = len(os.listdir("/proc/self/task"))
for _ in range(20):
    preprocess.release(preprocess.prepare(frame))
print(json.dumps({"before": before, "after": len(os.listdir("/proc/self/task")),
                  "cpus": cv2.getNumberOfCPUs()}))
"""


def _letterbox_threads(mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _LETTERBOX_CHILD, mode],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_worker_letterboxes_without_opencv_pool_threads() -> None:
    """A worker's letterbox runs in the stream's own thread: OpenCV starts no pool of threads
    that would spin on cores the inference loops fill (scheduling.opencv_in_caller_thread)."""
    worker = _letterbox_threads("worker")
    assert worker["after"] == worker["before"], worker
    default = _letterbox_threads("default")
    if default["cpus"] > 1:
        # The same frames with OpenCV's default do start its pool: the check above can fail.
        assert default["after"] > default["before"], default


def test_a_named_thread_shows_its_role_and_name_to_the_kernel() -> None:
    """`top -H` and `edged bench` see `role:detail`, cut to the kernel's 15 bytes; the thread
    that named itself is the only one renamed."""
    seen: dict[str, str] = {}

    def source() -> None:
        name_thread(ThreadRole.SOURCE, "front-door-camera")
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text()

    main_before = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text()
    thread = threading.Thread(target=source)
    thread.start()
    thread.join(10)
    assert seen["comm"] == "src:front-door-\n", seen
    assert Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text() == main_before
