"""Tests of the dense-flow training code: metrics, losses, trainer (resume, CSV, checkpoints),
2-process DDP through torchrun, the pair-directory adapter and the evaluate CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from xview_localizer.cli import main as cli_main
from xview_localizer.core.errors import ConfigError, DatasetError, GeometryError
from xview_localizer.matcher.checkpoint import load_model
from xview_localizer.matcher.dense_flow import gt_flow_from_pose, preset
from xview_localizer.train.losses import (
    LossConfig,
    confidence_loss,
    correlation_loss,
    matching_loss,
    position_loss,
)
from xview_localizer.train.metrics import (
    evaluate_with_baseline,
    format_table,
    localization_metrics,
    pose_errors,
)
from xview_localizer.train.trainer import TrainConfig, lr_at, open_dataset, train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(
    ground_size_px=(32, 64), sat_size_px=64, feature_stride=8, encoder_widths=(8, 16, 16),
    blocks_per_stage=1, feature_dim=16, hidden_dim=16, context_dim=16, corr_levels=3,
    corr_radius=2, iters=2,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- metrics
def test_lateral_and_longitudinal_are_relative_to_the_true_heading():
    # true heading north; the estimate is 1 m east (= 1 m to the right: lateral) and 3 m north
    e = pose_errors([[1.0, 3.0, math.pi / 2 + math.radians(2.0)]], [[0.0, 0.0, math.pi / 2]])
    assert e["lateral_m"][0] == pytest.approx(1.0)
    assert e["longitudinal_m"][0] == pytest.approx(3.0)
    assert e["xy_m"][0] == pytest.approx(math.sqrt(10.0))
    assert e["yaw_deg"][0] == pytest.approx(2.0)
    # yaw error wraps across +-pi
    e = pose_errors([[0.0, 0.0, math.pi - 0.01]], [[0.0, 0.0, -math.pi + 0.01]])
    assert e["yaw_deg"][0] == pytest.approx(math.degrees(0.02))


def test_metrics_on_a_hand_made_example():
    gt = np.zeros((4, 3))  # heading east: longitudinal = x, lateral = y
    pred = np.array([[0.5, 0.0, 0.0], [0.0, 2.0, math.radians(0.5)], [6.0, 0.0, math.radians(3.0)],
                     [3.0, 4.0, math.radians(10.0)]])
    m = localization_metrics(pred, gt)
    assert m["n_samples"] == 4
    assert m["xy_err_mean_m"] == pytest.approx((0.5 + 2.0 + 6.0 + 5.0) / 4)
    assert m["xy_err_median_m"] == pytest.approx((2.0 + 5.0) / 2)
    assert m["xy_recall_1m"] == 0.25 and m["xy_recall_5m"] == 0.75
    assert m["longitudinal_recall_1m"] == 0.5 and m["longitudinal_recall_5m"] == 0.75  # 0.5, 0, 6, 3
    assert m["lateral_recall_1m"] == 0.5 and m["lateral_recall_5m"] == 1.0  # 0, 2, 0, 4
    assert m["yaw_err_median_deg"] == pytest.approx(1.75)
    assert m["yaw_recall_1deg"] == 0.5 and m["yaw_recall_5deg"] == 0.75
    with pytest.raises(GeometryError, match="shape"):
        localization_metrics(pred[:, :2], gt)
    with pytest.raises(GeometryError, match="non-finite"):
        localization_metrics(np.full((1, 3), np.nan), gt[:1])


def test_prior_baseline_is_the_patch_centre_with_the_prior_yaw():
    gt = np.array([[3.0, 4.0, 0.1], [0.0, -1.0, 0.0]])
    res = evaluate_with_baseline(gt, gt, prior_yaw_rad=[0.1 + math.radians(4.0), 0.0])
    assert res["model"]["xy_err_mean_m"] == 0.0
    assert res["prior"]["xy_err_mean_m"] == pytest.approx(3.0)
    assert res["prior"]["yaw_err_mean_deg"] == pytest.approx(2.0)
    table = format_table(res)
    assert "xy_err_median_m" in table and "prior" in table and "%" in table


# ----------------------------------------------------------------------------- losses
def test_losses_on_hand_made_inputs():
    gt_pose = torch.tensor([[2.0, -1.0, 0.3]])
    prior = torch.tensor([0.25])
    m_cell = torch.tensor([1.6])
    flow_gt = gt_flow_from_pose(gt_pose, prior, m_cell, 8)
    valid = torch.ones(1, 8, 8)
    assert float(matching_loss(flow_gt, flow_gt, valid)) == 0.0
    shifted = flow_gt + torch.tensor([0.5, -0.25]).view(1, 2, 1, 1)
    assert float(matching_loss(shifted, flow_gt, valid)) == pytest.approx(0.75)
    # half the cells badly wrong: confidence 1 on the good ones and 0 on the bad ones is optimal
    bad = flow_gt.clone()
    bad[..., :4] += 5.0
    good_mask = torch.zeros(1, 8, 8)
    good_mask[..., 4:] = 1.0
    right = confidence_loss(good_mask, bad, flow_gt, valid, kappa=20.0)
    wrong = confidence_loss(1.0 - good_mask, bad, flow_gt, valid, kappa=20.0)
    assert float(right) == pytest.approx(0.0, abs=1e-6) and float(wrong) > 0.0
    pose = torch.tensor([[2.5, -1.0, 0.3 + math.radians(2.0)]])
    assert float(position_loss(pose, gt_pose)) == pytest.approx(2.0 + 0.5, rel=1e-4)
    cfg = LossConfig()
    assert (cfg.beta(0), cfg.beta(15), cfg.kappa(14), cfg.kappa(15)) == (1.0, 10.0, 200.0, 20.0)
    with pytest.raises(ConfigError, match="gamma"):
        LossConfig(gamma=0.0)


def test_correlation_loss_prefers_the_true_cell_and_skips_outside_truth():
    cells = 8
    flow_gt = torch.zeros(1, 2, cells, cells)
    flow_gt[:, 0] = 1.25  # every BEV cell's truth is 1.25 cells east of itself
    valid = torch.ones(1, cells, cells)
    n = cells * cells
    peaked = torch.full((1, n, cells, cells), -20.0)
    for i in range(cells):
        for j in range(cells):
            if j + 1 < cells:
                peaked[0, i * cells + j, i, j + 1] = 20.0  # the nearest neighbour of the truth
    flat = torch.zeros(1, n, cells, cells)
    loss_peaked = correlation_loss(peaked, flow_gt, valid)
    loss_flat = correlation_loss(flat, flow_gt, valid)
    assert float(loss_flat) == pytest.approx(math.log(n), rel=1e-5)
    # bilinear target 0.75 / 0.25 on cells j+1 / j+2: the peaked rows pay 0.25 * 40 nats
    assert float(loss_peaked) == pytest.approx(0.25 * 40.0, rel=1e-3)
    # truth outside the patch (last column shifted east of the edge) is not counted
    far = flow_gt.clone()
    far[:, 0] = 100.0
    assert float(correlation_loss(flat, far, valid)) == 0.0
    logits = flat.clone().requires_grad_(True)
    correlation_loss(logits, flow_gt, valid).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="corr_weight"):
        LossConfig(corr_weight=-1.0)


def test_lr_schedule_warms_up_and_decays():
    lrs = [lr_at(s, 100, 1e-3) for s in range(100)]
    assert lrs[0] < lrs[4] == pytest.approx(1e-3) and lrs[-1] < 0.1e-3 and min(lrs) > 0


# ----------------------------------------------------------------------------- trainer
def _read_csv(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_train_writes_checkpoints_and_log_and_resumes(tmp_path):
    out = tmp_path / "run"
    tc = TrainConfig(dataset="synthetic:4", out_dir=str(out), model_overrides=TINY, steps=2, batch_size=2,
                     log_every=1, save_every=1, progress=False)
    m = train(tc, device="cpu")
    assert m["steps"] == 2 and math.isfinite(m["final_loss"])
    assert (out / "last.pt").is_file() and (out / "model.pt").is_file()
    rows = _read_csv(out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2]
    model, blob = load_model(out / "model.pt")
    assert blob["step"] == 2 and blob["train_args"]["dataset"] == "synthetic:4"
    assert model.cfg.feature_dim == 16
    # resume to 4 steps: continues from step 2, appends to the log
    tc2 = TrainConfig(dataset="synthetic:4", out_dir=str(out), model_overrides=TINY, steps=4, batch_size=2,
                      log_every=1, save_every=1, resume=True, progress=False, val_dataset="synthetic:2:7")
    m2 = train(tc2, device="cpu")
    assert m2["steps"] == 4
    assert [int(r["step"]) for r in _read_csv(out / "train_log.csv")] == [1, 2, 3, 4]
    assert set(m2["val"]) == {"model", "prior"} and m2["val"]["model"]["n_samples"] == 2
    _, blob2 = load_model(out / "model.pt")
    assert blob2["metrics"]["val"]["prior"]["n_samples"] == 2


def test_train_config_and_dataset_errors(tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(dataset="synthetic:4", out_dir=str(tmp_path), batch_size=0)
    with pytest.raises(ConfigError, match="unknown dense-flow preset"):
        TrainConfig(dataset="synthetic:4", out_dir=str(tmp_path), preset="huge")
    with pytest.raises(DatasetError, match="not a directory"):
        open_dataset(str(tmp_path / "nope"), preset("compact"))
    with pytest.raises(DatasetError, match="synthetic:N"):
        open_dataset("synthetic:x", preset("compact"))


@pytest.mark.slow
def test_ddp_two_cpu_processes_via_torchrun(tmp_path, free_port):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port), "-m", "xview_localizer.cli", "train", "--dataset", "synthetic:8",
        "--out", str(out), "--steps", "2", "--batch-size", "2", "--device", "cpu", "--no-progress",
        "--model-json", json.dumps(TINY),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["steps"] == 2 and r["samples_seen"] == 4 for r in ranks)
    model, blob = load_model(out / "model.pt")
    assert blob["step"] == 2 and model.cfg.iters == TINY["iters"]


# ----------------------------------------------------------------------------- pairs + CLI
def _write_pairs(root: Path, n: int = 2) -> Path:
    """A tiny xview-pairs/1 directory: flat grey ground image, random satellite patch."""
    import cv2

    from xview_localizer.core.camera import PinholeCamera, kitti_like_T_base_camera

    rng = np.random.default_rng(0)
    cam = PinholeCamera.kitti_like(256, 80)
    T = kitti_like_T_base_camera()
    for sub in ("ground", "depth", "sat"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        cv2.imwrite(str(root / "ground" / f"{i}.png"), rng.integers(0, 255, (80, 256, 3), dtype=np.uint8))
        cv2.imwrite(str(root / "depth" / f"{i}.png"), np.zeros((80, 256), np.uint16))
        cv2.imwrite(str(root / "sat" / f"{i}.png"), rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
        recs.append({
            "id": str(i), "world_seed": 1, "ground": f"ground/{i}.png", "depth": f"depth/{i}.png",
            "sat": f"sat/{i}.png", "K": list(cam.K.reshape(-1)), "width_px": 256, "height_px": 80,
            "T_base_camera": list(T.reshape(-1)), "sat_m_per_px": 0.4, "sat_center_lat_deg": 49.0,
            "sat_center_lon_deg": 8.4, "T_patch_base": [1.0, -2.0, 0.5], "prior_yaw_rad": 0.45,
            "gt_lat_deg": 49.0, "gt_lon_deg": 8.4,
        })
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (root / "meta.json").write_text(json.dumps({
        "format": "xview-pairs/1", "count": n, "worlds": [1], "offset_range_m": 20.0, "yaw_range_deg": 10.0,
        "sat_size_px": 128, "sat_m_per_px": 0.4, "ground_width_px": 256, "ground_height_px": 80}))
    return root


def test_pair_directory_adapter_and_evaluate_cli(tmp_path, capsys):
    pairs = _write_pairs(tmp_path / "pairs")
    cfg = preset("compact", **TINY)
    ds = open_dataset(str(pairs), cfg)
    s = ds[0]
    assert s["ground_rgb"].shape == (3, 32, 64) and s["sat_rgb"].shape == (3, 64, 64)
    assert float(s["sat_m_per_px"]) == pytest.approx(0.8)  # 128 px at 0.4 m -> 64 px at 0.8 m
    assert s["bev_grid"].shape == (8, 8, 2) and 0 < float(s["bev_valid"].mean()) < 1
    torch.testing.assert_close(s["T_patch_base"], torch.tensor([1.0, -2.0, 0.5]))
    out = tmp_path / "run"
    train(TrainConfig(dataset=str(pairs), out_dir=str(out), model_overrides=TINY, steps=1, batch_size=2,
                      progress=False), device="cpu")
    report = tmp_path / "eval.json"
    rc = cli_main(["evaluate", "--checkpoint", str(out / "model.pt"), "--dataset", str(pairs), "--out", str(report)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "xy_err_median_m" in printed and "prior" in printed
    res = json.loads(report.read_text())
    assert res["model"]["n_samples"] == 2
    assert res["prior"]["xy_err_mean_m"] == pytest.approx(math.hypot(1.0, 2.0))
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--dataset", str(pairs)]) == 1
