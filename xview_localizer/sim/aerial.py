"""Aerial view of a synthetic world: orthophoto renderer and Web-Mercator XYZ tile pyramid.

Orthophoto
----------
:func:`render_orthophoto` paints a north-up orthographic image on the grid of the world
rasters (``world.georef``: pixel centre ``[v, u]`` at ``x_m = -size/2 + (u + 0.5) m_per_px``,
``y_m = size/2 - (v + 0.5) m_per_px``). It deliberately looks different from the ground
camera: its own white balance / gamma / haze, cast shadows of buildings, trees and cars for
a sun direction (:class:`AerialStyle`), roofs (flat with parapets or gabled, shaded by the
sun) that the ground camera never sees, and tree canopies drawn over whatever lies beneath
them (objects are painted in order of their top height, a painter's z-buffer).

Tile pyramid
------------
:func:`write_tile_pyramid` writes ``out_dir/{z}/{x}/{y}.png`` (256-px XYZ tiles, y from the
north) for ``zoom_min..zoom_max`` and, by default, the same tiles as MBTiles
(``out_dir.parent / "tiles.mbtiles"``, rows in TMS order) plus ``out_dir/metadata.json``.
At ``zoom_max`` each tile pixel centre (global pixel ``i + 0.5``) is mapped exactly:
global px -> WGS84 (:func:`xview_localizer.core.geo.global_px_to_latlon`) -> world ENU
(:meth:`LocalEnu.forward`) -> orthophoto px, then sampled bilinearly (``cv2.remap``). The
exact chain is evaluated on a lattice every 8 px and linearly interpolated in between; the
interpolation error of this smooth map is below 1e-6 px (checked in the tests). Lower zooms
are 2x area-downsampled from the zoom above. Pixels outside the world get ``fill_rgb``.
"""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ..core.errors import ConfigError
from ..core.geo import TILE_SIZE_PX, global_px_to_latlon, latlon_to_global_px
from .world import RasterGeoref, World

_SHIFT = 3
_SCALE = 1 << _SHIFT
_LATTICE_PX = 8


@dataclass(frozen=True)
class AerialStyle:
    """Appearance of the aerial view.

    sun_azimuth_deg: compass direction TOWARDS the sun (0 = north, 90 = east, clockwise).
    sun_elevation_deg: in (5, 90]. shadow_strength: in [0, 1] (fraction of light removed).
    white_balance: per-channel RGB gains. gamma: applied after the gains. haze_rgb: added.
    blur_sigma_px: optical blur of the camera. fill_rgb: colour outside the world.
    lean_m_per_m: (east, north) image displacement, in metres, of a point per metre of its height
    (off-nadir view: roofs and canopies lean away from the footprint, facades show; (0, 0) =
    true orthophoto). canopy_alpha: opacity of tree crowns in [0, 1] (leaf-off trees < 1).
    """

    sun_azimuth_deg: float = 150.0
    sun_elevation_deg: float = 48.0
    shadow_strength: float = 0.55
    white_balance: tuple[float, float, float] = (1.06, 1.0, 0.88)
    gamma: float = 0.9
    haze_rgb: tuple[int, int, int] = (8, 12, 20)
    blur_sigma_px: float = 0.6
    fill_rgb: tuple[int, int, int] = (128, 128, 128)
    lean_m_per_m: tuple[float, float] = (0.0, 0.0)
    canopy_alpha: float = 1.0

    def __post_init__(self) -> None:
        if len(self.lean_m_per_m) != 2 or not all(math.isfinite(v) and abs(v) <= 1.0 for v in self.lean_m_per_m):
            raise ConfigError(f"AerialStyle.lean_m_per_m must be 2 finite values in [-1, 1], got {self.lean_m_per_m!r}")
        if not (0.0 <= self.canopy_alpha <= 1.0):
            raise ConfigError(f"AerialStyle.canopy_alpha must be in [0, 1], got {self.canopy_alpha!r}")
        if not (5.0 < self.sun_elevation_deg <= 90.0):
            raise ConfigError(f"AerialStyle.sun_elevation_deg must be in (5, 90], got {self.sun_elevation_deg!r}")
        if not (0.0 <= self.shadow_strength <= 1.0):
            raise ConfigError(f"AerialStyle.shadow_strength must be in [0, 1], got {self.shadow_strength!r}")
        if len(self.white_balance) != 3 or not all(0.2 <= g <= 5.0 for g in self.white_balance):
            raise ConfigError(f"AerialStyle.white_balance must be 3 gains in [0.2, 5], got {self.white_balance!r}")
        if not (0.2 <= self.gamma <= 5.0):
            raise ConfigError(f"AerialStyle.gamma must be in [0.2, 5], got {self.gamma!r}")
        if not (0.0 <= self.blur_sigma_px <= 5.0):
            raise ConfigError(f"AerialStyle.blur_sigma_px must be in [0, 5], got {self.blur_sigma_px!r}")

    def sun_dir_enu(self) -> np.ndarray:
        """Unit vector (3,) towards the sun in ENU."""
        az, el = math.radians(self.sun_azimuth_deg), math.radians(self.sun_elevation_deg)
        return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])

    def shadow_offset_per_m(self) -> np.ndarray:
        """(2,) ground displacement (ENU metres) of the shadow of a point per metre of height."""
        az, el = math.radians(self.sun_azimuth_deg), math.radians(self.sun_elevation_deg)
        return -np.array([math.sin(az), math.cos(az)]) / math.tan(el)


class _Canvas:
    """World metres -> fixed-point pixels; ``shift_m`` moves everything drawn (building lean)."""

    def __init__(self, georef: RasterGeoref, shift_m: tuple[float, float] = (0.0, 0.0)) -> None:
        self.g = georef
        self.shift_m = np.asarray(shift_m, float)

    def shifted(self, shift_m: np.ndarray) -> "_Canvas":
        return _Canvas(self.g, tuple(np.asarray(shift_m, float)))

    def px(self, xy_m: np.ndarray) -> np.ndarray:
        uv = self.g.xy_to_px(np.asarray(xy_m, float) + self.shift_m)
        return np.round(uv * _SCALE).astype(np.int32)

    def r(self, r_m: float) -> int:
        return max(1, int(round(r_m / self.g.m_per_px * _SCALE)))


def _shade(rgb, f: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.asarray(rgb, float) * f, 0, 255))


def _box_poly(b, shrink_m: float = 0.0) -> np.ndarray:
    c, s = math.cos(b.yaw_rad), math.sin(b.yaw_rad)
    hl, hw = max(b.half_length_m - shrink_m, 0.05), max(b.half_width_m - shrink_m, 0.05)
    local = np.array([[hl, hw], [-hl, hw], [-hl, -hw], [hl, -hw]])
    return local @ np.array([[c, s], [-s, c]]) + [b.cx_m, b.cy_m]


def _paint_shadows(world: World, canvas: _Canvas, style: AerialStyle) -> np.ndarray:
    n = world.georef.width_px
    mask = np.zeros((n, n), np.uint8)
    off = style.shadow_offset_per_m()
    polys = []
    boxes = [p for b in world.buildings for p in b.parts] + [bx for c in world.cars for bx in c.boxes()]
    for b in boxes:
        base = _box_poly(b)
        hull = cv2.convexHull(np.vstack([base + off * b.z0_m, base + off * b.z1_m]).astype(np.float32))
        polys.append(canvas.px(hull.reshape(-1, 2)))
    if polys:
        cv2.fillPoly(mask, polys, 255, cv2.LINE_8, _SHIFT)
    along = off / max(np.linalg.norm(off), 1e-9)
    ang = math.degrees(math.atan2(-along[1], along[0]))  # image v is south
    for t in world.trees:
        rz = 0.5 * (t.canopy_top_m - t.canopy_bottom_m)
        cz = 0.5 * (t.canopy_top_m + t.canopy_bottom_m)
        c = canvas.px(t.xy_m + off * cz)
        a_along = math.hypot(t.canopy_radius_m, rz * np.linalg.norm(off))
        axes = (canvas.r(a_along), canvas.r(t.canopy_radius_m))
        cv2.ellipse(mask, (int(c[0]), int(c[1])), axes, ang, 0, 360, 255, -1, cv2.LINE_8, _SHIFT)
        trunk = canvas.px(np.array([t.xy_m, t.xy_m + off * t.canopy_bottom_m]))
        cv2.polylines(mask, [trunk], False, 255, max(1, int(round(2 * t.trunk_radius_m / canvas.g.m_per_px))),
                      cv2.LINE_8, _SHIFT)
    return cv2.GaussianBlur(mask, (0, 0), 1.5)


def _paint_facades(img, canvas: _Canvas, b, lean: np.ndarray) -> None:
    """Off-nadir view: the visible walls, between the footprint and the leaning roof outline."""
    facade = np.asarray(b.facade_rgb, float)
    for part in b.parts:
        base = _box_poly(part)
        hull = cv2.convexHull(np.vstack([base, base + lean * b.height_m]).astype(np.float32)).reshape(-1, 2)
        cv2.fillPoly(img, [canvas.px(hull)], _shade(facade, 0.78), cv2.LINE_8, _SHIFT)


def _paint_building(img, canvas: _Canvas, b, sun: np.ndarray, rng: np.random.Generator) -> None:
    roof = np.asarray(b.roof_rgb, float)
    grey = float(np.std(roof)) < 12.0
    flat = grey or b.height_m > 14.0 or len(b.parts) > 1
    if flat:
        for part in b.parts:
            cv2.fillPoly(img, [canvas.px(_box_poly(part))], _shade(roof, 0.85), cv2.LINE_8, _SHIFT)
        for part in b.parts:
            cv2.fillPoly(img, [canvas.px(_box_poly(part, 0.45))], _shade(roof, 1.0), cv2.LINE_8, _SHIFT)
        # rooftop units (HVAC boxes, skylights)
        for part in b.parts:
            for _ in range(int(rng.integers(0, 4))):
                u = rng.uniform(-0.6, 0.6, 2) * [part.half_length_m, part.half_width_m]
                c, s = math.cos(part.yaw_rad), math.sin(part.yaw_rad)
                xy = np.array([part.cx_m + c * u[0] - s * u[1], part.cy_m + s * u[0] + c * u[1]])
                sz = rng.uniform(0.8, 2.5)
                poly = np.array([[-sz, -sz], [sz, -sz], [sz, sz], [-sz, sz]]) * 0.5 @ np.array([[c, s], [-s, c]]) + xy
                cv2.fillPoly(img, [canvas.px(poly)], _shade(roof, rng.uniform(0.7, 1.3)), cv2.LINE_8, _SHIFT)
        return
    # gabled roof along the long axis: two slopes shaded by the sun
    part = b.parts[0]
    c, s = math.cos(part.yaw_rad), math.sin(part.yaw_rad)
    if part.half_length_m >= part.half_width_m:
        ridge_dir, across = np.array([c, s]), np.array([-s, c])
        hl, hw = part.half_length_m, part.half_width_m
    else:
        ridge_dir, across = np.array([-s, c]), np.array([c, s])
        hl, hw = part.half_width_m, part.half_length_m
    ctr = np.array([part.cx_m, part.cy_m])
    tilt = math.radians(35.0)
    for side in (1.0, -1.0):
        normal = np.array([*(side * across * math.sin(tilt)), math.cos(tilt)])
        lam = 0.55 + 0.55 * max(0.0, float(normal @ sun))
        poly = np.array([ctr + hl * ridge_dir, ctr - hl * ridge_dir,
                         ctr - hl * ridge_dir + side * hw * across, ctr + hl * ridge_dir + side * hw * across])
        cv2.fillPoly(img, [canvas.px(poly)], _shade(roof, lam), cv2.LINE_8, _SHIFT)
    ridge = canvas.px(np.array([ctr + hl * ridge_dir, ctr - hl * ridge_dir]))
    cv2.polylines(img, [ridge], False, _shade(roof, 0.75), 1, cv2.LINE_8, _SHIFT)


def _paint_tree_blended(img, canvas: _Canvas, t, sun: np.ndarray, rng: np.random.Generator, alpha: float) -> None:
    """A crown with opacity ``alpha`` (leaf-off trees show the ground through them)."""
    if alpha >= 1.0:
        _paint_tree(img, canvas, t, sun, rng)
        return
    c = canvas.px(t.xy_m) / _SCALE
    r = int(math.ceil(t.canopy_radius_m * 1.2 / canvas.g.m_per_px)) + 2
    u0, v0 = max(0, int(c[0]) - r), max(0, int(c[1]) - r)
    u1, v1 = min(img.shape[1], int(c[0]) + r + 1), min(img.shape[0], int(c[1]) + r + 1)
    if u1 <= u0 or v1 <= v0:
        _paint_tree(np.zeros((1, 1, 3), np.uint8), canvas, t, sun, rng)  # keep the random stream aligned
        return
    roi = img[v0:v1, u0:u1]
    layer = roi.copy()
    local = canvas.shifted(canvas.shift_m - np.array([u0, -v0], float) * canvas.g.m_per_px)
    _paint_tree(layer, local, t, sun, rng)
    roi[:] = np.clip(roi.astype(np.float32) * (1.0 - alpha) + layer.astype(np.float32) * alpha + 0.5, 0, 255).astype(np.uint8)


def _paint_tree(img, canvas: _Canvas, t, sun: np.ndarray, rng: np.random.Generator) -> None:
    col = np.asarray(t.canopy_rgb, float)
    c = canvas.px(t.xy_m)
    r = t.canopy_radius_m
    cv2.circle(img, (int(c[0]), int(c[1])), canvas.r(r), _shade(col, 0.72), -1, cv2.LINE_8, _SHIFT)
    hl = t.xy_m + sun[:2] / max(np.linalg.norm(sun[:2]), 1e-9) * 0.25 * r
    ch = canvas.px(hl)
    cv2.circle(img, (int(ch[0]), int(ch[1])), canvas.r(0.72 * r), _shade(col, 0.95), -1, cv2.LINE_8, _SHIFT)
    for _ in range(6):
        d = rng.uniform(-0.6, 0.6, 2) * r
        cc = canvas.px(t.xy_m + d)
        cv2.circle(img, (int(cc[0]), int(cc[1])), canvas.r(rng.uniform(0.2, 0.4) * r),
                   _shade(col, rng.uniform(0.75, 1.15)), -1, cv2.LINE_8, _SHIFT)


def _paint_car(img, canvas: _Canvas, car) -> None:
    body, cabin = car.boxes()
    col = np.asarray(car.rgb, float)
    cv2.fillPoly(img, [canvas.px(_box_poly(body))], _shade(col, 0.9), cv2.LINE_8, _SHIFT)
    cv2.fillPoly(img, [canvas.px(_box_poly(cabin))], (40, 46, 54), cv2.LINE_8, _SHIFT)
    roof = _box_poly(type(cabin)(cabin.cx_m, cabin.cy_m, cabin.yaw_rad, 0.7 * cabin.half_length_m,
                                 0.85 * cabin.half_width_m, 0, 0))
    cv2.fillPoly(img, [canvas.px(roof)], _shade(col, 1.0), cv2.LINE_8, _SHIFT)


def _colour_lut(style: AerialStyle) -> np.ndarray:
    x = np.arange(256, dtype=float) / 255.0
    lut = np.empty((256, 1, 3), np.uint8)
    for ch in range(3):
        y = np.clip(x * style.white_balance[ch], 0, 1) ** style.gamma * 255.0 + style.haze_rgb[ch]
        lut[:, 0, ch] = np.clip(np.round(y), 0, 255).astype(np.uint8)
    return lut


def render_orthophoto(world: World, m_per_px: Optional[float] = None,
                      style: AerialStyle = AerialStyle()) -> tuple[np.ndarray, RasterGeoref]:
    """Render the world from straight above, north-up.

    Returns ``(rgb (H, W, 3) uint8, georef)``; ``georef`` maps pixel centres to world ENU
    (see :class:`RasterGeoref`). ``m_per_px`` defaults to the world raster resolution; other
    values are area-resampled from it (the world size must be a whole number of pixels).
    """
    g = world.georef
    canvas = _Canvas(g)
    sun = style.sun_dir_enu()
    shadow = _paint_shadows(world, canvas, style)
    img = np.empty_like(world.albedo_rgb)
    n = g.width_px
    k = style.shadow_strength / 255.0
    for v0 in range(0, n, 1000):
        v1 = min(n, v0 + 1000)
        f = 1.0 - k * shadow[v0:v1].astype(np.float32)
        img[v0:v1] = (world.albedo_rgb[v0:v1].astype(np.float32) * f[..., None]).astype(np.uint8)
    del shadow
    # painter's algorithm by top height: cars, trees and buildings
    items = [(c.height_m, 0, i) for i, c in enumerate(world.cars)]
    items += [(t.canopy_top_m, 1, i) for i, t in enumerate(world.trees)]
    items += [(b.height_m, 2, i) for i, b in enumerate(world.buildings)]
    items.sort(key=lambda it: (it[0], it[1], it[2]))
    rng = np.random.default_rng([world.config.seed, 7])
    lean = np.asarray(style.lean_m_per_m, float)
    leaning = bool(np.any(lean != 0.0))
    for _, kind, i in items:
        if kind == 0:
            car = world.cars[i]
            _paint_car(img, canvas.shifted(lean * 0.5 * car.height_m) if leaning else canvas, car)
        elif kind == 1:
            t = world.trees[i]
            cv = canvas.shifted(lean * 0.5 * (t.canopy_bottom_m + t.canopy_top_m)) if leaning else canvas
            _paint_tree_blended(img, cv, t, sun, rng, style.canopy_alpha)
        else:
            b = world.buildings[i]
            if leaning:
                _paint_facades(img, canvas, b, lean)
            _paint_building(img, canvas.shifted(lean * b.height_m) if leaning else canvas, b, sun, rng)
    img = cv2.LUT(img, _colour_lut(style))
    if style.blur_sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), style.blur_sigma_px)
    if m_per_px is None or abs(m_per_px - g.m_per_px) < 1e-12:
        return img, g
    if m_per_px <= 0:
        raise ConfigError(f"render_orthophoto: m_per_px must be > 0, got {m_per_px!r}")
    size_px = world.size_m / m_per_px
    if abs(size_px - round(size_px)) > 1e-6:
        raise ConfigError(f"render_orthophoto: size_m {world.size_m} is not a multiple of m_per_px {m_per_px}")
    size_px = int(round(size_px))
    interp = cv2.INTER_AREA if m_per_px > g.m_per_px else cv2.INTER_LINEAR
    out = cv2.resize(img, (size_px, size_px), interpolation=interp)
    return out, RasterGeoref(g.x_min_m, g.y_max_m, float(m_per_px), size_px, size_px)


# --------------------------------------------------------------------------------------
# tile pyramid
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PyramidInfo:
    """What :func:`write_tile_pyramid` wrote. ``tile_ranges[z] = (x0, y0, x1, y1)`` inclusive."""

    out_dir: Path
    mbtiles_path: Optional[Path]
    zoom_min: int
    zoom_max: int
    tile_count: int
    tile_ranges: dict = field(default_factory=dict)
    image_format: str = "png"

    @property
    def url_template(self) -> str:
        """A ``file://`` template the tile sources read."""
        return f"file://{self.out_dir.resolve()}/{{z}}/{{x}}/{{y}}.{self.image_format}"


def world_bounds_latlon(world: World, margin_m: float = 0.0) -> tuple[float, float, float, float]:
    """(west_lon, south_lat, east_lon, north_lat) of the world square grown by ``margin_m`` on
    every side, degrees."""
    h = world.half_size_m + float(margin_m)
    t = np.linspace(-h, h, 41)
    e = np.concatenate([t, t, np.full_like(t, -h), np.full_like(t, h)])
    nn = np.concatenate([np.full_like(t, -h), np.full_like(t, h), t, t])
    lat, lon = world.enu.inverse(e, nn)
    return float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))


def tile_range(world: World, zoom: int, margin_m: float = 0.0) -> tuple[int, int, int, int]:
    """Inclusive XYZ tile range (x0, y0, x1, y1) covering the world (grown by ``margin_m``) at
    ``zoom``."""
    w, s, e, n = world_bounds_latlon(world, margin_m)
    gx, gy = latlon_to_global_px(np.array([n, s]), np.array([w, e]), zoom)
    x0, x1 = int(math.floor(gx[0] / TILE_SIZE_PX)), int(math.floor(gx[1] / TILE_SIZE_PX))
    y0, y1 = int(math.floor(gy[0] / TILE_SIZE_PX)), int(math.floor(gy[1] / TILE_SIZE_PX))
    return x0, y0, x1, y1


def mercator_to_ortho_px(world: World, georef: RasterGeoref, gx: np.ndarray, gy: np.ndarray,
                         zoom: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact chain: global Web-Mercator px (x, y) at ``zoom`` -> WGS84 -> world ENU ->
    orthophoto px (u, v). Arrays of any (equal) shape."""
    lat, lon = global_px_to_latlon(gx, gy, zoom)
    e, n = world.enu.forward(lat, lon)
    uv = georef.xy_to_px(np.stack([np.asarray(e), np.asarray(n)], axis=-1))
    return uv[..., 0], uv[..., 1]


def _mosaic_maps(world: World, georef: RasterGeoref, zoom: int, x0: int, y0: int, nx: int, ny: int):
    """Lattice (every 8 px) of the exact mapping for a mosaic of nx x ny tiles."""
    L = _LATTICE_PX
    cols = np.arange(0, nx * TILE_SIZE_PX + 1, L, dtype=float)
    rows = np.arange(0, ny * TILE_SIZE_PX + 1, L, dtype=float)
    gx = x0 * TILE_SIZE_PX + cols + 0.5
    gy = y0 * TILE_SIZE_PX + rows + 0.5
    GX, GY = np.meshgrid(gx, gy)
    return mercator_to_ortho_px(world, georef, GX, GY, zoom)


def _interp_rows(lat_u: np.ndarray, lat_v: np.ndarray, r0: int, r1: int, width: int):
    """Bilinear upsampling of the lattice to full-resolution mosaic rows [r0, r1)."""
    L = _LATTICE_PX
    rr = np.arange(r0, r1)
    ri, rf = rr // L, (rr % L) / L
    cc = np.arange(width)
    ci, cf = cc // L, (cc % L) / L
    out = []
    for lat in (lat_u, lat_v):
        a = lat[ri] * (1 - rf)[:, None] + lat[np.minimum(ri + 1, lat.shape[0] - 1)] * rf[:, None]
        b = a[:, ci] * (1 - cf)[None, :] + a[:, np.minimum(ci + 1, a.shape[1] - 1)] * cf[None, :]
        out.append(b.astype(np.float32))
    return out


def _open_mbtiles(path: Path, world: World, zoom_min: int, zoom_max: int, fmt: str) -> sqlite3.Connection:
    if path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(path))
    con.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
    con.execute("CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)")
    con.execute("CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)")
    w, s, e, n = world_bounds_latlon(world)
    meta = {
        "name": f"xview synthetic world seed {world.config.seed}",
        "format": fmt,
        "type": "baselayer",
        "version": "1",
        "description": "orthophoto of an xview_localizer synthetic world",
        "bounds": f"{w:.8f},{s:.8f},{e:.8f},{n:.8f}",
        "center": f"{world.config.datum_lon_deg:.8f},{world.config.datum_lat_deg:.8f},{zoom_max}",
        "minzoom": str(zoom_min),
        "maxzoom": str(zoom_max),
    }
    con.executemany("INSERT INTO metadata VALUES (?, ?)", list(meta.items()))
    return con


def write_tile_pyramid(world: World, out_dir: Path, zoom_max: int = 20, zoom_min: int = 14,
                       mbtiles: bool = True, mbtiles_path: Optional[Path] = None,
                       image_format: str = "png", style: AerialStyle = AerialStyle(),
                       ortho: Optional[tuple[np.ndarray, RasterGeoref]] = None,
                       progress: bool = False, margin_m: float = 0.0) -> PyramidInfo:
    """Write the world's aerial view as an XYZ pyramid ``out_dir/{z}/{x}/{y}.{png|jpg}``.

    zoom_max: finest zoom (20 is ~0.1 m/px at 49 deg N); zoom_min: coarsest (<= zoom_max).
    mbtiles: also write an MBTiles file at ``mbtiles_path`` (default
    ``out_dir.parent / "tiles.mbtiles"``). ``ortho``: a precomputed
    :func:`render_orthophoto` result (rendered here otherwise). ``margin_m``: also write the
    tiles within this distance outside the world square (filled with ``style.fill_rgb``), so a
    satellite patch around a vehicle near the world's edge is complete (a node cuts +-51 m
    patches by default). Returns :class:`PyramidInfo`.
    """
    if not (math.isfinite(margin_m) and margin_m >= 0.0):
        raise ConfigError(f"write_tile_pyramid: margin_m must be finite and >= 0, got {margin_m}")
    if not (0 <= zoom_min <= zoom_max <= 23):
        raise ConfigError(f"write_tile_pyramid: need 0 <= zoom_min <= zoom_max <= 23, got {zoom_min}, {zoom_max}")
    if image_format not in ("png", "jpg"):
        raise ConfigError(f"write_tile_pyramid: image_format must be 'png' or 'jpg', got {image_format!r}")
    out_dir = Path(out_dir)
    img, georef = ortho if ortho is not None else render_orthophoto(world, style=style)
    fill = tuple(int(c) for c in style.fill_rgb)
    x0, y0, x1, y1 = tile_range(world, zoom_max, margin_m)
    nx, ny = x1 - x0 + 1, y1 - y0 + 1
    lat_u, lat_v = _mosaic_maps(world, georef, zoom_max, x0, y0, nx, ny)
    T = TILE_SIZE_PX
    mosaic = np.empty((ny * T, nx * T, 3), np.uint8)
    for j in range(ny):
        mu, mv = _interp_rows(lat_u, lat_v, j * T, (j + 1) * T, nx * T)
        mosaic[j * T:(j + 1) * T] = cv2.remap(img, mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                              borderValue=fill)
    mb_path = (Path(mbtiles_path) if mbtiles_path is not None else out_dir.parent / "tiles.mbtiles") if mbtiles else None
    con = _open_mbtiles(mb_path, world, zoom_min, zoom_max, image_format) if mb_path is not None else None
    params = [cv2.IMWRITE_PNG_COMPRESSION, 2] if image_format == "png" else [cv2.IMWRITE_JPEG_QUALITY, 90]
    ranges: dict = {}
    count = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(_count_tiles(world, z, margin_m) for z in range(zoom_min, zoom_max + 1)), unit="tile",
                   desc="tiles")
    z, tx0, ty0 = zoom_max, x0, y0
    while True:
        tny, tnx = mosaic.shape[0] // T, mosaic.shape[1] // T
        ranges[z] = (tx0, ty0, tx0 + tnx - 1, ty0 + tny - 1)
        rows = []
        for j in range(tny):
            for i in range(tnx):
                tile = mosaic[j * T:(j + 1) * T, i * T:(i + 1) * T, ::-1]
                ok, buf = cv2.imencode("." + image_format, tile, params)
                if not ok:
                    raise ConfigError(f"could not encode tile {z}/{tx0 + i}/{ty0 + j}")
                data = buf.tobytes()
                d = out_dir / str(z) / str(tx0 + i)
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{ty0 + j}.{image_format}").write_bytes(data)
                if con is not None:
                    rows.append((z, tx0 + i, (2**z - 1) - (ty0 + j), sqlite3.Binary(data)))
                count += 1
                if bar is not None:
                    bar.update(1)
        if con is not None:
            con.executemany("INSERT INTO tiles VALUES (?, ?, ?, ?)", rows)
        if z == zoom_min:
            break
        # pad to even tile origin and extent, then 2x area downsampling
        pad_l, pad_t = tx0 % 2, ty0 % 2
        pad_r = (tnx + pad_l) % 2
        pad_b = (tny + pad_t) % 2
        mosaic = cv2.copyMakeBorder(mosaic, pad_t * T, pad_b * T, pad_l * T, pad_r * T, cv2.BORDER_CONSTANT,
                                    value=fill)
        mosaic = cv2.resize(mosaic, (mosaic.shape[1] // 2, mosaic.shape[0] // 2), interpolation=cv2.INTER_AREA)
        z, tx0, ty0 = z - 1, (tx0 - pad_l) // 2, (ty0 - pad_t) // 2
    if bar is not None:
        bar.close()
    if con is not None:
        con.commit()
        con.close()
    w, s, e, n = world_bounds_latlon(world)
    meta = {
        "format": image_format, "tile_size_px": T, "zoom_min": zoom_min, "zoom_max": zoom_max,
        "bounds_wsen_deg": [w, s, e, n], "tile_ranges_x0y0x1y1": {str(k): v for k, v in ranges.items()},
        "datum": {"lat_deg": world.config.datum_lat_deg, "lon_deg": world.config.datum_lon_deg},
        "world_seed": world.config.seed, "fill_rgb": list(fill), "margin_m": float(margin_m),
        "mbtiles": str(mb_path) if mb_path is not None else None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metadata.json").write_text(json.dumps(meta, indent=1))
    return PyramidInfo(out_dir, mb_path, zoom_min, zoom_max, count, ranges, image_format)


def _count_tiles(world: World, zoom: int, margin_m: float = 0.0) -> int:
    x0, y0, x1, y1 = tile_range(world, zoom, margin_m)
    return (x1 - x0 + 1) * (y1 - y0 + 1)
