"""Tests of the synthetic world generator, its data model and save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xview_localizer.core.errors import ConfigError, DatasetError
from xview_localizer.sim.world import (
    GROUND_CLASSES,
    World,
    WorldConfig,
    WorldStyle,
    generate_world,
)

SIZE_M = 240.0


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WorldConfig(seed=3, size_m=SIZE_M))


def _dist_to_polyline(p: np.ndarray, poly: np.ndarray) -> float:
    a, b = poly[:-1], poly[1:]
    ab = b - a
    t = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-12), 0, 1)
    q = a + t[:, None] * ab
    return float(np.min(np.hypot(*(q - p).T)))


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="season"):
        WorldStyle(season="spring")
    with pytest.raises(ConfigError, match="road_width_range_m"):
        WorldStyle(road_width_range_m=(4.0, 10.0))
    with pytest.raises(ConfigError, match="building_height_range_m"):
        WorldStyle(building_height_range_m=(20.0, 10.0))
    with pytest.raises(ConfigError, match="seed"):
        WorldConfig(seed=-1)
    with pytest.raises(ConfigError, match="size_m"):
        WorldConfig(seed=1, size_m=float("nan"))
    with pytest.raises(ConfigError, match="integer"):
        WorldConfig(seed=1, size_m=100.05)
    with pytest.raises(ConfigError, match="preset"):
        WorldStyle.preset("nope")


def test_world_content_is_plausible(world: World):
    cfg = world.config
    assert len(world.roads) >= 3
    assert len(world.intersections) >= 2
    assert len(world.buildings) >= 5
    assert len(world.trees) >= 10
    assert len(world.cars) >= 3
    for r in world.roads:
        assert 6.0 <= r.width_m <= 14.0
        assert r.lanes in (2, 4)
        assert r.centerline_xy_m.ndim == 2 and r.centerline_xy_m.shape[1] == 2
    for b in world.buildings:
        assert 5.0 <= b.height_m <= 30.0
        assert len(b.parts) in (1, 2)
        assert b.footprint_xy_m.shape[1] == 2 and len(b.footprint_xy_m) in (4, 6)
        assert np.all(np.abs(b.footprint_xy_m) <= cfg.size_m / 2)
    for t in world.trees:
        assert t.canopy_bottom_m < t.canopy_top_m
    n = cfg.raster_size_px
    assert world.albedo_rgb.shape == (n, n, 3) and world.albedo_rgb.dtype == np.uint8
    assert world.ground_class.shape == (n, n)
    assert set(np.unique(world.ground_class)) <= set(GROUND_CLASSES.values())


def test_parked_cars_and_buildings_stay_off_the_carriageways(world: World):
    for car in world.cars:
        for r in world.roads:
            clearance = _dist_to_polyline(car.xy_m[None], r.centerline_xy_m) - r.width_m / 2
            assert clearance > 0.3, f"car at {car.xy_m} stands on road {r.id}"
    for b in world.buildings:
        for r in world.roads:
            d = min(_dist_to_polyline(p[None], r.centerline_xy_m) for p in b.footprint_xy_m)
            assert d > r.width_m / 2 + r.sidewalk_m, f"building {b.id} intrudes on road {r.id}"


def test_rasters_agree_with_the_road_geometry(world: World):
    g = world.georef
    road_codes = {GROUND_CLASSES["road"], GROUND_CLASSES["marking"]}
    hits = total = 0
    for r in world.roads:
        pts = r.centerline_xy_m[np.all(np.abs(r.centerline_xy_m) < world.half_size_m - 1, axis=1)]
        uv = np.round(g.xy_to_px(pts)).astype(int)
        codes = world.ground_class[uv[:, 1], uv[:, 0]]
        hits += int(np.isin(codes, list(road_codes)).sum())
        total += len(codes)
    assert total > 50 and hits == total


def test_georef_round_trip_and_pixel_centres(world: World):
    g = world.georef
    xy = np.array([[0.0, 0.0], [-SIZE_M / 2 + 0.05, SIZE_M / 2 - 0.05], [12.34, -56.78]])
    np.testing.assert_allclose(g.px_to_xy(g.xy_to_px(xy)), xy, atol=1e-9)
    # the north-west pixel's centre is half a pixel inside the world corner
    np.testing.assert_allclose(g.xy_to_px(xy[1]), [0.0, 0.0], atol=1e-9)


def test_same_seed_identical_different_seed_different(world: World):
    again = generate_world(WorldConfig(seed=3, size_m=SIZE_M))
    assert again.albedo_rgb.tobytes() == world.albedo_rgb.tobytes()
    assert again.ground_class.tobytes() == world.ground_class.tobytes()
    assert json.dumps(again.to_json_dict()) == json.dumps(world.to_json_dict())
    other = generate_world(WorldConfig(seed=4, size_m=SIZE_M))
    assert other.albedo_rgb.tobytes() != world.albedo_rgb.tobytes()
    assert json.dumps(other.to_json_dict()["roads"]) != json.dumps(world.to_json_dict()["roads"])


def test_styles_change_the_looks():
    a = generate_world(WorldConfig(seed=5, size_m=120.0))
    b = generate_world(WorldConfig(seed=5, size_m=120.0, style=WorldStyle.preset("heldout_winter")))
    grass = GROUND_CLASSES["grass"]
    ma = a.albedo_rgb[a.ground_class == grass].mean(0)
    mb = b.albedo_rgb[b.ground_class == grass].mean(0)
    assert np.abs(ma - mb).max() > 5.0  # winter grass is another colour
    ca = np.mean([t.canopy_rgb for t in a.trees], axis=0)
    cb = np.mean([t.canopy_rgb for t in b.trees], axis=0)
    assert np.abs(ca - cb).max() > 10.0


def test_save_load_round_trip(world: World, tmp_path):
    world.save(tmp_path / "w")
    assert (tmp_path / "w" / "world.json").is_file()
    back = World.load(tmp_path / "w")
    assert back.config == world.config
    assert back.albedo_rgb.tobytes() == world.albedo_rgb.tobytes()
    assert back.ground_class.tobytes() == world.ground_class.tobytes()
    assert json.dumps(back.to_json_dict()) == json.dumps(world.to_json_dict())
    data = json.loads((tmp_path / "w" / "world.json").read_text())
    assert data["datum"]["lat_deg"] == pytest.approx(49.01)
    assert data["config"]["seed"] == 3


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="world.json"):
        World.load(tmp_path)
    (tmp_path / "world.json").write_text("{not json")
    with pytest.raises(DatasetError, match="line 1"):
        World.load(tmp_path)
