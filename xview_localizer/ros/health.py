"""The node's health bookkeeping for /diagnostics: counters and per-stage timings
(:class:`Stats`), the tile cache as the node sees it (:class:`TileWatch`: slow patches, failure
kinds, an unwritable cache), which causes are errors, and the DiagnosticArray built from a
snapshot (:func:`diagnostics_array`). Latencies are seconds inside, milliseconds on the wire."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ..core.errors import TileError, TileFetchError, TileSourceError
from .interface import NODE_NAME

#: Tile failures by kind (``TileFetchError.kind``) -> their diagnostic cause (besides ``tiles_unavailable``).
TILE_KIND_CAUSES = {kind: f"tiles_{kind}" for kind in TileFetchError.KINDS}
#: Causes whose diagnostic level is ERROR (the others are WARN).
ERROR_CAUSES = {"matcher_unavailable", "tiles_unavailable", "tiles_unconfigured", "internal_error",
                *TILE_KIND_CAUSES.values()}
#: Per-stage latency statistics on /diagnostics are over this many most recent samples.
LATENCY_WINDOW_FRAMES = 100


class UnavailableTiles:
    """Stands in for a tile cache that could not be built: every patch request fails with the
    construction error (so the cause shows on /diagnostics on every frame)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail

    def patch(self, lat_deg, lon_deg, size_px, m_per_px):
        raise TileSourceError(self.detail)


class TileWatch:
    """The node's view of the tile cache: times every patch (cause ``tiles_slow`` over
    ``tile_slow_s``, with the measured latency; ``node`` gives ``cfg.tile_slow_s``, ``_report`` and
    ``_cache_write_error``), names each failure by its kind
    (``tiles_http_status``, ``tiles_timeout``, ... besides the core's ``tiles_unavailable``) and
    notices a cache directory that cannot be written (``tile_cache_not_writable``)."""

    def __init__(self, cache: Any, node: Any) -> None:
        self.cache = cache
        self._node = node
        self._latencies_s: deque = deque(maxlen=50)

    def write_error(self) -> str:
        store = getattr(self.cache, "store", None)
        return "" if store is None or store.writable else str(store.write_error)

    def patch(self, lat_deg, lon_deg, size_px, m_per_px):
        node = self._node
        t0 = time.monotonic()
        try:
            return self.cache.patch(lat_deg, lon_deg, size_px, m_per_px)
        except TileError as exc:
            key = TILE_KIND_CAUSES.get(getattr(exc, "kind", ""))
            if key is not None:
                node._report(key, str(exc))
            raise
        finally:
            dt_s = time.monotonic() - t0
            self._latencies_s.append(dt_s)
            slow_s = node.cfg.tile_slow_s
            if dt_s > slow_s:
                node._report("tiles_slow", f"a satellite patch took {dt_s * 1e3:.0f} ms (tile_slow_s = {slow_s:g}; "
                                           f"max of the last {len(self._latencies_s)}: "
                                           f"{max(self._latencies_s) * 1e3:.0f} ms): the tile source is slow")
            err = self.write_error()
            if err:
                node._cache_write_error = err

    def close(self) -> None:
        close = getattr(self.cache, "close", None)
        if callable(close):
            close()


def raised_in(exc: BaseException, obj: Any) -> bool:
    """Whether the traceback of ``exc`` passes through the source file of ``obj``'s class or
    through ``xview_localizer/matcher/`` (a matcher that raised something else than XViewError)."""
    import inspect

    files = {str(Path(__file__).resolve().parents[1] / "matcher")}
    try:
        files.add(str(Path(inspect.getfile(type(obj))).resolve()))
    except (TypeError, OSError):
        pass
    tb = exc.__traceback__
    while tb is not None:
        fname = str(Path(tb.tb_frame.f_code.co_filename).resolve())
        if any(fname == f or fname.startswith(f + os.sep) for f in files):
            return True
        tb = tb.tb_next
    return False


def latency_values(stages_s: dict[str, list[float]]) -> dict[str, str]:
    """The ``latency`` status values: for each stage (sorted) with samples, ``<stage>_p50_ms``,
    ``<stage>_p90_ms``, ``<stage>_mean_ms`` and ``<stage>_max_ms`` (milliseconds, 2 decimals)
    over the samples given (the node keeps the last :data:`LATENCY_WINDOW_FRAMES` per stage)."""
    out = {}
    for stage, vals_s in sorted(stages_s.items()):
        if not len(vals_s):
            continue
        ms = 1e3 * np.asarray(vals_s, dtype=float)
        p50_ms, p90_ms = np.percentile(ms, [50.0, 90.0])
        out[f"{stage}_p50_ms"] = f"{p50_ms:.2f}"
        out[f"{stage}_p90_ms"] = f"{p90_ms:.2f}"
        out[f"{stage}_mean_ms"] = f"{float(ms.mean()):.2f}"
        out[f"{stage}_max_ms"] = f"{float(ms.max()):.2f}"
    return out


class Stats:
    """Counters and timings for /diagnostics (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = defaultdict(int)       # totals per event
        self.window: dict[str, int] = defaultdict(int)       # since the last diagnostics message
        self.causes: dict[str, str] = {}                      # cause -> last detail
        self.cause_counts: dict[str, int] = defaultdict(int)
        self.cause_window: dict[str, int] = defaultdict(int)
        self.stage_s: dict[str, deque] = defaultdict(lambda: deque(maxlen=LATENCY_WINDOW_FRAMES))

    def event(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n
            self.window[name] += n

    def cause(self, key: str, detail: str) -> bool:
        """Record one occurrence; True when this cause is new (log it once)."""
        with self.lock:
            new = key not in self.causes
            self.causes[key] = detail
            self.cause_counts[key] += 1
            self.cause_window[key] += 1
            return new

    def timing(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.stage_s[stage].append(seconds)


def diagnostics_array(stats: Stats, *, period_s: float, stamp: Any, hardware_id: str, matcher_state: str,
                      cache_write_error: str, use_depth: bool, extrinsics_source: str,
                      logged: set[str]) -> DiagnosticArray:
    """One /diagnostics message from ``stats`` (its per-period windows are cleared):

    - ``localization``: OK while poses come without any cause, WARN with causes, ERROR when no
      pose came and a cause in :data:`ERROR_CAUSES` is active; rates per second over the period,
      totals, the extrinsics source and the matcher state.
    - ``latency``: :func:`latency_values` of the last :data:`LATENCY_WINDOW_FRAMES` per stage.
    - one status per cause ever seen: its level while recent, else OK "no recent occurrence"
      (and it is dropped from ``logged`` so that it is logged again when it comes back).

    ``matcher_unavailable`` and ``tile_cache_not_writable`` are lasting conditions: while they
    hold they count as recent in every period, frames or not."""
    st = stats
    with st.lock:
        window = dict(st.window)
        st.window.clear()
        cause_window = dict(st.cause_window)
        st.cause_window.clear()
        causes = dict(st.causes)
        cause_counts = dict(st.cause_counts)
        counts = dict(st.counts)
        stages = {k: list(v) for k, v in st.stage_s.items()}
    if matcher_state == "unavailable" and "matcher_unavailable" in causes:
        cause_window["matcher_unavailable"] = max(1, cause_window.get("matcher_unavailable", 0))
    if cache_write_error and "tile_cache_not_writable" in causes:
        cause_window["tile_cache_not_writable"] = max(1, cause_window.get("tile_cache_not_writable", 0))
    arr = DiagnosticArray()
    arr.header.stamp = stamp

    def status(name: str, level: int, message: str, values: dict) -> DiagnosticStatus:
        return DiagnosticStatus(level=level, name=f"{NODE_NAME}: {name}", message=message, hardware_id=hardware_id,
                                values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

    rates = {f"{k}_per_s": f"{window.get(k, 0) / period_s:.2f}"
             for k in ("images", "camera_infos", "fixes", "fixes_valid", "odoms", "frames_processed", "poses")}
    totals = {f"{k}_total": counts.get(k, 0)
              for k in ("images", "frames_processed", "frames_dropped", "poses", "fixes", "fixes_valid")}
    recent_poses = window.get("poses", 0)
    active = sorted(k for k in cause_window)
    if recent_poses and not active:
        level, message = DiagnosticStatus.OK, "localizing"
    elif recent_poses:
        level, message = DiagnosticStatus.WARN, "localizing; some frames rejected: " + ", ".join(active)
    elif any(k in ERROR_CAUSES for k in active):
        level, message = DiagnosticStatus.ERROR, "no pose: " + ", ".join(active)
    else:
        level = DiagnosticStatus.WARN
        message = "no pose: " + (", ".join(active) if active else "no images processed")
    if use_depth:
        totals.update({f"{k}_total": counts.get(k, 0)
                       for k in ("depths", "frames_with_depth", "frames_without_depth", "depth_resized")})
    summary = {**rates, **totals, "frames_dropped_recent": window.get("frames_dropped", 0),
               "extrinsics_source": extrinsics_source or "none", "matcher": matcher_state}
    arr.status.append(status("localization", level, message, summary))
    arr.status.append(status("latency", DiagnosticStatus.OK,
                             f"per-stage latency (last {LATENCY_WINDOW_FRAMES} frames)", latency_values(stages)))
    for key in sorted(causes):
        recent = cause_window.get(key, 0)
        if recent:
            lvl = DiagnosticStatus.ERROR if key in ERROR_CAUSES else DiagnosticStatus.WARN
            msg = causes[key]
        else:
            lvl, msg = DiagnosticStatus.OK, "no recent occurrence"
            logged.discard(key)  # log again if it comes back
        arr.status.append(status(key, lvl, msg, {"recent": recent, "total": cause_counts.get(key, 0),
                                                 "last_detail": causes[key]}))
    return arr
