"""Geometry shared by the world generator: polyline helpers, oriented rectangles and the
sub-pixel rasteriser :class:`_Painter`.

Conventions: points are world-frame metres (ENU, x east, y north), polylines ``(N, 2)``
arrays, arc lengths ``s`` in metres from the first vertex. :class:`_Painter` maps metres to the
pixels of a north-up raster centred on the world with the pixel-centre convention of
:class:`xview_localizer.sim.world_model.RasterGeoref` (``u = (x + size/2) / m_per_px - 0.5``),
in cv2 fixed point with ``_SHIFT`` fractional bits (``_SCALE`` = 2^_SHIFT).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

_SHIFT = 3  # cv2 fixed-point bits for sub-pixel drawing
_SCALE = 1 << _SHIFT


def _arclength(p: np.ndarray) -> np.ndarray:
    d = np.hypot(*np.diff(p, axis=0).T)
    return np.concatenate([[0.0], np.cumsum(d)])


def _resample(p: np.ndarray, step_m: float) -> np.ndarray:
    s = _arclength(p)
    n = max(2, int(math.ceil(s[-1] / step_m)) + 1)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, p[:, 0]), np.interp(t, s, p[:, 1])], axis=1)


def _tangents(p: np.ndarray) -> np.ndarray:
    t = np.gradient(p, axis=0)
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def _left_normals(p: np.ndarray) -> np.ndarray:
    t = _tangents(p)
    return np.stack([-t[:, 1], t[:, 0]], axis=1)


def _point_at(p: np.ndarray, s_cum: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Point and unit tangent at arc length ``s`` (clamped)."""
    s = float(np.clip(s, 0.0, s_cum[-1]))
    i = int(np.clip(np.searchsorted(s_cum, s) - 1, 0, len(p) - 2))
    seg = p[i + 1] - p[i]
    L = max(float(np.hypot(*seg)), 1e-12)
    f = (s - s_cum[i]) / L
    return p[i] + f * seg, seg / L


class _Painter:
    """Draws world-metre geometry into rasters of the world georef (sub-pixel, cv2)."""

    def __init__(self, size_m: float, m_per_px: float) -> None:
        self.h = size_m / 2.0
        self.res = m_per_px
        self.n = int(round(size_m / m_per_px))
        self.aa: set[int] = set()  # ids of single-channel images drawn anti-aliased

    def lt(self, img: np.ndarray) -> int:
        """Anti-aliased lines for colour images (and flagged masks), hard edges for class maps."""
        return cv2.LINE_AA if (img.ndim == 3 or id(img) in self.aa) else cv2.LINE_8

    def px(self, xy_m: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy_m, float)
        u = (xy[..., 0] + self.h) / self.res - 0.5
        v = (self.h - xy[..., 1]) / self.res - 0.5
        return np.round(np.stack([u, v], axis=-1) * _SCALE).astype(np.int32)

    def thick(self, width_m: float) -> int:
        return max(1, int(round(width_m / self.res)))

    def polyline(self, imgs, colours, p_m: np.ndarray, width_m: float) -> None:
        pts = [self.px(p_m)]
        for img, col in zip(imgs, colours):
            cv2.polylines(img, pts, False, col, self.thick(width_m), self.lt(img), _SHIFT)

    def segments(self, imgs, colours, a_m: np.ndarray, b_m: np.ndarray, width_m: float) -> None:
        if len(a_m) == 0:
            return
        pa, pb = self.px(a_m), self.px(b_m)
        pts = [np.stack([pa[i], pb[i]]) for i in range(len(pa))]
        for img, col in zip(imgs, colours):
            cv2.polylines(img, pts, False, col, self.thick(width_m), self.lt(img), _SHIFT)

    def polygons(self, imgs, colours, polys_m: list) -> None:
        if not polys_m:
            return
        pts = [self.px(p) for p in polys_m]
        for img, col in zip(imgs, colours):
            cv2.fillPoly(img, pts, col, self.lt(img), _SHIFT)

    def circles(self, imgs, colours, centres_m: np.ndarray, radii_m: np.ndarray) -> None:
        c = self.px(centres_m)
        for (u, v), r in zip(c, radii_m):
            rp = int(round(r / self.res * _SCALE))
            for img, col in zip(imgs, colours):
                cv2.circle(img, (int(u), int(v)), rp, col, -1, self.lt(img), _SHIFT)


def _rect(c: np.ndarray, t: np.ndarray, n: np.ndarray, half_t: float, half_n: float) -> np.ndarray:
    return np.array([c + half_t * t + half_n * n, c - half_t * t + half_n * n,
                     c - half_t * t - half_n * n, c + half_t * t - half_n * n])


def _ccw(poly: np.ndarray) -> np.ndarray:
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
    return poly if area > 0 else poly[::-1].copy()
