"""Debounced per-label counts: a change is published once it has lasted `hold_s`.

Runs in a worker process (per stream, after the tracker). The raw value it is fed is already
smoothed by the tracker (an object missed for a frame is still counted until it is lost); the
hold time keeps a count or a presence from flapping with detector noise on top of that.

A label's raw count must differ from the published one for `hold_s` without a break; then the
value of that moment is published. A count that flickers back to the published value resets the
wait (noise), while one that keeps moving (a busy road: 5, 6, 7, 6 ...) is still published every
`hold_s` with its latest value, instead of never because no single value held.
"""

from __future__ import annotations


class HeldCounts:
    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.published: dict[str, int] = {}
        self._differs_since: dict[str, float] = {}

    def feed(self, raw: dict[str, int], t: float) -> bool:
        """Take the raw counts of a frame at `t`; True when the published counts changed."""
        changed = False
        for label in set(raw) | set(self.published):
            value = raw.get(label, 0)
            if value == self.published.get(label, 0):
                self._differs_since.pop(label, None)
                continue
            since = self._differs_since.setdefault(label, t)
            if t - since >= self.hold_s:
                self.published[label] = value
                del self._differs_since[label]
                changed = True
        return changed

    def reset(self) -> None:
        self.published.clear()
        self._differs_since.clear()
