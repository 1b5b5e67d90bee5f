"""``TileCache``: tiles from one source through a bounded in-memory LRU of decoded tiles, the
on-disk store (:mod:`.store`) and, when online, HTTP (:mod:`.http`); metric patches on top.

Lookup order for a tile: negative cache (recent 404) -> memory -> disk -> network.
* Disk tiles older than ``max_age_s`` are revalidated when online (conditional GET; a 304
  just refreshes the fetch time); if that fails the stale tile is served with a warning.
  Offline, stale tiles are served as they are.
* Offline mode never touches the network; a cold cache raises :class:`TileNotCachedError`
  naming every missing tile.
* File and MBTiles sources are read directly (memory LRU only, no disk copy).
* A cache directory that cannot be written (read-only file system, a path component that is a
  file, a full disk) logs one clear warning and the cache keeps serving from memory;
  :class:`TileCacheError` is raised only when nothing could be served at all.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable, Mapping, Optional, Tuple

import numpy as np

from ..core.errors import (
    ConfigError,
    GeometryError,
    TileCacheError,
    TileFetchError,
    TileNotCachedError,
)
from ..core.geo import MAX_LAT_DEG, TILE_SIZE_PX, ground_resolution_m_per_px, latlon_to_global_px
from .codec import decode_tile, sniff_extension
from .http import DEFAULT_USER_AGENT, HttpFetcher
from .patch import PatchGeoref, PatchSampler, choose_zoom
from .source import FolderSource, HttpTemplate, MbtilesSource, expand_env, parse_source, redact
from .store import DiskStore

log = logging.getLogger(__name__)

Tile = Tuple[int, int, int]
STATS_FILE = "stats.json"


def default_cache_dir() -> Path:
    """``$XVIEW_TILE_CACHE`` or ``~/.cache/xview_localizer/tiles``."""
    env = os.environ.get("XVIEW_TILE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "xview_localizer" / "tiles"


@dataclass(frozen=True)
class TileCacheConfig:
    """Tile cache settings (all validated on construction).

    ``headers`` values may name environment variables as ``${NAME}`` (API keys); they are
    expanded only in requests. ``zoom`` forces a zoom; otherwise patches use the finest zoom
    they need, capped at ``max_zoom``.
    """

    offline: bool = False
    max_age_s: float = 7 * 24 * 3600.0
    max_cache_bytes: int = 2 * 1024**3
    memory_tiles: int = 512
    timeout_s: float = 10.0
    connect_timeout_s: Optional[float] = None
    retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 30.0
    user_agent: str = DEFAULT_USER_AGENT
    max_concurrency: int = 6
    negative_ttl_s: float = 300.0
    min_zoom: int = 0
    max_zoom: int = 19
    zoom: Optional[int] = None
    subdomains: str = "abc"
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def pos(name: str, allow_zero: bool = False) -> None:
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v < 0 or (v == 0 and not allow_zero):
                raise ConfigError(f"TileCacheConfig.{name} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")

        for name in ("max_age_s", "max_cache_bytes", "memory_tiles", "timeout_s", "max_concurrency"):
            pos(name)
        if self.connect_timeout_s is not None:
            pos("connect_timeout_s")
        for name in ("retries", "backoff_s", "backoff_max_s", "retry_after_max_s", "negative_ttl_s"):
            pos(name, allow_zero=True)
        if self.memory_tiles < 16:
            raise ConfigError(f"TileCacheConfig.memory_tiles must be >= 16, got {self.memory_tiles}")
        if not (0 <= self.min_zoom <= self.max_zoom <= 24):
            raise ConfigError(
                f"TileCacheConfig zooms must satisfy 0 <= min_zoom <= max_zoom <= 24, got {self.min_zoom}, {self.max_zoom}"
            )
        if self.zoom is not None and not (0 <= self.zoom <= 24):
            raise ConfigError(f"TileCacheConfig.zoom must be in [0, 24], got {self.zoom}")
        if not self.user_agent.strip():
            raise ConfigError("TileCacheConfig.user_agent must not be empty")
        for k, v in dict(self.headers).items():
            if not isinstance(k, str) or not isinstance(v, str) or not k.strip():
                raise ConfigError(f"TileCacheConfig.headers must map names to strings, got {k!r}")
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))


@dataclass(frozen=True)
class PrefetchResult:
    """Outcome of :meth:`TileCache.prefetch`: counts and the failed tiles with their causes."""

    n_requested: int
    n_already_cached: int
    n_fetched: int
    n_not_found: int
    failed: Mapping[Tile, str]

    @property
    def ok(self) -> bool:
        return not self.failed


_COUNTERS = (
    "requests", "memory_hits", "disk_hits", "fetched", "revalidated", "not_found",
    "negative_hits", "errors", "stale_served", "bytes_fetched",
)  # fmt: skip


def _fmt_tiles(tiles: Iterable[Tile], limit: int = 12) -> str:
    tiles = sorted(tiles)
    s = ", ".join(f"{z}/{x}/{y}" for z, x, y in tiles[:limit])
    return s + (f" and {len(tiles) - limit} more" if len(tiles) > limit else "")


class TileCache:
    """Tiles and metric patches from one tile source (see the module docstring).

    ``source_url`` is parsed by :func:`~xview_localizer.tiles.source.parse_source`;
    ``cache_dir`` None means :func:`default_cache_dir`. Thread-safe. Use as a context manager
    or call :meth:`close` (which also persists the hit counters for ``tiles info``).
    """

    def __init__(self, source_url: str, cache_dir: Optional[Path] = None, config: Optional[TileCacheConfig] = None) -> None:
        self.config = config or TileCacheConfig()
        self.source = parse_source(source_url, subdomains=self.config.subdomains)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._lock = threading.Lock()
        self._memory: "OrderedDict[Tile, Tuple[np.ndarray, float]]" = OrderedDict()
        self._negative: dict[Tile, Tuple[float, str, str]] = {}  # tile -> (until, cause, kind)
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._warned: set[str] = set()
        self._sampler = PatchSampler()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._fetcher: Optional[HttpFetcher] = None
        self._secrets: list[str] = []
        self.store: Optional[DiskStore] = None
        if isinstance(self.source, HttpTemplate):
            self._secrets = self.source.secrets(self.config.headers)
            self.store = DiskStore(self.cache_dir, self.source.source_id, self.config.max_cache_bytes)
            if not self.store.readable and self.config.offline:
                raise TileCacheError(
                    f"offline mode needs a readable tile cache, but {self.store.read_error}; nothing can be served"
                )
            if not self.store.writable:
                self._warn_once(
                    "disk", f"tile cache directory is not writable ({self.store.write_error}); "
                    "serving from memory only, nothing will persist"
                )
            if not self.config.offline:
                expand_env(self.source.url, "tile URL")  # fail early on an unset ${NAME}
                self._fetcher = HttpFetcher(
                    self.source,
                    timeout_s=self.config.timeout_s,
                    retries=self.config.retries,
                    backoff_s=self.config.backoff_s,
                    backoff_max_s=self.config.backoff_max_s,
                    retry_after_max_s=self.config.retry_after_max_s,
                    user_agent=self.config.user_agent,
                    max_concurrency=self.config.max_concurrency,
                    headers=self.config.headers,
                    validate=decode_tile,
                    connect_timeout_s=self.config.connect_timeout_s,
                )
        self._stats_at_open = dict(self._counters)

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> "TileCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop worker threads, close connections, persist counters (best effort). Fetches not
        yet sent fail at once; those in flight finish (a tile on disk is always whole)."""
        if self._fetcher is not None:
            self._fetcher.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if isinstance(self.source, MbtilesSource):
            self.source.close()
        self._persist_stats()

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", redact(msg, self._secrets))

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix="tiles")
            return self._executor

    # -- single tiles -----------------------------------------------------------------
    def _remember(self, tile: Tile, rgb: np.ndarray, fetched_s: float) -> None:
        with self._lock:
            self._memory[tile] = (rgb, fetched_s)
            self._memory.move_to_end(tile)
            while len(self._memory) > self.config.memory_tiles:
                self._memory.popitem(last=False)

    def _from_memory(self, tile: Tile) -> Optional[np.ndarray]:
        with self._lock:
            self._counters["requests"] += 1
            hit = self._memory.get(tile)
            if hit is None:
                return None
            rgb, fetched_s = hit
            if self._fetcher is not None and time.time() - fetched_s > self.config.max_age_s:
                return None  # stale in memory: go through disk / revalidation
            self._memory.move_to_end(tile)
            self._counters["memory_hits"] += 1
            return rgb

    def _check_tile(self, z: int, x: int, y: int) -> Tile:
        if not (0 <= z <= 30) or not (0 <= x < 2**z) or not (0 <= y < 2**z):
            raise GeometryError(f"tile {z}/{x}/{y} is outside the XYZ pyramid")
        return int(z), int(x), int(y)

    def get_tile(self, z: int, x: int, y: int) -> np.ndarray:
        """One decoded tile, (256, 256, 3) uint8 RGB (shared, do not modify)."""
        tile = self._check_tile(z, x, y)
        rgb = self._from_memory(tile)
        if rgb is not None:
            return rgb
        return self._load(tile)

    def _load(self, tile: Tile) -> np.ndarray:
        """Miss in memory: negative cache, local source, disk, network."""
        z, x, y = tile
        now = time.time()
        with self._lock:
            neg = self._negative.get(tile)
        if neg is not None and neg[0] > time.monotonic():
            self._count("negative_hits")
            raise TileFetchError(f"tile {z}/{x}/{y}: {neg[1]} (remembered for {self.config.negative_ttl_s:g} s)",
                                 kind=neg[2])
        if isinstance(self.source, (FolderSource, MbtilesSource)):
            data = self.source.read(z, x, y)
            if data is None:
                self._negative_put(tile, f"not found in {self.source.describe()}")
                raise TileFetchError(f"tile {z}/{x}/{y}: not found in {self.source.describe()}", kind="not_found")
            try:
                rgb = decode_tile(data)
            except ValueError as exc:
                raise TileFetchError(f"tile {z}/{x}/{y} from {self.source.describe()}: {exc}",
                                     kind="undecodable") from None
            self._count("disk_hits")
            self._remember(tile, rgb, now)
            return rgb
        assert self.store is not None
        cached = self.store.read(z, x, y, self.source.extension)
        stale: Optional[np.ndarray] = None
        if cached is not None:
            data, fetched_s, path = cached
            try:
                rgb = decode_tile(data)
            except ValueError as exc:
                log.warning("removing undecodable cached tile %s: %s", path, exc)
                self.store.remove(path)
            else:
                if self._fetcher is None or now - fetched_s <= self.config.max_age_s:
                    self._count("disk_hits")
                    self._remember(tile, rgb, fetched_s if self._fetcher else now)
                    return rgb
                stale = rgb
                try:
                    out = self._fetcher.fetch(z, x, y, if_modified_since=fetched_s)
                except TileFetchError as exc:
                    self._count("stale_served")
                    self._warn_once("stale", f"serving tiles older than max_age_s because refreshing failed: {exc}")
                    self._remember(tile, stale, now)
                    return stale
                if out.status == "not_modified":
                    self.store.mark_fresh(path)
                    self._count("revalidated")
                    self._remember(tile, stale, now)
                    return stale
                if out.status == "ok":
                    return self._accept(tile, out.data)
                # 404 now for a tile we have: keep serving what we have
                self._count("stale_served")
                self._remember(tile, stale, now)
                return stale
        if self._fetcher is None:
            raise TileNotCachedError(
                f"offline mode: tile {z}/{x}/{y} is not in the cache {self.store.root}"
            )
        try:
            out = self._fetcher.fetch(z, x, y)
        except TileFetchError:
            self._count("errors")
            raise
        if out.status == "not_found":
            self._count("not_found")
            self._negative_put(tile, "HTTP 404 Not Found")
            raise TileFetchError(f"tile {z}/{x}/{y}: HTTP 404 Not Found", kind="not_found")
        if out.status != "ok":  # 304 without a conditional request: treat as a server error
            raise TileFetchError(f"tile {z}/{x}/{y}: unexpected HTTP 304", kind="http_status")
        return self._accept(tile, out.data)

    def _negative_put(self, tile: Tile, cause: str) -> None:
        if self.config.negative_ttl_s > 0:
            now = time.monotonic()
            with self._lock:
                if len(self._negative) >= 1024:  # bounded: forget the expired entries
                    self._negative = {t: v for t, v in self._negative.items() if v[0] > now}
                self._negative[tile] = (now + self.config.negative_ttl_s, cause, "not_found")

    def _accept(self, tile: Tile, data: bytes, remember: bool = True) -> np.ndarray:
        """A fetched, already validated body: decode, store on disk (atomically), remember."""
        z, x, y = tile
        rgb = decode_tile(data)  # the fetcher validated it: this cannot fail
        self._count("fetched")
        self._count("bytes_fetched", len(data))
        self._write_disk(tile, data)
        if remember:
            self._remember(tile, rgb, time.time())
        return rgb

    def _write_disk(self, tile: Tile, data: bytes) -> bool:
        if self.store is None or not self.store.writable:
            return False
        try:
            self.store.write(*tile, sniff_extension(data), data)
            return True
        except OSError as exc:
            self.store.write_error = f"writing {self.store.root}: {exc.strerror or exc}"
            self._warn_once(
                "disk", f"tile cache directory is not writable ({self.store.write_error}); "
                "serving from memory only, nothing will persist"
            )
            return False

    # -- many tiles -------------------------------------------------------------------
    def get_tiles(self, tiles: Iterable[Tile]) -> dict[Tile, np.ndarray]:
        """Decoded tiles for every ``(z, x, y)``, fetching misses concurrently.

        Raises :class:`TileNotCachedError` (offline) or :class:`TileFetchError` naming every
        tile that could not be served and the first cause.
        """
        out: dict[Tile, np.ndarray] = {}
        misses: list[Tile] = []
        for t in tiles:
            t = self._check_tile(*t)
            if t in out:
                continue
            rgb = self._from_memory(t)
            if rgb is None:
                misses.append(t)
            else:
                out[t] = rgb
        if not misses:
            return out
        errors: dict[Tile, Exception] = {}
        if len(misses) == 1:
            try:
                out[misses[0]] = self._load(misses[0])
            except TileFetchError as exc:
                errors[misses[0]] = exc
        else:
            futures = {t: self._pool().submit(self._load, t) for t in misses}
            for t, fut in futures.items():
                try:
                    out[t] = fut.result()
                except TileFetchError as exc:
                    errors[t] = exc
        if errors:
            first = next(iter(errors.values()))
            if all(isinstance(e, TileNotCachedError) for e in errors.values()):
                root = self.store.root if self.store is not None else self.cache_dir
                raise TileNotCachedError(
                    f"offline mode: {len(errors)} tile(s) not in the cache {root}: {_fmt_tiles(errors)}"
                )
            raise TileFetchError(f"{len(errors)} tile(s) unavailable: {_fmt_tiles(errors)}; first cause: {first}",
                                 kind=getattr(first, "kind", ""))
        return out

    # -- patches ----------------------------------------------------------------------
    def zoom_for(self, lat_deg: float, m_per_px: float) -> int:
        """The zoom :meth:`patch` uses at ``lat_deg`` for ``m_per_px``."""
        if self.config.zoom is not None:
            return self.config.zoom
        max_zoom = self.config.max_zoom
        if isinstance(self.source, MbtilesSource) and self.source.max_zoom is not None:
            max_zoom = min(max_zoom, self.source.max_zoom)
        return choose_zoom(lat_deg, m_per_px, max_zoom, self.config.min_zoom)

    def patch(self, lat_deg: float, lon_deg: float, size_px, m_per_px: float) -> Tuple[np.ndarray, PatchGeoref]:
        """A north-up RGB patch centred on ``(lat_deg, lon_deg)``.

        ``size_px`` is an int (square) or ``(H, W)``; ``m_per_px`` true ground metres per
        pixel. Returns ``(rgb (H,W,3) uint8, PatchGeoref)``; pixel ``(u, v)`` shows the ground
        at ``georef.px_to_enu``. Raises ``GeometryError`` on bad input and
        ``TileFetchError`` / ``TileNotCachedError`` naming missing tiles.
        """
        sizes = (size_px, size_px) if isinstance(size_px, (int, np.integer)) else tuple(size_px)
        if len(sizes) != 2 or any(isinstance(s, bool) or int(s) != s or not 1 <= s <= 8192 for s in sizes):
            raise GeometryError(f"size_px must be an int or (H, W) in [1, 8192], got {size_px!r}")
        if not (isinstance(m_per_px, (int, float)) and math.isfinite(m_per_px) and m_per_px > 0):
            raise GeometryError(f"m_per_px must be positive and finite, got {m_per_px!r}")
        if not (math.isfinite(lat_deg) and math.isfinite(lon_deg)) or abs(lat_deg) > MAX_LAT_DEG or abs(lon_deg) > 180:
            raise GeometryError(f"patch centre ({lat_deg!r}, {lon_deg!r}) is not a valid Web-Mercator position")
        zoom = self.zoom_for(lat_deg, m_per_px)
        plan = self._sampler.plan(lat_deg, lon_deg, (int(sizes[0]), int(sizes[1])), float(m_per_px), zoom)
        tiles = self.get_tiles(plan.tiles)
        return PatchSampler.render(plan, tiles), plan.georef

    # -- prefetch ---------------------------------------------------------------------
    def _prefetch_one(self, tile: Tile) -> str:
        z, x, y = tile
        assert self.store is not None
        cached = self.store.read(z, x, y, self.source.extension)
        if cached is not None and time.time() - cached[1] <= self.config.max_age_s:
            return "cached"
        if self._fetcher is None:
            if cached is not None:
                return "cached"
            raise TileNotCachedError(f"offline mode: tile {z}/{x}/{y} is not in the cache")
        out = self._fetcher.fetch(z, x, y, if_modified_since=cached[1] if cached else None)
        if out.status == "not_modified" and cached is not None:
            self.store.mark_fresh(cached[2])
            return "cached"
        if out.status == "not_found":
            self._negative_put(tile, "HTTP 404 Not Found")
            return "not_found"
        if out.status != "ok":
            raise TileFetchError(f"tile {z}/{x}/{y}: unexpected HTTP 304")
        self._count("fetched")
        self._count("bytes_fetched", len(out.data))
        if not self._write_disk(tile, out.data):
            raise TileCacheError(f"tile {z}/{x}/{y} fetched but not stored: {self.store.write_error}")
        return "fetched"

    def prefetch(self, tiles: Iterable[Tile], progress: Optional[Callable[[int], None]] = None) -> PrefetchResult:
        """Download ``tiles`` into the disk cache (``max_concurrency`` in flight), skipping
        fresh ones. Failures do not stop the others; they are returned in ``failed``.
        ``progress(n)`` is called as tiles complete. HTTP sources only."""
        if not isinstance(self.source, HttpTemplate):
            raise TileCacheError(f"prefetch needs an http(s) source; {self.source.describe()} is local already")
        assert self.store is not None
        if not self.store.writable:
            raise TileCacheError(f"cannot prefetch: {self.store.write_error}")
        todo = sorted({self._check_tile(*t) for t in tiles})
        counts = {"cached": 0, "fetched": 0, "not_found": 0}
        failed: dict[Tile, str] = {}
        futures = {self._pool().submit(self._prefetch_one, t): t for t in todo}
        from concurrent.futures import as_completed

        for fut in as_completed(futures):
            t = futures[fut]
            try:
                counts[fut.result()] += 1
            except (TileFetchError, TileCacheError) as exc:
                self._count("errors")
                failed[t] = redact(str(exc), self._secrets)
            if progress is not None:
                progress(1)
        return PrefetchResult(len(todo), counts["cached"], counts["fetched"], counts["not_found"], failed)

    # -- stats ------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counters of this instance plus the disk usage of the whole cache directory."""
        with self._lock:
            c = dict(self._counters)
            c["memory_tiles"] = len(self._memory)
        hits = c["memory_hits"] + c["disk_hits"] + c["revalidated"]
        c["hit_rate"] = hits / c["requests"] if c["requests"] else 0.0
        c["source_id"] = self.source.source_id
        if self.store is not None:
            c["disk_bytes"] = self.store.total_bytes
            c["disk_files"] = self.store.n_files()
            c["evicted_files"] = self.store.evicted_files
            c["disk_writable"] = self.store.writable
        return c

    def _persist_stats(self) -> None:
        if self.store is None or not self.store.writable:
            return
        with self._lock:
            delta = {k: self._counters[k] - self._stats_at_open.get(k, 0) for k in _COUNTERS}
            self._stats_at_open = dict(self._counters)
        if not any(delta.values()):
            return
        path = self.cache_dir / STATS_FILE
        try:
            total = json.loads(path.read_text()) if path.is_file() else {}
            if not isinstance(total, dict):
                total = {}
        except (OSError, ValueError):
            total = {}
        per = total.setdefault(self.source.source_id, {})
        for k, v in delta.items():
            per[k] = int(per.get(k, 0)) + int(v)
        tmp = path.with_name(f".{STATS_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(total, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("could not persist tile stats: %s", exc)


# --------------------------------------------------------------------------------------
# tile sets for prefetching
# --------------------------------------------------------------------------------------
def tiles_around(lat_deg: float, lon_deg: float, radius_m: float, zoom: int) -> set[Tile]:
    """XYZ tiles at ``zoom`` that intersect the circle of ``radius_m`` around a point."""
    if not (math.isfinite(radius_m) and radius_m >= 0):
        raise GeometryError(f"radius_m must be >= 0 and finite, got {radius_m!r}")
    if not (0 <= zoom <= 24):
        raise GeometryError(f"zoom must be in [0, 24], got {zoom}")
    cx, cy = latlon_to_global_px(lat_deg, lon_deg, zoom)
    cx, cy = float(cx), float(cy)
    r_px = radius_m / ground_resolution_m_per_px(lat_deg, zoom) + 1.0
    ts = TILE_SIZE_PX
    n = 2**zoom
    out: set[Tile] = set()
    for ty in range(max(0, math.floor((cy - r_px) / ts)), min(n - 1, math.floor((cy + r_px) / ts)) + 1):
        for tx in range(math.floor((cx - r_px) / ts), math.floor((cx + r_px) / ts) + 1):
            nx = min(max(cx, tx * ts), (tx + 1) * ts)
            ny = min(max(cy, ty * ts), (ty + 1) * ts)
            if (nx - cx) ** 2 + (ny - cy) ** 2 <= r_px**2:
                out.add((zoom, tx % n, ty))
    return out


def tiles_along(latlons: Iterable[Tuple[float, float]], radius_m: float, zoom: int) -> set[Tile]:
    """Tiles within ``radius_m`` of any point of a track of ``(lat_deg, lon_deg)``. Points
    closer than ``step = radius_m / 4`` to the last one used are skipped; used points cover
    ``radius_m + step`` so nothing within ``radius_m`` of a skipped point is missed."""
    out: set[Tile] = set()
    last: Optional[Tuple[float, float]] = None
    step_m = max(radius_m / 4.0, 1.0)
    for lat, lon in latlons:
        if last is not None:
            dn = (lat - last[0]) * 111_320.0
            de = (lon - last[1]) * 111_320.0 * math.cos(math.radians(lat))
            if dn * dn + de * de < step_m * step_m:
                continue
        last = (lat, lon)
        out |= tiles_around(lat, lon, radius_m + step_m, zoom)
    return out


def read_stats_file(cache_dir: Path) -> dict:
    """The persisted per-source counters of ``cache_dir`` (empty when absent or unreadable)."""
    try:
        d = json.loads((Path(cache_dir) / STATS_FILE).read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}
