"""Keypoint geometry of the depth-prior sparse matcher (:mod:`.sparse_depth`): viewing rays of
the keypoint candidate cells (numpy, once per camera), nearest-neighbour depth lookup, lifting
to BEV (torch), and satellite feature cells -> patch metres.

Conventions (docs/conventions.md, docs/camera.md, docs/sparse_depth.md):

* Ground keypoint candidates are the cells of the ground feature map (``Hf x Wf`` at
  ``ground_stride``). Cell ``(i, j)`` is represented by the **integer camera pixel** nearest its
  centre: ``u = round((j + 0.5) * ground_stride * W_cam / W_cfg - 0.5)`` (same for v), clipped
  to the image. Its viewing ray comes from :meth:`PinholeCamera.undistort_checked` (numpy,
  cached per camera by the caller), rotated into base_link axes: ``ray = R_base_camera @
  (x_n, y_n, 1)`` (optical z = 1, so ``depth * ray`` is the point for an optical-z depth).
  Candidates are in row-major cell order, ``N = Hf * Wf``.
* Lifting (:func:`lift_keypoints`) is the torch twin of :func:`lifting.lift_depth` /
  :func:`lifting.lift_flat_ground` (tested to agree): ``metric`` -> base_link metres;
  ``relative`` / ``inverse`` -> **camera-centred** points (base_link axes, origin at the camera,
  relative units); ``none`` -> flat ground ``z = ground_z_m`` in base_link. Depth <= 0, NaN or
  inf, pixels outside the invertible distortion region, rays at/above the horizon (flat ground)
  and points further than ``max_range_m`` (metric/flat) are **invalid: weight 0, xy 0**.
* Depth maps are sampled at the keypoint pixel with nearest-neighbour lookup (no blending
  across depth edges or holes), resolution independent (a depth map of another size is looked
  up at the same normalized position).
* Satellite feature cell ``(row i, col j)`` of an ``Hs x Ws`` map is centred at patch ENU
  ``east = (j - (Ws - 1) / 2) * m_per_cell``, ``north = ((Hs - 1) / 2 - i) * m_per_cell`` with
  ``m_per_cell = sat_m_per_px * sat_stride`` (as :mod:`.dense_geometry`); continuous coordinates are
  ``(u, v)`` = (column, row).

Shapes: ``B`` batch, ``N`` candidate cells; rays (B, N, 3), validity (B, N), camera centres
(B, 3), lifted points (B, N, 2).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.errors import GeometryError
from .sparse_config import DEPTH_KINDS, SparseDepthConfig

__all__ = ["KeypointRays", "keypoint_rays", "KeypointRaysCache", "sample_depth_nearest", "lift_keypoints",
           "sat_cell_to_patch_m"]

_MIN_RAY_DOWN = 1e-12  # camera.py's threshold for "the ray goes down"


@dataclass(frozen=True)
class KeypointRays:
    """Per-camera keypoint candidate geometry (numpy; compute once per camera and cache).

    Attributes:
        uv_px: (N, 2) float64 integer camera pixels (u, v) of the N = Hf * Wf candidate cells,
            row-major cell order.
        grid_norm: (N, 2) float32 ``grid_sample`` coordinates (align_corners=False) of those
            pixels: resolution independent, used to look up depth maps of any size.
        rays_base: (N, 3) float32 ``R_base_camera @ (x_n, y_n, 1)``; 0 where invalid.
        ray_valid: (N,) bool, the pixel can be undistorted.
        cam_xyz_base_m: (3,) float32 camera centre in base_link.
    """

    uv_px: np.ndarray
    grid_norm: np.ndarray
    rays_base: np.ndarray
    ray_valid: np.ndarray
    cam_xyz_base_m: np.ndarray


def keypoint_rays(camera: Any, T_base_camera: np.ndarray, cfg: SparseDepthConfig) -> KeypointRays:
    """Rays of the keypoint candidate cells of ``cfg`` for one camera (see the module docstring).

    Pinhole cameras give rays ``(x_n, y_n, 1)`` (so depth = optical z, as ROS depth images);
    an :class:`~xview_localizer.core.camera_pano.EquirectangularCamera` gives unit rays (depth =
    range along the ray, the only depth a panorama has)."""
    from ..core.camera import _check_T
    from ..core.camera_pano import EquirectangularCamera

    r, t = _check_T(T_base_camera, "T_base_camera")
    hf, wf = cfg.ground_cells
    hg, wg = cfg.ground_size_px
    w_cam, h_cam = camera.width_px, camera.height_px
    jj, ii = np.meshgrid(np.arange(wf, dtype=np.float64), np.arange(hf, dtype=np.float64))
    u = np.clip(np.floor((jj + 0.5) * cfg.ground_stride * w_cam / wg - 0.5 + 0.5), 0, w_cam - 1)
    v = np.clip(np.floor((ii + 0.5) * cfg.ground_stride * h_cam / hg - 0.5 + 0.5), 0, h_cam - 1)
    uv = np.column_stack((u.reshape(-1), v.reshape(-1)))
    if isinstance(camera, EquirectangularCamera):
        rays = camera.pixel_to_ray(uv) @ r.T
        ok = np.ones(uv.shape[0], dtype=bool)
    else:
        xy_n, ok = camera.undistort_checked(uv)
        rays = np.column_stack((xy_n, np.ones(uv.shape[0]))) @ r.T
    rays[~ok] = 0.0
    grid = np.column_stack(((2 * uv[:, 0] + 1) / w_cam - 1, (2 * uv[:, 1] + 1) / h_cam - 1))
    return KeypointRays(uv, grid.astype(np.float32), rays.astype(np.float32), ok.astype(bool), t.astype(np.float32))



class KeypointRaysCache:
    """LRU cache of :func:`keypoint_rays` per (camera parameters, extrinsics): the rays depend
    only on those, so the matcher and the training data compute them once per camera."""

    def __init__(self, cfg: SparseDepthConfig, size: int = 8) -> None:
        self.cfg = cfg
        self.size = max(1, int(size))
        self._rays: OrderedDict[tuple, KeypointRays] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rays)

    def get(self, camera: Any, T_base_camera: np.ndarray) -> KeypointRays:
        T = np.asarray(T_base_camera, dtype=np.float64)
        key = (repr(camera), T.tobytes())
        kr = self._rays.get(key)
        if kr is None:
            kr = keypoint_rays(camera, T, self.cfg)
            self._rays[key] = kr
            while len(self._rays) > self.size:
                self._rays.popitem(last=False)
        else:
            self._rays.move_to_end(key)
        return kr


def sample_depth_nearest(depth: torch.Tensor, grid_norm: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour depth lookup: ``depth (B, Hd, Wd)`` at ``grid_norm (B, N, 2)``
    (align_corners=False coordinates) -> ``(B, N)``. NaN/inf are kept as they are (lifting
    marks them invalid); positions outside the map give 0 (invalid)."""
    if depth.dim() != 3:
        raise GeometryError(f"depth must have shape (B, Hd, Wd), got {tuple(depth.shape)}")
    b, hd, wd = depth.shape
    g = grid_norm.to(torch.float32)
    # nearest pixel: u = ((gx + 1) W - 1) / 2, rounded; done by hand so NaN depths survive
    # (grid_sample would be fine too, but this keeps exact integer indexing).
    u = torch.floor(((g[..., 0] + 1) * wd - 1) / 2 + 0.5).long()
    v = torch.floor(((g[..., 1] + 1) * hd - 1) / 2 + 0.5).long()
    inside = (u >= 0) & (u < wd) & (v >= 0) & (v < hd)
    idx = (v.clamp(0, hd - 1) * wd + u.clamp(0, wd - 1)).reshape(b, -1)
    z = torch.gather(depth.reshape(b, hd * wd), 1, idx).reshape(u.shape)
    return torch.where(inside, z, torch.zeros_like(z))


def lift_keypoints(
    rays_base: torch.Tensor,
    ray_valid: torch.Tensor,
    cam_xyz_base_m: torch.Tensor,
    depth: torch.Tensor | None,
    kind: str,
    ground_z_m: float = 0.0,
    max_range_m: float = 100.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lift keypoints to BEV: the torch twin of :func:`lifting.lift_depth` / :func:`lifting.lift_flat_ground`.

    Args:
        rays_base: (B, N, 3) ``R_base_camera @ (x_n, y_n, 1)``.
        ray_valid: (B, N) bool/float.
        cam_xyz_base_m: (B, 3) camera centre in base_link.
        depth: (B, N) optical-z depth (metric/relative) or inverse relative depth; ignored (may
            be None) for ``kind="none"``.
        kind: "metric" | "relative" | "inverse" | "none" (flat ground).
    Returns:
        ``xy (B, N, 2)``: base_link metres (metric, none) or camera-centred relative units
        (relative, inverse); ``valid (B, N)`` bool. Invalid rows are exactly 0, never NaN.
    """
    if kind not in DEPTH_KINDS:
        raise GeometryError(f"depth kind must be one of {DEPTH_KINDS}, got {kind!r}")
    valid = ray_valid.bool()
    t = cam_xyz_base_m[:, None, :].to(rays_base.dtype)
    if kind == "none":
        down = rays_base[..., 2] < -_MIN_RAY_DOWN
        valid = valid & down
        lam = torch.where(valid, (ground_z_m - t[..., 2]) / torch.where(down, rays_base[..., 2], -1.0), 0.0)
        offset = lam[..., None] * rays_base[..., :2]
        valid = valid & (torch.linalg.vector_norm(offset, dim=-1) <= max_range_m)
        xy = t[..., :2] + offset
    else:
        if depth is None:
            raise GeometryError(f"depth kind {kind!r} needs a depth tensor (use kind='none' without depth)")
        if depth.shape != rays_base.shape[:2]:
            raise GeometryError(f"depth must have shape {tuple(rays_base.shape[:2])}, got {tuple(depth.shape)}")
        z = depth.to(rays_base.dtype)
        good = torch.isfinite(z) & (z > 0)
        z = torch.where(good, z, torch.ones_like(z))
        if kind == "inverse":
            z = 1.0 / z
            good = good & torch.isfinite(z) & (z > 0)
            z = torch.where(good, z, torch.ones_like(z))
        valid = valid & good
        offset = z[..., None] * rays_base[..., :2]
        if kind == "metric":
            valid = valid & (torch.linalg.vector_norm(offset, dim=-1) <= max_range_m)
            xy = t[..., :2] + offset
        else:
            xy = offset
        valid = valid & torch.isfinite(xy).all(dim=-1)
    xy = torch.where(valid[..., None], xy, torch.zeros_like(xy))
    return xy, valid


def sat_cell_to_patch_m(uv_cells: torch.Tensor, cells: int, m_per_cell: torch.Tensor) -> torch.Tensor:
    """Satellite feature coordinates ``(B, N, 2)`` (u = column, v = row, continuous) ->
    patch ENU metres ``(B, N, 2)`` (east, north), for a square ``cells x cells`` map."""
    c = (cells - 1) / 2.0
    m = m_per_cell.view(-1, 1)
    return torch.stack([(uv_cells[..., 0] - c) * m, (c - uv_cells[..., 1]) * m], dim=-1)
