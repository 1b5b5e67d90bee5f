"""Satellite features once per area, not once per frame (issue 15, requirement 1). ROS-free.

The vehicle moves a few metres between frames, so the satellite patch it needs overlaps the last
one almost entirely. :class:`AreaFeatureProvider` renders and encodes a larger **area** (side
``area_factor`` x the frame's patch, at the matcher's input resolution), and every frame cuts
its window - image and features - out of it at a **stride-aligned** offset; a new area centred
ahead of the vehicle is encoded on a background thread before the window reaches the edge.

Geometry (docs/conventions.md). The area is a north-up patch about its centre ``c0`` (its own
:class:`~xview_localizer.tiles.patch.PatchGeoref`, ``A x A`` px of ``m`` metres at the matcher's
input resolution, ``m = patch_m_per_px * patch_size_px / sat_size_px``). A window of ``P =
sat_size_px`` px has its top-left pixel at ``u0 = (A - P) / 2 + k_u * s`` (``s`` = the satellite
encoder's stride, ``k`` integer; ``(A - P) / 2`` is a multiple of ``s``), so its feature cells
are exactly cells ``u0 / s ...`` of the area's feature map. Its centre is ``(k_u s m, -k_v s m)``
metres east/north of ``c0``: the window centre snaps to a grid of ``s m`` (1.6 m for the compact
sparse matcher), the prior then lies up to half a step off the window centre, which the matcher
does not assume anyway. The window's georef is centred at that point. Its pixels were sampled
in the area's ENU plane, not the window's own: the two planes differ by < 1 mm and 1e-5 rad
over the 51 m a window moves in a 2x area (tested), far below the 0.1 px budget of the patch
sampler.

Resolution: the area is rendered at the localizer's ``patch_m_per_px`` (``area_factor *
patch_size_px`` px) and shrunk with ``cv2.INTER_AREA`` by the same integer factor the matcher
shrinks a frame's patch - a box filter, so cropping commutes with it at even offsets: a window
is the image the per-frame path would give for a patch centred on the window centre.

Equality with encoding the window itself (test_area_features.py): with a **frozen-norm**
satellite encoder (``sat_norm = "frozen"``, :mod:`.norms`) the encoder is a pure convolution
stack, so features agree to float precision (max abs 1e-4 of unit-norm features) in every cell
further than ``border_cells`` from the window edge; the border cells differ because the window
alone is zero-padded there; a window on the area's own edge has the same padding on that side.
With an instance-norm encoder (the packaged checkpoints) the statistics cover the area instead
of the window: interior features agree to cosine 0.985 (median) and :attr:`AreaFeatureProvider.exact`
is False; the poses are as accurate as with per-frame encoding within the noise of a 120-pair
held-out comparison (docs/realtime.md has the table), and a frame costs ~40 % less.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import cv2
import numpy as np
import torch

from ..core.errors import ConfigError, GeometryError, TileError, TileFetchError
from ..tiles.patch import PatchGeoref

#: after a synchronous area build fails (tiles missing around the vehicle: an area needs twice
#: the patch's reach), this many frames use their own patch before the next attempt
SYNC_RETRY_FRAMES = 20
#: longest wait (s) of a frame for the next area still being encoded when it needs it
ADOPT_WAIT_S = 2.0

__all__ = ["AreaWindow", "SatelliteArea", "AreaFeatureProvider", "window_offset_cells", "area_supported"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AreaWindow:
    """One frame's satellite input cut out of an area.

    Attributes:
        sat_rgb: (P, P, 3) uint8 north-up window at the matcher's input resolution.
        georef: its :class:`PatchGeoref` (centre = window centre, ``m_per_px`` = the area's).
        features: (D, P/s, P/s) satellite features of the window (on the matcher's device).
        area_id: serial number of the area it came from (diagnostics).
        margin_cells: fewest feature cells between the window and the area's edge.
    """

    sat_rgb: np.ndarray
    georef: PatchGeoref
    features: torch.Tensor
    area_id: int
    margin_cells: int


def window_offset_cells(east_m: float, north_m: float, m_per_cell: float) -> tuple[int, int]:
    """Stride-aligned window offset ``(k_u, k_v)`` (feature cells, u right / v down) of a point
    ``east_m`` / ``north_m`` of the area centre: the nearest cell step."""
    return int(round(east_m / m_per_cell)), int(round(-north_m / m_per_cell))


class SatelliteArea:
    """An encoded area: north-up image (A, A, 3) uint8, its georef, and its satellite features
    (D, A/s, A/s) from the matcher's encoder. Immutable after construction."""

    def __init__(self, rgb: np.ndarray, georef: PatchGeoref, features: torch.Tensor, stride_px: int,
                 window_px: int, area_id: int = 0) -> None:
        a = int(georef.width_px)
        if rgb.shape[:2] != (a, a) or georef.height_px != a:
            raise GeometryError(f"area image {rgb.shape} does not match its square georef {a} px")
        if (a - window_px) % (2 * stride_px) or a < window_px:
            raise GeometryError(f"area side {a} px and window {window_px} px must differ by a multiple of "
                                f"2 x stride {stride_px}")
        if features.dim() != 3 or tuple(features.shape[1:]) != (a // stride_px, a // stride_px):
            raise GeometryError(f"area features must be (D, {a // stride_px}, {a // stride_px}), "
                                f"got {tuple(features.shape)}")
        self.rgb, self.georef, self.features = rgb, georef, features
        self.stride_px, self.window_px, self.area_id = int(stride_px), int(window_px), int(area_id)
        self._enu = georef.enu()
        self.m_per_cell = float(georef.m_per_px) * self.stride_px
        #: how far (cells) a window centre may move from the area centre, each axis
        self.slack_cells = (a - window_px) // (2 * stride_px)

    def offset_cells(self, lat_deg: float, lon_deg: float) -> tuple[int, int]:
        """The stride-aligned window offset of a position (may not fit)."""
        e, n = self._enu.forward(lat_deg, lon_deg)
        return window_offset_cells(float(e), float(n), self.m_per_cell)

    def margin_cells(self, k_u: int, k_v: int) -> int:
        """Cells between a window at offset ``(k_u, k_v)`` and the area edge (< 0: outside)."""
        return self.slack_cells - max(abs(k_u), abs(k_v))

    def window(self, lat_deg: float, lon_deg: float) -> Optional[AreaWindow]:
        """The window nearest a position, None when it does not fit in the area."""
        k_u, k_v = self.offset_cells(lat_deg, lon_deg)
        margin = self.margin_cells(k_u, k_v)
        if margin < 0:
            return None
        s, p = self.stride_px, self.window_px
        c0 = self.slack_cells
        u0, v0 = (c0 + k_u) * s, (c0 + k_v) * s
        east_m, north_m = k_u * self.m_per_cell, -k_v * self.m_per_cell
        lat, lon = self._enu.inverse(east_m, north_m)
        geo = PatchGeoref(float(lat), float(lon), float(self.georef.m_per_px), p, p)
        cu, cv, n = u0 // s, v0 // s, p // s
        return AreaWindow(self.rgb[v0:v0 + p, u0:u0 + p], geo, self.features[:, cv:cv + n, cu:cu + n],
                          self.area_id, margin)


class AreaFeatureProvider:
    """Windows of encoded areas for a moving vehicle (see the module docstring).

    Args:
        tile_cache: anything with ``patch(lat, lon, size_px, m_per_px) -> (rgb, PatchGeoref)``.
        matcher: a loaded matcher with ``sat_input_size_px``, ``sat_stride_px``,
            ``encode_sat_area(rgb (A, A, 3) uint8 at input resolution) -> (D, A/s, A/s)`` and
            ``sat_area_exact`` (frozen-norm encoder).
        patch_size_px, patch_m_per_px: the localizer's per-frame patch (the matcher resizes it
            to ``sat_input_size_px``): the window covers the same ground.
        area_factor: area side / window side (integer >= 2 gives slack to move in).
        refresh_margin: start encoding the next area when the window is this fraction of the
            slack from the edge (0.5 = half-way).
        adopt_margin: switch to it when the window is this fraction of the slack from the edge.
        background: encode the next area on a thread (False: synchronously, for tests).

    Not thread-safe for callers (one worker calls :meth:`window`); the background thread only
    builds a new :class:`SatelliteArea` and swaps it in under a lock.
    """

    def __init__(self, tile_cache: Any, matcher: Any, patch_size_px: int, patch_m_per_px: float,
                 area_factor: int = 2, refresh_margin: float = 0.5, adopt_margin: float = 0.25,
                 background: bool = True) -> None:
        if int(area_factor) != area_factor or area_factor < 1:
            raise ConfigError(f"area_factor must be an integer >= 1, got {area_factor!r}")
        p = int(matcher.sat_input_size_px)
        self.tile_cache, self.matcher = tile_cache, matcher
        # a patch an integer multiple of the input is rendered at its resolution and shrunk by
        # INTER_AREA as the matcher shrinks a frame's patch; any other size is rendered at the
        # matcher's input resolution directly (the same ground extent)
        self.shrink = patch_size_px // p if patch_size_px % p == 0 else 1
        self.window_px = p
        self.stride_px = int(matcher.sat_stride_px)
        self.area_px = int(area_factor) * p
        if (self.area_px - p) % (2 * self.stride_px):
            raise ConfigError(f"area {self.area_px} px and window {p} px must differ by 2 x stride {self.stride_px}")
        self.m_per_px = float(patch_m_per_px) * patch_size_px / p
        self.refresh_margin = float(refresh_margin)
        self.adopt_margin = float(adopt_margin)
        if not 0.0 <= self.adopt_margin < self.refresh_margin <= 1.0:
            raise ConfigError(f"need 0 <= adopt_margin {adopt_margin} < refresh_margin {refresh_margin} <= 1")
        self.background = bool(background)
        self.exact = bool(getattr(matcher, "sat_area_exact", False))
        self._area: Optional[SatelliteArea] = None
        self._next: Optional[SatelliteArea] = None
        self._building = False
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._serial = 0
        self._last_pos: Optional[tuple[float, float]] = None
        self._sync_retry_at = 0
        #: counters and the last build time (diagnostics)
        self.stats = {"areas_built": 0, "areas_built_sync": 0, "windows": 0, "build_errors": 0, "last_build_s": 0.0}
        self.last_error: str = ""

    # -- building ----------------------------------------------------------------------
    def build_area(self, lat_deg: float, lon_deg: float) -> SatelliteArea:
        """Render and encode an area centred on a position (raises TileError / GeometryError)."""
        t0 = time.perf_counter()
        rgb, geo = self.tile_cache.patch(lat_deg, lon_deg, self.area_px * self.shrink, self.m_per_px / self.shrink)
        if self.shrink > 1:
            rgb = cv2.resize(rgb, (self.area_px, self.area_px), interpolation=cv2.INTER_AREA)
        geo = PatchGeoref(geo.center_lat_deg, geo.center_lon_deg, self.m_per_px, self.area_px, self.area_px)
        feats = self.matcher.encode_sat_area(rgb)
        with self._lock:
            self._serial += 1
            serial = self._serial
        area = SatelliteArea(np.ascontiguousarray(rgb), geo, feats, self.stride_px, self.window_px, serial)
        self.stats["last_build_s"] = time.perf_counter() - t0
        self.stats["areas_built"] += 1
        return area

    def _build_in_background(self, lat_deg: float, lon_deg: float) -> None:
        area = None
        try:
            area = self.build_area(lat_deg, lon_deg)
        except Exception as exc:  # noqa: BLE001 - a thread must not die silently
            self.stats["build_errors"] += 1
            error = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, (TileError, GeometryError)):  # not bad input: a bug, with its traceback
                log.exception("area features: building the next area failed")
            elif error != self.last_error:  # once per distinct cause, not once per frame
                log.warning("area features: could not build the next area: %s", error)
            self.last_error = error
        with self._lock:
            if area is not None:
                self._next = area
            self._building = False

    def _schedule(self, lat_deg: float, lon_deg: float) -> None:
        with self._lock:
            if self._building:
                return
            self._building = True
        if not self.background:
            self._build_in_background(lat_deg, lon_deg)
            return
        self._thread = threading.Thread(target=self._build_in_background, args=(lat_deg, lon_deg),
                                        name="xview_area_features", daemon=True)
        self._thread.start()

    def _ahead(self, lat_deg: float, lon_deg: float, area: SatelliteArea) -> tuple[float, float]:
        """Centre of the next area: the position moved half the slack along the motion (from the
        last two positions), so the vehicle enters the middle of the new area."""
        if self._last_pos is None:
            return lat_deg, lon_deg
        enu = area._enu
        e1, n1 = (float(v) for v in enu.forward(lat_deg, lon_deg))
        e0, n0 = (float(v) for v in enu.forward(*self._last_pos))
        d = math.hypot(e1 - e0, n1 - n0)
        if d < 0.05:
            return lat_deg, lon_deg
        lead_m = 0.5 * area.slack_cells * area.m_per_cell
        lat, lon = enu.inverse(e1 + (e1 - e0) / d * lead_m, n1 + (n1 - n0) / d * lead_m)
        return float(lat), float(lon)

    # -- per frame ---------------------------------------------------------------------
    def _take_next(self, wait: bool) -> Optional[SatelliteArea]:
        """The prepared next area (None if there is none), after waiting up to
        :data:`ADOPT_WAIT_S` for a build in flight when ``wait``."""
        t = self._thread
        if wait and t is not None and t.is_alive():
            t.join(ADOPT_WAIT_S)
        with self._lock:
            nxt, self._next = self._next, None
        return nxt

    def window(self, lat_deg: float, lon_deg: float) -> AreaWindow:
        """The window for a frame whose prior is at ``(lat_deg, lon_deg)``.

        From the current area while the window keeps more than ``adopt_margin`` of the slack to
        its edge; below that (or outside) from the next area, prepared ahead on the background
        thread since the window passed ``refresh_margin`` (waiting for it if it is still being
        built, so which area a frame uses depends on the positions only: a replay is
        reproducible); else from an area built now, synchronously (raises TileError /
        GeometryError like ``tile_cache.patch``, and for :data:`SYNC_RETRY_FRAMES` frames after
        such a failure TileFetchError at once: the caller cuts the frame's own patch instead)."""
        area = self._area
        win = area.window(lat_deg, lon_deg) if area is not None else None
        if win is None or win.margin_cells < self.adopt_margin * area.slack_cells:
            nxt = self._take_next(wait=True)
            nwin = nxt.window(lat_deg, lon_deg) if nxt is not None else None
            if nwin is not None and (win is None or nwin.margin_cells > win.margin_cells):
                self._area, win = nxt, nwin
        if win is None:
            if self.stats["windows"] < self._sync_retry_at:
                raise TileFetchError(f"area features: no area here (the last build failed: {self.last_error}); "
                                     f"retrying after {self._sync_retry_at - self.stats['windows']} more frames")
            try:
                area = self.build_area(lat_deg, lon_deg)
            except (TileError, GeometryError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._sync_retry_at = self.stats["windows"] + SYNC_RETRY_FRAMES
                raise
            self.stats["areas_built_sync"] += 1
            self._area = area
            win = area.window(lat_deg, lon_deg)
            if win is None:  # cannot happen: the centre window has the whole slack
                raise GeometryError(f"area features: no window at ({lat_deg}, {lon_deg}) in an area centred there")
        area = self._area
        if win.margin_cells < self.refresh_margin * area.slack_cells:
            with self._lock:
                pending = self._building or self._next is not None
            if not pending:
                self._schedule(*self._ahead(lat_deg, lon_deg, area))
        self._last_pos = (lat_deg, lon_deg)
        self.stats["windows"] += 1
        return win

    def skip(self) -> None:
        """Count a frame that could not get a window (it used its own patch): the back-off of a
        failed synchronous build counts these frames too."""
        self.stats["windows"] += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait for a background build to finish (call before dropping the matcher)."""
        t = self._thread
        if t is not None and t.is_alive():
            t.join(timeout_s)


def area_supported(matcher: Any) -> bool:
    """Whether a matcher can encode areas (the loaded dense-flow and sparse matchers can)."""
    return all(hasattr(matcher, a) for a in ("encode_sat_area", "sat_input_size_px", "sat_stride_px"))

