"""The ground-truth trajectory of a drive: :func:`generate_trajectory` plans a route
(:mod:`.route`), resamples and Gaussian-smooths the path (so curvature is continuous), and
drives it with a speed profile limited by the per-leg cruise speed, the lateral acceleration
on curves, stops and the acceleration/deceleration limits; the vehicle starts from rest.

Conventions: :class:`Trajectory` is ``T_map_base`` (SE(2): x_m, y_m, yaw_rad; map = world ENU
frame, yaw 0 = east, counter-clockwise positive, wrapped to [-pi, pi)) at ``N`` samples stamped
``start_stamp_ns + k * period_ns`` (integer nanoseconds of simulated time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...core.errors import DatasetError
from ...core.se2 import SE2
from .config import _TAG_ROUTE, DriveConfig
from .roads import RoadNetwork
from .route import _build_path, _PathPiece, _plan_route


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


def generate_trajectory(world, config: DriveConfig = DriveConfig()) -> Trajectory:  # noqa: B008 (frozen)
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
