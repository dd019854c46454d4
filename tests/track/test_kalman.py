"""The box filter against the textbook 8x8 constant-velocity Kalman filter, step for step."""

from __future__ import annotations

import numpy as np

from edged.track.kalman import BoxFilter, xyxy_to_cxcywh

POS, VEL, REF_DT = 1.0 / 20.0, 1.0 / 160.0, 1.0 / 30.0  # ByteTrack's weights, as kalman.py


def _sizes(x: np.ndarray) -> np.ndarray:
    w, h = np.maximum(x[:, 2], 1.0), np.maximum(x[:, 3], 1.0)
    return np.stack([w, h, w, h], axis=1)


class FullFilter:
    """x' = F x, P' = F P F^T + Q; K = P H^T (H P H^T + R)^-1 with whole matrices."""

    def __init__(self) -> None:
        self.x = np.zeros((0, 8))
        self.p = np.zeros((0, 8, 8))

    def add(self, boxes: np.ndarray) -> None:
        z = xyxy_to_cxcywh(boxes)
        size = _sizes(z)
        p = np.zeros((len(z), 8, 8))
        i = np.arange(8)
        p[:, i, i] = np.hstack([2 * POS * size, 10 * VEL * size / REF_DT]) ** 2
        self.x = np.vstack([self.x, np.hstack([z, np.zeros_like(z)])])
        self.p = np.concatenate([self.p, p])

    def predict(self, dt: float, frozen: np.ndarray) -> None:
        f = np.eye(8)
        f[:4, 4:] = np.eye(4) * dt
        self.x[frozen, 4:] = 0.0
        self.x = self.x @ f.T
        self.x[:, 2:4] = np.maximum(self.x[:, 2:4], 1.0)
        size = _sizes(self.x)
        q = np.hstack([(POS * size) ** 2, (VEL * size / REF_DT) ** 2]) * (dt / REF_DT)
        i = np.arange(8)
        self.p = f @ self.p @ f.T
        self.p[:, i, i] += q

    def update(self, rows: np.ndarray, boxes: np.ndarray) -> None:
        h = np.hstack([np.eye(4), np.zeros((4, 4))])
        x, p = self.x[rows], self.p[rows]
        s = h @ p @ h.T + np.stack([np.diag(r) for r in (POS * _sizes(x)) ** 2])
        gain = p @ h.T @ np.linalg.inv(s)
        innovation = xyxy_to_cxcywh(boxes) - x[:, :4]
        self.x[rows] = x + np.einsum("mij,mj->mi", gain, innovation)
        self.p[rows] = p - gain @ h @ p


def test_the_box_filter_is_the_full_kalman_filter() -> None:
    rng = np.random.default_rng(3)
    ours, full = BoxFilter(), FullFilter()
    start = np.array([[100, 100, 160, 220], [600, 300, 700, 360], [10, 400, 30, 470.0]])
    ours.add(start)
    full.add(start)
    for step in range(60):
        dt = float(rng.uniform(0.02, 0.4))
        frozen = rng.random(len(ours)) < 0.1
        ours.predict(dt, frozen)
        full.predict(dt, frozen)
        rows = np.flatnonzero(rng.random(len(ours)) < 0.8)
        if not len(rows):
            continue
        measured = ours.boxes()[rows] + rng.normal(0, 3, (len(rows), 4))
        ours.update(rows, measured)
        full.update(rows, measured)
        if step % 20 == 10:  # a new box joins, an old one leaves
            box = np.array([[400.0, 50.0, 450.0, 150.0]])
            ours.add(box)
            full.add(box)
            keep = np.arange(len(ours)) != 0
            ours.keep(keep)
            full.x, full.p = full.x[keep], full.p[keep]
        np.testing.assert_allclose(ours.x, full.x, rtol=1e-9, atol=1e-6)
        # the covariance: the 2x2 block of each component, and nothing outside those blocks
        for c in range(4):
            np.testing.assert_allclose(ours.pp[:, c], full.p[:, c, c], rtol=1e-9)
            np.testing.assert_allclose(ours.pv[:, c], full.p[:, c, c + 4], rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(ours.vv[:, c], full.p[:, c + 4, c + 4], rtol=1e-9)
        blocks = np.zeros((8, 8), bool)
        for c in range(4):
            blocks[[c, c, c + 4, c + 4], [c, c + 4, c, c + 4]] = True
        assert np.abs(full.p[:, ~blocks]).max(initial=0.0) < 1e-9
