"""HTTP behaviour of the tile cache against a real tile server on 127.0.0.1 (the runtime
``TileServer``; faults injected by the test helper ``fault_tile_server.FaultInjectingTileServer``):
404 (negative cache), 500 then success, 429 + Retry-After, no retry on 403, a slow server beyond
the timeout, truncated PNGs, concurrency, User-Agent, and secrets."""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time

import numpy as np
import pytest
from fault_tile_server import serve_directory_with_faults
from urllib3.util.retry import RequestHistory, Retry

from xview_localizer.core.errors import TileFetchError, TileSourceError
from xview_localizer.core.geo import latlon_to_tile
from xview_localizer.tiles.cache import TileCache, TileCacheConfig
from xview_localizer.tiles.codec import decode_tile
from xview_localizer.tiles.http import HttpFetcher
from xview_localizer.tiles.server import serve_directory
from xview_localizer.tiles.source import HttpTemplate
from xview_localizer.tiles.synthetic import MarkerWorld, write_pyramid

WORLD = MarkerWorld(49.01, 8.42)
TX, TY = latlon_to_tile(49.01, 8.42, 19)
TILE = (19, TX, TY)
PATH = f"/19/{TX}/{TY}.png"
FAST = dict(timeout_s=2.0, retries=2, backoff_s=0.01, backoff_max_s=0.05, retry_after_max_s=3.0)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    root = tmp_path_factory.mktemp("pyr")
    write_pyramid(WORLD, root, [19], radius_m=60.0)
    return root


@pytest.fixture
def server(pyramid):
    s = serve_directory_with_faults(pyramid, port=0)
    yield s
    s.shutdown()


def _cache(server, tmp_path, **kw):
    return TileCache(server.url_template(), tmp_path / "cache", TileCacheConfig(**{**FAST, **kw}))


def _pngs(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".png")]


def test_fetch_ok_decodes_and_sends_user_agent(server, pyramid, tmp_path):
    with _cache(server, tmp_path, user_agent="xview_localizer-test/1.0 (+https://example.org)") as c:
        rgb = c.get_tile(*TILE)
    expected = decode_tile((pyramid / PATH.lstrip("/")).read_bytes())
    np.testing.assert_array_equal(rgb, expected)
    assert server.requests[-1].headers["User-Agent"] == "xview_localizer-test/1.0 (+https://example.org)"


def test_404_raises_and_is_negatively_cached(server, tmp_path):
    with _cache(server, tmp_path) as c:
        for _ in range(3):
            with pytest.raises(TileFetchError, match=r"19/0/0: HTTP 404"):
                c.get_tile(19, 0, 0)
        assert server.count("/19/0/0.png") == 1  # remembered, not re-requested
        assert c.stats()["negative_hits"] == 2
    with _cache(server, tmp_path, negative_ttl_s=0.0) as c:
        for _ in range(2):
            with pytest.raises(TileFetchError, match="404"):
                c.get_tile(19, 0, 0)
    assert server.count("/19/0/0.png") == 3


def test_500_then_success_is_retried(server, tmp_path):
    server.add_fault("status", PATH, times=2, status=500)
    with _cache(server, tmp_path) as c:
        rgb = c.get_tile(*TILE)
    assert rgb.shape == (256, 256, 3)
    assert server.count(PATH) == 3


def test_500_forever_gives_up_naming_tile_and_cause(server, tmp_path):
    server.add_fault("status", PATH, times=None, status=503)
    with _cache(server, tmp_path) as c, pytest.raises(TileFetchError, match=rf"19/{TX}/{TY}: HTTP 503.*3 attempt"):
        c.get_tile(*TILE)
    assert server.count(PATH) == 3
    assert not _pngs(tmp_path / "cache")


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_waited_for(server, tmp_path, status):
    """Retry-After is obeyed on a 429 and on a retried 5xx (urllib3's rule since the hand-written
    loop was replaced; before, a 503 always got the back-off)."""
    server.add_fault("status", PATH, times=1, status=status, retry_after="1")
    with _cache(server, tmp_path) as c:
        t0 = time.monotonic()
        c.get_tile(*TILE)
        elapsed = time.monotonic() - t0
    assert server.count(PATH) == 2
    assert 0.9 <= elapsed < 2.5


def test_429_retry_after_is_capped(server, tmp_path):
    server.add_fault("status", PATH, times=1, status=429, retry_after="3600")
    with _cache(server, tmp_path, retry_after_max_s=0.2) as c:
        t0 = time.monotonic()
        c.get_tile(*TILE)
        assert time.monotonic() - t0 < 1.5


def test_no_retry_on_403(server, tmp_path):
    server.add_fault("status", PATH, times=None, status=403)
    with _cache(server, tmp_path) as c, pytest.raises(TileFetchError, match="403.*not retried"):
        c.get_tile(*TILE)
    assert server.count(PATH) == 1


def test_slow_server_beyond_timeout(server, tmp_path):
    server.add_fault("delay", PATH, times=None, delay_s=1.0)
    with _cache(server, tmp_path, timeout_s=0.25, retries=1) as c:
        t0 = time.monotonic()
        with pytest.raises(TileFetchError, match=rf"19/{TX}/{TY}: timed out after 0.25 s"):
            c.get_tile(*TILE)
        assert time.monotonic() - t0 < 1.5
    assert server.count(PATH) == 2
    assert not _pngs(tmp_path / "cache")


def test_truncated_png_is_never_cached(server, pyramid, tmp_path):
    server.add_fault("truncate", PATH, times=None, keep_fraction=0.6)
    with _cache(server, tmp_path) as c, pytest.raises(TileFetchError, match="truncated"):
        c.get_tile(*TILE)
    assert not _pngs(tmp_path / "cache")
    # once truncated, then whole: the retry gets the good body and only it is stored
    server.clear_faults()
    server.add_fault("truncate", PATH, times=1, keep_fraction=0.6)
    with _cache(server, tmp_path) as c:
        c.get_tile(*TILE)
    files = _pngs(tmp_path / "cache")
    assert len(files) == 1
    assert open(files[0], "rb").read() == (pyramid / PATH.lstrip("/")).read_bytes()


def test_at_least_six_requests_in_flight(pyramid, tmp_path):
    server = serve_directory(pyramid, port=0, latency_s=0.15)
    try:
        tiles = [(19, TX + dx, TY + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
        with _cache(server, tmp_path, max_concurrency=6) as c:
            t0 = time.monotonic()
            got = c.get_tiles(tiles)
            elapsed = time.monotonic() - t0
    finally:
        server.shutdown()
    assert len(got) == 9
    assert server.max_in_flight >= 6
    assert elapsed < 1.1  # sequential would take >= 9 x 0.15 s = 1.35 s


def test_quadkey_template(server, pyramid, tmp_path):
    url = f"{server.url}/q/{{q}}.png"
    with TileCache(url, tmp_path / "cache", TileCacheConfig(**FAST)) as c:
        rgb = c.get_tile(*TILE)
    np.testing.assert_array_equal(rgb, decode_tile((pyramid / PATH.lstrip("/")).read_bytes()))
    assert server.requests[-1].path.startswith("/q/") and len(server.requests[-1].path) == len("/q/.png") + 19


def test_subdomains_and_bad_templates():
    t = HttpTemplate("https://{s}.tile.example.org/{z}/{x}/{y}.png", subdomains="abc")
    assert {t.url_for(19, x, 0).split(".")[0] for x in range(3)} == {"https://a", "https://b", "https://c"}
    assert t.url_for(19, 5, 7) == t.url_for(19, 5, 7)  # stable host per tile
    with pytest.raises(TileSourceError, match="unknown placeholder"):
        HttpTemplate("https://example.org/{z}/{x}/{row}.png")
    with pytest.raises(TileSourceError, match="needs"):
        HttpTemplate("https://example.org/{z}/{x}.png")


def test_secrets_from_env_never_leak(server, tmp_path, monkeypatch, caplog):
    key, token = "s3cr3t-KEY-9f8e7d", "tok-5a4b3c2d1e"
    monkeypatch.setenv("XVL_TEST_API_KEY", key)
    monkeypatch.setenv("XVL_TEST_TOKEN", token)
    url = f"{server.url}/{{z}}/{{x}}/{{y}}.png?key=${{XVL_TEST_API_KEY}}"
    cfg = TileCacheConfig(**FAST, headers={"Authorization": "Bearer ${XVL_TEST_TOKEN}"})
    caplog.set_level(logging.DEBUG)
    messages = []
    server.add_fault("status", "/19/1/*", times=None, status=500)
    with TileCache(url, tmp_path / "cache", cfg) as c:
        c.get_tile(*TILE)
        for tile in [(19, 0, 0), (19, 1, 5)]:
            with pytest.raises(TileFetchError) as ei:
                c.get_tile(*tile)
            messages.append(str(ei.value))
        source_id = c.source.source_id
    # the server did receive the expanded secrets
    assert server.requests[0].query == f"key={key}"
    assert server.requests[0].headers["Authorization"] == f"Bearer {token}"
    # ... but they are nowhere in cache paths, logs or errors
    server.shutdown()  # a connection error message would carry the URL: check it too
    with TileCache(url, tmp_path / "cache", TileCacheConfig(**{**FAST, "retries": 0}, headers=cfg.headers)) as c:
        with pytest.raises(TileFetchError) as ei:
            c.get_tile(19, 2, 2)
        messages.append(str(ei.value))
    assert "connection failed" in messages[-1]
    names = [p for d, ds, fs in os.walk(tmp_path / "cache") for p in ds + fs]
    text = caplog.text + "\n".join(messages) + "\n".join(names) + source_id
    assert key not in text and token not in text
    assert "XVL_TEST_API_KEY" not in source_id
    monkeypatch.delenv("XVL_TEST_API_KEY")
    with pytest.raises(TileSourceError, match=r"\$\{XVL_TEST_API_KEY\}.*not set"):
        with TileCache(url, tmp_path / "cache", cfg) as c:
            c.get_tile(*TILE)


def test_patch_outside_coverage_names_missing_tiles(server, tmp_path):
    with _cache(server, tmp_path) as c:
        with pytest.raises(TileFetchError, match=r"\d+ tile\(s\) unavailable: 19/\d+/\d+.*HTTP 404"):
            c.patch(49.02, 8.42, 128, 0.2)  # ~1 km north of the served pyramid


def test_fetch_errors_name_their_kind(server, tmp_path, free_port):
    """Every tile failure carries a kind the node turns into a diagnostic key."""
    server.add_fault("status", PATH, times=None, status=503)
    with _cache(server, tmp_path, retries=0) as cache, pytest.raises(TileFetchError) as exc:
        cache.get_tile(*TILE)
    assert exc.value.kind == "http_status"
    server.clear_faults()
    server.add_fault("delay", PATH, times=None, delay_s=1.0)
    with _cache(server, tmp_path, retries=0, timeout_s=0.2) as cache, pytest.raises(TileFetchError) as exc:
        cache.get_tile(*TILE)
    assert exc.value.kind == "timeout" and "read timeout" in str(exc.value)
    server.clear_faults()
    server.add_fault("truncate", PATH, times=None, keep_fraction=0.3)
    with _cache(server, tmp_path / "c2", retries=0) as cache, pytest.raises(TileFetchError) as exc:
        cache.get_tile(*TILE)
    assert exc.value.kind == "undecodable"
    server.clear_faults()
    with _cache(server, tmp_path / "c3", retries=0) as cache, pytest.raises(TileFetchError) as exc:
        cache.get_tile(19, 0, 0)  # the server has no such tile
    assert exc.value.kind == "not_found"
    dead = TileCache(f"http://127.0.0.1:{free_port}/{{z}}/{{x}}/{{y}}.png", tmp_path / "c4",
                     TileCacheConfig(**{**FAST, "retries": 0}))
    with dead, pytest.raises(TileFetchError) as exc:
        dead.patch(49.01, 8.42, 64, 0.5)
    assert exc.value.kind == "connection_refused", str(exc.value)


# -- the retry policy is urllib3's Retry (plus what it lacks): its edges -----------------------
def test_unparseable_retry_after_falls_back_to_backoff(server, tmp_path):
    """urllib3 raises InvalidHeader on a Retry-After that is neither seconds nor a date: here
    it is ignored and the request retried after the back-off."""
    server.add_fault("status", PATH, times=1, status=429, retry_after="soon")
    with _cache(server, tmp_path) as c:
        t0 = time.monotonic()
        c.get_tile(*TILE)
        assert time.monotonic() - t0 < 1.0
    assert server.count(PATH) == 2


def test_close_ends_a_retry_after_wait_at_once(server, tmp_path):
    server.add_fault("status", PATH, times=None, status=429, retry_after="30")
    errors: list[BaseException] = []
    c = _cache(server, tmp_path, retry_after_max_s=30.0)

    def fetch() -> None:
        try:
            c.get_tile(*TILE)
        except TileFetchError as exc:
            errors.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    deadline = time.monotonic() + 5.0
    while server.count(PATH) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # now in the 30 s Retry-After sleep
    t0 = time.monotonic()
    c.close()
    worker.join(timeout=5.0)
    assert not worker.is_alive() and time.monotonic() - t0 < 1.0
    assert len(errors) == 1 and "closing" in str(errors[0]), errors
    assert server.count(PATH) == 1  # not retried after close()


def test_body_broken_off_mid_way_is_fetched_again(server, pyramid, tmp_path):
    """A 200 whose body breaks off (urllib3 does not retry it: the body is read after its
    retries) is fetched again by the fetcher, within the same attempt budget."""
    server.add_fault("cut", PATH, times=1, keep_fraction=0.5)
    with _cache(server, tmp_path) as c:
        c.get_tile(*TILE)
    assert server.count(PATH) == 2
    (stored,) = _pngs(tmp_path / "cache")
    assert open(stored, "rb").read() == (pyramid / PATH.lstrip("/")).read_bytes()
    server.clear_faults()
    server.add_fault("cut", PATH, times=None, keep_fraction=0.5)
    with _cache(server, tmp_path / "c2", retries=1) as c, pytest.raises(TileFetchError) as exc:
        c.get_tile(*TILE)
    assert exc.value.kind == "connection_failed" and "gave up after 2 attempt(s)" in str(exc.value)
    assert server.count(PATH) == 4


def test_connection_retries_log_at_debug_not_warning(tmp_path, free_port, caplog):
    """urllib3 logs each connection retry as a WARNING; here they are debug lines (the caller
    reports the failure that remains)."""
    cache = TileCache(f"http://127.0.0.1:{free_port}/{{z}}/{{x}}/{{y}}.png", tmp_path / "cache",
                      TileCacheConfig(**FAST))
    with caplog.at_level(logging.WARNING), cache, pytest.raises(TileFetchError, match="refused.*3 attempt"):
        cache.get_tile(*TILE)
    assert not [r for r in caplog.records if r.name.startswith("urllib3")], caplog.text
    caplog.clear()
    cache = TileCache(f"http://127.0.0.1:{free_port}/{{z}}/{{x}}/{{y}}.png", tmp_path / "cache",
                      TileCacheConfig(**FAST))
    with caplog.at_level(logging.DEBUG), cache, pytest.raises(TileFetchError):
        cache.get_tile(*TILE)
    retried = [r for r in caplog.records if r.getMessage().startswith("Retrying (")]
    assert len(retried) == 2 and all(r.levelno == logging.DEBUG for r in retried)


def test_backoff_schedule_is_urllib3s():
    """No wait before the first retry, then backoff_s * 2**(n - 1) plus up to backoff_s of
    jitter, at most backoff_max_s (urllib3's formula, with its jitter where it has one)."""
    f = HttpFetcher(HttpTemplate("http://127.0.0.1:9/{z}/{x}/{y}.png"), timeout_s=1.0, retries=5, backoff_s=0.5,
                    backoff_max_s=3.0, retry_after_max_s=10.0, user_agent="t", max_concurrency=1, headers={})
    try:
        failure = RequestHistory("GET", "/", None, 503, None)
        waits = [[f.retry.new(history=(failure,) * n).get_backoff_time() for n in range(1, 6)] for _ in range(50)]
    finally:
        f.close()
    jitter = "backoff_jitter" in inspect.signature(Retry.__init__).parameters
    for w in waits:
        assert w[0] == 0.0
        for n, (wait, base) in enumerate(zip(w[1:], (1.0, 2.0, 4.0, 8.0)), start=2):
            assert min(base, 3.0) <= wait <= min(base + (0.5 if jitter else 0.0), 3.0), (n, wait)
    if jitter:
        assert len({round(w[1], 6) for w in waits}) > 1  # jittered
