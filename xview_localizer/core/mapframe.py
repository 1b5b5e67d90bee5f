"""The map frame: WGS84 <-> the node's ``map`` (UTM grid of the datum's zone with the origin at
the datum, or the local ENU plane at the datum), meridian convergence, and the Jacobian that
carries a local-ENU covariance into the map frame."""

from __future__ import annotations

import math

import numpy as np

from .errors import GeometryError
from .geo import LocalEnu, UtmProjection


class MapProjection:
    """WGS84 <-> the map frame: ``'utm'`` = the UTM grid of the datum's zone, shifted so the
    datum is the origin (navsat_transform's map), or ``'enu'`` = the local ENU tangent plane at
    the datum. x east(-ish), y north(-ish), metres."""

    def __init__(self, kind: str, datum_lat_deg: float, datum_lon_deg: float) -> None:
        if kind not in ("utm", "enu"):
            raise GeometryError(f"map projection must be 'utm' or 'enu', got {kind!r}")
        self.kind = kind
        self.datum_lat_deg = float(datum_lat_deg)
        self.datum_lon_deg = float(datum_lon_deg)
        if kind == "utm":
            self._utm = UtmProjection(self.datum_lat_deg, self.datum_lon_deg)
            e0, n0 = self._utm.forward(self.datum_lat_deg, self.datum_lon_deg)
            self._origin = (float(e0), float(n0))
        else:
            self._enu = LocalEnu(self.datum_lat_deg, self.datum_lon_deg)

    def forward(self, lat_deg: float, lon_deg: float) -> tuple[float, float]:
        """WGS84 -> map (x_m, y_m)."""
        if self.kind == "utm":
            e, n = self._utm.forward(lat_deg, lon_deg)
            return float(e) - self._origin[0], float(n) - self._origin[1]
        e, n = self._enu.forward(lat_deg, lon_deg)
        return float(e), float(n)

    def inverse(self, x_m: float, y_m: float) -> tuple[float, float]:
        """Map (x_m, y_m) -> WGS84 (lat_deg, lon_deg)."""
        if self.kind == "utm":
            lat, lon = self._utm.inverse(x_m + self._origin[0], y_m + self._origin[1])
        else:
            lat, lon = self._enu.inverse(x_m, y_m)
        return float(lat), float(lon)

    def convergence_rad(self, lat_deg: float, lon_deg: float) -> float:
        """Angle, CCW positive, from the map's +y axis to true north at a point, so that
        ``yaw_map_rad = yaw_true_enu_rad + convergence``."""
        if self.kind == "utm":
            return float(self._utm.convergence_rad(lat_deg, lon_deg))
        x0, y0 = self.forward(lat_deg, lon_deg)
        x1, y1 = self.forward(lat_deg + 1.0 / 111_320.0, lon_deg)
        return math.atan2(-(x1 - x0), y1 - y0)


def jacobian_map_from_enu(proj: MapProjection, enu: LocalEnu, x_m: float, y_m: float) -> np.ndarray:
    """(2, 2) d(map xy)/d(local ENU xy) at a point of a local ENU plane (central differences)."""
    step_m = 1.0
    cols = []
    for dx, dy in ((step_m, 0.0), (0.0, step_m)):
        lat_p, lon_p = enu.inverse(x_m + dx, y_m + dy)
        lat_m, lon_m = enu.inverse(x_m - dx, y_m - dy)
        xp, yp = proj.forward(float(lat_p), float(lon_p))
        xm, ym = proj.forward(float(lat_m), float(lon_m))
        cols.append([(xp - xm) / (2 * step_m), (yp - ym) / (2 * step_m)])
    return np.array(cols).T

