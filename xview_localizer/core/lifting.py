"""Image pixels -> the vehicle's BEV frame: lifting onto flat ground or with a depth map, the
Sim(2) of a camera-centred solution, and the BEV sampling grid of the dense-flow matcher.

Conventions are :mod:`.camera`'s: optical frame z forward / x right / y down; ``base_link`` x
forward / y left / z up with the ground plane ``z = ground_z_m``; ``T_base_camera`` (4, 4) maps
optical points into ``base_link``; pixels (u, v) with integer values at pixel centres; invalid
outputs are flagged in a boolean ``valid`` array and set to 0, never NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .camera import (
    _MIN_RAY_DOWN,
    DepthKind,
    PinholeCamera,
    _as_uv,
    _check_camera_above_ground,
    _check_T,
    _rotate,
)
from .errors import GeometryError
from .se2 import SE2, Sim2

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "BevGrid",
    "T_patch_base_from_camera_centred",
    "bev_sampling_grid",
    "bev_sampling_grid_to_torch",
    "lift_depth",
    "lift_flat_ground",
]

# --------------------------------------------------------------------------------------------
# Lifting
# --------------------------------------------------------------------------------------------
def lift_flat_ground(
    camera: PinholeCamera,
    T_base_camera: np.ndarray,
    uv_px: np.ndarray,
    max_range_m: float = 100.0,
    ground_z_m: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Intersect the viewing rays of distorted pixels with the ground plane ``z = ground_z_m``.

    Args:
        camera: the camera model.
        T_base_camera: 4x4, optical frame -> base_link; the camera must be above the ground.
        uv_px: (N, 2) distorted pixels.
        max_range_m: intersections further than this horizontally from the camera's ground
            projection are invalid.
        ground_z_m: ground height in base_link.

    Returns:
        ``xy_base_m (N, 2)`` the ground points in base_link, and ``valid (N,)``. A pixel is
        invalid when it is at or above the horizon (the ray does not go down), its intersection
        is beyond ``max_range_m``, or it lies outside the invertible part of the distortion
        model. Invalid rows are 0 (never NaN, never a point behind the camera).
    """
    if not (math.isfinite(max_range_m) and max_range_m > 0.0):
        raise GeometryError(f"max_range_m must be finite and > 0, got {max_range_m!r}")
    r, t = _check_T(T_base_camera, "T_base_camera")
    _check_camera_above_ground(t, ground_z_m)
    xy_n, ok = camera.undistort_checked(uv_px)
    n = xy_n.shape[0]
    xy = np.zeros((n, 2), dtype=np.float64)
    if n == 0:
        return xy, np.zeros(0, dtype=bool)
    rays_base = _rotate(r, np.column_stack((xy_n, np.ones(n))))  # optical z = 1 per ray
    down = rays_base[:, 2] < -_MIN_RAY_DOWN
    valid = ok & down
    lam = np.zeros(n)
    lam[valid] = (ground_z_m - t[2]) / rays_base[valid, 2]  # > 0: camera above ground
    offset = lam[:, None] * rays_base[:, :2]
    valid &= np.hypot(offset[:, 0], offset[:, 1]) <= max_range_m
    xy[valid] = t[:2] + offset[valid]
    return xy, valid


def lift_depth(
    camera: PinholeCamera,
    T_base_camera: np.ndarray,
    uv_px: np.ndarray,
    depth: np.ndarray,
    kind: DepthKind = "metric",
) -> tuple[np.ndarray, np.ndarray]:
    """Lift distorted pixels with known depth to BEV ``xy`` (the z component is dropped).

    ``depth (N,)`` is the optical **z** of each pixel's point (what ROS depth images store), not
    the distance along the ray. The optical-frame point is ``p_cam = z * (x_n, y_n, 1)`` with
    ``(x_n, y_n)`` the undistorted normalized pixel.

    ``kind``:
      * ``'metric'``: z in metres. Returns the points in base_link:
        ``xy = (R @ p_cam + t)[:2]``.
      * ``'relative'``: z is metric depth times an unknown scale ``1 / s`` (true z = ``s * z``).
        Returns **camera-centred** BEV points ``xy = (R @ p_cam)[:2]``: base_link axes, origin
        at the camera centre, in relative units. The true base_link point is
        ``s * xy + camera_xy_base_m(T_base_camera)``. Solving Sim(2) from these points to the
        patch gives scale ``s`` directly; :func:`T_patch_base_from_camera_centred` turns that
        solution into ``T_patch_base``. (Lifting the scaled point with the full ``T_base_camera``
        would mix metric and relative units whenever the camera is not above base_link's
        origin, and no Sim(2) could absorb the unknown scale.)
      * ``'inverse'``: the value is inverse relative depth (``1 / z``, e.g. a disparity-like
        network output); lifted like ``'relative'`` with ``z = 1 / value``.

    Returns ``xy (N, 2)`` and ``valid (N,)``; depth values that are <= 0, NaN or inf, and pixels
    outside the invertible part of the distortion model, are invalid with ``xy = 0``.
    """
    if kind not in ("metric", "relative", "inverse"):
        raise GeometryError(f"kind must be 'metric', 'relative' or 'inverse', got {kind!r}")
    r, t = _check_T(T_base_camera, "T_base_camera")
    uv = _as_uv(uv_px)
    z = np.asarray(depth, dtype=np.float64)
    if z.shape != (uv.shape[0],):
        raise GeometryError(f"depth must have shape ({uv.shape[0]},) to match uv_px, got {z.shape}")
    good = np.isfinite(z) & (z > 0.0)
    z = np.where(good, z, 1.0)
    if kind == "inverse":
        with np.errstate(over="ignore", divide="ignore"):
            z = 1.0 / z
        good &= np.isfinite(z) & (z > 0.0)
        z = np.where(good, z, 1.0)
    xy_n, ok = camera.undistort_checked(uv)
    valid = good & ok
    p_cam = z[:, None] * np.column_stack((xy_n, np.ones(uv.shape[0])))
    p_rot = _rotate(r, p_cam)
    xy = p_rot[:, :2] + (t[:2] if kind == "metric" else 0.0)
    valid &= np.all(np.isfinite(xy), axis=1)
    xy[~valid] = 0.0
    return xy, valid


def T_patch_base_from_camera_centred(
    S_patch_cc: Sim2, camera_xy_base: np.ndarray
) -> tuple[SE2, float]:
    """Turn a Sim(2) solved on camera-centred relative-depth points into ``T_patch_base``.

    ``S_patch_cc`` maps camera-centred BEV points (from :func:`lift_depth` with ``'relative'``
    or ``'inverse'``) into the patch frame: ``dst = s R src + t``. With the true base point
    ``b = s * src + c`` (``c = camera_xy_base``), ``dst = R b + (t - R c)``. Returns
    ``(T_patch_base, s)``, ``s`` being metres per relative depth unit.
    """
    c = np.asarray(camera_xy_base, dtype=np.float64)
    if c.shape != (2,) or not np.all(np.isfinite(c)):
        raise GeometryError(f"camera_xy_base must be a finite (2,) array, got {c!r}")
    rot = S_patch_cc.rotation_matrix()
    trans = S_patch_cc.translation_m - rot @ c
    return SE2(trans[0], trans[1], S_patch_cc.yaw_rad), S_patch_cc.scale


# --------------------------------------------------------------------------------------------
# BEV grid
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BevGrid:
    """A top-down grid in base_link, forward-up, vehicle (base_link origin) at the grid centre.

    ``size_px = (H, W)``; cell ``(u, v)`` (column, row) has its centre at
    ``x_base_m = ((H - 1) / 2 - v) * m_per_px`` (forward = up) and
    ``y_base_m = ((W - 1) / 2 - u) * m_per_px`` (left = left).
    """

    size_px: tuple[int, int]
    m_per_px: float

    def __post_init__(self) -> None:
        size = tuple(self.size_px)
        if len(size) != 2 or any(
            isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in size
        ):
            raise GeometryError(
                f"BevGrid size_px must be two positive integers (H, W), got {self.size_px!r}"
            )
        if not (math.isfinite(self.m_per_px) and self.m_per_px > 0.0):
            raise GeometryError(f"BevGrid m_per_px must be finite and > 0, got {self.m_per_px!r}")
        object.__setattr__(self, "size_px", (int(size[0]), int(size[1])))
        object.__setattr__(self, "m_per_px", float(self.m_per_px))

    @property
    def height_px(self) -> int:
        return self.size_px[0]

    @property
    def width_px(self) -> int:
        return self.size_px[1]

    def px_to_base_xy(self, uv_px: np.ndarray) -> np.ndarray:
        """Grid pixels ``(..., 2)`` (u, v) -> base_link ``(..., 2)`` (x_m, y_m)."""
        uv = np.asarray(uv_px, dtype=np.float64)
        if uv.shape[-1:] != (2,):
            raise GeometryError(f"uv_px must have shape (..., 2), got {uv.shape}")
        h, w = self.size_px
        x = ((h - 1) / 2.0 - uv[..., 1]) * self.m_per_px
        y = ((w - 1) / 2.0 - uv[..., 0]) * self.m_per_px
        return np.stack((x, y), axis=-1)

    def base_xy_to_px(self, xy_m: np.ndarray) -> np.ndarray:
        """base_link ``(..., 2)`` (x_m, y_m) -> grid pixels ``(..., 2)`` (u, v)."""
        xy = np.asarray(xy_m, dtype=np.float64)
        if xy.shape[-1:] != (2,):
            raise GeometryError(f"xy_m must have shape (..., 2), got {xy.shape}")
        h, w = self.size_px
        u = (w - 1) / 2.0 - xy[..., 1] / self.m_per_px
        v = (h - 1) / 2.0 - xy[..., 0] / self.m_per_px
        return np.stack((u, v), axis=-1)

    def cell_centres_base_xy(self) -> np.ndarray:
        """``(H, W, 2)`` base_link (x_m, y_m) of every cell centre."""
        h, w = self.size_px
        vv, uu = np.meshgrid(
            np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
        )
        return self.px_to_base_xy(np.stack((uu, vv), axis=-1))


def bev_sampling_grid(
    camera: PinholeCamera,
    T_base_camera: np.ndarray,
    bev: BevGrid,
    ground_z_m: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse BEV sampling grid: for each BEV cell centre on the ground plane, its image pixel.

    Each cell centre ``(x, y, ground_z_m)`` in base_link is moved into the optical frame and
    projected with distortion. Only ``camera.project`` and ``camera.in_image`` are used, so the
    panoramic camera of :mod:`xview_localizer.core.camera_pano` works here too. Returns ``uv_px (H, W, 2)`` float32 (distorted pixels of the
    camera image, OpenCV convention) and ``valid (H, W)`` bool: in front of the camera, inside
    the invertible part of the distortion model and inside the image
    (``-0.5 <= u <= W_img - 0.5``, same for v). Invalid cells have ``uv = 0``.
    Use :func:`bev_sampling_grid_to_torch` to sample with ``torch.nn.functional.grid_sample``.
    """
    if not isinstance(bev, BevGrid):
        raise GeometryError(f"bev must be a BevGrid, got {type(bev).__name__}")
    r, t = _check_T(T_base_camera, "T_base_camera")
    _check_camera_above_ground(t, ground_z_m)
    h, w = bev.size_px
    xy = bev.cell_centres_base_xy().reshape(-1, 2)
    p_base = np.column_stack((xy, np.full(xy.shape[0], float(ground_z_m))))
    p_cam = _rotate(r.T, p_base - t)
    uv, valid = camera.project(p_cam)
    valid &= camera.in_image(uv)
    uv[~valid] = 0.0
    return uv.reshape(h, w, 2).astype(np.float32), valid.reshape(h, w)


def bev_sampling_grid_to_torch(
    uv_px: np.ndarray,
    valid: np.ndarray,
    width_px: int,
    height_px: int,
    invalid_value: float = -2.0,
    device: "str | torch.device | None" = None,
) -> "torch.Tensor":
    """Convert a BEV sampling grid to ``torch.nn.functional.grid_sample`` coordinates.

    ``uv_px (H, W, 2)`` are pixels of an image ``width_px`` x ``height_px`` (the camera's size).
    Output is a float32 tensor ``(H, W, 2)`` (add the batch dimension yourself) in the
    ``align_corners=False`` convention: ``gx = (2 u + 1) / width_px - 1``,
    ``gy = (2 v + 1) / height_px - 1``, so -1 / +1 are the outer image edges. These normalized
    coordinates do not depend on resolution: the same grid samples the image (or a feature map)
    resized by any factor with the same half-pixel convention (cv2.resize,
    ``F.interpolate(..., align_corners=False)``). Invalid cells get ``invalid_value`` in both
    coordinates (-2 lies fully outside, so ``padding_mode='zeros'`` samples exactly 0 there).
    """
    import torch

    uv = np.asarray(uv_px, dtype=np.float64)
    ok = np.asarray(valid, dtype=bool)
    if uv.ndim != 3 or uv.shape[2] != 2 or ok.shape != uv.shape[:2]:
        raise GeometryError(
            f"uv_px must be (H, W, 2) and valid (H, W), got {uv.shape} and {ok.shape}"
        )
    if int(width_px) <= 0 or int(height_px) <= 0:
        raise GeometryError(f"image size must be positive, got {width_px} x {height_px}")
    if not math.isfinite(invalid_value):
        raise GeometryError(f"invalid_value must be finite, got {invalid_value!r}")
    grid = np.empty_like(uv)
    grid[..., 0] = (2.0 * uv[..., 0] + 1.0) / int(width_px) - 1.0
    grid[..., 1] = (2.0 * uv[..., 1] + 1.0) / int(height_px) - 1.0
    grid[~(ok & np.all(np.isfinite(grid), axis=-1))] = invalid_value
    return torch.from_numpy(grid.astype(np.float32)).to(device=device)
