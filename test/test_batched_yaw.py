"""Only the work a frame needs (issue 15, requirement 2): without a heading the dense-flow
matcher runs its yaw hypotheses in ONE batched pass (encoders once) with the same
correspondences and the same best hypothesis as one call per yaw; the localizer uses the area
window when the checkpoint allows it. Real tiny torch models (seeded), a real TileCache."""

from __future__ import annotations

import math

import numpy as np
from localizer_doubles import write_tile_folder
from tiny_models import tiny_dense, tiny_sparse

from xview_localizer.core import procrustes
from xview_localizer.core.camera import PinholeCamera, T_base_camera_from_xyz_rpy
from xview_localizer.matcher.inference import Matcher, SparseMatcher
from xview_localizer.pipeline.config import LocalizerConfig
from xview_localizer.pipeline.localizer import (
    NS_PER_S,
    FixSample,
    Frame,
    Localizer,
    match_and_solve_all,
    yaw_tries,
)
from xview_localizer.tiles.cache import TileCache, TileCacheConfig
from xview_localizer.tiles.patch import PatchGeoref

LAT0, LON0 = 48.1, 11.5
ZOOM = 19
CAMERA = PinholeCamera.from_intrinsics(128, 64, 70.0, 70.0, 63.5, 31.5)
T_BASE_CAMERA = T_base_camera_from_xyz_rpy(1.0, 0.0, 1.6, 0.0, 0.05, 0.0)


def _dense() -> Matcher:
    return tiny_dense(seed=1)


def _inputs():
    rng = np.random.default_rng(4)
    ground = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    sat = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return ground, sat, PatchGeoref(LAT0, LON0, 0.8, 64, 64)


def test_batched_hypotheses_equal_sequential_calls():
    m = _dense()
    ground, sat, geo = _inputs()
    yaws = yaw_tries(m, None, LocalizerConfig(unknown_yaw_hypotheses=4))
    assert len(yaws) == 4
    m.cache_hits = m.cache_misses = 0
    batched = m.match_hypotheses(ground, CAMERA, T_BASE_CAMERA, sat, geo, yaws)
    assert m.cache_misses == 1  # the satellite patch is encoded once for all hypotheses
    for yaw, b in zip(yaws, batched):
        one = m.match(ground, CAMERA, T_BASE_CAMERA, sat, geo, yaw)
        assert len(one) == len(b) > 0
        np.testing.assert_allclose(b.src_xy_m, one.src_xy_m, atol=1e-4)
        np.testing.assert_allclose(b.dst_xy_m, one.dst_xy_m, atol=1e-4)
        np.testing.assert_allclose(b.weight, one.weight, atol=1e-5)


class _Sequential:
    """The same matcher without ``match_hypotheses``: the localizer's one-call-per-yaw path."""

    def __init__(self, m):
        self._m = m
        self.needs_yaw_prior = True

    def match(self, *args, **kw):
        return self._m.match(*args, **kw)


def test_batched_search_picks_the_same_best_hypothesis_as_sequential():
    m = _dense()
    ground, sat, geo = _inputs()
    cfg = LocalizerConfig(unknown_yaw_hypotheses=6, min_weight=0.0, min_confident_matches=3)
    pcfg = procrustes.ProcrustesConfig()
    yaws = yaw_tries(m, None, cfg)
    t_b, t_s = {}, {}
    cb, _ = match_and_solve_all(m, ground, CAMERA, T_BASE_CAMERA, sat, geo, yaws, {}, cfg, pcfg, t_b)
    cs, _ = match_and_solve_all(_Sequential(m), ground, CAMERA, T_BASE_CAMERA, sat, geo, yaws, {}, cfg, pcfg, t_s)
    assert len(cb) == len(cs) == len(yaws)
    best_b = max(range(len(cb)), key=lambda i: cb[i][3])
    best_s = max(range(len(cs)), key=lambda i: cs[i][3])
    assert best_b == best_s
    for a, b in zip(cb, cs):
        assert math.isclose(a[3], b[3], rel_tol=1e-4, abs_tol=1e-4)
        Ta, Tb = a[2].T_patch_base, b[2].T_patch_base
        assert abs(Ta.x_m - Tb.x_m) < 1e-3 and abs(Ta.y_m - Tb.y_m) < 1e-3
    assert t_b["matcher"] > 0 and t_s["matcher"] > 0


def _sparse(norm: str) -> SparseMatcher:
    return tiny_sparse(norm)


def _run_localizer(tmp_path, matcher, **cfg_kw):
    root = write_tile_folder(tmp_path / "tiles", LAT0, LON0, ZOOM, radius_tiles=2, seed=5)
    cfg = LocalizerConfig(patch_size_px=128, patch_m_per_px=0.25, datum_lat_deg=LAT0, datum_lon_deg=LON0,
                          min_confident_matches=3, **cfg_kw)
    image = np.random.default_rng(2).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    with TileCache(f"file://{root}/{{z}}/{{x}}/{{y}}.png", tmp_path / "cache", TileCacheConfig(zoom=ZOOM)) as tc:
        loc = Localizer(cfg, matcher, tc)
        results = []
        for i in range(5):
            loc.add_fix(FixSample(i * NS_PER_S // 10, LAT0 + i * 1e-5, LON0, 500.0, np.eye(2) * 4.0))
            results.append(loc.step(Frame(i * NS_PER_S // 10, image, CAMERA, T_BASE_CAMERA)))
        loc.close()
    return loc, results


def test_localizer_cuts_frames_from_the_area(tmp_path):
    loc, results = _run_localizer(tmp_path, _sparse("frozen"))
    prov = loc.area_provider
    assert prov is not None and prov.exact and loc.area_status == ""
    assert prov.stats["windows"] == 5 and prov.stats["areas_built_sync"] == 1
    for r in results:  # every frame ran the matcher on a 64 px window of the area
        assert r.georef is not None and r.georef.width_px == 64 and r.georef.m_per_px == 0.5
        assert "tiles" in r.timings_s and "matcher" in r.timings_s
    loc_in, _ = _run_localizer(tmp_path / "in", _sparse("instance"))  # approximate, but used
    assert loc_in.area_provider is not None and not loc_in.area_provider.exact


def test_localizer_encodes_each_patch_when_area_features_are_off(tmp_path):
    loc, results = _run_localizer(tmp_path, _sparse("frozen"), area_features=False)
    assert loc.area_provider is None and "off" in loc.area_status
    assert all(r.georef is not None and r.georef.width_px == 128 for r in results)


def test_frames_fall_back_to_their_own_patch_where_an_area_has_no_tiles(tmp_path):
    """An area reaches twice as far as a patch: where only the patch's tiles exist (one tile
    here), frames use their own patch instead of being rejected, and the area is retried only
    every SYNC_RETRY_FRAMES frames."""
    from xview_localizer.core.geo import global_px_to_latlon, latlon_to_tile
    from xview_localizer.matcher.area import SYNC_RETRY_FRAMES

    tx, ty = latlon_to_tile(LAT0, LON0, ZOOM)
    lat_c, lon_c = (float(v) for v in global_px_to_latlon(256 * tx + 128, 256 * ty + 128, ZOOM))
    root = write_tile_folder(tmp_path / "tiles", lat_c, lon_c, ZOOM, radius_tiles=0, seed=5)
    cfg = LocalizerConfig(patch_size_px=128, patch_m_per_px=0.25, datum_lat_deg=lat_c, datum_lon_deg=lon_c,
                          min_confident_matches=3)
    image = np.random.default_rng(2).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    with TileCache(f"file://{root}/{{z}}/{{x}}/{{y}}.png", tmp_path / "cache",
                   TileCacheConfig(zoom=ZOOM, offline=True)) as tc:
        loc = Localizer(cfg, _sparse("frozen"), tc)
        results = []
        for i in range(SYNC_RETRY_FRAMES + 3):
            loc.add_fix(FixSample(i * NS_PER_S // 10, lat_c, lon_c, 500.0, np.eye(2) * 4.0))
            results.append(loc.step(Frame(i * NS_PER_S // 10, image, CAMERA, T_BASE_CAMERA)))
        loc.close()
    assert all(r.reason != "tiles_unavailable" for r in results)
    assert all(r.georef is not None and r.georef.width_px == 128 for r in results)  # their own patch
    assert "tile" in loc.area_provider.last_error.lower()
    assert loc.area_provider.stats["areas_built"] == 0 and loc.area_provider.stats["windows"] == len(results)
