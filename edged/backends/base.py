"""The small interface every inference backend implements. Runs in worker processes."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class BackendError(Exception):
    """The runtime, device or model cannot be used: the worker exits with EXIT_BOOT_ERROR."""


class Backend(Protocol):
    name: str
    providers: tuple[str, ...]

    def load(self) -> None:
        """Create the runtime and load the model, in this process. Raises BackendError."""

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the model on one preprocessed input; safe to call from several threads."""

    def close(self) -> None:
        """Release the runtime (and device context)."""
