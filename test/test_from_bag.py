"""``dataset from-bag``: xview-pairs/1 export from a real synthetic rosbag2 (sim drive) with its
file:// tile pyramid."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from xview_localizer.core.errors import BagError, ConfigError
from xview_localizer.core.geo import LocalEnu
from xview_localizer.train.datasets import open_dataset
from xview_localizer.train.datasets.from_bag import FromBagConfig, export_pairs_from_bag
from xview_localizer.train.pairs import PairDataset

GT_TOPIC = "/ground_truth/pose"
NS = 1_000_000_000


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    from xview_localizer.sim.aerial import write_tile_pyramid
    from xview_localizer.sim.bag import BagConfig, read_sidecar, record_drive
    from xview_localizer.sim.drive import DriveConfig, GnssConfig, OdomConfig
    from xview_localizer.sim.world import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("from_bag")
    world = generate_world(WorldConfig(seed=3, size_m=300.0))
    world.save(root / "world")
    write_tile_pyramid(world, root / "world" / "tiles", zoom_max=18, zoom_min=18, mbtiles=False)
    bag = record_drive(root / "world", root / "drive", drive_config=DriveConfig(seconds=2.0, seed=2),
                       gnss_config=GnssConfig(seed=2), odom_config=OdomConfig(seed=2), bag_config=BagConfig(),
                       width_px=96, height_px=32, world=world, progress=False)
    side = read_sidecar(bag)
    return {"root": root, "bag": bag, "url": side["tile_url"], "side": side}


def _gt_and_images(bag: Path) -> tuple[dict, dict]:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    from xview_localizer.pipeline import messages as conv

    gt, imgs = {}, {}
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED)) as r:
        conns = [c for c in r.connections if c.topic in (GT_TOPIC, "/camera/image_raw")]
        for c, _t, raw in r.messages(connections=conns):
            m = r.deserialize(raw, c.msgtype)
            s = int(m.header.stamp.sec) * NS + int(m.header.stamp.nanosec)
            if c.topic == GT_TOPIC:
                q = m.pose.orientation
                gt[s] = (m.pose.position.x, m.pose.position.y,
                         math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z)))
            else:
                imgs[s] = conv.image_to_rgb8(m)
    return gt, imgs


def _cli(argv: list[str]) -> int:
    from xview_localizer.train import dataset_cli

    parser = argparse.ArgumentParser()
    dataset_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_export_via_cli_matches_the_bag(drive, tmp_path, capsys):
    out = tmp_path / "pairs"
    rc = _cli(["dataset", "from-bag", str(drive["bag"]), "--tiles", drive["url"], "--gt-topic", GT_TOPIC,
               "--out", str(out), "--stride", "4", "--offset-m", "6", "--yaw-range", "10", "--sat-size", "96",
               "--sat-m-per-px", "0.5", "--cache-dir", str(tmp_path / "cache"), "--seed", "1", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    ds = PairDataset(out)
    assert len(ds) == summary["count"] == 5  # 20 images, every 4th
    assert ds.meta["format"] == "xview-pairs/1" and ds.meta["topics"]["ground_truth"] == GT_TOPIC
    gt, imgs = _gt_and_images(drive["bag"])
    enu = LocalEnu(drive["side"]["datum"]["lat_deg"], drive["side"]["datum"]["lon_deg"])
    cam_K = np.asarray(drive["side"]["camera"]["k"], float).reshape(3, 3)
    T_bc = np.asarray(drive["side"]["camera"]["T_base_camera"], float)
    offsets = []
    for rec, s in zip(ds.records, ds):
        x, y, yaw = gt[rec["stamp_ns"]]
        np.testing.assert_array_equal(s.ground_rgb, imgs[rec["stamp_ns"]])
        np.testing.assert_allclose(s.K, cam_K)
        assert s.sat_rgb.shape == (96, 96, 3)
        # truth: patch centre + T_patch_base is the ground-truth position (through WGS84)
        e, n = LocalEnu(s.sat_center_lat_deg, s.sat_center_lon_deg).forward(*enu.inverse(x, y))
        np.testing.assert_allclose([e, n], s.T_patch_base[:2], atol=1e-6)
        assert abs(math.remainder(s.T_patch_base[2] - yaw, 2 * math.pi)) < 1e-3
        assert np.all(np.abs(s.T_patch_base[:2]) <= 6.0 + 1e-6)
        assert abs(math.remainder(s.prior_yaw_rad - s.T_patch_base[2], 2 * math.pi)) <= math.radians(10) + 1e-9
        np.testing.assert_allclose(s.T_base_camera, T_bc, atol=1e-9)  # from /tf_static
        offsets.append(s.T_patch_base[:2])
    assert np.std(np.asarray(offsets)) > 0.5  # perturbations actually drawn
    # the same pair directory opens through open_dataset
    assert len(open_dataset(str(out))) == 5


def test_export_is_deterministic_and_resizes(drive, tmp_path):
    def run(out: Path, seed: int) -> list[dict]:
        cfg = FromBagConfig(gt_topic=GT_TOPIC, stride=5, offset_range_m=4.0, sat_size_px=64, sat_m_per_px=0.5,
                            ground_width_px=48, ground_height_px=16, seed=seed, max_pairs=3, world_seed=7)
        export_pairs_from_bag(drive["bag"], out, drive["url"], cfg, cache_dir=tmp_path / "cache")
        return [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]

    a, b, c = run(tmp_path / "a", 3), run(tmp_path / "b", 3), run(tmp_path / "c", 4)
    assert a == b and len(a) == 3
    assert a[0]["T_patch_base"] != c[0]["T_patch_base"]
    s = PairDataset(tmp_path / "a")[0]
    assert s.ground_rgb.shape == (16, 48, 3) and s.world_seed == 7
    fx_full = float(drive["side"]["camera"]["k"][0])
    assert s.K[0, 0] == pytest.approx(0.5 * fx_full) and s.camera.width_px == 48


def test_errors_name_the_cause(drive, tmp_path):
    with pytest.raises(BagError, match=r"no ground-truth topic '/rtk/pose'.*/ground_truth/pose"):
        export_pairs_from_bag(drive["bag"], tmp_path / "x", drive["url"], FromBagConfig(gt_topic="/rtk/pose"))
    with pytest.raises(BagError, match=r"ground-truth topic '/gnss/fix' has type sensor_msgs/msg/NavSatFix"):
        export_pairs_from_bag(drive["bag"], tmp_path / "x", drive["url"], FromBagConfig(gt_topic="/gnss/fix"))
    with pytest.raises(BagError, match="no such bag"):
        export_pairs_from_bag(tmp_path / "nope", tmp_path / "x", drive["url"],
                              FromBagConfig(gt_topic=GT_TOPIC, datum_lat_deg=49.0, datum_lon_deg=8.0))
    with pytest.raises(ConfigError, match="gt_topic"):
        FromBagConfig(gt_topic="")
    with pytest.raises(ConfigError, match="datum"):
        FromBagConfig(gt_topic=GT_TOPIC, datum_lat_deg=49.0)
    with pytest.raises(ConfigError, match="yaw_range_deg"):
        FromBagConfig(gt_topic=GT_TOPIC, yaw_range_deg=181.0)


def test_fine_tune_on_exported_pairs(drive, tmp_path):
    """Train a tiny model (stand-in for the default checkpoint), then fine-tune it on the pairs
    exported from the bag with `train --init` (weights and preset from the checkpoint)."""
    import torch

    from xview_localizer.cli import main
    from xview_localizer.matcher.checkpoint import load_model
    from xview_localizer.train.trainer import TrainConfig, train

    tiny = dict(ground_size_px=(32, 64), sat_size_px=64, feature_stride=8, encoder_widths=(8, 16, 16),
                blocks_per_stage=1, feature_dim=16, hidden_dim=16, context_dim=16, corr_levels=3,
                corr_radius=2, iters=2)
    pairs = tmp_path / "pairs"
    export_pairs_from_bag(drive["bag"], pairs, drive["url"],
                          FromBagConfig(gt_topic=GT_TOPIC, stride=5, offset_range_m=5.0, sat_size_px=64,
                                        sat_m_per_px=0.5), cache_dir=tmp_path / "cache")
    base = tmp_path / "base"
    train(TrainConfig(dataset="synthetic:4", out_dir=str(base), model_overrides=tiny, steps=1, batch_size=2,
                      progress=False), device="cpu")
    base_model, _ = load_model(base / "model.pt")
    ft = tmp_path / "ft"
    rc = main(["train", "--dataset", str(pairs), "--out", str(ft), "--init", str(base / "model.pt"),
               "--steps", "2", "--batch-size", "2", "--lr", "1e-3", "--device", "cpu", "--no-progress"])
    assert rc == 0
    ft_model, blob = load_model(ft / "model.pt")
    assert blob["train_args"]["dataset"] == str(pairs)
    assert blob["train_args"]["init_checkpoint"] == str(base / "model.pt")
    assert ft_model.cfg == base_model.cfg  # the tiny architecture came from the checkpoint
    assert blob["step"] == 2 and math.isfinite(blob["metrics"]["final_loss"])
    # fine-tuning moved the weights away from the starting point (it did not start from scratch:
    # a fresh model would differ everywhere, while these stay close)
    a = torch.cat([p.flatten() for p in base_model.parameters()])
    b = torch.cat([p.flatten() for p in ft_model.parameters()])
    assert 0 < float((a - b).abs().max()) < 0.05
