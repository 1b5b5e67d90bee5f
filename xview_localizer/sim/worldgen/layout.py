"""The road layout of a generated world (steps 1-2 of :mod:`xview_localizer.sim.worldgen`):
roads (:func:`_make_roads`) and their intersections (:func:`_make_intersections`, with the
arms the ground painter puts crosswalks and stop lines on).

Conventions: world-frame metres; road centre lines are resampled every 2 m and extend 40 m
beyond the world's edge so that no road ends visibly inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..world_model import Intersection, Road, WorldConfig
from .geometry import _arclength, _point_at, _resample


def _make_roads(rng: np.random.Generator, config: WorldConfig) -> list[Road]:
    st = config.style
    h = config.size_m / 2.0
    ext = h + 40.0
    lines: list[tuple[np.ndarray, bool]] = []
    for axis in (0, 1):  # 0: north-south roads at x = c; 1: east-west roads at y = c
        lo, hi = st.grid_spacing_range_m
        c = -h + rng.uniform(0.25, 0.75) * lo
        positions = []
        while c < h - 0.25 * lo:
            positions.append(c)
            c += rng.uniform(lo, hi)
        for c in positions:
            t = np.arange(-ext, ext + 1e-9, 2.0)
            off = np.zeros_like(t)
            curved = bool(rng.random() < st.curved_road_fraction)
            if curved:
                amp = rng.uniform(6.0, max(6.5, min(0.16 * lo, 28.0)))
                lam = rng.uniform(350.0, 900.0)
                phase = rng.uniform(0, 2 * math.pi)
                off = amp * np.sin(2 * math.pi * t / lam + phase)
            p = np.stack([c + off, t], 1) if axis == 0 else np.stack([t, c + off], 1)
            lines.append((p, curved))
    for _ in range(st.diagonal_roads):
        # a cubic Bezier from one side of the world to the opposite side
        side = rng.integers(0, 2)
        a = rng.uniform(-0.7 * h, 0.7 * h, 2)
        if side == 0:
            p0, p3 = np.array([-ext, a[0]]), np.array([ext, a[1]])
        else:
            p0, p3 = np.array([a[0], -ext]), np.array([a[1], ext])
        p1 = p0 + (p3 - p0) / 3 + rng.uniform(-0.35 * h, 0.35 * h, 2)
        p2 = p0 + 2 * (p3 - p0) / 3 + rng.uniform(-0.35 * h, 0.35 * h, 2)
        t = np.linspace(0, 1, 2000)[:, None]
        p = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
        lines.append((_resample(p, 2.0), True))
    roads = []
    wlo, whi = st.road_width_range_m
    for i, (p, curved) in enumerate(lines):
        width = round(float(rng.uniform(wlo, whi)), 1)
        lanes = 4 if width >= 12.0 else 2
        bay = 2.3 if (lanes == 2 and width >= 7.0 and rng.random() < 0.35 + 0.5 * st.parked_car_density) else 0.0
        sidewalk = round(float(rng.uniform(1.8, 3.5)), 2)
        roads.append(Road(i, _resample(p, 2.0), width, lanes, sidewalk, bay, curved))
    return roads


def _segment_crossings(a: np.ndarray, b: np.ndarray) -> list[tuple[np.ndarray, float, float]]:
    """Crossings of polylines a, b: (point, arc length along a, along b)."""
    a0, a1 = a[:-1], a[1:]
    b0, b1 = b[:-1], b[1:]
    # bounding-box prefilter
    amin, amax = np.minimum(a0, a1), np.maximum(a0, a1)
    bmin, bmax = np.minimum(b0, b1), np.maximum(b0, b1)
    if (amax[:, 0].max() < bmin[:, 0].min() or bmax[:, 0].max() < amin[:, 0].min()
            or amax[:, 1].max() < bmin[:, 1].min() or bmax[:, 1].max() < amin[:, 1].min()):
        return []
    ov = ((amin[:, None, 0] <= bmax[None, :, 0]) & (bmin[None, :, 0] <= amax[:, None, 0])
          & (amin[:, None, 1] <= bmax[None, :, 1]) & (bmin[None, :, 1] <= amax[:, None, 1]))
    ia, ib = np.nonzero(ov)
    if len(ia) == 0:
        return []
    r = a1[ia] - a0[ia]
    s = b1[ib] - b0[ib]
    qp = b0[ib] - a0[ia]
    den = r[:, 0] * s[:, 1] - r[:, 1] * s[:, 0]
    ok = np.abs(den) > 1e-12
    t = np.where(ok, (qp[:, 0] * s[:, 1] - qp[:, 1] * s[:, 0]) / np.where(ok, den, 1), -1)
    u = np.where(ok, (qp[:, 0] * r[:, 1] - qp[:, 1] * r[:, 0]) / np.where(ok, den, 1), -1)
    hit = ok & (t >= 0) & (t < 1) & (u >= 0) & (u < 1)
    sa, sb = _arclength(a), _arclength(b)
    out = []
    for k in np.nonzero(hit)[0]:
        pt = a0[ia[k]] + t[k] * r[k]
        out.append((pt, sa[ia[k]] + t[k] * np.hypot(*r[k]), sb[ib[k]] + u[k] * np.hypot(*s[k])))
    return out


@dataclass
class _Arm:
    road: Road
    s_m: float  # arc length of the junction point along the road
    direction: int  # +1: arm leaves along increasing s, -1: decreasing
    d_m: float  # distance from the junction point to the start of the crosswalk


def _make_intersections(roads: list[Road], size_m: float) -> tuple[list[Intersection], list[list[_Arm]]]:
    h = size_m / 2.0
    raw = []  # (point, {road_id: s})
    for i in range(len(roads)):
        for j in range(i + 1, len(roads)):
            for pt, sa, sb in _segment_crossings(roads[i].centerline_xy_m, roads[j].centerline_xy_m):
                if np.all(np.abs(pt) < h + 25.0):
                    raw.append((pt, {roads[i].id: sa, roads[j].id: sb}))
    # merge crossings closer than 12 m
    merged: list[tuple[list[np.ndarray], dict]] = []
    for pt, ids in raw:
        for m in merged:
            if np.hypot(*(np.mean(m[0], axis=0) - pt)) < 12.0:
                m[0].append(pt)
                for k, v in ids.items():
                    m[1].setdefault(k, v)
                break
        else:
            merged.append(([pt], dict(ids)))
    by_id = {r.id: r for r in roads}
    inters, arms_all = [], []
    for k, (pts, ids) in enumerate(merged):
        c = np.mean(pts, axis=0)
        arms = []
        for rid, s in sorted(ids.items()):
            road = by_id[rid]
            p = road.centerline_xy_m
            scum = _arclength(p)
            _, t_here = _point_at(p, scum, s)
            # distance to clear the other roads' carriageway + sidewalk, at the crossing angle
            d = 0.0
            for oid in ids:
                if oid == rid:
                    continue
                other = by_id[oid]
                _, t_o = _point_at(other.centerline_xy_m, _arclength(other.centerline_xy_m), ids[oid])
                sin_a = abs(t_here[0] * t_o[1] - t_here[1] * t_o[0])
                sin_a = max(sin_a, 0.35)
                d = max(d, (other.width_m / 2.0 + 0.6) / sin_a + 0.5 * road.width_m * math.sqrt(1 - sin_a**2) / sin_a)
            for direction in (+1, -1):
                s_end = s + direction * (d + 6.0)
                if 0.0 <= s_end <= scum[-1]:
                    arms.append(_Arm(road, s, direction, d))
        radius = max([a.d_m for a in arms], default=0.0)
        inters.append(Intersection(k, c, tuple(sorted(ids)), round(radius, 3)))
        arms_all.append(arms)
    return inters, arms_all
