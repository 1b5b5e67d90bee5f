"""Wiring of the depth-prior sparse matcher (issue 6): checkpoint type, the sparse data adapter
and its depth options, ``train --model sparse-depth`` / ``evaluate`` through the CLI,
``SparseMatcher`` / ``load_matcher`` and the localizer's camera-centred (relative depth) pose
conversion. Tiny models and data, seeded; each test runs in a few seconds on one core."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from localizer_doubles import write_tile_folder

from xview_localizer.cli import main as cli_main
from xview_localizer.core.camera import (
    PinholeCamera,
    T_base_camera_from_xyz_rpy,
    camera_xy_base_m,
    kitti_like_T_base_camera,
)
from xview_localizer.core.errors import CheckpointError, ConfigError, DatasetError, GeometryError
from xview_localizer.core.geo import LocalEnu
from xview_localizer.core.se2 import SE2
from xview_localizer.matcher.base import Correspondences
from xview_localizer.matcher.checkpoint import load_model, save_checkpoint
from xview_localizer.matcher.dense_flow import DenseFlowMatcher, preset
from xview_localizer.matcher.inference import Matcher, SparseMatcher, load_matcher
from xview_localizer.matcher.sparse_depth import DEPTH_KINDS, SparseDepthMatcher, sparse_preset
from xview_localizer.pipeline.config import LocalizerConfig
from xview_localizer.pipeline.localizer import NS_PER_S, FixSample, Frame, Localizer
from xview_localizer.tiles.cache import TileCache, TileCacheConfig
from xview_localizer.tiles.patch import PatchGeoref
from xview_localizer.train import cli as train_cli
from xview_localizer.train.sparse_data import TRAIN_DEPTH_KINDS, depth_for_kind
from xview_localizer.train.trainer import TrainConfig, open_dataset, train

TINY_SPARSE = dict(ground_size_px=(32, 64), sat_size_px=64, ground_stride=8, sat_stride=4,
                   encoder_widths=(8, 16, 16), blocks_per_stage=1, feature_dim=16, num_keypoints=16)
TINY_DENSE = dict(ground_size_px=(32, 64), sat_size_px=64, feature_stride=8, encoder_widths=(8, 16, 16),
                  blocks_per_stage=1, feature_dim=16, hidden_dim=16, context_dim=16, corr_levels=3,
                  corr_radius=2, iters=2)
CAM = PinholeCamera.kitti_like(256, 80)
T_CAM = kitti_like_T_base_camera()


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _write_pairs_with_depth(root: Path, n: int = 4) -> Path:
    """A tiny xview-pairs/1 directory with a 16-bit depth PNG (a ramp 4..40 m, a hole row)."""
    rng = np.random.default_rng(0)
    for sub in ("ground", "depth", "sat"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    depth_mm = np.tile(np.linspace(4000, 40000, 256, dtype=np.uint16), (80, 1))
    depth_mm[:5] = 0  # holes
    recs = []
    for i in range(n):
        cv2.imwrite(str(root / "ground" / f"{i}.png"), rng.integers(0, 255, (80, 256, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "depth" / f"{i}.png"), depth_mm)
        cv2.imwrite(str(root / "sat" / f"{i}.png"), rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
        recs.append({
            "id": str(i), "world_seed": 1, "ground": f"ground/{i}.png", "depth": f"depth/{i}.png",
            "sat": f"sat/{i}.png", "K": list(CAM.K.reshape(-1)), "width_px": 256, "height_px": 80,
            "T_base_camera": list(T_CAM.reshape(-1)), "sat_m_per_px": 0.4, "sat_center_lat_deg": 49.0,
            "sat_center_lon_deg": 8.4, "T_patch_base": [1.0, -2.0, 0.5 + 0.1 * i], "prior_yaw_rad": 0.45,
            "gt_lat_deg": 49.0, "gt_lon_deg": 8.4,
        })
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (root / "meta.json").write_text(json.dumps({
        "format": "xview-pairs/1", "count": n, "worlds": [1], "offset_range_m": 20.0, "yaw_range_deg": 10.0,
        "sat_size_px": 128, "sat_m_per_px": 0.4, "ground_width_px": 256, "ground_height_px": 80}))
    return root


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return _write_pairs_with_depth(tmp_path_factory.mktemp("sparse_pairs"))


@pytest.fixture(scope="module")
def sparse_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = SparseDepthMatcher(sparse_preset("compact", **TINY_SPARSE))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "sparse.pt", net, metrics={"x": 1.0}, half=True)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_sparse_legacy_dense_and_unknown_model(tmp_path, sparse_ckpt):
    model, blob = load_model(sparse_ckpt)
    assert isinstance(model, SparseDepthMatcher) and blob["model"] == "sparse-depth"
    assert model.cfg == sparse_preset("compact", **TINY_SPARSE) and not model.training
    raw = torch.load(sparse_ckpt, map_location="cpu", weights_only=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, raw["state_dict"][k].float())
    # a dense-flow checkpoint written before "model" existed still loads as dense-flow
    dense = save_checkpoint(tmp_path / "dense.pt", DenseFlowMatcher(preset("compact", **TINY_DENSE)))
    blob = torch.load(dense, map_location="cpu", weights_only=True)
    assert blob.pop("model") == "dense-flow"
    torch.save(blob, tmp_path / "legacy.pt")
    assert isinstance(load_model(tmp_path / "legacy.pt")[0], DenseFlowMatcher)
    assert isinstance(load_matcher(tmp_path / "legacy.pt"), Matcher)
    blob["model"] = "transformer"
    torch.save(blob, tmp_path / "alien.pt")
    with pytest.raises(CheckpointError, match="unknown model 'transformer'"):
        load_model(tmp_path / "alien.pt")
    # a sparse checkpoint labelled dense-flow: its config does not fit
    raw["model"] = "dense-flow"
    torch.save(raw, tmp_path / "mislabelled.pt")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "mislabelled.pt")


# ----------------------------------------------------------------------------- data + config
def test_train_config_rejects_bad_sparse_options(tmp_path):
    base = dict(dataset="x", out_dir=str(tmp_path), model="sparse-depth")
    with pytest.raises(ConfigError, match="model must be one of"):
        TrainConfig(dataset="x", out_dir=str(tmp_path), model="sparse")
    with pytest.raises(ConfigError, match="depth kind"):
        TrainConfig(**base, depth_kind="stereo")
    with pytest.raises(ConfigError, match="scale range"):
        TrainConfig(**base, depth_scale_range=(3.0, 0.3))
    with pytest.raises(ConfigError, match="scale range"):
        TrainConfig(**base, depth_scale_range=(0.0, 1.0))
    with pytest.raises(ConfigError, match="noise"):
        TrainConfig(**base, depth_noise_frac=-0.1)
    with pytest.raises(ConfigError, match="hole"):
        TrainConfig(**base, depth_hole_frac=1.0)
    with pytest.raises(ConfigError, match="unknown sparse-depth preset"):
        TrainConfig(**base, preset="huge")
    with pytest.raises(DatasetError, match="dense-flow only"):
        open_dataset("synthetic:4", sparse_preset("compact", **TINY_SPARSE))
    assert train_cli.DEPTH_KINDS == DEPTH_KINDS and train_cli.TRAIN_DEPTH_KINDS == TRAIN_DEPTH_KINDS
    assert cli_main(["train", "--model", "sparse-depth", "--iters", "3", "--dataset", "x", "--out",
                     str(tmp_path / "o")]) == 1  # --iters is dense-flow only
    dense = save_checkpoint(tmp_path / "dense.pt", DenseFlowMatcher(preset("compact", **TINY_DENSE)))
    with pytest.raises(ConfigError, match="holds a dense-flow model"):
        train(TrainConfig(**base, init_checkpoint=str(dense)), device="cpu")


def test_sparse_dataset_is_deterministic_and_applies_depth_options(pairs):
    cfg = sparse_preset("compact", **TINY_SPARSE)
    tc = TrainConfig(dataset=str(pairs), out_dir="unused", model="sparse-depth", depth_noise_frac=0.1,
                     depth_hole_frac=0.3, unknown_orientation=True, depth_scale_range=(0.5, 2.0))
    ds = open_dataset(str(pairs), cfg, tc.depth_augment(seed=3))
    a, b = ds[1], ds[1]
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert a["rays_base"].shape == (32, 3) and a["kp_grid_norm"].shape == (32, 2) and a["ray_valid"].all()
    assert a["depth_m"].shape == (80, 256) and torch.isfinite(a["depth_m"]).all()
    clean = open_dataset(str(pairs), cfg, TrainConfig(dataset="x", out_dir="u", model="sparse-depth").depth_augment(3))
    c = clean[1]
    assert float(c["prior_yaw_rad"]) == pytest.approx(0.45)
    holes = (a["depth_m"] == 0) & (c["depth_m"] > 0)
    assert 0.15 < float(holes.float().mean()) < 0.45  # 8x8 blocks at 30 %
    both = (a["depth_m"] > 0) & (c["depth_m"] > 0)
    rel_err = (a["depth_m"][both] / c["depth_m"][both] - 1).std()
    assert 0.07 < float(rel_err) < 0.13
    # unknown orientation: a uniform prior, the same for the dense adapter on the same samples
    priors = [float(ds[i]["prior_yaw_rad"]) for i in range(4)]
    assert all(-math.pi <= p < math.pi for p in priors) and len(set(priors)) == 4
    dense = open_dataset(str(pairs), preset("compact", **TINY_DENSE), tc.depth_augment(seed=3))
    assert [float(dense[i]["prior_yaw_rad"]) for i in range(4)] == pytest.approx(priors)
    s = a["depth_scale"]
    assert 0.5 <= float(s) <= 2.0
    d = a["depth_m"][None]
    rel = depth_for_kind(d, s[None], "relative")
    inv = depth_for_kind(d, s[None], "inverse")
    ok = d > 0
    torch.testing.assert_close(rel[ok] * s, d[ok])
    torch.testing.assert_close(inv[ok] * rel[ok], torch.ones_like(d[ok]))
    assert (rel[~ok] == 0).all() and (inv[~ok] == 0).all() and depth_for_kind(d, s[None], "none") is None


# ----------------------------------------------------------------------------- CLI
def test_train_sparse_through_cli_then_evaluate(tmp_path, pairs, capsys):
    out = tmp_path / "run"
    rc = cli_main(["train", "--model", "sparse-depth", "--dataset", str(pairs), "--out", str(out), "--steps", "5",
                   "--batch-size", "2", "--model-json", json.dumps(TINY_SPARSE), "--depth-kind", "mixed",
                   "--depth-noise", "0.05", "--depth-holes", "0.1", "--log-every", "1", "--device", "cpu",
                   "--match-ce-weight", "0.5", "--no-progress", "--val-dataset", str(pairs), "--val-max-samples", "2",
                   "--mixed-orientation", "--vote-ce-weight", "5"])
    assert rc == 0
    with open(out / "train_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["step", "epoch", "loss", "xy_m", "yaw_deg", "match_ce", "scale", "vote_ce", "depth_kind",
                             "yaw_known", "lr", "sec_per_step"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert all(math.isfinite(float(r["loss"])) and r["depth_kind"] in DEPTH_KINDS for r in rows)
    assert all(float(r["vote_ce"]) > 0 for r in rows) and {r["yaw_known"] for r in rows} <= {"0", "1"}
    model, blob = load_model(out / "model.pt")
    assert isinstance(model, SparseDepthMatcher) and blob["model"] == "sparse-depth" and blob["step"] == 5
    assert blob["train_args"]["depth_kind"] == "mixed" and blob["metrics"]["val"]["model"]["n_samples"] == 2
    assert blob["train_args"]["sparse_loss"]["match_ce_weight"] == 0.5
    assert blob["train_args"]["sparse_loss"]["vote_ce_weight"] == 5.0 and blob["train_args"]["mixed_orientation"]
    assert any(float(r["match_ce"]) > 0 for r in rows)
    capsys.readouterr()
    report = tmp_path / "eval.json"
    rc = cli_main(["evaluate", "--checkpoint", str(out / "model.pt"), "--dataset", str(pairs), "--out", str(report),
                   "--depth-kind", "relative", "--depth-scale-range", "0.3", "3", "--unknown-orientation",
                   "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "model: sparse-depth" in printed and "xy_err_median_m" in printed
    res = json.loads(report.read_text())
    assert res["model_type"] == "sparse-depth" and res["options"]["depth_kind"] == "relative"
    assert res["model"]["n_samples"] == 4 and res["prior"]["n_samples"] == 4
    assert res["prior"]["xy_err_mean_m"] == pytest.approx(math.hypot(1.0, 2.0))
    assert math.isfinite(res["model"]["xy_err_mean_m"])
    assert cli_main(["evaluate", "--checkpoint", str(out / "model.pt"), "--dataset", "synthetic:2"]) == 1


# ----------------------------------------------------------------------------- inference
def test_sparse_matcher_match_with_and_without_depth(sparse_ckpt):
    matcher = load_matcher(sparse_ckpt)
    assert isinstance(matcher, SparseMatcher) and matcher.meta["model"] == "sparse-depth"
    assert matcher.accepts_depth and not matcher.needs_yaw_prior
    rng = np.random.default_rng(1)
    ground = rng.integers(0, 255, (80, 256, 3), dtype=np.uint8)
    sat = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    geo = PatchGeoref(49.0, 8.4, 0.4, 128, 128)
    depth = np.full((40, 128), 12.0, np.float32)  # half resolution: looked up by position
    depth[:, :10] = np.nan
    results = {}
    for kind in ("metric", "relative", "inverse"):
        results[kind] = matcher.match(ground, CAM, T_CAM, sat, geo, 0.3, depth_m=depth, depth_kind=kind)
    results["flat"] = matcher.match(ground, CAM, T_CAM, sat, geo, None)
    for kind, corr in results.items():
        assert isinstance(corr, Correspondences) and 0 < len(corr) <= 16, kind
        assert corr.weight.min() >= 0 and corr.weight.max() <= 1
    assert results["metric"].scale_known and results["flat"].scale_known
    assert not results["relative"].scale_known and not results["inverse"].scale_known
    # metric points are the relative ones shifted by the camera centre (depth scale 1 here)
    np.testing.assert_allclose(results["metric"].src_xy_m - camera_xy_base_m(T_CAM), results["relative"].src_xy_m,
                               atol=1e-4)
    assert matcher.cache_misses == 1 and matcher.cache_hits == 3
    with pytest.raises(GeometryError, match="depth_kind"):
        matcher.match(ground, CAM, T_CAM, sat, geo, 0.0, depth_m=depth, depth_kind="stereo")
    with pytest.raises(GeometryError, match="depth_m"):
        matcher.match(ground, CAM, T_CAM, sat, geo, 0.0, depth_m=np.ones((2, 3, 4)))
    with pytest.raises(GeometryError, match="camera"):
        matcher.match(ground[:40], CAM, T_CAM, sat, geo, 0.0)
    with pytest.raises(GeometryError, match="prior_yaw_rad"):
        matcher.match(ground, CAM, T_CAM, sat, geo, float("nan"))
    # a Gaussian position prior for the vote: runs with a good one, a clear error for a bad one
    assert matcher.accepts_position_prior
    corr = matcher.match(ground, CAM, T_CAM, sat, geo, 0.3, prior_cov_xy_m2=np.eye(2) * 9.0, prior_xy_m=(1.0, -2.0))
    assert isinstance(corr, Correspondences) and len(corr) > 0
    assert "vote_mass_posterior" in matcher.last_evidence
    for bad in (np.eye(3), np.array([[1.0, 0.0], [0.0, -1.0]]), np.array([[1.0, 2.0], [0.0, 1.0]]),
                np.full((2, 2), np.nan)):
        with pytest.raises(GeometryError, match="prior_cov_xy_m2"):
            matcher.match(ground, CAM, T_CAM, sat, geo, 0.3, prior_cov_xy_m2=bad)
    with pytest.raises(GeometryError, match="prior_xy_m"):
        matcher.match(ground, CAM, T_CAM, sat, geo, 0.3, prior_cov_xy_m2=np.eye(2), prior_xy_m=(float("inf"), 0.0))


# ----------------------------------------------------------------------------- localizer
LAT0, LON0 = 52.5, 13.4


class CameraCentredRelativeMatcher:
    """TEST DOUBLE (never a product path): relative-depth correspondences from a KNOWN true pose,
    as a sparse matcher with relative depth returns them: ``src`` camera-centred
    (``(b - c) / s`` for base_link points ``b``, camera ground point ``c``, unknown scale ``s``),
    ``dst = T_patch_base_true(b) + noise``, ``scale_known=False``. It takes depth by signature
    (no ``accepts_depth`` attribute) and needs no yaw prior."""

    needs_yaw_prior = False

    def __init__(self, truth: tuple[float, float, float], scale: float, seed: int = 0) -> None:
        self.truth, self.scale = truth, scale
        self.rng = np.random.default_rng(seed)
        self.calls: list[dict] = []

    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad, *, depth_m=None,
              depth_kind="metric"):
        self.calls.append({"prior_yaw_rad": prior_yaw_rad, "depth_m": depth_m, "depth_kind": depth_kind})
        lat, lon, yaw_rad = self.truth
        e, n = LocalEnu(georef.center_lat_deg, georef.center_lon_deg).forward(lat, lon)
        T = SE2(float(e), float(n), yaw_rad)
        b = self.rng.uniform([3.0, -15.0], [40.0, 15.0], size=(150, 2))
        src = (b - camera_xy_base_m(T_base_camera)) / self.scale
        dst = T.apply(b) + self.rng.normal(0.0, 0.05, size=b.shape)
        return Correspondences(src, dst, self.rng.uniform(0.6, 1.0, 150), scale_known=False)


def test_localizer_turns_camera_centred_relative_solution_into_base_pose(tmp_path):
    tiles = write_tile_folder(tmp_path / "tiles", LAT0, LON0, 18, radius_tiles=2, seed=1)
    enu = LocalEnu(LAT0, LON0)
    true_e, true_n, yaw_true = 6.0, -4.0, 2.3
    lat, lon = (float(v) for v in enu.inverse(true_e, true_n))
    matcher = CameraCentredRelativeMatcher((lat, lon, yaw_true), scale=0.37, seed=4)
    cfg = LocalizerConfig(patch_size_px=128, patch_m_per_px=0.5, datum_lat_deg=LAT0, datum_lon_deg=LON0,
                          map_projection="enu", depth_kind="relative")
    T_cam = T_base_camera_from_xyz_rpy(1.5, 0.4, 1.6, 0.0, 0.1, 0.0)
    depth = np.full((48, 64), 3.0, np.float32)
    with TileCache(f"file://{tiles}/{{z}}/{{x}}/{{y}}.png", tmp_path / "cache", TileCacheConfig(zoom=18)) as cache:
        loc = Localizer(cfg, matcher, cache)
        fix_lat, fix_lon = (float(v) for v in enu.inverse(true_e + 2.0, true_n - 1.0))
        loc.add_fix(FixSample(NS_PER_S, fix_lat, fix_lon, 40.0, np.eye(2) * 9.0))
        frame = Frame(NS_PER_S, np.zeros((48, 64, 3), np.uint8), PinholeCamera.from_intrinsics(
            64, 48, 50.0, 50.0, 31.5, 23.5), T_cam, depth)
        res = loc.step(frame)
    assert res.ok, res.detail
    est = res.estimate
    err_m = math.hypot(est.T_map_base.x_m - true_e, est.T_map_base.y_m - true_n)
    assert err_m < 0.1
    assert abs(math.degrees(est.T_map_base.yaw_rad - yaw_true)) < 0.3
    # without the conversion the pose would be the camera's ground point, |c| = 1.55 m away
    assert np.linalg.norm(camera_xy_base_m(T_cam)) > 1.5
    # depth and its kind reached the matcher; no prior yaw and no yaw sweep (one call)
    assert len(matcher.calls) == 1 and matcher.calls[0]["depth_m"] is depth
    assert matcher.calls[0]["depth_kind"] == "relative" and matcher.calls[0]["prior_yaw_rad"] is None
    assert np.all(np.linalg.eigvalsh(est.cov_xyyaw) > 0)
    with pytest.raises(ConfigError, match="depth_kind"):
        LocalizerConfig(depth_kind="stereo")


def test_keypoint_weights_use_sparse_min_weight(tmp_path):
    """Sparse-depth weights (keypoint score x match probability mass) are small numbers: the
    localizer thresholds them with sparse_min_weight (0 by default), dense-flow-style matchers
    with min_weight (0.5). The same low-weight matches: a pose for the first, too_few_matches
    for the second."""
    tiles = write_tile_folder(tmp_path / "tiles", LAT0, LON0, 18, radius_tiles=2, seed=1)
    enu = LocalEnu(LAT0, LON0)
    true_e, true_n, yaw_true = 3.0, 2.0, -0.7
    lat, lon = (float(v) for v in enu.inverse(true_e, true_n))

    class LowWeights(CameraCentredRelativeMatcher):
        def match(self, *args, **kwargs):
            c = super().match(*args, **kwargs)
            return Correspondences(c.src_xy_m, c.dst_xy_m, c.weight * 0.05, scale_known=False)

    class SparseLike(LowWeights):
        keypoint_weights = True

    cfg = LocalizerConfig(patch_size_px=128, patch_m_per_px=0.5, datum_lat_deg=LAT0, datum_lon_deg=LON0,
                          map_projection="enu", depth_kind="relative")
    assert cfg.sparse_min_weight == 0.0 and cfg.min_weight == 0.5
    T_cam = T_base_camera_from_xyz_rpy(1.5, 0.4, 1.6, 0.0, 0.1, 0.0)
    results = {}
    for name, cls in (("sparse", SparseLike), ("dense", LowWeights)):
        with TileCache(f"file://{tiles}/{{z}}/{{x}}/{{y}}.png", tmp_path / f"cache_{name}",
                       TileCacheConfig(zoom=18)) as cache:
            loc = Localizer(cfg, cls((lat, lon, yaw_true), scale=0.5, seed=2), cache)
            loc.add_fix(FixSample(NS_PER_S, lat, lon, 40.0, np.eye(2) * 9.0))
            frame = Frame(NS_PER_S, np.zeros((48, 64, 3), np.uint8), PinholeCamera.from_intrinsics(
                64, 48, 50.0, 50.0, 31.5, 23.5), T_cam, np.full((48, 64), 3.0, np.float32))
            results[name] = loc.step(frame)
    assert results["sparse"].ok, results["sparse"].detail
    est = results["sparse"].estimate
    assert math.hypot(est.T_map_base.x_m - true_e, est.T_map_base.y_m - true_n) < 0.1
    assert not results["dense"].ok and results["dense"].reason == "too_few_matches"
