"""Configuration of the depth-prior sparse matcher (:mod:`.sparse_depth`): the typed frozen
:class:`SparseDepthConfig`, its presets and the depth kinds the network accepts.

Depth kinds (:data:`DEPTH_KINDS`, one per batch):

* ``metric``: optical-z depth in metres; keypoints are lifted to base_link metres, the pose is
  rigid (SE(2)).
* ``relative``: optical-z depth up to an unknown scale; keypoints are lifted camera-centred
  (base_link axes, origin at the camera, relative units), the pose is Sim(2).
* ``inverse``: 1 / relative depth (as most monocular depth networks output); as ``relative``.
* ``none``: no depth: the flat-ground fallback (base_link metres at ``ground_z_m``, rigid).

Sizes: the ground image is resized to ``ground_size_px = (H, W)`` and encoded to
``ground_cells = (Hf, Wf) = (H, W) / ground_stride`` keypoint candidate cells; the square
satellite patch of ``sat_size_px`` pixels is encoded to ``sat_cells = sat_size_px / sat_stride``
cells per side (``m_per_cell = sat_m_per_px * sat_stride``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch

from ..core.errors import ConfigError
from .norms import NORM_KINDS

__all__ = ["DepthKind", "DEPTH_KINDS", "INPUT_MODES", "SparseDepthConfig", "SPARSE_PRESETS", "sparse_preset",
           "encoder_input"]

#: :attr:`SparseDepthConfig.input_mode` values.
INPUT_MODES: tuple[str, ...] = ("rgb", "gray")
#: ITU-R BT.601 luma weights of (R, G, B).
_LUMA = (0.299, 0.587, 0.114)


def encoder_input(rgb: torch.Tensor, input_mode: str) -> torch.Tensor:
    """What an encoder sees of (B, 3, H, W) images in [0, 1]: themselves ("rgb") or their
    luminance repeated in the three channels ("gray")."""
    if input_mode == "rgb":
        return rgb
    w = rgb.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (rgb * w).sum(dim=1, keepdim=True).expand(-1, 3, -1, -1)

DepthKind = Literal["metric", "relative", "inverse", "none"]
#: ``none`` = no depth: flat-ground fallback.
DEPTH_KINDS: tuple[str, ...] = ("metric", "relative", "inverse", "none")


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SparseDepthConfig:
    """Architecture and input geometry of the depth-prior sparse matcher.

    Attributes:
        name: preset name stored in checkpoints.
        ground_size_px: (H, W) the ground image is resized to (multiples of ``ground_stride``).
        sat_size_px: side of the square satellite input (multiple of ``sat_stride``).
        ground_stride, sat_stride: encoder output strides (4 or 8) of the two encoders.
        encoder_widths: channels of the 3 ResNet stages; blocks_per_stage: BasicBlocks per stage.
        feature_dim: descriptor channels (both views).
        num_keypoints: k of the top-k keypoint selection (<= ground feature cells).
        nms_radius_cells: non-maximum suppression radius on the score map (0 disables).
        refine_radius_cells: half-width r of the (2r+1)^2 soft-argmax window around the argmax.
        init_temperature: initial softmax temperature of the cosine similarity (learnt, in log).
        sat_rotations: 1 (plain) or 4 (C4 group pooling of the satellite encoder).
        max_range_m: metric/flat points further than this horizontally from the camera drop.
        ground_z_m: ground height in base_link for the flat-ground fallback.
        robust_iterations: IRLS iterations (Cauchy, detached weights) of the in-network solver;
            0 = plain weighted Procrustes.
        vote_radius_cells: half-width (satellite cells) of the translation search of the pose
            vote (:func:`vote_pose`); 0 disables the vote (every keypoint takes its global
            argmax, the first design).
        vote_step_cells: translation step of the vote grid (cells).
        vote_pool_cells: r of the (2r+1)^2 max-pooling of the similarity maps before voting
            (tolerance of the nearest-cell lookup).
        known_yaw_range_deg, known_yaw_step_deg: yaw hypotheses prior ± range in steps, when a
            prior yaw is given.
        unknown_yaw_bins: yaw hypotheses around the circle without a prior yaw.
        vote_scales, vote_scale_range: log-spaced depth-scale hypotheses for relative depth.
        init_vote_inv_temperature: initial sharpness of the vote softmax (learnt, in log).
        sat_norm: normalization of the satellite encoder, "instance" or "frozen" (fixed
            statistics: area feature maps cut exactly, :mod:`.norms`).
        input_mode: what the encoders see of an image: "rgb" (as given, in [0, 1]) or "gray"
            (its luminance ``0.299 R + 0.587 G + 0.114 B`` in all three channels, so that the
            stem's weights still apply; pixel-local, so area features stay exact). An input
            design choice of issue 14 (docs/styles.md, "Input design").
    """

    name: str = "compact"
    ground_size_px: tuple[int, int] = (128, 512)
    sat_size_px: int = 256
    ground_stride: int = 8
    sat_stride: int = 4
    encoder_widths: tuple[int, int, int] = (32, 64, 96)
    blocks_per_stage: int = 1
    feature_dim: int = 128
    num_keypoints: int = 128
    nms_radius_cells: int = 1
    refine_radius_cells: int = 3
    init_temperature: float = 0.1
    sat_rotations: int = 1
    max_range_m: float = 100.0
    ground_z_m: float = 0.0
    robust_iterations: int = 0
    vote_radius_cells: int = 16
    vote_step_cells: int = 2
    vote_pool_cells: int = 1
    known_yaw_range_deg: float = 12.5
    known_yaw_step_deg: float = 2.5
    unknown_yaw_bins: int = 36
    vote_scales: int = 9
    vote_scale_range: tuple[float, float] = (0.25, 4.0)
    init_vote_inv_temperature: float = 20.0
    sat_norm: str = "instance"
    input_mode: str = "rgb"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ground_size_px", tuple(int(v) for v in self.ground_size_px))
        object.__setattr__(self, "encoder_widths", tuple(int(v) for v in self.encoder_widths))
        object.__setattr__(self, "vote_scale_range", tuple(float(v) for v in self.vote_scale_range))
        if not self.name:
            raise ConfigError("SparseDepthConfig.name must be a non-empty string")
        if self.sat_norm not in NORM_KINDS:
            raise ConfigError(f"SparseDepthConfig.sat_norm must be one of {NORM_KINDS}, got {self.sat_norm!r}")
        if self.input_mode not in INPUT_MODES:
            raise ConfigError(f"SparseDepthConfig.input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
        for f in ("ground_stride", "sat_stride"):
            if getattr(self, f) not in (4, 8):
                raise ConfigError(f"SparseDepthConfig.{f} must be 4 or 8, got {getattr(self, f)}")
        if len(self.ground_size_px) != 2 or any(v <= 0 or v % self.ground_stride for v in self.ground_size_px):
            raise ConfigError(
                f"SparseDepthConfig.ground_size_px must be two positive multiples of ground_stride "
                f"{self.ground_stride}, got {self.ground_size_px}"
            )
        if self.sat_size_px <= 0 or self.sat_size_px % self.sat_stride:
            raise ConfigError(
                f"SparseDepthConfig.sat_size_px must be a positive multiple of sat_stride {self.sat_stride}, "
                f"got {self.sat_size_px}"
            )
        if len(self.encoder_widths) != 3 or min(self.encoder_widths) <= 0:
            raise ConfigError(f"SparseDepthConfig.encoder_widths must be 3 positive ints, got {self.encoder_widths}")
        for f in ("blocks_per_stage", "feature_dim", "num_keypoints"):
            if int(getattr(self, f)) < 1:
                raise ConfigError(f"SparseDepthConfig.{f} must be >= 1, got {getattr(self, f)}")
        hf, wf = self.ground_cells
        if self.num_keypoints > hf * wf:
            raise ConfigError(
                f"SparseDepthConfig.num_keypoints {self.num_keypoints} exceeds the {hf}x{wf} ground feature cells"
            )
        for f in ("nms_radius_cells", "refine_radius_cells", "robust_iterations"):
            if int(getattr(self, f)) < 0:
                raise ConfigError(f"SparseDepthConfig.{f} must be >= 0, got {getattr(self, f)}")
        if not (math.isfinite(self.init_temperature) and self.init_temperature > 0):
            raise ConfigError(f"SparseDepthConfig.init_temperature must be > 0, got {self.init_temperature}")
        if self.sat_rotations not in (1, 4):
            raise ConfigError(f"SparseDepthConfig.sat_rotations must be 1 or 4, got {self.sat_rotations}")
        if not (math.isfinite(self.max_range_m) and self.max_range_m > 0):
            raise ConfigError(f"SparseDepthConfig.max_range_m must be finite and > 0, got {self.max_range_m}")
        if not math.isfinite(self.ground_z_m):
            raise ConfigError(f"SparseDepthConfig.ground_z_m must be finite, got {self.ground_z_m}")
        for f in ("vote_radius_cells", "vote_pool_cells"):
            if int(getattr(self, f)) < 0:
                raise ConfigError(f"SparseDepthConfig.{f} must be >= 0, got {getattr(self, f)}")
        for f in ("vote_step_cells", "unknown_yaw_bins", "vote_scales"):
            if int(getattr(self, f)) < 1:
                raise ConfigError(f"SparseDepthConfig.{f} must be >= 1, got {getattr(self, f)}")
        for f in ("known_yaw_range_deg", "known_yaw_step_deg", "init_vote_inv_temperature"):
            v = getattr(self, f)
            if not (math.isfinite(v) and v >= 0) or (f != "known_yaw_range_deg" and v == 0):
                raise ConfigError(f"SparseDepthConfig.{f} must be finite and > 0 (range >= 0), got {v}")
        lo, hi = self.vote_scale_range if len(self.vote_scale_range) == 2 else (0.0, 0.0)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ConfigError(f"SparseDepthConfig.vote_scale_range must be 0 < lo <= hi, got {self.vote_scale_range}")

    @property
    def ground_cells(self) -> tuple[int, int]:
        """(Hf, Wf) of the ground feature map = keypoint candidate grid."""
        return self.ground_size_px[0] // self.ground_stride, self.ground_size_px[1] // self.ground_stride

    @property
    def sat_cells(self) -> int:
        """Side of the square satellite feature map."""
        return self.sat_size_px // self.sat_stride

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ground_size_px"] = list(self.ground_size_px)
        d["encoder_widths"] = list(self.encoder_widths)
        d["vote_scale_range"] = list(self.vote_scale_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SparseDepthConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"SparseDepthConfig: unknown field(s) {sorted(unknown)}")
        return cls(**d)


#: ``compact``: CPU default, the dense-flow compact input sizes (128x512 ground, 256 px / 0.4 m
#: satellite = ±51 m), 128 keypoints, satellite at 1/4 (64x64 cells of 1.6 m).
#: ``paper``: ResNet18-size encoders, 256x1024 ground, 512 px / 0.2 m satellite at 1/4
#: (128x128 cells of 0.8 m), 256-d descriptors, 256 keypoints, C4 satellite pooling.
SPARSE_PRESETS: dict[str, SparseDepthConfig] = {
    "compact": SparseDepthConfig(),
    "paper": SparseDepthConfig(
        name="paper",
        ground_size_px=(256, 1024),
        sat_size_px=512,
        ground_stride=8,
        sat_stride=4,
        encoder_widths=(64, 128, 256),
        blocks_per_stage=2,
        feature_dim=256,
        num_keypoints=256,
        sat_rotations=4,
    ),
}


def sparse_preset(name: str, **overrides: Any) -> SparseDepthConfig:
    """The named preset, optionally with fields replaced (``sparse_preset("compact", num_keypoints=64)``)."""
    if name not in SPARSE_PRESETS:
        raise ConfigError(f"unknown sparse-depth preset {name!r}; known: {sorted(SPARSE_PRESETS)}")
    cfg = SPARSE_PRESETS[name]
    return replace(cfg, **overrides) if overrides else cfg
