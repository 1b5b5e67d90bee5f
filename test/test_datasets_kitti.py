"""KITTI cross-view (Shi & Li layout) loader on fixture trees built in tmp_path."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from xview_localizer.core.errors import ConfigError, DatasetError
from xview_localizer.core.geo import LocalEnu
from xview_localizer.train.datasets.kitti import (
    SAT_M_PER_PX,
    KittiConfig,
    KittiCrossView,
)

DATE = "2011_09_26"
DRIVE = "2011_09_26_drive_0001_sync"
P_RECT_02 = [721.5377, 0.0, 609.5593, 44.85728, 0.0, 721.5377, 172.854, 0.2163791, 0.0, 0.0, 1.0, 0.002745884]
LAT, LON = 49.015, 8.43
RED = (255, 0, 0)
GREEN = (0, 255, 0)
MARK_UV = (300, 200)  # green marker pixel in the 512^2 satellite image


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def make_kitti_tree(root: Path, frames: int = 3, yaw_rad: float = 0.7) -> list[str]:
    rng = np.random.default_rng(0)
    date_dir = root / "raw_data" / DATE
    date_dir.mkdir(parents=True)
    (date_dir / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\n"
        "S_rect_02: 1.242000e+03 3.750000e+02\n"
        "P_rect_02: " + " ".join(f"{v:e}" for v in P_RECT_02) + "\n"
    )
    names = []
    for i in range(frames):
        frame = f"{i:010d}"
        img = rng.integers(0, 255, (375, 1242, 3), dtype=np.uint8)
        _write_rgb(date_dir / DRIVE / "image_02" / "data" / f"{frame}.png", img)
        oxts = [LAT + 1e-5 * i, LON, 110.0, 0.01, -0.02, yaw_rad] + [0.0] * 24
        p = date_dir / DRIVE / "oxts" / "data" / f"{frame}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(" ".join(repr(v) for v in oxts) + "\n")
        sat = np.full((512, 512, 3), 90, np.uint8)
        sat[255:257, 255:257] = RED  # centroid (255.5, 255.5) = the GPS position
        sat[MARK_UV[1], MARK_UV[0]] = GREEN
        _write_rgb(root / "satmap" / DATE / DRIVE / f"{frame}.png", sat)
        names.append(f"{DATE}/{DRIVE}/{frame}.png")
    (root / "train_files.txt").write_text("\n".join(names) + "\n")
    (root / "test1_files.txt").write_text(f"{names[0]} 0.3 -0.2 0.5\n{names[-1]} -1.0 1.0 -1\n")
    (root / "test2_files.txt").write_text(f"{names[-1]} 0.0 0.0 0.0\n")
    return names


def _centroid(img: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Weighted centroid (u, v) of a pure-colour marker on grey: the weight
    ``(c - max(other channels)) / 255`` is linear in the bilinear coverage of the marker."""
    ch = int(np.argmax(colour))
    f = img.astype(float)
    others = np.delete(f, ch, axis=2).max(axis=2)
    w = np.clip((f[:, :, ch] - others) / 255.0, 0, None)
    vv, uu = np.nonzero(w > 1e-3)
    ww = w[vv, uu]
    return np.array([np.sum(uu * ww), np.sum(vv * ww)]) / np.sum(ww)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitti")
    make_kitti_tree(root)
    return root


def test_splits_and_sizes(tree):
    assert len(KittiCrossView(tree, "train")) == 3
    assert len(KittiCrossView(tree, "test1")) == 2
    assert len(KittiCrossView(tree, "test2")) == 1
    s = KittiCrossView(tree, "test2")[0]
    assert s.ground_rgb.shape == (256, 1024, 3) and s.ground_rgb.dtype == np.uint8
    assert s.sat_rgb.shape == (512, 512, 3)
    assert s.depth_m.shape == (256, 1024) and not s.depth_m.any()
    assert s.id == f"{DATE}/{DRIVE}/0000000002"
    assert s.sat_m_per_px == pytest.approx(0.1958, abs=1e-4)


def test_intrinsics_rescaled_to_1024x256(tree):
    s = KittiCrossView(tree, "test1")[0]
    sx, sy = 1024 / 1242, 256 / 375
    np.testing.assert_allclose(s.K[0, 0], 721.5377 * sx)
    np.testing.assert_allclose(s.K[1, 1], 721.5377 * sy)
    np.testing.assert_allclose(s.K[0, 2], (609.5593 + 0.5) * sx - 0.5)
    np.testing.assert_allclose(s.K[1, 2], (172.854 + 0.5) * sy - 0.5)
    assert s.camera.width_px == 1024 and s.camera.height_px == 256


def test_extrinsics_gps_to_camera_shift_and_height(tree):
    T = KittiCrossView(tree, "test1")[0].T_base_camera
    np.testing.assert_allclose(T[:3, 3], [1.08, -0.26, 1.65])
    np.testing.assert_allclose(T[:3, 2], [1, 0, 0], atol=1e-12)  # optical z = forward


@pytest.mark.parametrize("index", [0, 1])
def test_marker_is_where_the_label_says(tree, index):
    """The GPS position (red, the satmap centre) and a green marker at a known ENU offset land
    where T_patch_base and the patch georeference put them, after the test-line shift."""
    ds = KittiCrossView(tree, "test1")
    s = ds[index]
    x, y, th = ds.shift(index)
    np.testing.assert_allclose(s.T_patch_base[:2], [20.0 * x, 20.0 * y])
    g = s.georef
    uv_gps = g.enu_to_px(s.T_patch_base[:2][None])[0]
    np.testing.assert_allclose(_centroid(s.sat_rgb, RED), uv_gps, atol=0.05)
    mark_enu = np.array([(MARK_UV[0] - 255.5), (255.5 - MARK_UV[1])]) * SAT_M_PER_PX
    uv_mark = g.enu_to_px((s.T_patch_base[:2] + mark_enu)[None])[0]
    np.testing.assert_allclose(_centroid(s.sat_rgb, GREEN), uv_mark, atol=0.05)
    # patch centre + T_patch_base == the OXTS position
    e, n = LocalEnu(s.sat_center_lat_deg, s.sat_center_lon_deg).forward(s.gt_lat_deg, s.gt_lon_deg)
    np.testing.assert_allclose([e, n], s.T_patch_base[:2], atol=1e-3)
    assert s.gt_lat_deg == pytest.approx(LAT + 1e-5 * (0 if index == 0 else 2))


def test_heading_field_5_and_yaw_prior(tree):
    ds = KittiCrossView(tree, "test1")
    s = ds[0]
    assert s.T_patch_base[2] == pytest.approx(0.7)
    assert s.prior_yaw_rad == pytest.approx(0.7 + math.radians(0.5 * 10.0))
    assert ds[1].prior_yaw_rad == pytest.approx(0.7 - math.radians(10.0))
    np.testing.assert_allclose(ds[1].T_patch_base[:2], [-20.0, 20.0])


def test_train_perturbation_seeded_and_in_range(tree):
    a = KittiCrossView(tree, "train", KittiConfig(seed=3))
    b = KittiCrossView(tree, "train", KittiConfig(seed=3))
    c = KittiCrossView(tree, "train", KittiConfig(seed=4))
    assert [a.shift(i) for i in range(3)] == [b.shift(i) for i in range(3)]
    assert a.shift(0) != c.shift(0)
    for i in range(3):
        s = a[i]
        assert np.all(np.abs(s.T_patch_base[:2]) <= 20.0)
        assert abs(math.remainder(s.prior_yaw_rad - s.T_patch_base[2], 2 * math.pi)) <= math.radians(10) + 1e-9


def test_malformed_trees(tmp_path):
    root = tmp_path / "k"
    names = make_kitti_tree(root, frames=2)
    split = root / "test1_files.txt"
    split.write_text(f"{names[0]} 0.1 0.2 0.3\n{names[1]} 0.1 zz 0.3\n")
    with pytest.raises(DatasetError, match=r"test1_files.txt:2: y 'zz' is not a number"):
        KittiCrossView(root, "test1")
    split.write_text(f"{names[0]} 0.1 1.5 0.3\n")
    with pytest.raises(DatasetError, match=r"test1_files.txt:1: .*\[-1, 1\]"):
        KittiCrossView(root, "test1")
    split.write_text(f"\n{names[0]} 0.1\n")
    with pytest.raises(DatasetError, match=r"test1_files.txt:2: test lines need 4 fields"):
        KittiCrossView(root, "test1")
    split.write_text("2011_09_26/x/12.png 0 0 0\n")
    with pytest.raises(DatasetError, match=r"test1_files.txt:1: .*not <date>/<drive>"):
        KittiCrossView(root, "test1")
    (root / "satmap" / DATE / DRIVE / "0000000001.png").unlink()
    with pytest.raises(DatasetError, match=r"train_files.txt:2: .*satmap.*0000000001.png is missing"):
        KittiCrossView(root, "train")
    (root / "test2_files.txt").unlink()
    with pytest.raises(DatasetError, match=r"test2_files.txt: split file missing"):
        KittiCrossView(root, "test2")
    with pytest.raises(ConfigError, match="split"):
        KittiCrossView(root, "val")


def test_malformed_oxts_and_calib(tmp_path):
    root = tmp_path / "k"
    make_kitti_tree(root, frames=1)
    oxts = root / "raw_data" / DATE / DRIVE / "oxts" / "data" / "0000000000.txt"
    oxts.write_text("49.0 8.4 100 0 0\n")
    ds = KittiCrossView(root, "test2")
    with pytest.raises(DatasetError, match=r"0000000000.txt:1: expected at least 6 fields"):
        ds[0]
    calib = root / "raw_data" / DATE / "calib_cam_to_cam.txt"
    calib.write_text("S_rect_02: 1242 375\nP_rect_02: 1 2 3\n")
    with pytest.raises(DatasetError, match=r"calib_cam_to_cam.txt:2: P_rect_02 needs 12 numbers"):
        KittiCrossView(root, "test2")


def test_config_validation():
    with pytest.raises(ConfigError, match="ground_width_px"):
        KittiConfig(ground_width_px=0)
    with pytest.raises(ConfigError, match="yaw_range_deg"):
        KittiConfig(yaw_range_deg=200.0)


def test_open_dataset_and_info_cli(tree, capsys):
    import argparse

    from xview_localizer.train import dataset_cli
    from xview_localizer.train.datasets import open_dataset

    ds = open_dataset(f"kitti:{tree}", split="test2", area=None)
    assert isinstance(ds, KittiCrossView) and len(ds) == 1
    assert len(open_dataset(f"kitti:{tree}")) == 2  # default split: test1
    with pytest.raises(ConfigError, match="unknown options"):
        open_dataset(f"kitti:{tree}", area="same")
    with pytest.raises(DatasetError, match="not a directory"):
        open_dataset(f"kitti:{tree}/nope")
    parser = argparse.ArgumentParser()
    dataset_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dataset", "info", f"kitti:{tree}", "--split", "test1"])
    assert args.handler(args) == 0
    assert "2 samples (KittiCrossView)" in capsys.readouterr().out


def test_evaluate_cli_on_kitti_split(tree, tmp_path, capsys):
    """`xview-localizer evaluate --dataset kitti:PATH --split test1` runs a (random-weight, tiny)
    checkpoint on the fixture tree and prints the paper's columns with the prior beside them."""
    import json

    import torch

    from xview_localizer.cli import main
    from xview_localizer.matcher.checkpoint import save_checkpoint
    from xview_localizer.matcher.dense_flow import DenseFlowMatcher, preset
    from xview_localizer.train.datasets import open_dataset

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", DenseFlowMatcher(preset("compact", iters=1)))
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--dataset", f"kitti:{tree}", "--split", "test1",
               "--device", "cpu", "--batch-size", "1", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "prior" in text
    result = json.loads(out.read_text())
    n = len(open_dataset(f"kitti:{tree}", split="test1"))
    assert result["model"]["n_samples"] == result["prior"]["n_samples"] == n
    # The prior baseline is the test-line offset itself: finite and within the +-20 m box.
    assert 0.0 <= result["prior"]["xy_err_mean_m"] <= 20.0 * 2**0.5


def test_train_cli_on_kitti_split_with_validation(tree, tmp_path):
    """`train --dataset kitti:PATH --split train --val-dataset kitti:PATH --val-split test1`:
    one optimizer step on the fixture tree, validation on test1 stored in the checkpoint."""
    import torch

    from xview_localizer.cli import main
    from xview_localizer.train.datasets import open_dataset

    out = tmp_path / "run"
    rc = main(["train", "--dataset", f"kitti:{tree}", "--split", "train", "--val-dataset", f"kitti:{tree}",
               "--val-split", "test1", "--out", str(out), "--steps", "1", "--batch-size", "1",
               "--device", "cpu", "--no-progress", "--model-json", '{"iters": 1}'])
    assert rc == 0
    ckpt = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert ckpt["train_args"]["dataset_opts"] == {"split": "train"}
    assert ckpt["train_args"]["val_dataset_opts"] == {"split": "test1"}
    assert ckpt["metrics"]["val"]["model"]["n_samples"] == len(open_dataset(f"kitti:{tree}", split="test1"))
