"""Synthetic tile pyramids of known geography, for tests and benchmarks.

The ground is a grid of Gaussian markers laid out in the local ENU plane of a datum (every
``spacing_m`` metres east and north, ``sigma_m`` wide). Every tile pixel is rendered from the
exact ground position of its centre (Web-Mercator pixel centre -> WGS84 -> ENU about the
datum, through ECEF in closed form with numpy - independent of the pyproj path the patch
extractor uses), so a correctly georeferenced patch shows each marker exactly where its
WGS84 position maps to.

Colours: red = marker intensity (255 at a centre), green = 0.5 * red + 40, blue = 60 (so a
channel swap is detectable).
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Tuple

import numpy as np

from ..core.geo import TILE_SIZE_PX, WGS84_A_M, LocalEnu, global_px_to_latlon, tms_row
from .cache import tiles_around
from .codec import encode_png

_E2 = 6.69437999014e-3


def _ecef(lat_deg, lon_deg) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    lat = np.radians(lat_deg)
    lon = np.radians(lon_deg)
    n = WGS84_A_M / np.sqrt(1.0 - _E2 * np.sin(lat) ** 2)
    return n * np.cos(lat) * np.cos(lon), n * np.cos(lat) * np.sin(lon), n * (1.0 - _E2) * np.sin(lat)


def enu_numpy(lat_deg, lon_deg, datum_lat_deg: float, datum_lon_deg: float) -> Tuple[np.ndarray, np.ndarray]:
    """Exact WGS84 -> (east_m, north_m) about a datum on the ellipsoid (heights 0)."""
    x, y, z = _ecef(lat_deg, lon_deg)
    x0, y0, z0 = _ecef(datum_lat_deg, datum_lon_deg)
    dx, dy, dz = x - x0, y - y0, z - z0
    p, lam = math.radians(datum_lat_deg), math.radians(datum_lon_deg)
    east = -math.sin(lam) * dx + math.cos(lam) * dy
    north = -math.sin(p) * math.cos(lam) * dx - math.sin(p) * math.sin(lam) * dy + math.cos(p) * dz
    return east, north


@dataclass(frozen=True)
class MarkerWorld:
    """A marker grid about a datum; see the module docstring."""

    datum_lat_deg: float = 49.01
    datum_lon_deg: float = 8.42
    spacing_m: float = 8.0
    sigma_m: float = 0.6

    def intensity(self, east_m: np.ndarray, north_m: np.ndarray) -> np.ndarray:
        de = east_m - np.round(east_m / self.spacing_m) * self.spacing_m
        dn = north_m - np.round(north_m / self.spacing_m) * self.spacing_m
        return np.exp(-(de * de + dn * dn) / (2.0 * self.sigma_m**2))

    def render_tile(self, z: int, x: int, y: int) -> np.ndarray:
        """(256,256,3) uint8 RGB of tile ``z/x/y``."""
        i = np.arange(TILE_SIZE_PX, dtype=float) + 0.5
        gx, gy = np.meshgrid(x * TILE_SIZE_PX + i, y * TILE_SIZE_PX + i)
        lat, lon = global_px_to_latlon(gx, gy, z)
        e, n = enu_numpy(lat, lon, self.datum_lat_deg, self.datum_lon_deg)
        val = self.intensity(e, n)
        rgb = np.empty((TILE_SIZE_PX, TILE_SIZE_PX, 3), dtype=np.uint8)
        rgb[..., 0] = np.round(255.0 * val)
        rgb[..., 1] = np.round(127.5 * val + 40.0)
        rgb[..., 2] = 60
        return rgb

    def markers_latlon(self, radius_m: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Markers within ``radius_m`` (square) of the datum: ``(lat_deg, lon_deg, enu (N,2))``."""
        k = int(radius_m // self.spacing_m)
        g = np.arange(-k, k + 1) * self.spacing_m
        e, n = np.meshgrid(g, g)
        enu = np.stack([e.ravel(), n.ravel()], axis=1)
        lat, lon = LocalEnu(self.datum_lat_deg, self.datum_lon_deg).inverse(enu[:, 0], enu[:, 1])
        return np.asarray(lat), np.asarray(lon), enu


def write_pyramid(world: MarkerWorld, root: Path, zooms: Iterable[int], radius_m: float) -> list[Tuple[int, int, int]]:
    """Render every tile within ``radius_m`` of the datum at each zoom into
    ``root/{z}/{x}/{y}.png``; returns the tiles written."""
    written = []
    for z in zooms:
        for tz, tx, ty in sorted(tiles_around(world.datum_lat_deg, world.datum_lon_deg, radius_m, z)):
            path = Path(root) / str(tz) / str(tx) / f"{ty}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_png(world.render_tile(tz, tx, ty)))
            written.append((tz, tx, ty))
    return written


def folder_to_mbtiles(root: Path, out: Path, name: str = "synthetic") -> Path:
    """Pack ``root/{z}/{x}/{y}.png`` into an MBTiles 1.3 file (TMS rows)."""
    out = Path(out)
    if out.exists():
        out.unlink()
    conn = sqlite3.connect(out)
    conn.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
    conn.execute("CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB)")
    conn.execute("CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row)")
    zooms = []
    for f in sorted(Path(root).glob("*/*/*.png")):
        z, x, y = int(f.parent.parent.name), int(f.parent.name), int(f.stem)
        zooms.append(z)
        conn.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (z, x, tms_row(y, z), f.read_bytes()))
    meta = {"name": name, "format": "png", "type": "baselayer", "version": "1",
            "minzoom": str(min(zooms)), "maxzoom": str(max(zooms))}  # fmt: skip
    conn.executemany("INSERT INTO metadata VALUES (?, ?)", list(meta.items()))
    conn.commit()
    conn.close()
    return out
