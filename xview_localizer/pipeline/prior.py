"""Time-indexed sample history behind the GNSS/odometry prior: a sorted buffer of stamped
samples (never pruned against its own newest stamp) and SE(2) interpolation between two samples.
Stamps are integer nanoseconds."""

from __future__ import annotations

import bisect
from typing import Any, Optional

from ..core.se2 import SE2, wrap_angle_rad


class TimeBuffer:
    """Samples sorted by ``stamp_ns``. Nothing is pruned against the newest stamp it holds (one
    sample stamped a day ahead must not evict good history): the owner prunes it against a
    reference clock with :meth:`prune_before`; ``max_items`` only bounds the memory."""

    def __init__(self, history_ns: int, max_items: int = 100_000) -> None:
        self.history_ns = history_ns
        self.max_items = max_items
        self.stamps: list[int] = []
        self.items: list[Any] = []

    def add(self, stamp_ns: int, item: Any) -> str:
        """Insert in time order: ``'in_order'`` (newest so far), ``'out_of_order'`` (older than
        the newest, inserted where it belongs) or ``'duplicate'`` (a sample with this stamp is
        already held: the new one is dropped)."""
        i = bisect.bisect_right(self.stamps, stamp_ns)
        if i > 0 and self.stamps[i - 1] == stamp_ns:
            return "duplicate"
        status = "in_order" if i == len(self.stamps) else "out_of_order"
        self.stamps.insert(i, stamp_ns)
        self.items.insert(i, item)
        if len(self.stamps) > self.max_items:
            del self.stamps[0]
            del self.items[0]
        return status

    def prune_before(self, cut_ns: int, keep_min: int = 2) -> None:
        """Drop samples stamped before ``cut_ns``, always keeping the newest ``keep_min``."""
        cut = min(bisect.bisect_left(self.stamps, cut_ns), max(len(self.stamps) - keep_min, 0))
        if cut > 0:
            del self.stamps[:cut]
            del self.items[:cut]

    def around(self, stamp_ns: int) -> tuple[Optional[int], Optional[int]]:
        """Indices of the last sample at/before and the first sample after ``stamp_ns``."""
        i = bisect.bisect_right(self.stamps, stamp_ns)
        before = i - 1 if i > 0 else None
        after = i if i < len(self.stamps) else None
        return before, after

    def __len__(self) -> int:
        return len(self.stamps)


def interp_se2(a: SE2, b: SE2, f: float) -> SE2:
    return SE2(a.x_m + f * (b.x_m - a.x_m), a.y_m + f * (b.y_m - a.y_m),
               a.yaw_rad + f * wrap_angle_rad(b.yaw_rad - a.yaw_rad))

