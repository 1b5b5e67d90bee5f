"""Dense-flow cross-view matcher (seed paper 001, Song et al., NeurIPS 2023), in one file.

Building blocks first, the full network (:class:`DenseFlowMatcher`) last.

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
from .grids import cached_grid
from .norms import NORM_KINDS, make_norm

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


# ----------------------------------------------------------------------------- encoders
class ResidualBlock(nn.Module):
    """ResNet BasicBlock: two 3x3 convs with ``norm`` (:mod:`.norms`: instance or frozen),
    identity (or 1x1) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, norm: str = "instance") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.norm1 = make_norm(norm, out_ch)
        self.norm2 = make_norm(norm, out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride), make_norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """ResNet-style encoder trained from scratch: 7x7 stride-2 stem, 3 stages of BasicBlocks
    (strides 1, 2, 2 for 1/8 output; 1, 2, 1 for 1/4), 1x1 projection to ``out_dim``.

    Input ``(B, 3, H, W)`` float in [0, 1]; output ``(B, out_dim, H / stride, W / stride)``.
    ``norm``: "instance" (per-image statistics) or "frozen" (fixed statistics: the encoder is then
    translation-equivariant for shifts by multiples of ``stride``, see :mod:`.norms`).
    """

    def __init__(self, widths: tuple[int, int, int], blocks: int, out_dim: int, stride: int,
                 norm: str = "instance") -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 7, stride=2, padding=3), make_norm(norm, widths[0]), nn.ReLU(inplace=True)
        )
        strides = (1, 2, 2) if stride == 8 else (1, 2, 1)
        layers: list[nn.Module] = []
        in_ch = widths[0]
        for w, s in zip(widths, strides):
            for k in range(blocks):
                layers.append(ResidualBlock(in_ch, w, s if k == 0 else 1, norm))
                in_ch = w
        self.stages = nn.Sequential(*layers)
        self.out = nn.Conv2d(in_ch, out_dim, 1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std
        return self.out(self.stages(self.stem(x)))


class RefineBlock(nn.Module):
    """The paper's BEV RefineBlock (eq. 2): 7x7 conv (large receptive field), a 3x3 residual
    block (local detail), a 1x1 conv (channel mixing). ``(B, C_in, H, W) -> (B, C_out, H, W)``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv7 = nn.Conv2d(in_ch, out_ch, 7, padding=3)
        self.res = ResidualBlock(out_ch, out_ch)
        self.conv1 = nn.Conv2d(out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.res(F.relu(self.conv7(x))))


# ----------------------------------------------------------------------------- correlation
def _corr_window(radius: int, device: torch.device) -> torch.Tensor:
    """(1, 2r+1, 2r+1, 2) (dx, dy) lookup offsets of the correlation window."""
    d = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([dx, dy], dim=-1).view(1, 2 * radius + 1, 2 * radius + 1, 2)


class CorrPyramid:
    """RAFT all-pairs correlation between BEV features and satellite features, pooled into
    ``levels`` levels by 2x2 average pooling over the satellite dimensions.

    Args:
        fmap_bev: (B, C, Hb, Wb); fmap_sat: (B, C, Hs, Ws). Computed in float32.
    """

    def __init__(self, fmap_bev: torch.Tensor, fmap_sat: torch.Tensor, levels: int, radius: int) -> None:
        b, c, hb, wb = fmap_bev.shape
        hs, ws = fmap_sat.shape[-2:]
        self.levels, self.radius = levels, radius
        with torch.autocast(fmap_bev.device.type, enabled=False):  # float32 even under AMP
            corr = torch.einsum("bci,bcj->bij", fmap_bev.float().flatten(2), fmap_sat.float().flatten(2))
        corr = (corr / math.sqrt(c)).reshape(b * hb * wb, 1, hs, ws)
        self.pyramid = [corr]
        for _ in range(levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)
        self.shape = (b, hb, wb)
        self.delta = cached_grid(("corr_window", radius), fmap_bev.device, lambda: _corr_window(radius, fmap_bev.device))

    @property
    def out_channels(self) -> int:
        return self.levels * (2 * self.radius + 1) ** 2

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        """Look up correlation windows around ``coords (B, 2, Hb, Wb)`` (satellite feature
        cells, (u, v)). Returns (B, levels * (2r+1)^2, Hb, Wb)."""
        b, hb, wb = self.shape
        xy = coords.permute(0, 2, 3, 1).reshape(b * hb * wb, 1, 1, 2).float()
        out = []
        for lvl, corr in enumerate(self.pyramid):
            h, w = corr.shape[-2:]
            # 2x2 pooling: pooled cell k covers fine cells 2k, 2k+1 (centre 2k + 0.5).
            c_l = (xy + 0.5) / (2**lvl) - 0.5 + self.delta
            gx = 2.0 * (c_l[..., 0] + 0.5) / w - 1.0
            gy = 2.0 * (c_l[..., 1] + 0.5) / h - 1.0
            grid = torch.stack([gx, gy], dim=-1)
            s = F.grid_sample(corr, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out.append(s.view(b, hb, wb, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


# ----------------------------------------------------------------------------- update block
class MotionEncoder(nn.Module):
    """Encodes correlation samples and the current flow into motion features (RAFT)."""

    def __init__(self, corr_ch: int, out_dim: int) -> None:
        super().__init__()
        c = max(out_dim, 32)
        self.convc1 = nn.Conv2d(corr_ch, c, 1)
        self.convc2 = nn.Conv2d(c, c, 3, padding=1)
        self.convf1 = nn.Conv2d(2, c // 2, 7, padding=3)
        self.convf2 = nn.Conv2d(c // 2, c // 4, 3, padding=1)
        self.conv = nn.Conv2d(c + c // 4, out_dim - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc2(F.relu(self.convc1(corr))))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


class ConvGRU(nn.Module):
    """Convolutional GRU cell with 3x3 gates: ``h' = (1 - z) h + z q``."""

    def __init__(self, hidden_dim: int, input_dim: int) -> None:
        super().__init__()
        self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class UpdateBlock(nn.Module):
    """One RAFT update: motion encoder -> ConvGRU -> flow residual head + confidence head."""

    def __init__(self, corr_ch: int, hidden_dim: int, context_dim: int) -> None:
        super().__init__()
        motion_dim = max(2 * hidden_dim, 64)
        self.motion = MotionEncoder(corr_ch, motion_dim)
        self.gru = ConvGRU(hidden_dim, context_dim + motion_dim)
        self.flow_head = nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden_dim, 2, 3, padding=1)
        )
        self.conf_head = nn.Sequential(
            nn.Conv2d(hidden_dim + corr_ch, hidden_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, 1, 3, padding=1),
        )

    def forward(
        self, h: torch.Tensor, context: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (new hidden, flow residual (B,2,H,W), confidence logits (B,1,H,W))."""
        m = self.motion(flow, corr)
        h = self.gru(h, torch.cat([context, m], dim=1))
        return h, self.flow_head(h), self.conf_head(torch.cat([h, corr], dim=1))


# ----------------------------------------------------------------------------- geometry
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
    the vehicle; camera.py's :class:`BevGrid` is forward-up in ``base_link``. A virtual body frame
    ``B''`` with x = north, y = west makes camera.py's forward-up grid north-up:
    ``T_B''_base = Rz(prior_yaw - pi/2)``, so ``T_B''_camera = Rz(prior_yaw - pi/2) @ T_base_camera``.

    Returns:
        grid_norm: (cells, cells, 2) float32 ``grid_sample`` coordinates (align_corners=False)
            into the ground image (resolution independent), invalid cells set to -2.
        valid: (cells, cells) float32, 1 where the ground point is in front of the camera and
            inside the image.
    """
    import numpy as np

    from ..core import camera as cam_mod
    from ..core import camera_pano

    a = float(prior_yaw_rad) - math.pi / 2.0
    rz = np.eye(4)
    rz[:2, :2] = [[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]
    T = rz @ np.asarray(T_base_camera, dtype=np.float64)
    bev = cam_mod.BevGrid(size_px=(cells, cells), m_per_px=float(m_per_cell))
    uv_px, valid = camera_pano.bev_sampling_grid_any(camera, T, bev, ground_z_m=ground_z_m)
    grid = cam_mod.bev_sampling_grid_to_torch(uv_px, valid, camera.width_px, camera.height_px).numpy()
    return grid, np.asarray(valid, dtype=np.float32)


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
