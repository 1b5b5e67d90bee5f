"""The node over real DDS with the packaged depth-prior SPARSE matcher and a depth topic.

Like ``test_node_real_matcher.py`` (whose helpers it reuses), with the sparse-depth checkpoint
selected by its bare packaged name (``checkpoint_path: sparse_depth_compact.pt``),
``use_depth: true`` and ``depth_kind: metric``. A seeded synthetic world held out from training
(seed :data:`WORLD_SEED`) serves its tiles over HTTP; a short drive (512x128 images, the compact
preset's ground size; 256 px x 0.4 m/px patches, its satellite input) is written WITH
``/camera/depth`` (32FC1 metres, optical z) and evaluated twice:

* offline: :func:`xview_localizer.evaluation.replay.replay_bag`, which finds the depth topic and pairs each
  image with the depth of the same stamp;
* online: ``localizer_node`` in its own process, the bag played over DDS in LOCK-STEP (each
  image's depth is published and counted by the node before the image; the next image only
  after the node has finished the frame).

Asserted: every image got its depth in both runs; poses for >= 80 % of the images; the median
position error of the node's poses is below the median error of the GNSS prior at the same
images; the node's accepted frames equal the offline ones (+-1) and the per-frame errors agree
within 10 % (or 5 cm). These hold for any working model, relative to the GNSS prior; nothing is
tuned to one checkpoint.

Every :data:`HALF_DEPTH_EVERY`-th depth map is halved in size in the bag: both runs must resize
it to the image (nearest neighbour), not drop it.

Measured with the shipped checkpoint (2 CPU cores): 30 images, 30 poses by the node and
offline (100 %, no rejections), median position error 1.01 m against the GNSS prior's 5.08 m,
node and offline errors equal per frame (0.17-2.49 m); node 0.14 s per frame; ~25 s in all
(data 5 s, offline 4 s, node 11 s). (A preliminary checkpoint without depth on this drive: 6
poses, median 8.0 m.)

The test FAILS (never skips) when ``xview_localizer/checkpoints/sparse_depth_compact.pt`` is not
packaged.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from test_node import _domain_id
from test_node_real_matcher import _bag_truth, _error_xyyaw, node_params, play_lockstep

from xview_localizer.ros import conversions as conv

tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_tf2_msgs.sh)")

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NS = 1_000_000_000
WORLD_SEED = 1078  # held out (training recipes use 1-20)
WORLD_SIZE_M = 300.0
DRIVE_SECONDS = 9.0
CAMERA_RATE_HZ = 5.0
CAMERA_START_S = 3.0  # images from here on: 30 images over 6 s
IMAGE_W_PX, IMAGE_H_PX = 512, 128
TILE_ZOOM = 18  # ~0.39 m/px at the sim datum (49 deg N): the 0.4 m/px patches need no upsampling
MAP_FRAME = "xview_map"
#: Shared by the node and the offline replay: the compact sparse preset's satellite input
#: (256 px at 0.4 m/px), the packaged sparse checkpoint by its bare name, metric depth.
LOCALIZER_PARAMS = {"patch_size_px": 256, "patch_m_per_px": 0.4, "depth_kind": "metric"}
CHECKPOINT_NAME = "sparse_depth_compact.pt"
MIN_AVAILABILITY = 0.8
#: Every HALF_DEPTH_EVERY-th depth map (from the first image on) is halved in size in the bag:
#: both runs must resize it (nearest neighbour) to the image instead of dropping it.
HALF_DEPTH_EVERY = 3


def _require_checkpoint() -> Path:
    """The packaged sparse checkpoint; fails the test (not a skip) when it is missing."""
    from xview_localizer.matcher.factory import SPARSE_CHECKPOINT_NAME, packaged_checkpoint_dir

    assert SPARSE_CHECKPOINT_NAME == CHECKPOINT_NAME
    path = packaged_checkpoint_dir() / CHECKPOINT_NAME
    if not path.is_file():
        pytest.fail(f"no packaged sparse-depth checkpoint {path}: this test needs the trained model")
    return path


def _make_drive(root: Path) -> tuple[Path, Path]:
    """World (tiles at :data:`TILE_ZOOM`) and the drive bag WITH depth, without the first
    CAMERA_START_S s of images (the GNSS course gives the prior yaw by the first image).
    Returns (tile folder, bag)."""
    from xview_localizer.sim.aerial import write_tile_pyramid
    from xview_localizer.sim.bag import BagConfig, record_drive
    from xview_localizer.sim.drive import DriveConfig, GnssConfig, OdomConfig
    from xview_localizer.sim.world import WorldConfig, generate_world

    world = generate_world(WorldConfig(seed=WORLD_SEED, size_m=WORLD_SIZE_M))
    world.save(root / "world")
    write_tile_pyramid(world, root / "world" / "tiles", zoom_max=TILE_ZOOM, zoom_min=TILE_ZOOM, mbtiles=False,
                       margin_m=64.0)
    drive = DriveConfig(seconds=DRIVE_SECONDS, rate_hz=CAMERA_RATE_HZ, seed=1, accel_max_m_s2=3.0,
                        speed_range_m_s=(8.0, 12.0), stop_probability=0.0)
    full = record_drive(root / "world", root / "bag_full", drive_config=drive,
                        gnss_config=GnssConfig(rate_hz=CAMERA_RATE_HZ, seed=1, nofix_rate_per_min=0.0,
                                               outlier_probability=0.0),
                        odom_config=OdomConfig(seed=1), bag_config=BagConfig(depth=True), width_px=IMAGE_W_PX,
                        height_px=IMAGE_H_PX, world=world, progress=False)
    bag = _copy_for_test(full, root / "bag", drive.start_stamp_ns + int(CAMERA_START_S * NS))
    return root / "world" / "tiles", bag


def _copy_for_test(src: Path, dst: Path, first_image_ns: int) -> Path:
    """Copy the rosbag2 ``src`` to ``dst`` without images / camera_info / depth logged before
    ``first_image_ns``, every :data:`HALF_DEPTH_EVERY`-th depth map after that halved in size
    (every other row and column); the ``sim.yaml`` sidecar comes along."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from xview_localizer.sim.bag import SIDECAR_NAME, TOPICS

    camera_topics = {TOPICS["image"], TOPICS["camera_info"], TOPICS["depth"]}
    ts = get_typestore(Stores.ROS2_KILTED)
    writer = Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    n_depth = 0
    try:
        with AnyReader([src], default_typestore=ts) as reader:
            conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=ts) for c in reader.connections}
            for c, log_ns, raw in reader.messages():
                if c.topic in camera_topics and log_ns < first_image_ns:
                    continue
                if c.topic == TOPICS["depth"]:
                    if n_depth % HALF_DEPTH_EVERY == 0:
                        raw = _halved_depth(ts, reader.deserialize(raw, c.msgtype))
                    n_depth += 1
                writer.write(conns[c.id], log_ns, raw)
    finally:
        writer.close()
    shutil.copy(src / SIDECAR_NAME, dst / SIDECAR_NAME)
    return dst


def _halved_depth(ts, msg) -> bytes:
    """CDR of a 32FC1 depth message with every other row and column."""
    full = np.frombuffer(bytes(msg.data), dtype="<f4").reshape(int(msg.height), int(msg.width))
    half = np.ascontiguousarray(full[::2, ::2])
    out = ts.types["sensor_msgs/msg/Image"](header=msg.header, height=half.shape[0], width=half.shape[1],
                                            encoding="32FC1", is_bigendian=0, step=half.shape[1] * 4,
                                            data=np.frombuffer(half.tobytes(), dtype=np.uint8))
    return bytes(ts.serialize_cdr(out, "sensor_msgs/msg/Image"))


def _load_messages(bag: Path) -> tuple[list, dict]:
    """rclpy messages to play, in the bag's order except that an image's depth (same stamp)
    goes right before the image, as from an RGB-D camera; and the types."""
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, NavSatFix

    from xview_localizer.sim.bag import TOPICS

    types = {"clock": Clock, "tf_static": tf2_msgs.TFMessage, "image": Image, "camera_info": CameraInfo,
             "fix": NavSatFix, "odom": Odometry, "ground_truth": PoseStamped, "depth": Image}
    by_topic = {TOPICS[k]: k for k in types}
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        conns = [c for c in reader.connections if c.topic in by_topic]
        msgs = [(by_topic[c.topic], deserialize_message(bytes(raw), types[by_topic[c.topic]]))
                for c, _log_ns, raw in reader.messages(connections=conns)]
    image_stamps = {conv.stamp_to_ns(m.header.stamp) for k, m in msgs if k == "image"}
    depth_of = {conv.stamp_to_ns(m.header.stamp): m for k, m in msgs if k == "depth"}
    ordered = []
    for kind, msg in msgs:
        if kind == "depth" and conv.stamp_to_ns(msg.header.stamp) in image_stamps:
            continue  # goes with its image
        if kind == "image" and conv.stamp_to_ns(msg.header.stamp) in depth_of:
            ordered.append(("depth", depth_of[conv.stamp_to_ns(msg.header.stamp)]))
        ordered.append((kind, msg))
    return ordered, types


def _offline(bag: Path, tile_url: str, cache_dir: Path):
    """``replay_bag`` with the packaged sparse checkpoint (depth auto-detected):
    ``({image stamp: FrameRecord}, meta['depth'])``."""
    from xview_localizer.evaluation.replay import (
        ReplayConfig,
        load_matcher_for_replay,
        node_config_for_bag,
        replay_bag,
    )
    from xview_localizer.pipeline.config import node_config_from_flat
    from xview_localizer.tiles.cache import TileCache, TileCacheConfig

    node = node_config_from_flat({**LOCALIZER_PARAMS, "checkpoint_path": CHECKPOINT_NAME, "device": "cpu",
                                  "map_frame": MAP_FRAME})
    node, _ = node_config_for_bag(bag, node)
    matcher = load_matcher_for_replay(CHECKPOINT_NAME, "cpu", runtime=node.matcher_runtime)  # the node's runtime (compile)
    with TileCache(tile_url, cache_dir, TileCacheConfig()) as tiles:
        data = replay_bag(bag, ReplayConfig(node=node, progress=False), matcher, tiles, tile_url)
    return {f.stamp_ns: f for f in data.frames}, data.meta["depth"]


def _online(bag: Path, tile_url: str, cache_dir: Path):
    """The node with the packaged sparse checkpoint and ``use_depth``, the bag played in
    lock-step (each depth map counted by the node before its image); returns (poses by stamp,
    per-frame wall s, final diagnostics)."""
    from xview_localizer.sim.bag import TOPICS

    msgs, types = _load_messages(bag)
    params = node_params(bag, tile_url, cache_dir, **LOCALIZER_PARAMS, checkpoint_path=CHECKPOINT_NAME,
                         use_depth="true")
    remaps = {k: TOPICS[k] for k in ("image", "camera_info", "fix", "odom", "depth")}
    poses, _tfs, frame_wall_s, diag, _out = play_lockstep(
        msgs, types, _domain_id(13), params, remaps, {"fix": "fixes_total", "depth": "depths_total"}, 0.5)
    return poses, frame_wall_s, diag


def _gnss_errors_m(bag: Path, truth: dict, images: list[int]) -> list[float]:
    """Position error of the GNSS prior at each image: the latest valid fix at or before the
    image stamp, in the sim's ENU map frame, against the true position at the image."""
    from xview_localizer.core.geo import LocalEnu
    from xview_localizer.evaluation.replay import open_reader
    from xview_localizer.sim.bag import TOPICS, read_sidecar

    side = read_sidecar(bag)
    enu = LocalEnu(side["datum"]["lat_deg"], side["datum"]["lon_deg"])
    fixes = []
    with open_reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == TOPICS["fix"]]
        for c, _log_ns, raw in reader.messages(connections=conns):
            m = reader.deserialize(raw, c.msgtype)
            if m.status.status >= 0 and math.isfinite(m.latitude) and math.isfinite(m.longitude):
                fixes.append((conv.stamp_to_ns(m.header.stamp), *enu.forward(m.latitude, m.longitude)))
    errors = []
    for s in images:
        before = [f for f in fixes if f[0] <= s]
        assert before, f"no fix before the image at {s}"
        _, e_m, n_m = max(before)
        errors.append(math.hypot(float(e_m) - truth[s][0], float(n_m) - truth[s][1]))
    return errors


def test_node_with_sparse_depth_checkpoint_and_depth_matches_offline_replay(tmp_path):
    from xview_localizer.tiles.server import TileServer

    _require_checkpoint()
    t_start = time.monotonic()
    tiles_dir, bag = _make_drive(tmp_path)
    truth, _odom_at, images, _fixes = _bag_truth(bag)
    gnss_err = _gnss_errors_m(bag, truth, images)
    server = TileServer(root=tiles_dir, port=0).start()
    try:
        tile_url = server.url_template()
        t_data = time.monotonic()
        offline, offline_depth = _offline(bag, tile_url, tmp_path / "cache_offline")
        t_offline = time.monotonic()
        poses, frame_wall_s, diag = _online(bag, tile_url, tmp_path / "cache_node")
        t_online = time.monotonic()
    finally:
        server.shutdown()

    # Every image was handled by both runs, each with its depth map.
    assert sorted(offline) == images
    assert len(frame_wall_s) == len(images)
    assert diag.count("frames_dropped_total") == 0, diag.summary
    n_halved = len(range(0, len(images), HALF_DEPTH_EVERY))
    assert offline_depth["frames_with_depth"] == len(images) and offline_depth["invalid_messages"] == 0
    assert offline_depth["resized"] == n_halved
    assert diag.count("frames_with_depth_total") == len(images), diag.summary
    assert diag.count("frames_without_depth_total") == 0, diag.summary
    assert diag.count("depth_resized_total") == n_halved, diag.summary

    assert set(poses) <= set(images)
    for m in poses.values():
        assert m.header.frame_id == MAP_FRAME
        c = np.array(m.pose.covariance).reshape(6, 6)
        assert np.allclose(c, c.T) and np.linalg.eigvalsh(c).min() > 0, c

    def xy_error(x_m: float, y_m: float, s: int) -> float:
        return float(np.hypot(*_error_xyyaw(x_m, y_m, 0.0, truth[s])[:2]))

    offline_ok = {s for s, f in offline.items() if f.accepted}
    node_ok = set(poses)
    node_err = {s: xy_error(m.pose.pose.position.x, m.pose.pose.position.y, s) for s, m in poses.items()}
    offline_err = {s: xy_error(offline[s].x_m, offline[s].y_m, s) for s in offline_ok}
    availability = len(node_ok) / len(images)
    node_median_m = float(np.median(list(node_err.values()))) if node_err else math.inf
    gnss_median_m = float(np.median(gnss_err))
    reasons: dict[str, int] = {}
    for f in offline.values():
        if not f.accepted:
            reasons[f.reason] = reasons.get(f.reason, 0) + 1
    print(f"\nsparse-depth {CHECKPOINT_NAME}: {len(images)} images, node poses {len(node_ok)} ({availability:.0%}), "
          f"offline poses {len(offline_ok)}; offline rejections {reasons}; node causes {diag.cause_totals}")
    print(f"median xy error: node {node_median_m:.2f} m, offline "
          f"{float(np.median(list(offline_err.values()))) if offline_err else math.nan:.2f} m, "
          f"GNSS prior {gnss_median_m:.2f} m")
    print("per-frame xy error offline / node (m): " + ", ".join(
        f"{offline_err[s]:.2f}/{node_err[s]:.2f}" for s in sorted(offline_ok & node_ok)))
    print(f"node wall s per frame: mean {np.mean(frame_wall_s):.2f}, max {np.max(frame_wall_s):.2f}; timings: data "
          f"{t_data - t_start:.0f} s, offline {t_offline - t_data:.0f} s, node {t_online - t_offline:.0f} s")

    assert availability >= MIN_AVAILABILITY, (availability, reasons, diag.cause_totals)
    assert node_median_m < gnss_median_m, (node_median_m, gnss_median_m)
    differ = offline_ok ^ node_ok
    assert len(differ) <= 1, (sorted(offline_ok - node_ok), sorted(node_ok - offline_ok))
    for s in sorted(offline_ok & node_ok):
        assert abs(node_err[s] - offline_err[s]) <= max(0.1 * offline_err[s], 0.05), (s, offline_err[s], node_err[s])
