"""Geometry of the dense-flow matcher (:mod:`.dense_flow`): BEV / satellite cell offsets, dense
flow <-> metric correspondences (the matcher contract), ground-truth flow from a pose, the
batched differentiable Procrustes, and the per-camera BEV sampling grid (numpy).

Geometry conventions (see docs/conventions.md and docs/dense_flow.md):

* Satellite feature map: ``Hf x Wf`` cells, cell (row i, col j) centred at patch ENU
  ``east_m = (j - (Wf - 1) / 2) * m_per_cell``, ``north_m = ((Hf - 1) / 2 - i) * m_per_cell``
  with ``m_per_cell = sat_m_per_px * stride`` (the same formula as the patch pixel grid).
* BEV grid: the same ``Hf x Wf`` layout and ``m_per_cell``, centred on the vehicle and
  **north-up like the patch**, rotated by the prior yaw. A BEV cell at patch-aligned offset
  ``p = (east_m, north_m)`` from the vehicle holds the ground-plane point
  ``xy_base = R(-prior_yaw_rad) @ p`` of ``base_link``.
* Flow: ``flow[b, :, i, j] = (du, dv)`` in satellite-feature cells; BEV cell ``(i, j)``
  matches satellite feature coordinate ``(u, v) = (j + du, i + dv)``. Zero flow therefore means
  "vehicle at the patch centre with the prior heading": the Procrustes solution of zero flow is
  ``T_patch_base = (0, 0, prior_yaw_rad)``.
* Correspondences (the matcher contract): ``src_xy_m`` = base_link point of each BEV cell,
  ``dst_xy_m`` = patch-frame point of the matched satellite coordinate,
  ``weight`` = predicted confidence x BEV validity (the paper's ``S_i``).

Shapes: ``B`` batch, ``C x C`` cells (``H = W = cfg.feature_cells``), ``N = C * C`` in row-major
cell order; poses (B, 3) = (x_m, y_m, yaw_rad); ``m_per_cell`` and ``prior_yaw_rad`` (B,).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["cell_offsets_m", "flow_to_correspondences", "gt_flow_from_pose", "weighted_procrustes_torch",
           "bev_grid_for_camera"]


def cell_offsets_m(cells: int, m_per_cell: torch.Tensor) -> torch.Tensor:
    """Patch-aligned (east, north) offsets in metres of every cell of a ``cells x cells`` grid
    from its centre: ``(B, cells, cells, 2)`` for ``m_per_cell (B,)``."""
    idx = torch.arange(cells, device=m_per_cell.device, dtype=m_per_cell.dtype) - (cells - 1) / 2.0
    north, east = torch.meshgrid(-idx, idx, indexing="ij")
    p = torch.stack([east, north], dim=-1)
    return p.unsqueeze(0) * m_per_cell.view(-1, 1, 1, 1)


def _rotate(xy: torch.Tensor, yaw_rad: torch.Tensor) -> torch.Tensor:
    """Rotate points ``(B, ..., 2)`` by ``yaw_rad (B,)`` (CCW)."""
    shape = (-1,) + (1,) * (xy.dim() - 2)
    c, s = torch.cos(yaw_rad).view(shape), torch.sin(yaw_rad).view(shape)
    x, y = xy[..., 0], xy[..., 1]
    return torch.stack([c * x - s * y, s * x + c * y], dim=-1)


def flow_to_correspondences(
    flow: torch.Tensor,
    confidence: torch.Tensor,
    bev_valid: torch.Tensor,
    m_per_cell: torch.Tensor,
    prior_yaw_rad: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense flow -> metric correspondences (the matcher contract, batched).

    Args:
        flow: (B, 2, H, W) flow in satellite feature cells.
        confidence: (B, H, W) in [0, 1].
        bev_valid: (B, H, W) 1 where the BEV cell saw the ground image.
        m_per_cell: (B,) metres per satellite feature cell.
        prior_yaw_rad: (B,) prior yaw of base_link in the patch frame.
    Returns:
        src_xy_m (B, N, 2) in base_link, dst_xy_m (B, N, 2) in the patch frame, weight (B, N),
        with N = H * W in row-major cell order.
    """
    b, _, h, w = flow.shape
    p = cell_offsets_m(h, m_per_cell.to(flow.dtype))  # BEV cell offsets, patch-aligned
    src = _rotate(p, -prior_yaw_rad.to(flow.dtype))
    # Matched satellite coordinate (u, v) = (j + du, i + dv) -> patch metres.
    d_east = flow[:, 0] * m_per_cell.view(-1, 1, 1)
    d_north = -flow[:, 1] * m_per_cell.view(-1, 1, 1)
    dst = p + torch.stack([d_east, d_north], dim=-1)
    weight = (confidence * bev_valid.to(confidence.dtype)).reshape(b, h * w)
    return src.reshape(b, h * w, 2), dst.reshape(b, h * w, 2), weight


def gt_flow_from_pose(
    T_patch_base: torch.Tensor, prior_yaw_rad: torch.Tensor, m_per_cell: torch.Tensor, cells: int
) -> torch.Tensor:
    """Ground-truth flow (B, 2, cells, cells) of every BEV cell from the true pose.

    A BEV cell at patch-aligned offset ``p`` is the base_link point ``b = R(-prior) p``; the
    true pose ``T_patch_base = (x_m, y_m, yaw_rad)`` (B, 3) puts it at ``R(yaw) b + t`` in the
    patch frame; the flow is that point in satellite feature cells minus the cell itself.
    """
    m = m_per_cell.view(-1, 1, 1, 1)
    p = cell_offsets_m(cells, m_per_cell)
    b = _rotate(p, -prior_yaw_rad)
    d = _rotate(b, T_patch_base[:, 2]) + T_patch_base[:, None, None, :2]
    delta = (d - p) / m
    return torch.stack([delta[..., 0], -delta[..., 1]], dim=1)


def weighted_procrustes_torch(
    src_xy_m: torch.Tensor, dst_xy_m: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Differentiable confidence-weighted rigid Procrustes, batched: (B,N,2),(B,N,2),(B,N) ->
    (B, 3) = (x_m, y_m, yaw_rad) of ``T`` with ``dst ~= R(yaw) src + t``.

    Delegates to :mod:`xview_localizer.core.procrustes` (the one solver of the package).
    """
    from ..core.procrustes import procrustes_torch

    pose = procrustes_torch(src_xy_m.float(), dst_xy_m.float(), weight.float())
    return torch.stack([pose.x_m, pose.y_m, pose.yaw_rad], dim=-1)


def bev_grid_for_camera(
    camera: Any, T_base_camera: Any, prior_yaw_rad: float, cells: int, m_per_cell: float, ground_z_m: float = 0.0
):
    """Sampling grid of the north-up, prior-rotated BEV for one camera (numpy, per sample).

    The BEV of the matcher is laid out like the patch (x east / y north, north up) and centred on
    the vehicle; lifting.py's :class:`BevGrid` is forward-up in ``base_link``. A virtual body frame
    ``B''`` with x = north, y = west makes camera.py's forward-up grid north-up:
    ``T_B''_base = Rz(prior_yaw - pi/2)``, so ``T_B''_camera = Rz(prior_yaw - pi/2) @ T_base_camera``.

    Returns:
        grid_norm: (cells, cells, 2) float32 ``grid_sample`` coordinates (align_corners=False)
            into the ground image (resolution independent), invalid cells set to -2.
        valid: (cells, cells) float32, 1 where the ground point is in front of the camera and
            inside the image.
    """
    import numpy as np

    from ..core import camera_pano
    from ..core import lifting as lifting_mod

    a = float(prior_yaw_rad) - math.pi / 2.0
    rz = np.eye(4)
    rz[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    T = rz @ np.asarray(T_base_camera, dtype=np.float64)
    bev = lifting_mod.BevGrid(size_px=(cells, cells), m_per_px=float(m_per_cell))
    uv_px, valid = camera_pano.bev_sampling_grid_any(camera, T, bev, ground_z_m=ground_z_m)
    grid = lifting_mod.bev_sampling_grid_to_torch(uv_px, valid, camera.width_px, camera.height_px).numpy()
    return grid, np.asarray(valid, dtype=np.float32)

