"""The node over real DDS with a REAL trained matcher checkpoint (issue 7, requirement 6).

A seeded synthetic world's tiles are served by the HTTP :class:`TileServer`; a short seeded
drive (512x128 images, as the matcher was trained on) is written as a rosbag2. The same bag is
evaluated twice with the same checkpoint and the same localizer parameters:

* offline: :func:`xview_localizer.evaluation.replay.replay_bag` (no DDS, the Localizer core in-process);
* online: ``localizer_node --ros-args --params-file ...`` as a separate process
  (``use_sim_time``, ``device: cpu``), the bag played over DDS in LOCK-STEP: each image is
  published with its context (clock, odometry, fix, camera_info; /tf_static once, transient
  local) and the next one only after the node has finished the frame (a pose with that stamp
  arrived, or ``/diagnostics`` counts it as processed or rejected). A slow CPU matcher therefore
  drops nothing and both runs see exactly the same inputs per frame. Each frame is time-boxed.

Asserted: pose stamps are image stamps, frames as configured, covariance symmetric positive
definite, TF ``map -> odom`` composed with odometry equals the pose, the node's accepted frames
equal the offline ones (+-1), per-frame errors within 10 % (or 5 cm) of the offline errors,
availability >= 90 % of the frames with a valid fix, and the summed NEES of (x, y, yaw) below
the 99.5 % quantile of chi2(3N).

The checkpoint is ``$XVIEW_TEST_CHECKPOINT`` when set, else the packaged dense-flow matcher
``xview_localizer/checkpoints/dense_flow_compact.pt`` (selectable by name; the default is the
sparse one, tested over DDS in ``test_node_sparse_depth.py``); the test FAILS (never skips) when
neither exists.

Timeline of the drive: the vehicle starts from rest, so images are dropped from the bag for
the first :data:`CAMERA_START_S` seconds (GNSS and odometry are kept): by the first image the
GNSS course gives the prior yaw, as on a vehicle whose camera starts after the GNSS.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from test_node import _domain_id, _start_node, _stop_node

from xview_localizer.ros import conversions as conv

tf2_msgs = pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_tf2_msgs.sh)")

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NS = 1_000_000_000
CHECKPOINT_ENV = "XVIEW_TEST_CHECKPOINT"
WORLD_SEED = 1077  # a held-out seed (training recipes use 1-20)
WORLD_SIZE_M = 300.0
DRIVE_SECONDS = 7.0
CAMERA_RATE_HZ = 5.0
CAMERA_START_S = 3.0  # images from here on: 20 images over 4 s
IMAGE_W_PX, IMAGE_H_PX = 512, 128  # the training pairs' ground image size
MAP_FRAME = "xview_map"  # not the default: proves the configured frame is used
#: Localizer parameters shared by the node and the offline replay (the rest: config defaults,
#: i.e. the 512 px x 0.2 m/px patch the matcher was trained with).
LOCALIZER_PARAMS = {"patch_size_px": 512, "patch_m_per_px": 0.2}
FRAME_TIMEOUT_S = 60.0
FIX_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 90.0
#: Causes with which the node gives up on an image before the core runs (not counted in
#: ``frames_processed_total``).
EARLY_CAUSES = ("image_invalid", "no_camera_info", "camera_info_mismatch", "waiting_for_extrinsics",
                "matcher_loading", "matcher_unavailable", "internal_error")
Z_995 = 2.5758293035489  # standard normal 99.5 % quantile


def _checkpoint() -> Path:
    """The checkpoint under test; fails the test (not a skip) when there is none."""
    from xview_localizer.matcher.factory import DENSE_FLOW_CHECKPOINT_NAME, packaged_checkpoint_dir

    env = os.environ.get(CHECKPOINT_ENV, "")
    if env:
        path = Path(env).expanduser().resolve()
        if not path.is_file():
            pytest.fail(f"${CHECKPOINT_ENV}={env!r} is not a file")
        return path
    path = packaged_checkpoint_dir() / DENSE_FLOW_CHECKPOINT_NAME
    if not path.is_file():
        pytest.fail(f"no matcher checkpoint: the packaged dense-flow {path} does not exist and ${CHECKPOINT_ENV} "
                    "is not set; this test needs a trained checkpoint")
    return path


def chi2_quantile_wh(dof: int, z: float) -> float:
    """Chi-square quantile with ``dof`` degrees of freedom at standard-normal quantile ``z``
    (Wilson-Hilferty: (X/k)^(1/3) ~ N(1 - 2/(9k), 2/(9k)); relative error < 1 % for k >= 10)."""
    h = 2.0 / (9.0 * dof)
    return dof * (1.0 - h + z * math.sqrt(h)) ** 3


def test_chi2_quantile_wh_matches_tabulated_values():
    # chi2 tables: 99.5 % and 0.5 % quantiles for k = 30 and k = 60.
    assert chi2_quantile_wh(30, Z_995) == pytest.approx(53.672, rel=5e-3)
    assert chi2_quantile_wh(30, -Z_995) == pytest.approx(13.787, rel=1e-2)
    assert chi2_quantile_wh(60, Z_995) == pytest.approx(91.952, rel=5e-3)


# ----------------------------------------------------------------------------------------------
# Data: world, tiles, bag
# ----------------------------------------------------------------------------------------------
def _make_drive(root: Path) -> tuple[Path, Path]:
    """World (tiles at zoom 19) and the drive bag without the first CAMERA_START_S s of images.
    Returns (tile folder, bag)."""
    from xview_localizer.sim.aerial import write_tile_pyramid
    from xview_localizer.sim.bag import record_drive
    from xview_localizer.sim.drive import DriveConfig, GnssConfig, OdomConfig
    from xview_localizer.sim.world import WorldConfig, generate_world

    world = generate_world(WorldConfig(seed=WORLD_SEED, size_m=WORLD_SIZE_M))
    world.save(root / "world")
    write_tile_pyramid(world, root / "world" / "tiles", zoom_max=19, zoom_min=19, mbtiles=False, margin_m=64.0)
    drive = DriveConfig(seconds=DRIVE_SECONDS, rate_hz=CAMERA_RATE_HZ, seed=1, accel_max_m_s2=3.0,
                        speed_range_m_s=(8.0, 12.0), stop_probability=0.0)
    full = record_drive(root / "world", root / "bag_full", drive_config=drive,
                        gnss_config=GnssConfig(rate_hz=CAMERA_RATE_HZ, seed=1, nofix_rate_per_min=0.0,
                                               outlier_probability=0.0),
                        odom_config=OdomConfig(seed=1), width_px=IMAGE_W_PX, height_px=IMAGE_H_PX, world=world,
                        progress=False)
    bag = _drop_early_images(full, root / "bag", drive.start_stamp_ns + int(CAMERA_START_S * NS))
    return root / "world" / "tiles", bag


def _drop_early_images(src: Path, dst: Path, first_image_ns: int) -> Path:
    """Copy the rosbag2 ``src`` to ``dst`` without images / camera_info logged before
    ``first_image_ns`` (raw CDR copied as is); the ``sim.yaml`` sidecar comes along."""
    from rosbags.highlevel import AnyReader
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from xview_localizer.sim.bag import SIDECAR_NAME, TOPICS

    camera_topics = {TOPICS["image"], TOPICS["camera_info"]}
    ts = get_typestore(Stores.ROS2_KILTED)
    writer = Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        with AnyReader([src], default_typestore=ts) as reader:
            conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=ts) for c in reader.connections}
            for c, log_ns, raw in reader.messages():
                if c.topic in camera_topics and log_ns < first_image_ns:
                    continue
                writer.write(conns[c.id], log_ns, raw)
    finally:
        writer.close()
    shutil.copy(src / SIDECAR_NAME, dst / SIDECAR_NAME)
    return dst


def _load_messages(bag: Path) -> tuple[list, dict]:
    """rclpy messages to play, in the bag's (= the offline replay's) order, and the types."""
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, NavSatFix

    from xview_localizer.sim.bag import TOPICS

    types = {"clock": Clock, "tf_static": tf2_msgs.TFMessage, "image": Image, "camera_info": CameraInfo,
             "fix": NavSatFix, "odom": Odometry, "ground_truth": PoseStamped}
    by_topic = {TOPICS[k]: k for k in types}
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        conns = [c for c in reader.connections if c.topic in by_topic]
        msgs = [(by_topic[c.topic], deserialize_message(bytes(raw), types[by_topic[c.topic]]))
                for c, _log_ns, raw in reader.messages(connections=conns)]
    return msgs, types


# ----------------------------------------------------------------------------------------------
# Offline
# ----------------------------------------------------------------------------------------------
def _offline(bag: Path, tile_url: str, checkpoint: Path, cache_dir: Path) -> dict[int, object]:
    """``replay_bag`` with the checkpoint: ``{image stamp: FrameRecord}``."""
    from xview_localizer.evaluation.replay import (
        ReplayConfig,
        load_matcher_for_replay,
        node_config_for_bag,
        replay_bag,
    )
    from xview_localizer.pipeline.config import node_config_from_flat
    from xview_localizer.tiles.cache import TileCache, TileCacheConfig

    node = node_config_from_flat({**LOCALIZER_PARAMS, "checkpoint_path": str(checkpoint), "device": "cpu",
                                  "map_frame": MAP_FRAME})
    node, _ = node_config_for_bag(bag, node)
    matcher = load_matcher_for_replay(str(checkpoint), "cpu", runtime=node.matcher_runtime)  # the node's runtime (compile)
    with TileCache(tile_url, cache_dir, TileCacheConfig()) as tiles:
        data = replay_bag(bag, ReplayConfig(node=node, progress=False), matcher, tiles, tile_url)
    return {f.stamp_ns: f for f in data.frames}


# ----------------------------------------------------------------------------------------------
# Online, lock-step
# ----------------------------------------------------------------------------------------------
class _DiagTotals:
    """The node's latest totals from /diagnostics (monotonic counters)."""

    def __init__(self) -> None:
        self.summary: dict[str, str] = {}
        self.cause_totals: dict[str, int] = {}

    def on_diag(self, arr) -> None:
        for st in arr.status:
            name = st.name.split(": ", 1)[-1]
            values = {kv.key: kv.value for kv in st.values}
            if name == "localization":
                self.summary = values
            elif "total" in values:
                self.cause_totals[name] = int(values["total"])

    def count(self, key: str) -> int:
        return int(self.summary.get(key, 0))

    def frames_done(self) -> int:
        return self.count("frames_processed_total") + sum(self.cause_totals.get(k, 0) for k in EARLY_CAUSES)


def _spin_until(h, proc, predicate, timeout_s: float, what: str, diag: _DiagTotals) -> float:
    """Spin the harness until ``predicate()``; returns the seconds waited. Fails on a timeout
    or a dead node (with what the node last reported)."""
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"node exited while waiting for {what}:\n{proc.communicate()[0]}")
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; node summary "
                                 f"{diag.summary}, causes {diag.cause_totals}")
        h.executor.spin_once(timeout_sec=0.01)
    return time.monotonic() - t0


def node_params(bag: Path, tile_url: str, cache_dir: Path, **extra) -> dict:
    """The node parameters both DDS tests share (``LOCALIZER_PARAMS``, sim time, CPU, ENU map
    from the drive's datum, the test's map frame, fast diagnostics) plus ``extra``."""
    from xview_localizer.sim.bag import read_sidecar

    side = read_sidecar(bag)
    return {**LOCALIZER_PARAMS, "use_sim_time": "true", "device": "cpu", "tile_url": tile_url,
            "tile_cache_dir": str(cache_dir), "map_projection": "enu",
            "datum_lat_deg": repr(side["datum"]["lat_deg"]), "datum_lon_deg": repr(side["datum"]["lon_deg"]),
            "map_frame": MAP_FRAME, "base_frame": side["frames"]["base"], "odom_frame": side["frames"]["odom"],
            "diagnostics_period_s": 0.05, "tf_static_wait_s": 60.0, **extra}


def play_lockstep(msgs: list, types: dict, domain: int, params: dict, remaps: dict,
                  paced: dict[str, str], trailing_s: float = 1.0):
    """Start ``localizer_node`` (``params``, ``remaps``) in ``domain`` and play ``msgs`` (kind,
    message) in LOCK-STEP: each image waits until the node has finished it (its pose arrived or
    /diagnostics counts it done); each message of a kind in ``paced`` waits until the node's
    diagnostics total named there counts it (sensor-data QoS keeps only the last 5). Returns
    (poses by stamp, TF list, per-frame wall seconds, final diagnostics, node output)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from test_node import Harness

    from xview_localizer.sim.bag import TOPICS

    proc = _start_node(domain, params, remaps)
    h = Harness(domain)
    diag = _DiagTotals()
    h.node.create_subscription(DiagnosticArray, "/diagnostics", diag.on_diag, 50)
    static_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs = {k: h.node.create_publisher(types[k], TOPICS[k], static_qos if k == "tf_static" else 10)
            for k in types if k != "ground_truth"}
    frame_wall_s: list[float] = []
    try:
        h.wait_for_node(proc, timeout_s=60.0, image_topic=TOPICS["image"])
        _spin_until(h, proc, lambda: diag.summary.get("matcher") in ("ready", "unavailable"), READY_TIMEOUT_S,
                    "the matcher to load", diag)
        assert diag.summary["matcher"] == "ready", f"matcher unavailable in the node: {diag.cause_totals}\n" \
            + "".join(m.message for _, arr in h.diags for m in arr.status if m.name.endswith("matcher_unavailable"))
        sent = dict.fromkeys(paced, 0)
        n_images = 0
        for kind, msg in msgs:
            if kind == "ground_truth":
                continue
            if kind != "image":
                pubs[kind].publish(msg)
                if kind in paced:
                    sent[kind] += 1
                    _spin_until(h, proc, lambda n=sent[kind], k=paced[kind]: diag.count(k) >= n, FIX_TIMEOUT_S,
                                f"the node to count {sent[kind]} {kind} messages", diag)
                continue
            stamp = conv.stamp_to_ns(msg.header.stamp)
            n_images += 1
            t0 = time.monotonic()
            pubs["image"].publish(msg)
            _spin_until(h, proc, lambda s=stamp, n=n_images: s in _stamps(h) or diag.frames_done() >= n,
                        FRAME_TIMEOUT_S, f"the node to finish image {n_images} (stamp {stamp})", diag)
            frame_wall_s.append(time.monotonic() - t0)
        h.spin_for(trailing_s)  # trailing pose / TF / diagnostics
        assert proc.poll() is None, "node died"
    finally:
        h.close()
        rc, out = _stop_node(proc)
    assert rc == 0 and "Traceback" not in out, out
    poses = {conv.stamp_to_ns(m.header.stamp): m for _, m in h.poses}
    return poses, h.tfs, frame_wall_s, diag, out


def _online(bag: Path, tile_url: str, checkpoint: Path, cache_dir: Path):
    """The node with ``checkpoint``, the bag played in lock-step (:func:`play_lockstep`)."""
    from xview_localizer.sim.bag import TOPICS

    msgs, types = _load_messages(bag)
    remaps = {k: TOPICS[k] for k in ("image", "camera_info", "fix", "odom")}
    return play_lockstep(msgs, types, _domain_id(11), node_params(bag, tile_url, cache_dir,
                         checkpoint_path=str(checkpoint)), remaps, {"fix": "fixes_total"})


def _stamps(h) -> set[int]:
    return {conv.stamp_to_ns(m.header.stamp) for _, m in h.poses}


# ----------------------------------------------------------------------------------------------
# Ground truth and metrics
# ----------------------------------------------------------------------------------------------
def _bag_truth(bag: Path):
    """(truth ``{stamp: (x, y, yaw)}``, odometry ``{stamp: SE2}``, image stamps, valid fix stamps)."""
    msgs, _ = _load_messages(bag)
    truth, odom_at, images, fixes = {}, {}, [], []
    for kind, msg in msgs:
        if not hasattr(msg, "header"):
            continue
        s = conv.stamp_to_ns(msg.header.stamp)
        if kind == "ground_truth":
            p = msg.pose
            truth[s] = (p.position.x, p.position.y, conv.quaternion_to_yaw_rad(p.orientation))
        elif kind == "odom":
            odom_at[s] = conv.odometry_to_sample(msg).T_odom_base
        elif kind == "image":
            images.append(s)
        elif kind == "fix" and msg.status.status >= 0 and math.isfinite(msg.latitude) and math.isfinite(
                msg.longitude):
            fixes.append(s)
    return truth, odom_at, images, fixes


def _error_xyyaw(x_m: float, y_m: float, yaw_rad: float, truth: tuple[float, float, float]) -> np.ndarray:
    """Estimate minus truth: (dx_m, dy_m, dyaw_rad wrapped to [-pi, pi])."""
    return np.array([x_m - truth[0], y_m - truth[1], math.remainder(yaw_rad - truth[2], 2.0 * math.pi)])


def _cov_xyyaw(msg) -> np.ndarray:
    """(3, 3) covariance of (x, y, yaw) from a PoseWithCovariance's row-major 6x6."""
    c = np.array(msg.pose.covariance, dtype=float).reshape(6, 6)
    idx = [0, 1, 5]
    return c[np.ix_(idx, idx)]


# ----------------------------------------------------------------------------------------------
# The test
# ----------------------------------------------------------------------------------------------
def test_node_with_real_checkpoint_matches_offline_replay(tmp_path):
    from xview_localizer.tiles.server import TileServer

    checkpoint = _checkpoint()
    t_start = time.monotonic()
    tiles_dir, bag = _make_drive(tmp_path)
    truth, odom_at, images, fix_stamps = _bag_truth(bag)
    server = TileServer(root=tiles_dir, port=0).start()
    try:
        tile_url = server.url_template()
        t_data = time.monotonic()
        offline = _offline(bag, tile_url, checkpoint, tmp_path / "cache_offline")
        t_offline = time.monotonic()
        poses, tfs, frame_wall_s, diag, _out = _online(bag, tile_url, checkpoint, tmp_path / "cache_node")
        t_online = time.monotonic()
    finally:
        server.shutdown()

    # Every image was handled by both runs.
    assert sorted(offline) == images
    assert len(frame_wall_s) == len(images)
    assert diag.count("frames_dropped_total") == 0, diag.summary

    # Stamps are image stamps; frames as configured; covariance SPD; TF x odom == pose.
    assert set(poses) <= set(images)
    tf_by_stamp = {conv.stamp_to_ns(t.header.stamp): t for t in tfs
                   if t.header.frame_id == MAP_FRAME and t.child_frame_id == "odom"}
    for s, m in poses.items():
        assert m.header.frame_id == MAP_FRAME
        c = np.array(m.pose.covariance).reshape(6, 6)
        assert np.allclose(c, c.T) and np.linalg.eigvalsh(c).min() > 0, c
        t = tf_by_stamp.get(s + int(0.1 * NS))
        assert t is not None, f"no {MAP_FRAME}->odom TF for the pose at {s}"
        composed = conv.matrix_to_se2(conv.transform_to_matrix(t.transform)) @ odom_at[s]
        assert (composed.x_m, composed.y_m) == pytest.approx((m.pose.pose.position.x, m.pose.pose.position.y),
                                                             abs=1e-6)
        assert math.remainder(composed.yaw_rad - conv.quaternion_to_yaw_rad(m.pose.pose.orientation),
                              2 * math.pi) == pytest.approx(0.0, abs=1e-6)

    # Node vs offline: the same frames accepted (+-1) and the same errors per frame.
    offline_ok = {s for s, f in offline.items() if f.accepted}
    node_ok = set(poses)
    differ = offline_ok ^ node_ok
    rows = []
    for s in sorted(offline_ok & node_ok):
        f, m = offline[s], poses[s]
        e_off = float(np.hypot(*_error_xyyaw(f.x_m, f.y_m, f.yaw_rad, truth[s])[:2]))
        e_node = float(np.hypot(*_error_xyyaw(m.pose.pose.position.x, m.pose.pose.position.y,
                                              conv.quaternion_to_yaw_rad(m.pose.pose.orientation), truth[s])[:2]))
        rows.append((s, e_off, e_node))
    nees = []
    for s, m in poses.items():
        e = _error_xyyaw(m.pose.pose.position.x, m.pose.pose.position.y,
                         conv.quaternion_to_yaw_rad(m.pose.pose.orientation), truth[s])
        nees.append(float(e @ np.linalg.solve(_cov_xyyaw(m), e)))
    max_age_ns = int(2.0 * NS)  # fix_max_age_s default
    with_fix = [s for s in images if any(0 <= s - f <= max_age_ns for f in fix_stamps)]
    availability = len(node_ok & set(with_fix)) / max(len(with_fix), 1)
    n = len(nees)
    nees_sum = float(np.sum(nees))
    upper = chi2_quantile_wh(3 * n, Z_995) if n else math.inf
    lower = chi2_quantile_wh(3 * n, -Z_995) if n else 0.0
    reasons = {}
    for f in offline.values():
        if not f.accepted:
            reasons[f.reason] = reasons.get(f.reason, 0) + 1
    print(f"\nreal checkpoint {checkpoint}: {len(images)} images, node poses {len(node_ok)}, offline poses "
          f"{len(offline_ok)}, differing frames {len(differ)}; availability {availability:.0%}; offline rejections "
          f"{reasons}; node causes {diag.cause_totals}")
    print("per-frame xy error offline / node (m): " + ", ".join(f"{a:.2f}/{b:.2f}" for _, a, b in rows))
    print(f"NEES (x, y, yaw): mean {nees_sum / max(n, 1):.2f} over {n} frames (expected 3); sum {nees_sum:.1f}, "
          f"chi2({3 * n}) 0.5 %..99.5 % band [{lower:.1f}, {upper:.1f}]")
    print(f"node wall s per frame: mean {np.mean(frame_wall_s):.2f}, max {np.max(frame_wall_s):.2f}; timings: data "
          f"{t_data - t_start:.0f} s, offline {t_offline - t_data:.0f} s, node {t_online - t_offline:.0f} s")

    assert len(differ) <= 1, (sorted(offline_ok - node_ok), sorted(node_ok - offline_ok))
    for s, e_off, e_node in rows:
        assert abs(e_node - e_off) <= max(0.1 * e_off, 0.05), (s, e_off, e_node)
    assert availability >= 0.9, (availability, reasons, diag.cause_totals)
    assert n > 0 and nees_sum <= upper, (nees_sum, upper, nees)
