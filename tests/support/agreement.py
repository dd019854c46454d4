"""How well two detectors agree on the same frames: boxes matched by label and IoU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Box = Sequence[float]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Agreement:
    reference: int  # boxes the reference found
    other: int  # boxes the other found
    matched: int  # pairs with the same label and IoU >= 0.5
    ious: list[float]
    offsets: list[float]  # largest corner difference of each matched pair, pixels

    @property
    def mean_iou(self) -> float:
        return sum(self.ious) / len(self.ious) if self.ious else 0.0

    def line(self) -> str:
        return (f"{self.matched} of {self.reference} reference boxes matched ({self.other} "
                f"found), mean IoU {self.mean_iou:.3f}, median corner offset "
                f"{sorted(self.offsets)[len(self.offsets) // 2] if self.offsets else 0:.1f} px")


def agree(
    reference: Sequence[Sequence[tuple[str, float, Box]]],
    other: Sequence[Sequence[tuple[str, float, Box]]],
) -> Agreement:
    """Greedy matching per frame, best IoU first, same label only."""
    result = Agreement(0, 0, 0, [], [])
    for ref_frame, other_frame in zip(reference, other, strict=True):
        result.reference += len(ref_frame)
        result.other += len(other_frame)
        pairs = sorted(
            ((iou(a[2], b[2]), i, j) for i, a in enumerate(ref_frame)
             for j, b in enumerate(other_frame) if a[0] == b[0]),
            reverse=True,
        )
        used_a: set[int] = set()
        used_b: set[int] = set()
        for value, i, j in pairs:
            if value < 0.5 or i in used_a or j in used_b:
                continue
            used_a.add(i)
            used_b.add(j)
            result.matched += 1
            result.ious.append(value)
            a, b = ref_frame[i][2], other_frame[j][2]
            result.offsets.append(max(abs(x - y) for x, y in zip(a, b, strict=True)))
    return result
