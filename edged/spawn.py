"""The target a worker process is spawned with: the one place the supervisor names the worker.

`multiprocessing`'s spawn pickles a process target by module path, so the supervisor must import
the module that holds it. This module is that target and nothing else: it imports the worker stack
(numpy, OpenCV, ONNX Runtime, `edged.worker`) inside the function, which only ever runs in the
spawned child. The supervisor therefore never loads any of it (a test inspects a running
supervisor's `sys.modules`). A crash in the worker is the worker's: this function never returns.
"""

from __future__ import annotations

import socket


def worker_process(sock: socket.socket, spec_data: bytes) -> None:
    """Runs in the spawned child: import the worker stack there, then run the worker."""
    from edged.worker.main import worker_main

    worker_main(sock, spec_data)
