"""multiprocessing's resource tracker, ended before the supervisor exits.

Runs in the supervisor, once, at the very end of `edged run`, after every worker has exited.
The `spawn` start method starts a resource-tracker process the first time it spawns a worker
(multiprocessing.popen_spawn_posix passes it to each child), whether or not anything is ever
registered with it; edged registers nothing (no named semaphores, no shared_memory). The tracker
ignores SIGINT and SIGTERM and exits when it reads EOF on its pipe, that is when the last holder
of the pipe's write end closes it. Left alone, that is the supervisor's own exit: the tracker
outlives it by a few milliseconds, and systemd's KillMode=mixed SIGKILLs it, logging `Killing
process ... with signal SIGKILL` on every clean stop.

The standard library has no public call that ends the tracker (ResourceTracker._stop() is
private), so this uses the operating system's view: the tracker is our child process whose
command line runs `multiprocessing.resource_tracker.main(<read fd>)`; /proc says which pipe that
fd is, and /proc/self/fd which of our fds is the same pipe. That fd is replaced by /dev/null
(dup2, so the number stays valid should anything still write a probe to it), the tracker reads
EOF, cleans up and exits, and we reap it. Failing changes nothing but that log line: it never
raises.
"""

from __future__ import annotations

import contextlib
import os
import re

import psutil
import structlog

log = structlog.get_logger(__name__)

_TRACKER_MAIN = re.compile(r"multiprocessing\.resource_tracker import main;\s*main\((\d+)\)")


def stop_resource_tracker(timeout: float = 2.0) -> bool:
    """End our resource-tracker child, if there is one; True when none is left."""
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return False
    ok = True
    for child in children:
        try:
            match = next(
                (m for arg in child.cmdline() if (m := _TRACKER_MAIN.search(arg))), None
            )
            if match is None:
                continue
            pipe = os.readlink(f"/proc/{child.pid}/fd/{match.group(1)}")
            _close_our_end(pipe)
            child.wait(timeout)
        except (psutil.Error, OSError) as exc:
            # TimeoutExpired is a psutil.Error: systemd's final SIGKILL will end it.
            log.warning("resource tracker not stopped", pid=child.pid, error=str(exc))
            ok = False
    return ok


def _close_our_end(pipe: str) -> None:
    """Replace every fd of ours that is `pipe` ("pipe:[inode]") by /dev/null."""
    if not pipe.startswith("pipe:"):
        return
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") != pipe:
                continue
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.dup2(null, int(name), inheritable=False)
            finally:
                os.close(null)
