"""``xview-localizer tiles ...``: cut a metric patch, prefetch tiles for offline use, and
inspect the cache.

    xview-localizer tiles patch --url URL --lat LAT --lon LON --size-px N --m-per-px R --out patch.png
    xview-localizer tiles prefetch --url URL (--bag BAG [--fix-topic T] | --lat LAT --lon LON) \\
        --radius-m R --zoom Z
    xview-localizer tiles info

Common options: ``--cache-dir`` (default ``$XVIEW_TILE_CACHE`` or
``~/.cache/xview_localizer/tiles``), ``--offline``, ``--header 'Name: value'`` (values may
name ``${ENV}`` variables), ``--user-agent``, ``--subdomains``, ``--max-zoom``, ``--timeout-s``.
Exit codes: 0 success, 1 a tile/cache error or failed tiles, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Optional

NAVSATFIX = "sensor_msgs/msg/NavSatFix"


def _common(p: argparse.ArgumentParser, with_url: bool = True) -> None:
    if with_url:
        p.add_argument("--url", required=True, help="tile source: http(s) template with {z}/{x}/{y} "
                       "({s}, {q} allowed), file:///dir/{z}/{x}/{y}.png or mbtiles:///file.mbtiles")  # fmt: skip
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="tile cache directory ('' = $XVIEW_TILE_CACHE or ~/.cache/xview_localizer/tiles)")  # fmt: skip
    p.add_argument("--offline", action="store_true", help="never touch the network; serve from the cache")
    if with_url:
        p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                       help="extra HTTP header; the value may name ${ENV} variables (repeatable)")  # fmt: skip
        p.add_argument("--user-agent", default=None, help="HTTP User-Agent (unset: one naming xview_localizer)")
        p.add_argument("--subdomains", default="abc", help="letters substituted for {s}")
        p.add_argument("--max-zoom", type=int, default=19, help="finest zoom the source has")
        p.add_argument("--timeout-s", type=float, default=10.0, help="per-request timeout (s)")
        p.add_argument("--retries", type=int, default=3, help="retries after a failed request")


def register(sub) -> None:
    from ..cli import add_command

    tiles = add_command(sub, "tiles", help="satellite tiles: patches, prefetch, cache info",
                        description="Satellite tiles as the node uses them: cut a north-up metric patch from "
                        "a tile source, download the tiles around a point or along a bag's GNSS track for "
                        "offline use, and inspect the disk cache. Exit codes: 0 success, 1 a tile or cache "
                        "error or failed tiles, 2 bad arguments.",
                        examples=["xview-localizer tiles patch --url http://127.0.0.1:8080/{z}/{x}/{y}.png "
                                  "--lat 49.01 --lon 8.42 --size-px 512 --m-per-px 0.2 --out patch.png",
                                  "xview-localizer tiles info"])
    tsub = tiles.add_subparsers(dest="tiles_command", metavar="TILES_COMMAND")
    tiles.set_defaults(handler=lambda args: (tiles.print_help(), 2)[1])

    p = add_command(tsub, "patch", help="write a north-up metric patch (PNG) and its georeference (JSON)",
                    description="Assemble the north-up satellite patch centred on a WGS84 point at a given "
                    "ground resolution, exactly as the localizer cuts it, and write it as PNG with a JSON "
                    "beside it (centre, size, metres per pixel, zoom used).",
                    examples=["xview-localizer tiles patch --url file:///data/tiles/{z}/{x}/{y}.png --lat 49.01 "
                              "--lon 8.42 --size-px 512 --m-per-px 0.2 --out patch.png"])
    _common(p)
    p.add_argument("--lat", type=float, required=True, help="centre latitude (deg, WGS84)")
    p.add_argument("--lon", type=float, required=True, help="centre longitude (deg, WGS84)")
    p.add_argument("--size-px", type=int, required=True, help="patch width = height (px)")
    p.add_argument("--m-per-px", type=float, required=True, help="true ground metres per pixel")
    p.add_argument("--zoom", type=int, default=None, help="force a tile zoom (default: finest needed)")
    p.add_argument("--out", type=Path, required=True, help="output PNG; the JSON goes beside it")
    p.set_defaults(handler=cmd_patch)

    p = add_command(tsub, "prefetch", help="download the tiles around a point or along a bag's GNSS track",
                    description="Download every tile within a radius of a point, or of each GNSS fix of a "
                    "rosbag2, into the disk cache, so that the node or a replay can later run with "
                    "tile_offline (no network). Tiles already cached are not fetched again.",
                    examples=["xview-localizer tiles prefetch --url https://tiles.example.com/{z}/{x}/{y}.jpg "
                              "--bag bags/w1_d7 --radius-m 150 --zoom 19"])
    _common(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--bag", type=Path, help="rosbag2 directory (or file) with sensor_msgs/NavSatFix")
    where.add_argument("--lat", type=float, help="centre latitude (deg); needs --lon")
    p.add_argument("--lon", type=float, help="centre longitude (deg)")
    p.add_argument("--fix-topic", default=None, help="NavSatFix topic (default: the only/first one)")
    p.add_argument("--radius-m", type=float, required=True, help="radius around each point (m)")
    p.add_argument("--zoom", type=int, required=True, help="tile zoom to fetch (e.g. 19 for ~0.2 m/px at 49 deg)")
    p.add_argument("--concurrency", type=int, default=6, help="requests in flight")
    p.set_defaults(handler=cmd_prefetch)

    p = add_command(tsub, "info", help="cache size, tiles per source and hit rate",
                    description="Summarise the tile cache: its folder, total size, the number of tiles and bytes per "
                    "source and the hit rate of the requests counted so far (persisted counters).",
                    examples=["xview-localizer tiles info --json"])
    _common(p, with_url=False)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_info)


def _fail(msg: str) -> int:
    print(f"xview-localizer tiles: error: {msg}", file=sys.stderr)
    return 2


def _config(args, **extra):
    from .cache import TileCacheConfig
    from .http import DEFAULT_USER_AGENT

    headers = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {h!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    return TileCacheConfig(
        offline=args.offline,
        headers=headers,
        user_agent=args.user_agent or DEFAULT_USER_AGENT,
        subdomains=args.subdomains,
        max_zoom=args.max_zoom,
        timeout_s=args.timeout_s,
        retries=args.retries,
        **extra,
    )


def _finite(name: str, value: Optional[float], lo: float, hi: float) -> Optional[str]:
    if value is None or not math.isfinite(value) or not lo <= value <= hi:
        return f"{name} must be a finite number in [{lo:g}, {hi:g}], got {value!r}"
    return None


def cmd_patch(args) -> int:
    for err in (_finite("--lat", args.lat, -85.05, 85.05), _finite("--lon", args.lon, -180, 180),
                _finite("--m-per-px", args.m_per_px, 1e-3, 1e4)):  # fmt: skip
        if err:
            return _fail(err)
    if not 1 <= args.size_px <= 8192:
        return _fail(f"--size-px must be in [1, 8192], got {args.size_px}")
    if args.out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".tif", ".tiff"):
        return _fail(f"--out {args.out} must end in .png, .jpg or .tif")
    import cv2

    from .cache import TileCache

    try:
        cfg = _config(args, zoom=args.zoom)
    except ValueError as exc:  # includes ConfigError
        return _fail(str(exc))
    with TileCache(args.url, args.cache_dir, cfg) as cache:
        rgb, georef = cache.patch(args.lat, args.lon, args.size_px, args.m_per_px)
        zoom = cache.zoom_for(args.lat, args.m_per_px)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        return _fail(f"could not write {args.out}")
    meta = {**georef.to_dict(), "zoom": zoom, "source": args.url}
    sidecar = args.out.with_suffix(".json")
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out} ({georef.width_px}x{georef.height_px} px, {georef.m_per_px:g} m/px, zoom {zoom}) and {sidecar}")
    return 0


def read_fixes(bag: Path, topic: Optional[str] = None) -> list[tuple[float, float]]:
    """``(lat_deg, lon_deg)`` of every valid NavSatFix (status >= 0, finite) in a rosbag2.
    Raises :class:`BagError` listing the bag's topics when there is no such topic."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from ..core.errors import BagError

    store = getattr(Stores, "ROS2_KILTED", None) or Stores.ROS2_JAZZY
    try:
        reader = AnyReader([Path(bag)], default_typestore=get_typestore(store))
        reader.open()
    except Exception as exc:  # rosbags raises several unrelated types for unreadable bags
        raise BagError(f"cannot read bag {bag}: {exc}") from exc
    try:
        conns = [c for c in reader.connections if c.msgtype == NAVSATFIX and (topic is None or c.topic == topic)]
        if not conns:
            have = ", ".join(sorted(f"{c.topic} ({c.msgtype})" for c in reader.connections)) or "none"
            want = f"topic {topic!r} of type {NAVSATFIX}" if topic else f"a {NAVSATFIX} topic"
            raise BagError(f"bag {bag} has no {want}; its topics: {have}")
        if topic is None:
            conns = [c for c in conns if c.topic == conns[0].topic]
        out = []
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if msg.status.status >= 0 and math.isfinite(msg.latitude) and math.isfinite(msg.longitude):
                out.append((float(msg.latitude), float(msg.longitude)))
        return out
    finally:
        reader.close()


def cmd_prefetch(args) -> int:
    if args.lat is not None or args.lon is not None:
        if args.lat is None or args.lon is None:
            return _fail("--lat and --lon go together")
        for err in (_finite("--lat", args.lat, -85.05, 85.05), _finite("--lon", args.lon, -180, 180)):
            if err:
                return _fail(err)
    elif args.lon is not None:
        return _fail("--lon needs --lat")
    if err := _finite("--radius-m", args.radius_m, 0.0, 50_000.0):
        return _fail(err)
    if not 0 <= args.zoom <= 22:
        return _fail(f"--zoom must be in [0, 22], got {args.zoom}")
    if not 1 <= args.concurrency <= 32:
        return _fail(f"--concurrency must be in [1, 32], got {args.concurrency}")
    from tqdm import tqdm

    from .cache import TileCache, tiles_along, tiles_around

    if args.bag is not None:
        fixes = read_fixes(args.bag, args.fix_topic)
        if not fixes:
            from ..core.errors import BagError

            raise BagError(f"bag {args.bag} has no valid NavSatFix (status >= 0) to prefetch around")
        tiles = tiles_along(fixes, args.radius_m, args.zoom)
        where = f"{len(fixes)} fixes from {args.bag}"
    else:
        tiles = tiles_around(args.lat, args.lon, args.radius_m, args.zoom)
        where = f"({args.lat:.6f}, {args.lon:.6f})"
    if len(tiles) > 200_000:
        return _fail(f"{len(tiles)} tiles requested; reduce --radius-m or --zoom (tile-usage etiquette)")
    try:
        cfg = _config(args, max_concurrency=args.concurrency)
    except ValueError as exc:
        return _fail(str(exc))
    with TileCache(args.url, args.cache_dir, cfg) as cache:
        with tqdm(total=len(tiles), unit="tile", desc="prefetch", disable=None) as bar:
            result = cache.prefetch(tiles, progress=bar.update)
        root = cache.store.root if cache.store is not None else cache.cache_dir
    print(
        f"prefetch z{args.zoom} r={args.radius_m:g} m around {where}: {result.n_requested} tiles, "
        f"{result.n_fetched} fetched, {result.n_already_cached} already cached, "
        f"{result.n_not_found} not on the server, {len(result.failed)} failed -> {root}"
    )
    if result.failed:
        for (z, x, y), cause in sorted(result.failed.items())[:10]:
            print(f"  failed {z}/{x}/{y}: {cause}", file=sys.stderr)
        return 1
    return 0


def cache_summary(cache_dir: Path) -> dict:
    """Per-source tile count and bytes of a cache directory, with the persisted counters."""
    from .cache import read_stats_file
    from .store import EXTENSIONS

    stats = read_stats_file(cache_dir)
    sources = {}
    if cache_dir.is_dir():
        for entry in sorted(p for p in cache_dir.iterdir() if p.is_dir()):
            n = size = 0
            for d, _, files in os.walk(entry):
                for f in files:
                    if f.rsplit(".", 1)[-1] in EXTENSIONS and not f.startswith("."):
                        n += 1
                        try:
                            size += os.stat(os.path.join(d, f)).st_size
                        except OSError:
                            pass
            sources[entry.name] = {"tiles": n, "bytes": size}
    for sid, counters in stats.items():
        s = sources.setdefault(sid, {"tiles": 0, "bytes": 0})
        req = int(counters.get("requests", 0))
        hits = sum(int(counters.get(k, 0)) for k in ("memory_hits", "disk_hits", "revalidated"))
        s.update(counters)
        s["hit_rate"] = hits / req if req else None
    return {
        "cache_dir": str(cache_dir),
        "tiles": sum(s["tiles"] for s in sources.values()),
        "bytes": sum(s["bytes"] for s in sources.values()),
        "sources": sources,
    }


def cmd_info(args) -> int:
    from .cache import default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    summary = cache_summary(cache_dir)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if not cache_dir.is_dir():
        print(f"tile cache {cache_dir}: does not exist yet (0 tiles)")
        return 0
    print(f"tile cache {cache_dir}: {summary['tiles']} tiles, {summary['bytes'] / 1e6:.1f} MB")
    for sid, s in summary["sources"].items():
        rate = "n/a" if s.get("hit_rate") is None else f"{100 * s['hit_rate']:.1f} %"
        print(f"  {sid}: {s['tiles']} tiles, {s['bytes'] / 1e6:.1f} MB, hit rate {rate} "
              f"({s.get('requests', 0)} requests, {s.get('fetched', 0)} fetched)")  # fmt: skip
    return 0
