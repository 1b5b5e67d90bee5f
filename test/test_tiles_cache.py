"""Disk cache behaviour: layout, offline mode, maximum age, LRU size cap, unwritable cache
directory, kill -9 mid-write, server stopped mid-prefetch, file:// and MBTiles sources, stats."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from fault_tile_server import serve_directory_with_faults

from xview_localizer.core.errors import TileCacheError, TileFetchError, TileNotCachedError
from xview_localizer.core.geo import latlon_to_tile
from xview_localizer.tiles.cache import TileCache, TileCacheConfig, read_stats_file, tiles_around
from xview_localizer.tiles.codec import decode_tile
from xview_localizer.tiles.server import serve_directory, serve_mbtiles
from xview_localizer.tiles.store import DiskStore
from xview_localizer.tiles.synthetic import MarkerWorld, folder_to_mbtiles, write_pyramid

WORLD = MarkerWorld(49.01, 8.42)
TX, TY = latlon_to_tile(49.01, 8.42, 19)
FAST = dict(timeout_s=2.0, retries=1, backoff_s=0.01, backoff_max_s=0.02)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    root = tmp_path_factory.mktemp("pyr")
    write_pyramid(WORLD, root, [18, 19], radius_m=100.0)
    return root


@pytest.fixture
def server(pyramid):
    s = serve_directory(pyramid, port=0)
    yield s
    s.shutdown()


@pytest.fixture
def fault_server(pyramid):
    """The same server with faults injectable (the test helper's subclass)."""
    s = serve_directory_with_faults(pyramid, port=0)
    yield s
    s.shutdown()


def _cache(server, cache_dir, **kw):
    return TileCache(server.url_template(), cache_dir, TileCacheConfig(**{**FAST, **kw}))


def _tile_files(root):
    return sorted(
        Path(d) / f for d, _, fs in os.walk(root) for f in fs if f.rsplit(".", 1)[-1] in ("png", "jpg", "webp")
    )


def test_disk_layout_and_offline_reuse(server, tmp_path):
    cache_dir = tmp_path / "cache"
    with _cache(server, cache_dir) as c:
        rgb1, g1 = c.patch(49.01, 8.42, 256, 0.2)
        sid = c.source.source_id
        needed = sorted({(int(p.parent.parent.name), int(p.parent.name), int(p.stem)) for p in _tile_files(cache_dir)})
    assert sid.startswith("127.0.0.1-")
    assert (cache_dir / sid / "19" / str(TX) / f"{TY}.png").is_file()
    assert all(z == 19 for z, _, _ in needed) and len(needed) >= 2
    n_requests = len(server.requests)
    server.shutdown()
    with _cache(server, cache_dir, offline=True) as c:
        rgb2, g2 = c.patch(49.01, 8.42, 256, 0.2)
        assert c.stats()["disk_hits"] == len(needed)
    np.testing.assert_array_equal(rgb1, rgb2)
    assert g1 == g2 and len(server.requests) == n_requests


def test_offline_cold_cache_names_missing_tiles(server, tmp_path):
    with _cache(server, tmp_path / "cache", offline=True) as c:
        with pytest.raises(TileNotCachedError, match=rf"offline mode: \d+ tile\(s\) not in the cache .*19/{TX}/{TY}"):
            c.patch(49.01, 8.42, 256, 0.2)
    assert server.requests == []


def test_max_age_refresh_online_and_stale_served_offline(fault_server, tmp_path, caplog):
    server = fault_server
    cache_dir = tmp_path / "cache"
    with _cache(server, cache_dir, max_age_s=3600.0) as c:
        c.get_tile(19, TX, TY)
    (path,) = _tile_files(cache_dir)
    old = time.time() - 7200.0
    os.utime(path, (old, old))
    # online: the stale tile is revalidated (conditional GET) and its fetch time refreshed
    with _cache(server, cache_dir, max_age_s=3600.0) as c:
        c.get_tile(19, TX, TY)
    assert server.count(f"/19/{TX}/{TY}.png") == 2
    assert "If-Modified-Since" in server.requests[-1].headers
    assert time.time() - path.stat().st_mtime < 60.0
    # stale and the server fails: the stale tile is still served, with a warning
    os.utime(path, (old, old))
    server.add_fault("status", "*", times=None, status=503)
    with caplog.at_level(logging.WARNING), _cache(server, cache_dir, max_age_s=3600.0) as c:
        rgb = c.get_tile(19, TX, TY)
        assert c.stats()["stale_served"] == 1
    assert rgb.shape == (256, 256, 3) and "older than max_age_s" in caplog.text
    # offline: stale tiles are served without touching the network
    n = len(server.requests)
    with _cache(server, cache_dir, max_age_s=3600.0, offline=True) as c:
        c.get_tile(19, TX, TY)
    assert len(server.requests) == n


def test_size_cap_evicts_least_recently_used(server, tmp_path):
    cache_dir = tmp_path / "cache"
    row = sorted(tiles_around(49.01, 8.42, 80.0, 19))[:7]  # 7 tiles of ~26 kB
    tile_bytes = max(len((server.root / "19" / str(x) / f"{y}.png").read_bytes()) for _, x, y in row)
    cap = int(4.5 * tile_bytes)
    with _cache(server, cache_dir, max_cache_bytes=cap) as c:
        for t in row[:4]:
            c.get_tile(*t)
    time.sleep(0.01)
    with _cache(server, cache_dir, max_cache_bytes=cap) as c:  # cold memory: disk read marks row[0] used
        c.get_tile(*row[0])
        time.sleep(0.01)
        for t in row[4:]:
            c.get_tile(*t)
        assert c.stats()["evicted_files"] >= 2
    files = _tile_files(cache_dir)
    total = sum(f.stat().st_size for f in files)
    assert total <= cap
    names = {(int(f.parent.name), int(f.stem)) for f in files}
    assert (row[0][1], row[0][2]) in names  # recently used survives
    assert (row[-1][1], row[-1][2]) in names  # newest survives
    assert (row[1][1], row[1][2]) not in names  # least recently used went first
    for f in files:
        decode_tile(f.read_bytes())


def test_unwritable_cache_dir_warns_once_and_serves_from_memory(server, tmp_path, caplog):
    """Tests run as root, so chmod cannot make a directory unwritable. Instead a path
    component of the cache directory is a regular file: every mkdir/write under it fails
    with ENOTDIR, exactly as on a read-only or broken file system."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    cache_dir = blocker / "cache"
    with caplog.at_level(logging.WARNING), _cache(server, cache_dir) as c:
        rgb, _ = c.patch(49.01, 8.42, 256, 0.2)
        c.patch(49.01, 8.42, 256, 0.2)
        c.get_tile(19, TX - 2, TY)
        st = c.stats()
    warnings = [r for r in caplog.records if "not writable" in r.getMessage()]
    assert len(warnings) == 1 and "serving from memory only" in warnings[0].getMessage()
    assert str(cache_dir) in warnings[0].getMessage()
    assert rgb.shape == (256, 256, 3) and st["memory_hits"] > 0 and not st["disk_writable"]
    with pytest.raises(TileCacheError, match="offline mode needs a readable tile cache"):
        _cache(server, cache_dir, offline=True)


KILL_WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from xview_localizer.tiles.codec import encode_png
    from xview_localizer.tiles.store import DiskStore
    store = DiskStore(sys.argv[1], "src", 1 << 40)
    rng = np.random.default_rng(0)
    tiles = [encode_png(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(4)]
    print("ready", flush=True)
    i = 0
    while True:
        store.write(19, i % 50, i // 50, "png", tiles[i % 4])
        i += 1
    """
)


def test_kill_9_mid_write_leaves_only_whole_tiles(tmp_path):
    cache_dir = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(cache_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.6)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    files = _tile_files(cache_dir)
    assert len(files) >= 3
    for f in files:  # every visible tile is whole (random noise PNGs: ~197 kB each)
        decode_tile(f.read_bytes())
    tmp_before = [p for p in (cache_dir / "src").rglob("*") if p.name.endswith(".tmp")]
    print(f"temp files left by the killed writer: {len(tmp_before)}")
    # A new store removes temp files of the dead writer and does not count them.
    store = DiskStore(cache_dir, "src", 1 << 40)
    leftovers = [p for p in (cache_dir / "src").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert store.n_files() == len(files)


def test_server_stopped_mid_prefetch(pyramid, tmp_path):
    server = serve_directory(pyramid, port=0, latency_s=0.02)
    tiles = sorted(tiles_around(49.01, 8.42, 90.0, 19))
    done = []

    def progress(n):
        done.append(n)
        if len(done) == 6:
            server.shutdown()

    try:
        with _cache(server, tmp_path / "cache", max_concurrency=2) as c:
            result = c.prefetch(tiles, progress=progress)
    finally:
        server.shutdown()
    assert result.n_requested == len(tiles) >= 12
    assert result.n_fetched >= 6 and result.failed
    assert result.n_fetched + len(result.failed) == len(tiles)
    assert all("connection failed" in cause for cause in result.failed.values())
    files = _tile_files(tmp_path / "cache")
    assert len(files) == result.n_fetched
    for f in files:
        decode_tile(f.read_bytes())


def test_prefetch_then_offline_patch(server, tmp_path):
    tiles = tiles_around(49.01, 8.42, 60.0, 19)
    with _cache(server, tmp_path / "cache") as c:
        r1 = c.prefetch(tiles)
        r2 = c.prefetch(tiles)
    assert r1.ok and r1.n_fetched == len(tiles)
    assert r2.n_already_cached == len(tiles) and r2.n_fetched == 0
    with _cache(server, tmp_path / "cache", offline=True) as c:
        rgb, _ = c.patch(49.01, 8.42, 200, 0.2)  # 40 m patch inside the 60 m radius
    assert rgb.shape == (200, 200, 3)


def test_file_and_mbtiles_sources_agree(pyramid, tmp_path):
    mb = folder_to_mbtiles(pyramid, tmp_path / "world.mbtiles")
    cfg = TileCacheConfig()
    with TileCache(f"file://{pyramid}/{{z}}/{{x}}/{{y}}.png", tmp_path / "c", cfg) as fc:
        a, ga = fc.patch(49.0101, 8.4202, 300, 0.2)
        with pytest.raises(TileFetchError, match="19/0/0: not found"):
            fc.get_tile(19, 0, 0)
    with TileCache(f"mbtiles://{mb}", tmp_path / "c", cfg) as mc:
        b, gb = mc.patch(49.0101, 8.4202, 300, 0.2)
        assert mc.zoom_for(49.01, 0.1) == 19  # capped by the file's maxzoom
    np.testing.assert_array_equal(a, b)
    assert ga == gb
    assert not (tmp_path / "c").exists() or _tile_files(tmp_path / "c") == []  # local: no copies
    # the reusable server serves MBTiles too (TMS rows flipped back)
    s = serve_mbtiles(mb, port=0)
    try:
        with TileCache(s.url_template(), tmp_path / "c2", TileCacheConfig(**FAST)) as hc:
            c, _ = hc.patch(49.0101, 8.4202, 300, 0.2)
    finally:
        s.shutdown()
    np.testing.assert_array_equal(a, c)


def test_stats_persist_for_info(server, tmp_path):
    cache_dir = tmp_path / "cache"
    with _cache(server, cache_dir) as c:
        c.get_tile(19, TX, TY)
        c.get_tile(19, TX, TY)
        sid = c.source.source_id
        assert c.stats()["hit_rate"] == pytest.approx(0.5)
    with _cache(server, cache_dir) as c:
        c.get_tile(19, TX, TY)
    stats = read_stats_file(cache_dir)[sid]
    assert stats["requests"] == 3 and stats["fetched"] == 1
    assert stats["memory_hits"] == 1 and stats["disk_hits"] == 1


def test_temp_files_of_live_writers_are_kept(tmp_path):
    tile_dir = tmp_path / "cache" / "src" / "19" / "5"
    tile_dir.mkdir(parents=True)
    live = tile_dir / f".7.png.{os.getpid()}.abcdef.tmp"
    dead = tile_dir / ".8.png.999999999.abcdef.tmp"
    junk = tile_dir / ".9.png.notapid.tmp"
    for p in (live, dead, junk):
        p.write_bytes(b"partial")
    store = DiskStore(tmp_path / "cache", "src", 1 << 30)
    assert live.exists() and not dead.exists() and not junk.exists()
    assert store.n_files() == 0 and store.find(19, 5, 7) is None
