"""The world's roads as a drivable graph (:class:`RoadNetwork`), used to plan drives
(:mod:`.route`) and to sample poses on lanes (:mod:`xview_localizer.sim.dataset`).

Conventions: world frame (ENU metres, see :mod:`xview_localizer.sim.world`). A road is its
centre-line polyline parametrised by arc length ``s_m`` (0 at its first vertex); "direction"
+1 travels along increasing ``s_m``, -1 against it. Lanes are offset to the RIGHT of the travel
direction (right-hand traffic); ``_right_of`` gives that unit vector. Drivable ground is the
:data:`DRIVABLE_CLASSES` of the world's ground-class raster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ...core.errors import DatasetError

#: Ground classes (names of ``world.GROUND_CLASSES``) a vehicle may drive on.
DRIVABLE_CLASSES = ("road", "marking")


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
        from ..world_model import GROUND_CLASSES

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
