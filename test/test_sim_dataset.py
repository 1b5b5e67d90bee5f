"""`sim dataset` pairs: ground truth consistent with the satellite patch's georeference (by
independent Web-Mercator math and by image content), KITTI-protocol priors, depth encoding,
the PairDataset reader, disjoint train/test seeds, and the `sim` CLI end to end."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from xview_localizer.cli import main
from xview_localizer.core.camera import PinholeCamera, kitti_like_T_base_camera
from xview_localizer.core.errors import ConfigError, DatasetError
from xview_localizer.core.geo import ground_resolution_m_per_px, latlon_to_global_px
from xview_localizer.core.se2 import SE2
from xview_localizer.sim.aerial import render_orthophoto, write_tile_pyramid
from xview_localizer.sim.dataset import DatasetConfig, depth_to_png16, export_pairs, png16_to_depth
from xview_localizer.sim.ground import GroundRenderer
from xview_localizer.sim.world import World, WorldConfig, generate_world
from xview_localizer.train.pairs import PairDataset, check_disjoint_worlds

SAT_PX, SAT_M = 128, 0.2
GW, GH = 128, 32


@pytest.fixture(scope="module")
def world_env(tmp_path_factory):
    """A 300 m world with its tile pyramid (zoom 19-20) and orthophoto."""
    d = tmp_path_factory.mktemp("world")
    world = generate_world(WorldConfig(seed=3, size_m=300.0))
    world.save(d)
    ortho = render_orthophoto(world)
    write_tile_pyramid(world, d / "tiles", zoom_min=19, zoom_max=20, mbtiles=False, ortho=ortho)
    return d, world, ortho


@pytest.fixture(scope="module")
def pairs_dir(world_env, tmp_path_factory) -> Path:
    d, _world, _ortho = world_env
    out = tmp_path_factory.mktemp("pairs") / "p"
    cfg = DatasetConfig(pairs=6, sat_size_px=SAT_PX, sat_m_per_px=SAT_M, width_px=GW, height_px=GH, seed=1)
    export_pairs([d], out, cfg, progress=False)
    return out


def test_layout_and_reader(pairs_dir):
    meta = json.loads((pairs_dir / "meta.json").read_text())
    assert meta["format"] == "xview-pairs/1" and meta["count"] == 6 and meta["worlds"] == [3]
    assert (meta["offset_range_m"], meta["yaw_range_deg"]) == (20.0, 10.0)
    assert (meta["sat_size_px"], meta["sat_m_per_px"]) == (SAT_PX, SAT_M)
    ds = PairDataset(pairs_dir)
    assert len(ds) == 6 and ds.world_seeds == {3}
    s = ds[2]
    assert s.ground_rgb.shape == (GH, GW, 3) and s.ground_rgb.dtype == np.uint8
    assert s.sat_rgb.shape == (SAT_PX, SAT_PX, 3) and s.depth_m.shape == (GH, GW)
    assert s.depth_m.dtype == np.float32 and s.depth_m.max() > 1.0
    np.testing.assert_allclose(s.K, PinholeCamera.kitti_like(GW, GH).K)
    np.testing.assert_allclose(s.T_base_camera, kitti_like_T_base_camera(1.65))
    assert s.camera.width_px == GW and s.georef.width_px == SAT_PX
    assert [p.id for p in ds] == [f"{i:06d}" for i in range(6)]
    with pytest.raises(IndexError):
        ds[6]


def test_ground_truth_matches_web_mercator_geometry(pairs_dir):
    """The true position, put into the patch by T_patch_base and the patch georeference, is the
    pixel that plain Web-Mercator math gives for the true lat/lon."""
    ds = PairDataset(pairs_dir, load_depth=False)
    for rec, s in zip(ds.records, ds):
        uv = s.georef.enu_to_px(s.T_patch_base[None, :2])[0]
        zoom = rec["sat_zoom"]
        gx, gy = latlon_to_global_px(np.array([s.gt_lat_deg, s.sat_center_lat_deg]),
                                     np.array([s.gt_lon_deg, s.sat_center_lon_deg]), zoom)
        # Web-Mercator pixels -> true metres on the WGS84 ellipsoid: the spherical ground
        # resolution times N/a east-west and M/a north-south (radii of curvature)
        e2 = 6.69437999014e-3
        s2 = math.sin(math.radians(s.sat_center_lat_deg)) ** 2
        n_over_a = 1.0 / math.sqrt(1.0 - e2 * s2)
        m_over_a = (1.0 - e2) / (1.0 - e2 * s2) ** 1.5
        k = ground_resolution_m_per_px(s.sat_center_lat_deg, zoom) / s.sat_m_per_px
        expected = np.array([(SAT_PX - 1) / 2 + (gx[0] - gx[1]) * k * n_over_a,
                             (SAT_PX - 1) / 2 + (gy[0] - gy[1]) * k * m_over_a])
        assert np.max(np.abs(uv - expected)) < 0.02
        # KITTI protocol: prior within +-20 m of truth, yaw prior within +-10 deg
        assert np.all(np.abs(s.T_patch_base[:2]) <= 20.0 + 1e-3)
        dyaw = (s.prior_yaw_rad - s.T_patch_base[2] + math.pi) % (2 * math.pi) - math.pi
        assert abs(dyaw) <= math.radians(10.0) + 1e-9


def test_satellite_patch_content_is_the_world_at_the_georeference(pairs_dir, world_env):
    """Each patch pixel shows the orthophoto at the world position its georeference names;
    shifting by one pixel makes the match worse (sub-pixel alignment of the whole chain)."""
    _d, world, (ortho, ogeo) = world_env
    ds = PairDataset(pairs_dir, load_depth=False)
    s = ds[0]
    g = s.georef
    v, u = np.mgrid[0:SAT_PX, 0:SAT_PX]
    errs = {}
    for du, dv in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
        uv = np.stack([u.ravel() + du, v.ravel() + dv], axis=1).astype(float)
        lat, lon = g.px_to_latlon(uv)
        e, n = world.enu.forward(lat, lon)
        ouv = ogeo.xy_to_px(np.stack([np.asarray(e), np.asarray(n)], axis=1)).astype(np.float32)
        sampled = cv2.remap(ortho, ouv[:, 0].reshape(SAT_PX, SAT_PX), ouv[:, 1].reshape(SAT_PX, SAT_PX),
                            cv2.INTER_LINEAR)
        errs[(du, dv)] = float(np.mean(np.abs(sampled.astype(float) - s.sat_rgb.astype(float))))
    assert errs[(0, 0)] < 6.0
    assert all(errs[(0, 0)] < 0.8 * e for k, e in errs.items() if k != (0, 0))


def test_ground_image_and_depth_are_renders_at_the_true_pose(pairs_dir, world_env):
    d, _world, _ortho = world_env
    world = World.load(d)  # what export_pairs rendered (world.json rounds to 0.1 mm)
    ds = PairDataset(pairs_dir)
    renderer = GroundRenderer(world, PinholeCamera.kitti_like(GW, GH), kitti_like_T_base_camera(1.65))
    for i in (0, 3):
        rec, s = ds.records[i], ds[i]
        frame = renderer.render(SE2(*rec["T_map_base"]))
        assert np.array_equal(frame.rgb, s.ground_rgb)
        ok = (frame.depth_m > 0) & (frame.depth_m < 65.0)
        np.testing.assert_allclose(s.depth_m[ok], frame.depth_m[ok], atol=5e-4)
        assert np.all(s.depth_m[frame.depth_m <= 0] == 0)


def test_depth_png_encoding():
    d = np.array([[0.0, np.nan, -1.0, 1.2345], [65.535, 65.6, np.inf, 0.0004]], np.float32)
    mm = depth_to_png16(d)
    assert mm.dtype == np.uint16
    assert mm.tolist() == [[0, 0, 0, 1235], [65535, 0, 0, 0]]  # 0 = invalid; > 65.535 m invalid
    np.testing.assert_allclose(png16_to_depth(mm)[0, 3], 1.2345, atol=6e-4)


def test_unknown_orientation_priors(world_env, tmp_path):
    d, _world, _ortho = world_env
    cfg = DatasetConfig(pairs=8, yaw_range_deg=180.0, offset_m=5.0, sat_size_px=64, width_px=64,
                        height_px=16, seed=2)
    ds = PairDataset(export_pairs([d], tmp_path / "p", cfg, progress=False), load_depth=False)
    err = [(r["prior_yaw_rad"] - r["T_patch_base"][2] + math.pi) % (2 * math.pi) - math.pi for r in ds.records]
    assert max(abs(e) for e in err) > math.radians(30.0)
    assert all(abs(r["T_patch_base"][0]) <= 5.0 + 1e-3 for r in ds.records)


def test_disjoint_seeds_and_duplicate_warning(pairs_dir, world_env, tmp_path, caplog):
    a = PairDataset(pairs_dir)
    with pytest.raises(DatasetError, match=r"share world seeds \[3\]"):
        check_disjoint_worlds(a, PairDataset(pairs_dir))
    other = tmp_path / "test_set"
    shutil.copytree(pairs_dir, other)
    lines = [json.loads(x) for x in (other / "pairs.jsonl").read_text().splitlines()]
    for rec in lines:
        rec["world_seed"] = 1003
    (other / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    check_disjoint_worlds(a, PairDataset(other))  # no error
    d, _world, _ortho = world_env
    cfg = DatasetConfig(pairs=2, sat_size_px=32, width_px=32, height_px=16, offset_m=2.0)
    with caplog.at_level(logging.WARNING, logger="xview_localizer.sim.dataset"):
        export_pairs([d, d], tmp_path / "dup", cfg, progress=False)
    assert "appears twice" in caplog.text


def test_reader_rejects_malformed_sets(pairs_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(pairs_dir, bad)
    lines = (bad / "pairs.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    del rec["T_patch_base"]
    lines[1] = json.dumps(rec)
    (bad / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"pairs.jsonl:2: missing field 'T_patch_base'"):
        PairDataset(bad)
    lines[1] = "{not json"
    (bad / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"pairs.jsonl:2: invalid JSON"):
        PairDataset(bad)
    with pytest.raises(DatasetError, match="meta.json"):
        PairDataset(tmp_path)
    with pytest.raises(DatasetError, match="not empty"):
        export_pairs([tmp_path], pairs_dir, DatasetConfig(pairs=1))
    with pytest.raises(ConfigError, match="yaw_range_deg"):
        DatasetConfig(pairs=1, yaw_range_deg=270.0)


def test_sim_cli_end_to_end(tmp_path, free_port):
    world = tmp_path / "w"
    assert main(["sim", "world", "--seed", "11", "--out", str(world), "--size-m", "300",
                 "--zoom-min", "19", "--no-mbtiles"]) == 0
    assert World.load(world).config.seed == 11 and (world / "tiles" / "20").is_dir()
    bag = tmp_path / "bag"
    assert main(["sim", "drive", "--world", str(world), "--seconds", "1", "--seed", "2", "--out", str(bag),
                 "--width", "64", "--height", "24", "--storage", "sqlite3"]) == 0
    assert any(p.suffix == ".db3" for p in bag.iterdir()) and (bag / "sim.yaml").is_file()
    out = tmp_path / "pairs"
    assert main(["sim", "dataset", "--worlds", str(world), "--pairs", "2", "--out", str(out), "--sat-size", "64",
                 "--width", "64", "--height", "16", "--offset-m", "5", "--yaw-range", "180",
                 "--preview", "1"]) == 0
    assert len(PairDataset(out)) == 2
    preview = cv2.imread(str(out / "preview" / "pair_000000.png"))
    assert preview is not None and preview.shape == (64, 64 + 8 + 64, 3)
    assert json.loads((out / "meta.json").read_text())["yaw_range_deg"] == 180.0
    assert main(["sim", "drive", "--world", str(world), "--seconds", "1", "--out", str(bag)]) == 1

    # serve-tiles: a real server process; fetch a tile over HTTP, stop it with SIGINT
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "xview_localizer.cli", "sim", "serve-tiles", str(world),
                             "--port", str(free_port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert f"127.0.0.1:{free_port}" in line, line + proc.stderr.read() if proc.poll() is not None else line
        z = "20"
        x = sorted((world / "tiles" / z).iterdir())[0]
        y = sorted(x.iterdir())[0]
        r = requests.get(f"http://127.0.0.1:{free_port}/{z}/{x.name}/{y.name}", timeout=10)
        assert r.status_code == 200 and r.content == y.read_bytes()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
