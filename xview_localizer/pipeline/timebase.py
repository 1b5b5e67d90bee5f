"""The reference clock inputs are checked against (ROS-free).

ROS stamps should be in the node's clock (ROS time, or ``/clock`` with ``use_sim_time``), but
drivers that stamp with a device clock exist. :class:`StampReference` follows the recent input
stamps: the reference is the node clock plus the LOW median of the offsets ``stamp - clock`` of
the last ``window`` input messages (images, fixes, odometry, all together). A few messages from a
receiver with a bad clock (a day ahead, a week-rollover bug) cannot move it, so they are rejected
on their own; a whole stream on another time base moves it, so nothing is rejected for that alone
(the offset is reported as ``clock_offset_s``). Before ``min_samples`` messages there is no
reference (nothing is rejected for its stamp). A clock of 0 (``use_sim_time`` before the first
``/clock``) works the same way: the reference is then the median recent stamp.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Optional

__all__ = ["StampReference"]


class StampReference:
    """See the module docstring. Thread-safe."""

    def __init__(self, window: int = 31, min_samples: int = 3) -> None:
        if window < 1 or not 1 <= min_samples <= window:
            raise ValueError(f"StampReference needs window >= min_samples >= 1, got {window}, {min_samples}")
        self.min_samples = min_samples
        self._offsets_ns: deque[int] = deque(maxlen=window)
        self._lock = threading.Lock()

    def observe(self, stamp_ns: int, clock_ns: int) -> None:
        """Record one input message's stamp against the node clock at its arrival."""
        with self._lock:
            self._offsets_ns.append(int(stamp_ns) - int(clock_ns))

    def offset_ns(self) -> Optional[int]:
        """The low median of the recent ``stamp - clock`` offsets, None before ``min_samples``."""
        with self._lock:
            if len(self._offsets_ns) < self.min_samples:
                return None
            ordered = sorted(self._offsets_ns)
        return ordered[(len(ordered) - 1) // 2]

    def reference_ns(self, clock_ns: int) -> Optional[int]:
        """The reference clock now (``clock_ns`` + :meth:`offset_ns`), or None."""
        offset = self.offset_ns()
        return None if offset is None else int(clock_ns) + offset

    def clear(self) -> None:
        with self._lock:
            self._offsets_ns.clear()
