"""Tests of the depth-prior sparse matcher (xview_localizer/matcher/sparse_depth.py) and its
losses (xview_localizer/train/losses_sparse.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xview_localizer.core import camera as cam_mod
from xview_localizer.core import lifting as lifting_mod
from xview_localizer.core.errors import ConfigError, GeometryError
from xview_localizer.core.procrustes import solve
from xview_localizer.matcher.base import Correspondences
from xview_localizer.matcher.sparse_depth import (
    SPARSE_PRESETS,
    SparseDepthConfig,
    SparseDepthMatcher,
    keypoint_rays,
    lift_keypoints,
    match_descriptors,
    pose_from_correspondences,
    sample_depth_nearest,
    sat_cell_to_patch_m,
    select_keypoints,
    sparse_preset,
)
from xview_localizer.train.losses_sparse import SparseLossConfig, sparse_depth_loss

TINY = SparseDepthConfig(
    name="tiny", ground_size_px=(32, 96), sat_size_px=64, ground_stride=8, sat_stride=4,
    encoder_widths=(8, 16, 16), feature_dim=16, num_keypoints=24, nms_radius_cells=0,
)
WALL_X_M = 25.0


# ----------------------------------------------------------------------------- helpers
def _distorted_kitti() -> cam_mod.PinholeCamera:
    k = cam_mod.PinholeCamera.kitti_like().k
    return cam_mod.PinholeCamera.from_camera_info(1242, 375, k, [-0.28, 0.08, 0.0012, -0.0007, -0.01], "plumb_bob")


def _scene_points(camera, T, uv_px):
    """Ray-cast a scene (ground z = 0 plus a wall at x = WALL_X_M) independently of the lifting
    code: unit rays from camera.rays_camera. Returns (p_base (N, 3), optical z (N,), hit (N,))."""
    r, t = T[:3, :3], T[:3, 3]
    rays = camera.rays_camera(uv_px) @ r.T
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_g = np.where(rays[:, 2] < -1e-9, -t[2] / rays[:, 2], np.inf)
        lam_w = np.where(rays[:, 0] > 1e-9, (WALL_X_M - t[0]) / rays[:, 0], np.inf)
    lam = np.minimum(lam_g, lam_w)
    hit = np.isfinite(lam)
    lam = np.where(hit, lam, 1.0)
    p = t + lam[:, None] * rays
    z = ((p - t) @ r)[:, 2]
    return p, z, hit


def _depth_image(camera, uv_px, z, hit):
    depth = np.zeros((camera.height_px, camera.width_px), np.float32)
    u, v = uv_px[:, 0].astype(int), uv_px[:, 1].astype(int)
    depth[v[hit], u[hit]] = z[hit]
    return depth


def _tex(seed: int, px: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tex = torch.zeros(1, 3, px, px)
    for k, c in enumerate((4, 8, 16, 32, 64)):
        tex += F.interpolate(torch.rand(1, 3, c, c, generator=g), size=(px, px), mode="bicubic", align_corners=False) / (k + 1)
    tex -= tex.amin(dim=(2, 3), keepdim=True)
    return tex / tex.amax(dim=(2, 3), keepdim=True)


def _sample_tex(tex, east, north, extent_m):
    grid = torch.stack([east / extent_m, -north / extent_m], -1).float()[None]
    return F.grid_sample(tex, grid, align_corners=False)[0]


def _render_sample(cfg, camera, T, pose, sat_m_per_px, seed, extent_m=60.0):
    """A textured flat world seen by a perspective camera at ``pose`` and by a north-up
    satellite patch; metric depth of the ground hits (0 = sky)."""
    tex = _tex(seed)
    s = cfg.sat_size_px
    idx = (np.arange(s) - (s - 1) / 2) * sat_m_per_px
    east, north = np.meshgrid(idx, -idx)
    sat = _sample_tex(tex, torch.from_numpy(east), torch.from_numpy(north), extent_m)
    w, h = camera.width_px, camera.height_px
    vv, uu = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    uv = np.column_stack((uu.ravel(), vv.ravel())).astype(float)
    xy, ok = lifting_mod.lift_flat_ground(camera, T, uv, max_range_m=extent_m)
    x, y, yaw = pose
    c, sn = math.cos(yaw), math.sin(yaw)
    e = c * xy[:, 0] - sn * xy[:, 1] + x
    n = sn * xy[:, 0] + c * xy[:, 1] + y
    img = _sample_tex(tex, torch.from_numpy(e.reshape(h, w)), torch.from_numpy(n.reshape(h, w)), extent_m)
    img = torch.where(torch.from_numpy(ok.reshape(h, w))[None], img, torch.full_like(img, 0.7))
    z = ((np.column_stack((xy, np.zeros(len(xy)))) - T[:3, 3]) @ T[:3, :3])[:, 2]
    depth = np.where(ok, z, 0.0).reshape(h, w).astype(np.float32)
    kr = keypoint_rays(camera, T, cfg)
    return {
        "ground_rgb": img.float(), "sat_rgb": sat.float(),
        "sat_m_per_px": torch.tensor(sat_m_per_px, dtype=torch.float32),
        "rays_base": torch.from_numpy(kr.rays_base), "ray_valid": torch.from_numpy(kr.ray_valid),
        "cam_xyz_base_m": torch.from_numpy(kr.cam_xyz_base_m), "kp_grid_norm": torch.from_numpy(kr.grid_norm),
        "depth": torch.from_numpy(depth), "T_patch_base": torch.tensor(pose, dtype=torch.float32),
    }


def _tiny_batch(poses, device="cpu"):
    camera = cam_mod.PinholeCamera.from_intrinsics(96, 32, 40.0, 40.0, 47.5, 15.5)
    T = cam_mod.T_base_camera_from_xyz_rpy(0.0, 0.0, 1.65, 0.0, 0.25, 0.0)
    samples = [_render_sample(TINY, camera, T, p, 0.5, seed=i) for i, p in enumerate(poses)]
    return {k: torch.stack([s[k] for s in samples]).to(device) for k in samples[0]}


def _forward(model, batch, kind="metric", depth=None):
    return model(
        batch["ground_rgb"], batch["sat_rgb"], batch["sat_m_per_px"], batch["rays_base"], batch["ray_valid"],
        batch["cam_xyz_base_m"], batch["kp_grid_norm"], depth=batch["depth"] if depth is None else depth,
        depth_kind=kind,
    )


# ----------------------------------------------------------------------------- config
def test_presets_and_validation():
    assert set(SPARSE_PRESETS) == {"compact", "paper"}
    assert sparse_preset("compact", num_keypoints=64).num_keypoints == 64
    paper = SparseDepthMatcher(sparse_preset("paper"))
    n_params = sum(p.numel() for p in paper.parameters())
    assert n_params * 2 < 25e6  # half-precision checkpoint <= 25 MB
    with pytest.raises(ConfigError, match="unknown sparse-depth preset"):
        sparse_preset("nope")
    with pytest.raises(ConfigError, match="num_keypoints"):
        SparseDepthConfig(num_keypoints=10_000)
    with pytest.raises(ConfigError, match="sat_rotations"):
        SparseDepthConfig(sat_rotations=3)
    with pytest.raises(ConfigError, match="ground_size_px"):
        SparseDepthConfig(ground_size_px=(100, 512))
    assert SparseDepthConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ConfigError, match="unknown field"):
        SparseDepthConfig.from_dict({**TINY.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="input_mode"):
        SparseDepthConfig(input_mode="hsv")
    # checkpoints from before the field load as "rgb"
    old = {k: v for k, v in TINY.to_dict().items() if k != "input_mode"}
    assert SparseDepthConfig.from_dict(old).input_mode == "rgb"


def test_gray_input_mode_sees_luminance_only():
    """input_mode "gray": two images with the same luminance but different colours give the same
    features (both encoders); "rgb" tells them apart."""
    from dataclasses import replace

    torch.manual_seed(0)
    base = 0.3 + 0.4 * torch.rand(1, 3, 32, 64)
    chroma = torch.tensor([0.587, -0.299, 0.0]).view(1, 3, 1, 1) * 0.2  # zero luma
    other = base + chroma * torch.rand(1, 1, 32, 64)
    sat = 0.3 + 0.4 * torch.rand(1, 3, 64, 64)
    sat_other = sat + chroma * torch.rand(1, 1, 64, 64)
    for mode, same in (("gray", True), ("rgb", False)):
        torch.manual_seed(1)
        net = SparseDepthMatcher(replace(TINY, input_mode=mode)).eval()
        with torch.no_grad():
            g1, g2 = net.encode_ground(base)[0], net.encode_ground(other)[0]
            s1, s2 = net.encode_sat(sat), net.encode_sat(sat_other)
        assert torch.allclose(g1, g2, atol=1e-5) == same, mode
        assert torch.allclose(s1, s2, atol=1e-5) == same, mode


# ----------------------------------------------------------------------------- lifting
def test_lifting_with_known_depth_reproduces_ground_truth_bev_points():
    cfg = sparse_preset("compact")
    camera = _distorted_kitti()
    T = cam_mod.T_base_camera_from_xyz_rpy(1.2, 0.3, 1.65, 0.01, 0.06, 0.02)
    kr = keypoint_rays(camera, T, cfg)
    assert kr.uv_px.shape == (16 * 64, 2) and np.all(kr.uv_px == np.round(kr.uv_px))
    p_base, z, hit = _scene_points(camera, T, kr.uv_px)
    depth = torch.from_numpy(_depth_image(camera, kr.uv_px, z, hit))[None]
    z_kp = sample_depth_nearest(depth, torch.from_numpy(kr.grid_norm)[None])
    args = (torch.from_numpy(kr.rays_base)[None], torch.from_numpy(kr.ray_valid)[None],
            torch.from_numpy(kr.cam_xyz_base_m)[None])
    xy, valid = lift_keypoints(*args, z_kp, "metric", max_range_m=1e3)
    expect = hit & kr.ray_valid
    assert expect.sum() > 500 and np.array_equal(valid[0].numpy(), expect)
    np.testing.assert_allclose(xy[0].numpy()[expect], p_base[expect, :2], atol=2e-4)
    # relative depth with scale s: s * xy_cc + camera_xy = ground truth
    s_true = 2.5
    xy_cc, valid_r = lift_keypoints(*args, z_kp / s_true, "relative")
    recon = s_true * xy_cc[0].numpy() + cam_mod.camera_xy_base_m(T)
    np.testing.assert_allclose(recon[expect], p_base[expect, :2], atol=5e-4)
    # flat ground: exact on the ground hits (the wall is wrongly flattened, as expected)
    xy_f, valid_f = lift_keypoints(*args, None, "none", max_range_m=1e3)
    on_ground = expect & (np.abs(p_base[:, 2]) < 1e-9)
    assert on_ground.sum() > 100 and valid_f[0].numpy()[on_ground].all()
    np.testing.assert_allclose(xy_f[0].numpy()[on_ground], p_base[on_ground, :2], atol=2e-4)


@pytest.mark.parametrize("kind", ["metric", "relative", "inverse", "none"])
def test_torch_lifting_matches_camera_py(kind):
    camera = _distorted_kitti()
    T = cam_mod.T_base_camera_from_xyz_rpy(0.8, -0.2, 1.5, 0.0, 0.1, -0.03)
    kr = keypoint_rays(camera, T, sparse_preset("compact"))
    rng = np.random.default_rng(3)
    d = rng.uniform(0.5, 60.0, len(kr.uv_px))
    d[::7] = 0.0
    d[1::11] = np.nan
    d[2::13] = -1.0
    if kind == "inverse":
        with np.errstate(divide="ignore"):
            d = 1.0 / d
    args = (torch.from_numpy(kr.rays_base)[None], torch.from_numpy(kr.ray_valid)[None],
            torch.from_numpy(kr.cam_xyz_base_m)[None])
    xy, valid = lift_keypoints(*args, torch.from_numpy(d).float()[None], kind, max_range_m=1e4)
    if kind == "none":
        ref, ref_valid = lifting_mod.lift_flat_ground(camera, T, kr.uv_px, max_range_m=1e4)
    else:
        ref, ref_valid = lifting_mod.lift_depth(camera, T, kr.uv_px, d, kind=kind)
    assert np.array_equal(valid[0].numpy(), ref_valid)
    assert torch.isfinite(xy).all()
    np.testing.assert_allclose(xy[0].numpy(), ref, atol=2e-3, rtol=1e-5)


def test_sample_depth_nearest_any_resolution():
    depth = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    # pixel (u=2, v=1) of a 4x3 image and of the same image at 2x
    g = torch.tensor([[[(2 * 2 + 1) / 4 - 1, (2 * 1 + 1) / 3 - 1], [5.0, 0.0]]])
    assert sample_depth_nearest(depth, g).tolist() == [[6.0, 0.0]]
    big = depth.repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert sample_depth_nearest(big, g[:, :1]).tolist() == [[6.0]]


# ----------------------------------------------------------------------------- solver
@pytest.mark.parametrize("s_true", [0.3, 2.5])
def test_relative_depth_scale_recovered_by_solver(s_true):
    camera = _distorted_kitti()
    T = cam_mod.T_base_camera_from_xyz_rpy(1.2, 0.3, 1.65, 0.0, 0.06, 0.0)
    kr = keypoint_rays(camera, T, sparse_preset("compact"))
    p_base, z, hit = _scene_points(camera, T, kr.uv_px)
    keep = hit & kr.ray_valid
    rng = np.random.default_rng(7)
    idx = rng.choice(np.flatnonzero(keep), 200, replace=False)
    xy_cc, valid = lift_keypoints(
        torch.from_numpy(kr.rays_base[idx])[None], torch.ones(1, 200, dtype=torch.bool),
        torch.from_numpy(kr.cam_xyz_base_m)[None], torch.from_numpy(z[idx] / s_true).float()[None], "relative",
    )
    assert valid.all()
    x, y, yaw = 4.0, -3.0, math.radians(-150.0)
    c, s = math.cos(yaw), math.sin(yaw)
    b = p_base[idx, :2]
    dst = np.column_stack((c * b[:, 0] - s * b[:, 1] + x, s * b[:, 0] + c * b[:, 1] + y))
    dst += rng.normal(0.0, 0.05, dst.shape)
    pose, scale = pose_from_correspondences(
        xy_cc, torch.from_numpy(dst).float()[None], torch.ones(1, 200), False,
        torch.from_numpy(cam_mod.camera_xy_base_m(T)).float()[None],
    )
    assert abs(float(scale) / s_true - 1.0) < 0.02
    assert np.allclose(pose[0, :2].numpy(), [x, y], atol=0.1)
    assert abs(math.remainder(float(pose[0, 2]) - yaw, 2 * math.pi)) < math.radians(0.5)
    # the node's numpy path with 15 % wrong matches: robust solve + camera-centred recovery
    dst_bad = dst.copy()
    dst_bad[:30] += rng.uniform(-20, 20, (30, 2))
    res = solve(Correspondences(xy_cc[0].numpy(), dst_bad, np.ones(200), scale_known=False))
    T_pb, s_est = lifting_mod.T_patch_base_from_camera_centred(res.transform, cam_mod.camera_xy_base_m(T))
    assert abs(s_est / s_true - 1.0) < 0.02
    assert math.hypot(T_pb.x_m - x, T_pb.y_m - y) < 0.2


def test_unknown_orientation_matching_recovers_any_yaw():
    """Oracle descriptors (the satellite feature of the true cell): argmax + soft-argmax +
    Procrustes recover the pose for yaws all around the circle, with no yaw prior."""
    gen = torch.Generator().manual_seed(0)
    cells, m_cell = 64, 1.0
    sat = F.normalize(torch.randn(1, 16, cells, cells, generator=gen), dim=1)
    src = torch.rand(1, 60, 2, generator=gen) * torch.tensor([20.0, 20.0]) + torch.tensor([2.0, -10.0])  # stays in the patch
    for yaw_deg in (-180.0, -97.0, -10.0, 45.0, 135.0, 179.5):
        yaw = math.radians(yaw_deg)
        t = torch.tensor([3.0, -4.0])
        c, s = math.cos(yaw), math.sin(yaw)
        d = torch.stack([c * src[..., 0] - s * src[..., 1], s * src[..., 0] + c * src[..., 1]], -1) + t
        half = (cells - 1) / 2
        j = torch.round(d[..., 0] / m_cell + half).long().clamp(0, cells - 1)
        i = torch.round(half - d[..., 1] / m_cell).long().clamp(0, cells - 1)
        desc = sat[0, :, i[0], j[0]].T[None]
        uv, conf, _ = match_descriptors(desc, sat, torch.tensor(20.0), 1)
        dst = sat_cell_to_patch_m(uv, cells, torch.tensor([m_cell]))
        pose, _ = pose_from_correspondences(src, dst, conf, True, torch.zeros(1, 2))
        assert torch.allclose(pose[0, :2], t, atol=0.3), (yaw_deg, pose)
        assert abs(math.remainder(float(pose[0, 2]) - yaw, 2 * math.pi)) < math.radians(1.0)
        assert -math.pi <= float(pose[0, 2]) < math.pi


def test_c4_pooled_satellite_encoder_is_rotation_equivariant():
    torch.manual_seed(0)
    model = SparseDepthMatcher(SparseDepthConfig(**{**TINY.to_dict(), "sat_rotations": 4})).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        f = model.encode_sat(x)
        f_rot = model.encode_sat(torch.rot90(x, 1, dims=(2, 3)))
    assert torch.allclose(f_rot, torch.rot90(f, 1, dims=(2, 3)), atol=1e-5)


def test_select_keypoints_nms_and_invalid():
    score = torch.zeros(1, 4, 6)
    score[0, 1, 1], score[0, 1, 2], score[0, 3, 5] = 0.9, 0.8, 0.7
    valid = torch.ones(1, 24, dtype=torch.bool)
    valid[0, 3 * 6 + 5] = False
    idx, sel = select_keypoints(score, valid, 3, 1)
    assert idx[0, 0] == 1 * 6 + 1  # (1, 2) suppressed by its neighbour, (3, 5) invalid
    assert (idx[0] != 1 * 6 + 2).all() and (idx[0] != 3 * 6 + 5).all()
    idx, sel = select_keypoints(score, torch.zeros(1, 24, dtype=torch.bool), 3, 1)
    assert not sel.any()


# ----------------------------------------------------------------------------- network
def test_forward_shapes_invalid_depth_never_nan_and_gradients(device):
    torch.manual_seed(0)
    model = SparseDepthMatcher(TINY).to(device)
    batch = _tiny_batch([(1.0, -2.0, 0.4), (-2.0, 1.0, -2.9)], device)
    k = TINY.num_keypoints
    bad = batch["depth"].clone()
    bad[:, ::2] = float("nan")
    bad[:, 1::4] = float("inf")
    bad[:, 3::4] = -1.0
    for kind, depth in (("metric", bad), ("relative", bad), ("inverse", bad), ("none", None),
                        ("metric", torch.zeros_like(bad))):
        out = _forward(model, batch, kind, depth=depth if depth is not None else batch["depth"])
        assert out.src_xy.shape == (2, k, 2) and out.dst_xy_m.shape == (2, k, 2)
        assert out.match_logits.shape == (2, k, TINY.sat_cells ** 2)
        for t in (out.src_xy, out.dst_xy_m, out.weight, out.T_patch_base, out.scale, out.confidence):
            assert torch.isfinite(t).all(), kind
        assert (out.weight[~out.src_valid] == 0).all() and (out.src_xy[~out.src_valid] == 0).all()
        assert out.scale_known == (kind in ("metric", "none"))
        loss = sparse_depth_loss(out, batch["T_patch_base"]).total
        assert torch.isfinite(loss)
    # all depth invalid: nothing is selected, pose finite
    out = _forward(model, batch, "metric", depth=torch.zeros_like(bad))
    assert not out.src_valid.any() and torch.isfinite(out.T_patch_base).all()
    sparse_depth_loss(out, batch["T_patch_base"]).total.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    # gradients reach both encoders and the score head (metric depth, valid points)
    model.zero_grad()
    out = _forward(model, batch, "metric")
    sparse_depth_loss(out, batch["T_patch_base"]).total.backward()
    for name in ("ground_encoder", "sat_encoder", "score_head"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert model.log_inv_temperature.grad is not None


def test_forward_rejects_bad_input():
    model = SparseDepthMatcher(TINY)
    batch = _tiny_batch([(0.0, 0.0, 0.0)])
    with pytest.raises(GeometryError, match="depth_kind"):
        _forward(model, batch, "stereo")
    with pytest.raises(GeometryError, match="ground_rgb"):
        model(batch["ground_rgb"][:, :, :16], batch["sat_rgb"], batch["sat_m_per_px"], batch["rays_base"],
              batch["ray_valid"], batch["cam_xyz_base_m"], batch["kp_grid_norm"])
    with pytest.raises(GeometryError, match="rays_base"):
        model(batch["ground_rgb"], batch["sat_rgb"], batch["sat_m_per_px"], batch["rays_base"][:, :5],
              batch["ray_valid"], batch["cam_xyz_base_m"], batch["kp_grid_norm"])
    with pytest.raises(GeometryError, match="needs a depth map"):
        model(batch["ground_rgb"], batch["sat_rgb"], batch["sat_m_per_px"], batch["rays_base"],
              batch["ray_valid"], batch["cam_xyz_base_m"], batch["kp_grid_norm"], depth_kind="metric")
    with pytest.raises(ConfigError, match="match_ce_weight"):
        SparseLossConfig(match_ce_weight=-1.0)


def test_overfits_tiny_batch_with_pose_supervision_only_any_yaw(device):
    """Weak supervision (pose only) on two samples with yaws far apart (unknown orientation):
    the loss falls by >= 5x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: 1 thread is faster and steadier on a busy machine
    try:
        torch.manual_seed(0)
        batch = _tiny_batch([(1.5, -2.0, math.radians(-170.0)), (-2.5, 1.0, math.radians(60.0))], device)
        model = SparseDepthMatcher(TINY).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(40):
            terms = sparse_depth_loss(_forward(model, batch), batch["T_patch_base"])
            opt.zero_grad()
            terms.total.backward()
            opt.step()
            losses.append(float(terms.total.detach()))
        first, last = losses[0], min(losses[-5:])
        assert first > 20.0  # untrained: essentially random yaw
        assert last < first / 5.0, losses
    finally:
        torch.set_num_threads(threads)


def test_match_ce_loss_runs_for_metric_and_relative():
    torch.manual_seed(0)
    model = SparseDepthMatcher(TINY)
    batch = _tiny_batch([(1.0, -1.0, 0.5)])
    cfg = SparseLossConfig(match_ce_weight=1.0, scale_weight=1.0)
    out = _forward(model, batch, "metric")
    terms = sparse_depth_loss(out, batch["T_patch_base"], cfg, sat_m_per_px=batch["sat_m_per_px"], sat_stride=4)
    assert terms.match_ce > 0 and math.isfinite(terms.match_ce)
    out = _forward(model, batch, "relative", depth=batch["depth"] / 2.0)
    with pytest.raises(ConfigError, match="depth_scale_gt"):
        sparse_depth_loss(out, batch["T_patch_base"], cfg, sat_m_per_px=batch["sat_m_per_px"], sat_stride=4)
    terms = sparse_depth_loss(out, batch["T_patch_base"], cfg, sat_m_per_px=batch["sat_m_per_px"], sat_stride=4,
                              cam_xy_base_m=batch["cam_xyz_base_m"][:, :2], depth_scale_gt=torch.tensor([2.0]))
    assert terms.match_ce > 0 and terms.scale >= 0 and torch.isfinite(terms.total)


@pytest.mark.parametrize("kind", ["metric", "none"])
def test_panorama_keypoints_lift_like_camera_pano(kind):
    """Equirectangular (VIGOR-style) cameras: the sparse matcher's rays are unit rays, so a
    metric depth is the range along the ray; lifting agrees with camera_pano's numpy functions."""
    from xview_localizer.core import camera_pano

    camera = camera_pano.EquirectangularCamera(512, 256)
    T = cam_mod.T_base_camera_from_xyz_rpy(0.0, 0.0, 2.5, 0.0, 0.0, 0.0)
    kr = keypoint_rays(camera, T, sparse_preset("compact"))
    np.testing.assert_allclose(np.linalg.norm(kr.rays_base, axis=1), 1.0, atol=1e-6)
    rng = np.random.default_rng(4)
    d = rng.uniform(1.0, 60.0, len(kr.uv_px))
    args = (torch.from_numpy(kr.rays_base)[None], torch.from_numpy(kr.ray_valid)[None],
            torch.from_numpy(kr.cam_xyz_base_m)[None])
    if kind == "none":
        xy, valid = lift_keypoints(*args, None, "none", max_range_m=1e4)
        ref, ref_valid = camera_pano.lift_flat_ground(camera, T, kr.uv_px, max_range_m=1e4)
    else:
        xy, valid = lift_keypoints(*args, torch.from_numpy(d).float()[None], "metric", max_range_m=1e4)
        ref, ref_valid = camera_pano.lift_depth(camera, T, kr.uv_px, d)
    assert ref_valid.sum() > 100
    assert np.array_equal(valid[0].numpy(), ref_valid)
    np.testing.assert_allclose(xy[0].numpy()[ref_valid], ref[ref_valid], atol=2e-3, rtol=1e-5)


def test_keypoint_rays_cache_reuses_and_evicts():
    from xview_localizer.matcher.sparse_depth import KeypointRaysCache

    camera = _distorted_kitti()
    cache = KeypointRaysCache(sparse_preset("compact"), size=2)
    Ts = [cam_mod.T_base_camera_from_xyz_rpy(0.8, 0.0, 1.5 + 0.1 * k, 0.0, 0.1, 0.0) for k in range(3)]
    first = cache.get(camera, Ts[0])
    assert cache.get(camera, Ts[0]) is first
    np.testing.assert_array_equal(first.uv_px, keypoint_rays(camera, Ts[0], sparse_preset("compact")).uv_px)
    cache.get(camera, Ts[1])
    cache.get(camera, Ts[0])  # most recently used now
    cache.get(camera, Ts[2])  # evicts Ts[1]
    assert len(cache) == 2 and cache.get(camera, Ts[0]) is first
