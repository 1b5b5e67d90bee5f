"""Tests of the dense-flow matcher: presets, shapes, geometric conventions, gradients,
overfitting a tiny batch, checkpoints and the inference API."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xview_localizer.core.camera import PinholeCamera, T_base_camera_from_xyz_rpy
from xview_localizer.core.errors import CheckpointError, ConfigError, GeometryError
from xview_localizer.matcher.base import Correspondences
from xview_localizer.matcher.checkpoint import load_model, save_checkpoint
from xview_localizer.matcher.dense_flow import (
    DenseFlowConfig,
    DenseFlowMatcher,
    bev_grid_for_camera,
    flow_to_correspondences,
    gt_flow_from_pose,
    preset,
    weighted_procrustes_torch,
)
from xview_localizer.matcher.inference import load_matcher
from xview_localizer.tiles.patch import PatchGeoref
from xview_localizer.train.losses import LossConfig, dense_flow_loss
from xview_localizer.train.trainer import SyntheticWarpDataset

TINY = dict(
    ground_size_px=(32, 64), sat_size_px=64, feature_stride=8, encoder_widths=(8, 16, 16),
    blocks_per_stage=1, feature_dim=16, hidden_dim=16, context_dim=16, corr_levels=3,
    corr_radius=2, iters=3,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: avoid oversubscription
    yield
    torch.set_num_threads(n)


def tiny_cfg(**kw) -> DenseFlowConfig:
    return preset("compact", **{**TINY, **kw})


def tiny_batch(cfg: DenseFlowConfig, n: int = 2, seed: int = 0, device: str = "cpu") -> dict:
    # a 64 px patch at 0.4 m/px (25.6 m), offsets up to 2.56 m, yaw noise up to 10 deg
    ds = SyntheticWarpDataset(n, cfg, seed=seed, sat_m_per_px=0.4)
    batch = torch.utils.data.default_collate([ds[i] for i in range(n)])
    return {k: v.to(device) for k, v in batch.items()}


def run(model, b):
    return model(b["ground_rgb"], b["bev_grid"], b["bev_valid"], b["sat_rgb"], b["sat_m_per_px"], b["prior_yaw_rad"])


# ----------------------------------------------------------------------------- config
def test_presets_match_the_paper_and_the_cpu_budget():
    p = preset("paper")
    assert (p.ground_size_px, p.sat_size_px, p.feature_stride, p.feature_dim, p.iters) == ((256, 1024), 512, 8, 256, 12)
    assert p.encoder_widths == (64, 128, 256) and p.blocks_per_stage == 2  # ResNet18 stages 1-3
    c = preset("compact")
    assert c.ground_size_px == (128, 512) and c.sat_size_px == 256
    assert max(c.feature_dim, c.hidden_dim, c.context_dim) <= 128 and c.iters <= 6
    assert preset("compact", iters=2).iters == 2


@pytest.mark.parametrize(
    "kw, match",
    [({"feature_stride": 3}, "feature_stride"), ({"sat_size_px": 60}, "sat_size_px"),
     ({"iters": 0}, "iters"), ({"ground_size_px": (30, 64)}, "ground_size_px"),
     ({"sat_size_px": 32, "corr_levels": 4}, "too few")],
)
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ConfigError, match=match):
        tiny_cfg(**kw)
    with pytest.raises(ConfigError, match="unknown dense-flow preset"):
        preset("huge")


def test_config_dict_round_trip():
    cfg = tiny_cfg()
    assert DenseFlowConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown field"):
        DenseFlowConfig.from_dict({**cfg.to_dict(), "bogus": 1})


# ----------------------------------------------------------------------------- conventions
def test_zero_flow_gives_the_prior_pose():
    cells, b = 8, 3
    prior = torch.tensor([0.0, 1.2, -2.9])
    m_cell = torch.tensor([1.6, 3.2, 0.8])
    flow = torch.zeros(b, 2, cells, cells)
    conf = torch.rand(b, cells, cells)
    valid = torch.ones(b, cells, cells)
    src, dst, w = flow_to_correspondences(flow, conf, valid, m_cell, prior)
    assert src.shape == (b, 64, 2) and dst.shape == (b, 64, 2) and w.shape == (b, 64)
    # dst = R(prior) src: each BEV cell's base_link point, seen with yaw = prior, at the centre
    c, s = torch.cos(prior)[:, None], torch.sin(prior)[:, None]
    rot = torch.stack([c * src[..., 0] - s * src[..., 1], s * src[..., 0] + c * src[..., 1]], dim=-1)
    torch.testing.assert_close(rot, dst, atol=1e-5, rtol=0)
    pose = weighted_procrustes_torch(src, dst, w)
    torch.testing.assert_close(pose, torch.stack([torch.zeros(b), torch.zeros(b), prior], dim=-1), atol=1e-5, rtol=0)
    # cell (row 0, col 0) is the north-west corner of the north-up BEV
    assert dst[0, 0, 0] < 0 and dst[0, 0, 1] > 0


def test_ground_truth_flow_recovers_the_pose():
    gen = torch.Generator().manual_seed(3)
    b, cells = 5, 16
    prior = (torch.rand(b, generator=gen) * 2 - 1) * math.pi
    gt = torch.stack([(torch.rand(b, generator=gen) - 0.5) * 40, (torch.rand(b, generator=gen) - 0.5) * 40,
                      prior + (torch.rand(b, generator=gen) - 0.5) * 0.35], dim=-1)
    gt[:, 2] = torch.remainder(gt[:, 2] + math.pi, 2 * math.pi) - math.pi
    m_cell = torch.full((b,), 1.6)
    flow = gt_flow_from_pose(gt, prior, m_cell, cells)
    valid = (torch.rand(b, cells, cells, generator=gen) > 0.5).float()
    src, dst, w = flow_to_correspondences(flow, torch.ones(b, cells, cells), valid, m_cell, prior)
    torch.testing.assert_close(weighted_procrustes_torch(src, dst, w), gt, atol=1e-4, rtol=0)


def test_bev_grid_is_north_up_and_rotated_by_the_prior():
    cam = PinholeCamera.kitti_like()
    T = T_base_camera_from_xyz_rpy(1.5, 0.0, 1.65, 0.0, 0.0, 0.0)
    cells, m_cell = 16, 2.0
    centre = (cells - 1) / 2.0
    for prior_yaw, ahead in ((0.0, (7, 13)), (math.pi / 2, (2, 7)), (math.pi, (7, 2)), (-math.pi / 2, (13, 8))):
        grid, valid = bev_grid_for_camera(cam, T, prior_yaw, cells, m_cell)
        assert grid.shape == (cells, cells, 2) and valid.shape == (cells, cells)
        row, col = ahead  # a cell ~10 m ahead along the prior heading, on the optical axis side
        assert valid[row, col] == 1.0
        # behind the vehicle nothing is visible
        back_row, back_col = int(round(2 * centre - row)), int(round(2 * centre - col))
        assert valid[back_row, back_col] == 0.0
        assert np.all(grid[valid == 0] == -2.0)
        assert np.all(np.abs(grid[valid == 1]) <= 1.0)


# ----------------------------------------------------------------------------- network
def test_forward_shapes_and_documented_outputs(device):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = DenseFlowMatcher(cfg).to(device)
    b = tiny_batch(cfg, 2, device=device)
    out = run(model, b)
    c = cfg.feature_cells
    assert len(out.flows) == cfg.iters == len(out.confidences)
    assert out.flows[-1].shape == (2, 2, c, c) and out.confidences[-1].shape == (2, c, c)
    assert out.src_xy_m.shape == (2, c * c, 2) and out.weight.shape == (2, c * c)
    assert out.T_patch_base.shape == (2, 3)
    assert torch.all((out.weight >= 0) & (out.weight <= 1))
    assert torch.all(out.weight[out.bev_valid.reshape(2, -1) == 0] == 0)
    assert torch.isfinite(out.T_patch_base).all()
    with pytest.raises(GeometryError, match="ground_rgb must have shape"):
        model(b["ground_rgb"][:, :, :16], b["bev_grid"], b["bev_valid"], b["sat_rgb"], b["sat_m_per_px"], b["prior_yaw_rad"])
    with pytest.raises(GeometryError, match="sat_rgb must have shape"):
        model(b["ground_rgb"], b["bev_grid"], b["bev_valid"], None, b["sat_m_per_px"], b["prior_yaw_rad"])


def test_cached_satellite_features_give_the_same_result():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = DenseFlowMatcher(cfg).eval()
    b = tiny_batch(cfg, 2)
    with torch.no_grad():
        ref = run(model, b)
        feats = model.encode_sat(b["sat_rgb"])
        out = model(b["ground_rgb"], b["bev_grid"], b["bev_valid"], None, b["sat_m_per_px"], b["prior_yaw_rad"],
                    sat_features=feats)
    torch.testing.assert_close(out.T_patch_base, ref.T_patch_base)


def test_gradients_reach_both_encoders_through_procrustes(device):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = DenseFlowMatcher(cfg).to(device)
    b = tiny_batch(cfg, 2, device=device)
    out = run(model, b)
    # position loss only: every gradient goes through the weighted Procrustes
    loss = (out.T_patch_base - b["T_patch_base"]).abs().sum()
    loss.backward()
    for name in ("ground_encoder", "sat_encoder", "context_encoder", "refine"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    conf_grads = [p.grad for n, p in model.named_parameters() if n.startswith("update.conf_head")]
    assert sum(float(g.abs().sum()) for g in conf_grads) > 0  # the weights get gradients too


def test_tiny_batch_overfits():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = DenseFlowMatcher(cfg)
    b = tiny_batch(cfg, 2, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = 100
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    lcfg = LossConfig()
    losses, matching = [], []
    for _ in range(steps):
        out = run(model, b)
        terms = dense_flow_loss(out, b["T_patch_base"], b["prior_yaw_rad"], b["sat_m_per_px"] * cfg.feature_stride, lcfg, 0)
        opt.zero_grad()
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(terms.total.detach()))
        matching.append(terms.matching)
    # eq. 7 (with the constant floor of eq. 5 removed, see losses.py) and eq. 4 both fall >= 10x
    assert min(losses[-5:]) * 10 <= losses[0], (losses[0], losses[-5:])
    assert min(matching[-5:]) * 10 <= matching[0], (matching[0], matching[-5:])


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path, device):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = DenseFlowMatcher(cfg).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, metrics={"val": {"xy_err_median_m": 0.5}}, train_args={"lr": 1e-4})
    loaded, blob = load_model(path, device)
    assert loaded.cfg == cfg and blob["metrics"]["val"]["xy_err_median_m"] == 0.5
    b = tiny_batch(cfg, 2)
    with torch.no_grad():
        a = run(model, b).T_patch_base
        c = run(loaded, {k: v.to(device) for k, v in b.items()}).T_patch_base.cpu()
    torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)
    # half-precision weights (the shipped format) still load and agree closely
    half = save_checkpoint(tmp_path / "h.pt", model, half=True)
    assert half.stat().st_size < path.stat().st_size
    loaded_h, _ = load_model(half)
    with torch.no_grad():
        torch.testing.assert_close(run(loaded_h, b).T_patch_base, a, atol=0.05, rtol=0)


def test_bad_checkpoints_raise_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01 not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="not a loadable torch checkpoint"):
        load_model(garbage)
    model = DenseFlowMatcher(tiny_cfg())
    path = save_checkpoint(tmp_path / "m.pt", model)
    blob = torch.load(path, weights_only=True)
    torch.save({**blob, "preset": "huge"}, tmp_path / "preset.pt")
    with pytest.raises(CheckpointError, match="unknown preset 'huge'"):
        load_model(tmp_path / "preset.pt")
    torch.save({**blob, "format": "other/1"}, tmp_path / "fmt.pt")
    with pytest.raises(CheckpointError, match="format 'other/1'"):
        load_model(tmp_path / "fmt.pt")
    torch.save({**blob, "config": {**blob["config"], "feature_dim": 32}}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        load_matcher(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- inference
def test_matcher_returns_correspondences_and_caches_satellite_features(tmp_path, device):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    path = save_checkpoint(tmp_path / "m.pt", DenseFlowMatcher(cfg))
    matcher = load_matcher(path, device)
    rng = np.random.default_rng(0)
    cam = PinholeCamera.from_intrinsics(128, 64, 60.0, 60.0, 63.5, 31.5)
    T = T_base_camera_from_xyz_rpy(1.0, 0.0, 1.6, 0.0, 0.0, 0.0)
    ground = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    sat = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    geo = PatchGeoref(49.0, 8.4, 0.4, 128, 128)
    corr = matcher.match(ground, cam, T, sat, geo, 0.3)
    assert isinstance(corr, Correspondences) and corr.scale_known
    assert 0 < len(corr) <= cfg.feature_cells**2
    assert matcher.cache_misses == 1 and matcher.cache_hits == 0
    again = matcher.match(ground, cam, T, sat.copy(), geo, 0.3)
    assert matcher.cache_hits == 1
    np.testing.assert_allclose(again.dst_xy_m, corr.dst_xy_m, atol=1e-3)
    # the base_link points of the BEV cells are in front of the camera
    assert np.all(corr.src_xy_m[:, 0] > 0)
    other = sat.copy()
    other[0, 0] ^= 1
    batch = matcher.match_batch([])
    assert batch == []
    matcher.match(ground, cam, T, other, geo, 0.3)
    assert matcher.cache_misses == 2
    with pytest.raises(GeometryError, match="camera is 128x64"):
        matcher.match(ground[:, :100], cam, T, sat, geo, 0.3)
    with pytest.raises(GeometryError, match="uint8"):
        matcher.match(ground.astype(np.float32), cam, T, sat, geo, 0.3)
