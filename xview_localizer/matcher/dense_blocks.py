"""Network blocks of the dense-flow matcher (:mod:`.dense_flow`, seed paper 001): the
ResNet-style encoder (shared with the sparse-depth matcher), the BEV RefineBlock, the RAFT
correlation pyramid and the RAFT update block (motion encoder, ConvGRU, flow and confidence
heads). No geometry here: the blocks see feature maps only.

Shapes: ``B`` batch; images (B, 3, H, W) float in [0, 1] (ImageNet mean/std normalization is
inside :class:`ResNetEncoder`); feature maps (B, C, H / stride, W / stride); BEV maps
(B, C, Hb, Wb); satellite maps (B, C, Hs, Ws). Flow and lookup coordinates are (u, v) =
(column, row) in satellite feature cells, channel 0 = u. Correlation is computed in float32
even under autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .grids import cached_grid
from .norms import make_norm

__all__ = ["ResidualBlock", "ResNetEncoder", "RefineBlock", "CorrPyramid", "MotionEncoder", "ConvGRU", "UpdateBlock"]


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

