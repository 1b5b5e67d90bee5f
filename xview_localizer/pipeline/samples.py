"""The pipeline's plain data: what goes into the :class:`~.localizer.Localizer` (fixes, odometry,
frames) and what comes out (priors, estimates, step results), the stable rejection reasons and
the protocols the localizer needs from a matcher and a tile cache.

Stamps are integer nanoseconds (``stamp_ns``); poses are :class:`~..core.se2.SE2` in the frames
their names say (``T_map_base``, ``T_patch_base``); covariances are 3x3 over (x_m, y_m, yaw_rad).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np

from ..core.errors import GeometryError
from ..core.se2 import SE2
from ..matcher.base import Correspondences

NS_PER_S = 1_000_000_000

#: Stable keys of rejected frames (the node reports each on /diagnostics).
REASONS = (
    "no_fix",
    "stale_fix",
    "fix_jump",
    "tiles_unavailable",
    "matcher_failed",
    "too_few_matches",
    "solver_degenerate",
    "gnss_inconsistent",
    "yaw_ambiguous",
    "yaw_inconsistent",
    "odometry_contradiction",
    "low_evidence",
)

#: Stable keys of rejected fixes / odometry samples (:meth:`Localizer.add_fix`, ``add_odom``).
INPUT_REASONS = tuple(f"{kind}_stamp_{what}" for kind in ("fix", "odom") for what in ("future", "past", "duplicate"))


# ----------------------------------------------------------------------------------------------
# Plain data
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FixSample:
    """A valid GNSS fix.

    Attributes:
        stamp_ns: time of the fix (ns).
        lat_deg, lon_deg: WGS84 (finite, in range).
        alt_m: ellipsoidal altitude (m; NaN allowed = unknown).
        cov_en_m2: (2, 2) covariance of (east, north) in metres^2, or None = unknown (then
            ``LocalizerConfig.fix_default_std_m`` is used).
    """

    stamp_ns: int
    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0
    cov_en_m2: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if not isinstance(self.stamp_ns, (int, np.integer)):
            raise GeometryError(f"FixSample.stamp_ns must be an int (ns), got {self.stamp_ns!r}")
        if not (math.isfinite(self.lat_deg) and math.isfinite(self.lon_deg)):
            raise GeometryError(f"FixSample: latitude/longitude must be finite, got ({self.lat_deg}, {self.lon_deg})")
        if abs(self.lat_deg) > 90.0 or abs(self.lon_deg) > 180.0:
            raise GeometryError(f"FixSample: latitude/longitude out of range: ({self.lat_deg}, {self.lon_deg})")
        if self.cov_en_m2 is not None:
            cov = np.array(self.cov_en_m2, dtype=float).reshape(2, 2)
            if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) <= 0.0):
                raise GeometryError(f"FixSample.cov_en_m2 must be finite with positive variances, got {cov.tolist()}")
            cov = 0.5 * (cov + cov.T)
            cov.setflags(write=False)
            object.__setattr__(self, "cov_en_m2", cov)
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))


@dataclass(frozen=True)
class OdomSample:
    """A planar odometry pose ``T_odom_base`` at ``stamp_ns``."""

    stamp_ns: int
    T_odom_base: SE2

    def __post_init__(self) -> None:
        if not isinstance(self.T_odom_base, SE2):
            raise GeometryError(f"OdomSample.T_odom_base must be an SE2, got {type(self.T_odom_base).__name__}")
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera frame.

    Attributes:
        stamp_ns: image stamp (ns); the estimate carries it.
        image_rgb: (H, W, 3) uint8 RGB.
        camera: :class:`xview_localizer.core.camera.PinholeCamera` of this image.
        T_base_camera: (4, 4) optical frame -> base_link.
        depth_m: optional (H, W) float32 metric depth (NaN = unknown).
    """

    stamp_ns: int
    image_rgb: np.ndarray
    camera: Any
    T_base_camera: np.ndarray
    depth_m: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        img = self.image_rgb
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise GeometryError(
                f"Frame.image_rgb must be an (H, W, 3) uint8 array, got "
                f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', type(img).__name__)}")
        T = np.asarray(self.T_base_camera, dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise GeometryError(f"Frame.T_base_camera must be a finite 4x4 matrix, got shape {T.shape}")
        object.__setattr__(self, "T_base_camera", T)
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))


@dataclass(frozen=True)
class Prior:
    """The GNSS prior at the image stamp, in the map frame and WGS84.

    ``cov_xy_m2`` is (2, 2) in the map frame; ``yaw_map_rad`` is None when unknown;
    ``source`` says how it was aligned ('interpolated', 'odometry', 'velocity', 'nearest').
    """

    stamp_ns: int
    x_m: float
    y_m: float
    lat_deg: float
    lon_deg: float
    cov_xy_m2: np.ndarray
    yaw_map_rad: Optional[float]
    fix_age_s: float
    source: str


@dataclass(frozen=True, eq=False)
class Estimate:
    """An accepted pose.

    Attributes:
        stamp_ns: the image stamp.
        T_map_base: pose of base_link in the map frame (x, y in metres; yaw about map +x).
        cov_xyyaw: (3, 3) covariance of (x_m, y_m, yaw_rad) in the map frame, symmetric
            positive definite, floored.
        T_patch_base: the solver's pose in the patch frame (true-north ENU about the prior).
        cov_xyyaw_patch: the solver's covariance in the patch frame (before inflation/floors).
        T_odom_base: odometry pose at the image stamp, or None without odometry.
        lat_deg, lon_deg: WGS84 position of base_link.
        n_confident, n_inliers: confident correspondences and solver inliers.
        gnss_mahalanobis: distance of the estimate from the GNSS prior.
        prior: the prior used.
    """

    stamp_ns: int
    T_map_base: SE2
    cov_xyyaw: np.ndarray
    T_patch_base: SE2
    cov_xyyaw_patch: np.ndarray
    T_odom_base: Optional[SE2]
    lat_deg: float
    lon_deg: float
    n_confident: int
    n_inliers: int
    gnss_mahalanobis: float
    prior: Prior


@dataclass(eq=False)
class StepResult:
    """What :meth:`Localizer.step` returns: an estimate, or ``None`` with ``reason`` (one of
    :data:`REASONS`) and a human ``detail``; ``timings_s`` per stage ('prior', 'tiles',
    'matcher', 'solver', 'total'); the patch and correspondences when they were computed (for
    the debug image)."""

    estimate: Optional[Estimate]
    reason: str = ""
    detail: str = ""
    timings_s: dict = field(default_factory=dict)
    prior: Optional[Prior] = None
    sat_rgb: Optional[np.ndarray] = None
    georef: Any = None
    correspondences: Optional[Correspondences] = None
    inlier_mask: Optional[np.ndarray] = None
    #: the matcher's pose-vote evidence of the chosen solution (sparse-depth), else None
    evidence: Optional[dict] = None

    @property
    def ok(self) -> bool:
        return self.estimate is not None


class MatcherLike(Protocol):
    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad) -> Correspondences: ...


class TileCacheLike(Protocol):
    def patch(self, lat_deg: float, lon_deg: float, size_px: int, m_per_px: float): ...

