"""Training / evaluation data of the depth-prior sparse matcher (docs/sparse_depth.md).

:class:`SparsePairTensorDataset` adapts pair records (:class:`xview_localizer.train.pairs.PairDataset`
with ``load_depth=True``, or a benchmark loader) to the inputs of
:meth:`SparseDepthMatcher.forward` and :func:`sparse_depth_loss`. The depth robustness options
live in :class:`DepthAugment`:

* ``noise_frac``: multiplicative Gaussian noise, ``z * (1 + noise_frac * N(0, 1))`` per pixel
  (values pushed to <= 0 become holes);
* ``hole_frac``: that fraction of 8x8-pixel blocks set to 0 (invalid);
* ``scale_range``: the relative-depth scale ``s`` is drawn log-uniformly in it, per sample;
  relative depth is ``z / s`` (true z = ``s * z_rel``, ``depth_scale`` = s, the number a Sim(2)
  fit recovers), inverse depth ``s / z``;
* ``unknown_orientation``: the prior yaw is replaced by one uniform in [-pi, pi) (the network
  takes no yaw prior; this changes the prior-only baseline and what a node may assume).

Every draw is deterministic per (``seed``, sample index). The depth kind is applied per
**batch** (:func:`depth_for_kind`; the network takes one kind per batch): samples carry the
augmented metric depth ``depth_m`` and their scale ``depth_scale``. ``kind = "mixed"`` picks one
of metric / relative / inverse / none per training step (:func:`batch_depth_kind`, seeded).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.errors import ConfigError, DatasetError
from ..matcher.sparse_depth import DEPTH_KINDS, KeypointRays, KeypointRaysCache, SparseDepthConfig

__all__ = [
    "TRAIN_DEPTH_KINDS",
    "SPARSE_SAMPLE_KEYS",
    "DepthAugment",
    "unknown_prior_yaw_rad",
    "batch_depth_kind",
    "depth_for_kind",
    "SparsePairTensorDataset",
]

#: ``--depth-kind`` choices of training ("mixed" = one of DEPTH_KINDS per step).
TRAIN_DEPTH_KINDS: tuple[str, ...] = (*DEPTH_KINDS, "mixed")
_HOLE_BLOCK_PX = 8

#: Keys of one sparse sample (shapes without batch; N = Hf * Wf keypoint candidates).
SPARSE_SAMPLE_KEYS = (
    "ground_rgb",  # (3, Hg, Wg) float [0, 1]
    "sat_rgb",  # (3, S, S) float [0, 1]
    "sat_m_per_px",  # () float, metres per pixel of sat_rgb
    "rays_base",  # (N, 3) float, KeypointRays.rays_base
    "ray_valid",  # (N,) bool
    "cam_xyz_base_m",  # (3,) float
    "kp_grid_norm",  # (N, 2) float
    "depth_m",  # (H, W) float metric optical-z depth after noise / holes, 0 = invalid
    "depth_scale",  # () float, s of relative depth (true z = s * z_rel)
    "prior_yaw_rad",  # () float
    "T_patch_base",  # (3,) ground truth (x_m, y_m, yaw_rad)
)


@dataclass(frozen=True)
class DepthAugment:
    """Depth kind and robustness options of a sparse data set (see the module docstring)."""

    kind: str = "metric"
    scale_range: tuple[float, float] = (0.3, 3.0)
    noise_frac: float = 0.0
    hole_frac: float = 0.0
    unknown_orientation: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in TRAIN_DEPTH_KINDS:
            raise ConfigError(f"depth kind must be one of {TRAIN_DEPTH_KINDS}, got {self.kind!r}")
        try:
            lo, hi = (float(v) for v in self.scale_range)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"depth scale range must be two numbers, got {self.scale_range!r}") from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ConfigError(f"depth scale range must satisfy 0 < lo <= hi (finite), got ({lo}, {hi})")
        object.__setattr__(self, "scale_range", (lo, hi))
        if not (math.isfinite(self.noise_frac) and 0 <= self.noise_frac <= 1):
            raise ConfigError(f"depth noise fraction must be in [0, 1], got {self.noise_frac}")
        if not (math.isfinite(self.hole_frac) and 0 <= self.hole_frac < 1):
            raise ConfigError(f"depth hole fraction must be in [0, 1), got {self.hole_frac}")


def unknown_prior_yaw_rad(seed: int, index: int) -> float:
    """The prior yaw of sample ``index`` under unknown orientation: uniform in [-pi, pi),
    deterministic per (seed, index); the same for every model evaluated on the samples."""
    u = np.random.default_rng([int(seed), int(index), 17]).random()
    return float(-math.pi + 2.0 * math.pi * u)


def batch_depth_kind(kind: str, seed: int, step: int) -> str:
    """The depth kind of one training batch: ``kind`` itself, or for ``"mixed"`` one of
    :data:`DEPTH_KINDS` drawn deterministically per (seed, step)."""
    if kind != "mixed":
        return kind
    return DEPTH_KINDS[int(np.random.default_rng([int(seed), int(step), 29]).integers(len(DEPTH_KINDS)))]


def depth_for_kind(depth_m: torch.Tensor, depth_scale: torch.Tensor, kind: str) -> torch.Tensor | None:
    """Turn a batch of metric depth maps ``(B, H, W)`` into the network input of ``kind``:
    metric as is, relative ``z / s``, inverse ``s / z`` (holes stay 0), none -> None.
    ``depth_scale``: (B,) the scale s of each sample."""
    if kind == "none":
        return None
    if kind == "metric":
        return depth_m
    s = depth_scale.to(depth_m.dtype).view(-1, 1, 1)
    good = torch.isfinite(depth_m) & (depth_m > 0)
    safe = torch.where(good, depth_m, torch.ones_like(depth_m))
    if kind == "relative":
        return torch.where(good, safe / s, torch.zeros_like(depth_m))
    if kind == "inverse":
        return torch.where(good, s / safe, torch.zeros_like(depth_m))
    raise ConfigError(f"depth kind for a batch must be one of {DEPTH_KINDS}, got {kind!r}")


def _augment_depth(depth_m: np.ndarray, aug: DepthAugment, rng: np.random.Generator) -> np.ndarray:
    """Noise and block holes (see the module docstring); invalid input stays 0, never NaN."""
    z = np.asarray(depth_m, dtype=np.float32).copy()
    z[~np.isfinite(z) | (z < 0)] = 0.0
    if aug.noise_frac > 0:
        z = z * (1.0 + aug.noise_frac * rng.standard_normal(z.shape).astype(np.float32))
        z[z <= 0] = 0.0
    if aug.hole_frac > 0:
        h, w = z.shape
        bh, bw = -(-h // _HOLE_BLOCK_PX), -(-w // _HOLE_BLOCK_PX)
        holes = rng.random((bh, bw)) < aug.hole_frac
        mask = np.repeat(np.repeat(holes, _HOLE_BLOCK_PX, 0), _HOLE_BLOCK_PX, 1)[:h, :w]
        z[mask] = 0.0
    return z


class SparsePairTensorDataset(Dataset):
    """Pair records -> sparse-depth model tensors (:data:`SPARSE_SAMPLE_KEYS`).

    ``directory``: a pair directory (opened with depth) or an open sequence of pair samples
    (benchmark loaders; records without ``depth_m`` get an all-invalid depth map). Ground and
    satellite images are resized to the preset; :func:`keypoint_rays` is cached per camera
    (intrinsics + extrinsics)."""

    def __init__(self, directory: Any, cfg: SparseDepthConfig, aug: DepthAugment | None = None,
                 rays_cache_size: int = 16) -> None:
        from .pairs import PairDataset

        if isinstance(directory, (str, os.PathLike)):
            self.pairs = PairDataset(Path(directory), load_depth=True)
        else:
            self.pairs = directory
        self.cfg = cfg
        self.aug = aug or DepthAugment()
        self._rays = KeypointRaysCache(cfg, size=rays_cache_size)

    def __len__(self) -> int:
        return len(self.pairs)

    def rays_for(self, camera: Any, T_base_camera: np.ndarray) -> KeypointRays:
        """:func:`keypoint_rays` of a camera, cached (LRU) by its parameters and extrinsics."""
        return self._rays.get(camera, T_base_camera)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        from ..matcher.inference import _to_tensor

        cfg, aug = self.cfg, self.aug
        rec = self.pairs[idx]
        sat = np.asarray(rec.sat_rgb)
        if sat.shape[0] != sat.shape[1]:
            raise DatasetError(f"pair {idx}: satellite patch must be square, got {sat.shape[:2]}")
        ground = np.asarray(rec.ground_rgb)
        depth = getattr(rec, "depth_m", None)
        if depth is None:
            depth = np.zeros(ground.shape[:2], np.float32)
        depth = np.asarray(depth)
        if depth.ndim != 2:
            raise DatasetError(f"pair {idx}: depth must be an (H, W) map, got shape {depth.shape}")
        rng = np.random.default_rng([aug.seed, int(idx), 3])
        depth = _augment_depth(depth, aug, rng)
        lo, hi = aug.scale_range
        scale = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        prior_yaw = unknown_prior_yaw_rad(aug.seed, idx) if aug.unknown_orientation else float(rec.prior_yaw_rad)
        kr = self.rays_for(rec.camera, rec.T_base_camera)
        sat_m_per_px = float(rec.sat_m_per_px) * sat.shape[1] / cfg.sat_size_px
        return {
            "ground_rgb": _to_tensor(ground, cfg.ground_size_px),
            "sat_rgb": _to_tensor(sat, (cfg.sat_size_px, cfg.sat_size_px)),
            "sat_m_per_px": torch.tensor(sat_m_per_px, dtype=torch.float32),
            "rays_base": torch.from_numpy(kr.rays_base),
            "ray_valid": torch.from_numpy(kr.ray_valid),
            "cam_xyz_base_m": torch.from_numpy(kr.cam_xyz_base_m),
            "kp_grid_norm": torch.from_numpy(kr.grid_norm),
            "depth_m": torch.from_numpy(depth),
            "depth_scale": torch.tensor(scale, dtype=torch.float32),
            "prior_yaw_rad": torch.tensor(prior_yaw, dtype=torch.float32),
            "T_patch_base": torch.tensor([float(v) for v in rec.T_patch_base], dtype=torch.float32),
        }
