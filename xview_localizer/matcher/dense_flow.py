"""Dense-flow cross-view matcher (seed paper 001, Song et al., NeurIPS 2023): config and
presets, and the full network (:class:`DenseFlowMatcher`). Its building blocks (encoders,
RefineBlock, correlation pyramid, update block) are in :mod:`.dense_blocks`, its geometry (flow
<-> metric correspondences, BEV sampling grids) in :mod:`.dense_geometry`; both are
re-exported here.

Pipeline (paper sections 3.1-3.3)::

    ground RGB ──► GroundEncoder (ResNet-style) ──► F_g ──┐
                                                          ├─ grid_sample with the BEV sampling
    ground RGB ──► ContextEncoder (same design) ──► C_g ──┘  grid (flat ground, fixed height)
                                                          ▼
                          BEV features ──► RefineBlock (7x7 conv, 3x3 residual block, 1x1 conv)
    satellite RGB ──► SatEncoder ──► F_s                  ▼
                     4-level correlation pyramid  <──  F_g2s · F_s
                                                          ▼
                ConvGRU iterations: flow (BEV cell -> satellite feature cell) + confidence
                                                          ▼
           metric correspondences (base_link -> patch frame) ──► weighted Procrustes ──► T_patch_base

Geometry conventions (satellite feature cells, the north-up BEV grid rotated by the prior yaw,
flow, correspondences; docs/conventions.md and docs/dense_flow.md): :mod:`.dense_geometry`.

Differences from the paper, on purpose: flow is kept at the feature resolution (no RAFT convex
upsampling: the pose only needs the correspondences), all norms are instance norms (batch sizes
here are tiny), and the satellite features are computed once per patch and can be cached.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, GeometryError
from .dense_blocks import (
    ConvGRU,
    CorrPyramid,
    MotionEncoder,
    RefineBlock,
    ResidualBlock,
    ResNetEncoder,
    UpdateBlock,
)
from .dense_geometry import (
    bev_grid_for_camera,
    cell_offsets_m,
    flow_to_correspondences,
    gt_flow_from_pose,
    weighted_procrustes_torch,
)
from .grids import cached_grid
from .norms import NORM_KINDS

__all__ = [
    "DenseFlowConfig",
    "preset",
    "PRESETS",
    "ResidualBlock",
    "ResNetEncoder",
    "RefineBlock",
    "CorrPyramid",
    "MotionEncoder",
    "ConvGRU",
    "UpdateBlock",
    "DenseFlowMatcher",
    "DenseFlowOutput",
    "cell_offsets_m",
    "flow_to_correspondences",
    "gt_flow_from_pose",
    "bev_grid_for_camera",
    "weighted_procrustes_torch",
]


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DenseFlowConfig:
    """Architecture and input geometry of the dense-flow matcher.

    Attributes:
        name: preset name stored in checkpoints ("paper", "compact", or a custom name).
        ground_size_px: (H, W) the ground image is resized to.
        sat_size_px: side of the square satellite input (px) the patch is resized to.
        feature_stride: 8 (paper, 1/8 resolution) or 4; encoders downsample by this.
        encoder_widths: channels of the 3 ResNet stages (paper: ResNet18's 64, 128, 256).
        blocks_per_stage: BasicBlocks per stage (ResNet18: 2).
        feature_dim: channels of the matching features (paper: 256).
        hidden_dim, context_dim: ConvGRU hidden state and context input channels.
        corr_levels: correlation pyramid levels (2x2 average pooling between levels).
        corr_radius: lookup radius in cells at every level ((2r+1)^2 samples per level).
        iters: GRU iterations (paper: 12).
        ground_z_m: height of the ground plane in base_link (flat-ground BEV projection).
        sat_norm: normalization of the satellite encoder, "instance" or "frozen" (fixed
            statistics: area feature maps cut exactly, :mod:`.norms`).
    """

    name: str = "compact"
    ground_size_px: tuple[int, int] = (128, 512)
    sat_size_px: int = 256
    feature_stride: int = 8
    encoder_widths: tuple[int, int, int] = (32, 64, 96)
    blocks_per_stage: int = 1
    feature_dim: int = 128
    hidden_dim: int = 64
    context_dim: int = 64
    corr_levels: int = 4
    corr_radius: int = 3
    iters: int = 6
    ground_z_m: float = 0.0
    sat_norm: str = "instance"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ground_size_px", tuple(int(v) for v in self.ground_size_px))
        object.__setattr__(self, "encoder_widths", tuple(int(v) for v in self.encoder_widths))
        if not self.name:
            raise ConfigError("DenseFlowConfig.name must be a non-empty string")
        if self.sat_norm not in NORM_KINDS:
            raise ConfigError(f"DenseFlowConfig.sat_norm must be one of {NORM_KINDS}, got {self.sat_norm!r}")
        if self.feature_stride not in (4, 8):
            raise ConfigError(f"DenseFlowConfig.feature_stride must be 4 or 8, got {self.feature_stride}")
        if len(self.ground_size_px) != 2 or any(v <= 0 or v % self.feature_stride for v in self.ground_size_px):
            raise ConfigError(
                "DenseFlowConfig.ground_size_px must be two positive multiples of feature_stride "
                f"{self.feature_stride}, got {self.ground_size_px}"
            )
        if self.sat_size_px <= 0 or self.sat_size_px % self.feature_stride:
            raise ConfigError(
                f"DenseFlowConfig.sat_size_px must be a positive multiple of {self.feature_stride}, "
                f"got {self.sat_size_px}"
            )
        cells = self.sat_size_px // self.feature_stride
        if cells < 2 ** (self.corr_levels - 1):
            raise ConfigError(
                f"DenseFlowConfig: {cells} satellite feature cells are too few for "
                f"{self.corr_levels} correlation levels"
            )
        if len(self.encoder_widths) != 3 or min(self.encoder_widths) <= 0:
            raise ConfigError(f"DenseFlowConfig.encoder_widths must be 3 positive ints, got {self.encoder_widths}")
        for field in ("blocks_per_stage", "feature_dim", "hidden_dim", "context_dim", "corr_levels", "iters"):
            if int(getattr(self, field)) < 1:
                raise ConfigError(f"DenseFlowConfig.{field} must be >= 1, got {getattr(self, field)}")
        if self.corr_radius < 1:
            raise ConfigError(f"DenseFlowConfig.corr_radius must be >= 1, got {self.corr_radius}")
        if not math.isfinite(self.ground_z_m):
            raise ConfigError(f"DenseFlowConfig.ground_z_m must be finite, got {self.ground_z_m}")

    @property
    def feature_cells(self) -> int:
        """Side of the (square) satellite feature map and BEV grid, in cells."""
        return self.sat_size_px // self.feature_stride

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ground_size_px"] = list(self.ground_size_px)
        d["encoder_widths"] = list(self.encoder_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DenseFlowConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"DenseFlowConfig: unknown field(s) {sorted(unknown)}")
        return cls(**d)


#: Named presets. ``paper``: section 4.3 (ResNet18-size encoders, 1/8 resolution, 256 channels,
#: 12 iterations, 256x1024 ground, 512^2 satellite at the patch's 0.2 m/px).
#: ``compact``: the CPU default: half the input resolution (128x512 ground; the 512 px / 0.2 m
#: patch downsampled to 256 px / 0.4 m so it still covers +-51 m), 128 channels, 6 iterations.
PRESETS: dict[str, DenseFlowConfig] = {
    "paper": DenseFlowConfig(
        name="paper",
        ground_size_px=(256, 1024),
        sat_size_px=512,
        feature_stride=8,
        encoder_widths=(64, 128, 256),
        blocks_per_stage=2,
        feature_dim=256,
        hidden_dim=128,
        context_dim=128,
        corr_levels=4,
        corr_radius=4,
        iters=12,
    ),
    "compact": DenseFlowConfig(),
}


def preset(name: str, **overrides: Any) -> DenseFlowConfig:
    """The named preset, optionally with fields replaced (``preset("compact", iters=2)``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown dense-flow preset {name!r}; known: {sorted(PRESETS)}")
    cfg = PRESETS[name]
    return replace(cfg, **overrides) if overrides else cfg


# ----------------------------------------------------------------------------- network
@dataclass
class DenseFlowOutput:
    """What :meth:`DenseFlowMatcher.forward` returns (B = batch, H = W = cfg.feature_cells).

    Attributes:
        flows: list of ``iters`` tensors (B, 2, H, W), flow after each GRU iteration (cells).
        confidences: list of ``iters`` tensors (B, H, W) in [0, 1] (network score, not masked).
        bev_valid: (B, H, W) BEV validity mask.
        src_xy_m, dst_xy_m: (B, N, 2) final correspondences, N = H * W; weight: (B, N).
        T_patch_base: (B, 3) (x_m, y_m, yaw_rad) from the weighted Procrustes of the last iteration.
        corr_volume: (B, H*W, H, W) finest correlation level (BEV cell index row-major ``i*W+j``
            against every satellite cell, scaled by 1/sqrt(feature_dim)); used by the optional
            correlation loss of the trainer.
    """

    flows: list[torch.Tensor]
    confidences: list[torch.Tensor]
    bev_valid: torch.Tensor
    src_xy_m: torch.Tensor
    dst_xy_m: torch.Tensor
    weight: torch.Tensor
    T_patch_base: torch.Tensor
    corr_volume: torch.Tensor | None = None


class DenseFlowMatcher(nn.Module):
    """The dense-flow cross-view matcher. See the module docstring for conventions."""

    def __init__(self, cfg: DenseFlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w, blocks, s = cfg.encoder_widths, cfg.blocks_per_stage, cfg.feature_stride
        self.ground_encoder = ResNetEncoder(w, blocks, cfg.feature_dim, s)
        self.sat_encoder = ResNetEncoder(w, blocks, cfg.feature_dim, s, cfg.sat_norm)
        self.context_encoder = ResNetEncoder(w, blocks, cfg.hidden_dim + cfg.context_dim, s)
        self.refine = RefineBlock(cfg.feature_dim, cfg.feature_dim)
        self.context_refine = RefineBlock(cfg.hidden_dim + cfg.context_dim, cfg.hidden_dim + cfg.context_dim)
        corr_ch = cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2
        self.update = UpdateBlock(corr_ch, cfg.hidden_dim, cfg.context_dim)

    # -- stages (public so the benchmark can time them) -----------------------------------
    def encode_sat(self, sat_rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> satellite features (B, feature_dim, S/stride, S/stride)."""
        return self.sat_encoder(sat_rgb)

    def encode_ground(self, ground_rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, Hg, Wg) -> (matching features, context features) at 1/stride."""
        return self.ground_encoder(ground_rgb), self.context_encoder(ground_rgb)

    def project_bev(
        self, feat_g: torch.Tensor, ctx_g: torch.Tensor, bev_grid: torch.Tensor, bev_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ground features -> BEV by bilinear sampling at ``bev_grid``, masked, refined."""
        m = bev_valid.unsqueeze(1).to(feat_g.dtype)
        g = bev_grid.to(feat_g.dtype)
        bev = F.grid_sample(feat_g, g, mode="bilinear", padding_mode="zeros", align_corners=False) * m
        ctx = F.grid_sample(ctx_g, g, mode="bilinear", padding_mode="zeros", align_corners=False) * m
        return self.refine(bev), self.context_refine(ctx)

    def forward(
        self,
        ground_rgb: torch.Tensor,
        bev_grid: torch.Tensor,
        bev_valid: torch.Tensor,
        sat_rgb: torch.Tensor | None,
        sat_m_per_px: torch.Tensor,
        prior_yaw_rad: torch.Tensor,
        sat_features: torch.Tensor | None = None,
        iters: int | None = None,
        on_stage: Callable[[str], None] | None = None,
    ) -> DenseFlowOutput:
        """Match a batch of ground images against satellite patches.

        Args:
            ground_rgb: (B, 3, Hg, Wg) float in [0, 1], resized to ``cfg.ground_size_px``; or
                (1, 3, Hg, Wg) shared by all B items (yaw hypotheses of one frame: encoded once).
            bev_grid: (B, C, C, 2) ``grid_sample`` coordinates (align_corners=False, x then y in
                [-1, 1]) into the ground image of every BEV cell, C = ``cfg.feature_cells``;
                from :func:`bev_grid_for_camera` (north-up BEV rotated by the prior yaw).
            bev_valid: (B, C, C) float/bool, 1 where the BEV cell lies on the visible ground.
            sat_rgb: (B, 3, S, S) float in [0, 1], S = ``cfg.sat_size_px``, north-up, centred on
                the prior; may be None when ``sat_features`` is given.
            sat_m_per_px: (B,) metres per pixel of ``sat_rgb`` (after any resize).
            prior_yaw_rad: (B,) prior yaw of base_link in the patch frame.
            sat_features: optional (B, feature_dim, C, C) cached output of :meth:`encode_sat`.
            iters: GRU iterations (default ``cfg.iters``).
            on_stage: optional callback called with a stage name after each stage ("sat_encoder",
                "ground_encoders", "bev_projection", "correlation", "gru_iter_<k>", "procrustes");
                the benchmark uses it to time stages.
        Returns:
            :class:`DenseFlowOutput` (flows and confidences per iteration, final metric
            correspondences (B, C*C, ...) and the Procrustes pose (B, 3)).
        """
        cfg = self.cfg
        cells = cfg.feature_cells
        b = bev_grid.shape[0] if bev_grid.dim() == 4 else ground_rgb.shape[0]
        if (ground_rgb.dim() != 4 or tuple(ground_rgb.shape[1:]) != (3, *cfg.ground_size_px)
                or ground_rgb.shape[0] not in (1, b)):
            raise GeometryError(
                f"ground_rgb must have shape (B or 1, 3, {cfg.ground_size_px[0]}, {cfg.ground_size_px[1]}), "
                f"got {tuple(ground_rgb.shape)}"
            )
        if tuple(bev_grid.shape) != (b, cells, cells, 2):
            raise GeometryError(f"bev_grid must have shape ({b}, {cells}, {cells}, 2), got {tuple(bev_grid.shape)}")
        if tuple(bev_valid.shape) != (b, cells, cells):
            raise GeometryError(f"bev_valid must have shape ({b}, {cells}, {cells}), got {tuple(bev_valid.shape)}")
        if sat_features is None:
            if sat_rgb is None or tuple(sat_rgb.shape) != (b, 3, cfg.sat_size_px, cfg.sat_size_px):
                got = None if sat_rgb is None else tuple(sat_rgb.shape)
                raise GeometryError(
                    f"sat_rgb must have shape ({b}, 3, {cfg.sat_size_px}, {cfg.sat_size_px}), got {got}"
                )
            sat_features = self.encode_sat(sat_rgb)
            if on_stage is not None:
                on_stage("sat_encoder")
        elif tuple(sat_features.shape) != (b, cfg.feature_dim, cells, cells):
            raise GeometryError(
                f"sat_features must have shape ({b}, {cfg.feature_dim}, {cells}, {cells}), got {tuple(sat_features.shape)}"
            )
        sat_m_per_px = sat_m_per_px.reshape(b).float()
        prior_yaw_rad = prior_yaw_rad.reshape(b).float()
        m_per_cell = sat_m_per_px * cfg.feature_stride
        bev_valid = bev_valid.float()

        stage = on_stage or (lambda name: None)
        feat_g, ctx_g = self.encode_ground(ground_rgb)
        if feat_g.shape[0] != b:  # one image, B yaw hypotheses: encoded once
            feat_g, ctx_g = feat_g.expand(b, -1, -1, -1), ctx_g.expand(b, -1, -1, -1)
        stage("ground_encoders")
        fmap_bev, ctx = self.project_bev(feat_g, ctx_g, bev_grid, bev_valid)
        stage("bev_projection")
        corr_fn = CorrPyramid(fmap_bev, sat_features, cfg.corr_levels, cfg.corr_radius)
        stage("correlation")
        h, context = torch.split(ctx, [cfg.hidden_dim, cfg.context_dim], dim=1)
        h, context = torch.tanh(h), F.relu(context)

        dev = ground_rgb.device
        base = cached_grid(("flow_base", cells), dev, lambda: torch.stack(torch.meshgrid(
            torch.arange(cells, device=dev, dtype=torch.float32), torch.arange(cells, device=dev, dtype=torch.float32),
            indexing="ij")[::-1], dim=0).unsqueeze(0))  # (1, 2, C, C): (u, v) = (j, i)
        flow = torch.zeros(b, 2, cells, cells, device=ground_rgb.device, dtype=torch.float32)
        flows: list[torch.Tensor] = []
        confs: list[torch.Tensor] = []
        for k in range(iters or cfg.iters):
            flow = flow.detach()
            corr = corr_fn(base + flow)
            h, dflow, conf_logit = self.update(h, context, corr.to(h.dtype), flow.to(h.dtype))
            flow = flow + dflow.float()
            flows.append(flow)
            confs.append(torch.sigmoid(conf_logit.float()).squeeze(1))
            stage(f"gru_iter_{k}")
        src, dst, weight = flow_to_correspondences(flows[-1], confs[-1], bev_valid, m_per_cell, prior_yaw_rad)
        pose = weighted_procrustes_torch(src, dst, weight)
        stage("procrustes")
        corr_volume = corr_fn.pyramid[0].view(b, cells * cells, cells, cells)
        return DenseFlowOutput(flows, confs, bev_valid, src, dst, weight, pose, corr_volume)
