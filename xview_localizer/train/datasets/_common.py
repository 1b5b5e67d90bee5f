"""Helpers shared by the benchmark loaders (KITTI cross-view, VIGOR)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...core.errors import DatasetError
from ...core.geo import LocalEnu

__all__ = ["read_rgb", "shift_patch", "offset_latlon", "sample_rng", "split_lines"]


def read_rgb(path: Path, where: str = "") -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB of ``path``; :class:`DatasetError` naming it (and ``where``,
    e.g. the split file and line that referenced it) when it is missing or unreadable."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        ref = f" (referenced by {where})" if where else ""
        raise DatasetError(f"{path}: missing or unreadable image{ref}")
    return np.ascontiguousarray(img[:, :, ::-1])


def shift_patch(img: np.ndarray, du_px: float, dv_px: float) -> np.ndarray:
    """Translate a north-up image by ``(du_px, dv_px)`` (content moves right/down), bilinear,
    same size, black where no source pixel exists: ``out[v + dv, u + du] = img[v, u]``."""
    import cv2

    h, w = img.shape[:2]
    m = np.array([[1.0, 0.0, du_px], [0.0, 1.0, dv_px]])
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


def offset_latlon(lat_deg: float, lon_deg: float, east_m: float, north_m: float) -> tuple[float, float]:
    """The WGS84 position ``(east_m, north_m)`` away from ``(lat_deg, lon_deg)`` (local ENU)."""
    lat, lon = LocalEnu(float(lat_deg), float(lon_deg)).inverse(east_m, north_m)
    return float(lat), float(lon)


def sample_rng(seed: int, index: int, salt: int) -> np.random.Generator:
    """Deterministic per-sample generator (independent of iteration order and workers)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), int(salt)])


def split_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Non-empty lines of a split file as ``(lineno, fields)`` (whitespace separated)."""
    if not path.is_file():
        raise DatasetError(f"{path}: split file missing")
    out = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            fields = line.split()
            if fields:
                out.append((lineno, fields))
    return out


def parse_float(text: str, where: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise DatasetError(f"{where}: {name} {text!r} is not a number") from exc
    if not math.isfinite(v):
        raise DatasetError(f"{where}: {name} {text!r} is not finite")
    return v


def normalize_index(index: object, n: int) -> int:
    """A sequence index (negative allowed) checked against ``n`` samples -> ``0 <= i < n``."""
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    if not -n <= index < n:
        raise IndexError(f"sample index {index} out of range for {n} samples")
    return int(index) % n
