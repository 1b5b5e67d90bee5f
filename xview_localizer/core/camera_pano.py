"""Equirectangular (360 x 180 degree panorama) camera model, and lifting its pixels into the
vehicle's BEV frame with the same contracts as the pinhole functions of :mod:`camera`.

Camera frame: the **optical frame convention of camera.py** (z forward = the panorama's centre
column, x right, y down), so ``T_base_camera`` means the same thing for both models (for a
level panorama ``T_base_camera_from_xyz_rpy(x, y, height_m, 0, 0, 0)``).

Pixels (OpenCV convention, integer (u, v) = centre of pixel [v, u]; image ``W x H``, normally
``W = 2 H``): azimuth ``phi`` (positive to the right, i.e. clockwise seen from above) and
elevation ``theta`` (positive up)::

    phi_rad   = (u + 0.5) / W * 2 pi - pi          u = (W - 1) / 2  -> straight ahead
    theta_rad = pi / 2 - (v + 0.5) / H * pi        v = (H - 1) / 2  -> the horizon
    ray_cam   = (cos(theta) sin(phi), -sin(theta), cos(theta) cos(phi))   (unit)

This equals ``u = fx * phi + cx``, ``v = -fy * theta + cy`` with the "pseudo intrinsics"
``fx = W / (2 pi)``, ``fy = H / pi``, ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``
(:attr:`EquirectangularCamera.K`), which is what VIGOR samples store in ``PairSample.K``.

Plugging into the dense-flow matcher: ``matcher.dense_flow.bev_grid_for_camera`` calls
``lifting.bev_sampling_grid(camera, T, bev, ground_z_m=...)``; replace that call with
:func:`bev_sampling_grid_any` (same arguments, dispatches on the camera type). The output of
:func:`bev_sampling_grid` is converted by ``lifting.bev_sampling_grid_to_torch`` unchanged. Depth
for :func:`lift_depth` is the **range along the ray** (a panorama has no optical z).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .camera import PinholeCamera, _check_camera_above_ground, _check_T, _rotate
from .errors import CameraModelError, GeometryError
from .lifting import BevGrid
from .lifting import bev_sampling_grid as _pinhole_bev_sampling_grid

__all__ = [
    "EquirectangularCamera",
    "bev_sampling_grid",
    "bev_sampling_grid_any",
    "lift_depth",
    "lift_flat_ground",
]

_MIN_RAY_DOWN = 1e-12
_MIN_RANGE_M = 1e-9


def _as_uv(uv_px: np.ndarray) -> np.ndarray:
    uv = np.asarray(uv_px, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise GeometryError(f"uv_px must have shape (N, 2), got {uv.shape}")
    if not np.all(np.isfinite(uv)):
        raise GeometryError("uv_px has non-finite entries")
    return uv


@dataclass(frozen=True)
class EquirectangularCamera:
    """A full-sphere equirectangular panorama ``width_px x height_px`` (conventions above)."""

    width_px: int
    height_px: int

    def __post_init__(self) -> None:
        for name in ("width_px", "height_px"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) <= 0:
                raise CameraModelError(f"{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))

    @property
    def K(self) -> np.ndarray:
        """Pseudo intrinsics ``[[W/2pi, 0, (W-1)/2], [0, H/pi, (H-1)/2], [0, 0, 1]]``."""
        w, h = self.width_px, self.height_px
        return np.array([[w / (2 * math.pi), 0.0, (w - 1) / 2.0], [0.0, h / math.pi, (h - 1) / 2.0],
                         [0.0, 0.0, 1.0]])

    @classmethod
    def from_K(cls, width_px: int, height_px: int, K: np.ndarray) -> "EquirectangularCamera":
        """Check that ``K`` is this model's pseudo intrinsics for the size (tolerance 1e-6)."""
        cam = cls(width_px, height_px)
        k = np.asarray(K, float)
        if k.shape != (3, 3) or not np.allclose(k, cam.K, rtol=1e-6, atol=1e-6):
            raise CameraModelError(f"K is not the equirectangular pseudo intrinsics of {width_px}x{height_px}")
        return cam

    @property
    def size_px(self) -> tuple[int, int]:
        return (self.height_px, self.width_px)

    def in_image(self, uv_px: np.ndarray) -> np.ndarray:
        uv = _as_uv(uv_px)
        return ((uv[:, 0] >= -0.5) & (uv[:, 0] <= self.width_px - 0.5)
                & (uv[:, 1] >= -0.5) & (uv[:, 1] <= self.height_px - 0.5))

    def pixel_to_ray(self, uv_px: np.ndarray) -> np.ndarray:
        """``(N, 2)`` pixels -> ``(N, 3)`` unit rays in the optical frame (any finite pixel;
        u wraps around, v beyond the poles is not clamped)."""
        uv = _as_uv(uv_px)
        phi = (uv[:, 0] + 0.5) / self.width_px * 2.0 * math.pi - math.pi
        theta = math.pi / 2.0 - (uv[:, 1] + 0.5) / self.height_px * math.pi
        c = np.cos(theta)
        return np.column_stack((c * np.sin(phi), -np.sin(theta), c * np.cos(phi)))

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Optical-frame points ``(N, 3)`` -> ``uv_px (N, 2)`` (u in [-0.5, W - 0.5), v in
        [-0.5, H - 0.5]) and ``valid (N,)`` (finite, not at the camera centre; 0 otherwise)."""
        p = np.asarray(points_cam, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise GeometryError(f"points_cam must have shape (N, 3), got {p.shape}")
        finite = np.all(np.isfinite(p), axis=1)
        q = np.where(finite[:, None], p, 0.0)
        rng = np.linalg.norm(q, axis=1)
        valid = finite & (rng > _MIN_RANGE_M)
        phi = np.arctan2(q[:, 0], q[:, 2])  # [-pi, pi]
        theta = np.arctan2(-q[:, 1], np.hypot(q[:, 0], q[:, 2]))
        u = (phi + math.pi) / (2.0 * math.pi) * self.width_px - 0.5
        u = np.where(u >= self.width_px - 0.5, u - self.width_px, u)  # phi = +pi -> the left edge
        v = (math.pi / 2.0 - theta) / math.pi * self.height_px - 0.5
        uv = np.column_stack((u, v))
        uv[~valid] = 0.0
        return uv, valid


def lift_flat_ground(camera: EquirectangularCamera, T_base_camera: np.ndarray, uv_px: np.ndarray,
                     max_range_m: float = 100.0, ground_z_m: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Intersect the rays of panorama pixels with the plane ``z = ground_z_m`` of base_link.

    Same contract as :func:`lifting.lift_flat_ground`: ``xy_base_m (N, 2)``, ``valid (N,)``;
    pixels at or above the horizon or beyond ``max_range_m`` are invalid with xy = 0.
    """
    if not (math.isfinite(max_range_m) and max_range_m > 0.0):
        raise GeometryError(f"max_range_m must be finite and > 0, got {max_range_m!r}")
    r, t = _check_T(T_base_camera, "T_base_camera")
    _check_camera_above_ground(t, ground_z_m)
    rays = _rotate(r, camera.pixel_to_ray(uv_px))
    n = rays.shape[0]
    xy = np.zeros((n, 2))
    valid = rays[:, 2] < -_MIN_RAY_DOWN
    lam = np.zeros(n)
    lam[valid] = (ground_z_m - t[2]) / rays[valid, 2]
    off = lam[:, None] * rays[:, :2]
    valid &= np.hypot(off[:, 0], off[:, 1]) <= max_range_m
    xy[valid] = t[:2] + off[valid]
    return xy, valid


def lift_depth(camera: EquirectangularCamera, T_base_camera: np.ndarray, uv_px: np.ndarray,
               range_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lift panorama pixels with metric **range along the ray** ``range_m (N,)`` to base_link
    ``xy (N, 2)``; ranges <= 0 or non-finite are invalid (xy = 0)."""
    r, t = _check_T(T_base_camera, "T_base_camera")
    uv = _as_uv(uv_px)
    d = np.asarray(range_m, dtype=np.float64)
    if d.shape != (uv.shape[0],):
        raise GeometryError(f"range_m must have shape ({uv.shape[0]},) to match uv_px, got {d.shape}")
    valid = np.isfinite(d) & (d > 0.0)
    p = _rotate(r, np.where(valid, d, 0.0)[:, None] * camera.pixel_to_ray(uv)) + t
    xy = p[:, :2].copy()
    xy[~valid] = 0.0
    return xy, valid


def bev_sampling_grid(camera: EquirectangularCamera, T_base_camera: np.ndarray, bev: BevGrid,
                      ground_z_m: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Same contract as :func:`lifting.bev_sampling_grid`: for each BEV cell centre on the
    ground, its panorama pixel ``uv_px (H, W, 2)`` float32 and ``valid (H, W)``. Every ground
    point except the camera's own foot point is seen by a full panorama, so cells are invalid
    only there. (grid_sample does not wrap around the seam: the last half column blends with
    padding.) The algorithm is camera.py's, which only needs the camera's ``project`` and
    ``in_image``."""
    return _pinhole_bev_sampling_grid(camera, T_base_camera, bev, ground_z_m)


def bev_sampling_grid_any(camera: PinholeCamera | EquirectangularCamera, T_base_camera: np.ndarray,
                          bev: BevGrid, ground_z_m: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The BEV sampling grid of a pinhole or a panoramic camera (both provide ``project`` and
    ``in_image``, which is all :func:`lifting.bev_sampling_grid` uses)."""
    return _pinhole_bev_sampling_grid(camera, T_base_camera, bev, ground_z_m)
