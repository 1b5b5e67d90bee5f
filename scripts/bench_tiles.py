#!/usr/bin/env python3
"""Benchmark the tile cache against the local tile server.

* warm-cache patch time: 512x512 px at 0.2 m/px (zoom 19 at 49 deg N), tiles in memory,
  centres jittered within +-20 m (median and p90 over --runs calls);
* cold-fetch throughput (tiles/s) with 1 and with 6 requests in flight, from a fresh disk
  cache (includes validation, decode and the fsync'ed atomic write), with the server adding
  0 ms and 20 ms per request (to mimic a network).

    .venv/bin/python scripts/bench_tiles.py [--runs 200] [--out bench_tiles.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from xview_localizer.tiles.cache import TileCache, TileCacheConfig, tiles_around
from xview_localizer.tiles.server import serve_directory
from xview_localizer.tiles.synthetic import MarkerWorld, write_pyramid

LAT, LON = 49.01, 8.42


def bench_warm_patch(pyramid: Path, cache_dir: Path, runs: int) -> dict:
    server = serve_directory(pyramid, port=0)
    try:
        rng = np.random.default_rng(0)
        centres = [(LAT + dn / 111_320.0, LON + de / 73_000.0) for de, dn in rng.uniform(-20, 20, (20, 2))]
        with TileCache(server.url_template(), cache_dir, TileCacheConfig()) as cache:
            t0 = time.perf_counter()
            cache.patch(LAT, LON, 512, 0.2)
            first_ms = (time.perf_counter() - t0) * 1e3
            for lat, lon in centres:  # warm: tiles in memory, grid cached
                cache.patch(lat, lon, 512, 0.2)
            times, cpu = [], []
            for i in range(runs):
                lat, lon = centres[i % len(centres)]
                c0 = time.process_time()
                t0 = time.perf_counter()
                cache.patch(lat, lon, 512, 0.2)
                times.append((time.perf_counter() - t0) * 1e3)
                cpu.append((time.process_time() - c0) * 1e3)
    finally:
        server.shutdown()
    times.sort()
    return {
        "size_px": 512,
        "m_per_px": 0.2,
        "runs": runs,
        "median_ms": statistics.median(times),
        "p90_ms": times[int(0.9 * (len(times) - 1))],
        "min_ms": times[0],
        "cpu_median_ms": statistics.median(cpu),
        "first_call_cold_ms": first_ms,
    }


def bench_cold_fetch(pyramid: Path, tiles: list, concurrency: int, latency_ms: float, work: Path) -> dict:
    server = serve_directory(pyramid, port=0, latency_s=latency_ms / 1e3)
    try:
        cache_dir = Path(tempfile.mkdtemp(dir=work))
        cfg = TileCacheConfig(max_concurrency=concurrency, retries=0, timeout_s=10.0)
        with TileCache(server.url_template(), cache_dir, cfg) as cache:
            t0 = time.perf_counter()
            result = cache.prefetch(tiles)
            elapsed = time.perf_counter() - t0
    finally:
        server.shutdown()
    if not result.ok or result.n_fetched != len(tiles):
        raise SystemExit(f"cold fetch failed: {result}")
    return {
        "concurrency": concurrency,
        "server_latency_ms": latency_ms,
        "tiles": len(tiles),
        "seconds": elapsed,
        "tiles_per_s": len(tiles) / elapsed,
        "max_in_flight_at_server": server.max_in_flight,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=200, help="warm patch calls timed")
    p.add_argument("--radius-m", type=float, default=150.0, help="pyramid radius (tiles for the cold fetch)")
    p.add_argument("--out", type=Path, default=Path("bench_tiles.json"))
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pyramid = work / "pyramid"
        t0 = time.perf_counter()
        write_pyramid(MarkerWorld(LAT, LON), pyramid, [19], args.radius_m)
        print(f"rendered pyramid in {time.perf_counter() - t0:.1f} s")
        warm = bench_warm_patch(pyramid, work / "warm-cache", args.runs)
        print(
            f"warm patch 512x512 @ 0.2 m/px: median {warm['median_ms']:.2f} ms, p90 {warm['p90_ms']:.2f} ms, "
            f"min {warm['min_ms']:.2f} ms, CPU time median {warm['cpu_median_ms']:.2f} ms "
            f"(goal <= 5 ms); first call (cold, over HTTP) {warm['first_call_cold_ms']:.0f} ms"
        )
        tiles = sorted(tiles_around(LAT, LON, args.radius_m, 19))
        cold = []
        for latency_ms in (0.0, 20.0):
            for conc in (1, 6):
                r = bench_cold_fetch(pyramid, tiles, conc, latency_ms, work)
                cold.append(r)
                print(
                    f"cold fetch, {conc} in flight, server latency {latency_ms:.0f} ms: "
                    f"{r['tiles_per_s']:.0f} tiles/s ({r['tiles']} tiles in {r['seconds']:.2f} s)"
                )
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.1f} on {os.cpu_count()} cores (shared machine: medians inflate)")
    out = {"host": platform.node(), "cpu_count": os.cpu_count(), "loadavg_1min": load[0], "python": platform.python_version(), "warm_patch": warm, "cold_fetch": cold}
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
