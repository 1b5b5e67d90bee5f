"""Tests of the aerial renderer, the tile pyramid, the tile server and the ground renderer,
including the geometric-consistency acceptance test (ground-truth depth of a ground frame,
moved into the map with the ground-truth pose, lands on the same surfaces of the aerial view
to within one aerial pixel)."""

from __future__ import annotations

import math
import sqlite3
import urllib.request

import cv2
import numpy as np
import pytest

from xview_localizer.core.camera import PinholeCamera, kitti_like_T_base_camera
from xview_localizer.core.errors import CameraModelError, ConfigError, DatasetError, GeometryError
from xview_localizer.core.geo import latlon_to_global_px, tms_row
from xview_localizer.core.se2 import SE2
from xview_localizer.sim.aerial import (
    AerialStyle,
    _interp_rows,
    _mosaic_maps,
    mercator_to_ortho_px,
    render_orthophoto,
    tile_range,
    write_tile_pyramid,
)
from xview_localizer.sim.ground import GroundRenderer, GroundStyle
from xview_localizer.sim.serve import serve_world_tiles
from xview_localizer.sim.world import (
    GROUND_CLASSES,
    Box,
    Building,
    World,
    WorldConfig,
    generate_world,
)

SIZE_M = 200.0


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WorldConfig(seed=11, size_m=SIZE_M))


@pytest.fixture(scope="module")
def ortho(world):
    return render_orthophoto(world)


@pytest.fixture(scope="module")
def pyramid(world, ortho, tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world.save(root)
    info = write_tile_pyramid(world, root / "tiles", zoom_max=20, zoom_min=17, ortho=ortho)
    return root, info


def _bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Float bilinear sample of an (H, W, 3) image at pixel-centre coordinates."""
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = (u - u0)[:, None], (v - v0)[:, None]
    f = img.astype(float)
    return ((1 - fu) * (1 - fv) * f[v0, u0] + fu * (1 - fv) * f[v0, u0 + 1]
            + (1 - fu) * fv * f[v0 + 1, u0] + fu * fv * f[v0 + 1, u0 + 1])


def _road_pose(world: World, frac: float = 0.5, road_index: int = 0) -> SE2:
    """A pose in the right-hand lane of a road, looking along it."""
    r = world.roads[road_index]
    p = r.centerline_xy_m
    inside = np.flatnonzero(np.all(np.abs(p) < world.half_size_m - 20, axis=1))
    i = int(inside[int(frac * (len(inside) - 1))])
    t = p[i + 1] - p[i]
    yaw = math.atan2(t[1], t[0])
    right = np.array([math.sin(yaw), -math.cos(yaw)])
    xy = p[i] + right * r.lane_width_m / 2
    return SE2(float(xy[0]), float(xy[1]), yaw)


# --------------------------------------------------------------------------------------
# aerial view and tiles
# --------------------------------------------------------------------------------------
def test_orthophoto_shape_determinism_and_appearance(world, ortho):
    img, g = ortho
    n = world.config.raster_size_px
    assert img.shape == (n, n, 3) and img.dtype == np.uint8
    assert g == world.georef
    again, _ = render_orthophoto(world)
    assert again.tobytes() == img.tobytes()
    # roofs are painted over the ground: roof pixels differ from the albedo there
    b = max(world.buildings, key=lambda b: b.parts[0].half_length_m * b.parts[0].half_width_m)
    uv = np.round(g.xy_to_px(np.array([[b.parts[0].cx_m, b.parts[0].cy_m]]))).astype(int)[0]
    assert np.abs(img[uv[1], uv[0]].astype(int) - world.albedo_rgb[uv[1], uv[0]].astype(int)).max() > 5
    # a different sun and white balance gives a different picture
    other, _ = render_orthophoto(world, style=AerialStyle(sun_azimuth_deg=300.0, white_balance=(1, 1, 1)))
    assert np.mean(np.abs(other.astype(int) - img.astype(int))) > 2.0


def test_orthophoto_resampling_and_errors(world):
    img, g = render_orthophoto(world, m_per_px=0.5)
    assert img.shape == (400, 400, 3) and g.m_per_px == 0.5
    with pytest.raises(ConfigError, match="multiple"):
        render_orthophoto(world, m_per_px=0.3)
    with pytest.raises(ConfigError, match="sun_elevation_deg"):
        AerialStyle(sun_elevation_deg=0.0)


def test_lattice_mapping_matches_the_exact_chain(world, ortho):
    _, g = ortho
    x0, y0, x1, y1 = tile_range(world, 20)
    nx, ny = x1 - x0 + 1, y1 - y0 + 1
    lu, lv = _mosaic_maps(world, g, 20, x0, y0, nx, ny)
    rows = (37, 300)
    mu, mv = _interp_rows(lu, lv, rows[0], rows[1], nx * 256)
    rng = np.random.default_rng(0)
    r = rng.integers(rows[0], rows[1], 300)
    c = rng.integers(0, nx * 256, 300)
    eu, ev = mercator_to_ortho_px(world, g, x0 * 256 + c + 0.5, y0 * 256 + r + 0.5, 20)
    assert np.max(np.abs(mu[r - rows[0], c] - eu)) < 2e-3  # float32 storage limits this
    assert np.max(np.abs(mv[r - rows[0], c] - ev)) < 2e-3


def test_tiles_are_where_the_geo_math_says(world, ortho, pyramid):
    img, g = ortho
    root, info = pyramid
    assert info.tile_count > 0 and info.zoom_max == 20
    rng = np.random.default_rng(1)
    xy = rng.uniform(-SIZE_M / 2 + 3, SIZE_M / 2 - 3, (150, 2))
    lat, lon = world.enu.inverse(xy[:, 0], xy[:, 1])
    gx, gy = latlon_to_global_px(lat, lon, 20)
    # the tile pixel whose centre is nearest, and the exact ENU of that centre
    px, py = np.floor(gx).astype(int), np.floor(gy).astype(int)
    eu, ev = mercator_to_ortho_px(world, g, px + 0.5, py + 0.5, 20)
    expected = _bilinear(img, eu, ev)
    got = []
    cache: dict = {}
    for X, Y in zip(px, py):
        key = (X // 256, Y // 256)
        if key not in cache:
            path = root / "tiles" / "20" / str(key[0]) / f"{key[1]}.png"
            tile = cv2.imread(str(path), cv2.IMREAD_COLOR)
            assert tile is not None and tile.shape == (256, 256, 3), path
            cache[key] = tile[:, :, ::-1]
        got.append(cache[key][Y % 256, X % 256])
    diff = np.abs(np.asarray(got, float) - expected)
    assert diff.max() <= 2.0  # only remap's 1/32-px weights and rounding


def test_world_point_colour_lands_in_its_tile(world, pyramid):
    """A roof centre (a large uniform patch) has the roof's aerial colour in the tile where
    the geo math places it."""
    root, _ = pyramid
    b = max(world.buildings, key=lambda b: min(b.parts[0].half_length_m, b.parts[0].half_width_m))
    part = b.parts[0]
    lat, lon = world.enu.inverse(part.cx_m, part.cy_m)
    gx, gy = latlon_to_global_px(lat, lon, 20)
    X, Y = int(gx), int(gy)
    tile = cv2.imread(str(root / "tiles" / "20" / str(X // 256) / f"{Y // 256}.png"))[:, :, ::-1]
    roof_px = tile[Y % 256, X % 256].astype(int)
    ortho_img, g = render_orthophoto(world)
    uv = np.round(g.xy_to_px(np.array([[part.cx_m, part.cy_m]]))).astype(int)[0]
    assert np.abs(roof_px - ortho_img[uv[1], uv[0]].astype(int)).max() <= 3


def test_tiles_outside_the_world_are_neutral_fill(world, pyramid):
    root, info = pyramid
    x0, y0, _, _ = info.tile_ranges[20]
    tile = cv2.imread(str(root / "tiles" / "20" / str(x0) / f"{y0}.png"))[:, :, ::-1]
    # the north-west tile's corner pixel lies north-west of the world's corner
    lat, lon = world.enu.inverse(-world.half_size_m, world.half_size_m)
    gx, gy = latlon_to_global_px(lat, lon, 20)
    assert x0 * 256 < gx - 2 and y0 * 256 < gy - 2
    assert tuple(tile[0, 0]) == AerialStyle().fill_rgb


def test_lower_zooms_are_downsampled_and_mbtiles_match(world, pyramid):
    root, info = pyramid
    x0, y0, x1, y1 = info.tile_ranges[19]
    assert (x0, y0, x1, y1) == tile_range(world, 19)
    X, Y = (x0 + x1) // 2, (y0 + y1) // 2
    parent = cv2.imread(str(root / "tiles" / "19" / str(X) / f"{Y}.png")).astype(float)
    kids = np.zeros((512, 512, 3))
    for dx in (0, 1):
        for dy in (0, 1):
            p = root / "tiles" / "20" / str(2 * X + dx) / f"{2 * Y + dy}.png"
            kid = cv2.imread(str(p))
            kids[dy * 256:(dy + 1) * 256, dx * 256:(dx + 1) * 256] = kid if kid is not None else 128
    down = kids.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(parent - down).max() <= 1.0
    con = sqlite3.connect(str(info.mbtiles_path))
    try:
        meta = dict(con.execute("SELECT name, value FROM metadata"))
        assert meta["format"] == "png" and meta["minzoom"] == "17" and meta["maxzoom"] == "20"
        (blob,) = con.execute("SELECT tile_data FROM tiles WHERE zoom_level=? AND tile_column=? AND tile_row=?",
                              (19, X, tms_row(Y, 19))).fetchone()
        (count,) = con.execute("SELECT COUNT(*) FROM tiles").fetchone()
    finally:
        con.close()
    assert blob == (root / "tiles" / "19" / str(X) / f"{Y}.png").read_bytes()
    assert count == info.tile_count


def test_serve_world_tiles_over_http(pyramid, tmp_path):
    root, info = pyramid
    x0, y0, _, _ = info.tile_ranges[20]
    server = serve_world_tiles(root, port=0)
    try:
        url = f"http://127.0.0.1:{server.port}/20/{x0}/{y0}.png"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
    finally:
        server.shutdown()
    assert body == (root / "tiles" / "20" / str(x0) / f"{y0}.png").read_bytes()
    with pytest.raises(DatasetError, match="no tile pyramid"):
        serve_world_tiles(tmp_path, port=0)


# --------------------------------------------------------------------------------------
# ground view
# --------------------------------------------------------------------------------------
def _blank_world(buildings=()) -> World:
    cfg = WorldConfig(seed=0, size_m=100.0)
    n = cfg.raster_size_px
    albedo = np.full((n, n, 3), 120, np.uint8)
    cls = np.zeros((n, n), np.uint8)
    return World(cfg, [], [], list(buildings), [], [], albedo, cls)


def test_depth_of_a_wall_and_of_the_ground_is_analytic():
    # a wall facing the camera 20 m ahead (the building's west face at x = 20 m)
    wall = Building(0, np.array([[20, -10], [30, -10], [30, 10], [20, 10]], float), 12.0,
                    (Box(25.0, 0.0, 0.0, 5.0, 10.0, 0.0, 12.0),), (100, 100, 100), (200, 180, 160))
    cam = PinholeCamera.kitti_like(320, 96)
    r = GroundRenderer(_blank_world([wall]), cam, kitti_like_T_base_camera(1.65))
    f = r.render(SE2(0.0, 0.0, 0.0))
    assert f.rgb.shape == (96, 320, 3) and f.depth_m.shape == (96, 320) and f.depth_m.dtype == np.float32
    K = cam.K
    cy, fy = K[1, 2], K[1, 1]
    # wall pixels: rows above the wall's foot (v < cy + fy * 1.65 / 20), central columns
    v_foot = cy + fy * 1.65 / 20.0
    rows = np.arange(0, int(v_foot) - 1)
    np.testing.assert_allclose(f.depth_m[rows][:, 150:170], 20.0, atol=1e-4)
    # ground pixels below the foot: depth = h * fy / (v - cy)
    rows = np.arange(int(v_foot) + 2, 96)
    expect = 1.65 * fy / (rows - cy)
    np.testing.assert_allclose(f.depth_m[rows, 160], expect, rtol=1e-5)
    # without the wall, rows above the horizon see sky: depth 0
    f2 = GroundRenderer(_blank_world(), cam, kitti_like_T_base_camera(1.65)).render(SE2(0.0, 0.0, 0.0))
    assert np.all(f2.depth_m[: int(cy) - 1] == 0.0)
    assert np.all(f2.depth_m[int(cy) + 5:] > 0.0)


def test_ground_render_is_deterministic(world, pyramid):
    root, _ = pyramid
    cam = PinholeCamera.kitti_like(256, 96)
    pose = _road_pose(world)
    a = GroundRenderer(world, cam, kitti_like_T_base_camera()).render(pose)
    b = GroundRenderer(world, cam, kitti_like_T_base_camera(), threads=1).render(pose)
    assert a.rgb.tobytes() == b.rgb.tobytes() and a.depth_m.tobytes() == b.depth_m.tobytes()
    # a world loaded from disk renders byte-identically to the generated one
    loaded = World.load(root)
    d = GroundRenderer(loaded, cam, kitti_like_T_base_camera(), threads=3).render(pose)
    assert d.rgb.tobytes() == a.rgb.tobytes() and d.depth_m.tobytes() == a.depth_m.tobytes()
    c = GroundRenderer(world, cam, kitti_like_T_base_camera()).render(SE2(pose.x_m + 1.0, pose.y_m, pose.yaw_rad))
    assert c.rgb.tobytes() != a.rgb.tobytes()


def test_ground_renderer_rejects_bad_inputs(world):
    cam = PinholeCamera.kitti_like(64, 32)
    # a distorted PinholeCamera is rendered through its lens (test_sim_cameras.py); an object
    # with distortion coefficients but no model to invert them is not
    distorted = PinholeCamera(64, 32, cam.k, (0.1, 0, 0, 0, 0), "plumb_bob")
    assert GroundRenderer(world, distorted, kitti_like_T_base_camera()).camera_kind == "distorted"

    class NoModel:
        K, D, width_px, height_px = cam.K, np.array([0.1, 0, 0, 0, 0]), 64, 32

    with pytest.raises(CameraModelError, match="distortion"):
        GroundRenderer(world, NoModel(), kitti_like_T_base_camera())
    below = kitti_like_T_base_camera()
    below[2, 3] = -0.5
    with pytest.raises(GeometryError, match="above the ground"):
        GroundRenderer(world, cam, below)
    with pytest.raises(GeometryError, match="SE2"):
        GroundRenderer(world, cam, kitti_like_T_base_camera()).render((0.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="max_range_m"):
        GroundStyle(max_range_m=1.0)


def _lift_ground_points(frame, ids, cam, T_map_cam):
    """Depth pixels on the ground plane -> (xy_map (N, 2), z (N,), uv (N, 2))."""
    v, u = np.nonzero((ids == -2) & (frame.depth_m > 0))
    d = frame.depth_m[v, u].astype(float)
    rays = np.stack([u, v, np.ones_like(u)], 1).astype(float) @ np.linalg.inv(cam.K).T
    pc = rays * d[:, None]
    pm = pc @ T_map_cam[:3, :3].T + T_map_cam[:3, 3]
    return pm[:, :2], pm[:, 2], np.stack([u, v], 1)


@pytest.mark.parametrize("road_index,frac", [(0, 0.5), (1, 0.3)])
def test_geometric_consistency_ground_depth_lands_on_the_aerial_surfaces(world, ortho, road_index, frac):
    """Acceptance: GT depth points of a ground frame, moved into the map with the GT pose, land
    on the same surfaces of the aerial render to within one aerial pixel."""
    img, g = ortho
    cam = PinholeCamera.kitti_like(1024, 256)
    T_base_camera = kitti_like_T_base_camera()
    rend = GroundRenderer(world, cam, T_base_camera)
    pose = _road_pose(world, frac, road_index)
    frame, ids = rend.render(pose, return_ids=True)
    c, s = math.cos(pose.yaw_rad), math.sin(pose.yaw_rad)
    T_map_base = np.array([[c, -s, 0, pose.x_m], [s, c, 0, pose.y_m], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    xy, z, uv = _lift_ground_points(frame, ids, cam, T_map_base @ T_base_camera)
    assert len(xy) > 20000
    assert np.max(np.abs(z)) < 2e-3  # ground-plane points lie on z = 0
    inside = np.all(np.abs(xy) < world.half_size_m - 2.0, axis=1)
    xy, uv = xy[inside], uv[inside]

    # (1) surfaces: bright lane-marking pixels of the ground frame lie on marking pixels of
    # the world, within one aerial pixel (near field, where a camera pixel < an aerial pixel)
    near = np.hypot(*(xy - [pose.x_m, pose.y_m]).T) < 12.0
    px = g.xy_to_px(xy)
    gray = frame.rgb[uv[:, 1], uv[:, 0]].astype(float).mean(1)
    on_road_cls = world.ground_class[np.round(px[:, 1]).astype(int), np.round(px[:, 0]).astype(int)]
    marking = GROUND_CLASSES["marking"]
    mark_mask = (world.ground_class == marking).astype(np.uint8)
    mark_dil = cv2.dilate(mark_mask, np.ones((3, 3), np.uint8))  # +-1 aerial px
    bright = (np.hypot(*(xy - [pose.x_m, pose.y_m]).T) < 20.0) & (gray > 170)
    # keep those inside a carriageway by the road geometry (curbs are bright too)
    cand = np.flatnonzero(bright)
    inner = np.zeros(len(cand), bool)
    for r in world.roads:
        a, b = r.centerline_xy_m[:-1], r.centerline_xy_m[1:]
        ab = b - a
        q = xy[cand][:, None, :] - a[None]
        t = np.clip((q * ab[None]).sum(-1) / (ab * ab).sum(-1)[None], 0, 1)
        d = np.linalg.norm(q - t[..., None] * ab[None], axis=-1).min(1)
        inner |= d < r.width_m / 2 - 0.15
    bright[cand[~inner]] = False
    assert bright.sum() > 30
    pu, pv = np.round(px[bright, 0]).astype(int), np.round(px[bright, 1]).astype(int)
    assert mark_dil[pv, pu].mean() > 0.97
    assert np.mean(on_road_cls[near] == GROUND_CLASSES["grass"]) < 0.5

    # (2) registration: the ground frame's colours, put at the lifted points, correlate best
    # with the (differently lit) aerial render at zero offset, to 0.1 px. Only points the
    # aerial shows as bare, unshadowed ground count (objects and shadows masked out).
    bare = World(world.config, world.roads, world.intersections, [], [], [], world.albedo_rgb,
                 world.ground_class)
    bare_img, _ = render_orthophoto(bare)
    aer = img.astype(float).mean(2)
    visible = np.abs(aer - bare_img.astype(float).mean(2)) < 2.0
    sel = (np.hypot(*(xy - [pose.x_m, pose.y_m]).T) < 15.0)
    sel &= visible[np.round(px[:, 1]).astype(int), np.round(px[:, 0]).astype(int)]
    assert sel.sum() > 5000
    aer3 = aer[..., None]

    def ncc(du: float, dv: float) -> float:
        a = gray[sel]
        b = _bilinear(aer3, px[sel, 0] + du, px[sel, 1] + dv)[:, 0]
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))

    shifts = np.round(np.arange(-1.0, 1.01, 0.1), 2)
    su = [ncc(d, 0.0) for d in shifts]
    sv = [ncc(0.0, d) for d in shifts]
    best_u, best_v = shifts[int(np.argmax(su))], shifts[int(np.argmax(sv))]
    assert max(su) > 0.8, max(su)
    assert abs(best_u) <= 0.2 and abs(best_v) <= 0.2, (best_u, best_v)
    # and a one-pixel misregistration is worse (clearly so across the road's markings)
    off_u, off_v = ncc(1.0, 0.0), ncc(0.0, 1.0)
    assert off_u < max(su) and off_v < max(sv)
    assert min(off_u - max(su), off_v - max(sv)) < -0.05


def test_tile_margin_covers_patches_beyond_the_world_edge(world, ortho, tmp_path):
    margin_m = 40.0
    plain = tile_range(world, 17)
    grown = tile_range(world, 17, margin_m)
    assert grown[0] <= plain[0] and grown[1] <= plain[1] and grown[2] >= plain[2] and grown[3] >= plain[3]
    info = write_tile_pyramid(world, tmp_path / "tiles", zoom_max=17, zoom_min=17, mbtiles=False,
                              ortho=ortho, margin_m=margin_m)
    assert info.tile_ranges[17] == grown
    # a point 35 m east of the world's east edge lies on a written tile
    lat, lon = world.enu.inverse(world.half_size_m + 35.0, 0.0)
    gx, gy = latlon_to_global_px(lat, lon, 17)
    assert (tmp_path / "tiles" / "17" / str(int(gx) // 256) / f"{int(gy) // 256}.png").is_file()
    with pytest.raises(ConfigError, match="margin_m"):
        write_tile_pyramid(world, tmp_path / "bad", zoom_max=17, zoom_min=17, mbtiles=False, ortho=ortho,
                           margin_m=-1.0)
