"""``xview-localizer replay`` and the report on small synthetic rosbags (real rosbag2 files in
mcap and sqlite3, real tiles over file:// and HTTP on 127.0.0.1).

The matcher is a TEST DOUBLE (:class:`TruthLookupMatcher`): it recognises each camera image by
its pixels, looks up the bag's ground-truth pose of that frame and returns correspondences
from it with Gaussian noise and outliers (``localizer_doubles.NoisyTruthMatcher``). It
exercises the replay, the core, the metrics and the report; it says nothing about a trained
matcher. The errors in the report are checked against errors recomputed here from the bag's
ground-truth topic and the estimates written to the output bag.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from localizer_doubles import NoisyTruthMatcher

from xview_localizer.core.geo import LocalEnu
from xview_localizer.evaluation.replay_cli import main as replay_main

NS = 1_000_000_000
GT_TOPIC = "/ground_truth/pose"
PARAMS = ["-p", "patch_size_px=128", "-p", "patch_m_per_px=0.5"]


# ----------------------------------------------------------------------------------------------
# The test double
# ----------------------------------------------------------------------------------------------
_TRUTH_BAG: dict = {"path": None}


def _read_bag(path: Path, topics: set[str] | None = None):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as r:
        conns = [c for c in r.connections if topics is None or c.topic in topics]
        for c, t, raw in r.messages(connections=conns):
            yield c.topic, c.msgtype, t, raw, r.deserialize(raw, c.msgtype)


def _stamp(msg) -> int:
    return int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)


def _yaw(q) -> float:
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def _gt_of(path: Path) -> dict[int, tuple[float, float, float]]:
    return {_stamp(m): (m.pose.position.x, m.pose.position.y, _yaw(m.pose.orientation))
            for _, _, _, _, m in _read_bag(path, {GT_TOPIC})}


class TruthLookupMatcher:
    """TEST DOUBLE: image pixels -> the frame's ground truth -> noisy correspondences."""

    def __init__(self, bag: Path, truth_bag: Path) -> None:
        from xview_localizer.pipeline import messages as conv
        from xview_localizer.sim.bag import read_sidecar

        side = read_sidecar(truth_bag)
        enu = LocalEnu(side["datum"]["lat_deg"], side["datum"]["lon_deg"])
        gt = _gt_of(truth_bag)
        self.by_hash: dict[str, tuple[float, float, float]] = {}
        for _, msgtype, _, _, m in _read_bag(bag, {"/camera/image_raw", "/camera/image_raw/compressed"}):
            rgb = conv.compressed_to_rgb8(m) if msgtype.endswith("CompressedImage") else conv.image_to_rgb8(m)
            x, y, yaw = gt[_stamp(m)]
            lat, lon = enu.inverse(x, y)
            self.by_hash[hashlib.sha1(rgb.tobytes()).hexdigest()] = (float(lat), float(lon), yaw)
        self.inner = NoisyTruthMatcher(seed=5, n_points=150, noise_m=0.3, outlier_fraction=0.2, extent_m=20.0)

    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad):
        self.inner.truth = self.by_hash[hashlib.sha1(np.ascontiguousarray(ground_rgb).tobytes()).hexdigest()]
        return self.inner.match(ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad)


def make_truth_matcher(checkpoint_path: str, device: str) -> TruthLookupMatcher:
    """``--matcher-factory test_replay:make_truth_matcher`` (the bag comes from the test)."""
    bag, truth = _TRUTH_BAG["path"], _TRUTH_BAG.get("truth") or _TRUTH_BAG["path"]
    return TruthLookupMatcher(bag, truth)


# ----------------------------------------------------------------------------------------------
# Bags
# ----------------------------------------------------------------------------------------------
def _copy_bag(src: Path, dst: Path, storage: str = "mcap", drop: tuple[str, ...] = (), rewrite=None) -> Path:
    """Rewrite a bag (another storage, topics dropped, messages converted); keeps sim.yaml.
    ``rewrite(topic, msgtype, raw, msg, typestore) -> (topic, msgtype, raw)`` may change a message."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    w = Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    w.open()
    conns = {}
    try:
        for topic, msgtype, t, raw, m in _read_bag(src):
            if topic in drop:
                continue
            if rewrite is not None:
                topic, msgtype, raw = rewrite(topic, msgtype, raw, m, ts)
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
            w.write(conns[topic], t, bytes(raw))
    finally:
        w.close()
    shutil.copy(src / "sim.yaml", dst / "sim.yaml")
    return dst


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from xview_localizer.sim.aerial import write_tile_pyramid
    from xview_localizer.sim.bag import BagConfig, record_drive
    from xview_localizer.sim.drive import DriveConfig, GnssConfig, OdomConfig
    from xview_localizer.sim.world import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("replay")
    world = generate_world(WorldConfig(seed=3, size_m=300.0))
    world.save(root / "world")
    write_tile_pyramid(world, root / "world" / "tiles", zoom_max=18, zoom_min=18, mbtiles=False)
    mcap = record_drive(root / "world", root / "drive_mcap", drive_config=DriveConfig(seconds=5.0, seed=2),
                        gnss_config=GnssConfig(seed=2, nofix_rate_per_min=0.0, outlier_probability=0.0),
                        odom_config=OdomConfig(seed=2), bag_config=BagConfig(compressed=True),
                        width_px=96, height_px=32, world=world, progress=False)
    return {
        "root": root,
        "world": root / "world",
        "mcap": mcap,
        "sqlite3": _copy_bag(mcap, root / "drive_sqlite3", "sqlite3", drop=("/camera/image_raw/compressed",)),
        "compressed": _copy_bag(mcap, root / "drive_compressed", "mcap", drop=("/camera/image_raw",)),
        "no_gt": _copy_bag(mcap, root / "drive_no_gt", "mcap", drop=(GT_TOPIC,)),
    }


def _replay(bag: Path, out: Path, *extra: str, truth: Path | None = None) -> int:
    _TRUTH_BAG["path"], _TRUTH_BAG["truth"] = bag, truth
    return replay_main([str(bag), "--out", str(out), "--matcher-factory", "test_replay:make_truth_matcher",
                        "--no-progress", *PARAMS, *extra])


@pytest.fixture(autouse=True)
def _tile_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("XVIEW_TILE_CACHE", str(tmp_path / "tile_cache"))


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------
def _estimates_from_output(out: Path) -> dict[int, tuple[float, float, float, np.ndarray]]:
    res = {}
    for _, _, _, _, m in _read_bag(out / "poses", {"/xview/pose"}):
        p = m.pose.pose
        c = np.asarray(m.pose.covariance).reshape(6, 6)
        res[_stamp(m)] = (p.position.x, p.position.y, _yaw(p.orientation), c)
    return res


def _check_png(path: Path, min_side: int = 200) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"{path} does not decode"
    assert min(img.shape[:2]) >= min_side, img.shape
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10, f"{path} is (nearly) one colour"


def _check_recomputed_errors(bag: Path, out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    gt = _gt_of(bag)
    est = _estimates_from_output(out)
    assert est, "no estimates in the output bag"
    xy, yaw = [], []
    for s, (x, y, th, c) in est.items():
        gx, gy, gth = gt[s]
        xy.append(math.hypot(x - gx, y - gy))
        yaw.append(abs(math.degrees((th - gth + math.pi) % (2 * math.pi) - math.pi)))
        assert np.allclose(c, c.T) and np.linalg.eigvalsh(c).min() > 0
    m = report["metrics"]["xview"]
    assert m["n_samples"] == len(est)
    assert m["xy_err_mean_m"] == pytest.approx(float(np.mean(xy)), abs=1e-6)
    assert m["xy_err_median_m"] == pytest.approx(float(np.median(xy)), abs=1e-6)
    assert m["yaw_err_mean_deg"] == pytest.approx(float(np.mean(yaw)), abs=1e-4)
    assert m["xy_recall_1m"] == pytest.approx(float(np.mean(np.array(xy) <= 1.0)))
    with (out / "frames.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == report["frames"]["total"]
    for r in rows:
        s = int(r["stamp_ns"])
        if r["accepted"] == "1":
            x, y, th, _ = est[s]
            gx, gy, gth = gt[s]
            assert float(r["err_xy_m"]) == pytest.approx(math.hypot(x - gx, y - gy), abs=1e-3)
            lon = (x - gx) * math.cos(gth) + (y - gy) * math.sin(gth)
            lat = -(x - gx) * math.sin(gth) + (y - gy) * math.cos(gth)
            assert float(r["err_lateral_m"]) == pytest.approx(lat, abs=1e-3)
            assert float(r["err_longitudinal_m"]) == pytest.approx(lon, abs=1e-3)
        else:
            assert r["reason"] and s not in est
    return report


def _check_report_files(out: Path, with_gt: bool = True) -> None:
    names = ["trajectory.png", "rejections_time.png", "latency_cdf.png"] + (
        ["errors_time.png", "error_cdf.png"] if with_gt else ["covariance_time.png"])
    page = (out / "index.html").read_text()
    for n in names:
        _check_png(out / n)
        assert f"src='{n}'" in page
    for n in ("report.json", "frames.csv", "xview.tum", "gnss.tum"):
        assert (out / n).is_file()
    # frame panels from the replay's snapshots: the worst frames first, each a real image
    report = json.loads((out / "report.json").read_text())
    panels = report["panels"]
    assert report["snapshots"]["evicted"] == 0 and report["snapshots"]["kept"] >= report["frames"]["accepted"]
    assert [p["kind"] for p in panels][:6] == ["worst"] * 6
    worst = [p["err_xy_m"] if with_gt else None for p in panels if p["kind"] == "worst"]
    if with_gt:
        assert worst == sorted(worst, reverse=True)
        with (out / "frames.csv").open() as fh:
            errs = [float(r["err_xy_m"]) for r in csv.DictReader(fh) if r["accepted"] == "1" and r["err_xy_m"]]
        assert worst[0] == pytest.approx(max(errs), abs=1e-3)
    for p in panels:
        _check_png(out / p["file"])
        assert f"src='{p['file']}'" in page
    assert page.index("id='summary'") < page.index("src='trajectory.png'") < page.index("src='panels/")


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------
def test_replay_mcap_reproduces_independent_errors(bags, tmp_path, capsys):
    out = tmp_path / "report"
    assert _replay(bags["mcap"], out) == 0
    printed = capsys.readouterr().out
    assert "GNSS-only" in printed and "index.html" in printed
    report = _check_recomputed_errors(bags["mcap"], out)
    _check_report_files(out)
    # The double's noise is 0.3 m: xview is far better than the GNSS (3 m bias sigma) here.
    assert report["availability"] > 0.6
    assert report["metrics"]["xview"]["xy_err_median_m"] < 1.0
    assert report["metrics"]["gnss_same_frames"]["n_samples"] == report["metrics"]["xview"]["n_samples"]
    assert report["latency"]["p50_ms"] > 0
    assert report["nees"]["position_2dof"]["n"] == report["metrics"]["xview"]["n_samples"]
    assert report["meta"]["topics"]["image"] == "/camera/image_raw"
    assert report["meta"]["extrinsics_source"] == "tf_static"
    print(json.dumps({k: report[k] for k in ("availability", "rejected_by_reason", "latency")}, indent=1))


def test_replay_sqlite3_bag_gives_the_same_result(bags, tmp_path):
    out_m, out_s = tmp_path / "m", tmp_path / "s"
    assert _replay(bags["mcap"], out_m, truth=bags["mcap"]) == 0
    assert _replay(bags["sqlite3"], out_s, truth=bags["mcap"]) == 0
    _check_recomputed_errors(bags["sqlite3"], out_s)
    a = json.loads((out_m / "report.json").read_text())
    b = json.loads((out_s / "report.json").read_text())
    assert a["metrics"] == b["metrics"] and a["rejected_by_reason"] == b["rejected_by_reason"]


def test_replay_compressed_only_bag(bags, tmp_path):
    out = tmp_path / "report"
    assert _replay(bags["compressed"], out, truth=bags["mcap"]) == 0
    report = _check_recomputed_errors(bags["compressed"], out)
    assert report["meta"]["topics"]["image"] == "/camera/image_raw/compressed"
    assert report["availability"] > 0.6


def test_replay_without_ground_truth(bags, tmp_path):
    out = tmp_path / "report"
    assert _replay(bags["no_gt"], out, truth=bags["mcap"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["has_ground_truth"] is False and report["metrics"] is None
    assert 0.6 < report["availability"] <= 1.0
    assert report["latency"]["p90_ms"] > 0
    assert report["covariance"]["sigma_xy_m"]["n"] == report["frames"]["accepted"]
    assert report["covariance"]["sigma_xy_m"]["median"] > 0
    _check_report_files(out, with_gt=False)


def test_replay_over_http_tiles_and_explicit_topics(bags, tmp_path):
    from xview_localizer.sim.serve import serve_world_tiles

    server = serve_world_tiles(bags["world"])
    try:
        out = tmp_path / "report"
        rc = _replay(bags["mcap"], out, "--tiles", server.url_template(), "--image-topic", "/camera/image_raw",
                     "--fix-topic", "/gnss/fix", "--gt-topic", GT_TOPIC, "--odom-topic", "none",
                     "--camera-info-topic", "/camera/camera_info", "--max-frames", "20")
        assert rc == 0
        assert server.count() > 0
    finally:
        server.shutdown()
    report = _check_recomputed_errors(bags["mcap"], out)
    assert report["frames"]["total"] == 20
    assert report["meta"]["topics"]["odom"] is None


def test_missing_topic_lists_what_the_bag_has(bags, tmp_path, capsys):
    rc = _replay(bags["mcap"], tmp_path / "r", "--image-topic", "/front/image")
    err = capsys.readouterr().err
    assert rc == 1
    assert "/front/image" in err and "/camera/image_raw (sensor_msgs/msg/Image)" in err and "/gnss/fix" in err


def test_dead_tile_source_fails_clearly(bags, tmp_path, free_port, capsys):
    rc = _replay(bags["mcap"], tmp_path / "r", "--tiles", f"http://127.0.0.1:{free_port}/{{z}}/{{x}}/{{y}}.png")
    err = capsys.readouterr().err
    assert rc == 1
    assert "does not answer" in err and f"127.0.0.1:{free_port}" in err
    assert not (tmp_path / "r").exists()


def test_bag_without_sidecar_and_without_tiles_names_the_ways_to_give_a_source(bags, tmp_path, capsys):
    """Issue 17: there is no default tile URL (it would quietly probe localhost): a bag without a
    sim.yaml replayed without --tiles fails with one clear line, and writes nothing."""
    bag = tmp_path / "real_bag"
    shutil.copytree(bags["mcap"], bag)
    (bag / "sim.yaml").unlink()
    rc = replay_main([str(bag), "--out", str(tmp_path / "r"), "--no-progress", "--device", "cpu"])  # packaged default
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "no tile source" in err and "--tiles" in err and "sim.yaml" in err and "tile_url" in err
    assert "127.0.0.1" not in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_bad_checkpoint_fails_clearly(bags, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    rc = replay_main([str(bags["mcap"]), "--out", str(tmp_path / "r"), "--checkpoint", str(bad), "--no-progress",
                      "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and str(bad) in err and "load" in err


def test_existing_output_needs_force(bags, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "old.txt").write_text("x")
    assert _replay(bags["mcap"], out, "--max-frames", "5") == 1
    assert "exists" in capsys.readouterr().err and (out / "old.txt").exists()
    assert _replay(bags["mcap"], out, "--max-frames", "5", "--force") == 0
    assert not (out / "old.txt").exists() and (out / "report.json").exists()


def test_report_from_recorded_pose_topic(bags, tmp_path):
    """The demo path: estimates from a recorded PoseWithCovarianceStamped topic."""
    from xview_localizer.evaluation.report import (
        EvalData,
        Track,
        frames_from_pose_bag,
        write_report,
    )

    out = tmp_path / "replayed"
    assert _replay(bags["mcap"], out) == 0
    stamps = sorted(_gt_of(bags["mcap"]))
    frames = frames_from_pose_bag(out / "poses", "/xview/pose", stamps)
    gt = _gt_of(bags["mcap"])
    first = json.loads((out / "report.json").read_text())
    gnss_rows = []
    for _, _, _, _, m in _read_bag(bags["mcap"], {"/gnss/fix"}):
        if m.status.status >= 0:
            e, n = LocalEnu(first["map_frame"]["datum_lat_deg"], first["map_frame"]["datum_lon_deg"]).forward(
                m.latitude, m.longitude)
            gnss_rows.append((_stamp(m), float(e), float(n), float("nan")))
    data = EvalData(frames=frames, gnss=Track.from_rows(gnss_rows),
                    gt=Track.from_rows([(s, *v) for s, v in gt.items()]), map_projection="enu",
                    datum_lat_deg=first["map_frame"]["datum_lat_deg"], datum_lon_deg=first["map_frame"]["datum_lon_deg"],
                    meta={"estimates": "recorded pose topic"}, course_min_baseline_m=10.0)
    second = write_report(data, tmp_path / "recorded")
    assert second["metrics"]["xview"] == pytest.approx(first["metrics"]["xview"], abs=1e-6)
    assert second["metrics"]["gnss_same_frames"] == pytest.approx(first["metrics"]["gnss_same_frames"], abs=1e-6)
    assert set(second["rejected_by_reason"]) <= {"not_published"}
    assert second["frames"]["accepted"] == first["frames"]["accepted"]


def _bag_with_converted_gt(src: Path, dst: Path, kind: str) -> Path:
    """``src`` with its PoseStamped ground truth rewritten as nav_msgs/Odometry
    (``/ground_truth/odom``) or as an RTK NavSatFix (``/rtk/fix``, WGS84 of the same points)."""
    from xview_localizer.sim.bag import read_sidecar

    side = read_sidecar(src)
    enu = LocalEnu(side["datum"]["lat_deg"], side["datum"]["lon_deg"])

    def convert(topic, msgtype, raw, m, ts):
        if topic != GT_TOPIC:
            return topic, msgtype, raw
        T = ts.types
        if kind == "odometry":
            topic, msgtype = "/ground_truth/odom", "nav_msgs/msg/Odometry"
            msg = T[msgtype](header=m.header, child_frame_id="base_link",
                             pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=m.pose, covariance=np.zeros(36)),
                             twist=T["geometry_msgs/msg/TwistWithCovariance"](
                                 twist=T["geometry_msgs/msg/Twist"](
                                     linear=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                                     angular=T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                                 covariance=np.zeros(36)))
        else:
            topic, msgtype = "/rtk/fix", "sensor_msgs/msg/NavSatFix"
            lat, lon = enu.inverse(m.pose.position.x, m.pose.position.y)
            msg = T[msgtype](header=m.header, status=T["sensor_msgs/msg/NavSatStatus"](status=2, service=1),
                             latitude=float(lat), longitude=float(lon), altitude=0.0,
                             position_covariance=np.full(9, 0.0), position_covariance_type=0)
        return topic, msgtype, ts.serialize_cdr(msg, msgtype)

    return _copy_bag(src, dst, "mcap", rewrite=convert)


def test_ground_truth_as_odometry_or_rtk_fix(bags, tmp_path):
    ref_out = tmp_path / "ref"
    assert _replay(bags["mcap"], ref_out, "--max-frames", "30") == 0
    ref = json.loads((ref_out / "report.json").read_text())["metrics"]["xview"]
    odom_bag = _bag_with_converted_gt(bags["mcap"], tmp_path / "gt_odom", "odometry")
    assert _replay(odom_bag, tmp_path / "o", "--max-frames", "30", truth=bags["mcap"]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["meta"]["topics"]["ground_truth"] == "/ground_truth/odom"
    assert rep["meta"]["topics"]["odom"] == "/odom"
    assert rep["metrics"]["xview"] == pytest.approx(ref, abs=1e-9)
    rtk_bag = _bag_with_converted_gt(bags["mcap"], tmp_path / "gt_rtk", "rtk")
    assert _replay(rtk_bag, tmp_path / "r", "--max-frames", "30", truth=bags["mcap"]) == 0
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["meta"]["topics"]["ground_truth"] == "/rtk/fix" and rep["meta"]["topics"]["fix"] == "/gnss/fix"
    m = rep["metrics"]["xview"]
    assert m["xy_err_median_m"] == pytest.approx(ref["xy_err_median_m"], abs=1e-4)
    assert m["n_yaw_samples"] == 0 and m["yaw_err_mean_deg"] is None and m["lateral_recall_1m"] is None


# ----------------------------------------------------------------------------------------------
# Depth
# ----------------------------------------------------------------------------------------------
DEPTH_TOPIC = "/camera/depth"
DEPTH_DECOY_TOPIC = "/camera/color_depth_viz"  # depth-named, sorts first, rgb8: must not be taken
#: What the depth bag holds for image k, by k % 6 (image stamps are 100 ms apart):
#: 0 none; 1 32FC1 stamped +30 ms (logged after the image); 2 32FC1 at -20 ms and a decoy at
#: +45 ms (the nearer one must win); 3 only a message with a wrong encoding (rgb8); 4 a
#: half-size 32FC1 map with a distinct value per pixel; 5 16UC1 millimetres at +0 ms and a
#: 32FC1 message whose data is too short at +60 ms (40 ms before image k+1, which has none).
DEPTH_VARIANTS = 6
_DEPTH_SEEN: dict[int, np.ndarray | None] = {}


class DepthRecordingMatcher(TruthLookupMatcher):
    """TEST DOUBLE: a depth-accepting matcher (``accepts_depth``) that records the depth map it
    gets per image stamp (the stamp found from the image's pixels) and otherwise answers like
    :class:`TruthLookupMatcher`."""

    accepts_depth = True

    def __init__(self, bag: Path, truth_bag: Path) -> None:
        from xview_localizer.pipeline import messages as conv

        super().__init__(bag, truth_bag)
        self.stamp_by_hash = {}
        for _, _, _, _, m in _read_bag(bag, {"/camera/image_raw"}):
            self.stamp_by_hash[hashlib.sha1(conv.image_to_rgb8(m).tobytes()).hexdigest()] = _stamp(m)

    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad=None, *, depth_m=None,
              depth_kind="metric"):
        stamp = self.stamp_by_hash[hashlib.sha1(np.ascontiguousarray(ground_rgb).tobytes()).hexdigest()]
        _DEPTH_SEEN[stamp] = None if depth_m is None else np.array(depth_m, copy=True)
        return super().match(ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad)


def make_depth_recording_matcher(checkpoint_path: str, device: str) -> DepthRecordingMatcher:
    """``--matcher-factory test_replay:make_depth_recording_matcher``."""
    bag, truth = _TRUTH_BAG["path"], _TRUTH_BAG.get("truth") or _TRUTH_BAG["path"]
    return DepthRecordingMatcher(bag, truth)


def _half_map(k: int, h: int, w: int) -> np.ndarray:
    """The (h/2, w/2) depth of variant 4: a distinct value per pixel, metres."""
    return (1.0 + k + np.arange((h // 2) * (w // 2), dtype=np.float32).reshape(h // 2, w // 2) / 1024.0)


def _depth_msg(ts, header, stamp_ns: int, arr: np.ndarray, encoding: str, truncate: bool = False):
    T = ts.types
    sec, nsec = divmod(int(stamp_ns), NS)
    hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                   frame_id=header.frame_id)
    h, w = arr.shape[:2]
    data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), dtype=np.uint8)
    if truncate:
        data = data[: data.size // 2]
    return T["sensor_msgs/msg/Image"](header=hdr, height=h, width=w, encoding=encoding, is_bigendian=0,
                                      step=w * arr.dtype.itemsize * (arr.shape[2] if arr.ndim == 3 else 1),
                                      data=data)


def _depth_messages(ts, img, k: int) -> list[tuple[int, str, object]]:
    """(log/stamp ns, topic, message) of the depth that goes with image k (see DEPTH_VARIANTS)."""
    s, h, w, v = _stamp(img), int(img.height), int(img.width), k % DEPTH_VARIANTS
    full = np.full((h, w), 1.0 + k, np.float32)
    ms = NS // 1000
    if v == 1:
        return [(s + 30 * ms, DEPTH_TOPIC, _depth_msg(ts, img.header, s + 30 * ms, full, "32FC1"))]
    if v == 2:
        return [(s - 20 * ms, DEPTH_TOPIC, _depth_msg(ts, img.header, s - 20 * ms, full, "32FC1")),
                (s + 45 * ms, DEPTH_TOPIC, _depth_msg(ts, img.header, s + 45 * ms, full + 500.0, "32FC1"))]
    if v == 3:
        return [(s, DEPTH_TOPIC, _depth_msg(ts, img.header, s, np.zeros((h, w, 3), np.uint8), "rgb8"))]
    if v == 4:
        return [(s, DEPTH_TOPIC, _depth_msg(ts, img.header, s, _half_map(k, h, w), "32FC1"))]
    if v == 5:
        mm = np.full((h, w), round(1000 * (1.0 + k)), np.dtype("<u2"))
        return [(s, DEPTH_TOPIC, _depth_msg(ts, img.header, s, mm, "16UC1")),
                (s + 60 * ms, DEPTH_TOPIC, _depth_msg(ts, img.header, s + 60 * ms, full, "32FC1", truncate=True))]
    return []


def _bag_with_depth(src: Path, dst: Path) -> Path:
    """``src`` (raw images only) plus the depth of DEPTH_VARIANTS on DEPTH_TOPIC and an rgb8
    decoy on DEPTH_DECOY_TOPIC; messages written in log-time order."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    rows = []
    k = 0
    for topic, msgtype, t, raw, m in _read_bag(src):
        if topic == "/camera/image_raw/compressed":
            continue
        rows.append((t, topic, msgtype, bytes(raw)))
        if topic == "/camera/image_raw":
            for log_ns, dtopic, dmsg in _depth_messages(ts, m, k):
                rows.append((log_ns, dtopic, "sensor_msgs/msg/Image", bytes(ts.serialize_cdr(dmsg, dmsg.__msgtype__))))
            if k == 0:
                decoy = _depth_msg(ts, m.header, _stamp(m), np.zeros((int(m.height), int(m.width), 3), np.uint8), "rgb8")
                rows.append((t, DEPTH_DECOY_TOPIC, "sensor_msgs/msg/Image", bytes(ts.serialize_cdr(decoy, decoy.__msgtype__))))
            k += 1
    rows.sort(key=lambda r: r[0])
    w = Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conns = {}
    try:
        for t, topic, msgtype, raw in rows:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
            w.write(conns[topic], t, raw)
    finally:
        w.close()
    shutil.copy(src / "sim.yaml", dst / "sim.yaml")
    return dst


@pytest.fixture(scope="module")
def depth_bag(bags):
    return _bag_with_depth(bags["mcap"], bags["root"] / "drive_depth")


def _replay_depth(bag: Path, out: Path, *extra: str) -> int:
    _DEPTH_SEEN.clear()
    _TRUTH_BAG["path"], _TRUTH_BAG["truth"] = bag, None
    return replay_main([str(bag), "--out", str(out), "--matcher-factory", "test_replay:make_depth_recording_matcher",
                        "--no-progress", *PARAMS, *extra])


def _image_stamps(bag: Path) -> list[int]:
    return [_stamp(m) for _, _, _, _, m in _read_bag(bag, {"/camera/image_raw"})]


def test_replay_pairs_depth_by_stamp_resizes_and_counts_bad_messages(depth_bag, tmp_path, capsys):
    out = tmp_path / "report"
    assert _replay_depth(depth_bag, out) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    stamps = _image_stamps(depth_bag)
    variants = [k % DEPTH_VARIANTS for k in range(len(stamps))]
    with_depth = sum(v in (1, 2, 4, 5) for v in variants)
    depth = report["meta"]["depth"]
    assert report["meta"]["topics"]["depth"] == DEPTH_TOPIC  # the rgb8 decoy was skipped
    assert depth["frames_with_depth"] == with_depth
    assert depth["frames_without_depth"] == len(stamps) - with_depth
    assert depth["resized"] == variants.count(4)
    assert depth["invalid_messages"] == variants.count(3) + variants.count(5)
    assert report["meta"]["input_problems"]["depth_invalid"] == depth["invalid_messages"]
    assert f"{with_depth} frames with depth" in printed and "invalid messages skipped" in printed
    # What the matcher got, frame by frame (frames the localizer matched).
    assert len(_DEPTH_SEEN) >= 0.8 * len(stamps)
    h, w = 32, 96
    for k, s in enumerate(stamps):
        if s not in _DEPTH_SEEN:
            continue
        got, v = _DEPTH_SEEN[s], k % DEPTH_VARIANTS
        if v in (0, 3):
            assert got is None, (k, v)
            continue
        assert got is not None and got.shape == (h, w) and got.dtype == np.float32, (k, v)
        if v == 4:  # half size -> every pixel is its 2x2 block's source pixel
            half = _half_map(k, h, w)
            assert np.array_equal(got, np.repeat(np.repeat(half, 2, axis=0), 2, axis=1))
        else:  # 1: +30 ms; 2: -20 ms, not the decoy at +45 ms; 5: 16UC1 mm -> m
            assert np.allclose(got, 1.0 + k, atol=1e-6), (k, v, float(np.nanmean(got)))
    assert report["availability"] > 0.6


def test_replay_depth_tolerance_and_no_depth(bags, depth_bag, tmp_path, capsys):
    stamps = _image_stamps(depth_bag)[:12]
    assert _replay_depth(depth_bag, tmp_path / "tight", "--max-frames", "12", "--depth-tolerance-s", "0.01") == 0
    depth = json.loads((tmp_path / "tight" / "report.json").read_text())["meta"]["depth"]
    assert depth["frames_with_depth"] == sum(k % DEPTH_VARIANTS in (4, 5) for k in range(12))  # +30/-20 ms too far
    for k, s in enumerate(stamps):
        if s in _DEPTH_SEEN and k % DEPTH_VARIANTS in (1, 2):
            assert _DEPTH_SEEN[s] is None
    assert _replay_depth(depth_bag, tmp_path / "none", "--max-frames", "12", "--no-depth") == 0
    report = json.loads((tmp_path / "none" / "report.json").read_text())
    assert report["meta"]["depth"] is None and report["meta"]["topics"]["depth"] is None
    assert _DEPTH_SEEN and all(d is None for d in _DEPTH_SEEN.values())
    assert "depth: none" in capsys.readouterr().out
    # A bag without depth: frames run without it.
    assert _replay_depth(bags["mcap"], tmp_path / "plain", "--max-frames", "5") == 0
    assert json.loads((tmp_path / "plain" / "report.json").read_text())["meta"]["depth"] is None
    assert _DEPTH_SEEN and all(d is None for d in _DEPTH_SEEN.values())


def test_replay_named_depth_topic_errors(depth_bag, tmp_path, capsys):
    assert _replay_depth(depth_bag, tmp_path / "a", "--depth-topic", "/nope/depth") == 1
    err = capsys.readouterr().err
    assert "/nope/depth" in err and f"{DEPTH_TOPIC} (sensor_msgs/msg/Image)" in err
    assert _replay_depth(depth_bag, tmp_path / "b", "--depth-topic", "/gnss/fix") == 1
    assert "expected sensor_msgs/msg/Image" in capsys.readouterr().err
    assert _replay_depth(depth_bag, tmp_path / "c", "--depth-topic", DEPTH_TOPIC, "--no-depth") == 1
    assert "contradict" in capsys.readouterr().err
    assert _replay_depth(depth_bag, tmp_path / "d", "--depth-tolerance-s", "-1") == 1
    assert "depth_tolerance_s" in capsys.readouterr().err
    # Named explicitly, even the rgb8 decoy is used: every message counted invalid, no crash.
    assert _replay_depth(depth_bag, tmp_path / "e", "--depth-topic", DEPTH_DECOY_TOPIC, "--max-frames", "5") == 0
    depth = json.loads((tmp_path / "e" / "report.json").read_text())["meta"]["depth"]
    assert depth["invalid_messages"] == 1 and depth["frames_with_depth"] == 0 and "rgb8" in depth["last_invalid"]


def test_depth_helpers_resize_and_pairing():
    from xview_localizer.core.depth_utils import (
        DepthBuffer,
        fit_depth_to_image,
        resize_depth_nearest,
    )
    from xview_localizer.core.errors import GeometryError
    from xview_localizer.evaluation.replay import ReplayConfig

    src = np.array([[1.0, 2.0, np.nan], [4.0, 5.0, 6.0]], np.float32)
    up = resize_depth_nearest(src, 4, 6)
    assert up.dtype == np.float32 and up.shape == (4, 6)
    assert np.array_equal(up, np.repeat(np.repeat(src, 2, axis=0), 2, axis=1), equal_nan=True)
    down = resize_depth_nearest(np.arange(16, dtype=np.float32).reshape(4, 4), 2, 2)
    assert down.tolist() == [[5.0, 7.0], [13.0, 15.0]]  # pixel centres: rows/cols 1 and 3
    same, resized = fit_depth_to_image(src, (2, 3, 3))
    assert not resized and same is src
    _, resized = fit_depth_to_image(src, (4, 6, 3))
    assert resized
    for bad in (np.zeros((0, 3)), np.zeros((2, 2, 2)), np.array([["a"]])):
        with pytest.raises(GeometryError):
            resize_depth_nearest(bad, 2, 2)
    with pytest.raises(GeometryError):
        resize_depth_nearest(src, 0, 2)
    buf = DepthBuffer(max_items=3)
    a, b, c = (np.full((1, 1), v, np.float32) for v in (1.0, 2.0, 3.0))
    buf.add(1_000_000_000, a)
    buf.add(1_040_000_000, b)
    buf.add(1_080_000_000, c)
    assert buf.nearest(1_020_000_000, 0.05) is a  # tie: the earlier one
    assert buf.nearest(1_075_000_000, 0.05) is c
    assert buf.nearest(1_200_000_000, 0.05) is None
    assert buf.latest_stamp_ns() == 1_080_000_000
    buf.drop_before(1_040_000_000)
    assert buf.nearest(1_000_000_000, 0.05) is b
    buf.add(1_100_000_000, a)
    buf.add(1_120_000_000, a)  # max_items 3: the oldest goes
    assert buf.nearest(1_040_000_000, 0.001) is None
    with pytest.raises(GeometryError):
        DepthBuffer(max_items=0)
    for bad_tol in (-0.1, float("nan"), True):
        with pytest.raises(GeometryError):
            ReplayConfig(depth_tolerance_s=bad_tol)


# ----------------------------------------------------------------------------------------------
# Quick looks: --every, --max-frames, speed
# ----------------------------------------------------------------------------------------------
def _csv_stamps(out: Path) -> list[int]:
    with (out / "frames.csv").open() as fh:
        return [int(r["stamp_ns"]) for r in csv.DictReader(fh)]


def test_replay_every_n_skips_frames_without_counting_them_as_rejected(bags, tmp_path, capsys):
    stamps = _image_stamps(bags["mcap"])
    n = len(stamps)
    k = math.ceil(n / 3)
    assert n % 3 and n > 20  # the last image is not a localized one: ceil matters
    out = tmp_path / "every3"
    assert _replay(bags["mcap"], out, "--every", "3") == 0
    printed = capsys.readouterr().out
    report = _check_recomputed_errors(bags["mcap"], out)
    fr = report["frames"]
    assert fr["total"] == k and fr["accepted"] + fr["rejected"] == k
    assert fr["skipped"] == n - k
    assert _csv_stamps(out) == stamps[::3]
    assert report["meta"]["images"] == {"in_bag": n, "localized": k, "skipped": n - k, "every": 3, "max_frames": 0,
                                        "not_replayed": 0}
    assert sum(report["rejected_by_reason"].values()) == fr["rejected"]
    assert report["availability"] > 0.6
    assert report["meta"]["replay_frames_per_s"] > 0 and report["meta"]["realtime_factor"] > 0
    assert f"replayed {k} of {n} images ({n - k} skipped: --every 3)" in printed
    assert f"frames localized / skipped (--every){'':2}" in printed and f"{k} / {n - k}" in printed
    assert f"; {n - k} more skipped" in (out / "index.html").read_text()


def test_replay_max_frames_with_every(bags, tmp_path, capsys):
    stamps = _image_stamps(bags["mcap"])
    n = len(stamps)
    out = tmp_path / "every3_max4"
    assert _replay(bags["mcap"], out, "--every", "3", "--max-frames", "4") == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["frames"]["total"] == 4 and report["frames"]["skipped"] == 6
    assert _csv_stamps(out) == stamps[0:10:3]
    assert report["meta"]["images"] == {"in_bag": n, "localized": 4, "skipped": 6, "every": 3, "max_frames": 4,
                                        "not_replayed": n - 10}
    assert f"replayed 4 of {n} images (6 skipped: --every 3) ({n - 10} not reached: --max-frames 4)" in printed
    # --max-frames alone: the first N images, nothing skipped
    out1 = tmp_path / "max4"
    assert _replay(bags["mcap"], out1, "--max-frames", "4") == 0
    report1 = json.loads((out1 / "report.json").read_text())
    assert _csv_stamps(out1) == stamps[:4] and report1["frames"]["skipped"] == 0
    assert "frames localized / skipped" not in capsys.readouterr().out


def test_replay_every_feeds_every_fix_and_decodes_only_localized_images(bags, tmp_path):
    """With --every 3 every valid fix still reaches the localizer (the GNSS track it returns), and
    the skipped images are not decoded: a bag whose other images are all corrupt replays clean."""
    from xview_localizer.evaluation.replay import ReplayConfig, node_config_for_bag, replay_bag
    from xview_localizer.pipeline.config import node_config_from_flat
    from xview_localizer.tiles.cache import TileCache

    stamps = _image_stamps(bags["mcap"])
    keep = set(stamps[::3])

    def corrupt_skipped(topic, msgtype, raw, msg, ts):
        if topic == "/camera/image_raw" and _stamp(msg) not in keep:
            raw = ts.serialize_cdr(dataclasses.replace(msg, encoding="yuv422"), msgtype)  # image_invalid if decoded
        return topic, msgtype, raw

    bag = _copy_bag(bags["mcap"], tmp_path / "corrupt", drop=("/camera/image_raw/compressed",),
                    rewrite=corrupt_skipped)
    n_fixes = sum(1 for _, _, _, _, m in _read_bag(bag, {"/gnss/fix"}) if m.status.status >= 0)
    node, url = node_config_for_bag(bag, node_config_from_flat({"patch_size_px": 128, "patch_m_per_px": 0.5}))
    _TRUTH_BAG["path"], _TRUTH_BAG["truth"] = bags["mcap"], None  # the double hashes the clean images
    tiles = TileCache(url, tmp_path / "tile_cache")
    try:
        results = []
        data = replay_bag(bag, ReplayConfig(every=3, node=node, progress=False), make_truth_matcher("", "cpu"), tiles,
                          url, on_frame=lambda s, r: results.append(s))
        every1 = replay_bag(bag, ReplayConfig(node=node, progress=False), make_truth_matcher("", "cpu"), tiles, url)
    finally:
        tiles.close()
    assert len(data.gnss) == len(every1.gnss) == n_fixes
    assert [f.stamp_ns for f in data.frames] == results == stamps[::3]
    assert not [f for f in data.frames if f.reason == "image_invalid"]
    assert data.skipped_frames == len(stamps) - len(keep)
    # every image decoded without --every: the corrupt ones are rejected
    assert sum(f.reason == "image_invalid" for f in every1.frames) == len(stamps) - len(keep)


def test_replay_progress_bar_shows_frames_and_poses_per_second(bags, tmp_path, capsys):
    _TRUTH_BAG["path"], _TRUTH_BAG["truth"] = bags["mcap"], None
    rc = replay_main([str(bags["mcap"]), "--out", str(tmp_path / "r"), "--matcher-factory",
                      "test_replay:make_truth_matcher", *PARAMS, "--every", "2", "--max-frames", "10"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "replay: 100%" in err and "10/10" in err
    assert "frame/s" in err and "poses/s" in err and "poses " in err


def test_every_and_max_frames_are_validated(bags, tmp_path, capsys):
    from xview_localizer.core.errors import GeometryError
    from xview_localizer.evaluation.replay import ReplayConfig

    with pytest.raises(GeometryError, match="every must be an int >= 1"):
        ReplayConfig(every=0)
    with pytest.raises(GeometryError, match="every must be an int >= 1"):
        ReplayConfig(every=True)
    for flag, value in (("--every", "0"), ("--every", "x"), ("--max-frames", "-1")):
        with pytest.raises(SystemExit) as exc:
            _replay(bags["mcap"], tmp_path / "r", flag, value)
        assert exc.value.code == 2
        assert flag in capsys.readouterr().err
