"""Training losses of the dense-flow matcher (seed paper 001, section 3.4, eqs. 4-7).

* eq. 4, matching loss ``L_m``: L1 between predicted and ground-truth flow, over the valid BEV
  cells. Flow is in satellite-feature cells (see :mod:`xview_localizer.matcher.dense_flow`);
  the ground truth comes from the true pose (:func:`gt_flow_from_pose`). The paper writes a
  sum over points; we take the mean over valid cells so the loss does not scale with the
  resolution (the relative weights alpha and beta then stay meaningful across presets).
* eq. 5, confidence loss ``L_c``: ``S sigma(d~ / kappa) + (1 - S) sigma(-d~ / kappa)`` with
  ``d`` the end-point error of each match (detached), standardised over the valid cells of each
  sample (``d~ = (d - mean) / std``); mean over valid cells. kappa: 200, then 20. Eq. 5 has a
  floor ``min(sigma(d~/kappa), sigma(-d~/kappa))`` per cell (about 0.5 at kappa = 200) that no
  network can go below; we subtract it. It is constant w.r.t. the network (``d`` is detached), so
  the gradients are exactly eq. 5's, and the loss is 0 at its optimum (so "the loss fell 10x"
  is a meaningful statement).
* eq. 6, position loss ``L_p``: ``|yaw_gt - yaw|`` (degrees, wrapped) ``+ |t_gt - t|_1``
  (metres), from the Procrustes pose of the last iteration.
* eq. 7, total: ``beta L_p + sum_l gamma^(L-1-l) (L_m^l + alpha L_c^l)``, alpha = 100, beta 1
  then 10. The paper sums the iterations with equal weights (``gamma = 1``); RAFT's
  ``gamma = 0.8`` is available.

Not in the paper (off by default, ``LossConfig.corr_weight = 0``): a correlation loss
``L_x``, the cross-entropy of the softmax over satellite cells of each valid BEV cell's row of
the finest correlation volume against its true cell (bilinear soft target; cells whose truth
falls outside the patch are skipped). It gives both encoders a direct, dense signal from the
first step, where eqs. 4-6 reach them only through the GRU's correlation lookups; on two CPU
cores it is what makes a few thousand steps enough to learn (docs/dense_flow.md, "Training").
Total with it: ``eq. 7 + corr_weight * L_x``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.errors import ConfigError
from ..matcher.dense_flow import DenseFlowOutput, gt_flow_from_pose

__all__ = ["LossConfig", "LossTerms", "matching_loss", "confidence_loss", "position_loss", "correlation_loss",
           "dense_flow_loss"]


@dataclass(frozen=True)
class LossConfig:
    """Weights of eq. 7 and the schedule of the paper (values switch at ``switch_epoch``)."""

    alpha: float = 100.0
    beta_start: float = 1.0
    beta_end: float = 10.0
    kappa_start: float = 200.0
    kappa_end: float = 20.0
    switch_epoch: int = 15
    gamma: float = 1.0
    corr_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta_start", "beta_end", "corr_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0.0):
                raise ConfigError(f"LossConfig.{name} must be finite and >= 0, got {v}")
        for name in ("kappa_start", "kappa_end"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0.0):
                raise ConfigError(f"LossConfig.{name} must be finite and > 0, got {v}")
        if not (0.0 < self.gamma <= 1.0):
            raise ConfigError(f"LossConfig.gamma must lie in (0, 1], got {self.gamma}")
        if self.switch_epoch < 0:
            raise ConfigError(f"LossConfig.switch_epoch must be >= 0, got {self.switch_epoch}")

    def beta(self, epoch: int) -> float:
        return self.beta_start if epoch < self.switch_epoch else self.beta_end

    def kappa(self, epoch: int) -> float:
        return self.kappa_start if epoch < self.switch_epoch else self.kappa_end


@dataclass
class LossTerms:
    """Total loss (differentiable scalar) and its detached parts for logging."""

    total: torch.Tensor
    matching: float
    confidence: float
    position: float
    epe_cells: float
    corr: float = 0.0


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x (B, H, W)`` over ``mask``; 0 when the mask is empty."""
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def matching_loss(flow: torch.Tensor, flow_gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eq. 4: L1 flow error (B, 2, H, W) summed over (du, dv), mean over valid cells."""
    return _masked_mean((flow - flow_gt).abs().sum(dim=1), valid)


def confidence_loss(
    confidence: torch.Tensor, flow: torch.Tensor, flow_gt: torch.Tensor, valid: torch.Tensor, kappa: float
) -> torch.Tensor:
    """Eq. 5 with the per-sample standardised end-point error ``d~`` (detached)."""
    with torch.no_grad():
        d = torch.linalg.vector_norm(flow - flow_gt, dim=1)  # (B, H, W)
        n = valid.sum(dim=(1, 2)).clamp_min(1.0)
        mean = (d * valid).sum(dim=(1, 2)) / n
        var = (((d - mean.view(-1, 1, 1)) ** 2) * valid).sum(dim=(1, 2)) / n
        d_std = (d - mean.view(-1, 1, 1)) / var.sqrt().clamp_min(1e-6).view(-1, 1, 1)
        s_pos = torch.sigmoid(d_std / kappa)
        s_neg = torch.sigmoid(-d_std / kappa)
        floor = torch.minimum(s_pos, s_neg)
    per_cell = confidence * s_pos + (1.0 - confidence) * s_neg - floor
    return _masked_mean(per_cell, valid)


def wrap_rad(angle_rad: torch.Tensor) -> torch.Tensor:
    """Wrap to [-pi, pi)."""
    return torch.remainder(angle_rad + math.pi, 2.0 * math.pi) - math.pi


def position_loss(pose: torch.Tensor, pose_gt: torch.Tensor) -> torch.Tensor:
    """Eq. 6: ``|yaw error|`` in degrees + L1 translation error in metres, batch mean.
    ``pose``, ``pose_gt``: (B, 3) (x_m, y_m, yaw_rad)."""
    yaw_err_deg = torch.rad2deg(wrap_rad(pose[:, 2] - pose_gt[:, 2])).abs()
    t_err_m = (pose[:, :2] - pose_gt[:, :2]).abs().sum(dim=-1)
    return (yaw_err_deg + t_err_m).mean()


def correlation_loss(corr_volume: torch.Tensor, flow_gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each valid BEV cell's correlation row against its true satellite cell.

    Args:
        corr_volume: (B, H*W, H, W) logits, BEV cell ``i*W+j`` against satellite cell (v, u).
        flow_gt: (B, 2, H, W) true flow in cells; the true cell of BEV cell (i, j) is
            ``(u, v) = (j + du, i + dv)``.
        valid: (B, H, W) BEV validity.
    Returns:
        scalar: mean over valid cells whose truth lies inside the patch (0 when there are none).
        The target is the bilinear split of the fractional true cell over its 4 neighbours.
    """
    b, n, h, w = corr_volume.shape
    jj, ii = torch.meshgrid(torch.arange(w, device=flow_gt.device, dtype=flow_gt.dtype),
                            torch.arange(h, device=flow_gt.device, dtype=flow_gt.dtype), indexing="xy")
    u = (jj + flow_gt[:, 0]).reshape(b, n)
    v = (ii + flow_gt[:, 1]).reshape(b, n)
    inside = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    mask = valid.reshape(b, n).float() * inside.float()
    u = u.clamp(0, w - 1)
    v = v.clamp(0, h - 1)
    u0 = u.floor().clamp(max=w - 2)
    v0 = v.floor().clamp(max=h - 2)
    fu, fv = u - u0, v - v0
    logp = torch.log_softmax(corr_volume.float().reshape(b, n, h * w), dim=-1)
    nll = torch.zeros(b, n, device=flow_gt.device)
    for du, dv, wgt in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        idx = ((v0 + dv) * w + (u0 + du)).long().unsqueeze(-1)
        nll = nll - wgt * torch.gather(logp, 2, idx).squeeze(-1)
    return (nll * mask).sum() / mask.sum().clamp_min(1.0)


def dense_flow_loss(
    out: DenseFlowOutput,
    T_patch_base_gt: torch.Tensor,
    prior_yaw_rad: torch.Tensor,
    m_per_cell: torch.Tensor,
    cfg: LossConfig,
    epoch: int,
) -> LossTerms:
    """Eq. 7 over all GRU iterations of ``out``.

    Args:
        out: the network output (flows and confidences per iteration, final pose).
        T_patch_base_gt: (B, 3) true (x_m, y_m, yaw_rad) of base_link in the patch frame.
        prior_yaw_rad: (B,) the prior yaw the BEV was rotated by.
        m_per_cell: (B,) metres per satellite-feature cell.
        cfg: weights and schedule; epoch: selects beta and kappa.
    """
    cells = out.flows[-1].shape[-1]
    flow_gt = gt_flow_from_pose(T_patch_base_gt.float(), prior_yaw_rad.float(), m_per_cell.float(), cells)
    valid = out.bev_valid.float()
    kappa = cfg.kappa(epoch)
    n_it = len(out.flows)
    lm_sum = torch.zeros((), device=flow_gt.device)
    lc_sum = torch.zeros((), device=flow_gt.device)
    total = torch.zeros((), device=flow_gt.device)
    for k, (flow, conf) in enumerate(zip(out.flows, out.confidences)):
        w = cfg.gamma ** (n_it - 1 - k)
        lm = matching_loss(flow.float(), flow_gt, valid)
        lc = confidence_loss(conf.float(), flow.float(), flow_gt, valid, kappa)
        total = total + w * (lm + cfg.alpha * lc)
        lm_sum, lc_sum = lm_sum + lm.detach(), lc_sum + lc.detach()
    lp = position_loss(out.T_patch_base.float(), T_patch_base_gt.float())
    total = total + cfg.beta(epoch) * lp
    lx = torch.zeros((), device=flow_gt.device)
    if cfg.corr_weight > 0.0 and out.corr_volume is not None:
        lx = correlation_loss(out.corr_volume, flow_gt, valid)
        total = total + cfg.corr_weight * lx
    with torch.no_grad():
        epe = _masked_mean(torch.linalg.vector_norm(out.flows[-1].float() - flow_gt, dim=1), valid)
    return LossTerms(total, float(lm_sum / n_it), float(lc_sum / n_it), float(lp.detach()), float(epe),
                     float(lx.detach()))
