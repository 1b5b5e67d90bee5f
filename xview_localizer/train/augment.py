"""Seeded photometric augmentation of training batches (issue 14, requirement 3).

Applied to the ground image and to the satellite patch independently, per sample, on the batch
tensors (B, 3, H, W) float in [0, 1] on the training device. Geometry is never changed (no flips,
crops or warps: the ground truth stays exact). Each call draws from a ``torch.Generator`` seeded
by ``(seed, step, view)``, so a run, and a resumed run, see exactly the same augmentations
(:func:`augment_batch`).

Operations, each with its own probability: colour jitter (brightness, contrast, saturation,
per-channel gains = white balance), grayscale, gamma, Gaussian noise, Gaussian blur, cut-outs
(rectangles filled with a random grey).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError

__all__ = ["PhotometricAugment", "augment_batch", "augment_images"]


@dataclass(frozen=True)
class PhotometricAugment:
    """Probabilities (``p_*``) and strengths of the augmentation of one view.

    brightness / contrast / saturation: multiplicative factors drawn in [1 - x, 1 + x];
    channel_gain: per-channel gains in [1 - x, 1 + x]; gamma: exponent exp(U(-x, x));
    noise_sigma_max: Gaussian noise sigma drawn in [0, x]; blur_sigma_max_px: blur sigma in
    [0.3, x] px; cutouts_max: up to this many rectangles of up to ``cutout_frac`` of each side;
    p_hue / hue_max_deg: rotate the colours about the gray axis by an angle in [-x, x] deg (a hue
    shift that keeps luminance and saturation roughly; off by default, and when off no random
    number is drawn for it, so runs without it keep their exact augmentation stream).
    """

    p_colour: float = 0.8
    brightness: float = 0.35
    contrast: float = 0.35
    saturation: float = 0.5
    channel_gain: float = 0.12
    p_gray: float = 0.1
    p_gamma: float = 0.5
    gamma: float = 0.35
    p_noise: float = 0.4
    noise_sigma_max: float = 0.04
    p_blur: float = 0.3
    blur_sigma_max_px: float = 1.5
    p_cutout: float = 0.3
    cutouts_max: int = 3
    cutout_frac: float = 0.2
    p_hue: float = 0.0
    hue_max_deg: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"PhotometricAugment.{name} must be a finite number >= 0, got {value!r}")
            if name.startswith("p_") and value > 1:
                raise ConfigError(f"PhotometricAugment.{name} is a probability, got {value!r}")
        if self.blur_sigma_max_px > 5.0 or self.cutout_frac > 0.5 or self.brightness >= 1 or self.contrast >= 1 \
                or self.hue_max_deg > 180.0:
            raise ConfigError("PhotometricAugment: blur_sigma_max_px <= 5, cutout_frac <= 0.5, brightness and "
                              "contrast < 1, hue_max_deg <= 180")

    @classmethod
    def off(cls) -> "PhotometricAugment":
        return cls(p_colour=0.0, p_gray=0.0, p_gamma=0.0, p_noise=0.0, p_blur=0.0, p_cutout=0.0)

    @property
    def enabled(self) -> bool:
        return any(v > 0 for k, v in asdict(self).items() if k.startswith("p_"))


def _u(gen: torch.Generator, n: int, lo: float, hi: float, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * (hi - lo) + lo).to(device)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = F.conv2d(F.pad(x[None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return y[0]


def rotate_hue(images: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) colours rotated about the gray axis (1, 1, 1) / sqrt(3) by ``angle_rad``
    (B,) (Rodrigues); gray pixels stay, 120 deg maps R -> G -> B -> R. Not clamped."""
    c, s = torch.cos(angle_rad), torch.sin(angle_rad)
    third, root = (1.0 - c) / 3.0, s / math.sqrt(3.0)
    a, p, m = c + third, third - root, third + root  # c I + s [k]x + (1 - c) k k^T, k = (1, 1, 1) / sqrt(3)
    rot = torch.stack([torch.stack([a, p, m], -1), torch.stack([m, a, p], -1), torch.stack([p, m, a], -1)], -2)
    return torch.einsum("bij,bjhw->bihw", rot.to(images.dtype), images)


def augment_images(images: torch.Tensor, aug: PhotometricAugment, gen: torch.Generator) -> torch.Tensor:
    """Augmented copy of ``images`` (B, 3, H, W) float in [0, 1]; random draws from ``gen`` only
    (on the CPU, so the result does not depend on the device)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"augment_images: expected (B, 3, H, W), got {tuple(images.shape)}")
    if not aug.enabled:
        return images
    b, _, h, w = images.shape
    dev = images.device
    out = images.clone().float()
    coin = torch.rand(b, 6, generator=gen)
    # colour jitter: brightness, contrast, saturation, channel gains
    col = (coin[:, 0] < aug.p_colour).to(dev).float().view(b, 1, 1, 1)
    bright = _u(gen, b, 1 - aug.brightness, 1 + aug.brightness, dev).view(b, 1, 1, 1)
    contrast = _u(gen, b, 1 - aug.contrast, 1 + aug.contrast, dev).view(b, 1, 1, 1)
    sat = _u(gen, b, max(0.0, 1 - aug.saturation), 1 + aug.saturation, dev).view(b, 1, 1, 1)
    gains = (torch.rand(b, 3, generator=gen) * 2 * aug.channel_gain + 1 - aug.channel_gain).to(dev).view(b, 3, 1, 1)
    gray = out.mean(1, keepdim=True)
    jit = out * bright
    jit = (jit - jit.mean((1, 2, 3), keepdim=True)) * contrast + jit.mean((1, 2, 3), keepdim=True)
    jit = (jit - gray * bright) * sat + gray * bright
    jit = jit * gains
    out = col * jit + (1 - col) * out
    out = out.clamp(0, 1)
    if aug.p_hue > 0 and aug.hue_max_deg > 0:  # drawn only when on: other runs keep their stream
        hue_on = torch.rand(b, generator=gen) < aug.p_hue
        angle = torch.where(hue_on, _u(gen, b, -aug.hue_max_deg, aug.hue_max_deg, "cpu"), torch.zeros(b))
        out = rotate_hue(out, torch.deg2rad(angle).to(dev)).clamp(0, 1)
    # grayscale
    g = (coin[:, 1] < aug.p_gray).to(dev).float().view(b, 1, 1, 1)
    out = g * out.mean(1, keepdim=True).expand_as(out) + (1 - g) * out
    # gamma
    gam = torch.where(coin[:, 2] < aug.p_gamma, torch.exp(_u(gen, b, -aug.gamma, aug.gamma, "cpu")),
                      torch.ones(b)).to(dev).view(b, 1, 1, 1)
    out = out.clamp_min(1e-6) ** gam
    # blur (per sample sigma)
    sig = _u(gen, b, 0.3, max(0.3, aug.blur_sigma_max_px), "cpu")
    for i in torch.nonzero(coin[:, 3] < aug.p_blur).flatten().tolist():
        out[i] = _blur(out[i], float(sig[i]))
    # noise
    nsig = torch.where(coin[:, 4] < aug.p_noise, _u(gen, b, 0.0, aug.noise_sigma_max, "cpu"), torch.zeros(b))
    noise = torch.randn(out.shape, generator=gen).to(dev)
    out = out + noise * nsig.to(dev).view(b, 1, 1, 1)
    # cut-outs
    n_cut = torch.randint(1, max(1, aug.cutouts_max) + 1, (b,), generator=gen)
    boxes = torch.rand(b, max(1, aug.cutouts_max), 5, generator=gen)
    for i in torch.nonzero(coin[:, 5] < aug.p_cutout).flatten().tolist():
        for j in range(int(n_cut[i])):
            bw, bh = max(1, int(boxes[i, j, 0] * aug.cutout_frac * w)), max(1, int(boxes[i, j, 1] * aug.cutout_frac * h))
            u0, v0 = int(boxes[i, j, 2] * (w - bw)), int(boxes[i, j, 3] * (h - bh))
            out[i, :, v0:v0 + bh, u0:u0 + bw] = float(boxes[i, j, 4])
    return out.clamp(0, 1)


def augment_batch(batch: dict, aug: PhotometricAugment, seed: int, step: int) -> dict:
    """``batch`` with ``ground_rgb`` and ``sat_rgb`` augmented independently; deterministic in
    ``(seed, step)`` (a resumed run repeats them exactly). Other keys are shared, not copied."""
    if not aug.enabled:
        return batch
    out = dict(batch)
    for view, key in enumerate(("ground_rgb", "sat_rgb")):
        if key in batch:
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) * 7 + view + 1)
            out[key] = augment_images(batch[key], aug, gen)
    return out
