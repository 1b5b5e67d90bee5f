"""Synthetic drives through a :class:`~xview_localizer.sim.world.World`: a smooth vehicle
trajectory along the roads, GNSS fixes with a realistic error model and drifting wheel
odometry. Everything is seeded and deterministic; nothing here renders or touches ROS.

Frames and conventions (docs/conventions.md, docs/sim_drives.md)
----------------------------------------------------------------
* ``map`` = the world frame: the local ENU tangent plane about the world's datum (x east,
  y north, metres). Ground truth is ``T_map_base`` (SE(2): x_m, y_m, yaw_rad; yaw 0 = east,
  counter-clockwise positive). ``base_link`` is on the ground (z = 0), x forward, y left.
* ``odom`` coincides with ``base_link`` at the first sample: ``T_odom_base(0) = identity``, so
  ``T_map_odom = T_map_base(0)`` until odometry drift accumulates.
* Stamps are integer nanoseconds of simulated time, sample ``k`` at
  ``start_stamp_ns + k * 1e9 / rate_hz``.
* The GNSS antenna is at the ``base_link`` origin (no lever arm); its fixes report the true
  position plus the error of :class:`GnssConfig`, and a diagonal ENU covariance equal to the
  model's marginal error variance (outliers excluded; see :class:`GnssConfig`).

Trajectory model
----------------
A random route over the road graph (right-hand traffic, no U-turns at junctions, dead ends
only when nothing else is left) is turned into a path: lane centre lines (outermost lane on
the right) joined at junctions by circular arcs whose radius is the largest (up to
``turn_radius_max_m``) that keeps the whole arc on drivable ground (the world's ground-class
raster); the path is resampled and Gaussian-smoothed, so curvature is continuous. A speed
profile limits speed by the per-leg cruise speed, the lateral acceleration on curves, stops
and the acceleration/deceleration limits; the vehicle starts from rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..core.errors import ConfigError, DatasetError
from ..core.se2 import SE2

__all__ = [
    "DRIVABLE_CLASSES",
    "DriveConfig",
    "GnssConfig",
    "GnssFixes",
    "NavSatStatus",
    "OdomConfig",
    "Odometry",
    "Trajectory",
    "generate_trajectory",
    "gnss_errors",
    "simulate_gnss",
    "simulate_odometry",
    "RoadNetwork",
]

#: Ground classes (names of ``world.GROUND_CLASSES``) a vehicle may drive on.
DRIVABLE_CLASSES = ("road", "marking")

#: Default simulated start time: 1.7e9 s after the epoch (2023-11-14), in nanoseconds.
DEFAULT_START_STAMP_NS = 1_700_000_000 * 1_000_000_000

#: Half the vehicle's width: junction arcs keep this clearance from non-drivable ground.
_HALF_WIDTH_M = 1.0

# Sub-stream tags for np.random.default_rng([seed, TAG]) so equal seeds never correlate.
_TAG_ROUTE, _TAG_GNSS, _TAG_ODOM = 101, 202, 303


class NavSatStatus:
    """``sensor_msgs/NavSatStatus`` status values used here."""

    NO_FIX = -1
    FIX = 0


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
def _finite_in(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    if not (math.isfinite(float(value)) and lo <= float(value) <= hi):
        raise ConfigError(f"{name} must be a finite number in [{lo}, {hi}], got {value!r}")


def _range_pair(name: str, pair, lo: float, hi: float) -> tuple[float, float]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ConfigError(f"{name} must be a (min, max) pair, got {pair!r}")
    for v in pair:
        _finite_in(name, v, lo, hi)
    if float(pair[0]) > float(pair[1]):
        raise ConfigError(f"{name} must have min <= max, got {pair!r}")
    return (float(pair[0]), float(pair[1]))


def _seed(name: str, seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"{name} must be a non-negative int, got {seed!r}")
    return int(seed)


@dataclass(frozen=True)
class DriveConfig:
    """How the vehicle drives.

    seconds: drive duration (samples ``0 .. round(seconds * rate_hz) - 1``).
    rate_hz: trajectory (and camera) rate.
    speed_range_m_s: cruise speed of each road leg, drawn uniformly from this range.
    accel_max_m_s2 / decel_max_m_s2: longitudinal limits of the speed profile.
    lat_accel_max_m_s2: curves are taken at ``v <= sqrt(lat_accel_max / curvature)``.
    stop_probability: chance of a full stop before each junction; stops last
    ``stop_duration_range_s``.
    straight_probability: chance of going straight at a junction where that is possible.
    turn_radius_range_m: junction arcs use the largest radius in this range that stays on
    drivable ground.
    smoothing_sigma_m: Gaussian smoothing of the path (makes curvature continuous).
    start_stamp_ns: stamp of sample 0 (simulated time).
    seed: route, cruise speeds and stops.
    """

    seconds: float = 60.0
    rate_hz: float = 10.0
    speed_range_m_s: tuple[float, float] = (5.0, 15.0)
    accel_max_m_s2: float = 1.5
    decel_max_m_s2: float = 2.5
    lat_accel_max_m_s2: float = 3.5
    stop_probability: float = 0.25
    stop_duration_range_s: tuple[float, float] = (1.0, 4.0)
    straight_probability: float = 0.5
    turn_radius_range_m: tuple[float, float] = (4.0, 12.0)
    smoothing_sigma_m: float = 1.5
    start_stamp_ns: int = DEFAULT_START_STAMP_NS
    seed: int = 0

    def __post_init__(self) -> None:
        _finite_in("DriveConfig.seconds", self.seconds, 0.1, 36000.0)
        _finite_in("DriveConfig.rate_hz", self.rate_hz, 1.0, 100.0)
        object.__setattr__(
            self, "speed_range_m_s", _range_pair("DriveConfig.speed_range_m_s", self.speed_range_m_s, 1.0, 40.0)
        )
        _finite_in("DriveConfig.accel_max_m_s2", self.accel_max_m_s2, 0.1, 10.0)
        _finite_in("DriveConfig.decel_max_m_s2", self.decel_max_m_s2, 0.1, 10.0)
        _finite_in("DriveConfig.lat_accel_max_m_s2", self.lat_accel_max_m_s2, 0.5, 10.0)
        _finite_in("DriveConfig.stop_probability", self.stop_probability, 0.0, 1.0)
        object.__setattr__(
            self,
            "stop_duration_range_s",
            _range_pair("DriveConfig.stop_duration_range_s", self.stop_duration_range_s, 0.0, 600.0),
        )
        _finite_in("DriveConfig.straight_probability", self.straight_probability, 0.0, 1.0)
        object.__setattr__(
            self,
            "turn_radius_range_m",
            _range_pair("DriveConfig.turn_radius_range_m", self.turn_radius_range_m, 2.0, 100.0),
        )
        _finite_in("DriveConfig.smoothing_sigma_m", self.smoothing_sigma_m, 0.0, 10.0)
        if isinstance(self.start_stamp_ns, bool) or not isinstance(self.start_stamp_ns, (int, np.integer)) or not (
            0 <= self.start_stamp_ns < 2**62
        ):
            raise ConfigError(f"DriveConfig.start_stamp_ns must be an int in [0, 2^62), got {self.start_stamp_ns!r}")
        object.__setattr__(self, "seed", _seed("DriveConfig.seed", self.seed))

    @property
    def n_samples(self) -> int:
        return max(1, int(round(self.seconds * self.rate_hz)))

    @property
    def period_ns(self) -> int:
        return int(round(1e9 / self.rate_hz))


@dataclass(frozen=True)
class GnssConfig:
    """GNSS error model, per horizontal axis (east, north) unless stated otherwise.

    * bias: first-order Gauss-Markov process (a random walk pulled back to zero with time
      constant ``bias_tau_s``), stationary standard deviation ``bias_sigma_m``; started from
      its stationary distribution.
    * white noise: ``white_sigma_m`` per fix.
    * vertical: the same model scaled by ``vertical_factor``.
    * outliers: with ``outlier_probability`` a fix is displaced by a further
      ``outlier_range_m`` metres (uniform) in a uniformly random horizontal direction
      (multipath); the receiver does not know it, so the reported covariance does not grow.
    * NO_FIX gaps: while fixed, a gap starts at rate ``nofix_rate_per_min`` (Poisson) and
      lasts ``nofix_duration_range_s`` (uniform); during gaps ``status = NO_FIX``.
    * reported covariance: diagonal ENU, ``bias_sigma^2 + white_sigma^2`` horizontally (the
      true marginal variance of non-outlier errors, so 2-D NEES averages 2), times
      ``vertical_factor^2`` for up.
    """

    rate_hz: float = 5.0
    bias_sigma_m: float = 3.0
    bias_tau_s: float = 60.0
    white_sigma_m: float = 0.5
    vertical_factor: float = 1.5
    outlier_probability: float = 0.01
    outlier_range_m: tuple[float, float] = (8.0, 25.0)
    nofix_rate_per_min: float = 0.5
    nofix_duration_range_s: tuple[float, float] = (1.0, 5.0)
    seed: int = 0

    def __post_init__(self) -> None:
        _finite_in("GnssConfig.rate_hz", self.rate_hz, 0.1, 100.0)
        _finite_in("GnssConfig.bias_sigma_m", self.bias_sigma_m, 0.0, 100.0)
        _finite_in("GnssConfig.bias_tau_s", self.bias_tau_s, 0.1, 1e6)
        _finite_in("GnssConfig.white_sigma_m", self.white_sigma_m, 0.0, 100.0)
        if self.bias_sigma_m == 0.0 and self.white_sigma_m == 0.0:
            raise ConfigError("GnssConfig: bias_sigma_m and white_sigma_m cannot both be 0 (no honest covariance)")
        _finite_in("GnssConfig.vertical_factor", self.vertical_factor, 0.1, 10.0)
        _finite_in("GnssConfig.outlier_probability", self.outlier_probability, 0.0, 1.0)
        object.__setattr__(
            self, "outlier_range_m", _range_pair("GnssConfig.outlier_range_m", self.outlier_range_m, 0.0, 1000.0)
        )
        _finite_in("GnssConfig.nofix_rate_per_min", self.nofix_rate_per_min, 0.0, 60.0)
        object.__setattr__(
            self,
            "nofix_duration_range_s",
            _range_pair("GnssConfig.nofix_duration_range_s", self.nofix_duration_range_s, 0.0, 3600.0),
        )
        object.__setattr__(self, "seed", _seed("GnssConfig.seed", self.seed))

    @property
    def horizontal_sigma_m(self) -> float:
        """Reported (and true, outliers excluded) standard deviation per horizontal axis."""
        return math.hypot(self.bias_sigma_m, self.white_sigma_m)

    @property
    def expected_nofix_fraction(self) -> float:
        """Long-run fraction of time without a fix (alternating renewal process)."""
        mean_gap_s = 0.5 * sum(self.nofix_duration_range_s)
        lam = self.nofix_rate_per_min / 60.0
        return lam * mean_gap_s / (1.0 + lam * mean_gap_s)


@dataclass(frozen=True)
class OdomConfig:
    """Wheel odometry drift: ``odom -> base_link`` integrated from corrupted increments.

    Per drive a speed scale error ``~ N(0, speed_scale_error_sigma)`` and a yaw-rate bias
    ``~ N(0, yaw_rate_bias_sigma_rad_s)`` are drawn (or fixed by ``speed_scale_error`` /
    ``yaw_rate_bias_rad_s``); per step white noise ``speed_noise_sigma_m_s`` and
    ``yaw_rate_noise_sigma_rad_s`` is added. Increments are ``(1 + scale) * true + noise``
    in translation, ``true + (bias + noise) * dt`` in yaw.
    """

    speed_scale_error_sigma: float = 0.01
    yaw_rate_bias_sigma_rad_s: float = 0.002
    speed_noise_sigma_m_s: float = 0.05
    yaw_rate_noise_sigma_rad_s: float = 0.005
    speed_scale_error: Optional[float] = None
    yaw_rate_bias_rad_s: Optional[float] = None
    seed: int = 0

    def __post_init__(self) -> None:
        _finite_in("OdomConfig.speed_scale_error_sigma", self.speed_scale_error_sigma, 0.0, 0.5)
        _finite_in("OdomConfig.yaw_rate_bias_sigma_rad_s", self.yaw_rate_bias_sigma_rad_s, 0.0, 1.0)
        _finite_in("OdomConfig.speed_noise_sigma_m_s", self.speed_noise_sigma_m_s, 0.0, 10.0)
        _finite_in("OdomConfig.yaw_rate_noise_sigma_rad_s", self.yaw_rate_noise_sigma_rad_s, 0.0, 1.0)
        if self.speed_scale_error is not None:
            _finite_in("OdomConfig.speed_scale_error", self.speed_scale_error, -0.5, 0.5)
        if self.yaw_rate_bias_rad_s is not None:
            _finite_in("OdomConfig.yaw_rate_bias_rad_s", self.yaw_rate_bias_rad_s, -1.0, 1.0)
        object.__setattr__(self, "seed", _seed("OdomConfig.seed", self.seed))


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Trajectory:
    """Ground truth at ``N`` samples (all arrays have first dimension N).

    stamp_ns: int64 stamps. xy_m (N, 2), yaw_rad (N,): ``T_map_base``. speed_m_s,
    accel_m_s2 (longitudinal), yaw_rate_rad_s, curvature_1_m: motion. slow: bool, the
    planned speed is below ``speed_range_m_s[0]`` (start, stops, tight turns, U-turns).
    """

    stamp_ns: np.ndarray
    xy_m: np.ndarray
    yaw_rad: np.ndarray
    speed_m_s: np.ndarray
    accel_m_s2: np.ndarray
    yaw_rate_rad_s: np.ndarray
    curvature_1_m: np.ndarray
    slow: np.ndarray
    rate_hz: float
    distance_m: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return int(self.stamp_ns.shape[0])

    def T_map_base(self, index: int) -> SE2:
        return SE2(float(self.xy_m[index, 0]), float(self.xy_m[index, 1]), float(self.yaw_rad[index]))


@dataclass(frozen=True, eq=False)
class GnssFixes:
    """GNSS fixes, ``M`` of them (arrays have first dimension M).

    index: the trajectory sample of each fix (its stamp is that sample's stamp).
    status: :class:`NavSatStatus` values. lat_deg, lon_deg, alt_m: WGS84 (ellipsoidal
    height); NaN where ``status == NO_FIX`` (the ROS idiom: no position). error_enu_m (M, 3):
    the true error (reported minus truth; zeros at NO_FIX). is_outlier: the fix carries an
    outlier displacement. cov_enu_m2 (3,): the reported diagonal ENU variances.
    """

    stamp_ns: np.ndarray
    index: np.ndarray
    status: np.ndarray
    lat_deg: np.ndarray
    lon_deg: np.ndarray
    alt_m: np.ndarray
    error_enu_m: np.ndarray
    is_outlier: np.ndarray
    cov_enu_m2: np.ndarray

    def __len__(self) -> int:
        return int(self.stamp_ns.shape[0])


@dataclass(frozen=True, eq=False)
class Odometry:
    """Wheel odometry at every trajectory sample.

    xy_m (N, 2), yaw_rad (N,): ``T_odom_base``. speed_m_s, yaw_rate_rad_s: the measured
    twist in base_link. cov_xy_m2 (N,), cov_yaw_rad2 (N,): reported pose variances (growing
    with distance and time from the drift model). speed_scale_error, yaw_rate_bias_rad_s:
    the drift this drive actually has (ground truth for tests). twist_var: reported twist
    variances (speed m^2/s^2, yaw rate rad^2/s^2).
    """

    stamp_ns: np.ndarray
    xy_m: np.ndarray
    yaw_rad: np.ndarray
    speed_m_s: np.ndarray
    yaw_rate_rad_s: np.ndarray
    cov_xy_m2: np.ndarray
    cov_yaw_rad2: np.ndarray
    speed_scale_error: float
    yaw_rate_bias_rad_s: float
    twist_var: tuple[float, float]

    def __len__(self) -> int:
        return int(self.stamp_ns.shape[0])

    def T_odom_base(self, index: int) -> SE2:
        return SE2(float(self.xy_m[index, 0]), float(self.xy_m[index, 1]), float(self.yaw_rad[index]))


# --------------------------------------------------------------------------------------
# road network
# --------------------------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.hypot(v[0], v[1]))
    return v / n if n > 0 else np.array([1.0, 0.0])


def _right_of(heading_xy: np.ndarray) -> np.ndarray:
    """Unit vector to the right of a unit direction (ENU, z up)."""
    return np.array([heading_xy[1], -heading_xy[0]])


class _Polyline:
    """Arc-length parametrised polyline (N, 2)."""

    def __init__(self, pts_xy_m: np.ndarray) -> None:
        pts = np.asarray(pts_xy_m, float)
        keep = np.ones(len(pts), bool)
        keep[1:] = np.hypot(*np.diff(pts, axis=0).T) > 1e-9
        self.pts = pts[keep]
        if len(self.pts) < 2:
            raise DatasetError("road centre line has fewer than two distinct points")
        seg = np.diff(self.pts, axis=0)
        self.seg_len = np.hypot(seg[:, 0], seg[:, 1])
        self.s = np.concatenate([[0.0], np.cumsum(self.seg_len)])
        self.length_m = float(self.s[-1])
        self.seg_dir = seg / self.seg_len[:, None]

    def point(self, s_m) -> np.ndarray:
        s = np.clip(np.asarray(s_m, float), 0.0, self.length_m)
        return np.stack([np.interp(s, self.s, self.pts[:, 0]), np.interp(s, self.s, self.pts[:, 1])], axis=-1)

    def tangent(self, s_m: float) -> np.ndarray:
        """Unit tangent at ``s_m`` (averaged over +-1 m so vertices do not kink it)."""
        a = self.point(max(0.0, s_m - 1.0))
        b = self.point(min(self.length_m, s_m + 1.0))
        return _unit(b - a)

    def project(self, xy_m: np.ndarray) -> tuple[float, float]:
        """Arc length of the nearest point and the distance to it."""
        p = np.asarray(xy_m, float)
        rel = p - self.pts[:-1]
        t = np.clip(np.einsum("ij,ij->i", rel, self.seg_dir), 0.0, self.seg_len)
        near = self.pts[:-1] + self.seg_dir * t[:, None]
        d = np.hypot(*(near - p).T)
        i = int(np.argmin(d))
        return float(self.s[i] + t[i]), float(d[i])


@dataclass(frozen=True)
class _Node:
    """A stop on a road: a junction (``junction`` = intersection id) or a dead end (None)."""

    s_m: float
    junction: Optional[int]


class RoadNetwork:
    """The world's roads as a graph: per road its junctions sorted by arc length, and the
    ground-class raster to check that manoeuvres stay on drivable ground."""

    def __init__(self, world, snap_tolerance_m: float = 3.0) -> None:
        from .world import GROUND_CLASSES

        self.world = world
        self.roads = {r.id: r for r in world.roads}
        self.lines = {r.id: _Polyline(r.centerline_xy_m) for r in world.roads}
        if not self.roads:
            raise DatasetError("world has no roads to drive on")
        self.intersections = {i.id: i for i in world.intersections}
        nodes: dict[int, list[_Node]] = {rid: [] for rid in self.roads}
        for inter in world.intersections:
            for rid in inter.road_ids:
                if rid not in self.lines:
                    raise DatasetError(f"intersection {inter.id} names unknown road {rid}")
                s, dist = self.lines[rid].project(inter.xy_m)
                if dist > snap_tolerance_m + self.roads[rid].width_m / 2:
                    raise DatasetError(
                        f"intersection {inter.id} is {dist:.1f} m from road {rid}'s centre line"
                    )
                nodes[rid].append(_Node(s, inter.id))
        for rid, lst in nodes.items():
            lst.sort(key=lambda n: n.s_m)
            length = self.lines[rid].length_m
            if not lst or lst[0].s_m > snap_tolerance_m:
                lst.insert(0, _Node(0.0, None))
            if lst[-1].s_m < length - snap_tolerance_m:
                lst.append(_Node(length, None))
        self.nodes = nodes
        self.drivable_ids = np.array([GROUND_CLASSES[c] for c in DRIVABLE_CLASSES], np.uint8)

    # -- geometry ------------------------------------------------------------------------
    def lane_offset_m(self, road_id: int) -> float:
        """Lateral offset (to the right, metres) of the outermost right lane centre."""
        road = self.roads[road_id]
        lanes = max(1, int(road.lanes))
        if lanes == 1:
            return 0.0
        k = lanes // 2 - 1
        return (k + 0.5) * road.width_m / lanes

    def lane_points(self, road_id: int, direction: int, s_from: float, s_to: float, offset_m,
                    step_m: float = 0.5) -> np.ndarray:
        """Lane centre points (M, 2) from ``s_from`` to ``s_to`` (centre-line arc lengths),
        ``offset_m`` to the right of the travel ``direction`` (+1 along the polyline): a float,
        or a function of the centre-line arc lengths (M,) returning (M,) offsets."""
        line = self.lines[road_id]
        n = max(2, int(math.ceil(abs(s_to - s_from) / step_m)) + 1)
        s = np.linspace(s_from, s_to, n)
        c = line.point(s)
        # tangent by central differences of the centre line itself
        t = np.stack([line.point(s + 0.5) - line.point(s - 0.5)], axis=0)[0]
        t = t / np.maximum(np.hypot(t[:, 0], t[:, 1]), 1e-9)[:, None] * direction
        right = np.stack([t[:, 1], -t[:, 0]], axis=1)
        off = offset_m(s) if callable(offset_m) else np.full(len(s), float(offset_m))
        return c + np.asarray(off, float)[:, None] * right

    def is_drivable(self, xy_m: np.ndarray) -> np.ndarray:
        """(M,) bool: the points lie on drivable ground classes inside the world."""
        xy = np.atleast_2d(np.asarray(xy_m, float))
        geo = self.world.georef
        uv = np.round(geo.xy_to_px(xy)).astype(int)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < geo.width_px) & (uv[:, 1] >= 0) & (uv[:, 1] < geo.height_px)
        out = np.zeros(len(xy), bool)
        cls = self.world.ground_class[uv[inside, 1], uv[inside, 0]]
        out[inside] = np.isin(cls, self.drivable_ids)
        return out

    def edges(self) -> list[tuple[int, int]]:
        """(road_id, node index i) for each road segment between nodes i and i+1."""
        return [(rid, i) for rid, lst in self.nodes.items() for i in range(len(lst) - 1)]

    def is_stub(self, road_id: int, i: int) -> bool:
        lst = self.nodes[road_id]
        return lst[i].junction is None or lst[i + 1].junction is None

    def node_index(self, road_id: int, junction_id: int) -> int:
        for j, n in enumerate(self.nodes[road_id]):
            if n.junction == junction_id:
                return j
        raise DatasetError(f"road {road_id} does not pass junction {junction_id}")


# --------------------------------------------------------------------------------------
# route and path
# --------------------------------------------------------------------------------------
@dataclass
class _Leg:
    road_id: int
    direction: int  # +1 along the polyline, -1 against
    s_from: float
    s_to: float
    cruise_m_s: float


@dataclass
class _Junction:
    kind: str  # "turn" | "straight" | "uturn"
    junction_id: Optional[int]
    dwell_s: Optional[float]  # stop before the junction for this long; None = no stop


def _heading_angle(v: np.ndarray) -> float:
    return math.atan2(float(v[1]), float(v[0]))


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _plan_route(net: RoadNetwork, cfg: DriveConfig, length_m: float, rng: np.random.Generator):
    """A random route of at least ``length_m``: legs along roads and the junctions between."""
    edges = net.edges()
    inner = [e for e in edges if not net.is_stub(*e) and
             abs(net.nodes[e[0]][e[1] + 1].s_m - net.nodes[e[0]][e[1]].s_m) > 20.0]
    pool = inner or edges
    rid, i = pool[int(rng.integers(len(pool)))]
    lst = net.nodes[rid]
    direction = 1 if rng.random() < 0.5 else -1
    a, b = lst[i].s_m, lst[i + 1].s_m
    s0 = a + (b - a) * float(rng.uniform(0.2, 0.5)) if direction > 0 else b - (b - a) * float(rng.uniform(0.2, 0.5))
    j = i + 1 if direction > 0 else i  # node we drive towards
    v_lo, v_hi = cfg.speed_range_m_s
    legs = [_Leg(rid, direction, s0, lst[j].s_m, float(rng.uniform(v_lo, v_hi)))]
    junctions: list[_Junction] = []
    total = abs(lst[j].s_m - s0)
    while total < length_m:
        leg = legs[-1]
        node = net.nodes[leg.road_id][j]
        if node.junction is None:  # dead end: U-turn
            legs_dir = -leg.direction
            j_next = j + legs_dir
            s_end = node.s_m
            junctions.append(_Junction("uturn", None, None))
            legs.append(_Leg(leg.road_id, legs_dir, s_end, net.nodes[leg.road_id][j_next].s_m,
                             float(rng.uniform(v_lo, v_hi))))
            total += abs(net.nodes[leg.road_id][j_next].s_m - s_end)
            j = j_next
            continue
        h_in = net.lines[leg.road_id].tangent(node.s_m) * leg.direction
        options = []
        for rid2 in net.intersections[node.junction].road_ids:
            j2 = net.node_index(rid2, node.junction)
            for d2 in (1, -1):
                k2 = j2 + d2
                if not 0 <= k2 < len(net.nodes[rid2]):
                    continue
                if rid2 == leg.road_id and d2 == -leg.direction:
                    continue
                h_out = net.lines[rid2].tangent(net.nodes[rid2][j2].s_m) * d2
                theta = _wrap(_heading_angle(h_out) - _heading_angle(h_in))
                if abs(theta) > math.radians(150):
                    continue
                dead = net.nodes[rid2][k2].junction is None
                options.append((rid2, d2, j2, k2, theta, dead))
        live = [o for o in options if not o[5]] or options
        if not live:  # nowhere to go but back
            junctions.append(_Junction("uturn", None, None))
            legs.append(_Leg(leg.road_id, -leg.direction, node.s_m,
                             net.nodes[leg.road_id][j - leg.direction].s_m, float(rng.uniform(v_lo, v_hi))))
            total += abs(legs[-1].s_to - legs[-1].s_from)
            j = j - leg.direction
            continue
        straight = [o for o in live if abs(o[4]) < math.radians(30)]
        turns = [o for o in live if abs(o[4]) >= math.radians(30)]
        if straight and (not turns or rng.random() < cfg.straight_probability):
            choice = straight[int(rng.integers(len(straight)))]
        else:
            choice = turns[int(rng.integers(len(turns)))]
        rid2, d2, j2, k2, theta, _dead = choice
        stop = float(rng.uniform(*cfg.stop_duration_range_s)) if rng.random() < cfg.stop_probability else None
        seg = abs(net.nodes[rid2][k2].s_m - net.nodes[rid2][j2].s_m)
        if rid2 == leg.road_id and d2 == leg.direction and stop is None:
            leg.s_to = net.nodes[rid2][k2].s_m  # straight on along the same road: extend
        else:
            kind = "straight" if abs(theta) < math.radians(15) else "turn"
            junctions.append(_Junction(kind, node.junction, stop))
            legs.append(_Leg(rid2, d2, net.nodes[rid2][j2].s_m, net.nodes[rid2][k2].s_m,
                             float(rng.uniform(v_lo, v_hi))))
        total += seg
        j = k2
    return legs, junctions


def _line_intersection(p: np.ndarray, u: np.ndarray, q: np.ndarray, w: np.ndarray) -> Optional[np.ndarray]:
    """Intersection of lines p + a u and q + b w (None when parallel)."""
    m = np.array([[u[0], -w[0]], [u[1], -w[1]]])
    if abs(np.linalg.det(m)) < 1e-6:
        return None
    a, _b = np.linalg.solve(m, q - p)
    return p + a * u


def _arc_points(entry: np.ndarray, h_in: np.ndarray, radius_m: float, theta_rad: float,
                step_m: float = 0.25) -> np.ndarray:
    """Points of a circular arc starting at ``entry`` heading ``h_in``, turning by
    ``theta_rad`` (CCW positive) with ``radius_m``; (M, 2), entry excluded."""
    left = np.array([-h_in[1], h_in[0]])
    sign = 1.0 if theta_rad > 0 else -1.0
    centre = entry + sign * radius_m * left
    arc_len = radius_m * abs(theta_rad)
    n = max(2, int(math.ceil(arc_len / step_m)))
    phi = np.linspace(0.0, theta_rad, n + 1)[1:]
    start = entry - centre
    c, s = np.cos(phi), np.sin(phi)
    return centre + np.stack([c * start[0] - s * start[1], s * start[0] + c * start[1]], axis=1)


@dataclass
class _PathPiece:
    pts: np.ndarray
    cruise_m_s: float
    stop_dwell_s: Optional[float] = None  # stop at the END of this piece


@dataclass
class _Connector:
    """How leg a ends and leg b starts at a junction: trims (centre-line metres cut from the
    end of a / start of b), the connecting points, the extra distance of the stop line before
    the end of a, and the swing (metres towards the road centre) both lanes ramp into."""

    trim_a: float
    trim_b: float
    pts: np.ndarray
    stop_extra: float
    swing_m: float = 0.0


def _arc_fits(net: RoadNetwork, entry: np.ndarray, h_in: np.ndarray, radius: float, theta: float) -> bool:
    """The vehicle's footprint (+-half width about the arc) stays on drivable ground."""
    left = np.array([-h_in[1], h_in[0]])
    footprint = [np.vstack([entry + side * left,
                            _arc_points(entry + side * left, h_in, radius - side * np.sign(theta), theta)])
                 for side in (-_HALF_WIDTH_M, _HALF_WIDTH_M)]
    return bool(net.is_drivable(np.vstack(footprint)).all())


def _junction_connector(net: RoadNetwork, cfg: DriveConfig, leg_a: _Leg, leg_b: _Leg,
                        junction: _Junction) -> _Connector:
    """The arc (or straight join, or U-turn) from the end of leg a to the start of leg b.

    Turns are circular arcs tangent to the two lanes. Right turns at tight corners may swing
    out: both lane lines are shifted towards the road centre by up to ``offset - 1.2 m`` (the
    legs ramp into the shift), whichever swing allows the largest radius that fits."""
    line_a, line_b = net.lines[leg_a.road_id], net.lines[leg_b.road_id]
    s_a, s_b = leg_a.s_to, leg_b.s_from
    h_in = line_a.tangent(s_a) * leg_a.direction
    h_out = line_b.tangent(s_b) * leg_b.direction
    o_a, o_b = net.lane_offset_m(leg_a.road_id), net.lane_offset_m(leg_b.road_id)

    if junction.kind == "uturn":
        # Half circle from the right lane to the opposite lane, near the road's end.
        trim = 2.0 + o_a
        entry = line_a.point(s_a - leg_a.direction * trim) + o_a * _right_of(h_in)
        return _Connector(trim, trim, _arc_points(entry, h_in, max(o_a, 1.0), math.pi), 0.0)

    theta = _wrap(_heading_angle(h_out) - _heading_angle(h_in))
    wa = net.roads[leg_a.road_id].width_m
    wb = net.roads[leg_b.road_id].width_m
    inter = net.intersections.get(junction.junction_id) if junction.junction_id is not None else None
    junction_r = max(float(getattr(inter, "radius_m", 0.0) or 0.0), 0.5 * max(wa, wb))
    stop_back = junction_r + 1.5
    if abs(theta) < math.radians(15):
        # (nearly) straight: trim both sides to the junction edge, join straight
        return _Connector(junction_r, junction_r, np.zeros((0, 2)), max(stop_back - junction_r, 0.0))
    r_lo, r_hi = cfg.turn_radius_range_m
    max_swing = max(0.0, min(o_a, o_b) - 1.2) if theta < 0 else 0.0
    best = None  # (radius, swing, px, tan_len, pts)
    for swing in np.arange(0.0, max_swing + 1e-9, 0.5):
        p_a = line_a.point(s_a) + (o_a - swing) * _right_of(h_in)
        p_b = line_b.point(s_b) + (o_b - swing) * _right_of(h_out)
        px = _line_intersection(p_a, h_in, p_b, h_out)
        if px is None:
            continue
        for radius in np.arange(r_hi, r_lo - 1e-9, -0.5):
            if best is not None and radius <= best[0]:
                break
            tan_len = float(radius * math.tan(abs(theta) / 2.0))
            entry = px - h_in * tan_len
            if _arc_fits(net, entry, h_in, float(radius), theta):
                best = (float(radius), float(swing), px, tan_len, _arc_points(entry, h_in, float(radius), theta))
                break
        if best is not None and best[0] >= r_hi:
            break
    if best is None:  # nothing fits: the tightest arc on the lanes themselves
        p_a = line_a.point(s_a) + o_a * _right_of(h_in)
        p_b = line_b.point(s_b) + o_b * _right_of(h_out)
        px = _line_intersection(p_a, h_in, p_b, h_out)
        if px is None:
            return _Connector(junction_r, junction_r, np.zeros((0, 2)), max(stop_back - junction_r, 0.0))
        tan_len = float(r_lo * math.tan(abs(theta) / 2.0))
        best = (r_lo, 0.0, px, tan_len, _arc_points(px - h_in * tan_len, h_in, r_lo, theta))
    _radius, swing, px, tan_len, pts = best
    # trims in centre-line metres from the junction's (shifted) lane points back to the arc's
    # entry (leg a) and on to its exit (leg b)
    p_a = line_a.point(s_a) + (o_a - swing) * _right_of(h_in)
    p_b = line_b.point(s_b) + (o_b - swing) * _right_of(h_out)
    trim_a = tan_len - float(np.dot(px - p_a, h_in))
    trim_b = tan_len + float(np.dot(px - p_b, h_out))
    return _Connector(trim_a, trim_b, pts, max(stop_back - trim_a, 0.0), swing)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _build_path(net: RoadNetwork, cfg: DriveConfig, legs: list[_Leg], junctions: list[_Junction]):
    """Concatenate legs and connectors into pieces (points + cruise speed + stops)."""
    conns = [_junction_connector(net, cfg, legs[k], legs[k + 1], j) for k, j in enumerate(junctions)]
    pieces: list[_PathPiece] = []
    for k, leg in enumerate(legs):
        before_c = conns[k - 1] if k > 0 else None
        after_c = conns[k] if k < len(conns) else None
        s_from = leg.s_from + leg.direction * (before_c.trim_b if before_c else 0.0)
        s_to = leg.s_to - leg.direction * (after_c.trim_a if after_c else 0.0)
        o = net.lane_offset_m(leg.road_id)
        swing_in = before_c.swing_m if before_c else 0.0
        swing_out = after_c.swing_m if after_c else 0.0

        def offset(s, s_from=s_from, s_to=s_to, o=o, swing_in=swing_in, swing_out=swing_out, d=leg.direction):
            """Lane offset along the leg: ramps into the swings of the adjacent turns."""
            ramp_in = max(8.0, 6.0 * swing_in)
            ramp_out = max(8.0, 6.0 * swing_out)
            w_in = swing_in * _smoothstep(1.0 - (s - s_from) * d / ramp_in)
            w_out = swing_out * _smoothstep(1.0 - (s_to - s) * d / ramp_out)
            return o - np.maximum(w_in, w_out)

        long_enough = (s_to - s_from) * leg.direction > 0.5
        pts = net.lane_points(leg.road_id, leg.direction, s_from, s_to if long_enough else s_from, offset)
        if not long_enough:
            pts = pts[:1]
        if after_c is not None:
            junction = junctions[k]
            stop_extra = after_c.stop_extra
            if junction.dwell_s is not None and stop_extra > 0.0 and (s_to - s_from) * leg.direction > stop_extra + 0.5:
                s_stop = s_to - leg.direction * stop_extra
                before = net.lane_points(leg.road_id, leg.direction, s_from, s_stop, offset)
                after = net.lane_points(leg.road_id, leg.direction, s_stop, s_to, offset)[1:]
                pieces.append(_PathPiece(before, leg.cruise_m_s, junction.dwell_s))
                pieces.append(_PathPiece(after, leg.cruise_m_s))
            else:
                pieces.append(_PathPiece(pts, leg.cruise_m_s, junction.dwell_s))
            if len(after_c.pts):
                pieces.append(_PathPiece(after_c.pts, min(leg.cruise_m_s, legs[k + 1].cruise_m_s)))
        else:
            pieces.append(_PathPiece(pts, leg.cruise_m_s))
    return pieces


def _gaussian_smooth(values: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Gaussian filter along axis 0 (edge values repeated), for (N,) or (N, D) arrays."""
    if sigma_samples <= 0:
        return values.copy()
    radius = max(1, int(math.ceil(4.0 * sigma_samples)))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma_samples) ** 2)
    kernel /= kernel.sum()
    arr = np.asarray(values, float)
    cols = arr.reshape(len(arr), -1)
    padded = np.concatenate([np.repeat(cols[:1], radius, 0), cols, np.repeat(cols[-1:], radius, 0)])
    out = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(cols.shape[1])], axis=1)
    return out.reshape(arr.shape)


def _resample(pieces: list[_PathPiece], step_m: float):
    """Resample all pieces at ``step_m``; returns points, per-point cruise speed and the
    indices (into the resampled path) of stops with their dwell times."""
    pts_list, cruise_list, stop_marks = [], [], []
    count = 0
    for piece in pieces:
        pts_list.append(piece.pts)
        cruise_list.append(np.full(len(piece.pts), piece.cruise_m_s))
        count += len(piece.pts)
        if piece.stop_dwell_s is not None:
            stop_marks.append((count - 1, piece.stop_dwell_s))
    pts = np.vstack(pts_list)
    cruise = np.concatenate(cruise_list)
    seg = np.hypot(*np.diff(pts, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    # drop duplicate points (zero-length segments) keeping stop marks consistent
    keep = np.concatenate([[True], seg > 1e-6])
    new_index = np.cumsum(keep) - 1
    s, pts, cruise = s[keep], pts[keep], cruise[keep]
    stops_s = [(float(s[new_index[i]]), dwell) for i, dwell in stop_marks]
    n = max(2, int(math.floor(s[-1] / step_m)) + 1)
    s_new = np.arange(n) * step_m
    xy = np.stack([np.interp(s_new, s, pts[:, 0]), np.interp(s_new, s, pts[:, 1])], axis=1)
    cruise_new = np.interp(s_new, s, cruise)
    stops = sorted({min(int(round(si / step_m)), n - 1): d for si, d in stops_s}.items())
    return xy, cruise_new, stops


def generate_trajectory(world, config: DriveConfig = DriveConfig()) -> Trajectory:
    """Plan a route through ``world`` and drive it; returns the ground truth at
    ``config.rate_hz`` for ``config.seconds`` (see the module docstring)."""
    net = RoadNetwork(world)
    rng = np.random.default_rng([config.seed, _TAG_ROUTE])
    v_lo, v_hi = config.speed_range_m_s
    needed_m = v_hi * config.seconds + 60.0
    legs, junctions = _plan_route(net, config, needed_m, rng)
    pieces = _build_path(net, config, legs, junctions)
    step_m = 0.2
    xy, cruise, stops = _resample(pieces, step_m)
    xy = _gaussian_smooth(xy, config.smoothing_sigma_m / step_m)

    seg = np.hypot(*np.diff(xy, axis=0).T)
    seg = np.maximum(seg, 1e-9)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    d = np.gradient(xy, s, axis=0)
    heading = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    curvature = np.gradient(heading, s)
    curvature = _gaussian_smooth(curvature, 0.5 / step_m)

    # speed profile: cruise, curvature limit, stops, accel/decel limits
    v = np.minimum(cruise, np.sqrt(config.lat_accel_max_m_s2 / np.maximum(np.abs(curvature), 1e-6)))
    v = np.minimum(v, v_hi)
    v[0] = 0.0
    dwell_at = {}
    for idx, dwell in stops:
        v[idx] = 0.0
        dwell_at[idx] = dwell
    for i in range(1, len(v)):  # forward: acceleration
        v[i] = min(v[i], math.sqrt(v[i - 1] ** 2 + 2.0 * config.accel_max_m_s2 * seg[i - 1]))
    for i in range(len(v) - 2, -1, -1):  # backward: deceleration
        v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2.0 * config.decel_max_m_s2 * seg[i]))

    # time at each path point, dwell inserted at stops (constant acceleration per segment)
    dt_seg = 2.0 * seg / np.maximum(v[:-1] + v[1:], 1e-9)
    t_knots, s_knots, v_knots = [0.0], [0.0], [v[0]]
    t = 0.0
    for i in range(1, len(v)):
        t += dt_seg[i - 1]
        t_knots.append(t)
        s_knots.append(s[i])
        v_knots.append(v[i])
        if i in dwell_at:
            t += dwell_at[i]
            t_knots.append(t)
            s_knots.append(s[i])
            v_knots.append(0.0)
    t_knots_a = np.asarray(t_knots)
    s_knots_a = np.asarray(s_knots)
    v_knots_a = np.asarray(v_knots)

    n = config.n_samples
    t_samples = np.arange(n) / config.rate_hz
    if t_samples[-1] > t_knots_a[-1]:
        raise DatasetError(
            f"route too short for a {config.seconds} s drive ({s[-1]:.0f} m planned); "
            "the world's road network is too small"
        )
    # constant acceleration within each knot interval: exact s(t) and v(t)
    dv = np.diff(v_knots_a)
    dtk = np.diff(t_knots_a)
    a_seg = np.where(dtk > 1e-12, dv / np.maximum(dtk, 1e-12), 0.0)
    seg_idx = np.clip(np.searchsorted(t_knots_a, t_samples, side="right") - 1, 0, len(a_seg) - 1)
    tau = np.clip(t_samples - t_knots_a[seg_idx], 0.0, dtk[seg_idx])
    v_t = v_knots_a[seg_idx] + a_seg[seg_idx] * tau
    s_t = np.minimum(s_knots_a[seg_idx] + v_knots_a[seg_idx] * tau + 0.5 * a_seg[seg_idx] * tau**2,
                     s_knots_a[seg_idx + 1])
    x_t = np.interp(s_t, s, xy[:, 0])
    y_t = np.interp(s_t, s, xy[:, 1])
    yaw_unwrapped = np.interp(s_t, s, heading)
    kappa_t = np.interp(s_t, s, curvature)
    accel = a_seg[seg_idx]
    yaw_rate = kappa_t * v_t
    slow = v_t < v_lo - 1e-6
    stamps = config.start_stamp_ns + np.arange(n, dtype=np.int64) * config.period_ns
    yaw_rad = (yaw_unwrapped + math.pi) % (2 * math.pi) - math.pi
    return Trajectory(
        stamp_ns=stamps,
        xy_m=np.stack([x_t, y_t], axis=1),
        yaw_rad=yaw_rad,
        speed_m_s=v_t,
        accel_m_s2=accel,
        yaw_rate_rad_s=yaw_rate,
        curvature_1_m=kappa_t,
        slow=slow,
        rate_hz=float(config.rate_hz),
        distance_m=s_t,
    )


# --------------------------------------------------------------------------------------
# GNSS
# --------------------------------------------------------------------------------------
def gnss_errors(config: GnssConfig, n_fixes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the error process for ``n_fixes`` fixes at ``config.rate_hz``.

    Returns ``error_enu_m`` (n, 3), ``is_outlier`` (n,) and ``fix_ok`` (n,) (False in NO_FIX
    gaps). Separate from positions so its statistics can be tested on long runs cheaply.
    """
    if n_fixes < 0:
        raise ConfigError(f"n_fixes must be >= 0, got {n_fixes}")
    rng = np.random.default_rng([config.seed, _TAG_GNSS])
    dt = 1.0 / config.rate_hz
    phi = math.exp(-dt / config.bias_tau_s)
    q = config.bias_sigma_m * math.sqrt(1.0 - phi * phi)
    scale = np.array([1.0, 1.0, config.vertical_factor])
    drive = rng.standard_normal((n_fixes, 3))
    bias = np.empty((n_fixes, 3))
    b = rng.standard_normal(3) * config.bias_sigma_m
    for k in range(n_fixes):
        if k:
            b = phi * b + q * drive[k]
        bias[k] = b
    white = rng.standard_normal((n_fixes, 3)) * config.white_sigma_m
    error = (bias + white) * scale
    is_outlier = rng.random(n_fixes) < config.outlier_probability
    mag = rng.uniform(*config.outlier_range_m, size=n_fixes)
    ang = rng.uniform(-math.pi, math.pi, size=n_fixes)
    error[:, 0] += np.where(is_outlier, mag * np.cos(ang), 0.0)
    error[:, 1] += np.where(is_outlier, mag * np.sin(ang), 0.0)
    # NO_FIX gaps: Poisson starts while fixed, uniform durations
    fix_ok = np.ones(n_fixes, bool)
    p_start = 1.0 - math.exp(-config.nofix_rate_per_min / 60.0 * dt)
    starts = rng.random(n_fixes) < p_start
    durations = rng.uniform(*config.nofix_duration_range_s, size=n_fixes)
    k = 0
    while k < n_fixes:
        if starts[k]:
            n_gap = max(1, int(round(durations[k] / dt)))
            fix_ok[k:k + n_gap] = False
            k += n_gap
        else:
            k += 1
    is_outlier &= fix_ok
    error[~fix_ok] = 0.0
    return error, is_outlier, fix_ok


def simulate_gnss(world, trajectory: Trajectory, config: GnssConfig = GnssConfig()) -> GnssFixes:
    """GNSS fixes along ``trajectory`` at ``config.rate_hz`` (a divisor of the trajectory
    rate: each fix takes the stamp and true position of one trajectory sample)."""
    ratio = trajectory.rate_hz / config.rate_hz
    step = int(round(ratio))
    if step < 1 or abs(ratio - step) > 1e-9:
        raise ConfigError(
            f"GnssConfig.rate_hz {config.rate_hz} must divide the trajectory rate {trajectory.rate_hz}"
        )
    index = np.arange(0, len(trajectory), step)
    error, is_outlier, fix_ok = gnss_errors(config, len(index))
    east = trajectory.xy_m[index, 0] + error[:, 0]
    north = trajectory.xy_m[index, 1] + error[:, 1]
    lat, lon = world.enu.inverse(east, north)
    lat = np.where(fix_ok, np.asarray(lat, float), np.nan)
    lon = np.where(fix_ok, np.asarray(lon, float), np.nan)
    alt = np.where(fix_ok, error[:, 2], np.nan)  # the world's ground is the ellipsoid (h = 0)
    var_h = config.horizontal_sigma_m**2
    cov = np.array([var_h, var_h, var_h * config.vertical_factor**2])
    return GnssFixes(
        stamp_ns=trajectory.stamp_ns[index],
        index=index,
        status=np.where(fix_ok, NavSatStatus.FIX, NavSatStatus.NO_FIX).astype(np.int8),
        lat_deg=lat,
        lon_deg=lon,
        alt_m=alt,
        error_enu_m=error,
        is_outlier=is_outlier,
        cov_enu_m2=cov,
    )


# --------------------------------------------------------------------------------------
# odometry
# --------------------------------------------------------------------------------------
def simulate_odometry(trajectory: Trajectory, config: OdomConfig = OdomConfig()) -> Odometry:
    """Dead-reckoned ``T_odom_base`` from corrupted ground-truth increments (see
    :class:`OdomConfig`); ``T_odom_base(0) = identity``."""
    rng = np.random.default_rng([config.seed, _TAG_ODOM])
    scale_err = (config.speed_scale_error if config.speed_scale_error is not None
                 else float(rng.normal(0.0, config.speed_scale_error_sigma)))
    bias = (config.yaw_rate_bias_rad_s if config.yaw_rate_bias_rad_s is not None
            else float(rng.normal(0.0, config.yaw_rate_bias_sigma_rad_s)))
    n = len(trajectory)
    dt = 1.0 / trajectory.rate_hz
    xy = np.zeros((n, 2))
    yaw_rad = np.zeros(n)
    speed = np.zeros(n)
    yaw_rate = np.zeros(n)
    noise_v = rng.standard_normal(n) * config.speed_noise_sigma_m_s
    noise_w = rng.standard_normal(n) * config.yaw_rate_noise_sigma_rad_s
    cur = SE2.identity()
    dist = np.zeros(n)
    for k in range(1, n):
        a = trajectory.T_map_base(k - 1)
        b = trajectory.T_map_base(k)
        inc = a.inverse() @ b  # true motion in base_link(k-1)
        moved = math.hypot(inc.x_m, inc.y_m)
        gain = 1.0 + scale_err
        extra = noise_v[k] * dt if moved > 1e-6 else 0.0  # a standing wheel reads zero
        dirx, diry = (inc.x_m / moved, inc.y_m / moved) if moved > 1e-9 else (1.0, 0.0)
        meas_len = max(gain * moved + extra, 0.0)
        dyaw = inc.yaw_rad + (bias + noise_w[k]) * dt
        cur = cur @ SE2(dirx * meas_len, diry * meas_len, dyaw)
        xy[k] = (cur.x_m, cur.y_m)
        yaw_rad[k] = cur.yaw_rad
        speed[k] = meas_len / dt
        yaw_rate[k] = dyaw / dt
        dist[k] = dist[k - 1] + moved
    t = np.arange(n) * dt
    sig_s = max(config.speed_scale_error_sigma, abs(scale_err) if config.speed_scale_error is not None else 0.0)
    sig_b = max(config.yaw_rate_bias_sigma_rad_s, abs(bias) if config.yaw_rate_bias_rad_s is not None else 0.0)
    cov_yaw = (sig_b * t) ** 2 + config.yaw_rate_noise_sigma_rad_s**2 * dt * t + 1e-6
    # position: scale error along track, heading error across track (~ distance * yaw std)
    cov_xy = (sig_s * dist) ** 2 + cov_yaw * dist**2 / 3.0 + config.speed_noise_sigma_m_s**2 * dt * t + 1e-6
    return Odometry(
        stamp_ns=trajectory.stamp_ns.copy(),
        xy_m=xy,
        yaw_rad=yaw_rad,
        speed_m_s=speed,
        yaw_rate_rad_s=yaw_rate,
        cov_xy_m2=cov_xy,
        cov_yaw_rad2=cov_yaw,
        speed_scale_error=float(scale_err),
        yaw_rate_bias_rad_s=float(bias),
        twist_var=(max(config.speed_noise_sigma_m_s**2, 1e-6), max(config.yaw_rate_noise_sigma_rad_s**2, 1e-6)),
    )
