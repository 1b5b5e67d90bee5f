"""Synthetic inputs for the report tests (no replay, no matcher).

* :func:`write_marker_tiles`: a folder of real Web-Mercator PNG tiles (a dull, textured ground,
  no saturated red anywhere) with a red disc at given WGS84 points, served by the repository's
  own ``file://`` tile source;
* :func:`synthetic_eval`: an :class:`EvalData` of a short drive (known estimate errors, two
  rejection reasons) whose snapshots are taken from REAL ``StepResult`` objects, with patches
  cut by the real :class:`TileCache` from those tiles.
"""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np

from xview_localizer.core.geo import TILE_SIZE_PX, LocalEnu, latlon_to_global_px

ZOOM = 19
#: lon 11.9 E is 2.9 deg east of UTM zone 32's central meridian: ~2.1 deg meridian convergence.
DATUM_LAT_DEG, DATUM_LON_DEG = 47.0, 11.9
MARKER_BGR = (0, 0, 255)


def write_marker_tiles(root: Path, lat_deg: float, lon_deg: float, half_m: float, markers_latlon=(),
                       zoom: int = ZOOM, radius_px: int = 3) -> str:
    """Write the tiles at ``zoom`` covering +-``half_m`` around (lat_deg, lon_deg) into ``root``
    (``root/z/x/y.png``) with a red disc of ``radius_px`` tile pixels at each marker; returns
    the ``file://`` URL template."""
    enu = LocalEnu(lat_deg, lon_deg)
    lats, lons = enu.inverse(np.array([-half_m, half_m, -half_m, half_m]), np.array([-half_m, -half_m, half_m, half_m]))
    gx, gy = latlon_to_global_px(np.asarray(lats), np.asarray(lons), zoom)
    marks = [np.ravel(latlon_to_global_px(la, lo, zoom)) for la, lo in markers_latlon]
    rng = np.random.default_rng(7)
    for tx in range(int(gx.min() // TILE_SIZE_PX), int(gx.max() // TILE_SIZE_PX) + 1):
        for ty in range(int(gy.min() // TILE_SIZE_PX), int(gy.max() // TILE_SIZE_PX) + 1):
            tile = np.empty((TILE_SIZE_PX, TILE_SIZE_PX, 3), np.uint8)
            tile[...] = (70 + 20 * ((tx + ty) % 3), 110, 90)  # BGR: greyish green, by tile
            tile += rng.integers(0, 25, tile.shape, dtype=np.uint8)
            tile[::32, :] = (150, 150, 150)
            tile[:, ::32] = (150, 150, 150)
            for mx, my in marks:
                cv2.circle(tile, (int(round(mx - tx * TILE_SIZE_PX - 0.5)), int(round(my - ty * TILE_SIZE_PX - 0.5))),
                           radius_px, MARKER_BGR, -1, lineType=cv2.LINE_AA)
            path = root / str(zoom) / str(tx) / f"{ty}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), tile)
    return f"file://{root}/{{z}}/{{x}}/{{y}}.png"


def red_centroid_px(rgb: np.ndarray) -> np.ndarray:
    """(u, v) centroid of the saturated-red pixels of an RGB image (NaN when none)."""
    m = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    v, u = np.nonzero(m)
    return np.array([u.mean(), v.mean()]) if u.size else np.array([np.nan, np.nan])


def _drive(n: int):
    """(stamps_ns, gt (n, 3)) of a gentle S-curve at ~10 m/s, 10 Hz, map metres."""
    k = np.arange(n, dtype=float)
    x = -40.0 + 1.0 * k
    y = 8.0 * np.sin(k / 12.0)
    yaw = np.arctan2(np.gradient(y), np.gradient(x))
    stamps = (1_000_000_000 * 100 + k * 100_000_000).astype(np.int64)
    return stamps, np.column_stack([x, y, yaw])


#: Frames of :func:`synthetic_eval` with a large known error (index -> error east in metres).
BIG_ERRORS_M = {20: 6.0, 29: 4.0, 8: 3.0}


def frame_outcome(k: int) -> str:
    """'' (accepted) or the rejection reason of frame ``k`` in :func:`synthetic_eval`."""
    if k % 7 == 3:
        return "too_few_matches"
    if k % 11 == 5:
        return "gnss_inconsistent"
    return ""


def synthetic_eval(tmp: Path, n: int = 40, projection: str = "enu", snapshots: bool = True):
    """(EvalData, error_by_index): accepted frames have a known east error (0.05 m * (k % 5),
    plus :data:`BIG_ERRORS_M`); rejected frames as :func:`frame_outcome`. Tiles under ``tmp``."""
    from xview_localizer.core.se2 import SE2
    from xview_localizer.evaluation.report import EvalData, FrameRecord, Track
    from xview_localizer.evaluation.report_panels import map_pose_in_patch
    from xview_localizer.evaluation.report_snapshots import SnapshotStore
    from xview_localizer.matcher.base import Correspondences
    from xview_localizer.pipeline.localizer import Estimate, MapProjection, Prior, StepResult
    from xview_localizer.tiles.cache import TileCache, TileCacheConfig

    proj = MapProjection(projection, DATUM_LAT_DEG, DATUM_LON_DEG)
    url = write_marker_tiles(tmp / "tiles", DATUM_LAT_DEG, DATUM_LON_DEG, 140.0)
    stamps, gt = _drive(n)
    rng = np.random.default_rng(3)
    frames, fixes, errors = [], [], {}
    store = SnapshotStore() if snapshots else None
    cache = TileCache(url, tmp / "cache", TileCacheConfig(zoom=ZOOM))
    try:
        for k in range(n):
            s = int(stamps[k])
            gx, gy, gyaw = gt[k]
            fx, fy = gx + rng.normal(0, 2.0), gy + rng.normal(0, 2.0)
            fixes.append((s, fx, fy, math.nan))
            reason = frame_outcome(k)
            err = BIG_ERRORS_M.get(k, 0.05 * (k % 5))
            ex, ey, eyaw = gx + err, gy, gyaw + 0.01
            if reason:
                frames.append(FrameRecord(s, False, reason, latency_s=0.02, detail=f"synthetic {reason}"))
            else:
                errors[k] = err
                frames.append(FrameRecord(s, True, "", ex, ey, eyaw, np.diag([0.25, 0.25, 1e-4]), 0.03 + 0.001 * k))
            if store is None:
                continue
            lat, lon = proj.inverse(fx, fy)
            sat, georef = cache.patch(lat, lon, 128, 0.5)
            prior = Prior(s, fx, fy, lat, lon, np.eye(2) * 4.0, None if k < 3 else gyaw, 0.05, "interpolated")
            ground = np.full((64, 256, 3), 90, np.uint8)
            ground[32:] = (60 + 3 * k, 120, 60)
            res = StepResult(None, reason, f"synthetic {reason}", {"total": 0.03}, prior, sat, georef)
            if reason != "too_few_matches":
                px, py, pyaw = map_pose_in_patch(proj, georef, ex, ey, eyaw)
                src = rng.uniform([2.0, -8.0], [25.0, 8.0], (120, 2))
                c, sn = math.cos(pyaw), math.sin(pyaw)
                dst = np.column_stack([px + c * src[:, 0] - sn * src[:, 1], py + sn * src[:, 0] + c * src[:, 1]])
                dst += rng.normal(0, 0.3, dst.shape)
                res.correspondences = Correspondences(src, dst, rng.uniform(0.0, 1.0, 120))
                res.inlier_mask = rng.uniform(size=120) > 0.2
                if not reason:
                    lat_e, lon_e = proj.inverse(ex, ey)
                    res.estimate = Estimate(s, SE2(ex, ey, eyaw), np.diag([0.25, 0.25, 1e-4]), SE2(px, py, pyaw),
                                            np.diag([0.25, 0.25, 1e-4]), None, lat_e, lon_e, 100, 96, 0.5, prior)
            store.add_step(s, ground, res)
    finally:
        cache.close()
    data = EvalData(frames=frames, gnss=Track.from_rows(fixes), gt=Track(stamps, gt[:, 0], gt[:, 1], gt[:, 2]),
                    map_projection=projection, datum_lat_deg=DATUM_LAT_DEG, datum_lon_deg=DATUM_LON_DEG,
                    tile_url=url, meta={"estimates": "synthetic (report tests)"}, snapshots=store)
    return data, errors


class _ImageSources(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def image_sources(page_html: str) -> list[str]:
    """The ``src`` of every ``<img>`` of an HTML page, in page order."""
    parser = _ImageSources()
    parser.feed(page_html)
    return parser.srcs
