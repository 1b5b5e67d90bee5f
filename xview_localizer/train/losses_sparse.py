"""Losses of the depth-prior sparse matcher (:mod:`xview_localizer.matcher.sparse_depth`).

Weak supervision, as in the paper: only the camera pose is known. The pose predicted by the
differentiable weighted Procrustes is compared with the ground truth:

* position: L1 translation error in metres, ``|dx| + |dy|``;
* yaw: ``|wrap(yaw - yaw_gt)|`` in degrees (wrapped to [-180, 180), so unknown orientation
  works);

``L = w_xy * L_xy + w_yaw * L_yaw`` (batch mean). Gradients reach the descriptors (through the
soft-argmax matched locations and the confidences), the keypoint score head (through the
Procrustes weights) and both encoders.

Optional extra terms (off by default; see docs/sparse_depth.md):

* ``match_ce_weight``: cross-entropy of each valid keypoint's similarity distribution against
  the satellite cell where the ground-truth pose puts its lifted point (needs the depth scale:
  metric depth / flat ground, or ``depth_scale_gt`` for relative depth). This is stronger than
  weak supervision and wrong for flat-ground points that are not on the ground; use it as a
  warm-up only.
* ``scale_weight``: ``|log(s / s_gt)|`` for relative depth when the true scale is known.

``vote_ce_weight`` (on by default): cross-entropy of the pose vote
(:func:`xview_localizer.matcher.sparse_depth.vote_pose`) against the hypothesis nearest the
true pose: the nearest yaw and translation cell, **summed over the depth-scale hypotheses**
(the true scale of relative depth is not used), so it needs the camera pose only, like the
paper's weak supervision. It trains the descriptors to agree on one pose before any keypoint
commits to a match, which the pose losses through the solver alone did not achieve on CPU-scale
training (docs/sparse_depth.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from ..matcher.sparse_depth import SparseDepthOutput
from .losses import wrap_rad

__all__ = ["SparseLossConfig", "SparseLossTerms", "pose_losses", "match_ce_loss", "vote_ce_loss", "sparse_depth_loss"]


@dataclass(frozen=True)
class SparseLossConfig:
    """Weights of the loss terms (all >= 0, finite)."""

    xy_weight: float = 1.0  # per metre of L1 translation error
    yaw_weight: float = 1.0  # per degree of yaw error
    match_ce_weight: float = 0.0  # optional, see the module docstring
    scale_weight: float = 0.0  # optional, relative depth with known true scale
    vote_ce_weight: float = 10.0  # pose-only vote cross-entropy, see the module docstring

    def __post_init__(self) -> None:
        for f in ("xy_weight", "yaw_weight", "match_ce_weight", "scale_weight", "vote_ce_weight"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"SparseLossConfig.{f} must be a finite number >= 0, got {v!r}")


@dataclass
class SparseLossTerms:
    """``total`` (differentiable) and detached floats of every term."""

    total: torch.Tensor
    xy_m: float
    yaw_deg: float
    match_ce: float
    scale: float
    vote_ce: float = 0.0


def pose_losses(pose: torch.Tensor, pose_gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3) (x_m, y_m, yaw_rad) -> (mean L1 translation error in m, mean |yaw error| in deg)."""
    xy_m = (pose[:, :2] - pose_gt[:, :2]).abs().sum(dim=-1).mean()
    yaw_deg = torch.rad2deg(wrap_rad(pose[:, 2] - pose_gt[:, 2])).abs().mean()
    return xy_m, yaw_deg


def match_ce_loss(
    out: SparseDepthOutput,
    pose_gt: torch.Tensor,
    sat_m_per_px: torch.Tensor,
    sat_stride: int,
    cam_xy_base_m: torch.Tensor | None = None,
    depth_scale_gt: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of the similarity logits against the satellite cell of each keypoint's
    ground-truth patch position. Keypoints that are invalid, or fall outside the patch, are
    ignored. For relative depth (``out.scale_known`` False) the true base_link point is
    ``s_gt * src + c`` and both ``depth_scale_gt (B,)`` and ``cam_xy_base_m (B, 2)`` are needed.
    Returns 0 when no keypoint qualifies."""
    b, k, p = out.match_logits.shape
    cells = int(round(math.sqrt(p)))
    src = out.src_xy.float()
    if not out.scale_known:
        if depth_scale_gt is None or cam_xy_base_m is None:
            raise ConfigError("match_ce_loss: relative depth needs depth_scale_gt and cam_xy_base_m")
        src = depth_scale_gt.view(-1, 1, 1).float() * src + cam_xy_base_m[:, None, :].float()
    c, s = torch.cos(pose_gt[:, 2])[:, None], torch.sin(pose_gt[:, 2])[:, None]
    east = c * src[..., 0] - s * src[..., 1] + pose_gt[:, 0:1]
    north = s * src[..., 0] + c * src[..., 1] + pose_gt[:, 1:2]
    m = (sat_m_per_px.view(-1, 1).float() * sat_stride)
    half = (cells - 1) / 2.0
    j = torch.round(east / m + half)
    i = torch.round(half - north / m)
    ok = out.src_valid & (i >= 0) & (i < cells) & (j >= 0) & (j < cells)
    target = torch.where(ok, i * cells + j, torch.zeros_like(i)).long()
    ce = F.cross_entropy(out.match_logits.reshape(b * k, p).float(), target.reshape(-1), reduction="none")
    okf = ok.reshape(-1).float()
    return (ce * okf).sum() / okf.sum().clamp_min(1.0)


def vote_ce_loss(out: SparseDepthOutput, pose_gt: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``out.vote`` against the hypothesis nearest the true pose (nearest yaw,
    nearest translation cell of the point the vote places, ``vote.origin_xy_base_m``; the scale
    hypotheses are summed). Returns 0 without a vote."""
    vote = out.vote
    if vote is None:
        return torch.zeros((), device=pose_gt.device)
    b, j, s_n, t_n = vote.logits.shape
    yaw_gt = pose_gt[:, 2:3].float()
    j_true = wrap_rad(vote.yaw_rad.float() - yaw_gt).abs().argmin(dim=1)  # (B,)
    c, s = torch.cos(pose_gt[:, 2].float()), torch.sin(pose_gt[:, 2].float())
    ox, oy = vote.origin_xy_base_m[:, 0], vote.origin_xy_base_m[:, 1]
    xy = pose_gt[:, :2].float() + torch.stack([c * ox - s * oy, s * ox + c * oy], dim=-1)
    m = vote.m_per_cell.reshape(-1, 1).float()
    duv = torch.stack([xy[:, 0], -xy[:, 1]], dim=-1) / m  # (B, 2) cells
    t_true = ((vote.offset_cells[None] - duv[:, None]) ** 2).sum(-1).argmin(dim=1)  # (B,)
    logits = vote.logits.float()
    ar = torch.arange(b, device=logits.device)
    pos = torch.logsumexp(logits[ar, j_true, :, t_true], dim=-1)
    return (torch.logsumexp(logits.reshape(b, -1), dim=-1) - pos).mean()


def sparse_depth_loss(
    out: SparseDepthOutput,
    pose_gt: torch.Tensor,
    cfg: SparseLossConfig | None = None,
    *,
    sat_m_per_px: torch.Tensor | None = None,
    sat_stride: int = 4,
    cam_xy_base_m: torch.Tensor | None = None,
    depth_scale_gt: torch.Tensor | None = None,
) -> SparseLossTerms:
    """The training loss: weak pose supervision (+ optional terms).

    Args:
        out: the model output. pose_gt: (B, 3) true ``T_patch_base`` (x_m, y_m, yaw_rad).
        cfg: term weights. sat_m_per_px (B,) and sat_stride: needed for ``match_ce_weight > 0``.
        cam_xy_base_m (B, 2), depth_scale_gt (B,): relative depth only (optional terms).
    """
    cfg = cfg or SparseLossConfig()
    xy_m, yaw_deg = pose_losses(out.T_patch_base.float(), pose_gt.float())
    total = cfg.xy_weight * xy_m + cfg.yaw_weight * yaw_deg
    ce = torch.zeros((), device=total.device)
    if cfg.match_ce_weight > 0:
        if sat_m_per_px is None:
            raise ConfigError("sparse_depth_loss: match_ce_weight > 0 needs sat_m_per_px")
        ce = match_ce_loss(out, pose_gt.float(), sat_m_per_px, sat_stride, cam_xy_base_m, depth_scale_gt)
        total = total + cfg.match_ce_weight * ce
    vce = torch.zeros((), device=total.device)
    if cfg.vote_ce_weight > 0 and out.vote is not None:
        vce = vote_ce_loss(out, pose_gt.float())
        total = total + cfg.vote_ce_weight * vce
    sc = torch.zeros((), device=total.device)
    if cfg.scale_weight > 0 and not out.scale_known and depth_scale_gt is not None:
        sc = torch.log(out.scale.float().clamp_min(1e-6) / depth_scale_gt.float()).abs().mean()
        total = total + cfg.scale_weight * sc
    return SparseLossTerms(total, float(xy_m.detach()), float(yaw_deg.detach()), float(ce.detach()), float(sc.detach()),
                           float(vce.detach()))
