"""Inference backends, chosen per worker in config. Imported only inside worker processes.

A backend creates its runtime (or device context) in the process that uses it, never before the
spawn: an accelerator context does not survive being inherited by another process.
"""

from __future__ import annotations

from edged.backends.base import Backend, BackendError
from edged.config.model import WorkerConfig


def make_backend(worker: WorkerConfig) -> Backend:
    """The backend named by the worker's config; imports its runtime lazily."""
    if worker.backend == "cpu":
        from edged.backends.cpu import CpuBackend

        return CpuBackend(worker)
    if worker.backend == "ascend":
        from edged.backends.ascend import AscendBackend

        return AscendBackend(worker)
    raise BackendError(f"backend {worker.backend!r} is not available in this build")


__all__ = ["Backend", "BackendError", "make_backend"]
