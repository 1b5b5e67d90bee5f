"""VIGOR loader on fixture trees in the released layout (small images for speed)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from xview_localizer.core.camera_pano import EquirectangularCamera
from xview_localizer.core.errors import ConfigError, DatasetError
from xview_localizer.core.geo import LocalEnu
from xview_localizer.train.datasets.vigor import VIGOR_CITIES, VIGOR_M_PER_PX, Vigor, VigorConfig

PANO_W, PANO_H = 256, 128
RED = (255, 0, 0)
GREEN = (0, 255, 0)
DROW, DCOL = -60.5, 40.5  # label (col, row) = (320 - 40.5, 320 - 60.5) -> pixel (279, 259)
MARK_UV = (279, 259)


def _write(path: Path, rgb: np.ndarray) -> None:
    """Lossless PNG bytes whatever the extension (cv2.imread decodes by content), so the
    markers keep their exact colours in the ``.jpg`` panoramas too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    path.write_bytes(buf.tobytes())


def _line(pano: str, sat: str, drow: float, dcol: float) -> str:
    semis = " ".join(f"{sat} 0.0 0.0" for _ in range(3))
    return f"{pano} {sat} {drow} {dcol} {semis}\n"


def make_vigor_tree(root: Path) -> None:
    rng = np.random.default_rng(1)
    for ci, city in enumerate(VIGOR_CITIES):
        lat, lon = 40.0 + ci, -80.0 + ci
        sat_name = f"satellite_{lat:.6f}_{lon:.6f}.png"
        sat = np.full((640, 640, 3), 90, np.uint8)
        sat[MARK_UV[1], MARK_UV[0]] = RED
        _write(root / city / "satellite" / sat_name, sat)
        panos = []
        for k in range(3):
            name = f"pano{ci}{k},{lat + 1e-4:.6f},{lon:.6f},.jpg"
            img = rng.integers(0, 255, (PANO_H, PANO_W, 3), dtype=np.uint8)
            img[:, PANO_W // 2 - 1:PANO_W // 2 + 1] = GREEN  # centre column (north) marked
            _write(root / city / "panorama" / name, img)
            panos.append(name)
        for d, drow, dcol, suffix in (("splits", 0.0, 0.0, ""), ("splits__corrected", DROW, DCOL, "__corrected")):
            sd = root / d / city
            sd.mkdir(parents=True, exist_ok=True)
            (sd / f"same_area_balanced_train{suffix}.txt").write_text(_line(panos[0], sat_name, drow, dcol))
            (sd / f"same_area_balanced_test{suffix}.txt").write_text(
                _line(panos[1], sat_name, drow, dcol) + _line(panos[2], sat_name, drow, dcol))
            (sd / f"pano_label_balanced{suffix}.txt").write_text(
                "".join(_line(p, sat_name, drow, dcol) for p in panos))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vigor")
    make_vigor_tree(root)
    return root


def test_same_and_cross_area_splits(tree):
    assert len(Vigor(tree, "train", VigorConfig(area="same"))) == 4
    assert len(Vigor(tree, "test", VigorConfig(area="same"))) == 8
    tr = Vigor(tree, "train", VigorConfig(area="cross"))
    te = Vigor(tree, "test", VigorConfig(area="cross"))
    assert tr.cities == ("NewYork", "Seattle") and len(tr) == 6
    assert te.cities == ("SanFrancisco", "Chicago") and len(te) == 6
    assert {e.city for e in te.entries} == {"SanFrancisco", "Chicago"}
    assert Vigor(tree, "test", VigorConfig(corrected=False)).split_path("Chicago") == (
        tree / "splits" / "Chicago" / "same_area_balanced_test.txt")
    assert Vigor(tree, "test").split_path("Chicago").name == "same_area_balanced_test__corrected.txt"


@pytest.mark.parametrize("city", VIGOR_CITIES)
def test_marker_is_where_the_label_says(tree, city):
    ds = Vigor(tree, "test", VigorConfig(area="same"), cities=(city,))
    s = ds[0]
    assert s.sat_rgb.shape == (640, 640, 3)
    assert s.sat_m_per_px == VIGOR_M_PER_PX[city]
    np.testing.assert_allclose(s.T_patch_base[:2], [-DCOL * s.sat_m_per_px, -DROW * s.sat_m_per_px])
    uv = s.georef.enu_to_px(s.T_patch_base[:2][None])[0]
    np.testing.assert_allclose(uv, MARK_UV, atol=1e-9)
    assert tuple(s.sat_rgb[MARK_UV[1], MARK_UV[0]]) == RED
    e, n = LocalEnu(s.sat_center_lat_deg, s.sat_center_lon_deg).forward(s.gt_lat_deg, s.gt_lon_deg)
    np.testing.assert_allclose([e, n], s.T_patch_base[:2], atol=1e-3)


def test_uncorrected_labels_differ(tree):
    s = Vigor(tree, "test", VigorConfig(corrected=False), cities=("Seattle",))[0]
    np.testing.assert_allclose(s.T_patch_base[:2], [0.0, 0.0])
    assert s.georef.enu_to_px(np.zeros((1, 2)))[0].tolist() == [319.5, 319.5]


def _north_u(s) -> float:
    """Panorama column where the camera sees due north, from the pose and the pano model."""
    cam = s.camera
    assert isinstance(cam, EquirectangularCamera)
    a = math.pi / 2 - s.T_patch_base[2]  # north, counter-clockwise from base forward
    p_base = np.array([[10 * math.cos(a), 10 * math.sin(a), 0.0]])
    T = s.T_base_camera
    p_cam = (p_base - T[:3, 3]) @ T[:3, :3]
    uv, ok = cam.project(p_cam)
    assert ok.all()
    return float(uv[0, 0])


def _stripe_u(img: np.ndarray) -> float:
    cols = np.flatnonzero(np.all(img == GREEN, axis=-1).all(axis=0))
    if cols.max() - cols.min() > 2:  # wrapped across the seam
        cols = np.where(cols < PANO_W // 2, cols + PANO_W, cols)
    return float(cols.mean()) % PANO_W


def test_known_orientation_north_at_centre(tree):
    s = Vigor(tree, "test", VigorConfig(orientation="known"))[0]
    assert s.T_patch_base[2] == pytest.approx(math.pi / 2) and s.prior_yaw_rad == pytest.approx(math.pi / 2)
    assert _stripe_u(s.ground_rgb) == pytest.approx((PANO_W - 1) / 2)
    assert _north_u(s) == pytest.approx(_stripe_u(s.ground_rgb), abs=1e-6)
    np.testing.assert_allclose(s.K, EquirectangularCamera(PANO_W, PANO_H).K)


def test_unknown_orientation_roll_matches_yaw(tree):
    ds = Vigor(tree, "test", VigorConfig(orientation="unknown", seed=5))
    rolls = [ds.roll_px(i, PANO_W) for i in range(len(ds))]
    assert len(set(rolls)) > 1
    for i in range(len(ds)):
        s = ds[i]
        assert s.prior_yaw_rad == pytest.approx(math.pi / 2)
        du = (_north_u(s) - _stripe_u(s.ground_rgb) + PANO_W / 2) % PANO_W - PANO_W / 2
        assert abs(du) < 1e-6


def test_resize_option(tree):
    s = Vigor(tree, "test", VigorConfig(ground_width_px=128, ground_height_px=64))[0]
    assert s.ground_rgb.shape == (64, 128, 3)
    assert s.camera.width_px == 128


def test_malformed_trees(tmp_path):
    root = tmp_path / "v"
    make_vigor_tree(root)
    f = root / "splits__corrected" / "Chicago" / "same_area_balanced_test__corrected.txt"
    good = f.read_text().splitlines(keepends=True)
    f.write_text(good[0] + "a b c\n")
    with pytest.raises(DatasetError, match=r"same_area_balanced_test__corrected.txt:2: expected 13 fields"):
        Vigor(root, "test")
    f.write_text(good[0] + good[1].replace(f" {DROW} ", " x1 ", 1))
    with pytest.raises(DatasetError, match=r"__corrected.txt:2: drow 'x1' is not a number"):
        Vigor(root, "test")
    f.write_text("nocommas.jpg " + good[0].split(" ", 1)[1])
    with pytest.raises(DatasetError, match=r"__corrected.txt:1: 'nocommas.jpg' is not a panorama name"):
        Vigor(root, "test")
    f.write_text("".join(good))
    next((root / "Chicago" / "satellite").iterdir()).unlink()
    with pytest.raises(DatasetError, match=r"__corrected.txt:1: .*Chicago/satellite/satellite_.*png is missing"):
        Vigor(root, "test")
    (root / "splits__corrected" / "Seattle" / "same_area_balanced_train__corrected.txt").unlink()
    with pytest.raises(DatasetError, match=r"Seattle/same_area_balanced_train__corrected.txt: split file missing"):
        Vigor(root, "train")


def test_config_validation(tree):
    with pytest.raises(ConfigError, match="area"):
        VigorConfig(area="both")
    with pytest.raises(ConfigError, match="orientation"):
        VigorConfig(orientation="maybe")
    with pytest.raises(ConfigError, match="city"):
        Vigor(tree, "test", cities=("Boston",))


def test_open_dataset(tree):
    from xview_localizer.train.datasets import open_dataset

    ds = open_dataset(f"vigor:{tree}", split="test", area="cross", orientation="unknown", seed=None)
    assert isinstance(ds, Vigor) and ds.cities == ("SanFrancisco", "Chicago") and ds.cfg.orientation == "unknown"
    assert len(open_dataset(f"vigor:{tree}")) == 8
    with pytest.raises(ConfigError, match="unknown options"):
        open_dataset(f"vigor:{tree}", offset_range_m=3.0)


def test_evaluate_cli_on_vigor_panoramas(tree, tmp_path, capsys):
    """`evaluate --dataset vigor:PATH --area same --orientation unknown`: panoramas go through the
    dense-flow model's BEV projection (equirectangular camera) and come out as metrics."""
    import json

    import torch

    from xview_localizer.cli import main
    from xview_localizer.matcher.checkpoint import save_checkpoint
    from xview_localizer.matcher.dense_flow import DenseFlowMatcher, preset
    from xview_localizer.train.datasets import open_dataset

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", DenseFlowMatcher(preset("compact", iters=1)))
    out = tmp_path / "eval.json"
    rc = main(["evaluate", "--checkpoint", str(ckpt), "--dataset", f"vigor:{tree}", "--area", "same",
               "--orientation", "unknown", "--device", "cpu", "--batch-size", "1", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    n = len(open_dataset(f"vigor:{tree}", area="same", orientation="unknown"))
    assert n > 0 and result["model"]["n_samples"] == n
    assert all(math.isfinite(v) for v in result["model"].values() if isinstance(v, float))
