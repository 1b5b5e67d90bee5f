"""The knobs of a synthetic drive: :class:`DriveConfig` (route, speeds, stops),
:class:`GnssConfig` (the GNSS error model) and :class:`OdomConfig` (wheel odometry drift).

Conventions: frozen dataclasses validated on construction (a bad value raises
:class:`~xview_localizer.core.errors.ConfigError` naming the field, e.g.
``DriveConfig.rate_hz``); (min, max) ranges are normalised to float pairs; every config carries
its own ``seed``. Each model draws from ``np.random.default_rng([seed, TAG])`` with its own
sub-stream tag below, so the route, GNSS and odometry noise never correlate even when all three
use the same seed (``sim drive --seed N`` does). Units are in the field names (``_m``,
``_m_s``, ``_s``, ``_hz``, ``_rad_s``, ``_ns``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ...core.errors import ConfigError

#: Default simulated start time: 1.7e9 s after the epoch (2023-11-14), in nanoseconds.
DEFAULT_START_STAMP_NS = 1_700_000_000 * 1_000_000_000

# Sub-stream tags for np.random.default_rng([seed, TAG]) so equal seeds never correlate.
_TAG_ROUTE, _TAG_GNSS, _TAG_ODOM = 101, 202, 303


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
