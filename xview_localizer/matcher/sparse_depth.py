"""Depth-prior sparse cross-view matcher (seed paper 000: local feature matching + monocular
depth priors + scale-aware Procrustes): the network :class:`SparseDepthMatcher`, its output,
the in-network Procrustes, and (re-exported) every public name of the modules it is built from.

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

Modules (every public name is importable from here too)::

    sparse_config    SparseDepthConfig, presets, DEPTH_KINDS
    sparse_geometry  keypoint rays, depth lookup, lifting to BEV, satellite cell -> patch metres
    sparse_blocks    score head, top-k + NMS, descriptor similarity, sub-cell match
    sparse_vote      the pose vote over (yaw, depth scale, translation) hypotheses
    sparse_depth     SparseDepthMatcher (wires the above), SparseDepthOutput,
                     pose_from_correspondences

Conventions (docs/conventions.md, docs/camera.md, docs/sparse_depth.md): keypoint pixels, rays,
lifting, depth lookup and the satellite cell grid are in :mod:`.sparse_geometry`; hypotheses and
their order in :mod:`.sparse_vote`; tensor shapes of one forward pass in
:class:`SparseDepthOutput`.

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
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import GeometryError
from .dense_blocks import ResNetEncoder
from .sparse_blocks import ScoreHead, descriptor_similarity, match_descriptors, select_keypoints
from .sparse_config import (
    DEPTH_KINDS,
    SPARSE_PRESETS,
    DepthKind,
    SparseDepthConfig,
    encoder_input,
    sparse_preset,
)
from .sparse_geometry import (
    KeypointRays,
    KeypointRaysCache,
    keypoint_rays,
    lift_keypoints,
    sample_depth_nearest,
    sat_cell_to_patch_m,
)
from .sparse_vote import PoseVote, max_filter2d, position_log_prior, vote_evidence, vote_pose, yaw_hypotheses

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
    "vote_evidence",
    "position_log_prior",
    "pose_from_correspondences",
    "SparseDepthOutput",
    "SparseDepthMatcher",
]


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
    ``dst = s R src + t``, then (as :func:`lifting.T_patch_base_from_camera_centred`)
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
        sat_rgb = encoder_input(sat_rgb, self.cfg.input_mode)
        if self.cfg.sat_rotations == 1:
            feat = self.sat_encoder(sat_rgb)
        else:
            rots = torch.cat([torch.rot90(sat_rgb, k, dims=(2, 3)) for k in range(4)], dim=0)
            out = self.sat_encoder(rots).chunk(4, dim=0)
            feat = torch.stack([torch.rot90(f, -k, dims=(2, 3)) for k, f in enumerate(out)]).mean(0)
        return F.normalize(feat.float(), dim=1)

    def encode_ground(self, ground_rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, Hg, Wg) -> (descriptor map (B, D, Hf, Wf), score map (B, Hf, Wf))."""
        feat = self.ground_encoder(encoder_input(ground_rgb, self.cfg.input_mode))
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
        prior_info_xy: torch.Tensor | None = None,
        prior_xy_m: torch.Tensor | None = None,
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
            prior_info_xy: optional (B, 2, 2) inverse covariance (1 / m^2) of a Gaussian prior on
                the base_link position about the patch centre (patch ENU): the pose vote becomes
                a posterior (:func:`~.sparse_vote.vote_pose`); None = flat, as in training.
            prior_xy_m: optional (B, 2) that prior's mean in the patch frame (None = the centre).
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
            if prior_info_xy is not None and tuple(prior_info_xy.shape) != (b, 2, 2):
                raise GeometryError(f"prior_info_xy must have shape ({b}, 2, 2), got {tuple(prior_info_xy.shape)}")
            if prior_xy_m is not None and tuple(prior_xy_m.shape) != (b, 2):
                raise GeometryError(f"prior_xy_m must have shape ({b}, 2), got {tuple(prior_xy_m.shape)}")
            vote = vote_pose(sim.reshape(b, -1, hs, hs), src, kp_score * src_valid.float(), scale_known,
                             m_per_cell, prior_yaw_rad, cfg, self.log_vote_inv_temperature.exp(),
                             cam_xyz_base_m[:, :2], prior_info_xy, prior_xy_m)
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
