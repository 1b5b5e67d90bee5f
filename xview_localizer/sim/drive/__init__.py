"""Synthetic drives through a :class:`~xview_localizer.sim.world.World`: a smooth vehicle
trajectory along the roads, GNSS fixes with a realistic error model and drifting wheel
odometry. Everything is seeded and deterministic; nothing here renders or touches ROS
(:mod:`xview_localizer.sim.bag` renders the camera and writes the rosbag2).

This package is the public entry point: import every name from ``xview_localizer.sim.drive``.
It holds

* :mod:`.config`: :class:`DriveConfig`, :class:`GnssConfig`, :class:`OdomConfig` and the
  seed sub-stream tags;
* :mod:`.roads`: :class:`RoadNetwork`, the world's roads as a drivable graph;
* :mod:`.route`: route planning and junction geometry (private);
* :mod:`.trajectory`: :class:`Trajectory` and :func:`generate_trajectory` (speed profile);
* :mod:`.sensors`: GNSS (:func:`gnss_errors`, :func:`simulate_gnss`, :class:`GnssFixes`,
  :class:`NavSatStatus`) and odometry (:func:`simulate_odometry`, :class:`Odometry`).

Dependencies run one way: config, roads <- route <- trajectory <- sensors <- this facade.

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
"""

from __future__ import annotations

from .config import DEFAULT_START_STAMP_NS, DriveConfig, GnssConfig, OdomConfig
from .roads import DRIVABLE_CLASSES, RoadNetwork
from .sensors import (
    GnssFixes,
    NavSatStatus,
    Odometry,
    gnss_errors,
    simulate_gnss,
    simulate_odometry,
)
from .trajectory import Trajectory, generate_trajectory

__all__ = [
    "DEFAULT_START_STAMP_NS",
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
