"""Patch georeference and resampling accuracy against a tile pyramid of known geography."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xview_localizer.core.errors import GeometryError
from xview_localizer.core.geo import ground_resolution_m_per_px, latlon_to_global_px
from xview_localizer.tiles.cache import TileCache, TileCacheConfig
from xview_localizer.tiles.patch import (
    PatchGeoref,
    PatchSampler,
    choose_zoom,
    exact_offsets_px,
)
from xview_localizer.tiles.server import serve_directory
from xview_localizer.tiles.synthetic import MarkerWorld, enu_numpy, write_pyramid

WORLD = MarkerWorld(49.01, 8.42, spacing_m=8.0, sigma_m=0.6)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    root = tmp_path_factory.mktemp("pyramid")
    write_pyramid(WORLD, root, [18, 19], radius_m=125.0)
    return root


# -- PatchGeoref ----------------------------------------------------------------------
def test_georef_convention_matches_docs():
    g = PatchGeoref(49.01, 8.42, 0.5, width_px=5, height_px=3)
    uv = np.array([[2.0, 1.0], [0.0, 0.0], [4.0, 2.0]])
    np.testing.assert_allclose(g.px_to_enu(uv), [[0.0, 0.0], [-1.0, 0.5], [1.0, -0.5]])
    A = g.affine_enu_from_px
    np.testing.assert_allclose((A @ np.c_[uv, np.ones(3)].T).T, g.px_to_enu(uv))
    B = g.affine_px_from_enu
    np.testing.assert_allclose((B @ np.c_[g.px_to_enu(uv), np.ones(3)].T).T, uv)
    assert PatchGeoref.from_dict(g.to_dict()) == g


@settings(max_examples=60, deadline=None)
@given(
    u=st.floats(-1e4, 1e4), v=st.floats(-1e4, 1e4), m=st.floats(0.01, 10.0),
    w=st.integers(1, 4096), h=st.integers(1, 4096),
)  # fmt: skip
def test_georef_roundtrip(u, v, m, w, h):
    g = PatchGeoref(10.0, 20.0, m, w, h)
    uv = np.array([[u, v]])
    np.testing.assert_allclose(g.enu_to_px(g.px_to_enu(uv)), uv, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(center_lat_deg=float("nan")), "finite"),
        (dict(center_lat_deg=86.0), "lat"),
        (dict(m_per_px=0.0), "m_per_px"),
        (dict(width_px=0), "width_px"),
        (dict(height_px=2.5), "height_px"),
    ],
)
def test_georef_rejects_bad_input(kwargs, match):
    base = dict(center_lat_deg=49.0, center_lon_deg=8.0, m_per_px=0.2, width_px=8, height_px=8)
    with pytest.raises(GeometryError, match=match):
        PatchGeoref(**{**base, **kwargs})
    with pytest.raises(GeometryError, match="shape"):
        PatchGeoref(**base).px_to_enu(np.zeros((3, 3)))


def test_choose_zoom_is_finest_needed():
    assert choose_zoom(49.01, 0.2, max_zoom=21) == 19  # 0.196 m/px at z19, 0.39 at z18
    assert ground_resolution_m_per_px(49.01, 19) <= 0.2 < ground_resolution_m_per_px(49.01, 18)
    assert choose_zoom(49.01, 0.2, max_zoom=18) == 18  # capped by the source
    assert choose_zoom(0.0, 0.2, max_zoom=21) == 20  # 1/cos(lat): the equator needs z20
    assert choose_zoom(49.01, 1.0, max_zoom=21) == 17


# -- resampling grid ------------------------------------------------------------------
@pytest.mark.parametrize("lat_deg", [49.0101, 49.0149, 60.0049, -33.861])
def test_cached_grid_matches_exact_grid(lat_deg):
    """The cached (scaled + translated) grid equals the exact per-pixel mapping to << 0.1 px."""
    sampler = PatchSampler()
    sampler.plan(lat_deg - 0.004, 8.0, 512, 0.2, 19)  # prime the band with another centre
    plan = sampler.plan(lat_deg, 8.4, 512, 0.2, 19)
    dx, dy = exact_offsets_px(lat_deg, 8.4, (512, 512), 0.2, 19)
    cx, cy = latlon_to_global_px(lat_deg, 8.4, 19)
    err_x = np.abs(cx + dx - plan.tx0 * 256 - 0.5 - plan.map_x).max()
    err_y = np.abs(cy + dy - plan.ty0 * 256 - 0.5 - plan.map_y).max()
    assert max(err_x, err_y) < 2e-3  # measured ~1e-4 px (float32 resolution)


def test_residual_of_linear_mercator_over_200m_is_stated():
    """Documented figure: treating Web-Mercator as linear (one scale at the centre) over a
    200 m patch at 49 deg errs by ~0.01 px at 0.2 m/px; the per-pixel mapping removes it."""
    lat = 49.01
    dx, dy = exact_offsets_px(lat, 8.42, (1000, 1000), 0.2, 19)  # 200 m x 200 m
    k = 1.0 / ground_resolution_m_per_px(lat, 19) * 0.2
    u = (np.arange(1000) - 499.5)[None, :]
    v = (np.arange(1000) - 499.5)[:, None]
    lin_err = max(np.abs(dx - k * u).max(), np.abs(dy - k * v).max())
    # A spherical scale (156543 cos(lat)/2^z) is off by the ellipsoid (~0.1-0.2 %), i.e.
    # ~1 px at the edge of a 200 m patch: that is why the exact ellipsoidal ENU is used.
    assert 0.3 < lin_err < 2.0


# -- patch accuracy -------------------------------------------------------------------
def _peak_subpixel(img: np.ndarray, u0: float, v0: float, r: int = 6):
    """Sub-pixel peak (log-parabola on the 3x3 around the maximum) near (u0, v0)."""
    ui, vi = int(round(u0)), int(round(v0))
    win = img[vi - r : vi + r + 1, ui - r : ui + r + 1].astype(float) + 1.0
    j, i = np.unravel_index(np.argmax(win), win.shape)
    if not (1 <= i < win.shape[1] - 1 and 1 <= j < win.shape[0] - 1):
        return None
    lw = np.log(win)

    def vertex(a, b, c):
        return 0.5 * (a - c) / (a - 2 * b + c)

    du = vertex(lw[j, i - 1], lw[j, i], lw[j, i + 1])
    dv = vertex(lw[j - 1, i], lw[j, i], lw[j + 1, i])
    return ui - r + i + du, vi - r + j + dv


def _marker_errors(rgb: np.ndarray, georef: PatchGeoref) -> np.ndarray:
    lat, lon, _ = WORLD.markers_latlon(120.0)
    uv = georef.latlon_to_px(lat, lon)
    h, w = rgb.shape[:2]
    inside = (uv[:, 0] > 8) & (uv[:, 0] < w - 9) & (uv[:, 1] > 8) & (uv[:, 1] < h - 9)
    errs = []
    for u0, v0 in uv[inside]:
        p = _peak_subpixel(rgb[..., 0], u0, v0)
        assert p is not None, f"no marker peak near ({u0:.1f}, {v0:.1f})"
        errs.append(math.hypot(p[0] - u0, p[1] - v0))
    return np.array(errs)


@pytest.mark.parametrize(
    "lat_deg, lon_deg, size_px, m_per_px",
    [
        (49.01, 8.42, 512, 0.2),  # z19
        (49.0103, 8.4207, (400, 520), 0.2),  # off-centre, non-square
        (49.0096, 8.4195, 256, 0.45),  # z18, downsampled
    ],
)
def test_patch_markers_land_where_georef_says(pyramid, lat_deg, lon_deg, size_px, m_per_px):
    with TileCache(f"file://{pyramid}/{{z}}/{{x}}/{{y}}.png", None, TileCacheConfig(max_zoom=19)) as cache:
        rgb, georef = cache.patch(lat_deg, lon_deg, size_px, m_per_px)
    h, w = (size_px, size_px) if isinstance(size_px, int) else size_px
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    assert (georef.width_px, georef.height_px, georef.m_per_px) == (w, h, m_per_px)
    errs = _marker_errors(rgb, georef)
    assert len(errs) >= 20
    assert errs.max() < 0.5, f"max marker error {errs.max():.3f} px"
    assert np.median(errs) < 0.1
    # colour channels are RGB, not BGR: markers are red
    assert rgb[..., 0].max() > 200 and rgb[..., 2].max() == 60


def test_patch_scale_is_true_metres(pyramid):
    """Two markers 8 m apart are 8 / m_per_px pixels apart in the patch, east and north."""
    with TileCache(f"file://{pyramid}/{{z}}/{{x}}/{{y}}.png", None, TileCacheConfig()) as cache:
        rgb, georef = cache.patch(49.01, 8.42, 256, 0.2)
    a = _peak_subpixel(rgb[..., 0], 127.5, 127.5)  # the datum marker
    b = _peak_subpixel(rgb[..., 0], 127.5 + 40, 127.5)  # 8 m east
    c = _peak_subpixel(rgb[..., 0], 127.5, 127.5 - 40)  # 8 m north (up)
    assert abs(a[0] - 127.5) < 0.1 and abs(a[1] - 127.5) < 0.1
    assert abs(b[0] - a[0] - 40.0) < 0.1 and abs(b[1] - a[1]) < 0.1
    assert abs(a[1] - c[1] - 40.0) < 0.1 and abs(c[0] - a[0]) < 0.1


def test_patch_over_http_matches_file_source(pyramid):
    server = serve_directory(pyramid, port=0)
    try:
        cfg = TileCacheConfig(timeout_s=5.0)
        with TileCache(server.url_template(), pyramid.parent / "http-cache", cfg) as http_cache:
            rgb_http, g1 = http_cache.patch(49.0102, 8.4203, 300, 0.2)
        with TileCache(f"file://{pyramid}/{{z}}/{{x}}/{{y}}.png", None, cfg) as file_cache:
            rgb_file, g2 = file_cache.patch(49.0102, 8.4203, 300, 0.2)
    finally:
        server.shutdown()
    assert g1 == g2
    np.testing.assert_array_equal(rgb_http, rgb_file)


def test_renderer_enu_agrees_with_pyproj():
    """The synthetic world's closed-form ENU equals geo.LocalEnu (two independent paths)."""
    from xview_localizer.core.geo import LocalEnu

    rng = np.random.default_rng(0)
    lat = 49.01 + rng.uniform(-0.002, 0.002, 50)
    lon = 8.42 + rng.uniform(-0.003, 0.003, 50)
    e1, n1 = enu_numpy(lat, lon, 49.01, 8.42)
    e2, n2 = LocalEnu(49.01, 8.42).forward(lat, lon)
    np.testing.assert_allclose(e1, e2, atol=1e-6)
    np.testing.assert_allclose(n1, n2, atol=1e-6)


def test_patch_rejects_bad_arguments(pyramid):
    with TileCache(f"file://{pyramid}/{{z}}/{{x}}/{{y}}.png", None, TileCacheConfig()) as cache:
        with pytest.raises(GeometryError, match="m_per_px"):
            cache.patch(49.01, 8.42, 64, -1.0)
        with pytest.raises(GeometryError, match="size_px"):
            cache.patch(49.01, 8.42, 0, 0.2)
        with pytest.raises(GeometryError, match="centre"):
            cache.patch(float("nan"), 8.42, 64, 0.2)
        with pytest.raises(GeometryError, match="tiles"):
            cache.patch(49.01, 8.42, 8192, 0.2)
