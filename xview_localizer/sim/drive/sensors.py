"""Sensor models along a drive's :class:`~.trajectory.Trajectory`: GNSS fixes
(:func:`simulate_gnss`, error process :func:`gnss_errors`) and wheel odometry
(:func:`simulate_odometry`). Camera images and depth are rendered by
:mod:`xview_localizer.sim.ground` when a bag is written (:mod:`xview_localizer.sim.bag`).

Conventions: the GNSS antenna is at the ``base_link`` origin (no lever arm); fixes are WGS84
(``lat_deg``, ``lon_deg``, ellipsoidal ``alt_m``; the world's ground is the ellipsoid) with a
diagonal ENU covariance equal to the model's marginal error variance (outliers excluded, see
:class:`~.config.GnssConfig`); NaN position where ``status == NO_FIX``. Odometry is
``T_odom_base`` with ``T_odom_base(0) = identity``; its twist is in ``base_link``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...core.errors import ConfigError
from ...core.se2 import SE2
from .config import _TAG_GNSS, _TAG_ODOM, GnssConfig, OdomConfig
from .trajectory import Trajectory


class NavSatStatus:
    """``sensor_msgs/NavSatStatus`` status values used here."""

    NO_FIX = -1
    FIX = 0


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


def simulate_gnss(world, trajectory: Trajectory, config: GnssConfig = GnssConfig()) -> GnssFixes:  # noqa: B008 (frozen)
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
def simulate_odometry(trajectory: Trajectory, config: OdomConfig = OdomConfig()) -> Odometry:  # noqa: B008 (frozen)
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
