"""The worker process entry point (started with multiprocessing's `spawn`).

Order matters: logging and signals first, then the backend's runtime is created here, in this
process (an accelerator context must never be inherited). A backend that cannot load exits with
EXIT_BOOT_ERROR so the supervisor backs off instead of restarting blindly. Any other crash simply
ends the process; the supervisor sees the pipe close and restarts the worker. The worker never
outlives the supervisor: EOF on the pipe makes it exit.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
import time

import structlog

from edged.backends import BackendError, make_backend
from edged.protocol import (
    EXIT_BOOT_ERROR,
    EXIT_OK,
    EXIT_PIPE_LOST,
    Error,
    Ready,
    SetLogLevel,
    Shutdown,
    StartStream,
    StopStream,
    UpdateStream,
    decode_spec,
)
from edged.worker.channel import ChannelClosed, WorkerChannel
from edged.worker.detector import Detector
from edged.worker.runtime import WorkerRuntime
from edged.worker.scheduling import opencv_in_caller_thread

log = structlog.get_logger(__name__)


def worker_main(sock: socket.socket, spec_data: bytes) -> None:
    """Run one worker until told to stop or the supervisor goes away; never returns."""
    spec = decode_spec(spec_data)
    _setup_process(spec.worker.name, spec.log_level)
    channel = WorkerChannel(sock)
    try:
        code = _serve(spec, channel)
    except ChannelClosed:
        code = EXIT_PIPE_LOST
    # Decoder threads may sit in a blocking read of a network camera; they hold nothing that
    # needs flushing, so leave without waiting for them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _set_log_level(name: str, level: str) -> None:
    from edged.logs import configure_logging

    configure_logging(level, process=f"worker:{name}")


def _setup_process(name: str, level: str) -> None:
    _set_log_level(name, level)
    # Ctrl-C on a terminal reaches the whole process group; the supervisor decides when the
    # worker stops (a Shutdown message, then SIGKILL after a grace period), so the worker
    # ignores SIGINT. SIGTERM keeps its default, end now: `systemctl kill` and people use it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGABRT from the supervisor's hang escalation prints every thread's stack to the log.
    faulthandler.enable()
    opencv_in_caller_thread()


def _serve(spec, channel: WorkerChannel) -> int:  # type: ignore[no-untyped-def]
    worker = spec.worker
    log.info(
        "worker starting",
        backend=worker.backend,
        model=worker.model,
        threads=worker.threads,
        pid=os.getpid(),
    )
    backend = make_backend(worker)
    started = time.perf_counter()
    try:
        backend.load()
        load_ms = (time.perf_counter() - started) * 1000.0
        detector = Detector(worker)
        warm = time.perf_counter()
        backend.warm_up()
        warmup_ms = (time.perf_counter() - warm) * 1000.0
    except (BackendError, OSError, ValueError) as exc:
        log.error("worker cannot start", reason=str(exc))
        channel.send(Error(str(exc), fatal=True))
        return EXIT_BOOT_ERROR
    channel.send(
        Ready(os.getpid(), backend.name, worker.model, backend.providers, load_ms, warmup_ms)
    )
    log.info("worker ready", load_ms=round(load_ms, 1), warmup_ms=round(warmup_ms, 1))
    runtime = WorkerRuntime(spec, backend, detector, channel)
    runtime.start()
    try:
        while True:
            message = channel.recv()
            if isinstance(message, Shutdown):
                return EXIT_OK
            if isinstance(message, StartStream):
                runtime.start_stream(message.stream)
            elif isinstance(message, UpdateStream):
                runtime.update_stream(message.stream)
            elif isinstance(message, StopStream):
                runtime.stop_stream(message.name)
            elif isinstance(message, SetLogLevel):
                _set_log_level(spec.worker.name, message.level)
                log.info("log level set", level=message.level)
    finally:
        runtime.stop()
        backend.close()
