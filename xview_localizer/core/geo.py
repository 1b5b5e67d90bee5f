"""Geodesy for xview_localizer: WGS84 <-> UTM / local ENU, Web-Mercator tile math,
and the meridian convergence that relates true north to UTM grid north.

Conventions
-----------
* Angles in degrees carry ``_deg``; in radians ``_rad``. Yaw follows REP-103: 0 = east,
  counter-clockwise positive.
* Web-Mercator (EPSG:3857) with 256-px tiles. A *global pixel* at zoom ``z`` is measured
  from the north-west corner of the world (x east, y south), the world being
  ``256 * 2**z`` pixels wide. Tile ``(x, y)`` covers global pixels
  ``[256 x, 256 (x+1)) x [256 y, 256 (y+1))``.
* Meridian convergence ``gamma`` is the angle from grid north to true north, measured
  counter-clockwise positive from grid north to true north (positive east of the central
  meridian in the northern hemisphere); see :meth:`UtmProjection.convergence_rad`.

All functions accept numpy arrays (broadcasting) or Python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Tuple

import numpy as np
from pyproj import CRS, Transformer

from .errors import GeometryError
from .se2 import wrap_angle_rad

TILE_SIZE_PX = 256
#: Web-Mercator ground resolution at the equator and zoom 0 (m/px, 256-px tiles).
EQUATOR_M_PER_PX_Z0 = 156543.03392804097
#: Latitude limit of Web-Mercator.
MAX_LAT_DEG = 85.05112877980659
WGS84_A_M = 6378137.0


def _check_latlon(lat_deg, lon_deg) -> None:
    lat = np.asarray(lat_deg, dtype=float)
    lon = np.asarray(lon_deg, dtype=float)
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon))):
        raise GeometryError(f"latitude/longitude must be finite, got {lat_deg!r}, {lon_deg!r}")
    if np.any(np.abs(lat) > 90.0) or np.any(np.abs(lon) > 180.0 + 1e-9):
        raise GeometryError(f"latitude/longitude out of range: {lat_deg!r}, {lon_deg!r}")


# --------------------------------------------------------------------------------------
# Web-Mercator tile math
# --------------------------------------------------------------------------------------
def ground_resolution_m_per_px(lat_deg, zoom: int, tile_size_px: int = TILE_SIZE_PX):
    """True ground metres per Web-Mercator pixel at ``lat_deg`` and ``zoom``.

    ``156543.03392 * cos(lat) / 2**zoom`` for 256-px tiles (scaled for other tile sizes).
    """
    lat = np.asarray(lat_deg, dtype=float)
    res = EQUATOR_M_PER_PX_Z0 * (TILE_SIZE_PX / tile_size_px) * np.cos(np.radians(lat)) / (2.0**zoom)
    return float(res) if res.ndim == 0 else res


def latlon_to_global_px(lat_deg, lon_deg, zoom: int) -> Tuple[np.ndarray, np.ndarray]:
    """WGS84 -> global Web-Mercator pixel coordinates (x east, y south) at ``zoom``."""
    _check_latlon(lat_deg, lon_deg)
    lat = np.clip(np.asarray(lat_deg, dtype=float), -MAX_LAT_DEG, MAX_LAT_DEG)
    lon = np.asarray(lon_deg, dtype=float)
    world_px = TILE_SIZE_PX * 2.0**zoom
    x_px = (lon + 180.0) / 360.0 * world_px
    s = np.sin(np.radians(lat))
    y_px = (0.5 - np.log((1.0 + s) / (1.0 - s)) / (4.0 * math.pi)) * world_px
    return x_px, y_px


def global_px_to_latlon(x_px, y_px, zoom: int) -> Tuple[np.ndarray, np.ndarray]:
    """Global Web-Mercator pixel (x east, y south) at ``zoom`` -> WGS84 degrees."""
    world_px = TILE_SIZE_PX * 2.0**zoom
    x = np.asarray(x_px, dtype=float) / world_px
    y = np.asarray(y_px, dtype=float) / world_px
    lon_deg = x * 360.0 - 180.0
    lat_deg = np.degrees(np.arctan(np.sinh(math.pi * (1.0 - 2.0 * y))))
    return lat_deg, lon_deg


def latlon_to_tile(lat_deg: float, lon_deg: float, zoom: int) -> Tuple[int, int]:
    """The XYZ (slippy-map) tile index ``(x, y)`` containing a WGS84 point."""
    x_px, y_px = latlon_to_global_px(lat_deg, lon_deg, zoom)
    n = 2**zoom
    tx = int(min(max(math.floor(float(x_px) / TILE_SIZE_PX), 0), n - 1))
    ty = int(min(max(math.floor(float(y_px) / TILE_SIZE_PX), 0), n - 1))
    return tx, ty


def tile_nw_latlon(x: int, y: int, zoom: int) -> Tuple[float, float]:
    """WGS84 (lat, lon) of the north-west corner of tile ``(x, y)`` at ``zoom``."""
    lat, lon = global_px_to_latlon(x * TILE_SIZE_PX, y * TILE_SIZE_PX, zoom)
    return float(lat), float(lon)


def tile_to_quadkey(x: int, y: int, zoom: int) -> str:
    """Bing-style quadkey of an XYZ tile."""
    digits = []
    for i in range(zoom, 0, -1):
        mask = 1 << (i - 1)
        d = (1 if x & mask else 0) + (2 if y & mask else 0)
        digits.append(str(d))
    return "".join(digits)


def tms_row(y: int, zoom: int) -> int:
    """XYZ row -> TMS row (MBTiles stores rows counted from the south)."""
    return (2**zoom - 1) - y


def mercator_scale_factor(lat_deg) -> np.ndarray:
    """Web-Mercator linear scale factor ``1/cos(lat)`` (projected metres per true metre)."""
    return 1.0 / np.cos(np.radians(np.asarray(lat_deg, dtype=float)))


# --------------------------------------------------------------------------------------
# UTM and local ENU
# --------------------------------------------------------------------------------------
def utm_zone_for(lat_deg: float, lon_deg: float) -> Tuple[int, bool]:
    """The UTM zone number and hemisphere (``north``) of a point, with the Norway/Svalbard
    exceptions."""
    _check_latlon(lat_deg, lon_deg)
    zone = int((lon_deg + 180.0) // 6.0) + 1
    zone = min(max(zone, 1), 60)
    if 56.0 <= lat_deg < 64.0 and 3.0 <= lon_deg < 12.0:
        zone = 32
    if 72.0 <= lat_deg < 84.0:
        if 0.0 <= lon_deg < 9.0:
            zone = 31
        elif 9.0 <= lon_deg < 21.0:
            zone = 33
        elif 21.0 <= lon_deg < 33.0:
            zone = 35
        elif 33.0 <= lon_deg < 42.0:
            zone = 37
    return zone, lat_deg >= 0.0


@dataclass(frozen=True)
class UtmProjection:
    """WGS84 <-> UTM in one zone, chosen from a datum and kept fixed (points outside the
    zone are still projected in it, as navsat_transform does).

    ``forward`` returns (easting_m, northing_m) in the zone's grid (x east, y grid-north).
    """

    datum_lat_deg: float
    datum_lon_deg: float
    zone: int = field(init=False)
    north: bool = field(init=False)
    _fwd: Transformer = field(init=False, repr=False, compare=False)
    _inv: Transformer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        zone, north = utm_zone_for(self.datum_lat_deg, self.datum_lon_deg)
        crs = CRS.from_epsg((32600 if north else 32700) + zone)
        object.__setattr__(self, "zone", zone)
        object.__setattr__(self, "north", north)
        object.__setattr__(self, "_fwd", Transformer.from_crs("EPSG:4326", crs, always_xy=True))
        object.__setattr__(self, "_inv", Transformer.from_crs(crs, "EPSG:4326", always_xy=True))

    @property
    def epsg(self) -> int:
        return (32600 if self.north else 32700) + self.zone

    @property
    def central_meridian_deg(self) -> float:
        return -183.0 + 6.0 * self.zone

    def forward(self, lat_deg, lon_deg) -> Tuple[np.ndarray, np.ndarray]:
        """WGS84 degrees -> (easting_m, northing_m)."""
        _check_latlon(lat_deg, lon_deg)
        e, n = self._fwd.transform(np.asarray(lon_deg, float), np.asarray(lat_deg, float))
        return e, n

    def inverse(self, easting_m, northing_m) -> Tuple[np.ndarray, np.ndarray]:
        """(easting_m, northing_m) -> WGS84 (lat_deg, lon_deg)."""
        lon, lat = self._inv.transform(np.asarray(easting_m, float), np.asarray(northing_m, float))
        return lat, lon

    def convergence_rad(self, lat_deg, lon_deg):
        """Meridian convergence ``gamma``: the angle, counter-clockwise positive, from the
        grid's north axis (+y) to true north at a point.

        East of the central meridian in the northern hemisphere true north points to the
        west of grid north, so gamma > 0 there. A heading measured from true north
        converts to the grid by ``yaw_grid_rad = yaw_true_rad + gamma`` (see
        :func:`true_to_grid_yaw_rad`). Computed numerically through the projection
        (a 1 m step north), so it is exact for this projection; agrees with
        ``pyproj.Proj.get_factors().meridian_convergence``.
        """
        lat = np.asarray(lat_deg, dtype=float)
        lon = np.asarray(lon_deg, dtype=float)
        dlat_deg = 1.0 / 111_320.0
        e0, n0 = self.forward(lat, lon)
        e1, n1 = self.forward(lat + dlat_deg, lon)
        gamma = np.arctan2(-(np.asarray(e1) - e0), np.asarray(n1) - n0)
        return float(gamma) if np.ndim(gamma) == 0 else gamma


def true_to_grid_yaw_rad(yaw_true_rad, gamma_rad):
    """ENU yaw about true north/east -> yaw in a grid whose north is rotated by
    ``gamma_rad`` (the convergence from :meth:`UtmProjection.convergence_rad`)."""
    return wrap_angle_rad(np.asarray(yaw_true_rad, float) + gamma_rad)


def grid_to_true_yaw_rad(yaw_grid_rad, gamma_rad):
    """Inverse of :func:`true_to_grid_yaw_rad`."""
    return wrap_angle_rad(np.asarray(yaw_grid_rad, float) - gamma_rad)


@dataclass(frozen=True)
class LocalEnu:
    """WGS84 <-> local East-North-Up tangent plane about a datum (metres; x east, y north).

    Exact (through ECEF, pyproj), so true north is +y everywhere near the datum and no
    convergence correction is needed. ``h_m`` is the ellipsoidal height of the plane.
    """

    datum_lat_deg: float
    datum_lon_deg: float
    datum_h_m: float = 0.0
    _fwd: Transformer = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_latlon(self.datum_lat_deg, self.datum_lon_deg)
        topo = (
            f"+proj=pipeline +step +proj=cart +ellps=WGS84 "
            f"+step +proj=topocentric +ellps=WGS84 +lat_0={self.datum_lat_deg!r} "
            f"+lon_0={self.datum_lon_deg!r} +h_0={self.datum_h_m!r}"
        )
        object.__setattr__(self, "_fwd", Transformer.from_pipeline(topo))

    def forward(self, lat_deg, lon_deg, h_m=0.0) -> Tuple[np.ndarray, np.ndarray]:
        """WGS84 -> (east_m, north_m) in the tangent plane (up is dropped)."""
        _check_latlon(lat_deg, lon_deg)
        lon = np.asarray(lon_deg, float)
        lat = np.asarray(lat_deg, float)
        h = np.broadcast_to(np.asarray(h_m, float), np.broadcast(lat, lon).shape)
        e, n, _u = self._fwd.transform(lon, lat, h)
        return e, n

    def inverse(self, east_m, north_m, up_m=0.0) -> Tuple[np.ndarray, np.ndarray]:
        """(east_m, north_m[, up_m]) -> WGS84 (lat_deg, lon_deg) (the height is dropped)."""
        e = np.asarray(east_m, float)
        n = np.asarray(north_m, float)
        u = np.broadcast_to(np.asarray(up_m, float), np.broadcast(e, n).shape)
        lon, lat, _h = self._fwd.transform(e, n, u, direction="INVERSE")
        return lat, lon
