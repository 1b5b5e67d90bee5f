"""The one contract between matchers and the pose solver (re-exported by
:mod:`xview_localizer.matcher.base`, the path the matchers use).

Every matcher returns :class:`Correspondences` in metres, never pixels:

* ``src_xy_m (N, 2)``: points in the vehicle's BEV frame ``base_link`` (x forward, y left),
  lifted from the ground image by the flat-ground assumption or by depth;
* ``dst_xy_m (N, 2)``: the same points in the satellite patch frame (ENU: x east, y north,
  origin at the patch centre, i.e. at the prior);
* ``weight (N,)``: confidences in [0, 1];
* ``scale_known``: ``False`` when ``src_xy_m`` comes from relative (up-to-scale) depth, so
  the solver estimates a Sim(2) with the depth scale.

The solver (:func:`xview_localizer.core.procrustes.solve`) returns ``T_patch_base`` such that
``dst_xy_m ~= T_patch_base.apply(src_xy_m)``.

Arrays are stored as read-only float64 numpy copies. Torch tensors are accepted (detached and
moved to the CPU). ``N = 0`` is a valid (empty) set; the solver rejects it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import GeometryError

__all__ = ["Correspondences"]


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        arr = np.array(value, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"Correspondences.{name}: not a numeric array ({exc})") from exc
    return arr


@dataclass(frozen=True, eq=False)
class Correspondences:
    """Metric point correspondences from a matcher (see the module docstring).

    Attributes:
        src_xy_m: (N, 2) float64, points in ``base_link`` (metres, or relative depth units
            when ``scale_known`` is False).
        dst_xy_m: (N, 2) float64, the same points in the patch frame (metres, ENU).
        weight: (N,) float64 confidences in [0, 1].
        scale_known: False for relative depth (solve Sim(2)); True for metric ``src_xy_m``.

    Raises:
        GeometryError: wrong shapes, mismatched N, non-finite values, weights outside [0, 1].
    """

    src_xy_m: np.ndarray
    dst_xy_m: np.ndarray
    weight: np.ndarray
    scale_known: bool = True

    def __post_init__(self) -> None:
        src = _to_numpy("src_xy_m", self.src_xy_m)
        dst = _to_numpy("dst_xy_m", self.dst_xy_m)
        w = _to_numpy("weight", self.weight)
        if src.ndim != 2 or src.shape[1] != 2:
            raise GeometryError(f"Correspondences.src_xy_m must have shape (N, 2), got {src.shape}")
        if dst.ndim != 2 or dst.shape[1] != 2:
            raise GeometryError(f"Correspondences.dst_xy_m must have shape (N, 2), got {dst.shape}")
        if w.ndim != 1:
            raise GeometryError(f"Correspondences.weight must have shape (N,), got {w.shape}")
        if not (src.shape[0] == dst.shape[0] == w.shape[0]):
            raise GeometryError(
                "Correspondences: mismatched N: src_xy_m has "
                f"{src.shape[0]}, dst_xy_m {dst.shape[0]}, weight {w.shape[0]}"
            )
        for name, arr in (("src_xy_m", src), ("dst_xy_m", dst), ("weight", w)):
            if not np.all(np.isfinite(arr)):
                bad = int(np.count_nonzero(~np.isfinite(arr)))
                raise GeometryError(f"Correspondences.{name}: {bad} non-finite value(s) (NaN/inf)")
        if w.size and (w.min() < 0.0 or w.max() > 1.0):
            raise GeometryError(
                f"Correspondences.weight must lie in [0, 1], got range [{w.min():.6g}, {w.max():.6g}]"
            )
        if not isinstance(self.scale_known, (bool, np.bool_)):
            raise GeometryError(
                f"Correspondences.scale_known must be a bool, got {type(self.scale_known).__name__}"
            )
        for arr in (src, dst, w):
            arr.setflags(write=False)
        object.__setattr__(self, "src_xy_m", src)
        object.__setattr__(self, "dst_xy_m", dst)
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "scale_known", bool(self.scale_known))

    def __len__(self) -> int:
        return int(self.weight.shape[0])

    @property
    def n_points(self) -> int:
        """Number of correspondences ``N``."""
        return len(self)

    def select(self, mask: np.ndarray) -> "Correspondences":
        """A subset by boolean mask (N,) or integer indices."""
        idx = np.asarray(mask)
        if idx.dtype == bool and idx.shape != (len(self),):
            raise GeometryError(f"Correspondences.select: mask must have shape ({len(self)},), got {idx.shape}")
        return Correspondences(self.src_xy_m[idx], self.dst_xy_m[idx], self.weight[idx], self.scale_known)
