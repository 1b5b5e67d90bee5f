"""Drives: trajectory smoothness and road-keeping, GNSS error statistics against the configured
model, odometry drift. Real worlds: a hand-built ring-and-cross world (fast) and a small
generated one (dead ends at the world's edge)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from xview_localizer.core.errors import ConfigError
from xview_localizer.core.se2 import SE2
from xview_localizer.sim.drive import (
    DriveConfig,
    GnssConfig,
    NavSatStatus,
    OdomConfig,
    RoadNetwork,
    generate_trajectory,
    gnss_errors,
    simulate_gnss,
    simulate_odometry,
)
from xview_localizer.sim.world import (
    GROUND_CLASSES,
    Intersection,
    Road,
    World,
    WorldConfig,
    generate_world,
)


def ring_world(size_m: float = 300.0, m_per_px: float = 0.5, width_m: float = 8.0) -> World:
    """A square ring road (corners at +-100 m) crossed by two straight roads through the
    centre: 9 junctions, no dead ends. Ground classes painted from the road geometry."""
    a = 100.0

    def line(p, q, n=41):
        return np.linspace(p, q, n)

    roads = [
        Road(0, line([-a, -a], [a, -a]), width_m),  # south side, eastwards
        Road(1, line([a, -a], [a, a]), width_m),  # east side, northwards
        Road(2, line([a, a], [-a, a]), width_m),  # north side, westwards
        Road(3, line([-a, a], [-a, -a]), width_m),  # west side, southwards
        Road(4, line([-a, 0.0], [a, 0.0]), width_m),  # east-west through the centre
        Road(5, line([0.0, -a], [0.0, a]), width_m),  # north-south through the centre
    ]
    inters = [
        Intersection(0, np.array([-a, -a]), (3, 0)),
        Intersection(1, np.array([a, -a]), (0, 1)),
        Intersection(2, np.array([a, a]), (1, 2)),
        Intersection(3, np.array([-a, a]), (2, 3)),
        Intersection(4, np.array([0.0, -a]), (0, 5)),
        Intersection(5, np.array([a, 0.0]), (1, 4)),
        Intersection(6, np.array([0.0, a]), (2, 5)),
        Intersection(7, np.array([-a, 0.0]), (3, 4)),
        Intersection(8, np.array([0.0, 0.0]), (4, 5)),
    ]
    cfg = WorldConfig(seed=0, size_m=size_m, albedo_m_per_px=m_per_px)
    n = cfg.raster_size_px
    cls = np.full((n, n), GROUND_CLASSES["grass"], np.uint8)
    world = World(cfg, roads, inters, [], [], [], np.zeros((n, n, 3), np.uint8), cls)
    geo = world.georef
    thick = int(round(width_m / m_per_px))
    for r in roads:
        uv = np.round(geo.xy_to_px(r.centerline_xy_m)).astype(np.int32)
        cv2.polylines(cls, [uv.reshape(-1, 1, 2)], False, GROUND_CLASSES["road"], thickness=thick)
    for i in inters:  # square junction boxes so corners are fully paved
        c = geo.xy_to_px(i.xy_m)
        h = width_m / 2 / m_per_px
        cv2.rectangle(cls, (int(c[0] - h), int(c[1] - h)), (int(c[0] + h), int(c[1] + h)),
                      GROUND_CLASSES["road"], thickness=-1)
    return world


@pytest.fixture(scope="module")
def ring():
    return ring_world()


@pytest.fixture(scope="module")
def generated():
    return generate_world(WorldConfig(seed=3, size_m=300.0))


def _check_smooth(traj, cfg: DriveConfig, world) -> None:
    dt = 1.0 / cfg.rate_hz
    v = traj.speed_m_s
    v_lo, v_hi = cfg.speed_range_m_s
    assert np.all(v >= 0.0) and np.all(v <= v_hi + 1e-9)
    # speed from positions agrees with the reported speed
    step = np.hypot(*np.diff(traj.xy_m, axis=0).T)
    assert np.all(step <= v_hi * dt + 1e-6)
    np.testing.assert_allclose(step / dt, 0.5 * (v[1:] + v[:-1]), atol=0.15)
    # bounded longitudinal acceleration (finite differences of speed)
    acc = np.diff(v) / dt
    assert np.all(acc <= cfg.accel_max_m_s2 + 0.05) and np.all(acc >= -cfg.decel_max_m_s2 - 0.05)
    # smooth yaw: bounded yaw rate, yaw acceleration and lateral acceleration
    yaw = np.unwrap(traj.yaw_rad)
    yaw_rate = np.diff(yaw) / dt
    assert np.max(np.abs(yaw_rate)) < 1.0
    assert np.max(np.abs(np.diff(yaw_rate) / dt)) < 4.0
    v_mid = 0.5 * (v[1:] + v[:-1])
    assert np.max(np.abs(v_mid * yaw_rate)) < cfg.lat_accel_max_m_s2 + 1.0
    # heading follows the direction of motion
    moving = step > 0.3
    motion_heading = np.arctan2(*np.diff(traj.xy_m, axis=0)[moving][:, ::-1].T)
    mid_yaw = (yaw[1:] + yaw[:-1])[moving] / 2
    err = (motion_heading - mid_yaw + np.pi) % (2 * np.pi) - np.pi
    assert np.max(np.abs(err)) < math.radians(3.0)
    # below the minimum cruise speed only when starting, stopping or in tight curves
    t = np.arange(len(v)) * dt
    stops = np.concatenate([[0.0], t[v < 0.05]])
    near_stop = np.min(np.abs(t[:, None] - stops[None, :]), axis=1) < 5.0
    tight = np.abs(traj.curvature_1_m) > cfg.lat_accel_max_m_s2 / v_lo**2 * 0.8
    tight = np.convolve(tight, np.ones(41), mode="same") > 0  # within 2 s of a tight curve
    slow = v < v_lo - 1e-6
    assert np.all(near_stop | tight | ~slow)
    assert slow.mean() < 0.4
    # on drivable ground throughout
    assert RoadNetwork(world).is_drivable(traj.xy_m).all()


def test_ring_world_drive_is_smooth_and_stays_on_roads(ring):
    cfg = DriveConfig(seconds=240.0, seed=5)
    traj = generate_trajectory(ring, cfg)
    assert len(traj) == 2400
    _check_smooth(traj, cfg, ring)
    assert traj.distance_m[-1] > 240.0 * 5.0  # it actually drives
    assert np.any(traj.speed_m_s > 10.0)
    # stamps: int64 nanoseconds, 10 Hz, starting at 1.7e9 s
    assert traj.stamp_ns.dtype == np.int64
    assert traj.stamp_ns[0] == 1_700_000_000_000_000_000
    assert np.all(np.diff(traj.stamp_ns) == 100_000_000)


def test_generated_world_drive_avoids_dead_ends(generated):
    for seed in (1, 2):
        cfg = DriveConfig(seconds=90.0, seed=seed)
        traj = generate_trajectory(generated, cfg)
        _check_smooth(traj, cfg, generated)
        # never closer than 5 m to the world's edge (roads there are dead ends)
        assert np.max(np.abs(traj.xy_m)) < generated.half_size_m - 5.0


def test_stops_happen_and_last(ring):
    cfg = DriveConfig(seconds=240.0, seed=2, stop_probability=1.0, stop_duration_range_s=(2.0, 2.0))
    traj = generate_trajectory(ring, cfg)
    stopped = traj.speed_m_s < 1e-3
    runs = np.diff(np.concatenate([[0], stopped.astype(int), [0]]))
    lengths = np.nonzero(runs == -1)[0] - np.nonzero(runs == 1)[0]
    assert len(lengths) >= 3
    assert np.all(lengths[1:-1] >= 19)  # ~2 s dwell at 10 Hz (first: the start from rest)


def test_same_seed_same_trajectory(ring):
    a = generate_trajectory(ring, DriveConfig(seconds=30.0, seed=9))
    b = generate_trajectory(ring, DriveConfig(seconds=30.0, seed=9))
    c = generate_trajectory(ring, DriveConfig(seconds=30.0, seed=10))
    assert np.array_equal(a.xy_m, b.xy_m) and np.array_equal(a.yaw_rad, b.yaw_rad)
    assert not np.allclose(a.xy_m, c.xy_m)


def test_gnss_error_statistics_match_model():
    cfg = GnssConfig(rate_hz=5.0, bias_sigma_m=3.0, bias_tau_s=20.0, white_sigma_m=0.5,
                     outlier_probability=0.02, outlier_range_m=(8.0, 25.0), nofix_rate_per_min=2.0,
                     nofix_duration_range_s=(1.0, 5.0), seed=4)
    n = int(20000 * cfg.rate_hz)
    err, outlier, ok = gnss_errors(cfg, n)
    clean = ok & ~outlier
    sigma = cfg.horizontal_sigma_m
    for axis in (0, 1):
        assert abs(np.std(err[clean, axis]) / sigma - 1.0) < 0.12
        assert abs(np.mean(err[clean, axis])) < 0.4
    assert abs(np.std(err[clean, 2]) / (sigma * cfg.vertical_factor) - 1.0) < 0.12
    # honest covariance: 2-D NEES of the (non-outlier) fixes averages 2
    nees = (err[clean, 0] ** 2 + err[clean, 1] ** 2) / sigma**2
    assert abs(np.mean(nees) - 2.0) < 0.25
    # the bias is slow: strongly correlated over 1 s, decorrelated over several tau
    e = np.where(clean, err[:, 0], 0.0)
    def corr(lag):
        m = clean[:-lag] & clean[lag:]
        return np.corrcoef(e[:-lag][m], e[lag:][m])[0, 1]
    assert corr(5) > 0.9
    assert abs(corr(int(cfg.bias_tau_s * cfg.rate_hz)) - math.exp(-1) * 0.97) < 0.1
    assert corr(int(5 * cfg.bias_tau_s * cfg.rate_hz)) < 0.1
    # outliers: rate and size
    rate = outlier[ok].mean()
    assert abs(rate - cfg.outlier_probability) < 0.004
    assert np.median(np.hypot(err[outlier, 0], err[outlier, 1])) > 10.0
    # NO_FIX gaps: fraction and durations
    assert abs((~ok).mean() / cfg.expected_nofix_fraction - 1.0) < 0.15
    assert np.all(err[~ok] == 0.0)


def test_gnss_fixes_along_drive(ring):
    traj = generate_trajectory(ring, DriveConfig(seconds=120.0, seed=1))
    cfg = GnssConfig(rate_hz=5.0, nofix_rate_per_min=3.0, outlier_probability=0.05, seed=2)
    fixes = simulate_gnss(ring, traj, cfg)
    assert len(fixes) == 600
    assert np.array_equal(fixes.stamp_ns, traj.stamp_ns[::2])
    nofix = fixes.status == NavSatStatus.NO_FIX
    assert nofix.any() and (~nofix).any()
    assert np.all(np.isnan(fixes.lat_deg[nofix])) and np.all(np.isfinite(fixes.lat_deg[~nofix]))
    # reported lat/lon = truth + error, exactly (through the world's ENU frame)
    e, n = ring.enu.forward(fixes.lat_deg[~nofix], fixes.lon_deg[~nofix])
    truth = traj.xy_m[fixes.index[~nofix]]
    np.testing.assert_allclose(np.asarray(e) - truth[:, 0], fixes.error_enu_m[~nofix, 0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(n) - truth[:, 1], fixes.error_enu_m[~nofix, 1], atol=1e-6)
    np.testing.assert_allclose(fixes.cov_enu_m2[:2], cfg.horizontal_sigma_m**2)
    with pytest.raises(ConfigError, match="must divide"):
        simulate_gnss(ring, traj, GnssConfig(rate_hz=3.0))


def test_odometry_drift_within_configured_bounds(ring):
    traj = generate_trajectory(ring, DriveConfig(seconds=120.0, seed=3))
    dt = 0.1
    # no errors: odometry reproduces the true motion exactly
    exact = simulate_odometry(traj, OdomConfig(speed_scale_error=0.0, yaw_rate_bias_rad_s=0.0,
                                               speed_noise_sigma_m_s=0.0, yaw_rate_noise_sigma_rad_s=0.0))
    T0 = traj.T_map_base(0)
    for k in (100, 600, len(traj) - 1):
        rel = T0.inverse() @ traj.T_map_base(k)
        got = exact.T_odom_base(k)
        assert math.hypot(got.x_m - rel.x_m, got.y_m - rel.y_m) < 1e-6
        assert abs(SE2(0, 0, got.yaw_rad - rel.yaw_rad).yaw_rad) < 1e-9
    # configured drift: path length scales, heading drifts by bias * time
    cfg = OdomConfig(speed_scale_error=0.02, yaw_rate_bias_rad_s=0.01, speed_noise_sigma_m_s=0.05,
                     yaw_rate_noise_sigma_rad_s=0.005, seed=1)
    odo = simulate_odometry(traj, cfg)
    odo_len = np.sum(np.hypot(*np.diff(odo.xy_m, axis=0).T))
    true_len = np.sum(np.hypot(*np.diff(traj.xy_m, axis=0).T))
    assert abs(odo_len / true_len - 1.02) < 0.002
    yaw_drift = np.unwrap(odo.yaw_rad)[-1] - (np.unwrap(traj.yaw_rad)[-1] - traj.yaw_rad[0])
    T = (len(traj) - 1) * dt
    noise_bound = 4 * cfg.yaw_rate_noise_sigma_rad_s * dt * math.sqrt(len(traj))
    assert abs(yaw_drift - 0.01 * T) < noise_bound
    assert odo.speed_scale_error == 0.02 and odo.yaw_rate_bias_rad_s == 0.01
    # drawn drift stays within the configured sigmas and the reported covariance covers it
    for seed in range(5):
        drawn = simulate_odometry(traj, OdomConfig(seed=seed))
        assert abs(drawn.speed_scale_error) < 4 * 0.01
        assert abs(drawn.yaw_rate_bias_rad_s) < 4 * 0.002
        assert np.all(np.diff(drawn.cov_xy_m2) >= 0) and np.all(np.diff(drawn.cov_yaw_rad2) >= 0)
        rel = T0.inverse() @ traj.T_map_base(len(traj) - 1)
        end = drawn.T_odom_base(len(traj) - 1)
        err_xy = math.hypot(end.x_m - rel.x_m, end.y_m - rel.y_m)
        assert err_xy < 4 * math.sqrt(2 * drawn.cov_xy_m2[-1])


def test_configs_reject_bad_values():
    with pytest.raises(ConfigError, match="speed_range_m_s"):
        DriveConfig(speed_range_m_s=(15.0, 5.0))
    with pytest.raises(ConfigError, match="seconds"):
        DriveConfig(seconds=float("nan"))
    with pytest.raises(ConfigError, match="seed"):
        GnssConfig(seed=-1)
    with pytest.raises(ConfigError, match="both be 0"):
        GnssConfig(bias_sigma_m=0.0, white_sigma_m=0.0)
    with pytest.raises(ConfigError, match="speed_scale_error"):
        OdomConfig(speed_scale_error=2.0)
