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
    """States and covariances of N boxes; rows are added, dropped and updated together.

    The covariance is kept as what it is, four independent 2x2 blocks per box: each measured
    component (cx, cy, w, h) is coupled only with its own velocity, because F, Q, R and the
    starting covariance never mix components. So `pp`, `pv` and `vv` ([N, 4] each) are the
    position variance, position-velocity covariance and velocity variance of every component,
    and a step is a few elementwise operations instead of batched 8x8 products and 4x4
    inversions (the same numbers; tests/track/test_kalman.py checks it against the full 8x8
    filter). This runs for every frame of every tracked stream.
    """

    def __init__(self) -> None:
        self.x = np.zeros((0, 8))
        self.pp = np.zeros((0, 4))
        self.pv = np.zeros((0, 4))
        self.vv = np.zeros((0, 4))

    def __len__(self) -> int:
        return len(self.x)

    def add(self, boxes: np.ndarray) -> None:
        """Start filters at these measured boxes (xyxy), at rest."""
        z = xyxy_to_cxcywh(boxes)
        size = _sizes(z)
        self.x = np.vstack([self.x, np.hstack([z, np.zeros_like(z)])])
        self.pp = np.vstack([self.pp, (2 * _POS_WEIGHT * size) ** 2])
        self.pv = np.vstack([self.pv, np.zeros_like(z)])
        self.vv = np.vstack([self.vv, (10 * _VEL_WEIGHT / _REF_DT * size) ** 2])

    def keep(self, mask: np.ndarray) -> None:
        self.x = self.x[mask]
        self.pp, self.pv, self.vv = self.pp[mask], self.pv[mask], self.vv[mask]

    def predict(self, dt: float, frozen: np.ndarray | None = None) -> None:
        """Advance every filter by `dt` seconds; `frozen` rows (stationary objects) do not move."""
        if not len(self.x) or dt <= 0:
            return
        x = self.x
        if frozen is not None and frozen.any():
            x[frozen, 4:] = 0.0
        x[:, :4] += dt * x[:, 4:]
        np.maximum(x[:, 2:4], 1.0, out=x[:, 2:4])
        # P' = F P F^T + Q per component, F = [[1, dt], [0, 1]]
        pv, vv = self.pv, self.vv
        self.pp += dt * (2.0 * pv + dt * vv)
        pv += dt * vv
        size2 = _sizes(x) ** 2
        steps = dt / _REF_DT
        self.pp += (_POS_WEIGHT**2 * steps) * size2
        vv += ((_VEL_WEIGHT / _REF_DT) ** 2 * steps) * size2

    def update(self, rows: np.ndarray, boxes: np.ndarray) -> None:
        """Correct the filters in `rows` with their measured boxes (xyxy); the measurement is
        the first four state components."""
        if not len(rows):
            return
        z = xyxy_to_cxcywh(boxes)
        x = self.x[rows]
        pp, pv, vv = self.pp[rows], self.pv[rows], self.vv[rows]
        s = pp + (_POS_WEIGHT * _sizes(x)) ** 2  # innovation variance
        k_pos, k_vel = pp / s, pv / s  # the gain for the position and for the velocity
        innovation = z - x[:, :4]
        x[:, :4] += k_pos * innovation
        x[:, 4:] += k_vel * innovation
        self.x[rows] = x
        # P' = (I - K H) P
        self.vv[rows] = vv - k_vel * pv
        self.pv[rows] = pv - k_pos * pv
        self.pp[rows] = pp - k_pos * pp

    def boxes(self) -> np.ndarray:
        return cxcywh_to_xyxy(self.x)

    def speeds(self) -> np.ndarray:
        """Centre speed in pixels per second."""
        return np.hypot(self.x[:, 4], self.x[:, 5])
