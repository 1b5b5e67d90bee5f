"""The ROS-free per-frame pipeline: GNSS prior -> satellite patch -> matcher -> Procrustes ->
pose and covariance in the map frame -> gating.

One frame (:meth:`Localizer.step`):

1. **Prior.** The fix time-aligned to the image stamp: linear interpolation between the two
   fixes around it, or the latest fix propagated to the image stamp with odometry (rotated
   into the map by the last accepted ``T_map_odom``) or, without odometry, with the GNSS
   velocity. Older than ``fix_max_age_s`` -> rejected ``stale_fix``. A prior farther than
   ``max_jump_m`` + 3 GNSS sigma from the previous estimate propagated with odometry is a
   GNSS jump -> rejected ``fix_jump`` before any tile is fetched. The prior yaw comes from
   the previous estimate propagated with odometry, else from the GNSS course over at least
   ``course_min_baseline_m``, else it is unknown and the matcher runs at
   ``unknown_yaw_hypotheses`` evenly spaced yaws (the best-supported solution is kept).
2. **Patch** ``tile_cache.patch(lat, lon, size_px, m_per_px) -> (rgb, PatchGeoref)``: a
   north-up patch in the true-north ENU plane about the prior.
3. **Matcher** ``matcher.match(ground_rgb, camera, T_base_camera, sat_rgb, georef,
   prior_yaw_rad) -> Correspondences`` (``prior_yaw_rad`` in the patch frame, true north).
   A matcher that accepts depth (``accepts_depth = True`` or a ``depth_m`` keyword, e.g. the
   sparse-depth matcher) also gets ``depth_m=frame.depth_m, depth_kind=config.depth_kind``; one
   with ``needs_yaw_prior = False`` runs once even when the prior yaw is unknown (it gets
   ``prior_yaw_rad=None`` and searches every yaw itself).
4. **Procrustes** (:func:`xview_localizer.core.procrustes.solve`) on the confident
   correspondences -> ``T_patch_base`` and its 3x3 covariance. Correspondences with
   ``scale_known`` False (relative depth) are camera-centred: the Sim(2) solution is turned
   into ``T_patch_base`` with :func:`camera.T_patch_base_from_camera_centred` (covariance
   propagated through that map).
5. **Map frame.** ``T_patch_base`` -> WGS84 -> map (UTM grid of the datum's zone with the
   origin at the datum, or the local ENU plane at the datum). Yaw gets the meridian
   convergence (grid north vs true north) added; the covariance is rotated with the exact
   Jacobian of that mapping, scaled by the matcher's calibrated ``covariance_scale`` (from its
   checkpoint, :mod:`xview_localizer.evaluation.calibration`) and the user's ``cov_inflation``, and floored.
6. **Gating** (a rejected frame gives a reason, not an estimate): fewer than
   ``min_confident_matches`` confident or inlier matches -> ``too_few_matches``; Mahalanobis
   distance to the GNSS prior above ``max_gnss_mahalanobis`` -> ``gnss_inconsistent``;
   yaw farther than ``max_prior_yaw_deviation_rad`` from a known prior yaw -> ``yaw_inconsistent``;
   without a prior yaw, two disagreeing yaw hypotheses of similar support -> ``yaw_ambiguous``;
   farther than ``max_jump_m`` / ``max_yaw_jump_rad`` from the previous estimate propagated
   with odometry -> ``odometry_contradiction``.

Stamps are integer nanoseconds (``stamp_ns``). Fixes and odometry are held for ``history_s``
behind the reference clock the caller passes to ``add_fix``/``add_odom`` (the node's clock live,
the bag's time in replay) and behind each frame localized, never behind the newest stamp held: a
sample far from that clock is rejected on its own (``INPUT_REASONS``) and evicts nothing.
The datum is the configured one or, when the
configuration leaves it NaN, the first valid fix. Thread-safety: ``add_fix``/``add_odom`` may
be called from other threads than ``step``.
"""

from __future__ import annotations

import bisect
import dataclasses
import inspect
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np

from ..core import procrustes
from ..core.errors import (
    DegenerateInputError,
    GeometryError,
    LocalizationRejected,
    TileError,
    XViewError,
)
from ..core.geo import LocalEnu, UtmProjection
from ..core.se2 import SE2, wrap_angle_rad
from ..matcher.base import Correspondences
from .config import LocalizerConfig

__all__ = [
    "FixSample",
    "OdomSample",
    "Frame",
    "Estimate",
    "Prior",
    "StepResult",
    "MapProjection",
    "Localizer",
    "REASONS",
    "INPUT_REASONS",
    "solve_confident",
    "min_weight_for",
    "solution_from_camera_centred",
    "yaw_tries",
    "match_and_solve",
    "match_and_solve_all",
    "check_yaw_ambiguity",
    "matcher_covariance_scale",
    "gate_threshold",
]

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


# ----------------------------------------------------------------------------------------------
# Map frame
# ----------------------------------------------------------------------------------------------
class MapProjection:
    """WGS84 <-> the map frame: ``'utm'`` = the UTM grid of the datum's zone, shifted so the
    datum is the origin (navsat_transform's map), or ``'enu'`` = the local ENU tangent plane at
    the datum. x east(-ish), y north(-ish), metres."""

    def __init__(self, kind: str, datum_lat_deg: float, datum_lon_deg: float) -> None:
        if kind not in ("utm", "enu"):
            raise GeometryError(f"map projection must be 'utm' or 'enu', got {kind!r}")
        self.kind = kind
        self.datum_lat_deg = float(datum_lat_deg)
        self.datum_lon_deg = float(datum_lon_deg)
        if kind == "utm":
            self._utm = UtmProjection(self.datum_lat_deg, self.datum_lon_deg)
            e0, n0 = self._utm.forward(self.datum_lat_deg, self.datum_lon_deg)
            self._origin = (float(e0), float(n0))
        else:
            self._enu = LocalEnu(self.datum_lat_deg, self.datum_lon_deg)

    def forward(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """WGS84 -> map (x_m, y_m)."""
        if self.kind == "utm":
            e, n = self._utm.forward(lat_deg, lon_deg)
            return float(e) - self._origin[0], float(n) - self._origin[1]
        e, n = self._enu.forward(lat_deg, lon_deg)
        return float(e), float(n)

    def inverse(self, x_m: float, y_m: float) -> tuple[float, float]:
        """Map (x_m, y_m) -> WGS84 (lat_deg, lon_deg)."""
        if self.kind == "utm":
            lat, lon = self._utm.inverse(x_m + self._origin[0], y_m + self._origin[1])
        else:
            lat, lon = self._enu.inverse(x_m, y_m)
        return float(lat), float(lon)

    def convergence_rad(self, lat_deg: float, lon_deg: float) -> float:
        """Angle, CCW positive, from the map's +y axis to true north at a point, so that
        ``yaw_map_rad = yaw_true_enu_rad + convergence``."""
        if self.kind == "utm":
            return float(self._utm.convergence_rad(lat_deg, lon_deg))
        x0, y0 = self.forward(lat_deg, lon_deg)
        x1, y1 = self.forward(lat_deg + 1.0 / 111_320.0, lon_deg)
        return math.atan2(-(x1 - x0), y1 - y0)


def _jacobian_map_from_enu(proj: MapProjection, enu: LocalEnu, x_m: float, y_m: float) -> np.ndarray:
    """(2, 2) d(map xy)/d(local ENU xy) at a point of a local ENU plane (central differences)."""
    step_m = 1.0
    cols = []
    for dx, dy in ((step_m, 0.0), (0.0, step_m)):
        lat_p, lon_p = enu.inverse(x_m + dx, y_m + dy)
        lat_m, lon_m = enu.inverse(x_m - dx, y_m - dy)
        xp, yp = proj.forward(float(lat_p), float(lon_p))
        xm, ym = proj.forward(float(lat_m), float(lon_m))
        cols.append([(xp - xm) / (2 * step_m), (yp - ym) / (2 * step_m)])
    return np.array(cols).T


def _floor_covariance(cov: np.ndarray, floor_xy_m2: float, floor_yaw_rad2: float) -> np.ndarray:
    """Symmetrise; clamp the x-y block's eigenvalues and the yaw variance from below (both
    only add a positive semi-definite matrix, so the result stays positive definite)."""
    c = 0.5 * (cov + cov.T)
    w, v = np.linalg.eigh(c[:2, :2])
    delta = np.maximum(w, floor_xy_m2) - w
    c[:2, :2] += (v * delta) @ v.T
    c[2, 2] = max(c[2, 2], floor_yaw_rad2)
    w3, v3 = np.linalg.eigh(c)
    if w3.min() < 1e-6:
        c = (v3 * np.maximum(w3, 1e-6)) @ v3.T
    return 0.5 * (c + c.T)


def gate_threshold(gate: Any, yaw_known: bool) -> float:
    """The vote-mass threshold of a calibrated ``evidence_gate`` dict for a frame with / without
    a prior yaw (0 = off: no gate, or no threshold for that case)."""
    if not isinstance(gate, dict):
        return 0.0
    value = gate.get("min_vote_mass" if yaw_known else "min_vote_mass_unknown_yaw")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else 0.0


def min_weight_for(matcher: Any, cfg: LocalizerConfig) -> float:
    """The confidence threshold for ``matcher``'s weights: ``cfg.sparse_min_weight`` for a
    matcher whose weights are keypoint weights (``keypoint_weights = True``, the sparse-depth
    matcher), else ``cfg.min_weight``."""
    return cfg.sparse_min_weight if getattr(matcher, "keypoint_weights", False) else cfg.min_weight


def solve_confident(corr: Correspondences, cfg: LocalizerConfig,
                    procrustes_config: procrustes.ProcrustesConfig,
                    min_weight: float | None = None) -> tuple[np.ndarray, procrustes.ProcrustesResult]:
    """The localizer's solve of one matcher output: keep the correspondences with weight >=
    ``min_weight`` (default ``cfg.min_weight``; see :func:`min_weight_for`), need ``min_confident_matches`` of them and as many inliers after the robust
    Procrustes. Returns (confident mask over ``corr``, solver result; poses of camera-centred points
    when ``corr.scale_known`` is False). Also used by :mod:`xview_localizer.evaluation.calibration`.

    Raises:
        LocalizationRejected: "too_few_matches" or "solver_degenerate".
    """
    min_w = cfg.min_weight if min_weight is None else float(min_weight)
    confident = corr.weight >= min_w
    n_confident = int(np.count_nonzero(confident))
    if n_confident < cfg.min_confident_matches:
        raise LocalizationRejected("too_few_matches", f"{n_confident} confident matches (weight >= "
                                                      f"{min_w}), need {cfg.min_confident_matches}")
    try:
        sol = procrustes.solve(corr.select(confident), procrustes_config)
    except DegenerateInputError as exc:
        raise LocalizationRejected("solver_degenerate", str(exc)) from exc
    if sol.n_inliers < cfg.min_confident_matches:
        raise LocalizationRejected("too_few_matches", f"{sol.n_inliers} inliers after robust fitting, "
                                                      f"need {cfg.min_confident_matches}")
    return confident, sol


def _accepts_depth(matcher: Any) -> bool:
    """Whether ``matcher.match`` takes ``depth_m`` / ``depth_kind`` keywords: an
    ``accepts_depth`` attribute, else its signature (test doubles without either get none)."""
    flag = getattr(matcher, "accepts_depth", None)
    if flag is not None:
        return bool(flag)
    try:
        return "depth_m" in inspect.signature(matcher.match).parameters
    except (TypeError, ValueError):
        return False


def solution_from_camera_centred(sol: procrustes.ProcrustesResult, T_base_camera: np.ndarray) -> procrustes.ProcrustesResult:
    """A Sim(2) solution on camera-centred relative-depth points -> the result with
    ``T_patch_base`` of base_link (``camera.T_patch_base_from_camera_centred``) and its
    covariance propagated through ``(x, y, yaw) -> (x - R(yaw) c, yaw)``. The returned result's
    ``scale`` is still the depth scale, so its ``transform`` no longer maps ``src`` to ``dst``."""
    from ..core.camera import T_patch_base_from_camera_centred, camera_xy_base_m

    c = camera_xy_base_m(T_base_camera)
    T_patch_base, _ = T_patch_base_from_camera_centred(sol.transform, c)
    cy, sy = math.cos(sol.T_patch_base.yaw_rad), math.sin(sol.T_patch_base.yaw_rad)
    J = np.eye(3)
    J[0, 2] = sy * c[0] + cy * c[1]
    J[1, 2] = -(cy * c[0] - sy * c[1])
    cov = J @ np.asarray(sol.cov_xyyaw, float) @ J.T
    return dataclasses.replace(sol, T_patch_base=T_patch_base, cov_xyyaw=0.5 * (cov + cov.T))


def yaw_tries(matcher: Any, prior_yaw_rad: Optional[float], cfg: LocalizerConfig) -> list[Optional[float]]:
    """The prior yaws the matcher is run with for one frame: the prior; without one ``[None]`` for a
    matcher that searches every yaw itself (``needs_yaw_prior = False``, sparse-depth: one run), else
    ``cfg.unknown_yaw_hypotheses`` evenly around the circle."""
    if prior_yaw_rad is not None:
        return [prior_yaw_rad]
    if not getattr(matcher, "needs_yaw_prior", True):
        return [None]
    n_hyp = cfg.unknown_yaw_hypotheses
    return [wrap_angle_rad(2.0 * math.pi * k / n_hyp) for k in range(n_hyp)]


def match_and_solve(matcher: Any, image_rgb: np.ndarray, camera: Any, T_base_camera: np.ndarray, sat_rgb: np.ndarray,
                    georef: Any, prior_yaw_rad: Optional[float], depth_kw: dict, cfg: LocalizerConfig,
                    procrustes_config: procrustes.ProcrustesConfig,
                    timings: Optional[dict] = None) -> tuple[Correspondences, np.ndarray, Any, float, Optional[dict]]:
    """Matcher + Procrustes for one prior yaw (None: unknown, only for matchers with
    ``needs_yaw_prior = False``; ``depth_kw``: the keywords the matcher gets besides the common
    arguments - depth for a matcher that takes depth, ``sat_features`` of an area window - else
    empty): (correspondences, inlier mask over them, solver result, support = summed weight
    of the inliers, the matcher's vote evidence or None). Stage times accumulate in ``timings``.

    Raises:
        LocalizationRejected: "matcher_failed", or :func:`solve_confident`'s reasons.
    """
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    corr = None
    try:
        corr = matcher.match(image_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad, **depth_kw)
    except Exception as exc:  # noqa: BLE001 - bad input (XViewError) or a torch failure (OOM): no crash
        raise LocalizationRejected("matcher_failed", f"{type(exc).__name__}: {exc}") from exc
    finally:
        _add_matcher_timings(matcher, timings, time.perf_counter() - t0, stages=corr is not None)
    return _solve_matched(matcher, corr, T_base_camera, cfg, procrustes_config, timings)


def _add_matcher_timings(matcher: Any, timings: dict, total_s: float, stages: bool = True) -> None:
    """Accumulate a matcher call: ``matcher`` (its wall time) and, after a call that returned
    (``stages``), the matcher's own stages (``last_timings_s``: preprocess, sat_features,
    ground_encoder, matching) when it has them."""
    timings["matcher"] = timings.get("matcher", 0.0) + total_s
    stages = getattr(matcher, "last_timings_s", None) if stages else None
    if isinstance(stages, dict):
        for name, seconds in stages.items():
            timings[name] = timings.get(name, 0.0) + float(seconds)


def _solve_matched(matcher: Any, corr: Any, T_base_camera: np.ndarray, cfg: LocalizerConfig,
                   procrustes_config: procrustes.ProcrustesConfig,
                   timings: dict) -> tuple[Correspondences, np.ndarray, Any, float, Optional[dict]]:
    """The solver half of :func:`match_and_solve` for correspondences already matched."""
    if not isinstance(corr, Correspondences):
        raise LocalizationRejected("matcher_failed", f"matcher returned {type(corr).__name__}, not Correspondences")
    t0 = time.perf_counter()
    try:
        confident, sol = solve_confident(corr, cfg, procrustes_config, min_weight_for(matcher, cfg))
        if not corr.scale_known:
            sol = solution_from_camera_centred(sol, T_base_camera)
        inlier_mask = np.zeros(len(corr), dtype=bool)
        idx = np.flatnonzero(confident)[sol.inlier_mask]
        inlier_mask[idx] = True
        evidence = getattr(matcher, "last_evidence", None)
        return corr, inlier_mask, sol, float(corr.weight[idx].sum()), dict(evidence) if evidence else None
    finally:
        timings["solver"] = timings.get("solver", 0.0) + time.perf_counter() - t0


def match_and_solve_all(matcher: Any, image_rgb: np.ndarray, camera: Any, T_base_camera: np.ndarray,
                        sat_rgb: np.ndarray, georef: Any, yaws: list[Optional[float]], match_kw: dict,
                        cfg: LocalizerConfig, procrustes_config: procrustes.ProcrustesConfig,
                        timings: Optional[dict] = None) -> tuple[list[tuple], Optional[LocalizationRejected]]:
    """:func:`match_and_solve` for every prior yaw of :func:`yaw_tries`: ``(candidates, the first
    rejection or None)``. Several yaws and a matcher with ``match_hypotheses`` (dense-flow) run
    in ONE batched forward pass (encoders once, the rest batched over the hypotheses) with the
    same results as one call per yaw; otherwise one call per yaw."""
    timings = {} if timings is None else timings
    cands: list[tuple] = []
    first: Optional[LocalizationRejected] = None
    batched = getattr(matcher, "match_hypotheses", None)
    if len(yaws) > 1 and callable(batched) and all(y is not None for y in yaws):
        t0 = time.perf_counter()
        corrs = None
        try:
            corrs = batched(image_rgb, camera, T_base_camera, sat_rgb, georef, yaws, **match_kw)
        except Exception as exc:  # noqa: BLE001 - as in match_and_solve
            return [], LocalizationRejected("matcher_failed", f"{type(exc).__name__}: {exc}")
        finally:
            _add_matcher_timings(matcher, timings, time.perf_counter() - t0, stages=corrs is not None)
        for corr in corrs:
            try:
                cands.append(_solve_matched(matcher, corr, T_base_camera, cfg, procrustes_config, timings))
            except LocalizationRejected as rej:
                first = first or rej
        return cands, first
    for yaw in yaws:
        try:
            cands.append(match_and_solve(matcher, image_rgb, camera, T_base_camera, sat_rgb, georef, yaw, match_kw,
                                         cfg, procrustes_config, timings))
        except LocalizationRejected as rej:
            first = first or rej
    return cands, first


def _make_area_provider(cfg: LocalizerConfig, matcher: Any, tile_cache: Any) -> tuple[Any, str]:
    """The area feature provider ``cfg.area_features`` asks for, or (None, why not)."""
    from ..matcher.area import AreaFeatureProvider, area_supported

    if not cfg.area_features:
        return None, "off (area_features: false)"
    if matcher is None or not area_supported(matcher):
        return None, "off (the matcher cannot encode areas)"
    try:
        provider = AreaFeatureProvider(tile_cache, matcher, cfg.patch_size_px, cfg.patch_m_per_px, cfg.area_factor)
    except XViewError as exc:
        return None, f"off ({exc})"
    return provider, ""


def check_yaw_ambiguity(best: tuple, cands: list[tuple], cfg: LocalizerConfig) -> None:
    """Without a prior yaw, a runner-up solution that disagrees with the best one (yaw or
    position) but has nearly its support makes the frame ambiguous: no pose beats a pose that may
    be turned around. ``best`` and ``cands``: :func:`match_and_solve` results.

    Raises:
        LocalizationRejected: "yaw_ambiguous".
    """
    T_best = best[2].T_patch_base
    for c in cands:
        if c is best:
            continue
        T = c[2].T_patch_base
        dyaw = abs(wrap_angle_rad(T.yaw_rad - T_best.yaw_rad))
        dpos = math.hypot(T.x_m - T_best.x_m, T.y_m - T_best.y_m)
        disagrees = dyaw > cfg.max_prior_yaw_deviation_rad or dpos > cfg.max_jump_m
        if disagrees and best[3] < cfg.unknown_yaw_min_support_ratio * c[3]:
            raise LocalizationRejected(
                "yaw_ambiguous",
                f"no prior yaw and two solutions {math.degrees(dyaw):.0f} deg / {dpos:.1f} m apart have "
                f"support {best[3]:.1f} vs {c[3]:.1f} (need a ratio of "
                f"{cfg.unknown_yaw_min_support_ratio:g})")


def matcher_covariance_scale(matcher: Any, depth_kind: str = "none") -> float:
    """The matcher's calibrated covariance factor (``covariance_scale`` of its checkpoint, see
    :mod:`xview_localizer.evaluation.calibration`; a matcher with ``covariance_scale_for`` (sparse-depth)
    gives the one calibrated for the frame's depth kind, "none" = flat ground); 1.0 for matchers
    without a valid one."""
    scale_for = getattr(matcher, "covariance_scale_for", None)
    scale = scale_for(depth_kind) if callable(scale_for) else getattr(matcher, "covariance_scale", 1.0)
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        return 1.0
    return scale if math.isfinite(scale) and scale > 0.0 else 1.0


# ----------------------------------------------------------------------------------------------
# Time-indexed buffers
# ----------------------------------------------------------------------------------------------
class _TimeBuffer:
    """Samples sorted by ``stamp_ns``. Nothing is pruned against the newest stamp it holds (one
    sample stamped a day ahead must not evict good history): the owner prunes it against a
    reference clock with :meth:`prune_before`; ``max_items`` only bounds the memory."""

    def __init__(self, history_ns: int, max_items: int = 100_000) -> None:
        self.history_ns = history_ns
        self.max_items = max_items
        self.stamps: list[int] = []
        self.items: list[Any] = []

    def add(self, stamp_ns: int, item: Any) -> str:
        """Insert in time order: ``'in_order'`` (newest so far), ``'out_of_order'`` (older than
        the newest, inserted where it belongs) or ``'duplicate'`` (a sample with this stamp is
        already held: the new one is dropped)."""
        i = bisect.bisect_right(self.stamps, stamp_ns)
        if i > 0 and self.stamps[i - 1] == stamp_ns:
            return "duplicate"
        status = "in_order" if i == len(self.stamps) else "out_of_order"
        self.stamps.insert(i, stamp_ns)
        self.items.insert(i, item)
        if len(self.stamps) > self.max_items:
            del self.stamps[0]
            del self.items[0]
        return status

    def prune_before(self, cut_ns: int, keep_min: int = 2) -> None:
        """Drop samples stamped before ``cut_ns``, always keeping the newest ``keep_min``."""
        cut = min(bisect.bisect_left(self.stamps, cut_ns), max(len(self.stamps) - keep_min, 0))
        if cut > 0:
            del self.stamps[:cut]
            del self.items[:cut]

    def around(self, stamp_ns: int) -> tuple[Optional[int], Optional[int]]:
        """Indices of the last sample at/before and the first sample after ``stamp_ns``."""
        i = bisect.bisect_right(self.stamps, stamp_ns)
        before = i - 1 if i > 0 else None
        after = i if i < len(self.stamps) else None
        return before, after

    def __len__(self) -> int:
        return len(self.stamps)


def _interp_se2(a: SE2, b: SE2, f: float) -> SE2:
    return SE2(a.x_m + f * (b.x_m - a.x_m), a.y_m + f * (b.y_m - a.y_m),
               a.yaw_rad + f * wrap_angle_rad(b.yaw_rad - a.yaw_rad))


# ----------------------------------------------------------------------------------------------
# The localizer
# ----------------------------------------------------------------------------------------------
class Localizer:
    """Per-frame cross-view localization (see the module docstring).

    Args:
        config: :class:`LocalizerConfig`.
        matcher: an object with ``match(...) -> Correspondences`` (see step 3), or None when
            no matcher could be loaded (then every step is rejected ``matcher_failed``).
        tile_cache: an object with ``patch(lat_deg, lon_deg, size_px, m_per_px) -> (rgb, georef)``.
        procrustes_config: solver settings (default :class:`procrustes.ProcrustesConfig`).
    """

    def __init__(self, config: LocalizerConfig, matcher: Optional[MatcherLike], tile_cache: TileCacheLike,
                 procrustes_config: Optional[procrustes.ProcrustesConfig] = None) -> None:
        self.config = config
        self.matcher = matcher
        self.tile_cache = tile_cache
        self.procrustes_config = procrustes_config or procrustes.ProcrustesConfig()
        history_ns = int(config.history_s * NS_PER_S)
        self._lock = threading.Lock()
        self._fixes = _TimeBuffer(history_ns)
        self._odom = _TimeBuffer(history_ns)
        self._projection: Optional[MapProjection] = None
        if config.has_datum:
            self._projection = MapProjection(config.map_projection, config.datum_lat_deg, config.datum_lon_deg)
        self._last: Optional[Estimate] = None
        #: stamp of the newest frame localized: the reference clock when the caller gives none
        self._frame_stamp_ns: Optional[int] = None
        #: recent estimates rejected 'odometry_contradiction', (T_map_base, stamp_ns, T_odom_base)
        self._contradicting: list[tuple[SE2, int, Optional[SE2]]] = []
        self._area: Any = None
        self._area_decided = False
        #: why area features are off ('' when on), for logs and diagnostics
        self.area_status = ""

    @property
    def area_provider(self) -> Any:
        """The :class:`~xview_localizer.matcher.area.AreaFeatureProvider` in use, None when
        area features are off (``area_features``, matcher, patch size; see :attr:`area_status`).
        Decided at the first frame."""
        if not self._area_decided:
            self._area_decided = True
            self._area, self.area_status = _make_area_provider(self.config, self.matcher, self.tile_cache)
        return self._area

    def close(self) -> None:
        """Let a background area build finish (before the matcher or tile cache go away)."""
        if self._area is not None:
            self._area.close()

    # -- inputs ----------------------------------------------------------------------------------
    @property
    def projection(self) -> Optional[MapProjection]:
        """The map projection, or None until the datum is known (first fix)."""
        return self._projection

    @property
    def last_estimate(self) -> Optional[Estimate]:
        return self._last

    def add_fix(self, fix: FixSample, now_ns: Optional[int] = None) -> str:
        """Store a valid fix; the first one sets the datum when none is configured.

        ``now_ns`` is the reference clock (the node's clock live, the bag's time in replay; None:
        the stamp of the newest frame localized, if any). A fix stamped more than
        ``max_stamp_lead_s`` ahead of it or more than ``history_s`` behind it is rejected on its
        own and evicts nothing; the buffers are pruned against the reference clock and the
        frames localized, never against the newest stamp they hold.

        Returns ``'in_order'`` or ``'out_of_order'`` (older than the newest fix held: inserted in
        time order).

        Raises:
            LocalizationRejected: ``fix_stamp_future``, ``fix_stamp_past`` or ``fix_stamp_duplicate``.
        """
        if not isinstance(fix, FixSample):
            raise GeometryError(f"add_fix expects a FixSample, got {type(fix).__name__}")
        with self._lock:
            self._check_stamp_locked("fix", fix.stamp_ns, now_ns)
            if self._projection is None:
                self._projection = MapProjection(self.config.map_projection, fix.lat_deg, fix.lon_deg)
            x_m, y_m = self._projection.forward(fix.lat_deg, fix.lon_deg)
            return self._add_locked("fix", self._fixes, fix.stamp_ns, (fix, x_m, y_m), now_ns)

    def add_odom(self, odom: OdomSample, now_ns: Optional[int] = None) -> str:
        """Store an odometry sample; ``now_ns``, the return value and the rejections as in
        :meth:`add_fix` (reasons ``odom_stamp_future``, ``odom_stamp_past``, ``odom_stamp_duplicate``)."""
        if not isinstance(odom, OdomSample):
            raise GeometryError(f"add_odom expects an OdomSample, got {type(odom).__name__}")
        with self._lock:
            self._check_stamp_locked("odom", odom.stamp_ns, now_ns)
            return self._add_locked("odom", self._odom, odom.stamp_ns, odom.T_odom_base, now_ns)

    def _reference_ns_locked(self, now_ns: Optional[int]) -> Optional[int]:
        return int(now_ns) if now_ns is not None else self._frame_stamp_ns

    def _check_stamp_locked(self, kind: str, stamp_ns: int, now_ns: Optional[int]) -> None:
        ref_ns = self._reference_ns_locked(now_ns)
        if ref_ns is None:
            return
        lead_s = (stamp_ns - ref_ns) / NS_PER_S
        clock = "the clock" if now_ns is not None else "the newest frame localized"
        if lead_s > self.config.max_stamp_lead_s:
            raise LocalizationRejected(f"{kind}_stamp_future",
                                       f"{kind} stamped {lead_s:.2f} s ahead of {clock} (max_stamp_lead_s = "
                                       f"{self.config.max_stamp_lead_s:g}): rejected, history kept")
        if -lead_s > self.config.history_s:
            raise LocalizationRejected(f"{kind}_stamp_past",
                                       f"{kind} stamped {-lead_s:.2f} s behind {clock} (history_s = "
                                       f"{self.config.history_s:g}): too old to be used")

    def _add_locked(self, kind: str, buf: _TimeBuffer, stamp_ns: int, item: Any, now_ns: Optional[int]) -> str:
        status = buf.add(stamp_ns, item)
        if status == "duplicate":
            raise LocalizationRejected(f"{kind}_stamp_duplicate",
                                       f"a {kind} stamped {stamp_ns} ns is already held: the repeat is dropped")
        if now_ns is not None:
            buf.prune_before(int(now_ns) - buf.history_ns)
        return status

    def reset(self) -> None:
        """Forget fixes, odometry and estimates (the datum stays): for a clock that jumped back
        (a bag played again), where every sample held would lie in the future."""
        with self._lock:
            self._fixes = _TimeBuffer(self._fixes.history_ns, self._fixes.max_items)
            self._odom = _TimeBuffer(self._odom.history_ns, self._odom.max_items)
            self._last = None
            self._contradicting = []
            self._frame_stamp_ns = None

    def _prune_locked(self, stamp_ns: int) -> None:
        """Prune both buffers against a frame being localized (``history_s`` behind it)."""
        self._frame_stamp_ns = int(stamp_ns)
        for buf in (self._fixes, self._odom):
            buf.prune_before(int(stamp_ns) - buf.history_ns)

    def latest_odom_stamp_ns(self) -> Optional[int]:
        """Stamp of the newest odometry sample, or None."""
        with self._lock:
            return self._odom.stamps[-1] if len(self._odom) else None

    def odom_at(self, stamp_ns: int) -> Optional[SE2]:
        """``T_odom_base`` at a stamp: interpolated, or extrapolated at constant velocity from
        the nearest samples up to ``odom_max_gap_s`` away; None otherwise."""
        with self._lock:
            return self._odom_at_locked(stamp_ns)

    def _odom_at_locked(self, stamp_ns: int) -> Optional[SE2]:
        if not len(self._odom):
            return None
        i0, i1 = self._odom.around(stamp_ns)
        st, it = self._odom.stamps, self._odom.items
        if i0 is not None and st[i0] == stamp_ns:
            return it[i0]
        if i0 is not None and i1 is not None:
            return _interp_se2(it[i0], it[i1], (stamp_ns - st[i0]) / (st[i1] - st[i0]))
        gap_ns = self.config.odom_max_gap_s * NS_PER_S
        j = i0 if i0 is not None else i1
        if abs(stamp_ns - st[j]) > gap_ns:
            return None
        # Constant-velocity extrapolation from the two samples nearest the end.
        k = j - 1 if i0 is not None else j + 1
        if 0 <= k < len(st) and st[k] != st[j]:
            return _interp_se2(it[k], it[j], (stamp_ns - st[k]) / (st[j] - st[k]))
        return it[j]

    # -- prior -------------------------------------------------------------------------------------
    def _fix_cov_map(self, fix: FixSample, gamma_rad: float) -> np.ndarray:
        if fix.cov_en_m2 is None:
            return np.eye(2) * self.config.fix_default_std_m**2
        c, s = math.cos(gamma_rad), math.sin(gamma_rad)
        r = np.array([[c, -s], [s, c]])
        return r @ fix.cov_en_m2 @ r.T

    def _predicted_locked(self, stamp_ns: int) -> Optional[tuple[SE2, float, float, bool]]:
        """The previous estimate propagated to ``stamp_ns``: (T_map_base, allowed position error
        m, allowed yaw error rad, used_odometry), or None when there is no recent one."""
        last = self._last
        cfg = self.config
        if last is None:
            return None
        dt_s = abs(stamp_ns - last.stamp_ns) / NS_PER_S
        if dt_s > cfg.jump_gate_max_age_s:
            return None
        return self._propagated(last.T_map_base, last.stamp_ns, last.T_odom_base, stamp_ns,
                                self._odom_at_locked(stamp_ns))

    def _propagated(self, T_map_base: SE2, stamp_ns: int, T_odom_base: Optional[SE2], to_stamp_ns: int,
                    odom_now: Optional[SE2]) -> tuple[SE2, float, float, bool]:
        """An estimate moved from ``stamp_ns`` to ``to_stamp_ns``: with odometry at both stamps
        ``(T moved by it, max_jump_m, max_yaw_jump_rad, True)``, else ``(T, max_jump_m +
        max_speed_mps * dt, max_yaw_jump_rad + max_yaw_rate_radps * dt, False)``."""
        cfg = self.config
        if T_odom_base is not None and odom_now is not None:
            return T_map_base @ (T_odom_base.inverse() @ odom_now), cfg.max_jump_m, cfg.max_yaw_jump_rad, True
        dt_s = abs(to_stamp_ns - stamp_ns) / NS_PER_S
        return (T_map_base, cfg.max_jump_m + cfg.max_speed_mps * dt_s,
                cfg.max_yaw_jump_rad + cfg.max_yaw_rate_radps * dt_s, False)

    def _prior_locked(self, stamp_ns: int) -> Prior:
        cfg = self.config
        proj = self._projection
        if not len(self._fixes) or proj is None:
            raise LocalizationRejected("no_fix", "no valid GNSS fix received yet")
        st, it = self._fixes.stamps, self._fixes.items
        i0, i1 = self._fixes.around(stamp_ns)
        max_age_ns = cfg.fix_max_age_s * NS_PER_S
        if i0 is not None and i1 is not None:
            (f0, x0, y0), (f1, x1, y1) = it[i0], it[i1]
            if st[i1] - st[i0] > 2 * max_age_ns:
                # A hole in the fixes: use the nearer one if it is recent enough.
                j = i0 if stamp_ns - st[i0] <= st[i1] - stamp_ns else i1
                fix, x_m, y_m = it[j]
                age_s = abs(stamp_ns - st[j]) / NS_PER_S
                source = "nearest"
            else:
                f = (stamp_ns - st[i0]) / (st[i1] - st[i0])
                x_m, y_m = x0 + f * (x1 - x0), y0 + f * (y1 - y0)
                fix = f0 if f < 0.5 else f1
                age_s = min(stamp_ns - st[i0], st[i1] - stamp_ns) / NS_PER_S
                source = "interpolated"
        elif i0 is not None:
            fix, x_m, y_m = it[i0]
            age_s = (stamp_ns - st[i0]) / NS_PER_S
            source = "nearest"
            if age_s > 0:
                moved = self._propagate_locked(i0, stamp_ns)
                if moved is not None:
                    x_m, y_m, source = x_m + moved[0], y_m + moved[1], moved[2]
        else:
            fix, x_m, y_m = it[i1]
            age_s = (st[i1] - stamp_ns) / NS_PER_S
            source = "nearest"
        if age_s > cfg.fix_max_age_s:
            raise LocalizationRejected("stale_fix", f"nearest fix is {age_s:.2f} s from the image stamp "
                                       f"(fix_max_age_s = {cfg.fix_max_age_s})")
        lat, lon = proj.inverse(x_m, y_m)
        gamma = proj.convergence_rad(lat, lon)
        cov = self._fix_cov_map(fix, gamma)
        yaw_map_rad = self._prior_yaw_locked(stamp_ns)
        return Prior(stamp_ns, x_m, y_m, lat, lon, cov, yaw_map_rad, age_s, source)

    def _propagate_locked(self, i_fix: int, stamp_ns: int) -> Optional[tuple[float, float, str]]:
        """Motion (dx_m, dy_m in the map) from fix ``i_fix``'s stamp to ``stamp_ns``."""
        st, it = self._fixes.stamps, self._fixes.items
        t_fix = st[i_fix]
        last = self._last
        o_fix, o_now = self._odom_at_locked(t_fix), self._odom_at_locked(stamp_ns)
        if o_fix is not None and o_now is not None and last is not None and last.T_odom_base is not None:
            T_map_odom = last.T_map_base @ last.T_odom_base.inverse()
            d = T_map_odom.rotation_matrix() @ (o_now.translation_m - o_fix.translation_m)
            return float(d[0]), float(d[1]), "odometry"
        if i_fix >= 1:
            dt_ns = st[i_fix] - st[i_fix - 1]
            if 0 < dt_ns <= self.config.fix_max_age_s * NS_PER_S:
                (_, xa, ya), (_, xb, yb) = it[i_fix - 1], it[i_fix]
                f = (stamp_ns - t_fix) / dt_ns
                return f * (xb - xa), f * (yb - ya), "velocity"
        return None

    def _prior_yaw_locked(self, stamp_ns: int) -> Optional[float]:
        if self.config.heading_prior == "none":
            return None
        pred = self._predicted_locked(stamp_ns)
        if pred is not None:
            return pred[0].yaw_rad
        st, it = self._fixes.stamps, self._fixes.items
        i0, i1 = self._fixes.around(stamp_ns)
        b = i1 if i1 is not None and i0 is not None else (i0 if i0 is not None else i1)
        if b is None:
            return None
        _, xb, yb = it[b]
        window_ns = self.config.course_max_window_s * NS_PER_S
        for a in range(b - 1, -1, -1):
            if st[b] - st[a] > window_ns:
                break
            _, xa, ya = it[a]
            if math.hypot(xb - xa, yb - ya) >= self.config.course_min_baseline_m:
                return math.atan2(yb - ya, xb - xa)
        return None

    # -- the step ----------------------------------------------------------------------------------
    def step(self, frame: Frame) -> StepResult:
        """Localize one frame; see the module docstring. Never raises for bad sensor data or
        a failing tile source/matcher: those become a rejected :class:`StepResult`."""
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        result = StepResult(estimate=None, timings_s=timings)
        try:
            self._step(frame, result, timings)
        except LocalizationRejected as rej:
            result.estimate = None
            result.reason, result.detail = rej.reason, rej.detail
        timings["total"] = time.perf_counter() - t_start
        return result

    def _step(self, frame: Frame, result: StepResult, timings: dict) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        with self._lock:
            self._prune_locked(frame.stamp_ns)
            prior = self._prior_locked(frame.stamp_ns)
            pred = self._predicted_locked(frame.stamp_ns)
            odom_now = self._odom_at_locked(frame.stamp_ns)
            proj = self._projection
        result.prior = prior
        if pred is not None:
            sigma_m = math.sqrt(float(np.linalg.eigvalsh(prior.cov_xy_m2).max()))
            jump_m = math.hypot(prior.x_m - pred[0].x_m, prior.y_m - pred[0].y_m)
            if jump_m > pred[1] + 3.0 * sigma_m:
                raise LocalizationRejected("fix_jump", f"GNSS prior is {jump_m:.1f} m from the previous estimate "
                                          f"propagated to the image stamp (allowed {pred[1] + 3 * sigma_m:.1f} m)")
        timings["prior"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        sat_features = None
        area = self.area_provider if self.matcher is not None else None
        win = None
        if area is not None:  # the window of an encoded area (matcher/area.py)
            try:
                win = area.window(prior.lat_deg, prior.lon_deg)
                sat_rgb, georef, sat_features = win.sat_rgb, win.georef, win.features
            except TileError:  # an area reaches twice as far as a patch: try the frame's own patch
                area.skip()
        if win is None:
            try:
                sat_rgb, georef = self.tile_cache.patch(prior.lat_deg, prior.lon_deg, cfg.patch_size_px,
                                                        cfg.patch_m_per_px)
            except TileError as exc:
                raise LocalizationRejected("tiles_unavailable", str(exc)) from exc
        timings["tiles"] = time.perf_counter() - t0
        result.sat_rgb, result.georef = sat_rgb, georef

        if self.matcher is None:
            raise LocalizationRejected("matcher_failed", "matcher unavailable")
        gamma_prior = proj.convergence_rad(georef.center_lat_deg, georef.center_lon_deg)
        prior_yaw_true = None if prior.yaw_map_rad is None else wrap_angle_rad(prior.yaw_map_rad - gamma_prior)
        yaws = yaw_tries(self.matcher, prior_yaw_true, cfg)
        # what the matcher gets besides the image (one decision per frame, for every hypothesis)
        match_kw = {"depth_m": frame.depth_m, "depth_kind": cfg.depth_kind} if _accepts_depth(self.matcher) else {}
        if sat_features is not None:
            match_kw["sat_features"] = sat_features
        cands, first_reject = match_and_solve_all(self.matcher, frame.image_rgb, frame.camera, frame.T_base_camera,
                                                  sat_rgb, georef, yaws, match_kw, cfg, self.procrustes_config,
                                                  timings)
        if not cands:
            raise first_reject
        # gating: the evidence, GNSS, prior-yaw and odometry checks and the map-frame conversion
        t_gate = time.perf_counter()
        try:
            best = max(cands, key=lambda c: c[3])
            check_yaw_ambiguity(best, cands, cfg)
            corr, inlier_mask, sol, _score, evidence = best
            result.evidence = evidence
            mass_min = self.min_vote_mass(yaw_known=prior_yaw_true is not None)
            if evidence is not None and mass_min > 0 and evidence.get("vote_mass", math.inf) < mass_min:
                raise LocalizationRejected("low_evidence", f"pose vote mass near the best pose {evidence['vote_mass']:.3f} "
                                                           f"< {mass_min:.3f}: the vote is flat, other places or headings "
                                                           "fit almost as well (out of distribution or ambiguous scene)")
            result.correspondences, result.inlier_mask = corr, inlier_mask
            n_confident = int(np.count_nonzero(corr.weight >= min_weight_for(self.matcher, cfg)))
            T_patch_base = sol.T_patch_base
            depth_used = cfg.depth_kind if match_kw.get("depth_m") is not None else "none"
            T_map_base, cov_map, lat, lon = self._to_map(proj, georef, T_patch_base, sol.cov_xyyaw, depth_used)

            d = np.array([T_map_base.x_m - prior.x_m, T_map_base.y_m - prior.y_m])
            s = cov_map[:2, :2] + prior.cov_xy_m2
            maha = float(math.sqrt(max(float(d @ np.linalg.solve(s, d)), 0.0)))
            if maha > cfg.max_gnss_mahalanobis:
                raise LocalizationRejected("gnss_inconsistent", f"estimate is {np.hypot(*d):.1f} m from the GNSS prior, "
                                                   f"Mahalanobis {maha:.2f} > {cfg.max_gnss_mahalanobis}")
            if prior.yaw_map_rad is not None:
                dyaw_prior = abs(wrap_angle_rad(T_map_base.yaw_rad - prior.yaw_map_rad))
                if dyaw_prior > cfg.max_prior_yaw_deviation_rad:
                    raise LocalizationRejected("yaw_inconsistent",
                                               f"estimate yaw is {math.degrees(dyaw_prior):.1f} deg from the prior yaw "
                                               f"(allowed {math.degrees(cfg.max_prior_yaw_deviation_rad):.1f} deg)")
            if pred is not None:
                T_pred = pred[0]
                dpos = math.hypot(T_map_base.x_m - T_pred.x_m, T_map_base.y_m - T_pred.y_m)
                dyaw = abs(wrap_angle_rad(T_map_base.yaw_rad - T_pred.yaw_rad))
                if (dpos > pred[1] or dyaw > pred[2]) and not self._reanchor(T_map_base, frame.stamp_ns, odom_now):
                    via = "odometry" if pred[3] else "motion limits"
                    raise LocalizationRejected("odometry_contradiction",
                                  f"estimate differs from the previous one propagated by {via} by {dpos:.2f} m, "
                                  f"{math.degrees(dyaw):.1f} deg (allowed {pred[1]:.2f} m, "
                                  f"{math.degrees(pred[2]):.1f} deg)")
            est = Estimate(
                stamp_ns=frame.stamp_ns, T_map_base=T_map_base, cov_xyyaw=cov_map, T_patch_base=T_patch_base,
                cov_xyyaw_patch=sol.cov_xyyaw, T_odom_base=odom_now, lat_deg=lat, lon_deg=lon,
                n_confident=n_confident, n_inliers=sol.n_inliers, gnss_mahalanobis=maha, prior=prior)
            with self._lock:
                if self._last is None or est.stamp_ns >= self._last.stamp_ns:
                    self._last = est
                self._contradicting = []
            result.estimate = est
        finally:
            timings["gating"] = time.perf_counter() - t_gate

    def _reanchor(self, T_map_base: SE2, stamp_ns: int, odom_now: Optional[SE2]) -> bool:
        """An estimate contradicts the previous accepted one: True (accept it) when it is the
        ``reanchor_after``-th in a row that agrees with the contradicting ones before it (each
        propagated to now with odometry, else by the motion limits) -- then the previous estimate
        was the outlier; else remember it and return False."""
        cfg = self.config
        if cfg.reanchor_after <= 0:
            return False
        max_age_ns = cfg.jump_gate_max_age_s * NS_PER_S
        recent = [c for c in self._contradicting if 0 <= stamp_ns - c[1] <= max_age_ns]
        agree = True
        for T_c, stamp_c, odom_c in recent:
            T_prop, allow_m, allow_rad, _ = self._propagated(T_c, stamp_c, odom_c, stamp_ns, odom_now)
            if (math.hypot(T_prop.x_m - T_map_base.x_m, T_prop.y_m - T_map_base.y_m) > allow_m
                    or abs(wrap_angle_rad(T_prop.yaw_rad - T_map_base.yaw_rad)) > allow_rad):
                agree = False
                break
        if not agree:
            recent = []
        if len(recent) + 1 >= cfg.reanchor_after:
            self._contradicting = []
            return True
        self._contradicting = recent + [(T_map_base, stamp_ns, odom_now)]
        return False

    def min_vote_mass(self, yaw_known: bool = True) -> float:
        """The low-evidence threshold in use: ``config.min_vote_mass`` when >= 0, else the
        matcher's calibrated ``evidence_gate["min_vote_mass"]`` (with a prior yaw) or
        ``["min_vote_mass_unknown_yaw"]`` (without; the vote then spreads over 36 yaws), 0 = off
        when it has none."""
        if self.config.min_vote_mass >= 0.0:
            return float(self.config.min_vote_mass)
        return gate_threshold(getattr(self.matcher, "evidence_gate", None), yaw_known)

    def _to_map(self, proj: MapProjection, georef: Any, T_patch_base: SE2,
                cov_patch: np.ndarray, depth_kind: str = "none") -> tuple[SE2, np.ndarray, float, float]:
        """Patch frame (true-north ENU about the patch centre) -> map frame, with covariance."""
        enu = georef.enu()  # the ENU plane the patch frame lives in (tiles.patch.PatchGeoref)
        lat, lon = enu.inverse(T_patch_base.x_m, T_patch_base.y_m)
        lat, lon = float(lat), float(lon)
        x_m, y_m = proj.forward(lat, lon)
        yaw_map = T_patch_base.yaw_rad + proj.convergence_rad(lat, lon)
        J = np.eye(3)
        J[:2, :2] = _jacobian_map_from_enu(proj, enu, T_patch_base.x_m, T_patch_base.y_m)
        scale = self.config.cov_inflation * matcher_covariance_scale(self.matcher, depth_kind)
        cov = scale * (J @ np.asarray(cov_patch, float) @ J.T)
        cov = _floor_covariance(cov, self.config.cov_floor_xy_m2, self.config.cov_floor_yaw_rad2)
        return SE2(x_m, y_m, yaw_map), cov, lat, lon


