"""The seeded world generator behind :func:`xview_localizer.sim.world.generate_world`.

Steps (each draws from its own child of ``numpy.random.SeedSequence(config.seed)``, so
changing one knob does not reshuffle everything else):

1. roads: a jittered grid of north-south and east-west roads spanning the world (a share
   bent into smooth sinusoidal curves) plus free cubic-Bezier curved roads across it;
2. intersections: exact polyline crossings, merged when closer than 12 m;
3. zones on a 1 m occupancy grid: road corridors (carriageway + bays + sidewalks), parks,
   parking lots along roads;
4. buildings along both sides of every road (setback, frontage, depth, rectangles and
   L-shapes, heights 5-30 m), rejected where they would overlap anything;
5. parked cars in the parking bays and the lots; trees along roads, in parks and yards;
6. the ground rasters at ``albedo_m_per_px``: class map and albedo (grass, dirt, sidewalks,
   parking bays, curbs, asphalt, lane markings, crosswalks, stop lines, parking stalls),
   multiplied by multi-scale texture noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .world_model import (
    GROUND_CLASSES,
    Box,
    Building,
    Car,
    Intersection,
    Road,
    Tree,
    World,
    WorldConfig,
)

_SHIFT = 3  # cv2 fixed-point bits for sub-pixel drawing
_SCALE = 1 << _SHIFT
_OCC_M_PER_PX = 1.0  # occupancy grid resolution

# occupancy codes (coarse grid)
_OCC_FREE, _OCC_ROAD, _OCC_PARK, _OCC_LOT, _OCC_BUILDING, _OCC_TRUNK = 0, 1, 2, 3, 4, 5


# --------------------------------------------------------------------------------------
# palettes
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Palette:
    asphalt: tuple
    sidewalk: tuple
    bay: tuple
    curb: tuple
    marking: tuple
    dirt: tuple
    lot: tuple
    roofs: tuple
    facades: tuple


_PALETTES = {
    "temperate": _Palette(
        asphalt=(78, 80, 84), sidewalk=(168, 164, 156), bay=(120, 116, 110), curb=(190, 188, 182),
        marking=(232, 232, 226), dirt=(128, 106, 80), lot=(92, 92, 94),
        roofs=((150, 72, 52), (120, 60, 50), (92, 92, 98), (70, 72, 78), (160, 158, 150), (110, 120, 110)),
        facades=((210, 200, 180), (225, 220, 205), (180, 160, 140), (200, 190, 170), (160, 150, 145),
                 (215, 205, 190)),
    ),
    "mediterranean": _Palette(
        asphalt=(92, 90, 88), sidewalk=(196, 184, 160), bay=(150, 132, 110), curb=(210, 204, 190),
        marking=(238, 236, 220), dirt=(156, 126, 88), lot=(104, 100, 96),
        roofs=((184, 96, 60), (196, 112, 72), (170, 84, 56), (220, 214, 200), (150, 140, 130)),
        facades=((236, 226, 200), (230, 210, 170), (240, 232, 220), (214, 180, 140), (225, 200, 160)),
    ),
    "nordic": _Palette(
        asphalt=(64, 66, 72), sidewalk=(150, 152, 156), bay=(100, 102, 108), curb=(176, 178, 182),
        marking=(226, 228, 232), dirt=(104, 92, 80), lot=(76, 78, 84),
        roofs=((60, 62, 70), (40, 44, 52), (120, 40, 36), (90, 96, 104), (50, 70, 60)),
        facades=((150, 50, 40), (200, 196, 180), (60, 80, 100), (220, 200, 140), (180, 184, 188),
                 (120, 130, 120)),
    ),
    "industrial": _Palette(
        asphalt=(86, 86, 86), sidewalk=(150, 150, 146), bay=(110, 110, 108), curb=(176, 176, 172),
        marking=(236, 230, 200), dirt=(120, 110, 95), lot=(100, 100, 100),
        roofs=((140, 142, 146), (170, 172, 176), (110, 112, 118), (90, 96, 90), (180, 176, 168)),
        facades=((150, 150, 150), (170, 160, 150), (120, 126, 134), (190, 190, 186), (140, 120, 110)),
    ),
}

_GRASS = {"summer": (92, 116, 62), "autumn": (116, 116, 70), "winter": (128, 124, 106)}
_CANOPY = {
    "summer": ((58, 96, 40), (70, 110, 46), (48, 82, 38), (80, 116, 52)),
    "autumn": ((170, 96, 34), (190, 140, 40), (150, 60, 30), (90, 110, 44), (200, 160, 60)),
    "winter": ((104, 92, 80), (96, 88, 78), (40, 62, 44), (112, 102, 90)),
}
_CAR_COLOURS = ((235, 235, 235), (20, 20, 22), (160, 162, 166), (100, 102, 108), (30, 50, 110),
                (150, 20, 20), (200, 200, 196), (60, 60, 64), (20, 70, 50), (210, 180, 60))
_CAR_WEIGHTS = np.array([0.22, 0.2, 0.15, 0.13, 0.08, 0.07, 0.05, 0.04, 0.03, 0.03])


def _jitter(rng: np.random.Generator, rgb: tuple, amount: float = 12.0) -> tuple[int, int, int]:
    c = np.asarray(rgb, float) * (1.0 + rng.uniform(-0.06, 0.06)) + rng.uniform(-amount, amount, 3)
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))


# --------------------------------------------------------------------------------------
# polyline helpers
# --------------------------------------------------------------------------------------
def _arclength(p: np.ndarray) -> np.ndarray:
    d = np.hypot(*np.diff(p, axis=0).T)
    return np.concatenate([[0.0], np.cumsum(d)])


def _resample(p: np.ndarray, step_m: float) -> np.ndarray:
    s = _arclength(p)
    n = max(2, int(math.ceil(s[-1] / step_m)) + 1)
    t = np.linspace(0.0, s[-1], n)
    return np.stack([np.interp(t, s, p[:, 0]), np.interp(t, s, p[:, 1])], axis=1)


def _tangents(p: np.ndarray) -> np.ndarray:
    t = np.gradient(p, axis=0)
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def _left_normals(p: np.ndarray) -> np.ndarray:
    t = _tangents(p)
    return np.stack([-t[:, 1], t[:, 0]], axis=1)


def _point_at(p: np.ndarray, s_cum: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Point and unit tangent at arc length ``s`` (clamped)."""
    s = float(np.clip(s, 0.0, s_cum[-1]))
    i = int(np.clip(np.searchsorted(s_cum, s) - 1, 0, len(p) - 2))
    seg = p[i + 1] - p[i]
    L = max(float(np.hypot(*seg)), 1e-12)
    f = (s - s_cum[i]) / L
    return p[i] + f * seg, seg / L


class _Painter:
    """Draws world-metre geometry into rasters of the world georef (sub-pixel, cv2)."""

    def __init__(self, size_m: float, m_per_px: float) -> None:
        self.h = size_m / 2.0
        self.res = m_per_px
        self.n = int(round(size_m / m_per_px))
        self.aa: set[int] = set()  # ids of single-channel images drawn anti-aliased

    def lt(self, img: np.ndarray) -> int:
        """Anti-aliased lines for colour images (and flagged masks), hard edges for class maps."""
        return cv2.LINE_AA if (img.ndim == 3 or id(img) in self.aa) else cv2.LINE_8

    def px(self, xy_m: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy_m, float)
        u = (xy[..., 0] + self.h) / self.res - 0.5
        v = (self.h - xy[..., 1]) / self.res - 0.5
        return np.round(np.stack([u, v], axis=-1) * _SCALE).astype(np.int32)

    def thick(self, width_m: float) -> int:
        return max(1, int(round(width_m / self.res)))

    def polyline(self, imgs, colours, p_m: np.ndarray, width_m: float) -> None:
        pts = [self.px(p_m)]
        for img, col in zip(imgs, colours):
            cv2.polylines(img, pts, False, col, self.thick(width_m), self.lt(img), _SHIFT)

    def segments(self, imgs, colours, a_m: np.ndarray, b_m: np.ndarray, width_m: float) -> None:
        if len(a_m) == 0:
            return
        pa, pb = self.px(a_m), self.px(b_m)
        pts = [np.stack([pa[i], pb[i]]) for i in range(len(pa))]
        for img, col in zip(imgs, colours):
            cv2.polylines(img, pts, False, col, self.thick(width_m), self.lt(img), _SHIFT)

    def polygons(self, imgs, colours, polys_m: list) -> None:
        if not polys_m:
            return
        pts = [self.px(p) for p in polys_m]
        for img, col in zip(imgs, colours):
            cv2.fillPoly(img, pts, col, self.lt(img), _SHIFT)

    def circles(self, imgs, colours, centres_m: np.ndarray, radii_m: np.ndarray) -> None:
        c = self.px(centres_m)
        for (u, v), r in zip(c, radii_m):
            rp = int(round(r / self.res * _SCALE))
            for img, col in zip(imgs, colours):
                cv2.circle(img, (int(u), int(v)), rp, col, -1, self.lt(img), _SHIFT)


# --------------------------------------------------------------------------------------
# roads and intersections
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# zones, buildings, cars, trees
# --------------------------------------------------------------------------------------
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


def _rect(c: np.ndarray, t: np.ndarray, n: np.ndarray, half_t: float, half_n: float) -> np.ndarray:
    return np.array([c + half_t * t + half_n * n, c - half_t * t + half_n * n,
                     c - half_t * t - half_n * n, c + half_t * t - half_n * n])


def _ccw(poly: np.ndarray) -> np.ndarray:
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
    return poly if area > 0 else poly[::-1].copy()


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


# --------------------------------------------------------------------------------------
# ground rasters
# --------------------------------------------------------------------------------------
def _dashes(p: np.ndarray, offset_m: float, dash_m: float, gap_m: float, phase_m: float):
    q = p + offset_m * _left_normals(p)
    scum = _arclength(q)
    starts = np.arange(phase_m, scum[-1] - dash_m, dash_m + gap_m)
    a = np.stack([np.interp(starts, scum, q[:, 0]), np.interp(starts, scum, q[:, 1])], 1)
    b = np.stack([np.interp(starts + dash_m, scum, q[:, 0]), np.interp(starts + dash_m, scum, q[:, 1])], 1)
    return a, b


def _noise_field(rng, n: int, cells: int, interp) -> np.ndarray:
    small = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(small, (n, n), interpolation=interp)


def _paint_ground(rng, config: WorldConfig, roads, inters, arms_all, parks, lots, pal: _Palette):
    st = config.style
    P = _Painter(config.size_m, config.albedo_m_per_px)
    n = P.n
    gc = GROUND_CLASSES
    base = np.empty((n, n, 3), np.uint8)
    base[:] = _GRASS[st.season]
    cls = np.full((n, n), gc["grass"], np.uint8)
    h = config.size_m / 2

    # dirt patches and worn grass
    k = int(config.size_m**2 / 6000.0)
    for c, ax, ang in zip(rng.uniform(-h, h, (k, 2)), rng.uniform(1.5, 8.0, (k, 2)), rng.uniform(0, 180, k)):
        uv = P.px(c)
        col = _jitter(rng, pal.dirt, 10) if rng.random() < 0.5 else _jitter(rng, _GRASS[st.season], 18)
        axes = (int(ax[0] / P.res * _SCALE), int(ax[1] / P.res * _SCALE))
        cv2.ellipse(base, (int(uv[0]), int(uv[1])), axes, float(ang), 0, 360, col, -1, cv2.LINE_8, _SHIFT)
    # park paths (dirt) across parks
    for poly in parks:
        lo, hi = poly.min(0), poly.max(0)
        a = lo + rng.uniform(0, 1, 2) * (hi - lo) * [1, 0]
        b = lo + rng.uniform(0, 1, 2) * (hi - lo) * [1, 0] + [0, hi[1] - lo[1]]
        P.polyline([base, cls], [_jitter(rng, pal.dirt, 6), gc["dirt"]], np.array([a, (a + b) / 2 + rng.uniform(-10, 10, 2), b]), 2.5)

    # parking lots: asphalt + stall lines
    for poly, c, t, nn, half_t, half_n, _drive in lots:
        P.polygons([base, cls], [_jitter(rng, pal.lot, 6), gc["parking"]], [poly])
        rows = int(round((2 * half_n - 1.0) / 5.0))
        cols = int((2 * half_t - 1.0) // 2.6)
        a_list, b_list = [], []
        for i in range(rows):
            if i % 3 == 1:
                continue
            n0 = -half_n + 0.5 + 5.0 * i
            for j in range(cols + 1):
                off_t = -half_t + 0.5 + 2.6 * j
                a_list.append(c + off_t * t + (n0 + 0.3) * nn)
                b_list.append(c + off_t * t + (n0 + 4.8) * nn)
        if a_list:
            P.segments([base, cls], [pal.marking, gc["marking"]], np.array(a_list), np.array(b_list), 0.12)

    # road corridors, layer by layer across all roads
    for r in roads:
        P.polyline([base, cls], [_jitter(rng, pal.sidewalk, 5), gc["sidewalk"]], r.centerline_xy_m,
                   r.width_m + 2 * (r.parking_bay_m + r.sidewalk_m))
    for r in roads:
        if r.parking_bay_m > 0:
            P.polyline([base, cls], [pal.bay, gc["parking_bay"]], r.centerline_xy_m, r.width_m + 2 * r.parking_bay_m)
    if lots:
        P.polygons([base, cls], [pal.lot, gc["parking"]], [lot[6] for lot in lots])
    for r in roads:
        P.polyline([base, cls], [pal.curb, gc["curb"]], r.centerline_xy_m, r.width_m + 0.5)
    for r in roads:
        P.polyline([base, cls], [_jitter(rng, pal.asphalt, 5), gc["road"]], r.centerline_xy_m, r.width_m)

    # lane markings into a mask; cleared inside junctions; then crosswalks and stop lines
    mark = np.zeros((n, n), np.uint8)  # anti-aliased coverage 0..255
    P.aa.add(id(mark))
    for r in roads:
        p = r.centerline_xy_m
        hw = r.width_m / 2
        if r.lanes == 2:
            a, b = _dashes(p, 0.0, 3.0, 6.0, float(rng.uniform(0, 9)))
            P.segments([mark], [255], a, b, 0.15)
        else:
            for off in (-0.15, 0.15):
                P.polyline([mark], [255], p + off * _left_normals(p), 0.12)
            for off in (-hw / 2, hw / 2):
                a, b = _dashes(p, off, 3.0, 6.0, float(rng.uniform(0, 9)))
                P.segments([mark], [255], a, b, 0.15)
        if r.width_m >= 7.0:
            for off in (-(hw - 0.3), hw - 0.3):
                P.polyline([mark], [255], p + off * _left_normals(p), 0.15)
    for it in inters:
        P.circles([mark], [0], it.xy_m[None], np.array([it.radius_m]))
    stripes, stops = [], []
    for arms in arms_all:
        for arm in arms:
            r = arm.road
            p = r.centerline_xy_m
            scum = _arclength(p)
            hw = r.width_m / 2
            s0 = arm.s_m + arm.direction * (arm.d_m + 0.5)
            c, t = _point_at(p, scum, s0 + arm.direction * 1.5)
            a = arm.direction * t  # pointing away from the junction
            nl = np.array([-a[1], a[0]])
            for off in np.arange(-hw + 0.6, hw - 0.5, 1.0):
                stripes.append(_rect(c + off * nl, a, nl, 1.5, 0.25))
            # stop line across the incoming lanes (on the left of the outward direction)
            cs, _ = _point_at(p, scum, s0 + arm.direction * 4.0)
            stops.append(_rect(cs + nl * hw / 2, a, nl, 0.2, hw / 2 - 0.1))
    P.polygons([mark], [255], stripes + stops)
    cls[mark >= 128] = gc["marking"]
    mcol = np.asarray(pal.marking, np.float32)
    for v0 in range(0, n, 1000):
        a = mark[v0:v0 + 1000, :, None].astype(np.float32) / 255.0
        base[v0:v0 + 1000] = (base[v0:v0 + 1000] * (1.0 - a) + mcol * a + 0.5).astype(np.uint8)
    del mark

    # texture noise: low (~20 m), mid (~2 m), fine (per-pixel, two coprime tiles), per class
    amp = 0.04 + 0.22 * st.texture_noise
    albedo = np.empty_like(base)
    low = _noise_field(rng, n, max(4, int(config.size_m / 20)), cv2.INTER_CUBIC)
    mid = _noise_field(rng, n, max(8, int(config.size_m / 2)), cv2.INTER_CUBIC)
    t1 = rng.standard_normal((509, 509)).astype(np.float32)
    t2 = rng.standard_normal((521, 521)).astype(np.float32)
    class_gain = np.zeros(256, np.float32)
    class_fine = np.zeros(256, np.float32)
    for name, g, f in (("grass", 1.3, 0.9), ("road", 0.7, 0.7), ("marking", 0.5, 0.5), ("sidewalk", 0.5, 0.6),
                       ("curb", 0.3, 0.4), ("parking", 0.7, 0.7), ("dirt", 1.0, 0.9),
                       ("parking_bay", 0.5, 0.7), ("plaza", 0.5, 0.6)):
        class_gain[gc[name]] = g
        class_fine[gc[name]] = f
    strip = 500
    for v0 in range(0, n, strip):
        v1 = min(n, v0 + strip)
        rows = np.arange(v0, v1)
        cols = np.arange(n)
        fine = 0.5 * (t1[(rows % 509)[:, None], (cols % 509)[None, :]] + t2[(rows % 521)[:, None], (cols % 521)[None, :]])
        c = cls[v0:v1]
        f = 1.0 + amp * (class_gain[c] * (0.6 * low[v0:v1] + 0.5 * mid[v0:v1]) + class_fine[c] * 0.45 * fine)
        albedo[v0:v1] = np.clip(base[v0:v1].astype(np.float32) * f[..., None], 0, 255).astype(np.uint8)
    return albedo, cls


def build_world(config: WorldConfig) -> World:
    """Generate the world described by ``config``; deterministic in ``config``."""
    ss = np.random.SeedSequence(config.seed)
    r_roads, r_zones, r_bld, r_cars, r_trees, r_paint = (np.random.default_rng(s) for s in ss.spawn(6))
    pal = _PALETTES[config.style.palette]
    roads = _make_roads(r_roads, config)
    inters, arms = _make_intersections(roads, config.size_m)
    occ = _Occupancy(config.size_m)
    parks, lots = _make_zones(r_zones, config, roads, occ)
    buildings = _make_buildings(r_bld, config, roads, occ, pal)
    cars = _make_cars(r_cars, config, roads, inters, lots, occ)
    trees = _make_trees(r_trees, config, roads, parks, occ)
    albedo, cls = _paint_ground(r_paint, config, roads, inters, arms, parks, lots, pal)
    return World(config, roads, inters, buildings, trees, cars, albedo, cls)
