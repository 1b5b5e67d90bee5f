"""What stands on the ground of a generated world (steps 3-5 of
:mod:`xview_localizer.sim.worldgen`): zones (parks, parking lots), buildings, parked cars and
trees, placed by rejection sampling on a coarse occupancy grid (:class:`_Occupancy`) so that
nothing overlaps.

Conventions: world-frame metres and radians (yaw 0 = east, counter-clockwise positive);
occupancy cells hold the ``_OCC_*`` codes at ``_OCC_M_PER_PX`` (1 m) resolution. Each
``_make_*`` function takes its own ``numpy.random.Generator`` (see
:func:`xview_localizer.sim.worldgen.build_world`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..world_model import Box, Building, Car, Intersection, Road, Tree, WorldConfig
from .geometry import _SCALE, _SHIFT, _arclength, _ccw, _Painter, _point_at, _rect, _tangents
from .palette import _CANOPY, _CAR_COLOURS, _CAR_WEIGHTS, _jitter, _Palette

_OCC_M_PER_PX = 1.0  # occupancy grid resolution

# occupancy codes (coarse grid)
_OCC_FREE, _OCC_ROAD, _OCC_PARK, _OCC_LOT, _OCC_BUILDING, _OCC_TRUNK = 0, 1, 2, 3, 4, 5


class _Occupancy:
    """1 m grid of what occupies the ground (codes _OCC_*), for rejection sampling."""

    def __init__(self, size_m: float) -> None:
        self.p = _Painter(size_m, _OCC_M_PER_PX)
        self.grid = np.zeros((self.p.n, self.p.n), np.uint8)

    def window_hits(self, poly_m: np.ndarray, margin_m: float, allowed: tuple = (_OCC_FREE,)) -> bool:
        """True if the polygon (dilated by margin) touches a cell with a code not in ``allowed``
        or leaves the world."""
        pts = self.p.px(poly_m) // _SCALE
        n = self.p.n
        m = int(math.ceil(margin_m / _OCC_M_PER_PX))
        u0, v0 = pts.min(0) - m - 1
        u1, v1 = pts.max(0) + m + 2
        if u0 < 0 or v0 < 0 or u1 > n or v1 > n:
            return True
        mask = np.zeros((v1 - v0, u1 - u0), np.uint8)
        cv2.fillPoly(mask, [self.p.px(poly_m) - np.array([u0, v0]) * _SCALE], 1, cv2.LINE_8, _SHIFT)
        if m > 0:
            mask = cv2.dilate(mask, np.ones((2 * m + 1, 2 * m + 1), np.uint8))
        sub = self.grid[v0:v1, u0:u1][mask > 0]
        return bool(np.any(~np.isin(sub, allowed)))

    def fill(self, poly_m: np.ndarray, code: int) -> None:
        self.p.polygons([self.grid], [int(code)], [poly_m])

    def code_at(self, xy_m: np.ndarray) -> np.ndarray:
        xy = np.atleast_2d(xy_m)
        uv = np.floor((self.p.px(xy) + _SCALE // 2) / _SCALE).astype(int)
        inside = np.all((uv >= 0) & (uv < self.p.n), axis=1)
        out = np.full(len(xy), 255, np.uint8)
        out[inside] = self.grid[uv[inside, 1], uv[inside, 0]]
        return out


def _near_junction(xy: np.ndarray, inters: list[Intersection], extra_m: float) -> bool:
    for it in inters:
        if np.hypot(*(it.xy_m - xy)) < it.radius_m + extra_m:
            return True
    return False


def _make_zones(rng, config: WorldConfig, roads: list[Road], occ: _Occupancy):
    st = config.style
    h = config.size_m / 2.0
    for r in roads:
        occ.p.polyline([occ.grid], [_OCC_ROAD], r.centerline_xy_m,
                       r.width_m + 2 * (r.parking_bay_m + r.sidewalk_m) + 1.0)
    parks = []
    area = config.size_m**2
    n_parks = int(round(st.park_fraction * area / (90.0 * 90.0)))
    for _ in range(n_parks):
        c = rng.uniform(-h * 0.9, h * 0.9, 2)
        w, d = rng.uniform(50, 130, 2)
        poly = np.array([[c[0] - w / 2, c[1] - d / 2], [c[0] + w / 2, c[1] - d / 2],
                         [c[0] + w / 2, c[1] + d / 2], [c[0] - w / 2, c[1] + d / 2]])
        parks.append(poly)
        cells = np.zeros_like(occ.grid)
        occ.p.polygons([cells], [1], [poly])
        occ.grid[(cells > 0) & (occ.grid == _OCC_FREE)] = _OCC_PARK
    lots = []  # (polygon, centre, t, n, half_t, half_n, driveway polygon)
    n_lots = int(round(st.parking_lot_fraction * area / (45.0 * 30.0)))
    for _ in range(n_lots * 4):
        if len(lots) >= n_lots:
            break
        r = roads[int(rng.integers(len(roads)))]
        p = r.centerline_xy_m
        scum = _arclength(p)
        s = rng.uniform(0, scum[-1])
        c0, t = _point_at(p, scum, s)
        side = 1.0 if rng.random() < 0.5 else -1.0
        n = side * np.array([-t[1], t[0]])
        half_t = rng.uniform(12.0, 30.0)
        depth = 5.0 * rng.integers(3, 6) + 1.0  # rows of 5 m stalls around aisles
        front = r.width_m / 2 + r.parking_bay_m + r.sidewalk_m + 2.5
        c = c0 + n * (front + depth / 2)
        poly = _rect(c, t, n, half_t, depth / 2)
        if occ.window_hits(poly, 0.5, allowed=(_OCC_FREE,)):
            continue
        occ.fill(poly, _OCC_LOT)
        # driveway from the carriageway edge to the lot, across bay, sidewalk and verge
        d0 = r.width_m / 2 - 0.2
        drive = _rect(c0 + n * (d0 + front) / 2 + t * (half_t - 4.0) * (1 if rng.random() < 0.5 else -1),
                      t, n, 3.0, (front - d0) / 2 + 0.3)
        lots.append((poly, c, t, n, half_t, depth / 2, drive))
    return parks, lots


def _make_buildings(rng, config: WorldConfig, roads: list[Road], occ: _Occupancy, pal: _Palette) -> list[Building]:
    st = config.style
    hlo, hhi = st.building_height_range_m
    out: list[Building] = []
    for r in roads:
        p = r.centerline_xy_m
        scum = _arclength(p)
        for side in (1.0, -1.0):
            s = rng.uniform(0.0, 15.0)
            while s < scum[-1]:
                frontage = rng.uniform(10.0, 30.0)
                depth = rng.uniform(10.0, 22.0)
                gap = rng.uniform(1.0, 10.0)
                s_mid = s + frontage / 2
                s = s + frontage + gap
                if rng.random() > st.building_density:
                    continue
                c0, t = _point_at(p, scum, s_mid)
                n = side * np.array([-t[1], t[0]])
                setback = rng.uniform(2.0, 9.0)
                front = r.width_m / 2 + r.parking_bay_m + r.sidewalk_m + setback
                c = c0 + n * (front + depth / 2)
                main = _rect(c, t, n, frontage / 2, depth / 2)
                yaw_rad = math.atan2(t[1], t[0])
                parts = [Box(float(c[0]), float(c[1]), yaw_rad, frontage / 2, depth / 2, 0.0, 0.0)]
                outline = main
                if rng.random() < 0.35:
                    fw = frontage * rng.uniform(0.35, 0.55)
                    dw = rng.uniform(6.0, 14.0)
                    end = 1.0 if rng.random() < 0.5 else -1.0
                    cw = c + t * end * (frontage / 2 - fw / 2) + n * (depth / 2 + dw / 2 - 0.25)
                    parts.append(Box(float(cw[0]), float(cw[1]), yaw_rad, fw / 2, dw / 2 + 0.25, 0.0, 0.0))
                    # outline in the (t, n) frame relative to c, then to world
                    F, D = frontage / 2, depth / 2
                    e = end
                    tn = [(-e * F, -D), (e * F, -D), (e * F, D + dw), (e * (F - fw), D + dw), (e * (F - fw), D),
                          (-e * F, D)]
                    outline = np.array([c + a * t + b * n for a, b in tn])
                if occ.window_hits(outline, 1.5):
                    continue
                occ.fill(outline, _OCC_BUILDING)
                height = hlo + (hhi - hlo) * float(rng.beta(1.6, 3.5))
                height = round(height, 2)
                parts = tuple(Box(b.cx_m, b.cy_m, b.yaw_rad, b.half_length_m, b.half_width_m, 0.0, height)
                              for b in parts)
                roof = _jitter(rng, pal.roofs[int(rng.integers(len(pal.roofs)))], 10)
                facade = _jitter(rng, pal.facades[int(rng.integers(len(pal.facades)))], 10)
                storey = round(float(rng.uniform(2.8, 3.6)), 2)
                spacing = round(float(rng.uniform(2.2, 4.0)), 2)
                out.append(Building(len(out), _ccw(outline), height, parts, roof, facade, storey, spacing))
    # second pass: buildings inside the blocks (courtyards, back lots), aligned with the nearest road
    verts = np.concatenate([r.centerline_xy_m for r in roads])
    tang = np.concatenate([_tangents(r.centerline_xy_m) for r in roads])
    h = config.size_m / 2
    attempts = int(st.building_density * config.size_m**2 / 80.0)
    for c in rng.uniform(-h + 10, h - 10, (attempts, 2)):
        t = tang[int(np.argmin(np.hypot(*(verts - c).T)))]
        n = np.array([-t[1], t[0]])
        a, b = rng.uniform(7.0, 20.0), rng.uniform(7.0, 16.0)
        poly = _rect(c, t, n, a / 2, b / 2)
        if occ.window_hits(poly, 1.5):
            continue
        occ.fill(poly, _OCC_BUILDING)
        height = round(hlo + (hhi - hlo) * float(rng.beta(1.4, 4.5)), 2)
        yaw_rad = math.atan2(t[1], t[0])
        parts = (Box(float(c[0]), float(c[1]), yaw_rad, a / 2, b / 2, 0.0, height),)
        roof = _jitter(rng, pal.roofs[int(rng.integers(len(pal.roofs)))], 10)
        facade = _jitter(rng, pal.facades[int(rng.integers(len(pal.facades)))], 10)
        out.append(Building(len(out), _ccw(poly), height, parts, roof, facade,
                            round(float(rng.uniform(2.8, 3.6)), 2), round(float(rng.uniform(2.2, 4.0)), 2)))
    return out


def _car(rng, xy: np.ndarray, yaw_rad: float) -> Car:
    van = rng.random() < 0.12
    length = rng.uniform(4.6, 5.2) if van else rng.uniform(3.9, 4.9)
    width = rng.uniform(1.85, 2.0) if van else rng.uniform(1.7, 1.88)
    height = rng.uniform(1.9, 2.2) if van else rng.uniform(1.38, 1.62)
    col = _CAR_COLOURS[int(rng.choice(len(_CAR_COLOURS), p=_CAR_WEIGHTS / _CAR_WEIGHTS.sum()))]
    return Car(np.asarray(xy, float), float(yaw_rad), round(length, 3), round(width, 3), round(height, 3),
               _jitter(rng, col, 6))


def _make_cars(rng, config: WorldConfig, roads, inters, lots, occ: _Occupancy) -> list[Car]:
    st = config.style
    cars: list[Car] = []
    for r in roads:
        if r.parking_bay_m <= 0:
            continue
        p = r.centerline_xy_m
        scum = _arclength(p)
        for side in (1.0, -1.0):  # +1 left of the polyline direction
            s = rng.uniform(0, 5)
            while s < scum[-1]:
                c0, t = _point_at(p, scum, s)
                n = side * np.array([-t[1], t[0]])
                xy = c0 + n * (r.width_m / 2 + r.parking_bay_m / 2)
                slot = rng.uniform(5.5, 7.0)
                s += slot
                if not np.all(np.abs(xy) < config.size_m / 2 - 3) or _near_junction(xy, inters, 10.0):
                    continue
                if rng.random() > st.parked_car_density:
                    continue
                # right-hand traffic: cars on the right side face the polyline direction
                yaw_rad = math.atan2(t[1], t[0]) if side < 0 else math.atan2(-t[1], -t[0])
                cars.append(_car(rng, xy, yaw_rad))
    for _poly, c, t, n, half_t, half_n, _drive in lots:
        # stalls 2.6 m wide x 5 m deep, in rows facing an aisle; rows along t
        rows = int(round((2 * half_n - 1.0) / 5.0))
        cols = int((2 * half_t - 1.0) // 2.6)
        for i in range(rows):
            if i % 3 == 1:
                continue  # aisle row
            off_n = -half_n + 0.5 + 5.0 * (i + 0.5)
            facing = 1.0 if i % 3 == 0 else -1.0
            for j in range(cols):
                off_t = -half_t + 0.5 + 2.6 * (j + 0.5)
                if rng.random() > 0.25 + 0.6 * st.parked_car_density:
                    continue
                xy = c + off_t * t + off_n * n + rng.uniform(-0.12, 0.12, 2)
                d = facing * n
                cars.append(_car(rng, xy, math.atan2(d[1], d[0]) + rng.uniform(-0.04, 0.04)))
    return cars


def _tree(rng, xy, season: str) -> Tree:
    r = float(rng.uniform(1.8, 4.2))
    bottom = float(rng.uniform(1.8, 3.2))
    top = bottom + float(rng.uniform(max(3.0, 1.4 * r), 2.8 * r + 1.0))
    cols = _CANOPY[season]
    return Tree(np.asarray(xy, float), round(r, 3), round(bottom, 3), round(top, 3),
                round(float(rng.uniform(0.12, 0.28)), 3), _jitter(rng, cols[int(rng.integers(len(cols)))], 10))


def _make_trees(rng, config: WorldConfig, roads, parks, occ: _Occupancy) -> list[Tree]:
    st = config.style
    h = config.size_m / 2.0
    trees: list[Tree] = []
    trunks = np.zeros((0, 2))

    verts = np.concatenate([r.centerline_xy_m for r in roads])
    clear = np.concatenate([np.full(len(r.centerline_xy_m), r.width_m / 2 + r.parking_bay_m + r.sidewalk_m + 0.4)
                            for r in roads])

    def try_add(xy, allowed, margin):
        nonlocal trunks
        if np.any(np.abs(xy) > h - 1.0):
            return
        if np.any(np.hypot(*(verts - xy).T) < clear):
            return  # the trunk would stand on a carriageway, parking bay or sidewalk
        if len(trunks) and np.min(np.hypot(*(trunks - xy).T)) < 3.5:
            return
        box = np.array([xy + [-0.5, -0.5], xy + [0.5, -0.5], xy + [0.5, 0.5], xy + [-0.5, 0.5]])
        if occ.window_hits(box, margin, allowed=allowed):
            return
        t = _tree(rng, xy, st.season)
        trees.append(t)
        trunks = np.vstack([trunks, xy[None]])

    free_or_park = (_OCC_FREE, _OCC_PARK)
    for r in roads:  # street trees just beyond the sidewalk
        p = r.centerline_xy_m
        scum = _arclength(p)
        for side in (1.0, -1.0):
            s = rng.uniform(0, 8)
            while s < scum[-1]:
                c0, t = _point_at(p, scum, s)
                s += rng.uniform(8.0, 15.0)
                if rng.random() > st.tree_density:
                    continue
                n = side * np.array([-t[1], t[0]])
                xy = c0 + n * (r.width_m / 2 + r.parking_bay_m + r.sidewalk_m + 2.0)
                # allowed: the trunk itself may sit on the road-corridor margin cells
                try_add(xy, free_or_park + (_OCC_ROAD,), 0.0)
    for poly in parks:
        lo, hi = poly.min(0), poly.max(0)
        k = int((hi - lo).prod() / 70.0 * st.tree_density)
        for xy in rng.uniform(lo, hi, (k, 2)):
            try_add(xy, free_or_park, 1.0)
    k = int(config.size_m**2 / 1800.0 * st.tree_density)
    for xy in rng.uniform(-h, h, (k, 2)):
        try_add(xy, (_OCC_FREE,), 2.5)
    return trees
