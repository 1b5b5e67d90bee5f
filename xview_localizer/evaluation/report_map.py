"""The satellite map under the report's trajectory plot, as a raster in the MAP frame, and a
scale bar.

Raster convention (:class:`MapBackground`): axis-aligned with the map frame (x east(-ish),
y north(-ish), metres from the map datum; for a UTM map that is grid north, not true north),
``m_per_px`` metres per pixel, row 0 at the north edge ``y_max_m``, column 0 at the west edge
``x_min_m``. The centre of pixel ``[v, u]`` is at::

    x_m = x_min_m + (u + 0.5) * m_per_px
    y_m = y_max_m - (v + 0.5) * m_per_px

so ``imshow(rgb, extent=extent_m)`` puts every map point at its own metres.

How it is made: the repository's :class:`~xview_localizer.tiles.patch.PatchSampler` renders a
true-north-up metric patch about the raster's centre (the same resampling the localizer's
patches use, tiles of :data:`~xview_localizer.core.geo.TILE_SIZE_PX`); a missing tile (e.g.
beyond a synthetic world's edge) is grey. The patch (local ENU about the centre) is then warped
into the map frame with the affine map fitted to the exact map -> WGS84 -> ENU conversion on a
5 x 5 grid over the raster (exact for an ENU map up to the tangent planes' curvature; for UTM it
carries the meridian convergence and the grid scale, a residual of millimetres over kilometres).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np

from ..core.errors import GeometryError
from ..core.geo import TILE_SIZE_PX, LocalEnu
from .report_data import EvalData

__all__ = ["MapBackground", "map_background", "nice_length_m", "add_scale_bar", "MIN_M_PER_PX"]

#: Finest resolution of the background (m/px); coarser when the drive is long (max_side_px).
MIN_M_PER_PX = 0.1
#: Grey level of map pixels without a tile.
NO_TILE_GREY = 160
#: How many zoom levels below the finest one are tried when no tile answers (a pyramid may
#: lack the finest zooms).
ZOOM_TRIES = 4


@dataclass(frozen=True, eq=False)
class MapBackground:
    """A north-up raster of the satellite map in the map frame (see the module docstring).

    Attributes:
        rgb: (H, W, 3) uint8.
        x_min_m, y_max_m: map coordinates of the raster's north-west corner (outer edge).
        m_per_px: metres per pixel along both axes.
        note: where it came from (zoom, tiles answered).
    """

    rgb: np.ndarray
    x_min_m: float
    y_max_m: float
    m_per_px: float
    note: str

    @property
    def extent_m(self) -> tuple[float, float, float, float]:
        """``(left, right, bottom, top)`` in map metres, for ``matplotlib.imshow(extent=...)``."""
        h, w = self.rgb.shape[:2]
        return (self.x_min_m, self.x_min_m + w * self.m_per_px, self.y_max_m - h * self.m_per_px, self.y_max_m)

    def px_of(self, xy_m) -> np.ndarray:
        """(N, 2) map points (metres) -> (N, 2) raster pixel coordinates ``(u, v)`` (float; the
        centre of pixel ``[v, u]`` at integers)."""
        xy = np.asarray(xy_m, float).reshape(-1, 2)
        return np.column_stack([(xy[:, 0] - self.x_min_m) / self.m_per_px - 0.5,
                                (self.y_max_m - xy[:, 1]) / self.m_per_px - 0.5])


def _affine_enu_from_map(proj: Any, centre_xy_m: tuple[float, float], half_m: tuple[float, float]
                         ) -> tuple[np.ndarray, float, float, float]:
    """(A (2, 3), lat_deg, lon_deg, residual_m): ``enu = A @ [x - cx, y - cy, 1]`` maps map
    offsets from the centre to the local ENU plane at the centre (lat_deg, lon_deg), fitted by
    least squares to the exact conversion on a 5 x 5 grid spanning +-``half_m``."""
    cx, cy = centre_xy_m
    lat_c, lon_c = proj.inverse(cx, cy)
    enu = LocalEnu(lat_c, lon_c)
    rows, targets = [], []
    for fx in np.linspace(-1.0, 1.0, 5):
        for fy in np.linspace(-1.0, 1.0, 5):
            dx, dy = fx * half_m[0], fy * half_m[1]
            lat, lon = proj.inverse(cx + dx, cy + dy)
            e, n = enu.forward(lat, lon)
            rows.append((dx, dy, 1.0))
            targets.append((float(e), float(n)))
    a_rows, b = np.asarray(rows), np.asarray(targets)
    sol, *_ = np.linalg.lstsq(a_rows, b, rcond=None)
    residual_m = float(np.abs(a_rows @ sol - b).max())
    return sol.T, float(lat_c), float(lon_c), residual_m


def _sample_patch(tile_cache: Any, lat_deg: float, lon_deg: float, size_hw_px: tuple[int, int], m_per_px: float):
    """(rgb, georef, zoom, n_ok, n_tiles, first_error) of a patch rendered by the
    :class:`PatchSampler` from ``tile_cache``'s tiles (missing ones grey), trying up to
    :data:`ZOOM_TRIES` zooms from the finest the resolution needs; rgb None when no tile answers."""
    from ..tiles.patch import PatchSampler

    sampler = PatchSampler(max_grids=1)
    grey = np.full((TILE_SIZE_PX, TILE_SIZE_PX, 3), NO_TILE_GREY, np.uint8)
    z_top = int(tile_cache.zoom_for(lat_deg, m_per_px))
    first_error = ""
    for zoom in range(z_top, max(z_top - ZOOM_TRIES, -1), -1):
        try:
            plan = sampler.plan(lat_deg, lon_deg, size_hw_px, m_per_px, zoom)
        except GeometryError as exc:  # too many tiles at this zoom: a coarser one needs fewer
            first_error = first_error or str(exc)[:80]
            continue
        tiles, n_ok = {}, 0
        for key in plan.tiles:
            try:
                tiles[key] = np.ascontiguousarray(tile_cache.get_tile(*key)[..., :3])
                n_ok += 1
            except Exception as exc:  # noqa: BLE001 - a missing tile stays grey
                first_error = first_error or str(exc)[:80]
                tiles[key] = grey
        if n_ok:
            return PatchSampler.render(plan, tiles), plan.georef, zoom, n_ok, len(plan.tiles), first_error
    return None, None, None, 0, 0, first_error


def map_background(data: EvalData, xy_m: np.ndarray, tile_cache: Any = None, margin_m: float = 30.0,
                   max_side_px: int = 1600) -> tuple[Optional[MapBackground], str]:
    """(background, note) covering the map points ``xy_m`` (N, 2) plus ``margin_m``, at
    ``max(MIN_M_PER_PX, longest side / max_side_px)`` m/px; (None, why) without a tile source
    (``tile_cache`` None and no ``data.tile_url``), without a datum, or when no tile answers."""
    from ..pipeline.localizer import MapProjection

    if not data.tile_url and tile_cache is None:
        return None, "no tile source"
    if not (math.isfinite(data.datum_lat_deg) and math.isfinite(data.datum_lon_deg)):
        return None, "map datum unknown"
    xy = np.asarray(xy_m, float).reshape(-1, 2)
    xy = xy[np.all(np.isfinite(xy), axis=1)]
    if not len(xy):
        return None, "no positions to show"
    proj = MapProjection(data.map_projection, data.datum_lat_deg, data.datum_lon_deg)
    lo, hi = xy.min(axis=0) - margin_m, xy.max(axis=0) + margin_m
    m_per_px = max(float((hi - lo).max()) / max_side_px, MIN_M_PER_PX)
    w_px, h_px = (int(math.ceil((hi[k] - lo[k]) / m_per_px)) for k in (0, 1))
    x_min, y_min = float(lo[0]), float(lo[1])
    x_max, y_max = x_min + w_px * m_per_px, y_min + h_px * m_per_px
    cx, cy = 0.5 * (x_min + x_max), 0.5 * (y_min + y_max)
    half = (0.5 * (x_max - x_min), 0.5 * (y_max - y_min))
    own = None
    try:
        A, lat_c, lon_c, _res_m = _affine_enu_from_map(proj, (cx, cy), half)
        # the true-north patch must cover the raster after the map -> ENU rotation and scale
        corners = np.array([[sx * half[0], sy * half[1], 1.0] for sx in (-1, 1) for sy in (-1, 1)])
        half_enu = np.abs(corners @ A.T).max(axis=0)
        size_hw = (2 * int(math.ceil(half_enu[1] / m_per_px)) + 3, 2 * int(math.ceil(half_enu[0] / m_per_px)) + 3)
        if tile_cache is None:
            from ..tiles.cache import TileCache, TileCacheConfig

            own = tile_cache = TileCache(data.tile_url, None, TileCacheConfig(timeout_s=5.0, retries=1))
        rgb_patch, georef, zoom, n_ok, n_tiles, first_error = _sample_patch(tile_cache, lat_c, lon_c, size_hw,
                                                                            m_per_px)
    except Exception as exc:  # noqa: BLE001 - a missing background must not lose the report
        return None, f"satellite map unavailable: {str(exc)[:80]}"
    finally:
        if own is not None:
            own.close()
    if rgb_patch is None:
        return None, f"satellite map unavailable: {first_error or 'no tile answered'}"
    # raster px (u, v) -> map offset from the centre -> ENU about the centre -> patch px
    map_from_raster = np.array([[m_per_px, 0.0, x_min + 0.5 * m_per_px - cx],
                                [0.0, -m_per_px, y_max - 0.5 * m_per_px - cy], [0.0, 0.0, 1.0]])
    enu_from_map = np.vstack([A, [0.0, 0.0, 1.0]])
    px_from_enu = np.vstack([georef.affine_px_from_enu, [0.0, 0.0, 1.0]])
    patch_from_raster = (px_from_enu @ enu_from_map @ map_from_raster)[:2]
    rgb = cv2.warpAffine(rgb_patch, patch_from_raster, (w_px, h_px), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(NO_TILE_GREY,) * 3)
    note = f"satellite tiles zoom {zoom}, {n_ok}/{n_tiles} tiles, {m_per_px:.2f} m/px"
    return MapBackground(rgb, x_min, y_max, m_per_px, note), note


def nice_length_m(span_m: float, fraction: float = 0.2) -> float:
    """The largest 1, 2 or 5 x 10^k metres not above ``fraction * span_m`` (a scale bar)."""
    target = max(float(span_m) * fraction, 1e-3)
    p = 10.0 ** math.floor(math.log10(target))
    for k in (5.0, 2.0, 1.0):
        if k * p <= target:
            return k * p
    return p


def add_scale_bar(ax: Any, span_m: float, loc: str = "lower right") -> float:
    """Draw a scale bar on ``ax`` (data units = metres) about a fifth of ``span_m`` long, white
    on a dark box so it reads over imagery. Returns its length in metres."""
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length_m = nice_length_m(span_m)
    label = f"{length_m:g} m" if length_m < 1000 else f"{length_m / 1000:g} km"
    bar = AnchoredSizeBar(ax.transData, length_m, label, loc, pad=0.4, borderpad=0.6, sep=4, color="white",
                          frameon=True, size_vertical=span_m * 0.006, fontproperties=FontProperties(size=9))
    bar.patch.set_facecolor("black")
    bar.patch.set_alpha(0.55)
    bar.patch.set_edgecolor("none")
    ax.add_artist(bar)
    return length_m
