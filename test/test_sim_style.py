"""Seeded scene styles (issue 14, requirement 2): families, geometry-preserving materials, the two
captures, and ground truth that still registers the ground camera on the aerial surface."""

from __future__ import annotations

import dataclasses
import json
import math

import cv2
import numpy as np
import pytest
from test_sim_render import _bilinear, _lift_ground_points, _road_pose

from xview_localizer.core.errors import ConfigError, DatasetError
from xview_localizer.sim.aerial import AerialStyle, _Canvas, _paint_shadows, render_orthophoto
from xview_localizer.sim.ground import GroundRenderer
from xview_localizer.sim.style import (
    HELDOUT_FAMILIES,
    STYLE_FAMILIES,
    TRAINING_FAMILIES,
    Capture,
    SceneStyle,
    aerial_style_of,
    apply_materials,
    degrade,
    draw_ground_camera,
    draw_scene_style,
    ground_capture_world,
    ground_style_of,
    keep_cars,
    load_scene_style,
    save_scene_style,
)
from xview_localizer.sim.world import WorldConfig, generate_world

SIZE_M = 200.0


def _geometry(world) -> dict:
    """Everything about a world that is geometry (not colour)."""
    return {
        "roads": [r.centerline_xy_m.tobytes() + np.float64(r.width_m).tobytes() for r in world.roads],
        "buildings": [(tuple(map(tuple, b.footprint_xy_m)), b.height_m) for b in world.buildings],
        "trees": [(tuple(t.xy_m), t.canopy_radius_m, t.canopy_bottom_m, t.canopy_top_m) for t in world.trees],
        "cars": [(tuple(c.xy_m), c.yaw_rad, c.length_m, c.width_m, c.height_m) for c in world.cars],
        "classes": world.ground_class.tobytes(),
    }


def test_families_are_seeded_and_the_held_out_ones_are_disjoint():
    assert set(HELDOUT_FAMILIES) and set(TRAINING_FAMILIES)
    assert not set(HELDOUT_FAMILIES) & set(TRAINING_FAMILIES)
    assert set(HELDOUT_FAMILIES) | set(TRAINING_FAMILIES) == set(STYLE_FAMILIES)
    assert len(TRAINING_FAMILIES) >= 4
    for fam in STYLE_FAMILIES:
        a, b = draw_scene_style(fam, 7), draw_scene_style(fam, 7)
        assert a == b and a.heldout == (fam in HELDOUT_FAMILIES)
        assert draw_scene_style(fam, 8) != a  # another seed, another look
        assert SceneStyle.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    # the aerial and the ground capture are different times of day
    s = draw_scene_style("town_grid", 1)
    assert s.aerial.sun_azimuth_deg != s.ground.sun_azimuth_deg
    with pytest.raises(ConfigError, match="unknown style family"):
        draw_scene_style("no_such_family", 1)
    with pytest.raises(ConfigError, match="jpeg_quality"):
        Capture(jpeg_quality=5)
    with pytest.raises(ConfigError, match="sun_elevation_deg"):
        Capture(sun_elevation_deg=2.0)


def test_style_file_round_trip_and_errors(tmp_path):
    s = draw_scene_style("winter_snow", 3)
    save_scene_style(s, tmp_path)
    assert load_scene_style(tmp_path) == s
    assert load_scene_style(tmp_path / "none") is None
    (tmp_path / "style.json").write_text('{"format": "other"}')
    with pytest.raises(DatasetError, match="format"):
        load_scene_style(tmp_path)
    (tmp_path / "style.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable"):
        load_scene_style(tmp_path)


def test_two_styles_of_one_layout_differ_in_appearance_not_geometry():
    a, b = draw_scene_style("town_grid", 1), draw_scene_style("town_grid", 2)
    assert a.layout.palette == b.layout.palette  # a family's layout knobs are fixed
    wa = generate_world(WorldConfig(seed=21, size_m=SIZE_M, style=a.layout))
    wb = generate_world(WorldConfig(seed=21, size_m=SIZE_M, style=b.layout))
    assert _geometry(wa) == _geometry(wb)
    ma, mb = apply_materials(wa, a.materials, a.seed), apply_materials(wb, b.materials, b.seed)
    assert _geometry(ma) == _geometry(mb) == _geometry(wa)
    diff = np.abs(ma.albedo_rgb.astype(float) - mb.albedo_rgb.astype(float)).mean()
    assert diff > 8.0, diff  # a clearly different look
    assert [x.roof_rgb for x in ma.buildings] != [x.roof_rgb for x in mb.buildings]
    # another family's materials on the same layout: geometry still the same
    w = draw_scene_style("winter_snow", 1)
    mw = apply_materials(wa, w.materials, w.seed)
    assert _geometry(mw) == _geometry(wa)
    assert np.abs(mw.albedo_rgb.astype(float) - ma.albedo_rgb.astype(float)).mean() > diff
    # apply_materials is deterministic
    assert np.array_equal(apply_materials(wa, a.materials, a.seed).albedo_rgb, ma.albedo_rgb)


def test_movable_objects_differ_between_the_captures():
    s = draw_scene_style("mediterranean_dry", 4)
    s = dataclasses.replace(s, aerial=dataclasses.replace(s.aerial, car_keep=0.6),
                            ground=dataclasses.replace(s.ground, car_keep=0.6))
    w = generate_world(WorldConfig(seed=5, size_m=SIZE_M, style=s.layout))
    assert len(w.cars) > 20
    a = keep_cars(w, s.aerial.car_keep, s.seed, "aerial")
    g = keep_cars(w, s.ground.car_keep, s.seed, "ground")
    ids_a = {tuple(c.xy_m) for c in a.cars}
    ids_g = {tuple(c.xy_m) for c in g.cars}
    assert ids_a != ids_g and 0 < len(ids_a) < len(w.cars) and 0 < len(ids_g) < len(w.cars)
    assert _geometry(dataclasses.replace(a, cars=[]))["buildings"] == _geometry(w)["buildings"]


def test_degrade_is_seeded_and_keeps_the_image_geometry():
    rng = np.random.default_rng(0)
    img = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    cap = Capture(exposure=1.3, gamma=0.8, haze=0.1, noise_sigma=0.02, blur_sigma_px=0.7, jpeg_quality=60)
    a = degrade(img, cap, np.random.default_rng(5))
    b = degrade(img, cap, np.random.default_rng(5))
    assert a.shape == img.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, degrade(img, cap, np.random.default_rng(6)))


@pytest.mark.parametrize("family", STYLE_FAMILIES)
def test_each_family_renders_with_ground_truth_on_the_aerial_surface(family):
    """Acceptance: for a world of each family, GT depth points of the (styled, degraded) ground
    image, moved into the map with the GT pose, register on the (differently lit, leaning,
    degraded) aerial capture to within 0.2 aerial pixels."""
    s = draw_scene_style(family, 11)
    world = apply_materials(generate_world(WorldConfig(seed=31, size_m=SIZE_M, style=s.layout)), s.materials, s.seed)
    aerial_world = keep_cars(world, s.aerial.car_keep, s.seed, "aerial")
    ast = aerial_style_of(s)
    aer_img, g = render_orthophoto(aerial_world, style=ast)
    aer_img = degrade(aer_img, s.aerial, np.random.default_rng(1), colour=False, blur=False)
    seen = ground_capture_world(world, s)
    cam, T_base_camera = draw_ground_camera(s.camera, 512, 128, np.random.default_rng(2))
    rend = GroundRenderer(seen, cam, T_base_camera, style=ground_style_of(s))
    # three frames on three roads, pooled: structure along both image axes of the aerial
    xys, grays, near = [], [], []
    for k, (road, frac) in enumerate(((0, 0.5), (1, 0.4), (2, 0.6))):
        pose = _road_pose(world, frac, road % len(world.roads))
        frame, ids = rend.render(pose, return_ids=True)
        rgb = degrade(frame.rgb, s.ground, np.random.default_rng(3 + k))
        c, sn = math.cos(pose.yaw_rad), math.sin(pose.yaw_rad)
        T_map_base = np.array([[c, -sn, 0, pose.x_m], [sn, c, 0, pose.y_m], [0, 0, 1, 0], [0, 0, 0, 1.0]])
        xy_k, z, uv = _lift_ground_points(frame, ids, cam, T_map_base @ T_base_camera)
        assert np.max(np.abs(z)) < 2e-3  # ground points lie on z = 0 for every camera of the family
        xys.append(xy_k)
        grays.append(rgb[uv[:, 1], uv[:, 0]].astype(float).mean(1))
        near.append((np.hypot(*(xy_k - [pose.x_m, pose.y_m]).T) < 15.0)
                    & np.all(np.abs(xy_k) < world.half_size_m - 2.0, axis=1))
    xy, gray, near = np.concatenate(xys), np.concatenate(grays), np.concatenate(near)
    px = np.clip(g.xy_to_px(xy), 0, g.width_px - 2)
    # bare ground in both captures: no object (or its lean) over it in the aerial, no shadow of
    # either sun on it
    bare = dataclasses.replace(world, buildings=[], trees=[], cars=[])
    no_shadow = dataclasses.replace(ast, shadow_strength=0.0)
    bare_img = render_orthophoto(bare, style=no_shadow)[0].astype(float).mean(2)
    unlit = render_orthophoto(aerial_world, style=no_shadow)[0].astype(float).mean(2)
    lit = render_orthophoto(aerial_world, style=ast)[0].astype(float).mean(2)
    objects_free = (np.abs(unlit - bare_img) < 2.0) & (np.abs(lit - unlit) < 2.0)
    ground_sun = AerialStyle(sun_azimuth_deg=s.ground.sun_azimuth_deg, sun_elevation_deg=s.ground.sun_elevation_deg)
    unshadowed = _paint_shadows(keep_cars(world, s.ground.car_keep, s.seed, "ground"), _Canvas(g), ground_sun) < 8
    # (away from their edges by 0.5 m: blur and the coarser native resolution spread them)
    ok = cv2.erode((objects_free & unshadowed).astype(np.uint8), np.ones((11, 11), np.uint8)) > 0
    sel = near & ok[np.round(px[:, 1]).astype(int), np.round(px[:, 0]).astype(int)]
    assert sel.sum() > 600, sel.sum()
    aer2 = aer_img.astype(float).mean(2)
    aer = aer2[..., None]
    # a shift along u (v) is measurable only where the aerial has structure along u (v): each
    # direction is tested on the selected points with the strongest aerial gradient along it
    grad_u = np.abs(cv2.Sobel(aer2, cv2.CV_64F, 1, 0, ksize=5))
    grad_v = np.abs(cv2.Sobel(aer2, cv2.CV_64F, 0, 1, ksize=5))
    iu, iv = np.round(px[:, 0]).astype(int), np.round(px[:, 1]).astype(int)

    def strongest(grad: np.ndarray) -> np.ndarray:
        gsel = grad[iv, iu] * sel
        return sel & (gsel >= np.quantile(gsel[sel], 0.7))

    def ncc(du: float, dv: float, pick: np.ndarray) -> float:
        a = gray[pick]
        b = _bilinear(aer, px[pick, 0] + du, px[pick, 1] + dv)[:, 0]
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))

    shifts = np.round(np.arange(-1.0, 1.01, 0.1), 2)
    pick_u, pick_v = strongest(grad_u), strongest(grad_v)
    su = [ncc(d, 0.0, pick_u) for d in shifts]
    sv = [ncc(0.0, d, pick_v) for d in shifts]
    best_u, best_v = shifts[int(np.argmax(su))], shifts[int(np.argmax(sv))]
    assert min(max(su), max(sv)) > 0.5, (family, max(su), max(sv))
    assert abs(best_u) <= 0.2 and abs(best_v) <= 0.2, (family, best_u, best_v)
    # a one-pixel misregistration is measurably worse
    assert ncc(1.0, 0.0, pick_u) < max(su) and ncc(0.0, 1.0, pick_v) < max(sv)


def test_styled_world_directory_and_pairs(tmp_path):
    """``sim world --family`` writes style.json and the aerial capture's tiles; ``sim dataset``
    renders the ground capture with a camera drawn per image and records the family."""
    from xview_localizer.sim.dataset import DatasetConfig, export_pairs
    from xview_localizer.sim.style import write_styled_world
    from xview_localizer.train.pairs import PairDataset

    st = write_styled_world(1002, "arid_sprawl", tmp_path / "w", size_m=200.0, zoom_max=19, zoom_min=19)
    assert st.heldout and load_scene_style(tmp_path / "w") == st
    assert any((tmp_path / "w" / "tiles" / "19").rglob("*.png"))
    out = export_pairs([tmp_path / "w"], tmp_path / "pairs", DatasetConfig(pairs=3, width_px=128, height_px=32,
                                                                           sat_size_px=64, sat_m_per_px=0.2, offset_m=5.0),
                       progress=False)
    recs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert [r["style_family"] for r in recs] == ["arid_sprawl"] * 3
    assert len({tuple(r["K"]) for r in recs}) == 3 and len({tuple(r["T_base_camera"]) for r in recs}) == 3
    ds = PairDataset(out)
    sample = ds[0]
    assert sample.ground_rgb.shape == (32, 128, 3) and sample.depth_m is not None
