"""Depth-prior sparse cross-view matcher (seed paper 000: local feature matching + monocular
depth priors + scale-aware Procrustes), in one file. Building blocks first, the network
(:class:`SparseDepthMatcher`) last.

Pipeline::

    ground RGB ──► ResNetEncoder ──► F_g (B, D, Hf, Wf) ──► score head ──► top-k + NMS keypoints
                                         │                                    │
                                         └── descriptors at the keypoints ◄───┘
    per keypoint: ray (numpy, once per camera) + depth sample ──► lifted BEV point ``src``
    satellite RGB ──► ResNetEncoder (optionally C4-pooled) ──► F_s (B, D, Hs, Ws)
    cosine similarity of each descriptor to ALL satellite cells ──► pose vote over (yaw, depth
        scale, translation) hypotheses ──► each keypoint's predicted cell (vote_pose)
        ──► soft-argmax in a (2r+1)^2 window there (sub-cell) ──► ``dst`` in the patch frame,
        confidence = softmax mass in the window (``vote_radius_cells = 0``: window at the
        keypoint's own argmax cell instead)
    weighted Procrustes (rigid for metric depth / flat ground, Sim(2) for relative depth)
        ──► T_patch_base (and the depth scale)

Conventions (docs/conventions.md, docs/camera.md, docs/sparse_depth.md):

* Ground keypoint candidates are the cells of the ground feature map (``Hf x Wf`` at
  ``ground_stride``). Cell ``(i, j)`` is represented by the **integer camera pixel** nearest its
  centre: ``u = round((j + 0.5) * ground_stride * W_cam / W_cfg - 0.5)`` (same for v), clipped
  to the image. Its viewing ray comes from :meth:`PinholeCamera.undistort_checked` (numpy,
  cached per camera by the caller), rotated into base_link axes: ``ray = R_base_camera @
  (x_n, y_n, 1)`` (optical z = 1, so ``depth * ray`` is the point for an optical-z depth).
* Lifting (:func:`lift_keypoints`) is the torch twin of :func:`camera.lift_depth` /
  :func:`camera.lift_flat_ground` (tested to agree): ``metric`` -> base_link metres;
  ``relative`` / ``inverse`` -> **camera-centred** points (base_link axes, origin at the camera,
  relative units); ``none`` -> flat ground ``z = ground_z_m`` in base_link. Depth <= 0, NaN or
  inf, pixels outside the invertible distortion region, rays at/above the horizon (flat ground)
  and points further than ``max_range_m`` (metric/flat) are **invalid: weight 0, xy 0**.
* Depth maps are sampled at the keypoint pixel with nearest-neighbour lookup (no blending
  across depth edges or holes), resolution independent (a depth map of another size is looked
  up at the same normalized position).
* Satellite feature cell ``(row i, col j)`` of an ``Hs x Ws`` map is centred at patch ENU
  ``east = (j - (Ws - 1) / 2) * m_per_cell``, ``north = ((Hs - 1) / 2 - i) * m_per_cell`` with
  ``m_per_cell = sat_m_per_px * sat_stride`` (as dense_flow.py).
* **Yaw prior optional.** ``forward(prior_yaw_rad=...)`` lets the vote search
  ``known_yaw_range_deg`` around the prior; ``None`` (unknown orientation) searches
  ``unknown_yaw_bins`` yaws around the circle. Everything else is the same code, and
  Procrustes refines the yaw. Ground descriptors come from the perspective image (no BEV is rotated); rotation
  invariance of the *satellite* descriptors is learnt from training samples with any yaw, and
  ``sat_rotations = 4`` additionally makes the satellite encoder C4-equivariant by construction
  (mean over the 4 rot90 copies, rotated back), so a descriptor no longer depends on which of
  the four map orientations the patch came in.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, GeometryError
from .dense_flow import ResNetEncoder
from .grids import cached_grid
from .norms import NORM_KINDS

__all__ = [
    "DepthKind",
    "DEPTH_KINDS",
    "SparseDepthConfig",
    "SPARSE_PRESETS",
    "sparse_preset",
    "KeypointRays",
    "keypoint_rays",
    "KeypointRaysCache",
    "sample_depth_nearest",
    "lift_keypoints",
    "ScoreHead",
    "select_keypoints",
    "sat_cell_to_patch_m",
    "descriptor_similarity",
    "match_descriptors",
    "PoseVote",
    "max_filter2d",
    "yaw_hypotheses",
    "vote_pose",
    "pose_from_correspondences",
    "SparseDepthOutput",
    "SparseDepthMatcher",
]

DepthKind = Literal["metric", "relative", "inverse", "none"]
#: ``none`` = no depth: flat-ground fallback.
DEPTH_KINDS: tuple[str, ...] = ("metric", "relative", "inverse", "none")
_MIN_RAY_DOWN = 1e-12  # camera.py's threshold for "the ray goes down"


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SparseDepthConfig:
    """Architecture and input geometry of the depth-prior sparse matcher.

    Attributes:
        name: preset name stored in checkpoints.
        ground_size_px: (H, W) the ground image is resized to (multiples of ``ground_stride``).
        sat_size_px: side of the square satellite input (multiple of ``sat_stride``).
        ground_stride, sat_stride: encoder output strides (4 or 8) of the two encoders.
        encoder_widths: channels of the 3 ResNet stages; blocks_per_stage: BasicBlocks per stage.
        feature_dim: descriptor channels (both views).
        num_keypoints: k of the top-k keypoint selection (<= ground feature cells).
        nms_radius_cells: non-maximum suppression radius on the score map (0 disables).
        refine_radius_cells: half-width r of the (2r+1)^2 soft-argmax window around the argmax.
        init_temperature: initial softmax temperature of the cosine similarity (learnt, in log).
        sat_rotations: 1 (plain) or 4 (C4 group pooling of the satellite encoder).
        max_range_m: metric/flat points further than this horizontally from the camera drop.
        ground_z_m: ground height in base_link for the flat-ground fallback.
        robust_iterations: IRLS iterations (Cauchy, detached weights) of the in-network solver;
            0 = plain weighted Procrustes.
        vote_radius_cells: half-width (satellite cells) of the translation search of the pose
            vote (:func:`vote_pose`); 0 disables the vote (every keypoint takes its global
            argmax, the first design).
        vote_step_cells: translation step of the vote grid (cells).
        vote_pool_cells: r of the (2r+1)^2 max-pooling of the similarity maps before voting
            (tolerance of the nearest-cell lookup).
        known_yaw_range_deg, known_yaw_step_deg: yaw hypotheses prior ± range in steps, when a
            prior yaw is given.
        unknown_yaw_bins: yaw hypotheses around the circle without a prior yaw.
        vote_scales, vote_scale_range: log-spaced depth-scale hypotheses for relative depth.
        init_vote_inv_temperature: initial sharpness of the vote softmax (learnt, in log).
        sat_norm: normalization of the satellite encoder, "instance" or "frozen" (fixed
            statistics: area feature maps cut exactly, :mod:`.norms`).
    """

    name: str = "compact"
    ground_size_px: tuple[int, int] = (128, 512)
    sat_size_px: int = 256
    ground_stride: int = 8
    sat_stride: int = 4
    encoder_widths: tuple[int, int, int] = (32, 64, 96)
    blocks_per_stage: int = 1
    feature_dim: int = 128
    num_keypoints: int = 128
    nms_radius_cells: int = 1
    refine_radius_cells: int = 3
    init_temperature: float = 0.1
    sat_rotations: int = 1
    max_range_m: float = 100.0
    ground_z_m: float = 0.0
    robust_iterations: int = 0
    vote_radius_cells: int = 16
    vote_step_cells: int = 2
    vote_pool_cells: int = 1
    known_yaw_range_deg: float = 12.5
    known_yaw_step_deg: float = 2.5
    unknown_yaw_bins: int = 36
    vote_scales: int = 9
    vote_scale_range: tuple[float, float] = (0.25, 4.0)
    init_vote_inv_temperature: float = 20.0
    sat_norm: str = "instance"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ground_size_px", tuple(int(v) for v in self.ground_size_px))
        object.__setattr__(self, "encoder_widths", tuple(int(v) for v in self.encoder_widths))
        object.__setattr__(self, "vote_scale_range", tuple(float(v) for v in self.vote_scale_range))
        if not self.name:
            raise ConfigError("SparseDepthConfig.name must be a non-empty string")
        if self.sat_norm not in NORM_KINDS:
            raise ConfigError(f"SparseDepthConfig.sat_norm must be one of {NORM_KINDS}, got {self.sat_norm!r}")
        for f in ("ground_stride", "sat_stride"):
            if getattr(self, f) not in (4, 8):
                raise ConfigError(f"SparseDepthConfig.{f} must be 4 or 8, got {getattr(self, f)}")
        if len(self.ground_size_px) != 2 or any(v <= 0 or v % self.ground_stride for v in self.ground_size_px):
            raise ConfigError(
                f"SparseDepthConfig.ground_size_px must be two positive multiples of ground_stride "
                f"{self.ground_stride}, got {self.ground_size_px}"
            )
        if self.sat_size_px <= 0 or self.sat_size_px % self.sat_stride:
            raise ConfigError(
                f"SparseDepthConfig.sat_size_px must be a positive multiple of sat_stride {self.sat_stride}, "
                f"got {self.sat_size_px}"
            )
        if len(self.encoder_widths) != 3 or min(self.encoder_widths) <= 0:
            raise ConfigError(f"SparseDepthConfig.encoder_widths must be 3 positive ints, got {self.encoder_widths}")
        for f in ("blocks_per_stage", "feature_dim", "num_keypoints"):
            if int(getattr(self, f)) < 1:
                raise ConfigError(f"SparseDepthConfig.{f} must be >= 1, got {getattr(self, f)}")
        hf, wf = self.ground_cells
        if self.num_keypoints > hf * wf:
            raise ConfigError(
                f"SparseDepthConfig.num_keypoints {self.num_keypoints} exceeds the {hf}x{wf} ground feature cells"
            )
        for f in ("nms_radius_cells", "refine_radius_cells", "robust_iterations"):
            if int(getattr(self, f)) < 0:
                raise ConfigError(f"SparseDepthConfig.{f} must be >= 0, got {getattr(self, f)}")
        if not (math.isfinite(self.init_temperature) and self.init_temperature > 0):
            raise ConfigError(f"SparseDepthConfig.init_temperature must be > 0, got {self.init_temperature}")
        if self.sat_rotations not in (1, 4):
            raise ConfigError(f"SparseDepthConfig.sat_rotations must be 1 or 4, got {self.sat_rotations}")
        if not (math.isfinite(self.max_range_m) and self.max_range_m > 0):
            raise ConfigError(f"SparseDepthConfig.max_range_m must be finite and > 0, got {self.max_range_m}")
        if not math.isfinite(self.ground_z_m):
            raise ConfigError(f"SparseDepthConfig.ground_z_m must be finite, got {self.ground_z_m}")
        for f in ("vote_radius_cells", "vote_pool_cells"):
            if int(getattr(self, f)) < 0:
                raise ConfigError(f"SparseDepthConfig.{f} must be >= 0, got {getattr(self, f)}")
        for f in ("vote_step_cells", "unknown_yaw_bins", "vote_scales"):
            if int(getattr(self, f)) < 1:
                raise ConfigError(f"SparseDepthConfig.{f} must be >= 1, got {getattr(self, f)}")
        for f in ("known_yaw_range_deg", "known_yaw_step_deg", "init_vote_inv_temperature"):
            v = getattr(self, f)
            if not (math.isfinite(v) and v >= 0) or (f != "known_yaw_range_deg" and v == 0):
                raise ConfigError(f"SparseDepthConfig.{f} must be finite and > 0 (range >= 0), got {v}")
        lo, hi = self.vote_scale_range if len(self.vote_scale_range) == 2 else (0.0, 0.0)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ConfigError(f"SparseDepthConfig.vote_scale_range must be 0 < lo <= hi, got {self.vote_scale_range}")

    @property
    def ground_cells(self) -> tuple[int, int]:
        """(Hf, Wf) of the ground feature map = keypoint candidate grid."""
        return self.ground_size_px[0] // self.ground_stride, self.ground_size_px[1] // self.ground_stride

    @property
    def sat_cells(self) -> int:
        """Side of the square satellite feature map."""
        return self.sat_size_px // self.sat_stride

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ground_size_px"] = list(self.ground_size_px)
        d["encoder_widths"] = list(self.encoder_widths)
        d["vote_scale_range"] = list(self.vote_scale_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SparseDepthConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"SparseDepthConfig: unknown field(s) {sorted(unknown)}")
        return cls(**d)


#: ``compact``: CPU default, the dense-flow compact input sizes (128x512 ground, 256 px / 0.4 m
#: satellite = ±51 m), 128 keypoints, satellite at 1/4 (64x64 cells of 1.6 m).
#: ``paper``: ResNet18-size encoders, 256x1024 ground, 512 px / 0.2 m satellite at 1/4
#: (128x128 cells of 0.8 m), 256-d descriptors, 256 keypoints, C4 satellite pooling.
SPARSE_PRESETS: dict[str, SparseDepthConfig] = {
    "compact": SparseDepthConfig(),
    "paper": SparseDepthConfig(
        name="paper",
        ground_size_px=(256, 1024),
        sat_size_px=512,
        ground_stride=8,
        sat_stride=4,
        encoder_widths=(64, 128, 256),
        blocks_per_stage=2,
        feature_dim=256,
        num_keypoints=256,
        sat_rotations=4,
    ),
}


def sparse_preset(name: str, **overrides: Any) -> SparseDepthConfig:
    """The named preset, optionally with fields replaced (``sparse_preset("compact", num_keypoints=64)``)."""
    if name not in SPARSE_PRESETS:
        raise ConfigError(f"unknown sparse-depth preset {name!r}; known: {sorted(SPARSE_PRESETS)}")
    cfg = SPARSE_PRESETS[name]
    return replace(cfg, **overrides) if overrides else cfg


# ----------------------------------------------------------------------------- geometry (numpy, per camera)
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
    """Lift keypoints to BEV: the torch twin of :func:`camera.lift_depth` / :func:`camera.lift_flat_ground`.

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


# ----------------------------------------------------------------------------- network blocks
class ScoreHead(nn.Module):
    """Keypoint score map: ``(B, D, Hf, Wf)`` features -> ``(B, Hf, Wf)`` scores in (0, 1)."""

    def __init__(self, in_ch: int) -> None:
        super().__init__()
        mid = max(in_ch // 2, 8)
        self.net = nn.Sequential(nn.Conv2d(in_ch, mid, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(mid, 1, 1))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(feat).float()).squeeze(1)


def select_keypoints(
    score: torch.Tensor, candidate_valid: torch.Tensor, k: int, nms_radius: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k keypoints with non-maximum suppression (selection is not differentiable; the
    scores gathered afterwards are).

    Args:
        score: (B, Hf, Wf) scores. candidate_valid: (B, Hf * Wf) bool, lifted point valid.
        k: keypoints to return. nms_radius: a cell is kept only if it is the max of its
            (2r+1)^2 neighbourhood (ties kept); 0 disables.
    Returns:
        index (B, k) long into the row-major cells; selected (B, k) bool: False where fewer than
        k valid NMS survivors existed (those slots hold arbitrary cells and must get weight 0).
    """
    b = score.shape[0]
    s = score.detach().float()
    keep = torch.ones_like(s, dtype=torch.bool)
    if nms_radius > 0:
        pooled = F.max_pool2d(s[:, None], 2 * nms_radius + 1, stride=1, padding=nms_radius)[:, 0]
        keep = s >= pooled
    keep = keep.reshape(b, -1) & candidate_valid.bool()
    ranked = torch.where(keep, s.reshape(b, -1), torch.full_like(s.reshape(b, -1), -1.0))
    top, index = torch.topk(ranked, k, dim=1)
    return index, top >= 0


def descriptor_similarity(desc: torch.Tensor, sat_feat: torch.Tensor) -> torch.Tensor:
    """Cosine similarity (B, K, Hs * Ws) of L2-normalized descriptors ``desc`` (B, K, D) to
    every cell of L2-normalized satellite features ``sat_feat`` (B, D, Hs, Ws); float32, outside
    any autocast."""
    with torch.autocast(desc.device.type, enabled=False):
        return torch.einsum("bkd,bdp->bkp", desc.float(), sat_feat.float().flatten(2))


def match_descriptors(
    desc: torch.Tensor, sat_feat: torch.Tensor, inv_temperature: torch.Tensor, refine_radius: int,
    centre_cells: torch.Tensor | None = None, similarity: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Match each keypoint descriptor against every satellite position.

    Args:
        desc: (B, K, D) L2-normalized ground descriptors.
        sat_feat: (B, D, Hs, Ws) L2-normalized (over D) satellite features.
        inv_temperature: scalar tensor, the softmax sharpness.
        refine_radius: r of the soft-argmax window.
        centre_cells: optional (B, K, 2) (u, v) where each keypoint is expected (the pose vote's
            prediction): the window is centred on the nearest cell to it instead of the global
            argmax (cells outside the map are excluded as usual).
        similarity: optional (B, K, Hs * Ws) :func:`descriptor_similarity` of ``desc`` and
            ``sat_feat`` when the caller has it already (the pose vote uses it too).
    Returns:
        uv_cells (B, K, 2) sub-cell matched satellite coordinate (u = column, v = row): the window
        centre (argmax cell, or ``centre_cells`` rounded) refined by a soft-argmax over the (2r+1)^2 window around it (window logits
        re-normalized, cells outside the map excluded); confidence (B, K) in [0, 1]: the global
        softmax probability mass inside that window; logits (B, K, Hs * Ws) the similarity
        logits (for optional losses).
    """
    b, k, _ = desc.shape
    hs, ws = sat_feat.shape[-2:]
    if similarity is None:
        similarity = descriptor_similarity(desc, sat_feat)
    logits = similarity * inv_temperature.float()
    log_p = torch.log_softmax(logits, dim=-1)
    if centre_cells is None:
        best = logits.detach().argmax(dim=-1)  # (B, K)
        i0, j0 = best // ws, best % ws
    else:
        c = torch.nan_to_num(centre_cells.detach().float(), nan=-1e6).clamp(-1e6, 1e6)
        j0, i0 = torch.round(c[..., 0]).long(), torch.round(c[..., 1]).long()
    di, dj = cached_grid(("refine_window", refine_radius), desc.device, lambda: torch.meshgrid(
        torch.arange(-refine_radius, refine_radius + 1, device=desc.device),
        torch.arange(-refine_radius, refine_radius + 1, device=desc.device), indexing="ij"))
    ii = i0[..., None] + di.reshape(-1)  # (B, K, W2)
    jj = j0[..., None] + dj.reshape(-1)
    inside = (ii >= 0) & (ii < hs) & (jj >= 0) & (jj < ws)
    flat = (ii.clamp(0, hs - 1) * ws + jj.clamp(0, ws - 1)).reshape(b, k, -1)
    win_logits = torch.gather(logits, 2, flat)
    win_log_p = torch.gather(log_p, 2, flat)
    neg = torch.finfo(win_logits.dtype).min
    w = torch.softmax(torch.where(inside, win_logits, torch.full_like(win_logits, neg)), dim=-1)
    u = (w * jj.to(w.dtype)).sum(-1)
    v = (w * ii.to(w.dtype)).sum(-1)
    confidence = torch.where(inside, win_log_p.exp(), torch.zeros_like(win_log_p)).sum(-1).clamp(0.0, 1.0)
    return torch.stack([u, v], dim=-1), confidence, logits


@dataclass
class PoseVote:
    """Result of :func:`vote_pose` (B batch, K keypoints, J yaw, S scale, T translation
    hypotheses; ``H = J * S * T`` in that row-major order).

    Attributes:
        logits: (B, J, S, T) vote logits (score x learnt sharpness).
        yaw_rad: (B, J) yaw hypotheses. scale: (S,) depth-scale hypotheses (ones(1) when known).
        offset_cells: (T, 2) translation hypotheses (du, dv) in satellite cells from the centre.
        best_centre_cells: (B, K, 2) (u, v) where the best hypothesis puts each keypoint.
        best_yaw_rad, best_scale: (B,) the best hypothesis' yaw and scale.
        m_per_cell: (B,) metres per satellite cell (to place a metric pose on the grid).
        origin_xy_base_m: (B, 2) the base_link point the translation hypotheses place: the
            origin (0, 0) for metric depth / flat ground, the camera centre for relative depth.
    """

    logits: torch.Tensor
    yaw_rad: torch.Tensor
    scale: torch.Tensor
    offset_cells: torch.Tensor
    best_centre_cells: torch.Tensor
    best_yaw_rad: torch.Tensor
    best_scale: torch.Tensor
    m_per_cell: torch.Tensor
    origin_xy_base_m: torch.Tensor


def yaw_hypotheses(prior_yaw_rad: torch.Tensor | None, batch: int, cfg: SparseDepthConfig,
                   device: torch.device) -> torch.Tensor:
    """(B, J) yaw hypotheses: ``prior ± known_yaw_range_deg`` in ``known_yaw_step_deg`` steps,
    or ``unknown_yaw_bins`` evenly around the circle (from -pi) without a prior yaw."""
    if prior_yaw_rad is None:
        j = cfg.unknown_yaw_bins
        yaws = cached_grid(("unknown_yaws", j), device, lambda: -math.pi + 2.0 * math.pi * torch.arange(
            j, device=device, dtype=torch.float32) / j)
        return yaws[None].expand(batch, -1)
    n = int(math.floor(cfg.known_yaw_range_deg / cfg.known_yaw_step_deg + 1e-9))
    off = cached_grid(("known_yaw_offsets", n, cfg.known_yaw_step_deg), device, lambda: torch.deg2rad(
        torch.arange(-n, n + 1, device=device, dtype=torch.float32) * cfg.known_yaw_step_deg))
    return prior_yaw_rad.reshape(batch, 1).float() + off[None]


def _vote_offsets(n: int, step: int, device: torch.device) -> torch.Tensor:
    """(T, 2) whole-cell (du, dv) translations of the vote, T = (2n+1)^2, row-major in (dv, du)."""
    g = torch.arange(-n, n + 1, device=device, dtype=torch.float32) * step
    gv, gu = torch.meshgrid(g, g, indexing="ij")
    return torch.stack([gu.reshape(-1), gv.reshape(-1)], dim=-1)


def max_filter2d(x: torch.Tensor, r: int) -> torch.Tensor:
    """``F.max_pool2d(x, 2r+1, stride=1, padding=r)`` over the last two axes of (..., H, W)
    (borders padded with -inf, the same values), as two separable passes of shifted
    ``torch.maximum``: 5x faster on CPU for the (B*K, 64, 64) similarity maps of the vote than
    max_pool2d's single-channel path. Gradients go to the maximum (split on exact ties)."""
    if r <= 0:
        return x
    h, w = x.shape[-2:]
    p = F.pad(x, (r, r), value=float("-inf"))
    y = p[..., 0:w]
    for d in range(1, 2 * r + 1):
        y = torch.maximum(y, p[..., d:d + w])
    p = F.pad(y, (0, 0, r, r), value=float("-inf"))
    z = p[..., 0:h, :]
    for d in range(1, 2 * r + 1):
        z = torch.maximum(z, p[..., d:d + h, :])
    return z


def vote_pose(
    similarity: torch.Tensor,
    src_xy: torch.Tensor,
    weight: torch.Tensor,
    scale_known: bool,
    m_per_cell: torch.Tensor,
    prior_yaw_rad: torch.Tensor | None,
    cfg: SparseDepthConfig,
    inv_temperature: torch.Tensor,
    cam_xy_base_m: torch.Tensor | None = None,
) -> PoseVote:
    """Pose vote over (yaw, depth scale, translation) hypotheses: the consensus of all keypoints
    before any keypoint commits to a match (one ambiguous descriptor cannot).

    Hypothesis ``h = (yaw, s, t)`` puts keypoint k at patch cell ``c + (s R(yaw) src_k + t) / m``
    (ENU metres -> (u, v) = (east, -north) / m_per_cell; ``t`` on a grid of
    ``vote_step_cells`` within ±``vote_radius_cells``; ``s`` = 1 for metric depth / flat ground,
    else ``vote_scales`` log-spaced in ``vote_scale_range``, ``src`` camera-centred). Its score
    is the weighted mean over keypoints of the (max-pooled) cosine similarity at that cell
    (nearest cell; outside the map counts 0); logits = score x ``inv_temperature``.
    ``t`` is the base_link origin for metric depth and the camera centre otherwise.

    Args:
        similarity: (B, K, Hs, Ws) cosine similarity of each keypoint descriptor to each cell.
        src_xy: (B, K, 2) lifted keypoints. weight: (B, K) >= 0 (0 = ignored).
        m_per_cell: (B,) metres per satellite cell. prior_yaw_rad: (B,) or None (unknown).
        cam_xy_base_m: (B, 2) camera centre in base_link (relative depth; recorded in the result).
    """
    b, k, hs, ws = similarity.shape
    dev = similarity.device
    r = cfg.vote_pool_cells
    sim = max_filter2d(similarity, r).reshape(b, k, hs * ws)
    yaws = yaw_hypotheses(prior_yaw_rad, b, cfg, dev)  # (B, J)
    if scale_known:
        scales = torch.ones(1, device=dev)
    else:
        lo, hi = cfg.vote_scale_range
        scales = cached_grid(("vote_scales", lo, hi, cfg.vote_scales), dev, lambda: torch.exp(
            torch.linspace(math.log(lo), math.log(hi), cfg.vote_scales, device=dev)))
    n = cfg.vote_radius_cells // cfg.vote_step_cells
    offsets = cached_grid(("vote_offsets", n, cfg.vote_step_cells), dev,
                          lambda: _vote_offsets(n, cfg.vote_step_cells, dev))  # (T, 2) (du, dv)
    src = src_xy.detach().float()
    cy, sy = torch.cos(yaws)[..., None], torch.sin(yaws)[..., None]  # (B, J, 1)
    east = cy * src[:, None, :, 0] - sy * src[:, None, :, 1]  # (B, J, K)
    north = sy * src[:, None, :, 0] + cy * src[:, None, :, 1]
    m = m_per_cell.reshape(b, 1, 1, 1).float()
    du = scales.view(1, 1, -1, 1) * east[:, :, None] / m  # (B, J, S, K)
    dv = -scales.view(1, 1, -1, 1) * north[:, :, None] / m
    c = (hs - 1) / 2.0
    # Each hypothesis' cell of each keypoint: round(c + d + offset) = round(c + d) + offset (the
    # offsets are whole cells), so the (B, J, S, T, K) index grid is integer adds of a (B, J, S,
    # K) base and a (T,) offset. Cells outside the map are clamped onto a one-cell zero border of
    # the (padded) similarity maps, which scores them 0; the keypoint's own map is selected by
    # its offset into the flattened (K, Hs+2, Ws+2) block.
    hp, wp = hs + 2, ws + 2
    u0 = torch.round(c + du).long()[..., None, :]  # (B, J, S, 1, K)
    v0 = torch.round(c + dv).long()[..., None, :]
    ou = offsets[:, 0].long().view(1, 1, 1, -1, 1)
    ov = offsets[:, 1].long().view(1, 1, 1, -1, 1)
    cell = ((v0 + ov).clamp_(-1, hs) + 1) * wp + (u0 + ou).clamp_(-1, ws) + 1  # (B, J, S, T, K)
    cell += cached_grid(("vote_map_starts", k, hp * wp), dev,
                        lambda: torch.arange(k, device=dev).view(1, 1, 1, 1, -1) * (hp * wp))
    padded = F.pad(sim.reshape(b, k, hs, ws), (1, 1, 1, 1)).reshape(b, -1)  # (B, K * Hp * Wp)
    picked = torch.gather(padded, 1, cell.reshape(b, -1)).reshape(b, -1, k)  # (B, H, K)
    w = weight.float()
    score = torch.bmm(picked, w[..., None])[..., 0] / w.sum(1, keepdim=True).clamp_min(1e-6)  # (B, H)
    j, s_n, t_n = yaws.shape[1], scales.shape[0], offsets.shape[0]
    logits = (score * inv_temperature.float()).reshape(b, j, s_n, t_n)
    best = score.detach().argmax(dim=1)
    bj, bs, bt = best // (s_n * t_n), (best // t_n) % s_n, best % t_n
    ar = torch.arange(b, device=dev)
    centre = torch.stack([c + du[ar, bj, bs] + offsets[bt, 0, None], c + dv[ar, bj, bs] + offsets[bt, 1, None]], -1)
    origin = torch.zeros(b, 2, device=dev)
    if not scale_known and cam_xy_base_m is not None:
        origin = cam_xy_base_m.reshape(b, 2).float()
    return PoseVote(logits, yaws, scales, offsets, centre, yaws[ar, bj], scales[bs], m_per_cell.reshape(b).float(),
                    origin)


def vote_evidence(vote: PoseVote, inv_temperature: torch.Tensor, cfg: SparseDepthConfig) -> dict[str, np.ndarray]:
    """How decisive the pose vote was, per batch item (the low-evidence gate's inputs).

    ``vote_peak``: the best hypothesis' score (weighted mean cosine similarity of the keypoints
    at the cells it predicts). ``vote_margin``: that score minus the best score of a *rival*, a
    hypothesis more than two translation steps or two yaw steps away (another place or heading
    the scene would fit almost as well: a repeated pattern, or features that match nothing).
    ``vote_mass``: softmax probability of the hypotheses near the best one (sharpness).
    Returns numpy arrays of shape (B,).
    """
    logits = vote.logits.detach().float()
    b, j, s_n, t_n = logits.shape
    score = logits / inv_temperature.detach().float().clamp_min(1e-6)
    flat = score.reshape(b, -1)
    best = flat.argmax(dim=1)
    bj, bt = best // (s_n * t_n), best % t_n
    ar = torch.arange(b, device=logits.device)
    d_cells = (vote.offset_cells[None] - vote.offset_cells[bt][:, None]).norm(dim=-1)  # (B, T)
    dyaw = torch.remainder(vote.yaw_rad - vote.yaw_rad[ar, bj][:, None] + math.pi, 2 * math.pi) - math.pi  # (B, J)
    yaw_step = float((vote.yaw_rad[0, 1] - vote.yaw_rad[0, 0]).abs()) if j > 1 else 1.0
    near_t = d_cells <= 2.0 * cfg.vote_step_cells + 1e-6
    near_j = dyaw.abs() <= 2.0 * yaw_step + 1e-6
    near = near_j[:, :, None, None] & near_t[:, None, None, :]  # (B, J, 1, T) -> broadcast over S
    near = near.expand(b, j, s_n, t_n).reshape(b, -1)
    rival = flat.masked_fill(near, float("-inf")).max(dim=1).values
    peak = flat[ar, best]
    margin = torch.where(torch.isfinite(rival), peak - rival, peak)
    prob = torch.softmax(logits.reshape(b, -1), dim=1)
    mass = (prob * near.float()).sum(1)
    return {"vote_peak": peak.cpu().numpy(), "vote_margin": margin.cpu().numpy(), "vote_mass": mass.cpu().numpy()}


def pose_from_correspondences(
    src_xy: torch.Tensor,
    dst_xy_m: torch.Tensor,
    weight: torch.Tensor,
    scale_known: bool,
    cam_xy_base_m: torch.Tensor,
    robust_iterations: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable weighted Procrustes on the matcher's correspondences.

    ``scale_known=True`` (metric depth / flat ground): ``src_xy`` in base_link, rigid fit.
    ``scale_known=False`` (relative / inverse depth): ``src_xy`` camera-centred, Sim(2) fit
    ``dst = s R src + t``, then (as :func:`camera.T_patch_base_from_camera_centred`)
    ``T_patch_base = (t - R c, yaw)`` with ``c = cam_xy_base_m``.

    Returns ``(T_patch_base (B, 3) = (x_m, y_m, yaw_rad), scale (B,))`` (scale 1 when known).
    """
    from ..core.procrustes import procrustes_torch, robust_procrustes_torch

    src, dst, w = src_xy.float(), dst_xy_m.float(), weight.float()
    if robust_iterations > 0:
        pose, _ = robust_procrustes_torch(src, dst, w, with_scale=not scale_known, iterations=robust_iterations)
    else:
        pose = procrustes_torch(src, dst, w, with_scale=not scale_known)
    x, y = pose.x_m, pose.y_m
    if not scale_known:
        c = cam_xy_base_m.float()
        cy, sy = torch.cos(pose.yaw_rad), torch.sin(pose.yaw_rad)
        x = x - (cy * c[:, 0] - sy * c[:, 1])
        y = y - (sy * c[:, 0] + cy * c[:, 1])
    return torch.stack([x, y, pose.yaw_rad], dim=-1), pose.scale


# ----------------------------------------------------------------------------- network
@dataclass
class SparseDepthOutput:
    """What :meth:`SparseDepthMatcher.forward` returns (B batch, K = cfg.num_keypoints,
    P = Hs * Ws satellite cells, Hf x Wf ground cells).

    Attributes:
        score_map: (B, Hf, Wf) keypoint scores in (0, 1).
        kp_index: (B, K) long, selected cells (row-major into Hf x Wf).
        kp_score: (B, K) score of each selected keypoint (differentiable).
        src_valid: (B, K) bool, the keypoint was selected and lifted validly.
        src_xy: (B, K, 2) lifted points: base_link metres (scale_known) or camera-centred
            relative units (not scale_known); 0 where invalid.
        match_uv_cells: (B, K, 2) sub-cell matched satellite feature coordinates (u, v).
        match_logits: (B, K, P) similarity logits (for optional losses).
        confidence: (B, K) matching confidence in [0, 1].
        dst_xy_m: (B, K, 2) matched points in the patch frame (ENU metres).
        weight: (B, K) = kp_score * confidence * src_valid, the Procrustes weights in [0, 1].
        scale_known: False for relative / inverse depth (src camera-centred, Sim(2)).
        T_patch_base: (B, 3) (x_m, y_m, yaw_rad) of base_link in the patch frame.
        scale: (B,) metres per relative depth unit (ones when scale_known).
        vote: the pose vote (:class:`PoseVote`), None when ``cfg.vote_radius_cells`` is 0.
    """

    score_map: torch.Tensor
    kp_index: torch.Tensor
    kp_score: torch.Tensor
    src_valid: torch.Tensor
    src_xy: torch.Tensor
    match_uv_cells: torch.Tensor
    match_logits: torch.Tensor
    confidence: torch.Tensor
    dst_xy_m: torch.Tensor
    weight: torch.Tensor
    scale_known: bool
    T_patch_base: torch.Tensor
    scale: torch.Tensor
    vote: PoseVote | None = None


class SparseDepthMatcher(nn.Module):
    """The depth-prior sparse cross-view matcher. See the module docstring for conventions."""

    def __init__(self, cfg: SparseDepthConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, blocks = cfg.encoder_widths, cfg.blocks_per_stage
        self.ground_encoder = ResNetEncoder(w, blocks, cfg.feature_dim, cfg.ground_stride)
        self.sat_encoder = ResNetEncoder(w, blocks, cfg.feature_dim, cfg.sat_stride, cfg.sat_norm)
        self.score_head = ScoreHead(cfg.feature_dim)
        self.log_inv_temperature = nn.Parameter(torch.tensor(-math.log(cfg.init_temperature)))
        self.log_vote_inv_temperature = nn.Parameter(torch.tensor(math.log(cfg.init_vote_inv_temperature)))

    # -- stages (public: the inference wrapper caches satellite features) ---------------------
    def encode_sat(self, sat_rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> L2-normalized satellite features (B, D, S/s, S/s).

        With ``sat_rotations = 4``: ``mean_k rot90^-k(E(rot90^k x))``, which is exactly
        equivariant to 90-degree rotations of the patch (tested)."""
        if self.cfg.sat_rotations == 1:
            feat = self.sat_encoder(sat_rgb)
        else:
            rots = torch.cat([torch.rot90(sat_rgb, k, dims=(2, 3)) for k in range(4)], dim=0)
            out = self.sat_encoder(rots).chunk(4, dim=0)
            feat = torch.stack([torch.rot90(f, -k, dims=(2, 3)) for k, f in enumerate(out)]).mean(0)
        return F.normalize(feat.float(), dim=1)

    def encode_ground(self, ground_rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, Hg, Wg) -> (descriptor map (B, D, Hf, Wf), score map (B, Hf, Wf))."""
        feat = self.ground_encoder(ground_rgb)
        return feat, self.score_head(feat)

    def forward(
        self,
        ground_rgb: torch.Tensor,
        sat_rgb: torch.Tensor | None,
        sat_m_per_px: torch.Tensor,
        rays_base: torch.Tensor,
        ray_valid: torch.Tensor,
        cam_xyz_base_m: torch.Tensor,
        kp_grid_norm: torch.Tensor,
        depth: torch.Tensor | None = None,
        depth_kind: str = "none",
        sat_features: torch.Tensor | None = None,
        prior_yaw_rad: torch.Tensor | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> SparseDepthOutput:
        """Match a batch of ground images against satellite patches (no yaw prior needed).

        Args:
            ground_rgb: (B, 3, Hg, Wg) float in [0, 1], ``cfg.ground_size_px``.
            sat_rgb: (B, 3, S, S) float in [0, 1], S = ``cfg.sat_size_px``, north-up patch centred
                on the position prior; may be None when ``sat_features`` is given.
            sat_m_per_px: (B,) metres per pixel of ``sat_rgb`` (after any resize).
            rays_base: (B, N, 3), ray_valid: (B, N), cam_xyz_base_m: (B, 3), kp_grid_norm: (B, N, 2):
                :class:`KeypointRays` fields of each sample's camera, N = Hf * Wf.
            depth: (B, Hd, Wd) depth map aligned with the camera image (any resolution), or None
                for the flat-ground fallback. Values <= 0 / NaN / inf are holes.
            depth_kind: "metric" (optical z in metres), "relative" (optical z up to an unknown
                scale), "inverse" (1 / relative z), or "none" (flat ground; ``depth`` ignored).
                One kind per batch.
            sat_features: optional (B, D, Hs, Ws) cached output of :meth:`encode_sat`.
            prior_yaw_rad: (B,) prior yaw of base_link in the patch frame (known orientation:
                the pose vote searches ``known_yaw_range_deg`` around it), or None (unknown
                orientation: the vote searches the whole circle).
            on_stage: optional callback called with a stage name after each stage
                ("ground_encoder", "matching" = similarity + pose vote + sub-cell matches,
                "procrustes"); the inference wrapper times stages with it.
        Returns:
            :class:`SparseDepthOutput` (keypoints, lifted points, matches, weights, pose, scale).
        Raises:
            GeometryError: wrong shapes or unknown ``depth_kind``.
        """
        cfg = self.cfg
        hf, wf = cfg.ground_cells
        n = hf * wf
        b = ground_rgb.shape[0]
        if depth_kind not in DEPTH_KINDS:
            raise GeometryError(f"depth_kind must be one of {DEPTH_KINDS}, got {depth_kind!r}")
        if depth_kind != "none" and depth is None:
            raise GeometryError(f"depth_kind {depth_kind!r} needs a depth map (pass depth_kind='none' without one)")
        if ground_rgb.dim() != 4 or tuple(ground_rgb.shape[1:]) != (3, *cfg.ground_size_px):
            raise GeometryError(
                f"ground_rgb must have shape (B, 3, {cfg.ground_size_px[0]}, {cfg.ground_size_px[1]}), "
                f"got {tuple(ground_rgb.shape)}"
            )
        for name, t, shape in (
            ("rays_base", rays_base, (b, n, 3)),
            ("ray_valid", ray_valid, (b, n)),
            ("cam_xyz_base_m", cam_xyz_base_m, (b, 3)),
            ("kp_grid_norm", kp_grid_norm, (b, n, 2)),
        ):
            if tuple(t.shape) != shape:
                raise GeometryError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
        if depth is not None and depth_kind != "none" and (depth.dim() != 3 or depth.shape[0] != b):
            raise GeometryError(f"depth must have shape ({b}, Hd, Wd), got {tuple(depth.shape)}")
        hs = cfg.sat_cells
        if sat_features is None:
            if sat_rgb is None or tuple(sat_rgb.shape) != (b, 3, cfg.sat_size_px, cfg.sat_size_px):
                got = None if sat_rgb is None else tuple(sat_rgb.shape)
                raise GeometryError(f"sat_rgb must have shape ({b}, 3, {cfg.sat_size_px}, {cfg.sat_size_px}), got {got}")
            sat_features = self.encode_sat(sat_rgb)
        elif tuple(sat_features.shape) != (b, cfg.feature_dim, hs, hs):
            raise GeometryError(
                f"sat_features must have shape ({b}, {cfg.feature_dim}, {hs}, {hs}), got {tuple(sat_features.shape)}"
            )
        m_per_cell = sat_m_per_px.reshape(b).float() * cfg.sat_stride

        # keypoints: lift every candidate first so top-k only picks valid ones
        z = None if depth_kind == "none" else sample_depth_nearest(depth.float(), kp_grid_norm)
        xy_all, valid_all = lift_keypoints(
            rays_base.float(), ray_valid, cam_xyz_base_m.float(), z, depth_kind, cfg.ground_z_m, cfg.max_range_m
        )
        stage = on_stage or (lambda name: None)
        feat_g, score_map = self.encode_ground(ground_rgb)
        stage("ground_encoder")
        index, selected = select_keypoints(score_map, valid_all, cfg.num_keypoints, cfg.nms_radius_cells)
        kp_score = torch.gather(score_map.reshape(b, n), 1, index)
        src_valid = selected & torch.gather(valid_all, 1, index)
        src = torch.gather(xy_all, 1, index[..., None].expand(-1, -1, 2))
        desc = torch.gather(feat_g.float().flatten(2), 2, index[:, None, :].expand(-1, feat_g.shape[1], -1))
        desc = F.normalize(desc.transpose(1, 2), dim=-1)  # (B, K, D)

        scale_known = depth_kind in ("metric", "none")
        sim = descriptor_similarity(desc, sat_features)  # (B, K, Hs * Ws), for the vote and the matches
        vote = None
        if cfg.vote_radius_cells > 0:
            if prior_yaw_rad is not None and tuple(prior_yaw_rad.shape) != (b,):
                raise GeometryError(f"prior_yaw_rad must have shape ({b},), got {tuple(prior_yaw_rad.shape)}")
            vote = vote_pose(sim.reshape(b, -1, hs, hs), src, kp_score * src_valid.float(), scale_known,
                             m_per_cell, prior_yaw_rad, cfg, self.log_vote_inv_temperature.exp(),
                             cam_xyz_base_m[:, :2])
        uv, conf, logits = match_descriptors(desc, sat_features, self.log_inv_temperature.exp(), cfg.refine_radius_cells,
                                             None if vote is None else vote.best_centre_cells, sim)
        dst = sat_cell_to_patch_m(uv, hs, m_per_cell)
        weight = kp_score * conf * src_valid.float()
        stage("matching")
        pose, scale = pose_from_correspondences(
            src, dst, weight, scale_known, cam_xyz_base_m[:, :2], cfg.robust_iterations
        )
        stage("procrustes")
        return SparseDepthOutput(
            score_map, index, kp_score, src_valid, src, uv, logits, conf, dst, weight, scale_known, pose, scale, vote
        )
