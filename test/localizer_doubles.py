"""TEST DOUBLES for the localizer and node tests (never a product path).

Until the trained matcher exists these stand in for it, honestly labelled:

* :class:`NoisyTruthMatcher` - produces correspondences from a KNOWN ground-truth pose (set by
  the test before each frame) with Gaussian noise and gross outliers. It exercises the
  solver, the frame conversions, the covariance and the gating; it says nothing about how well
  a real matcher matches images.
* :class:`PriorEchoMatcher` - "the vehicle is exactly at the prior, heading the prior yaw",
  with noise: lets the node be tested end to end over DDS (poses come out at the GNSS prior).
  Loaded in the node process through the ``matcher_factory`` parameter
  (``localizer_doubles:make_prior_echo_matcher``, with ``test/`` on ``PYTHONPATH``).
* :class:`SlowEchoMatcher` - the echo double, sleeping :data:`SLOW_MATCH_S` per frame: a
  matcher slower than the camera, for the node's latest-frame worker and its diagnostics.

Also :func:`write_tile_folder`: a folder of seeded random-texture XYZ PNG tiles around a point,
served by the real :class:`xview_localizer.tiles.server.TileServer` or read as ``file://``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np

from xview_localizer.core.geo import LocalEnu, latlon_to_tile
from xview_localizer.core.se2 import SE2
from xview_localizer.matcher.base import Correspondences


def write_tile_folder(root: Path, lat_deg: float, lon_deg: float, zoom: int, radius_tiles: int = 2,
                      seed: int = 0) -> Path:
    """Write ``root/{z}/{x}/{y}.png`` random-texture tiles, ``(2r+1)^2`` around a point."""
    rng = np.random.default_rng(seed)
    tx, ty = latlon_to_tile(lat_deg, lon_deg, zoom)
    for x in range(tx - radius_tiles, tx + radius_tiles + 1):
        for y in range(ty - radius_tiles, ty + radius_tiles + 1):
            d = root / str(zoom) / str(x)
            d.mkdir(parents=True, exist_ok=True)
            tile = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
            cv2.imwrite(str(d / f"{y}.png"), tile)
    return root


def _points(rng: np.random.Generator, n: int, half_m: float) -> np.ndarray:
    return rng.uniform(-half_m, half_m, size=(n, 2))


class NoisyTruthMatcher:
    """TEST DOUBLE: correspondences from a known true pose plus noise and outliers.

    Set ``truth = (lat_deg, lon_deg, yaw_true_rad)`` (yaw in the true-north ENU convention)
    before each ``match``. ``n_points`` base points uniform in +-``extent_m``; inliers get
    ``dst = T_patch_base_true.apply(src) + N(0, noise_m^2)`` and weights U(0.6, 1); a fraction
    ``outlier_fraction`` get uniform random ``dst`` in the patch and weights U(0, 1).
    """

    def __init__(self, seed: int = 0, n_points: int = 200, noise_m: float = 0.3,
                 outlier_fraction: float = 0.2, extent_m: float = 20.0) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_points = n_points
        self.noise_m = noise_m
        self.outlier_fraction = outlier_fraction
        self.extent_m = extent_m
        self.truth: tuple[float, float, float] | None = None
        self.calls: list[dict] = []

    def true_T_patch_base(self, georef) -> SE2:
        lat, lon, yaw_true = self.truth
        e, n = LocalEnu(georef.center_lat_deg, georef.center_lon_deg).forward(lat, lon)
        return SE2(float(e), float(n), yaw_true)

    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad):
        self.calls.append({"prior_yaw_rad": prior_yaw_rad, "georef": georef})
        T = self.true_T_patch_base(georef)
        src = _points(self.rng, self.n_points, self.extent_m)
        dst = T.apply(src) + self.rng.normal(0.0, self.noise_m, size=src.shape)
        weight = self.rng.uniform(0.6, 1.0, size=self.n_points)
        n_out = int(round(self.outlier_fraction * self.n_points))
        if n_out:
            half = 0.5 * georef.m_per_px * min(georef.width_px, georef.height_px)
            dst[:n_out] = _points(self.rng, n_out, half)
            weight[:n_out] = self.rng.uniform(0.0, 1.0, size=n_out)
        return Correspondences(src, dst, weight, True)


class PriorEchoMatcher:
    """TEST DOUBLE: the vehicle is at the patch centre heading ``prior_yaw_rad`` (0 when
    unknown), observed through ``n_points`` noisy correspondences."""

    def __init__(self, seed: int = 0, n_points: int = 100, noise_m: float = 0.2) -> None:
        self.rng = np.random.default_rng(seed)
        self.n_points = n_points
        self.noise_m = noise_m

    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad):
        yaw = 0.0 if prior_yaw_rad is None or not math.isfinite(prior_yaw_rad) else prior_yaw_rad
        T = SE2(0.0, 0.0, yaw)
        src = _points(self.rng, self.n_points, 15.0)
        dst = T.apply(src) + self.rng.normal(0.0, self.noise_m, size=src.shape)
        return Correspondences(src, dst, np.full(self.n_points, 0.9), True)


def make_prior_echo_matcher(checkpoint_path: str, device: str) -> PriorEchoMatcher:
    """``matcher_factory`` entry point for the node tests (arguments ignored)."""
    return PriorEchoMatcher(seed=0)


#: Seconds :class:`SlowEchoMatcher` spends in every ``match`` (from ``make_slow_echo_matcher``).
SLOW_MATCH_S = 2.0


class SlowEchoMatcher(PriorEchoMatcher):
    """TEST DOUBLE: :class:`PriorEchoMatcher` that sleeps ``match_s`` in every ``match`` - a
    matcher far slower than the camera. ``needs_yaw_prior = False`` (it "searches yaw
    itself"): one call per frame even without a prior yaw, so a frame costs ``match_s``."""

    needs_yaw_prior = False

    def __init__(self, match_s: float = SLOW_MATCH_S, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.match_s = match_s

    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad):
        time.sleep(self.match_s)
        return super().match(ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad)


def make_slow_echo_matcher(checkpoint_path: str, device: str) -> SlowEchoMatcher:
    """``matcher_factory`` entry point: :class:`SlowEchoMatcher` with :data:`SLOW_MATCH_S`."""
    return SlowEchoMatcher()


#: A pixel value in the top-left corner of an image that makes :class:`FaultEchoMatcher` raise.
MATCHER_FAULT_MARKER = 13


class FaultEchoMatcher(PriorEchoMatcher):
    """TEST DOUBLE: :class:`PriorEchoMatcher` that raises ``RuntimeError`` (like a torch failure,
    not an ``XViewError``) for images whose top-left pixel's red value is
    :data:`MATCHER_FAULT_MARKER` - how the bad-input matrix injects a matcher failure."""

    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad):
        if int(ground_rgb[0, 0, 0]) == MATCHER_FAULT_MARKER:
            raise RuntimeError("injected matcher failure (CUDA out of memory, say)")
        return super().match(ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad)


def make_fault_echo_matcher(checkpoint_path: str, device: str) -> FaultEchoMatcher:
    """``matcher_factory`` entry point of the bad-input matrix (arguments ignored)."""
    return FaultEchoMatcher(seed=0)
