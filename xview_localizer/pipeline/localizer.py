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
   into ``T_patch_base`` with :func:`lifting.T_patch_base_from_camera_centred` (covariance
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

Where the parts live: the plain data and reasons in :mod:`.samples`, the prior's sample history
in :mod:`.prior`, matching/solving and the match-level gates in :mod:`.solving`, the map frame in
:mod:`xview_localizer.core.mapframe`; this module holds the stateful :class:`Localizer` and
re-exports the rest (``from xview_localizer.pipeline.localizer import Frame`` keeps working).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Optional

import numpy as np

from ..core import procrustes
from ..core.errors import (
    GeometryError,
    LocalizationRejected,
    TileError,
    XViewError,
)
from ..core.mapframe import MapProjection, jacobian_map_from_enu
from ..core.se2 import SE2, wrap_angle_rad
from .config import LocalizerConfig
from .prior import TimeBuffer, interp_se2
from .samples import (
    INPUT_REASONS,
    NS_PER_S,
    REASONS,
    Estimate,
    FixSample,
    Frame,
    MatcherLike,
    OdomSample,
    Prior,
    StepResult,
    TileCacheLike,
)
from .solving import (
    accepts_depth,
    check_yaw_ambiguity,
    floor_covariance,
    gate_threshold,
    match_and_solve,
    match_and_solve_all,
    matcher_covariance_scale,
    min_weight_for,
    solution_from_camera_centred,
    solve_confident,
    yaw_tries,
)

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
    "NS_PER_S",
]

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



# ----------------------------------------------------------------------------------------------
# The localizer
# ----------------------------------------------------------------------------------------------
def position_prior_in_patch(proj: MapProjection, georef: Any, prior: Prior, sigma_scale: float) -> dict:
    """The GNSS prior as the sparse matcher's vote prior: ``{"prior_xy_m": mean, "prior_cov_xy_m2":
    cov}`` in the patch frame (true-north ENU about the patch centre, metres) of ``georef``, the
    map-frame covariance carried over by the map-from-ENU Jacobian, scaled by ``sigma_scale ** 2``
    and floored at :data:`MIN_VOTE_PRIOR_STD_M` per axis."""
    enu = georef.enu()
    x_m, y_m = enu.forward(prior.lat_deg, prior.lon_deg)
    J = jacobian_map_from_enu(proj, enu, float(x_m), float(y_m))
    Ji = np.linalg.inv(J)
    cov = (sigma_scale ** 2) * (Ji @ np.asarray(prior.cov_xy_m2, float) @ Ji.T)
    w, v = np.linalg.eigh(0.5 * (cov + cov.T))
    cov = (v * np.maximum(w, MIN_VOTE_PRIOR_STD_M ** 2)) @ v.T  # a fix claiming cm accuracy cannot pin the vote
    return {"prior_xy_m": (float(x_m), float(y_m)), "prior_cov_xy_m2": 0.5 * (cov + cov.T)}


#: Smallest standard deviation (m) of the vote's position prior (:func:`position_prior_in_patch`):
#: about a vote translation step, so that a (near-)singular fix covariance still leaves the vote a
#: choice between neighbouring cells.
MIN_VOTE_PRIOR_STD_M = 1.0


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
        self._fixes = TimeBuffer(history_ns)
        self._odom = TimeBuffer(history_ns)
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

    def _add_locked(self, kind: str, buf: TimeBuffer, stamp_ns: int, item: Any, now_ns: Optional[int]) -> str:
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
            self._fixes = TimeBuffer(self._fixes.history_ns, self._fixes.max_items)
            self._odom = TimeBuffer(self._odom.history_ns, self._odom.max_items)
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
            return interp_se2(it[i0], it[i1], (stamp_ns - st[i0]) / (st[i1] - st[i0]))
        gap_ns = self.config.odom_max_gap_s * NS_PER_S
        j = i0 if i0 is not None else i1
        if abs(stamp_ns - st[j]) > gap_ns:
            return None
        # Constant-velocity extrapolation from the two samples nearest the end.
        k = j - 1 if i0 is not None else j + 1
        if 0 <= k < len(st) and st[k] != st[j]:
            return interp_se2(it[k], it[j], (stamp_ns - st[k]) / (st[j] - st[k]))
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
        match_kw = {"depth_m": frame.depth_m, "depth_kind": cfg.depth_kind} if accepts_depth(self.matcher) else {}
        if cfg.vote_prior_sigma_scale > 0 and getattr(self.matcher, "accepts_position_prior", False):
            match_kw.update(position_prior_in_patch(proj, georef, prior, cfg.vote_prior_sigma_scale))
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
            T_map_base, cov_map, lat, lon = self._to_map(proj, georef, T_patch_base, sol.cov_xyyaw, depth_used, evidence)

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
                cov_patch: np.ndarray, depth_kind: str = "none",
                evidence: Optional[dict] = None) -> tuple[SE2, np.ndarray, float, float]:
        """Patch frame (true-north ENU about the patch centre) -> map frame, with covariance
        (scaled as calibrated for the depth kind and, given the pose-vote evidence, inflated for
        a low vote mass: solving.matcher_covariance_scale)."""
        enu = georef.enu()  # the ENU plane the patch frame lives in (tiles.patch.PatchGeoref)
        lat, lon = enu.inverse(T_patch_base.x_m, T_patch_base.y_m)
        lat, lon = float(lat), float(lon)
        x_m, y_m = proj.forward(lat, lon)
        yaw_map = T_patch_base.yaw_rad + proj.convergence_rad(lat, lon)
        J = np.eye(3)
        J[:2, :2] = jacobian_map_from_enu(proj, enu, T_patch_base.x_m, T_patch_base.y_m)
        scale = self.config.cov_inflation * matcher_covariance_scale(self.matcher, depth_kind, evidence)
        cov = scale * (J @ np.asarray(cov_patch, float) @ J.T)
        cov = floor_covariance(cov, self.config.cov_floor_xy_m2, self.config.cov_floor_yaw_rad2)
        return SE2(x_m, y_m, yaw_map), cov, lat, lon


