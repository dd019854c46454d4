"""A constant-velocity Kalman filter for boxes, vectorised over all tracks of a stream.

Runs in a worker process (pure numpy). The state of a box is [cx, cy, w, h, vx, vy, vw, vh] with
velocities in pixels per SECOND, so the filter works at any `detect_fps` and across skipped
frames: each step is given the time since the previous one. Noise is relative to the box's size
(ByteTrack's weights, 1/20 of the size for position and 1/160 for velocity per 1/30 s), and the
process noise grows with the time step like a random walk's.
"""

from __future__ import annotations

import numpy as np

# ByteTrack's weights, defined per frame at 30 frames/s.
_POS_WEIGHT = 1.0 / 20.0
_VEL_WEIGHT = 1.0 / 160.0
_REF_DT = 1.0 / 30.0

def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w, h], axis=1)


def cxcywh_to_xyxy(state: np.ndarray) -> np.ndarray:
    half_w = np.maximum(state[:, 2], 1.0) / 2
    half_h = np.maximum(state[:, 3], 1.0) / 2
    return np.stack(
        [state[:, 0] - half_w, state[:, 1] - half_h, state[:, 0] + half_w, state[:, 1] + half_h],
        axis=1,
    )


def _sizes(state: np.ndarray) -> np.ndarray:
    """Per-track scale for each of the 4 measured components: width for x and w, height for y, h."""
    w = np.maximum(state[:, 2], 1.0)
    h = np.maximum(state[:, 3], 1.0)
    return np.stack([w, h, w, h], axis=1)


class BoxFilter:
    """States and covariances of N boxes; rows are added, dropped and updated together."""

    def __init__(self) -> None:
        self.x = np.zeros((0, 8))
        self.p = np.zeros((0, 8, 8))

    def __len__(self) -> int:
        return len(self.x)

    def add(self, boxes: np.ndarray) -> None:
        """Start filters at these measured boxes (xyxy), at rest."""
        z = xyxy_to_cxcywh(boxes)
        x = np.hstack([z, np.zeros_like(z)])
        size = _sizes(z)
        pos_std = 2 * _POS_WEIGHT * size
        vel_std = 10 * _VEL_WEIGHT * size / _REF_DT
        p = np.zeros((len(z), 8, 8))
        diag = np.hstack([pos_std, vel_std]) ** 2
        idx = np.arange(8)
        p[:, idx, idx] = diag
        self.x = np.vstack([self.x, x])
        self.p = np.concatenate([self.p, p])

    def keep(self, mask: np.ndarray) -> None:
        self.x = self.x[mask]
        self.p = self.p[mask]

    def predict(self, dt: float, frozen: np.ndarray | None = None) -> None:
        """Advance every filter by `dt` seconds; `frozen` rows (stationary objects) do not move."""
        if not len(self.x) or dt <= 0:
            return
        f = np.eye(8)
        f[:4, 4:] = np.eye(4) * dt
        if frozen is not None and frozen.any():
            self.x[frozen, 4:] = 0.0
        self.x = self.x @ f.T
        self.x[:, 2:4] = np.maximum(self.x[:, 2:4], 1.0)
        steps = dt / _REF_DT
        size = _sizes(self.x)
        q = np.hstack([(_POS_WEIGHT * size) ** 2, (_VEL_WEIGHT * size / _REF_DT) ** 2]) * steps
        self.p = f @ self.p @ f.T
        idx = np.arange(8)
        self.p[:, idx, idx] += q

    def update(self, rows: np.ndarray, boxes: np.ndarray) -> None:
        """Correct the filters in `rows` with their measured boxes (xyxy); the measurement is
        the first four state components."""
        if not len(rows):
            return
        z = xyxy_to_cxcywh(boxes)
        x = self.x[rows]
        p = self.p[rows]
        r = (_POS_WEIGHT * _sizes(x)) ** 2
        s = p[:, :4, :4].copy()
        idx = np.arange(4)
        s[:, idx, idx] += r
        gain = p[:, :, :4] @ np.linalg.inv(s)  # (M, 8, 4)
        innovation = z - x[:, :4]
        self.x[rows] = x + np.einsum("mij,mj->mi", gain, innovation)
        self.p[rows] = p - gain @ p[:, :4, :]

    def boxes(self) -> np.ndarray:
        return cxcywh_to_xyxy(self.x)

    def speeds(self) -> np.ndarray:
        """Centre speed in pixels per second."""
        return np.hypot(self.x[:, 4], self.x[:, 5])

