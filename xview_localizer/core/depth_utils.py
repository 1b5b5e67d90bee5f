"""Depth maps at the edge, ROS-free: fit a depth map to its image and pair depth with images
by stamp. Shared by the offline replay (:mod:`xview_localizer.evaluation.replay`) and the node
(:mod:`xview_localizer.ros.node`), so both give the core the same depth for the same inputs.

Conventions: a depth map is (H, W) float32 metres of optical z (the camera's forward axis, as
in ROS depth images), NaN = unknown. Stamps are integer nanoseconds (``stamp_ns``).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Optional

import numpy as np

from .errors import GeometryError

__all__ = ["DEFAULT_DEPTH_TOLERANCE_S", "DepthBuffer", "fit_depth_to_image", "resize_depth_nearest"]

#: Largest |depth stamp - image stamp| for a depth map to be used with an image.
DEFAULT_DEPTH_TOLERANCE_S = 0.05


def resize_depth_nearest(depth_m: np.ndarray, height_px: int, width_px: int) -> np.ndarray:
    """Resize a depth map to ``height_px`` x ``width_px`` with nearest-neighbour sampling
    (never blends depths across edges or holes; NaN stays NaN).

    Pixel centres are aligned: output pixel (r, c) takes input pixel
    (floor((r + 0.5) h / H), floor((c + 0.5) w / W)) of the (h, w) input.

    Returns:
        (height_px, width_px) float32 (the input itself, as float32, when the size matches).

    Raises:
        GeometryError: a depth map that is not a non-empty 2-D numeric array, or a target size
            that is not positive.
    """
    d = np.asarray(depth_m)
    if d.ndim != 2 or d.size == 0 or not np.issubdtype(d.dtype, np.number):
        raise GeometryError(f"depth map must be a non-empty (H, W) numeric array, got shape {d.shape} {d.dtype}")
    height_px, width_px = int(height_px), int(width_px)
    if height_px <= 0 or width_px <= 0:
        raise GeometryError(f"depth target size must be positive, got {width_px}x{height_px}")
    d = d.astype(np.float32, copy=False)
    h, w = d.shape
    if (h, w) == (height_px, width_px):
        return d
    rows = np.minimum(((np.arange(height_px) + 0.5) * h / height_px).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width_px) + 0.5) * w / width_px).astype(np.int64), w - 1)
    return np.ascontiguousarray(d[rows[:, None], cols[None, :]])


def fit_depth_to_image(depth_m: np.ndarray, image_shape: tuple[int, ...]) -> tuple[np.ndarray, bool]:
    """The depth map at the image's (H, W) (``image_shape`` as ``rgb.shape``): (depth, resized)."""
    height_px, width_px = int(image_shape[0]), int(image_shape[1])
    resized = tuple(np.shape(depth_m)) != (height_px, width_px)
    return resize_depth_nearest(depth_m, height_px, width_px), resized


class DepthBuffer:
    """The most recent depth maps by stamp (thread-safe): :meth:`add` from a subscriber or a
    bag reader, :meth:`nearest` for an image stamp.

    Args:
        max_items: how many depth maps are kept (oldest dropped first).
    """

    def __init__(self, max_items: int = 8) -> None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise GeometryError(f"DepthBuffer.max_items must be an int >= 1, got {max_items!r}")
        self._lock = threading.Lock()
        self._items: deque[tuple[int, np.ndarray]] = deque(maxlen=max_items)

    def add(self, stamp_ns: int, depth_m: np.ndarray) -> None:
        with self._lock:
            self._items.append((int(stamp_ns), depth_m))

    def latest_stamp_ns(self) -> Optional[int]:
        with self._lock:
            return max((s for s, _ in self._items), default=None)

    def nearest(self, stamp_ns: int, tolerance_s: float = DEFAULT_DEPTH_TOLERANCE_S) -> Optional[np.ndarray]:
        """The depth map whose stamp is nearest ``stamp_ns`` within ``tolerance_s`` (the earlier
        one on a tie), or None."""
        tol_ns = int(round(float(tolerance_s) * 1e9))
        with self._lock:
            best = None
            for s, d in self._items:
                dt = abs(s - int(stamp_ns))
                if dt <= tol_ns and (best is None or dt < best[0] or (dt == best[0] and s < best[1])):
                    best = (dt, s, d)
        return None if best is None else best[2]

    def drop_before(self, stamp_ns: int) -> None:
        """Forget depth maps stamped before ``stamp_ns``."""
        with self._lock:
            keep = [(s, d) for s, d in self._items if s >= stamp_ns]
            self._items.clear()
            self._items.extend(keep)
