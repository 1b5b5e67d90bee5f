"""Lenses of the styled ground cameras: radial distortion, fisheye and 360-degree panoramas
(issue 14, requirement 2). A style family's :class:`LensRanges` says which share of its images
gets which lens; :func:`draw_lens` draws one per image.

Models (those of :mod:`xview_localizer.core.camera` / :mod:`~xview_localizer.core.camera_pano`):

* ``plumb_bob``: radial ``k1``, ``k2`` (``p1 = p2 = k3 = 0``); the focal length keeps the
  drawn horizontal field of view, i.e. the image's left / right edge centres look
  ``hfov / 2`` off the axis: ``f = (W / 2) / (r (1 + k1 r^2 + k2 r^4))`` with
  ``r = tan(hfov / 2)`` (barrel ``k1 < 0`` bends straight lines away from the centre;
  pincushion ``k1 > 0`` towards it);
* ``equidistant`` (fisheye, OpenCV's model): ``k1`` (``k2 = k3 = k4 = 0``) and its own field of
  view: ``f = (W / 2) / (t (1 + k1 t^2))`` with ``t = hfov / 2`` (radians);
* ``equirectangular``: the full-sphere panorama of the image size.

Every drawn pinhole lens covers the whole image with invertible rays (each border pixel
undistorts and re-projects onto itself): a ``plumb_bob`` draw that would fold halves
``k1, k2`` until it does not, a fisheye whose corners would look 90 degrees or more off the axis
narrows its field of view by 5-degree steps. The principal point is the image centre.

Stream layout: :func:`draw_lens` always takes the same five numbers from its generator (lens
choice, k1, k2, fisheye field of view, fisheye k1) whatever the shares, so changing a share
never shifts another draw; callers give it a generator of its own (``sim dataset`` seeds it
by pair), so the camera height / pitch / roll / field of view and the sensor noise of every
image are the ones a lens-free style draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from ..core.camera import PinholeCamera
from ..core.camera_pano import EquirectangularCamera
from ..core.errors import ConfigError

__all__ = ["LensRanges", "LENS_KINDS", "draw_lens", "lens_kind", "covers_image"]

#: Lens kinds, as reported by :func:`lens_kind`.
LENS_KINDS = ("pinhole", "plumb_bob", "equidistant", "equirectangular")

_MAX_SHRINK_STEPS = 12
_FISHEYE_STEP_DEG = 5.0


@dataclass(frozen=True)
class LensRanges:
    """Shares of images with each lens (the rest is the undistorted pinhole) and the ranges
    (min, max) of their coefficients.

    plumb_bob_share, fisheye_share, panorama_share: in [0, 1], sum <= 1. k1 in [-0.5, 0.5],
    k2 in [-0.2, 0.2]: plumb_bob radial coefficients. fisheye_hfov_deg in [60, 170]: the
    fisheye's horizontal field of view (it replaces the family's pinhole one);
    fisheye_k1 in [-0.2, 0.2].
    """

    plumb_bob_share: float = 0.0
    k1: tuple[float, float] = (-0.3, 0.1)
    k2: tuple[float, float] = (-0.02, 0.05)
    fisheye_share: float = 0.0
    fisheye_hfov_deg: tuple[float, float] = (100.0, 150.0)
    fisheye_k1: tuple[float, float] = (-0.05, 0.05)
    panorama_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("plumb_bob_share", "fisheye_share", "panorama_share"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ConfigError(f"LensRanges.{name} must be in [0, 1], got {v!r}")
            object.__setattr__(self, name, float(v))
        total = self.plumb_bob_share + self.fisheye_share + self.panorama_share
        if total > 1.0 + 1e-12:
            raise ConfigError(f"LensRanges: the shares add up to {total:.3f} > 1")
        for name, lo, hi in (("k1", -0.5, 0.5), ("k2", -0.2, 0.2), ("fisheye_hfov_deg", 60.0, 170.0),
                             ("fisheye_k1", -0.2, 0.2)):
            try:
                pair = tuple(float(v) for v in getattr(self, name))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"LensRanges.{name} must be two numbers, got {getattr(self, name)!r}") from exc
            if len(pair) != 2 or not (lo <= pair[0] <= pair[1] <= hi):
                raise ConfigError(f"LensRanges.{name} must be (min, max) within [{lo}, {hi}], got {pair!r}")
            object.__setattr__(self, name, pair)

    @property
    def any(self) -> bool:
        """Whether any image gets a lens other than the undistorted pinhole."""
        return self.plumb_bob_share + self.fisheye_share + self.panorama_share > 0.0


def lens_kind(camera) -> str:
    """One of :data:`LENS_KINDS` for a camera (``'pinhole'``: no or all-zero distortion)."""
    if isinstance(camera, EquirectangularCamera):
        return "equirectangular"
    model = getattr(camera, "distortion_model", "none")
    d = np.asarray(getattr(camera, "d", ()), float)
    if model == "none" or not np.any(d != 0):
        return "pinhole"
    return str(model)


def _border_px(width_px: int, height_px: int) -> np.ndarray:
    """(N, 2) pixel centres of the image border (every pixel of the outermost ring)."""
    u = np.arange(width_px, dtype=float)
    v = np.arange(height_px, dtype=float)
    return np.concatenate([np.column_stack((u, np.zeros_like(u))), np.column_stack((u, np.full_like(u, height_px - 1))),
                           np.column_stack((np.zeros_like(v), v)), np.column_stack((np.full_like(v, width_px - 1), v))])


def covers_image(camera: PinholeCamera) -> bool:
    """Every border pixel of ``camera`` undistorts to a ray that re-projects onto it (for the
    centred radial models here, then every pixel does)."""
    _, ok = camera.undistort_checked(_border_px(camera.width_px, camera.height_px))
    return bool(np.all(ok))


def _centred(width_px: int, height_px: int, f_px: float, d: tuple[float, ...], model: str) -> PinholeCamera:
    return PinholeCamera.from_intrinsics(width_px, height_px, f_px, f_px, 0.5 * width_px - 0.5,
                                         0.5 * height_px - 0.5, d, model)


def _plumb_bob(width_px: int, height_px: int, hfov_rad: float, k1: float, k2: float) -> PinholeCamera:
    r = math.tan(0.5 * hfov_rad)
    for _ in range(_MAX_SHRINK_STEPS):
        r_d = r * (1.0 + k1 * r * r + k2 * r ** 4)
        if r_d > 0:
            cam = _centred(width_px, height_px, 0.5 * width_px / r_d, (k1, k2, 0.0, 0.0, 0.0), "plumb_bob")
            if covers_image(cam):
                return cam
        k1, k2 = 0.5 * k1, 0.5 * k2
    return _centred(width_px, height_px, 0.5 * width_px / r, (k1, k2, 0.0, 0.0, 0.0), "plumb_bob")


def _fisheye(width_px: int, height_px: int, hfov_deg: float, k1: float) -> PinholeCamera:
    cam = None
    while hfov_deg >= 20.0:
        t = math.radians(0.5 * hfov_deg)
        cam = _centred(width_px, height_px, 0.5 * width_px / (t * (1.0 + k1 * t * t)), (k1, 0.0, 0.0, 0.0),
                       "equidistant")
        if covers_image(cam):
            return cam
        hfov_deg -= _FISHEYE_STEP_DEG
    assert cam is not None
    return cam


def draw_lens(lens: LensRanges, width_px: int, height_px: int, hfov_rad: float,
              rng: np.random.Generator) -> Optional[Union[PinholeCamera, EquirectangularCamera]]:
    """The lens camera of one image (``width_px`` x ``height_px``; ``hfov_rad``: the drawn
    pinhole field of view, kept by ``plumb_bob``), or None for the undistorted pinhole. Takes
    five numbers from ``rng`` whatever the shares (module docstring)."""
    choice = float(rng.random())
    k1 = float(rng.uniform(*lens.k1))
    k2 = float(rng.uniform(*lens.k2))
    fe_hfov_deg = float(rng.uniform(*lens.fisheye_hfov_deg))
    fe_k1 = float(rng.uniform(*lens.fisheye_k1))
    if choice < lens.panorama_share:
        return EquirectangularCamera(width_px, height_px)
    choice -= lens.panorama_share
    if choice < lens.fisheye_share:
        return _fisheye(width_px, height_px, fe_hfov_deg, fe_k1)
    choice -= lens.fisheye_share
    if choice < lens.plumb_bob_share:
        return _plumb_bob(width_px, height_px, hfov_rad, k1, k2)
    return None
