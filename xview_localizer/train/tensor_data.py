"""Training data as torch data sets of tensor dicts (the model's inputs, :data:`SAMPLE_KEYS`):

* a pair directory written by ``xview-localizer sim dataset``
  (:class:`xview_localizer.train.pairs.PairDataset`, adapted by :class:`PairTensorDataset`);
* ``synthetic:N[:SEED]``: :class:`SyntheticWarpDataset`, N samples of one random texture seen
  top-down by the satellite and by an orthographic "ground" view at a known SE(2) pose (tests the
  machinery - overfitting, DDP - without rendering; not a localization benchmark);
* :func:`open_dataset` picks one from a spec string (sparse-depth samples come from
  :class:`xview_localizer.train.sparse_data.SparsePairTensorDataset`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..core.errors import ConfigError, DatasetError
from ..matcher.dense_flow import DenseFlowConfig
from ..matcher.sparse_depth import SparseDepthConfig
from .sparse_data import DepthAugment, SparsePairTensorDataset, unknown_prior_yaw_rad

#: Keys of one training sample (shapes without batch; C = cfg.feature_cells).

SAMPLE_KEYS = (
    "ground_rgb",  # (3, Hg, Wg) float [0, 1]
    "bev_grid",  # (C, C, 2) grid_sample coordinates into the ground image
    "bev_valid",  # (C, C) float
    "sat_rgb",  # (3, S, S) float [0, 1]
    "sat_m_per_px",  # () float, metres per pixel of sat_rgb
    "prior_yaw_rad",  # () float
    "T_patch_base",  # (3,) ground truth (x_m, y_m, yaw_rad)
)


def _smooth_noise(gen: torch.Generator, size: int, cells: tuple[int, ...]) -> torch.Tensor:
    """(3, size, size) texture: sum of bicubically upsampled random grids at several scales."""
    tex = torch.zeros(1, 3, size, size)
    for k, c in enumerate(cells):
        g = torch.rand(1, 3, c, c, generator=gen)
        tex += F.interpolate(g, size=(size, size), mode="bicubic", align_corners=False) / (k + 1)
    tex -= tex.amin(dim=(2, 3), keepdim=True)
    tex /= tex.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return tex[0]


class SyntheticWarpDataset(Dataset):
    """N samples: a random texture (the "world"), a north-up satellite crop centred on the
    prior, and an orthographic forward-up "ground" image of the area ahead of the vehicle at a
    known pose ``T_patch_base`` (translation within ``max_offset_m``, heading within 10 deg of the prior).

    The ground view covers ``x in [0, Hg * g_m]`` ahead and ``y in +-Wg * g_m / 2`` with
    ``g_m = sat_m_per_px / 2``; its BEV sampling grid is exact, so the matcher's BEV projection,
    correlation, flow, confidence and Procrustes are all exercised with a known answer.
    Deterministic per (seed, index).
    """

    def __init__(self, n: int, cfg: DenseFlowConfig, seed: int = 0, sat_m_per_px: float | None = None,
                 max_offset_m: float | None = None, max_yaw_noise_deg: float = 10.0) -> None:
        if n < 1:
            raise ConfigError(f"SyntheticWarpDataset: n must be >= 1, got {n}")
        self.n, self.cfg, self.seed = int(n), cfg, int(seed)
        self.sat_m_per_px = float(sat_m_per_px or 51.2 / cfg.sat_size_px * 2.0)
        half_extent = cfg.sat_size_px * self.sat_m_per_px / 2.0
        self.max_offset_m = float(max_offset_m if max_offset_m is not None else 0.2 * half_extent)
        self.max_yaw_noise_rad = math.radians(max_yaw_noise_deg)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        if not 0 <= idx < self.n:
            raise IndexError(idx)
        cfg = self.cfg
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + idx)
        S, m = cfg.sat_size_px, self.sat_m_per_px
        hg, wg = cfg.ground_size_px
        g_m = m / 2.0
        L = 1.5 * max(S * m / 2.0, math.hypot(hg * g_m, wg * g_m / 2.0) + self.max_offset_m)  # texture half extent
        tex_px = 384
        tex = _smooth_noise(gen, tex_px, (6, 12, 24, 48, 96))

        def sample(east_north: torch.Tensor) -> torch.Tensor:  # (H, W, 2) metres -> (3, H, W)
            grid = torch.stack([east_north[..., 0] / L, -east_north[..., 1] / L], dim=-1)
            return F.grid_sample(tex[None], grid[None].float(), mode="bilinear", align_corners=False)[0]

        r = torch.rand(4, generator=gen)
        prior_yaw = (r[0] * 2 - 1) * math.pi
        x, y = (r[1] * 2 - 1) * self.max_offset_m, (r[2] * 2 - 1) * self.max_offset_m
        yaw = prior_yaw + (r[3] * 2 - 1) * self.max_yaw_noise_rad
        # satellite: patch pixel (u, v) -> (east, north)
        idx_s = torch.arange(S, dtype=torch.float64) - (S - 1) / 2.0
        north, east = torch.meshgrid(-idx_s * m, idx_s * m, indexing="ij")
        sat = sample(torch.stack([east, north], dim=-1))
        # ground: pixel (u, v) -> base (x fwd, y left) -> patch frame via the true pose
        vv, uu = torch.meshgrid(torch.arange(hg, dtype=torch.float64), torch.arange(wg, dtype=torch.float64), indexing="ij")
        bx, by = (hg - 0.5 - vv) * g_m, ((wg - 1) / 2.0 - uu) * g_m
        c, s = math.cos(float(yaw)), math.sin(float(yaw))
        ground = sample(torch.stack([c * bx - s * by + float(x), s * bx + c * by + float(y)], dim=-1))
        ground = (ground * 0.8 + 0.1 + 0.02 * torch.randn(ground.shape, generator=gen)).clamp(0, 1)
        # BEV sampling grid of the orthographic ground view (north-up, prior-rotated)
        C = cfg.feature_cells
        mc = m * cfg.feature_stride
        idx_c = torch.arange(C, dtype=torch.float64) - (C - 1) / 2.0
        pn, pe = torch.meshgrid(-idx_c * mc, idx_c * mc, indexing="ij")
        cp, sp = math.cos(-float(prior_yaw)), math.sin(-float(prior_yaw))
        b_x, b_y = cp * pe - sp * pn, sp * pe + cp * pn
        u = (wg - 1) / 2.0 - b_y / g_m
        v = hg - 0.5 - b_x / g_m
        valid = (u >= -0.5) & (u <= wg - 0.5) & (v >= -0.5) & (v <= hg - 0.5)
        grid = torch.stack([(2 * u + 1) / wg - 1, (2 * v + 1) / hg - 1], dim=-1)
        grid[~valid] = -2.0
        return {
            "ground_rgb": ground.float(),
            "bev_grid": grid.float(),
            "bev_valid": valid.float(),
            "sat_rgb": sat.float(),
            "sat_m_per_px": torch.tensor(m, dtype=torch.float32),
            "prior_yaw_rad": torch.tensor(float(prior_yaw), dtype=torch.float32),
            "T_patch_base": torch.tensor([float(x), float(y), math.remainder(float(yaw), 2 * math.pi)], dtype=torch.float32),
        }


class PairTensorDataset(Dataset):
    """Adapts :class:`xview_localizer.train.pairs.PairDataset` records to model tensors:
    resizes the ground image and the satellite patch to the preset, computes the north-up,
    prior-rotated BEV sampling grid with the record's camera and ``T_base_camera``."""

    def __init__(self, directory: Any, cfg: DenseFlowConfig, unknown_orientation_seed: int | None = None) -> None:
        """``directory``: a pair directory, or an already open sequence of pair samples
        (e.g. the KITTI / VIGOR loaders of :mod:`xview_localizer.train.datasets`).
        ``unknown_orientation_seed``: when set, the prior yaw of sample i is
        :func:`unknown_prior_yaw_rad` (seed, i), uniform in [-pi, pi) (the same priors the sparse
        adapter uses, so both models see the same samples)."""
        from .pairs import PairDataset  # written by the synthetic-data issue

        if isinstance(directory, (str, os.PathLike)):
            self.pairs = PairDataset(Path(directory), load_depth=False)
        else:
            self.pairs = directory
        self.cfg = cfg
        self.unknown_orientation_seed = unknown_orientation_seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        from ..matcher.dense_flow import bev_grid_for_camera
        from ..matcher.inference import _to_tensor

        cfg = self.cfg
        rec = self.pairs[idx]
        sat = np.asarray(rec.sat_rgb)
        if sat.shape[0] != sat.shape[1]:
            raise DatasetError(f"pair {idx}: satellite patch must be square, got {sat.shape[:2]}")
        sat_m_per_px = float(rec.sat_m_per_px) * sat.shape[1] / cfg.sat_size_px
        prior_yaw_rad = float(rec.prior_yaw_rad)
        if self.unknown_orientation_seed is not None:
            prior_yaw_rad = unknown_prior_yaw_rad(self.unknown_orientation_seed, idx)
        grid, valid = bev_grid_for_camera(
            rec.camera, rec.T_base_camera, prior_yaw_rad, cfg.feature_cells,
            sat_m_per_px * cfg.feature_stride, cfg.ground_z_m,
        )
        return {
            "ground_rgb": _to_tensor(np.asarray(rec.ground_rgb), cfg.ground_size_px),
            "bev_grid": torch.from_numpy(grid),
            "bev_valid": torch.from_numpy(valid),
            "sat_rgb": _to_tensor(sat, (cfg.sat_size_px, cfg.sat_size_px)),
            "sat_m_per_px": torch.tensor(sat_m_per_px, dtype=torch.float32),
            "prior_yaw_rad": torch.tensor(prior_yaw_rad, dtype=torch.float32),
            "T_patch_base": torch.tensor([float(v) for v in rec.T_patch_base], dtype=torch.float32),
        }


def open_dataset(spec: str, cfg: DenseFlowConfig | SparseDepthConfig, depth_aug: DepthAugment | None = None,
                 **opts: Any) -> Dataset:
    """``synthetic:N[:SEED]``, a pair directory (see the module docstring), or a benchmark:
    ``kitti:PATH`` / ``vigor:PATH`` with ``opts`` such as ``split``, ``area``, ``orientation``
    (see :func:`xview_localizer.train.datasets.open_dataset`; options set to None are ignored).

    A :class:`SparseDepthConfig` gives a :class:`SparsePairTensorDataset` with ``depth_aug``
    (depth kind options; synthetic:N is dense-flow only). For dense-flow only
    ``depth_aug.unknown_orientation`` (and its seed) is used."""
    sparse = isinstance(cfg, SparseDepthConfig)
    uo_seed = depth_aug.seed if depth_aug is not None and depth_aug.unknown_orientation else None

    def adapt(pairs: Any) -> Dataset:
        if sparse:
            return SparsePairTensorDataset(pairs, cfg, depth_aug)
        return PairTensorDataset(pairs, cfg, unknown_orientation_seed=uo_seed)

    if spec.startswith(("kitti:", "vigor:")):
        from .datasets import open_dataset as open_benchmark

        return adapt(open_benchmark(spec, **opts))
    if spec.startswith("synthetic:"):
        if sparse:
            raise DatasetError(f"dataset {spec!r}: synthetic:N is dense-flow only; the sparse-depth model "
                               "needs a pair directory with depth (xview-localizer sim dataset)")
        parts = spec.split(":")
        try:
            n = int(parts[1])
            seed = int(parts[2]) if len(parts) > 2 else 0
        except (IndexError, ValueError) as exc:
            raise DatasetError(f"dataset {spec!r}: expected synthetic:N[:SEED]") from exc
        return SyntheticWarpDataset(n, cfg, seed=seed)
    path = Path(spec)
    if not path.is_dir():
        raise DatasetError(f"dataset {spec}: not a directory (nor synthetic:N[:SEED])")
    return adapt(path)
