"""rosbag2 drives: written with rosbags (mcap and sqlite3), read back with rosbags' AnyReader
and decoded with rclpy.serialization.deserialize_message (fields compared), consistent stamps,
byte-identical images for the same seed, the sidecar."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability

from xview_localizer.core.camera import PinholeCamera, kitti_like_T_base_camera
from xview_localizer.core.errors import BagError, ConfigError
from xview_localizer.sim.bag import FRAMES, TOPICS, BagConfig, read_sidecar, record_drive
from xview_localizer.sim.drive import (
    DriveConfig,
    GnssConfig,
    OdomConfig,
    generate_trajectory,
    simulate_gnss,
    simulate_odometry,
)
from xview_localizer.sim.ground import GroundRenderer
from xview_localizer.sim.world import World, WorldConfig, generate_world

W_PX, H_PX = 96, 32
SECONDS = 2.0


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(seed=3, size_m=300.0)).save(d)
    return d


@pytest.fixture(scope="module")
def world(world_dir) -> World:
    return World.load(world_dir)


def _record(world, world_dir, out, seed=7, storage="mcap", compressed=True, depth=True):
    return record_drive(
        world_dir, out,
        drive_config=DriveConfig(seconds=SECONDS, seed=seed),
        gnss_config=GnssConfig(seed=seed, nofix_rate_per_min=0.0),
        odom_config=OdomConfig(seed=seed),
        bag_config=BagConfig(storage=storage, compressed=compressed, depth=depth),
        width_px=W_PX, height_px=H_PX, world=world, progress=False,
    )


def _read_all(bag: Path) -> dict:
    """topic -> list of (log_time_ns, raw bytes, rosbags message); plus connections."""
    out: dict = {}
    with AnyReader([bag]) as reader:
        out["_connections"] = {c.topic: c for c in reader.connections}
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, bytes(raw), reader.deserialize(raw, conn.msgtype)))
    return out


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_reads_back_with_rosbags_and_rclpy(world, world_dir, tmp_path, storage):
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from rclpy.serialization import deserialize_message
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, NavSatFix
    from tf2_msgs.msg import TFMessage

    bag = _record(world, world_dir, tmp_path / "drive", storage=storage)
    suffix = ".mcap" if storage == "mcap" else ".db3"
    assert any(p.suffix == suffix for p in bag.iterdir())
    msgs = _read_all(bag)
    n = int(SECONDS * 10)
    counts = {t: len(msgs.get(TOPICS[t], [])) for t in TOPICS}
    assert counts == {"image": n, "compressed": n, "camera_info": n, "depth": n, "fix": n // 2,
                      "odom": n, "tf_static": 1, "ground_truth": n, "clock": n}
    # tf_static is offered transient-local
    qos = msgs["_connections"][TOPICS["tf_static"]].ext.offered_qos_profiles
    assert qos and qos[0].durability == QosDurability.TRANSIENT_LOCAL

    # the same truth the simulation produces
    traj = generate_trajectory(world, DriveConfig(seconds=SECONDS, seed=7))
    gnss = simulate_gnss(world, traj, GnssConfig(seed=7, nofix_rate_per_min=0.0))
    odo = simulate_odometry(traj, OdomConfig(seed=7))

    camera = PinholeCamera.kitti_like(W_PX, H_PX)
    renderer = GroundRenderer(world, camera, kitti_like_T_base_camera(1.65))
    for k, (log_ns, raw, msg) in enumerate(msgs[TOPICS["image"]]):
        ros = deserialize_message(raw, Image)
        assert (ros.height, ros.width, ros.encoding, ros.step) == (H_PX, W_PX, "rgb8", 3 * W_PX)
        assert ros.header.frame_id == msg.header.frame_id == FRAMES["camera"]
        assert bytes(ros.data) == msg.data.tobytes()
        assert _stamp_ns(ros.header) == log_ns == traj.stamp_ns[k]
        if k in (0, n - 1):  # pixels are the renderer's at the ground-truth pose
            expected = renderer.render(traj.T_map_base(k)).rgb
            assert np.array_equal(np.frombuffer(bytes(ros.data), np.uint8).reshape(H_PX, W_PX, 3), expected)
    for k, (_log_ns, raw, _msg) in enumerate(msgs[TOPICS["depth"]]):
        ros = deserialize_message(raw, Image)
        assert ros.encoding == "32FC1" and ros.step == 4 * W_PX
        depth = np.frombuffer(bytes(ros.data), "<f4").reshape(H_PX, W_PX)
        assert np.all(np.isnan(depth) | (depth > 0))  # REP 118: NaN = no return
        if k == 0:
            expected = renderer.render(traj.T_map_base(0)).depth_m
            ok = expected > 0
            np.testing.assert_array_equal(depth[ok], expected[ok].astype(np.float32))
            assert np.all(np.isnan(depth[~ok]))
    for _log_ns, raw, _msg in msgs[TOPICS["compressed"]][:2]:
        ros = deserialize_message(raw, CompressedImage)
        assert ros.format.startswith("rgb8; jpeg") and bytes(ros.data)[:2] == b"\xff\xd8"
    for _log_ns, raw, msg in msgs[TOPICS["camera_info"]][:1]:
        ros = deserialize_message(raw, CameraInfo)
        np.testing.assert_allclose(np.asarray(ros.k), camera.K.reshape(-1))
        np.testing.assert_allclose(np.asarray(ros.k), msg.k)
        assert ros.distortion_model == "plumb_bob" and list(ros.d) == [0.0] * 5
        assert (ros.width, ros.height) == (W_PX, H_PX)
        np.testing.assert_allclose(np.asarray(ros.p).reshape(3, 4)[:, :3], camera.K)
    for j, (log_ns, raw, msg) in enumerate(msgs[TOPICS["fix"]]):
        ros = deserialize_message(raw, NavSatFix)
        assert ros.status.status == msg.status.status == 0
        assert ros.latitude == msg.latitude == gnss.lat_deg[j]
        assert ros.longitude == msg.longitude == gnss.lon_deg[j]
        assert ros.position_covariance_type == NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
        np.testing.assert_allclose(np.asarray(ros.position_covariance)[[0, 4, 8]], gnss.cov_enu_m2)
        assert _stamp_ns(ros.header) == log_ns == gnss.stamp_ns[j]
    for k, (_log_ns, raw, msg) in enumerate(msgs[TOPICS["odom"]]):
        ros = deserialize_message(raw, Odometry)
        assert (ros.header.frame_id, ros.child_frame_id) == ("odom", "base_link")
        assert ros.pose.pose.position.x == msg.pose.pose.position.x == pytest.approx(odo.xy_m[k, 0])
        yaw = 2 * math.atan2(ros.pose.pose.orientation.z, ros.pose.pose.orientation.w)
        assert math.cos(yaw - odo.yaw_rad[k]) == pytest.approx(1.0)
        cov = np.asarray(ros.pose.covariance).reshape(6, 6)
        assert np.all(np.isfinite(cov)) and cov.max() <= 1e6 and np.all(np.diag(cov) > 0)
    for k, (_log_ns, raw, _msg) in enumerate(msgs[TOPICS["ground_truth"]]):
        ros = deserialize_message(raw, PoseStamped)
        assert ros.header.frame_id == "map"
        assert ros.pose.position.x == pytest.approx(traj.xy_m[k, 0])
        assert ros.pose.position.y == pytest.approx(traj.xy_m[k, 1])
        yaw = 2 * math.atan2(ros.pose.orientation.z, ros.pose.orientation.w)
        assert math.cos(yaw - traj.yaw_rad[k]) == pytest.approx(1.0)
    (_log_ns, raw, msg), = msgs[TOPICS["tf_static"]]
    ros = deserialize_message(raw, TFMessage)
    (tf,) = ros.transforms
    assert (tf.header.frame_id, tf.child_frame_id) == ("base_link", FRAMES["camera"])
    assert tf.transform.translation.z == pytest.approx(1.65)
    q = tf.transform.rotation
    # optical z axis (forward) maps to base x: R[:, 2] = (1, 0, 0)
    x, y, z, w = q.x, q.y, q.z, q.w
    r02, r12, r22 = 2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)
    np.testing.assert_allclose([r02, r12, r22], [1.0, 0.0, 0.0], atol=1e-12)
    for k, (log_ns, raw, _msg) in enumerate(msgs[TOPICS["clock"]]):
        ros = deserialize_message(raw, Clock)
        assert ros.clock.sec * 1_000_000_000 + ros.clock.nanosec == log_ns == traj.stamp_ns[k]


def test_stamps_consistent_across_topics(world, world_dir, tmp_path):
    msgs = _read_all(_record(world, world_dir, tmp_path / "d", compressed=False, depth=False))
    stamps = {}
    for key in ("image", "camera_info", "odom", "ground_truth", "fix"):
        ns = [_stamp_ns(m.header) for _log, _raw, m in msgs[TOPICS[key]]]
        logs = [log for log, _raw, _m in msgs[TOPICS[key]]]
        assert ns == logs  # bag log time = header stamp
        assert all(b > a for a, b in zip(ns, ns[1:]))
        stamps[key] = ns
    assert stamps["image"] == stamps["camera_info"] == stamps["odom"] == stamps["ground_truth"]
    assert stamps["fix"] == stamps["image"][::2]
    assert stamps["image"][0] == 1_700_000_000_000_000_000
    assert np.all(np.diff(stamps["image"]) == 100_000_000)
    (log_tf, _raw, tfm), = msgs[TOPICS["tf_static"]]
    assert log_tf == stamps["image"][0] == _stamp_ns(tfm.transforms[0].header)


def test_same_seed_gives_byte_identical_images(world, world_dir, tmp_path):
    a = _read_all(_record(world, world_dir, tmp_path / "a", seed=5, compressed=True, depth=False))
    b = _read_all(_record(world, world_dir, tmp_path / "b", seed=5, storage="sqlite3", compressed=True,
                          depth=False))
    c = _read_all(_record(world, world_dir, tmp_path / "c", seed=6, compressed=False, depth=False))
    for topic in (TOPICS["image"], TOPICS["compressed"], TOPICS["fix"], TOPICS["odom"]):
        assert [raw for _l, raw, _m in a[topic]] == [raw for _l, raw, _m in b[topic]]
    assert [raw for _l, raw, _m in a[TOPICS["image"]]] != [raw for _l, raw, _m in c[TOPICS["image"]]]


def test_sidecar_and_metadata(world, world_dir, tmp_path):
    bag = _record(world, world_dir, tmp_path / "s", compressed=False, depth=False)
    side = read_sidecar(bag)
    assert side["datum"] == {"lat_deg": 49.01, "lon_deg": 8.42, "h_m": 0.0}
    assert side["map_frame"]["id"] == "map"
    assert side["tile_url"] == f"file://{world_dir.resolve()}/tiles/{{z}}/{{x}}/{{y}}.png"
    assert side["world"]["seed"] == 3 and side["drive"]["seed"] == 7
    assert side["camera"]["width_px"] == W_PX and len(side["camera"]["k"]) == 9
    np.testing.assert_allclose(np.asarray(side["camera"]["T_base_camera"]), kitti_like_T_base_camera(1.65))
    meta = (bag / "metadata.yaml").read_text()
    assert "world_seed" in meta and "tile_url" in meta
    with pytest.raises(BagError, match="exists"):
        _record(world, world_dir, bag)
    with pytest.raises(BagError, match="sim.yaml"):
        read_sidecar(tmp_path)
    with pytest.raises(ConfigError, match="storage"):
        BagConfig(storage="rosbag1")


def test_a_distorted_camera_is_rendered_and_announced(world, world_dir, tmp_path):
    """A lens given to ``record_drive`` (or ``sim drive --distortion-model``) is what the images
    are rendered through and what every CameraInfo says; a panorama has no CameraInfo model."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo

    from xview_localizer.cli import main
    from xview_localizer.core.camera_pano import EquirectangularCamera

    k = PinholeCamera.kitti_like(W_PX, H_PX).k
    cam = PinholeCamera(W_PX, H_PX, k, (-0.12, 0.01, 0.001, -0.001, 0.0), "plumb_bob")
    bag = record_drive(world_dir, tmp_path / "lens", drive_config=DriveConfig(seconds=0.5, seed=7),
                       gnss_config=GnssConfig(seed=7, nofix_rate_per_min=0.0), odom_config=OdomConfig(seed=7),
                       bag_config=BagConfig(compressed=False, depth=False), world=world, progress=False, camera=cam)
    msgs = _read_all(bag)
    infos = [deserialize_message(raw, CameraInfo) for _l, raw, _m in msgs[TOPICS["camera_info"]]]
    assert len(infos) == 5
    for info in infos:
        assert info.distortion_model == "plumb_bob" and list(info.d) == list(cam.d)
        np.testing.assert_allclose(np.asarray(info.k), cam.k)
    side = read_sidecar(bag)["camera"]
    assert side["distortion_model"] == "plumb_bob" and side["d"] == list(cam.d)
    traj = generate_trajectory(world, DriveConfig(seconds=0.5, seed=7))
    rgb = msgs[TOPICS["image"]][0][2].data.reshape(H_PX, W_PX, 3)
    T = kitti_like_T_base_camera(1.65)
    assert np.array_equal(rgb, GroundRenderer(world, cam, T).render(traj.T_map_base(0)).rgb)
    assert not np.array_equal(rgb, GroundRenderer(world, PinholeCamera(W_PX, H_PX, k), T).render(traj.T_map_base(0)).rgb)
    with pytest.raises(BagError, match="CameraInfo"):
        record_drive(world_dir, tmp_path / "pano", drive_config=DriveConfig(seconds=0.5, seed=7),
                     gnss_config=GnssConfig(seed=7), odom_config=OdomConfig(seed=7), world=world, progress=False,
                     camera=EquirectangularCamera(64, 32))
    # the CLI: a fisheye for the KITTI-like camera
    out = tmp_path / "cli"
    assert main(["sim", "drive", "--world", str(world_dir), "--seconds", "0.3", "--out", str(out), "--width", "64",
                 "--height", "24", "--distortion-model", "equidistant", "--distortion", "0.01", "0", "0", "0"]) == 0
    info = deserialize_message(_read_all(out)[TOPICS["camera_info"]][0][1], CameraInfo)
    assert info.distortion_model == "equidistant" and list(info.d) == [0.01, 0.0, 0.0, 0.0]
    assert main(["sim", "drive", "--world", str(world_dir), "--seconds", "0.3", "--out", str(tmp_path / "bad"),
                 "--distortion-model", "plumb_bob", "--distortion", "0.1"]) == 1
