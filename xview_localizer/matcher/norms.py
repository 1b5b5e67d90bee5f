"""Normalization layers of the encoders, and the conversion of a satellite encoder from
instance to frozen normalization (issue 15: satellite features once per area).

``"instance"`` (``nn.InstanceNorm2d``, no affine): each channel is standardized over the whole
image. Robust to exposure, but a feature then depends on every pixel of the patch, so the
features of a window cut out of a larger encoded area differ from those of the window encoded
on its own (measured: cosine 0.985 in the interior, 15 % relative error).

``"frozen"`` (:class:`FrozenNorm2d`): a fixed per-channel affine ``(x - mean) / sqrt(var +
eps)`` with statistics calibrated once over training patches. The encoder is then a pure
convolution stack: translation-equivariant for shifts by multiples of its stride, so an area's
features cut at a stride-aligned window equal the window's own features away from the window
border (zero padding), and the norm folds into the convolution before it at inference.

:func:`calibrate_frozen_norms` converts an encoder trained with instance norm: layer by layer
(earlier layers already frozen), each norm's statistics are the pooled mean and variance of its
input over the calibration images (what instance norm saw, averaged) - then a short fine-tune
recovers the accuracy (``docs/realtime.md`` has the table).
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..core.errors import ConfigError

__all__ = ["NORM_KINDS", "FrozenNorm2d", "make_norm", "calibrate_frozen_norms", "frozen_norm_buffer_keys"]

#: the normalizations an encoder can be built with
NORM_KINDS: tuple[str, ...] = ("instance", "frozen")


class FrozenNorm2d(nn.Module):
    """``(x - mean[c]) / sqrt(var[c] + eps)`` with fixed buffers (not learnt, the same in train
    and eval mode). Shapes: (B, C, H, W) -> (B, C, H, W).

    ``calibrating = True`` makes it behave as instance norm and record the pooled statistics of
    its input (see :func:`calibrate_frozen_norms`)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(self.num_features))
        self.register_buffer("var", torch.ones(self.num_features))
        self.calibrating = False
        self._sums: list[tuple[torch.Tensor, torch.Tensor, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            xf = x.detach().float()
            n = xf.shape[0] * xf.shape[2] * xf.shape[3]
            self._sums.append((xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), n))
            return nn.functional.instance_norm(x, eps=self.eps)
        shape = (1, -1, 1, 1)
        return (x - self.mean.view(shape).to(x.dtype)) * torch.rsqrt(self.var.view(shape) + self.eps).to(x.dtype)

    def finish_calibration(self) -> None:
        """Set the buffers from the recorded statistics and leave calibration mode."""
        if not self._sums:
            raise ConfigError("FrozenNorm2d.finish_calibration: no calibration batch was seen")
        s = torch.stack([a for a, _, _ in self._sums]).sum(0)
        sq = torch.stack([b for _, b, _ in self._sums]).sum(0)
        n = float(sum(c for _, _, c in self._sums))
        mean = s / n
        self.mean.copy_(mean)
        self.var.copy_((sq / n - mean * mean).clamp_min(1e-6))
        self._sums = []
        self.calibrating = False

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def make_norm(kind: str, channels: int) -> nn.Module:
    """The normalization layer ``kind`` (one of :data:`NORM_KINDS`) for ``channels``."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "frozen":
        return FrozenNorm2d(channels)
    raise ConfigError(f"norm must be one of {NORM_KINDS}, got {kind!r}")


def frozen_norm_buffer_keys(module: nn.Module, prefix: str = "") -> set[str]:
    """State-dict keys of the :class:`FrozenNorm2d` buffers under ``module`` (what a checkpoint
    trained with instance norm lacks)."""
    keys = set()
    for name, m in module.named_modules():
        if isinstance(m, FrozenNorm2d):
            base = f"{prefix}{name}." if name else prefix
            keys |= {base + "mean", base + "var"}
    return keys


@torch.no_grad()
def calibrate_frozen_norms(encoder: nn.Module, images: Iterable[torch.Tensor]) -> int:
    """Calibrate every :class:`FrozenNorm2d` of ``encoder`` in forward order, one layer per pass
    over ``images`` (batches (B, 3, H, W) in [0, 1], materialized once): layer k sees the
    outputs of layers < k already frozen and normalizes by instance norm while it records.
    Returns the number of layers calibrated."""
    batches = list(images)
    if not batches:
        raise ConfigError("calibrate_frozen_norms: no calibration images")
    norms = [m for m in encoder.modules() if isinstance(m, FrozenNorm2d)]
    was_training = encoder.training
    encoder.eval()
    for norm in norms:
        norm.calibrating = True
        for b in batches:
            encoder(b)
        norm.finish_calibration()
    encoder.train(was_training)
    return len(norms)
