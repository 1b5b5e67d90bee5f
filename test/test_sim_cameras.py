"""Lens distortion and 360-degree panoramas in the synthetic ground camera (issue 14,
requirement 2): the renderer images exactly what the camera model says, panorama columns are
azimuths and the image wraps around, style families draw lenses from a stream of their own,
and pair data sets carry the camera model through to the matchers' inputs."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from xview_localizer.core.camera import (
    PinholeCamera,
    T_base_camera_from_xyz_rpy,
    kitti_like_T_base_camera,
)
from xview_localizer.core.camera_pano import EquirectangularCamera
from xview_localizer.core.errors import CameraModelError, ConfigError, DatasetError
from xview_localizer.core.se2 import SE2
from xview_localizer.sim.ground import GroundRenderer
from xview_localizer.sim.lens import LensRanges, covers_image, draw_lens, lens_kind
from xview_localizer.sim.style import (
    HELDOUT_FAMILIES,
    STYLE_FAMILIES,
    TRAINING_FAMILIES,
    SceneStyle,
    draw_ground_camera,
    draw_scene_style,
)
from xview_localizer.sim.world import Box, Building, World, WorldConfig, generate_world

W, H = 160, 64
HEIGHT_M = 1.65
WALL_X_M, WALL_TOP_M = 12.0, 4.0


def _blank_world(boxes=()) -> World:
    """A flat 100 m world of uniform albedo with one building per box."""
    cfg = WorldConfig(seed=0, size_m=100.0)
    n = cfg.raster_size_px
    buildings = [Building(i, np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), b.z1_m, (b,),
                          (100, 100, 100), (200, 180, 160)) for i, b in enumerate(boxes)]
    return World(cfg, [], [], buildings, [], [], np.full((n, n, 3), 120, np.uint8), np.zeros((n, n), np.uint8))


def _wall_world() -> World:
    """A wall 12 m ahead (west face at x = 12 m), 60 m wide, 4 m high: it fills the image width
    (+-68 deg)."""
    return _blank_world([Box(WALL_X_M + 5.0, 0.0, 0.0, 5.0, 30.0, 0.0, WALL_TOP_M)])


def _to_cam(T_base_camera: np.ndarray, p_base: np.ndarray) -> np.ndarray:
    return (p_base - T_base_camera[:3, 3]) @ T_base_camera[:3, :3]


def _lens(model: str, coeffs: tuple) -> PinholeCamera:
    """A centred camera W x H whose image edges look 45 deg (plumb_bob) / 60 deg (fisheye) off
    the axis (the focal length of :mod:`xview_localizer.sim.lens`)."""
    if model == "equidistant":
        t = math.pi / 3.0
        f = 0.5 * W / (t * (1.0 + coeffs[0] * t * t))
    else:
        f = 0.5 * W / (1.0 + coeffs[0] + coeffs[1])  # r = tan(45 deg) = 1
    return PinholeCamera.from_intrinsics(W, H, f, f, 0.5 * W - 0.5, 0.5 * H - 0.5, coeffs, model)


@pytest.mark.parametrize("model,coeffs", [("plumb_bob", (-0.25, 0.03, 0.0, 0.0, 0.0)),
                                          ("plumb_bob", (0.1, 0.0, 0.0, 0.0, 0.0)),
                                          ("equidistant", (0.02, 0.0, 0.0, 0.0))])
def test_distorted_render_agrees_with_the_camera_model(model, coeffs):
    cam = _lens(model, coeffs)
    assert covers_image(cam)
    T = kitti_like_T_base_camera(HEIGHT_M)
    frame, ids = GroundRenderer(_wall_world(), cam, T).render(SE2(0.0, 0.0, 0.0), return_ids=True)
    assert frame.rgb.shape == (H, W, 3) and np.all(frame.rgb.max(axis=2) > 0)  # every pixel has a ray
    # (a) points of the wall face projected by the model land on wall pixels at the wall's depth
    yy, zz = np.meshgrid(np.linspace(-10.0, 10.0, 9), np.linspace(0.3, WALL_TOP_M - 0.3, 5))
    p = _to_cam(T, np.column_stack((np.full(yy.size, WALL_X_M), yy.ravel(), zz.ravel())))
    uv, valid = cam.project(p)
    valid &= cam.in_image(uv)
    assert valid.sum() > 30
    iu, iv = np.round(uv[valid]).astype(int).T
    assert np.all(ids[iv, iu] == 0)
    np.testing.assert_allclose(frame.depth_m[iv, iu], WALL_X_M, atol=1e-3)
    # (b) the wall's straight top edge: the rendered edge (first wall row per column) is the
    # model's projection of the edge to within 1 px, across the whole width
    edge = _to_cam(T, np.column_stack((np.full(800, WALL_X_M), np.linspace(-30, 30, 800), np.full(800, WALL_TOP_M))))
    uv_e, ok_e = cam.project(edge)
    order = np.argsort(uv_e[ok_e, 0])
    cols = np.arange(2, W - 2)
    v_pred = np.interp(cols, uv_e[ok_e, 0][order], uv_e[ok_e, 1][order])
    v_top = np.argmax(ids[:, cols] == 0, axis=0)
    assert np.all(np.any(ids[:, cols] == 0, axis=0))
    assert np.max(np.abs(v_top - v_pred)) <= 1.0, np.max(np.abs(v_top - v_pred))
    # (c) it curves as the lens says: barrel (k1 < 0, fisheye) pulls the edge's ends towards
    # the centre row (they sag below its middle), pincushion pushes them away
    sag_pred = 0.5 * (v_pred[0] + v_pred[-1]) - v_pred[len(cols) // 2]
    sag = 0.5 * (v_top[0] + v_top[-1]) - v_top[len(cols) // 2]
    barrel = model == "equidistant" or coeffs[0] < 0
    assert (sag_pred > 1.0) if barrel else (sag_pred < -1.0), sag_pred
    assert abs(sag - sag_pred) <= 1.0
    # (d) inverse: every wall pixel's ray (the model's undistortion) times its depth is on the face
    v, u = np.nonzero(ids == 0)
    xy_n = cam.undistort(np.column_stack((u, v)).astype(float))
    p_base = (np.column_stack((xy_n, np.ones(len(u)))) * frame.depth_m[v, u, None]) @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(p_base[:, 0], WALL_X_M, atol=2e-3)
    assert np.all((p_base[:, 2] > -0.01) & (p_base[:, 2] < WALL_TOP_M + 0.01))


def test_undistorted_pinhole_keeps_the_edge_straight():
    cam = _lens("plumb_bob", (-0.25, 0.03, 0.0, 0.0, 0.0))
    ideal = PinholeCamera(W, H, cam.k)
    _frame, ids = GroundRenderer(_wall_world(), ideal, kitti_like_T_base_camera(HEIGHT_M)).render(
        SE2(0.0, 0.0, 0.0), return_ids=True)
    v_top = np.argmax(ids[:, 2:W - 2] == 0, axis=0)
    assert v_top.max() - v_top.min() <= 1


def test_pixels_without_a_ray_are_black():
    # strong barrel with a long focal length: the image corners lie beyond the fold
    cam = PinholeCamera.from_intrinsics(W, H, 100.0, 100.0, 0.5 * W - 0.5, 0.5 * H - 0.5, (-0.4, 0.0, 0.0, 0.0, 0.0),
                                        "plumb_bob")
    assert not covers_image(cam)
    frame, ids = GroundRenderer(_wall_world(), cam, kitti_like_T_base_camera(HEIGHT_M)).render(
        SE2(0.0, 0.0, 0.0), return_ids=True)
    _, ok = cam.undistort_checked(np.column_stack((np.tile(np.arange(W), H), np.repeat(np.arange(H), W))).astype(float))
    ok = ok.reshape(H, W)
    assert 0 < (~ok).sum() < ok.sum()
    assert np.all(frame.rgb[~ok] == 0) and np.all(frame.depth_m[~ok] == 0) and np.all(ids[~ok] == -1)
    assert np.all(frame.rgb[ok].max(axis=1) > 0)


def test_renderer_rejects_distortion_it_cannot_invert():
    class Duck:  # K and distortion coefficients, but no camera model to invert them
        K = PinholeCamera.kitti_like(64, 32).K
        D = np.array([0.1, 0.0, 0.0, 0.0, 0.0])
        width_px, height_px = 64, 32

    with pytest.raises(CameraModelError, match="distortion"):
        GroundRenderer(_wall_world(), Duck(), kitti_like_T_base_camera())


# ----------------------------------------------------------------------------------------------
# panoramas
# ----------------------------------------------------------------------------------------------
PW, PH = 256, 64
POLE_RANGE_M = 15.0
BEARINGS_DEG = (0.0, 60.0, -100.0, 180.0)  # CCW from straight ahead; 180 straddles the seam


def _circular_col(cols: np.ndarray, width: int) -> float:
    a = np.angle(np.mean(np.exp(2j * np.pi * (cols + 0.5) / width)))
    return (a % (2 * np.pi)) / (2 * np.pi) * width - 0.5


def test_panorama_columns_are_azimuths():
    poles = [Box(POLE_RANGE_M * math.cos(math.radians(b)), POLE_RANGE_M * math.sin(math.radians(b)), 0.0,
                 0.75, 0.75, 0.0, 8.0) for b in BEARINGS_DEG]
    cam = EquirectangularCamera(PW, PH)
    T = T_base_camera_from_xyz_rpy(0.0, 0.0, HEIGHT_M, 0.0, 0.0, 0.0)
    frame, ids = GroundRenderer(_blank_world(poles), cam, T).render(SE2(0.0, 0.0, 0.0), return_ids=True)
    assert frame.rgb.shape == (PH, PW, 3)
    horizon = ids[PH // 2 - 1:PH // 2 + 1]
    for k, b in enumerate(BEARINGS_DEG):
        centre = np.array([[POLE_RANGE_M * math.cos(math.radians(b)), POLE_RANGE_M * math.sin(math.radians(b)),
                            HEIGHT_M]])
        (u_pred, _v), = cam.project(_to_cam(T, centre))[0]
        cols = np.nonzero(horizon == k)[1]
        assert len(cols) >= 4, (b, len(cols))
        du = (_circular_col(cols, PW) - u_pred + PW / 2) % PW - PW / 2
        assert abs(du) <= 1.0, (b, du)
    # the pole behind the camera is cut by the seam: it shows at both image edges
    assert np.any(horizon[:, 0] == 3) and np.any(horizon[:, -1] == 3)
    # sky above, ground below; ground depth is the range along the ray
    assert np.all(ids[0] == -1) and np.all(ids[-1] == -2)
    u = 149  # bearing -30 deg: no pole in this column
    rows = np.arange(36, PH)
    elev = math.pi / 2 - (rows + 0.5) / PH * math.pi
    np.testing.assert_allclose(frame.depth_m[rows, u], HEIGHT_M / np.sin(-elev), rtol=1e-4)


def test_panorama_wraps_around_seamlessly():
    """Turning the vehicle left by k pixel azimuths rolls the panorama k columns right, the
    columns that cross the seam included."""
    world = generate_world(WorldConfig(seed=11, size_m=200.0))
    cam = EquirectangularCamera(PW, PH)
    T = T_base_camera_from_xyz_rpy(0.0, 0.0, HEIGHT_M, 0.0, 0.0, 0.0)
    r = GroundRenderer(world, cam, T)
    k = 37
    a, ids_a = r.render(SE2(-20.0, 3.0, 0.4), return_ids=True)
    b, ids_b = r.render(SE2(-20.0, 3.0, 0.4 + 2 * math.pi * k / PW), return_ids=True)
    rolled_ids = np.roll(ids_a, k, axis=1)
    assert np.mean(rolled_ids == ids_b) > 0.995
    diff = np.abs(np.roll(a.rgb, k, axis=1).astype(int) - b.rgb)
    assert diff.mean() < 0.5 and np.mean(np.all(diff <= 2, axis=2)) > 0.99
    seam = slice(k - 3, k + 3)  # where the seam of `a` lands in `b`: continuous there too
    assert np.mean(rolled_ids[:, seam] == ids_b[:, seam]) > 0.99
    np.testing.assert_allclose(np.roll(a.depth_m, k, axis=1)[ids_b == rolled_ids],
                               b.depth_m[ids_b == rolled_ids], rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# style families draw lenses
# ----------------------------------------------------------------------------------------------
def test_lens_draws_leave_the_pose_draws_alone_and_follow_the_shares():
    seen = {}
    for fam in STYLE_FAMILIES:
        s = draw_scene_style(fam, 3)
        lens = s.camera.lens
        counts = dict.fromkeys(("pinhole", "plumb_bob", "equidistant", "equirectangular"), 0)
        n = 300
        for i in range(n):
            cam, T = draw_ground_camera(s.camera, 128, 32, np.random.default_rng([i, 1]),
                                        np.random.default_rng([i, 2]))
            cam0, T0 = draw_ground_camera(s.camera, 128, 32, np.random.default_rng([i, 1]))
            np.testing.assert_array_equal(T, T0)  # the lens never moves the camera
            kind = lens_kind(cam)
            counts[kind] += 1
            if kind == "pinhole":
                assert cam == cam0
            elif kind != "equirectangular":
                assert covers_image(cam)
        for kind, share in (("plumb_bob", lens.plumb_bob_share), ("equidistant", lens.fisheye_share),
                            ("equirectangular", lens.panorama_share)):
            assert abs(counts[kind] / n - share) < 0.07, (fam, kind, counts)
            if share == 0:
                assert counts[kind] == 0
        seen[fam] = counts
    # the training data sees every lens kind; so do the held-out styles
    for group in (TRAINING_FAMILIES, HELDOUT_FAMILIES):
        for kind in ("plumb_bob", "equidistant", "equirectangular"):
            assert sum(seen[f][kind] for f in group) > 0, (group, kind)


def test_lens_draw_is_deterministic_and_keeps_the_field_of_view():
    lens = LensRanges(plumb_bob_share=1.0)
    a = draw_lens(lens, 512, 128, math.radians(80.0), np.random.default_rng(4))
    assert a == draw_lens(lens, 512, 128, math.radians(80.0), np.random.default_rng(4))
    assert a.distortion_model == "plumb_bob" and a.d[0] != 0
    # the edge centres look hfov / 2 off the axis
    xy = a.undistort(np.array([[-0.5, a.cy], [511.5, a.cy]]))
    np.testing.assert_allclose(np.degrees(np.arctan(np.abs(xy[:, 0]))), 40.0, atol=1e-6)
    assert lens_kind(draw_lens(LensRanges(panorama_share=1.0), 64, 32, 1.0, np.random.default_rng(0))) \
        == "equirectangular"
    assert draw_lens(LensRanges(), 64, 32, 1.0, np.random.default_rng(0)) is None
    with pytest.raises(ConfigError, match="add up"):
        LensRanges(plumb_bob_share=0.6, panorama_share=0.6)
    with pytest.raises(ConfigError, match="k1"):
        LensRanges(k1=(0.2, -0.2))


def test_style_files_without_lenses_still_load():
    s = draw_scene_style("rural_roads", 2)
    d = json.loads(json.dumps(s.to_dict()))
    assert SceneStyle.from_dict(d) == s and s.camera.lens.panorama_share > 0
    del d["camera"]["lens"]  # a style.json written before lenses existed
    old = SceneStyle.from_dict(d)
    assert old.camera.lens == LensRanges() and not old.camera.lens.any
    assert dataclasses.replace(old.camera, lens=s.camera.lens) == s.camera


# ----------------------------------------------------------------------------------------------
# pair data sets carry the camera model
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lens_pairs(tmp_path_factory):
    """8 pairs of a styled world whose style gives every image a lens (40 % plumb_bob, 20 %
    fisheye, 40 % panorama)."""
    from xview_localizer.sim.dataset import DatasetConfig, export_pairs
    from xview_localizer.sim.style import save_scene_style, write_styled_world

    root = tmp_path_factory.mktemp("lens_pairs")
    st = write_styled_world(1006, "town_grid", root / "w", size_m=200.0, zoom_max=19, zoom_min=19)
    lens = LensRanges(plumb_bob_share=0.4, fisheye_share=0.2, panorama_share=0.4)
    st = dataclasses.replace(st, camera=dataclasses.replace(st.camera, lens=lens))
    save_scene_style(st, root / "w")
    out = export_pairs([root / "w"], root / "pairs", DatasetConfig(pairs=8, width_px=128, height_px=32,
                                                                   sat_size_px=64, offset_m=5.0, seed=3),
                       progress=False)
    return root / "w", out, st


def test_pairs_round_trip_the_camera_model(lens_pairs):
    from xview_localizer.sim.dataset import depth_to_png16
    from xview_localizer.sim.style import ground_capture_world, ground_style_of
    from xview_localizer.train.pairs import PairDataset

    world_dir, out, st = lens_pairs
    meta = json.loads((out / "meta.json").read_text())
    recs = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    kinds = [lens_kind(PairDataset(out)[i].camera) for i in range(len(recs))]
    assert set(kinds) == {"plumb_bob", "equidistant", "equirectangular"}, kinds
    assert meta["camera_models"] == {k: kinds.count(k) for k in set(kinds)}
    seen = ground_capture_world(World.load(world_dir), st)
    renderer = GroundRenderer(seen, PinholeCamera.kitti_like(128, 32), kitti_like_T_base_camera(),
                              style=ground_style_of(st))
    for rec, s in zip(recs, PairDataset(out)):
        cam = s.camera
        if rec["camera_model"] == "equirectangular":
            assert isinstance(cam, EquirectangularCamera) and (cam.width_px, cam.height_px) == (128, 32)
            assert rec["d"] == [] and rec["distortion_model"] == "none"
        else:
            assert cam.distortion_model == rec["distortion_model"] and list(cam.d) == rec["d"] and any(rec["d"])
            np.testing.assert_array_equal(cam.K.reshape(-1), rec["K"])
        # the camera read back renders exactly the stored depth map (optical z, or range for a
        # panorama): it is the camera the image was made with
        frame = renderer.with_camera(cam, s.T_base_camera).render(SE2(*rec["T_map_base"]))
        np.testing.assert_array_equal(depth_to_png16(frame.depth_m).astype(np.float32) / 1000.0, s.depth_m)
        assert s.depth_m.max() > 1.0


def test_matcher_inputs_use_the_stored_camera(lens_pairs):
    from tiny_models import tiny_sparse

    from xview_localizer.evaluation.benchmark import localize_pair
    from xview_localizer.matcher.sparse_geometry import keypoint_rays
    from xview_localizer.pipeline.config import LocalizerConfig
    from xview_localizer.train.pairs import PairDataset
    from xview_localizer.train.sparse_data import SparsePairTensorDataset

    _w, out, _st = lens_pairs
    ds = PairDataset(out)
    matcher = tiny_sparse()
    tds = SparsePairTensorDataset(out, matcher.cfg)
    done = set()
    for i in range(len(ds)):
        s = ds[i]
        kind = lens_kind(s.camera)
        item = tds[i]
        kr = keypoint_rays(s.camera, s.T_base_camera, matcher.cfg)
        np.testing.assert_array_equal(item["rays_base"].numpy(), kr.rays_base)
        assert kr.ray_valid.all()
        if kind == "equirectangular":
            np.testing.assert_allclose(np.linalg.norm(kr.rays_base, axis=1), 1.0, atol=1e-6)  # range rays
        else:  # distorted rays, not those of the bare intrinsics
            bare = keypoint_rays(PinholeCamera(s.camera.width_px, s.camera.height_px, s.camera.k), s.T_base_camera,
                                 matcher.cfg)
            assert np.abs(bare.rays_base - kr.rays_base).max() > 1e-3
        if kind not in done:  # the benchmark localizes the pair through that camera
            o = localize_pair(matcher, s, LocalizerConfig(), prior_yaw_rad=s.prior_yaw_rad, depth_kind="metric",
                              prior_sigma_m=5.0 / math.sqrt(3.0))
            assert o.sample_id == s.id and (o.accepted or o.reason) and np.all(np.isfinite(o.T_used))
            done.add(kind)
    assert done == {"plumb_bob", "equidistant", "equirectangular"}


def test_bad_camera_fields_are_rejected(lens_pairs, tmp_path):
    import shutil

    from xview_localizer.train.pairs import PairDataset

    _w, out, _st = lens_pairs
    for patch, match in (({"camera_model": "fisheye"}, "camera_model"),
                         ({"camera_model": "pinhole", "distortion_model": "plumb_bob", "d": [0.1, 0.0]}, "coefficients"),
                         ({"camera_model": "equirectangular", "K": [1, 0, 0, 0, 1, 0, 0, 0, 1]}, "pseudo intrinsics"),
                         ({"d": "0.1"}, "'d' has type")):
        bad = tmp_path / f"bad_{len(list(tmp_path.iterdir()))}"
        shutil.copytree(out, bad)
        lines = (bad / "pairs.jsonl").read_text().splitlines()
        lines[1] = json.dumps({**json.loads(lines[1]), **patch})
        (bad / "pairs.jsonl").write_text("\n".join(lines) + "\n")
        with pytest.raises(DatasetError, match=match):
            PairDataset(bad)
    # a record without camera fields (written before lenses existed) is an undistorted pinhole
    old = tmp_path / "old"
    shutil.copytree(out, old)
    recs = [json.loads(x) for x in (old / "pairs.jsonl").read_text().splitlines()]
    rec = next(r for r in recs if r["camera_model"] == "pinhole")
    for key in ("camera_model", "distortion_model", "d"):
        rec.pop(key)
    (old / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cam = PairDataset(old)[recs.index(rec)].camera
    assert isinstance(cam, PinholeCamera) and cam.distortion_model == "none"


def test_merged_pair_sets_keep_the_camera_models(lens_pairs, tmp_path):
    import shutil

    from xview_localizer.train.merge_pairs import merge_pair_dirs
    from xview_localizer.train.pairs import PairDataset

    _w, out, _st = lens_pairs
    shutil.copytree(out, tmp_path / "copy")
    merged = merge_pair_dirs([out, tmp_path / "copy"], tmp_path / "merged", move=False)
    meta = json.loads((out / "meta.json").read_text())["camera_models"]
    assert json.loads((merged / "meta.json").read_text())["camera_models"] == {k: 2 * v for k, v in meta.items()}
    a, b = PairDataset(out), PairDataset(merged)
    assert [repr(b[i].camera) for i in range(len(b))] == [repr(a[i % len(a)].camera) for i in range(len(b))]


def test_a_batch_of_mixed_lenses_trains_the_sparse_matcher(lens_pairs):
    """Pinhole, fisheye and panoramic pairs of one data set collate into one batch (same image
    size, per-sample rays) and give a finite loss and finite gradients."""
    import torch
    from tiny_models import tiny_sparse
    from torch.utils.data import DataLoader

    from xview_localizer.train.losses_sparse import sparse_depth_loss
    from xview_localizer.train.sparse_data import SparsePairTensorDataset
    from xview_localizer.train.trainer import _forward

    _w, out, _st = lens_pairs
    net = tiny_sparse().model.train()
    batch = next(iter(DataLoader(SparsePairTensorDataset(out, net.cfg), batch_size=8)))
    for kind in ("metric", "none"):  # depth = optical z or range per sample; flat ground
        net.zero_grad()
        res = _forward(net, batch, kind)
        loss = sparse_depth_loss(res, batch["T_patch_base"]).total
        loss.backward()
        assert torch.isfinite(loss) and res.src_valid.any(dim=1).all(), kind
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in net.parameters())
