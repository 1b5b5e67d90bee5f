"""Tests of xview_localizer.core.geo against pyproj, an independent ECEF computation, and
published Web-Mercator tile facts (OSM wiki zoom table, Bing Maps quadkey example)."""

from __future__ import annotations

import math

import numpy as np
import pyproj
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xview_localizer.core import geo
from xview_localizer.core.errors import GeometryError

# (name, lat_deg, lon_deg, expected UTM zone, north)
PLACES = [
    ("Paris", 48.8566, 2.3522, 31, True),
    ("New York", 40.7128, -74.0060, 18, True),
    ("Sydney", -33.8688, 151.2093, 56, False),
    ("Tokyo", 35.6762, 139.6503, 54, True),
    ("Buenos Aires", -34.6037, -58.3816, 21, False),
    ("Quito (equator)", -0.1807, -78.4678, 17, False),
    ("Bergen (Norway exception)", 60.3913, 5.3221, 32, True),
    ("Ny-Alesund (Svalbard exception)", 78.9236, 11.9300, 33, True),
]


# --------------------------------------------------------------------------------------
# UTM
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, lat, lon, zone, north", PLACES)
def test_utm_zone_and_forward_inverse_match_pyproj(name, lat, lon, zone, north):
    assert geo.utm_zone_for(lat, lon) == (zone, north), name
    proj = geo.UtmProjection(lat, lon)
    assert (proj.zone, proj.north) == (zone, north)
    epsg = (32600 if north else 32700) + zone
    assert proj.epsg == epsg
    ref = pyproj.Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    rng = np.random.default_rng(zone)
    lats = lat + rng.uniform(-0.05, 0.05, 20)
    lons = lon + rng.uniform(-0.05, 0.05, 20)
    e, n = proj.forward(lats, lons)
    e_ref, n_ref = ref.transform(lons, lats)
    np.testing.assert_allclose(e, e_ref, atol=1e-6)
    np.testing.assert_allclose(n, n_ref, atol=1e-6)
    lat_back, lon_back = proj.inverse(e, n)
    np.testing.assert_allclose(lat_back, lats, atol=1e-9)
    np.testing.assert_allclose(lon_back, lons, atol=1e-9)
    # sanity of the grid itself: false easting 500 km at the central meridian
    e_cm, _ = proj.forward(lat, proj.central_meridian_deg)
    assert float(e_cm) == pytest.approx(500_000.0, abs=1e-6)


def test_utm_central_meridian_and_false_northing():
    proj = geo.UtmProjection(-33.8688, 151.2093)  # zone 56 south: CM 153 E, false northing 10000 km
    assert proj.central_meridian_deg == 153.0
    e, n = proj.forward(0.0, 153.0)
    assert float(e) == pytest.approx(500_000.0, abs=1e-6)
    assert float(n) == pytest.approx(10_000_000.0, abs=1e-6)


@pytest.mark.parametrize("name, lat, lon, zone, north", PLACES)
def test_convergence_matches_pyproj_factors_in_degrees_with_sign(name, lat, lon, zone, north):
    proj = geo.UtmProjection(lat, lon)
    ref = pyproj.Proj(proj="utm", zone=zone, south=not north, ellps="WGS84")
    for dlon in (-2.0, -0.5, 0.0, 0.7, 2.5):
        lo = lon + dlon
        got_deg = math.degrees(proj.convergence_rad(lat, lo))
        ref_deg = ref.get_factors(lo, lat).meridian_convergence
        assert got_deg == pytest.approx(ref_deg, abs=2e-5), (name, dlon)
        # independent first-order check: gamma ~ (lon - lon_0) sin(lat)
        approx_deg = (lo - proj.central_meridian_deg) * math.sin(math.radians(lat))
        assert got_deg == pytest.approx(approx_deg, abs=0.03 + 0.02 * abs(approx_deg))


def test_convergence_sign_east_of_meridian_in_both_hemispheres():
    north = geo.UtmProjection(48.0, 10.0)  # zone 32, CM 9 E
    south = geo.UtmProjection(-48.0, 10.0)
    assert north.convergence_rad(48.0, 11.0) > 0.0
    assert north.convergence_rad(48.0, 7.0) < 0.0
    assert south.convergence_rad(-48.0, 11.0) < 0.0
    assert abs(north.convergence_rad(48.0, 9.0)) < 1e-9


def test_true_to_grid_yaw_uses_the_convergence_with_the_right_sign():
    # Walk 200 m due TRUE north (ENU yaw pi/2) from a point 2.5 deg east of the CM; its
    # direction in the UTM grid must equal true_to_grid_yaw_rad(pi/2, gamma).
    lat0, lon0 = 52.0, 11.5
    proj = geo.UtmProjection(lat0, lon0)
    enu = geo.LocalEnu(lat0, lon0)
    lat1, lon1 = enu.inverse(0.0, 200.0)
    e0, n0 = proj.forward(lat0, lon0)
    e1, n1 = proj.forward(lat1, lon1)
    yaw_grid_rad = math.atan2(float(n1 - n0), float(e1 - e0))
    gamma_rad = proj.convergence_rad(lat0, lon0)
    assert math.degrees(gamma_rad) > 1.0
    assert geo.true_to_grid_yaw_rad(math.pi / 2, gamma_rad) == pytest.approx(yaw_grid_rad, abs=1e-5)
    assert geo.grid_to_true_yaw_rad(yaw_grid_rad, gamma_rad) == pytest.approx(math.pi / 2, abs=1e-5)


# --------------------------------------------------------------------------------------
# Local ENU vs an independent ECEF computation
# --------------------------------------------------------------------------------------
_A = 6378137.0
_F = 1.0 / 298.257223563
_E2 = _F * (2.0 - _F)


def _ecef(lat_deg, lon_deg, h_m):
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    n = _A / np.sqrt(1.0 - _E2 * np.sin(lat) ** 2)
    return np.stack([
        (n + h_m) * np.cos(lat) * np.cos(lon),
        (n + h_m) * np.cos(lat) * np.sin(lon),
        (n * (1.0 - _E2) + h_m) * np.sin(lat),
    ], axis=-1)


def _enu_reference(lat0, lon0, h0, lat, lon, h):
    d = _ecef(lat, lon, h) - _ecef(lat0, lon0, h0)
    p, lam = math.radians(lat0), math.radians(lon0)
    east = -math.sin(lam) * d[..., 0] + math.cos(lam) * d[..., 1]
    north = (-math.sin(p) * math.cos(lam) * d[..., 0] - math.sin(p) * math.sin(lam) * d[..., 1]
             + math.cos(p) * d[..., 2])
    return east, north


@pytest.mark.parametrize("name, lat, lon, zone, north", PLACES)
def test_local_enu_matches_independent_ecef(name, lat, lon, zone, north):
    h0 = 35.0
    enu = geo.LocalEnu(lat, lon, h0)
    rng = np.random.default_rng(7)
    lats = lat + rng.uniform(-0.02, 0.02, 25)
    lons = lon + rng.uniform(-0.02, 0.02, 25)
    hs = h0 + rng.uniform(-20.0, 20.0, 25)
    e, n = enu.forward(lats, lons, hs)
    e_ref, n_ref = _enu_reference(lat, lon, h0, lats, lons, hs)
    np.testing.assert_allclose(e, e_ref, atol=1e-4)
    np.testing.assert_allclose(n, n_ref, atol=1e-4)
    lat_back, lon_back = enu.inverse(e, n, np.asarray(hs) - h0)
    np.testing.assert_allclose(lat_back, lats, atol=1e-9)
    np.testing.assert_allclose(lon_back, lons, atol=1e-9)


def test_local_enu_axes():
    enu = geo.LocalEnu(45.0, 7.0)
    e, n = enu.forward(45.0, 7.0)
    assert abs(float(e)) < 1e-6 and abs(float(n)) < 1e-6
    e, n = enu.forward(45.001, 7.0)  # north of the datum
    assert float(n) == pytest.approx(111.13, abs=0.1) and abs(float(e)) < 1e-3
    e, n = enu.forward(45.0, 7.001)  # east of the datum
    assert float(e) == pytest.approx(78.85, abs=0.1) and abs(float(n)) < 0.01


# --------------------------------------------------------------------------------------
# Web-Mercator tiles: published facts
# --------------------------------------------------------------------------------------
def test_zoom0_is_a_single_tile():
    for lat, lon in [(0.0, 0.0), (60.0, -170.0), (-80.0, 179.9), (85.0, 0.0)]:
        assert geo.latlon_to_tile(lat, lon, 0) == (0, 0)


@pytest.mark.parametrize(
    "lat, lon, tile",
    [
        (45.0, -90.0, (0, 0)),  # north-west quadrant
        (45.0, 90.0, (1, 0)),  # north-east
        (-45.0, -90.0, (0, 1)),  # south-west
        (-45.0, 90.0, (1, 1)),  # south-east
        (0.0, 0.0, (1, 1)),  # the corner belongs to the south-east tile
    ],
)
def test_zoom1_quadrants(lat, lon, tile):
    assert geo.latlon_to_tile(lat, lon, 1) == tile


def test_quadkey_bing_example_and_tms_row():
    assert geo.tile_to_quadkey(3, 5, 3) == "213"  # Bing Maps Tile System documentation
    assert geo.tile_to_quadkey(0, 0, 0) == ""
    assert geo.tile_to_quadkey(1, 1, 1) == "3"
    assert geo.tms_row(5, 3) == 2
    assert geo.tms_row(0, 0) == 0


def test_ground_resolution_osm_zoom_table():
    # OSM wiki "Zoom levels": 156543.03 m/px at the equator at zoom 0, halving per level.
    assert geo.ground_resolution_m_per_px(0.0, 0) == pytest.approx(156543.03, abs=0.01)
    assert geo.ground_resolution_m_per_px(0.0, 1) == pytest.approx(78271.52, abs=0.01)
    assert geo.ground_resolution_m_per_px(0.0, 18) == pytest.approx(0.597, abs=0.001)
    assert geo.ground_resolution_m_per_px(60.0, 10) == pytest.approx(156543.03392 / 2 / 1024, rel=1e-9)
    assert geo.ground_resolution_m_per_px(0.0, 0, tile_size_px=512) == pytest.approx(156543.03392 / 2, rel=1e-9)
    assert float(geo.mercator_scale_factor(60.0)) == pytest.approx(2.0)


def test_global_pixels_match_pyproj_web_mercator():
    to_3857 = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    half_m = math.pi * 6378137.0
    for lat, lon in [(48.8566, 2.3522), (-33.8688, 151.2093), (40.7128, -74.006), (0.0, 0.0)]:
        zoom = 17
        world_px = 256 * 2**zoom
        x_px, y_px = geo.latlon_to_global_px(lat, lon, zoom)
        x_m, y_m = to_3857.transform(lon, lat)
        assert float(x_px) == pytest.approx((x_m + half_m) / (2 * half_m) * world_px, abs=1e-6)
        assert float(y_px) == pytest.approx((half_m - y_m) / (2 * half_m) * world_px, abs=1e-6)


def test_tile_corners():
    lat, lon = geo.tile_nw_latlon(0, 0, 0)
    assert lat == pytest.approx(geo.MAX_LAT_DEG, abs=1e-9) and lon == pytest.approx(-180.0)
    lat, lon = geo.tile_nw_latlon(1, 1, 1)
    assert lat == pytest.approx(0.0, abs=1e-12) and lon == pytest.approx(0.0, abs=1e-12)
    x_px, y_px = geo.latlon_to_global_px(0.0, 0.0, 0)
    assert (float(x_px), float(y_px)) == pytest.approx((128.0, 128.0))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    lat=st.floats(-85.0, 85.0),
    lon=st.floats(-180.0, 179.999999),
    zoom=st.integers(0, 22),
)
def test_latlon_global_px_round_trip_and_tile_contains_point(lat, lon, zoom):
    x_px, y_px = geo.latlon_to_global_px(lat, lon, zoom)
    lat_back, lon_back = geo.global_px_to_latlon(x_px, y_px, zoom)
    assert float(lat_back) == pytest.approx(lat, abs=1e-9)
    assert float(lon_back) == pytest.approx(lon, abs=1e-9)
    tx, ty = geo.latlon_to_tile(lat, lon, zoom)
    assert 0 <= tx < 2**zoom and 0 <= ty < 2**zoom
    nw_lat, nw_lon = geo.tile_nw_latlon(tx, ty, zoom)
    se_lat, se_lon = geo.tile_nw_latlon(tx + 1, ty + 1, zoom)
    assert nw_lon - 1e-9 <= lon <= se_lon + 1e-9
    assert se_lat - 1e-9 <= lat <= nw_lat + 1e-9


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: geo.latlon_to_global_px(91.0, 0.0, 3), "out of range"),
        (lambda: geo.latlon_to_tile(0.0, 200.0, 3), "out of range"),
        (lambda: geo.latlon_to_tile(float("nan"), 0.0, 3), "must be finite"),
        (lambda: geo.UtmProjection(float("inf"), 0.0), "must be finite"),
        (lambda: geo.LocalEnu(-95.0, 0.0), "out of range"),
        (lambda: geo.utm_zone_for(0.0, -181.0), "out of range"),
    ],
)
def test_bad_latlon_raises(call, match):
    with pytest.raises(GeometryError, match=match):
        call()
