"""Network blocks of the depth-prior sparse matcher (:mod:`.sparse_depth`): the keypoint score
head, top-k keypoint selection with NMS, descriptor similarity to every satellite cell and the
sub-cell soft-argmax match. The encoders are :class:`~.dense_blocks.ResNetEncoder` (shared with
the dense-flow matcher).

Shapes: ``B`` batch, ``Hf x Wf`` ground feature cells, ``K`` keypoints, ``D`` descriptor
channels, ``Hs x Ws`` satellite feature cells (``P = Hs * Ws``, row-major). Descriptors (B, K, D)
and satellite features (B, D, Hs, Ws) are L2-normalized over D; similarities are cosines,
float32 outside any autocast. Satellite coordinates are ``(u, v)`` = (column, row) in cells,
continuous (sub-cell); :func:`.sparse_geometry.sat_cell_to_patch_m` turns them into patch metres.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .grids import cached_grid

__all__ = ["ScoreHead", "select_keypoints", "descriptor_similarity", "match_descriptors"]


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
