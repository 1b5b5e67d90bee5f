"""Offline replay of a rosbag2 through the SAME :class:`~xview_localizer.pipeline.localizer.Localizer`
core the node runs, without DDS.

The bag (mcap or sqlite3, any producer) is read with ``rosbags``' :class:`AnyReader`;
messages are fed in log-time order, as a live node would receive them: ``/tf_static``
(``base_link <- camera`` extrinsics, chains composed), ``camera_info``, GNSS fixes and
odometry go into the localizer's buffers, and each image runs :meth:`Localizer.step` at once
(later fixes are not yet known, exactly like on the vehicle). Messages are decoded by the
ROS-free :mod:`xview_localizer.pipeline.messages` (the node's decoders: they only read fields,
so rosbags' message objects work as well as rclpy's); no rclpy or ROS message package is
imported. The bag is opened with :func:`xview_localizer.sim.bag.open_reader` (re-exported here
with :func:`~xview_localizer.sim.bag.sidecar_of`).

Topics are auto-detected by message type (and name hints) unless given:

* image: ``sensor_msgs/msg/Image`` (not depth) else ``sensor_msgs/msg/CompressedImage``;
* camera_info: ``sensor_msgs/msg/CameraInfo``; fix: ``sensor_msgs/msg/NavSatFix`` (not an RTK
  ground-truth one); odom: ``nav_msgs/msg/Odometry`` (optional, not a ground-truth one);
* ground truth (optional): a topic whose name contains ``ground_truth``, ``groundtruth``,
  ``gt`` or ``rtk`` with type PoseStamped, PoseWithCovarianceStamped, Odometry or NavSatFix.
  Pose types are taken to be in the localizer's map frame; an RTK NavSatFix is projected with
  the localizer's own map projection (its yaw is unknown: yaw metrics then need a pose type).
* depth (optional): a ``sensor_msgs/msg/Image`` topic whose name contains ``depth`` and whose
  first message is 32FC1 (metres) or 16UC1 (millimetres); ``depth_topic='none'`` ignores depth.

Depth pairing: each image gets the depth map whose header stamp is nearest its own within
``depth_tolerance_s`` (depth is read by a second reader running ahead of the images, so a
depth logged just after its image still pairs), resized nearest-neighbour to the image when its
size differs (:mod:`xview_localizer.core.depth_utils`, the node does the same). No depth within the
tolerance -> the frame runs without depth (flat ground); undecodable depth messages are skipped.
Both are counted in ``meta['depth']`` (and ``depth_invalid`` in ``meta['input_problems']``).

Map frame: a bag written by ``sim drive`` carries ``sim.yaml``; then the map frame is its
local ENU plane at its datum (the frame of its ground truth) and its tile URL is the default.
Otherwise ``map_projection`` / datum from the parameters (default UTM at the first fix).
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..core.depth_utils import DEFAULT_DEPTH_TOLERANCE_S, DepthBuffer, fit_depth_to_image
from ..core.errors import (
    BagError,
    CheckpointError,
    GeometryError,
    LocalizationRejected,
    TileError,
    XViewError,
)
from ..pipeline import messages
from ..pipeline.config import LocalizerConfig, NodeConfig
from ..pipeline.localizer import Frame, Localizer, MapProjection
from ..pipeline.messages import header_stamp_ns, quaternion_to_yaw_rad
from ..pipeline.timebase import StampReference
from ..sim.bag import open_reader, sidecar_of
from .report import EvalData, FrameRecord, Track
from .report_snapshots import DEFAULT_MAX_BYTES, SnapshotStore

log = logging.getLogger(__name__)

__all__ = ["ReplayConfig", "BagTopics", "detect_topics", "detect_depth_topic", "replay_bag",
           "load_matcher_for_replay", "node_config_for_bag", "probe_tiles", "IMAGE_TYPES", "GT_TYPES",
           "DEPTH_ENCODINGS",
           # re-exported from sim.bag (their home since the ROS-free split; keep this import path)
           "open_reader", "sidecar_of"]

NS_PER_S = 1_000_000_000
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
GT_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
            "nav_msgs/msg/Odometry", "sensor_msgs/msg/NavSatFix")
_GT_HINTS = ("ground_truth", "groundtruth", "gt", "rtk", "truth")
_NOT_CAMERA_HINTS = ("depth", "debug", "disparity", "mask", "seg")
_DEPTH_HINTS = ("depth",)
#: Encodings of a depth image the replay (and the node) decode: metres, millimetres.
DEPTH_ENCODINGS = ("32FC1", "16UC1")
#: Default byte budget of the report's per-frame snapshots (MiB).
DEFAULT_SNAPSHOT_MAX_MB = DEFAULT_MAX_BYTES / 2**20


@dataclass(frozen=True)
class BagTopics:
    """The topics a replay reads; ``odom``/``gt`` may be '' (absent)."""

    image: str
    image_type: str
    camera_info: str
    fix: str
    odom: str = ""
    gt: str = ""
    gt_type: str = ""
    tf_static: str = "/tf_static"


@dataclass(frozen=True)
class ReplayConfig:
    """What to replay and how.

    Attributes:
        image_topic, fix_topic, gt_topic, odom_topic, camera_info_topic: overrides ('' = detect;
            ``gt_topic='none'`` / ``odom_topic='none'`` = do not use).
        depth_topic: '' = detect (see the module docstring), 'none' = no depth, else the
            ``sensor_msgs/msg/Image`` depth topic (32FC1 m or 16UC1 mm).
        depth_tolerance_s: largest |depth stamp - image stamp| for pairing (s, >= 0).
        every: localize every N-th image of the image topic (the 1st, the N+1-th, ...; 1 = all);
            the others are skipped without being decoded and counted as skipped, not as
            rejected frames. Fixes, odometry, camera_info and /tf_static are all fed.
        max_frames: stop after this many localized images (0 = all); with ``every`` N these are
            images 1, N+1, ..., (max_frames-1)*N+1.
        node: node parameters (tile source, frames, fallback extrinsics, the core's config).
        progress: show a tqdm progress bar.
        snapshot_max_mb: byte budget (MiB) of the per-frame snapshots the report's frame panels
            are drawn from (:mod:`xview_localizer.evaluation.report_snapshots`: downsized JPEG
            camera image and satellite patch, a subsample of the matches); 0 = keep none.
    """

    image_topic: str = ""
    fix_topic: str = ""
    gt_topic: str = ""
    odom_topic: str = ""
    camera_info_topic: str = ""
    depth_topic: str = ""
    depth_tolerance_s: float = DEFAULT_DEPTH_TOLERANCE_S
    every: int = 1
    max_frames: int = 0
    node: NodeConfig = field(default_factory=NodeConfig)
    progress: bool = True
    snapshot_max_mb: float = DEFAULT_SNAPSHOT_MAX_MB

    def __post_init__(self) -> None:
        if isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int) or self.max_frames < 0:
            raise GeometryError(f"ReplayConfig.max_frames must be an int >= 0, got {self.max_frames!r}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise GeometryError(f"ReplayConfig.every must be an int >= 1, got {self.every!r}")
        tol = self.depth_tolerance_s
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not math.isfinite(tol) or tol < 0:
            raise GeometryError(f"ReplayConfig.depth_tolerance_s must be a finite number >= 0, got {tol!r}")
        mb = self.snapshot_max_mb
        if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not math.isfinite(mb) or mb < 0:
            raise GeometryError(f"ReplayConfig.snapshot_max_mb must be a finite number >= 0, got {mb!r}")


def _has_hint(topic: str, hints: tuple[str, ...]) -> bool:
    parts = [p for p in topic.lower().replace("-", "_").split("/") if p]
    return any(h == p or h in p.split("_") or (len(h) > 2 and h in p) for p in parts for h in hints)


def _describe(conns: dict[str, str]) -> str:
    return ", ".join(f"{t} ({m})" for t, m in sorted(conns.items())) or "no topics"


def detect_topics(conns: dict[str, str], cfg: ReplayConfig, bag: str = "bag") -> BagTopics:
    """Choose the topics from ``{topic: msgtype}`` and the overrides in ``cfg``.

    Raises:
        BagError: a named topic is missing or has an unusable type, or no image / camera_info /
            fix topic exists; the message lists what the bag has.
    """
    def named(kind: str, topic: str, types: tuple[str, ...]) -> str:
        if topic not in conns:
            raise BagError(f"{bag}: no {kind} topic {topic!r}; the bag has: {_describe(conns)}")
        if conns[topic] not in types:
            raise BagError(f"{bag}: {kind} topic {topic!r} is {conns[topic]}, expected one of {', '.join(types)}")
        return topic

    def pick(kind: str, types: tuple[str, ...], avoid: tuple[str, ...] = (), required: bool = True) -> str:
        cands = [t for t, m in sorted(conns.items()) if m in types and not _has_hint(t, avoid)]
        cands.sort(key=lambda t: types.index(conns[t]))
        if not cands:
            if required:
                raise BagError(f"{bag}: no {kind} topic ({' or '.join(types)}); the bag has: {_describe(conns)}; "
                               f"name one with --{kind.replace('_', '-')}-topic")
            return ""
        if len(cands) > 1:
            log.info("%s: several %s topics (%s), using %s", bag, kind, ", ".join(cands), cands[0])
        return cands[0]

    # ground truth first (so an RTK NavSatFix / GT Odometry is not taken as the fix / odometry)
    gt = ""
    if cfg.gt_topic == "none":
        gt = ""
    elif cfg.gt_topic:
        gt = named("gt", cfg.gt_topic, GT_TYPES)
    else:
        cands = [t for t, m in sorted(conns.items()) if m in GT_TYPES and _has_hint(t, _GT_HINTS)]
        cands.sort(key=lambda t: GT_TYPES.index(conns[t]))
        gt = cands[0] if cands else ""
    image = (named("image", cfg.image_topic, IMAGE_TYPES) if cfg.image_topic
             else pick("image", IMAGE_TYPES, _NOT_CAMERA_HINTS))
    info = (named("camera_info", cfg.camera_info_topic, ("sensor_msgs/msg/CameraInfo",)) if cfg.camera_info_topic
            else pick("camera_info", ("sensor_msgs/msg/CameraInfo",), _NOT_CAMERA_HINTS))
    fix_avoid = _GT_HINTS
    if cfg.fix_topic:
        fix = named("fix", cfg.fix_topic, ("sensor_msgs/msg/NavSatFix",))
    else:
        fix = pick("fix", ("sensor_msgs/msg/NavSatFix",), fix_avoid)
    if cfg.odom_topic == "none":
        odom = ""
    elif cfg.odom_topic:
        odom = named("odom", cfg.odom_topic, ("nav_msgs/msg/Odometry",))
    else:
        odom = pick("odom", ("nav_msgs/msg/Odometry",), _GT_HINTS, required=False)
    if gt and gt in (fix, odom):
        raise BagError(f"{bag}: {gt!r} cannot be both ground truth and an input")
    return BagTopics(image=image, image_type=conns[image], camera_info=info, fix=fix, odom=odom, gt=gt,
                     gt_type=conns.get(gt, ""), tf_static="/tf_static")


def detect_depth_topic(reader: Any, cfg: ReplayConfig, image_topic: str, bag: str = "bag") -> str:
    """The depth topic of an opened reader: '' when none (or ``cfg.depth_topic == 'none'``).

    Auto-detection: ``sensor_msgs/msg/Image`` topics (other than ``image_topic``) whose name
    contains ``depth``, in name order; the first whose first message has a depth encoding
    (:data:`DEPTH_ENCODINGS`) wins. A named topic is used as it is (bad messages are counted).

    Raises:
        BagError: a named depth topic is missing or not a ``sensor_msgs/msg/Image``.
    """
    conns = {c.topic: c.msgtype for c in reader.connections}
    if cfg.depth_topic == "none":
        return ""
    if cfg.depth_topic:
        if cfg.depth_topic not in conns:
            raise BagError(f"{bag}: no depth topic {cfg.depth_topic!r}; the bag has: {_describe(conns)}")
        if conns[cfg.depth_topic] != "sensor_msgs/msg/Image":
            raise BagError(f"{bag}: depth topic {cfg.depth_topic!r} is {conns[cfg.depth_topic]}, expected "
                           "sensor_msgs/msg/Image (32FC1 m or 16UC1 mm)")
        return cfg.depth_topic
    cands = [t for t, m in sorted(conns.items())
             if m == "sensor_msgs/msg/Image" and t != image_topic and _has_hint(t, _DEPTH_HINTS)]
    for topic in cands:
        first = _first_message(reader, topic)
        if first is not None and getattr(first, "encoding", "") in DEPTH_ENCODINGS:
            return topic
        log.info("%s: %s looks like depth but its first message is not %s; not used", bag, topic,
                 " or ".join(DEPTH_ENCODINGS))
    return ""


def _first_message(reader: Any, topic: str) -> Any:
    """The first deserialized message on ``topic`` or None (none, or it does not decode)."""
    conns = [c for c in reader.connections if c.topic == topic]
    try:
        for c, _log_ns, raw in reader.messages(connections=conns):
            return reader.deserialize(raw, c.msgtype)
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for bad CDR
        log.info("%s: first message does not decode: %s", topic, exc)
    return None


# ----------------------------------------------------------------------------------------------
# Matcher
# ----------------------------------------------------------------------------------------------
def load_matcher_for_replay(checkpoint: str, device: str, matcher_factory: str = "", runtime: str = "eager") -> Any:
    """The matcher the node would load: ``matcher_factory`` ('module:function', tests) or the
    checkpoint (``''`` = the packaged default, the sparse matcher; see
    :func:`xview_localizer.matcher.factory.default_checkpoint_path`), on ``runtime``
    (``matcher_runtime``: "compile" | "eager").

    Raises:
        CheckpointError: naming the checkpoint and the cause.
    """
    from ..matcher.factory import apply_runtime, resolve_factory

    factory = resolve_factory(matcher_factory)
    try:
        matcher = factory(checkpoint, device)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch / pickle raise many types for bad files
        what = checkpoint or "the packaged default checkpoint"
        raise CheckpointError(f"checkpoint {what!r} does not load: {type(exc).__name__}: {exc}") from exc
    apply_runtime(matcher, runtime)
    return matcher


# ----------------------------------------------------------------------------------------------
# The replay
# ----------------------------------------------------------------------------------------------
class _DepthStream:
    """Depth maps of one topic from a second reader of the bag, read just far enough ahead of
    the images to pair each image with the nearest depth stamp within the tolerance.

    Counts: ``paired``, ``unpaired`` (frames run without depth), ``resized``, ``invalid``
    (messages that do not decode as 32FC1 / 16UC1, skipped; ``last_invalid`` says why)."""

    def __init__(self, reader: Any, topic: str, tolerance_s: float) -> None:
        self._to_m = messages.depth_image_to_m
        self._reader = reader
        self._it = reader.messages(connections=[c for c in reader.connections if c.topic == topic])
        self._tol_s = float(tolerance_s)
        self._tol_ns = int(round(self._tol_s * NS_PER_S))
        self._buffer = DepthBuffer(max_items=1024)
        self._read_up_to_ns: Optional[int] = None
        self._done = False
        self.topic = topic
        self.paired = self.unpaired = self.resized = self.invalid = 0
        self.last_invalid = ""

    def _read_one(self) -> None:
        try:
            c, log_ns, raw = next(self._it)
        except StopIteration:
            self._done = True
            return
        self._read_up_to_ns = int(log_ns)
        try:
            msg = self._reader.deserialize(raw, c.msgtype)
            self._read_up_to_ns = header_stamp_ns(msg)
            depth_m = self._to_m(msg)
        except Exception as exc:  # noqa: BLE001 - bad CDR (rosbags) or ImageConversionError
            self.invalid += 1
            if not self.last_invalid:
                log.warning("depth message on %s skipped: %s", self.topic, exc)
            self.last_invalid = f"{type(exc).__name__}: {exc}"
            return
        self._buffer.add(self._read_up_to_ns, depth_m)

    def depth_for(self, stamp_ns: int, image_shape: tuple[int, ...]) -> Optional[np.ndarray]:
        """(H, W) float32 depth for the image stamped ``stamp_ns`` of shape ``image_shape``
        (resized to it), or None (counted)."""
        while not self._done and (self._read_up_to_ns is None or self._read_up_to_ns <= stamp_ns + self._tol_ns):
            self._read_one()
        self._buffer.drop_before(stamp_ns - self._tol_ns)
        depth_m = self._buffer.nearest(stamp_ns, self._tol_s)
        if depth_m is None:
            self.unpaired += 1
            return None
        depth_m, resized = fit_depth_to_image(depth_m, image_shape)
        self.paired += 1
        self.resized += int(resized)
        return depth_m

    def summary(self) -> dict:
        return {"topic": self.topic, "tolerance_s": self._tol_s, "frames_with_depth": self.paired,
                "frames_without_depth": self.unpaired, "resized": self.resized, "invalid_messages": self.invalid,
                "last_invalid": self.last_invalid or None}


def _gt_sample(msg: Any, msgtype: str) -> Optional[tuple]:
    """('pose', stamp, x, y, yaw) or ('fix', stamp, lat, lon) or None (invalid)."""
    s = header_stamp_ns(msg)
    if msgtype == "sensor_msgs/msg/NavSatFix":
        if msg.status.status < messages.NAVSAT_STATUS_FIX or not (math.isfinite(msg.latitude) and math.isfinite(msg.longitude)):
            return None
        return ("fix", s, float(msg.latitude), float(msg.longitude))
    pose = msg.pose if msgtype == "geometry_msgs/msg/PoseStamped" else msg.pose.pose
    p, q = pose.position, pose.orientation
    if not all(math.isfinite(v) for v in (p.x, p.y, q.x, q.y, q.z, q.w)):
        return None
    return ("pose", s, float(p.x), float(p.y), quaternion_to_yaw_rad(q))


def node_config_for_bag(bag: Path, node: NodeConfig, tile_url: str = "") -> tuple[NodeConfig, str]:
    """Apply the bag's sidecar (if any): map frame = the sim's ENU at its datum, its tile URL
    when ``tile_url`` is '' . Returns (config, tile URL)."""
    side = sidecar_of(bag)
    url = tile_url
    if side is not None:
        loc = replace(node.localizer, map_projection="enu", datum_lat_deg=float(side["datum"]["lat_deg"]),
                      datum_lon_deg=float(side["datum"]["lon_deg"]))
        node = replace(node, localizer=loc)
        url = url or str(side.get("tile_url", ""))
    return node, url


def probe_tiles(tile_cache: Any, lat_deg: float, lon_deg: float, cfg: LocalizerConfig, url: str) -> None:
    """Fetch one patch at the first fix so a dead tile source fails fast.

    Raises:
        TileError: the source does not answer (message names the URL and the cause).
    """
    try:
        tile_cache.patch(lat_deg, lon_deg, cfg.patch_size_px, cfg.patch_m_per_px)
    except TileError as exc:
        raise type(exc)(f"tile source {url!r} does not answer at the first fix ({lat_deg:.6f}, {lon_deg:.6f}): "
                        f"{exc}") from exc


def replay_bag(bag: Path, cfg: ReplayConfig, matcher: Any, tile_cache: Any, tile_url: str = "",
               on_frame: Optional[Callable[[int, Any], None]] = None, meta: Optional[dict] = None) -> EvalData:
    """Run the localizer over ``bag`` and return the :class:`EvalData` for the report.

    ``cfg.node`` must already carry the map frame (see :func:`node_config_for_bag`).
    ``matcher``: from :func:`load_matcher_for_replay`; ``tile_cache``: a TileCache (probed at
    the first fix). ``on_frame(stamp_ns, StepResult)`` is called after every image that ran
    through the core. Nothing waits for bag time: frames go through as fast as the core allows
    (``meta['replay_frames_per_s']``, ``meta['realtime_factor']``; the progress bar shows
    frames/s and poses/s); ``cfg.every`` / ``cfg.max_frames`` thin or cut the replay
    (``meta['images']`` counts localized, skipped and not replayed images).

    Raises:
        BagError: unreadable bag, missing topics (listed), no camera_info before the images.
        TileError: the tile source does not answer.
    """
    from ..core.camera import T_base_camera_from_xyz_rpy

    node = cfg.node
    loc_cfg = node.localizer
    localizer = Localizer(loc_cfg, matcher, tile_cache)
    with ExitStack() as stack:
        reader = stack.enter_context(open_reader(bag))
        conns = {c.topic: c.msgtype for c in reader.connections}
        topics = detect_topics(conns, cfg, str(bag))
        depth_topic = detect_depth_topic(reader, cfg, topics.image, str(bag))
        depth = (_DepthStream(stack.enter_context(open_reader(bag)), depth_topic, cfg.depth_tolerance_s)
                 if depth_topic else None)
        wanted = {topics.image, topics.camera_info, topics.fix, topics.odom, topics.gt, topics.tf_static} - {""}
        use = [c for c in reader.connections if c.topic in wanted]
        n_images_bag = sum(c.msgcount for c in reader.connections if c.topic == topics.image)
        n_to_localize = -(-n_images_bag // cfg.every)  # ceil
        if cfg.max_frames:
            n_to_localize = min(n_to_localize, cfg.max_frames)
        log.info("replaying %s: image %s (%s), camera_info %s, fix %s, odom %s, ground truth %s", bag,
                 topics.image, topics.image_type.rsplit("/", 1)[-1], topics.camera_info, topics.fix,
                 topics.odom or "-", f"{topics.gt} ({topics.gt_type.rsplit('/', 1)[-1]})" if topics.gt else "-")
        log.info("depth: %s", f"{depth_topic} (within {cfg.depth_tolerance_s * 1e3:.0f} ms of the image stamp)"
                 if depth_topic else "none (flat ground)")
        if cfg.every > 1 or cfg.max_frames:
            log.info("localizing %d of %d images (every %d-th%s)", n_to_localize, n_images_bag, cfg.every,
                     f", at most {cfg.max_frames}" if cfg.max_frames else "")
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            # rate_noinv_fmt: always frames/s (tqdm switches to s/frame below 1 frame/s otherwise)
            bar = tqdm(total=n_to_localize, desc="replay", unit="frame",
                       bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]")
        tf = messages.StaticTfTree()
        camera, camera_frame, camera_key = None, "", None
        T_bc_parameters = None
        fixes: list[tuple[int, float, float]] = []
        gt_rows: list[tuple] = []
        frames: list[FrameRecord] = []
        extrinsics_source = ""
        counts = {"fix_no_fix": 0, "fix_invalid": 0, "odom_invalid": 0, "image_invalid": 0}
        probed = False
        n_images_seen = n_skipped = n_accepted = 0
        stamps = StampReference()
        snapshots = (SnapshotStore(max_bytes=int(cfg.snapshot_max_mb * 2**20),
                                   score_fn=lambda st: _known_errors_m(st, frames, gt_rows, localizer.projection))
                     if cfg.snapshot_max_mb > 0 else None)
        t_wall0 = time.perf_counter()
        compressed = topics.image_type.endswith("CompressedImage")

        def localize(msg: Any, log_ns: int) -> FrameRecord:
            """One image through the core (as the node's worker does)."""
            nonlocal extrinsics_source, T_bc_parameters
            stamp = header_stamp_ns(msg)
            stamps.observe(stamp, log_ns)
            t0 = time.perf_counter()
            try:
                rgb = messages.compressed_to_rgb8(msg) if compressed else messages.image_to_rgb8(msg)
            except XViewError as exc:
                counts["image_invalid"] += 1
                return FrameRecord(stamp, False, "image_invalid", detail=str(exc))
            t_convert = time.perf_counter() - t0
            if camera is None:
                return FrameRecord(stamp, False, "no_camera_info")
            if (camera.width_px, camera.height_px) != (rgb.shape[1], rgb.shape[0]):
                return FrameRecord(stamp, False, "camera_info_mismatch",
                                   detail=f"{rgb.shape[1]}x{rgb.shape[0]} vs camera_info "
                                          f"{camera.width_px}x{camera.height_px}")
            T_bc = tf.lookup(node.base_frame, msg.header.frame_id or camera_frame)
            if T_bc is not None:
                extrinsics_source = "tf_static"
            else:
                extrinsics_source = extrinsics_source or "parameters"
                if T_bc_parameters is None:
                    T_bc_parameters = T_base_camera_from_xyz_rpy(node.camera_x_m, node.camera_y_m, node.camera_z_m,
                                                                 node.camera_roll_rad, node.camera_pitch_rad,
                                                                 node.camera_yaw_rad)
                T_bc = T_bc_parameters
            depth_m = depth.depth_for(stamp, rgb.shape) if depth is not None else None
            result = localizer.step(Frame(stamp, rgb, camera, T_bc, depth_m))
            latency = result.timings_s.get("total", float("nan")) + t_convert
            if on_frame is not None:
                on_frame(stamp, result)
            if snapshots is not None:
                snapshots.add_step(stamp, rgb, result)
            est = result.estimate
            if est is not None:
                return FrameRecord(stamp, True, "", est.T_map_base.x_m, est.T_map_base.y_m, est.T_map_base.yaw_rad,
                                   est.cov_xyyaw, latency)
            return FrameRecord(stamp, False, result.reason, latency_s=latency, detail=result.detail)

        try:
            for c, log_ns, raw in reader.messages(connections=use):
                topic = c.topic
                if topic == topics.image:
                    if cfg.max_frames and len(frames) >= cfg.max_frames:
                        break
                    n_images_seen += 1
                    if (n_images_seen - 1) % cfg.every:
                        n_skipped += 1  # not even deserialized
                        continue
                    frames.append(localize(reader.deserialize(raw, c.msgtype), log_ns))
                    n_accepted += frames[-1].accepted
                    if bar is not None:
                        elapsed_s = time.perf_counter() - t_wall0
                        bar.set_postfix_str(f"poses {n_accepted}/{len(frames)}, {n_accepted / elapsed_s:.2f} poses/s",
                                            refresh=False)
                        bar.update(1)
                    continue
                msg = reader.deserialize(raw, c.msgtype)
                if topic == topics.gt:
                    g = _gt_sample(msg, c.msgtype)
                    if g is not None:
                        gt_rows.append(g)
                elif topic == topics.tf_static:
                    tf.add(msg)
                elif topic == topics.camera_info:
                    key = (msg.header.frame_id, int(msg.width), int(msg.height), msg.distortion_model,
                           tuple(msg.k), tuple(msg.d))
                    if key == camera_key:
                        continue  # the same camera again (the usual case): keep the converted one
                    try:
                        camera, camera_frame = messages.camera_info_to_camera(msg), msg.header.frame_id
                        camera_key = key
                    except XViewError as exc:
                        log.warning("camera_info invalid: %s", exc)
                elif topic == topics.fix:
                    # the bag's time (plus the stamps' recent offset from it) is the reference clock
                    stamps.observe(header_stamp_ns(msg), log_ns)
                    try:
                        fix = messages.navsat_to_fix(msg)
                        localizer.add_fix(fix, now_ns=stamps.reference_ns(log_ns))
                    except LocalizationRejected as rej:
                        counts[rej.reason] = counts.get(rej.reason, 0) + 1
                        continue
                    fixes.append((fix.stamp_ns, fix.lat_deg, fix.lon_deg))
                    if not probed:
                        probed = True
                        probe_tiles(tile_cache, fix.lat_deg, fix.lon_deg, loc_cfg, tile_url)
                elif topic == topics.odom:
                    stamps.observe(header_stamp_ns(msg), log_ns)
                    try:
                        sample = messages.odometry_to_sample(msg)
                    except XViewError:
                        counts["odom_invalid"] += 1
                        continue
                    try:
                        localizer.add_odom(sample, now_ns=stamps.reference_ns(log_ns))
                    except LocalizationRejected as rej:
                        counts[rej.reason] = counts.get(rej.reason, 0) + 1
        finally:
            if bar is not None:
                bar.close()
            localizer.close()
        wall_s = time.perf_counter() - t_wall0
    proj = localizer.projection
    if proj is None:
        if not frames:
            raise BagError(f"{bag}: no images on {topics.image} and no valid fix on {topics.fix}")
        raise BagError(f"{bag}: no valid GNSS fix on {topics.fix}: the map frame cannot be defined "
                       f"(NO_FIX {counts['fix_no_fix']}, invalid {counts['fix_invalid']})")
    gnss = Track.from_rows([(s, *proj.forward(lat, lon), float("nan")) for s, lat, lon in fixes])
    gt = _gt_track(gt_rows, proj) if topics.gt else None
    duration_s = (frames[-1].stamp_ns - frames[0].stamp_ns) / NS_PER_S if len(frames) > 1 else 0.0
    if depth is not None and depth.invalid:
        counts["depth_invalid"] = depth.invalid
    info = {
        "bag": str(Path(bag).resolve()),
        "estimates": "in-process replay of the Localizer core",
        "topics": {"image": topics.image, "camera_info": topics.camera_info, "fix": topics.fix,
                   "odom": topics.odom or None, "ground_truth": topics.gt or None,
                   "ground_truth_type": topics.gt_type or None, "depth": depth_topic or None},
        "extrinsics_source": extrinsics_source or None,
        "depth": depth.summary() if depth is not None else None,
        "input_problems": {k: v for k, v in counts.items() if v},
        "images": {"in_bag": n_images_bag, "localized": len(frames), "skipped": n_skipped, "every": cfg.every,
                   "max_frames": cfg.max_frames, "not_replayed": n_images_bag - n_images_seen},
        "replay_wall_s": round(wall_s, 3),
        "replay_frames_per_s": round(len(frames) / wall_s, 3) if wall_s > 0 else None,
        "realtime_factor": round(duration_s / wall_s, 3) if wall_s > 0 and duration_s > 0 else None,
        "tile_url": tile_url,
        "map_frame_id": node.map_frame,
        **(meta or {}),
    }
    return EvalData(frames=frames, gnss=gnss, gt=gt, map_projection=proj.kind, datum_lat_deg=proj.datum_lat_deg,
                    datum_lon_deg=proj.datum_lon_deg, tile_url=tile_url, meta=info, skipped_frames=n_skipped,
                    latency_label="core step incl. image decoding (tiles + matcher + solver)",
                    fix_max_age_s=loc_cfg.fix_max_age_s, course_min_baseline_m=loc_cfg.course_min_baseline_m,
                    course_max_window_s=loc_cfg.course_max_window_s, snapshots=snapshots)


def _known_errors_m(stamps_ns: np.ndarray, frames: list[FrameRecord], gt_rows: list[tuple],
                    proj: Optional[MapProjection]) -> np.ndarray:
    """(N,) position errors (m) of the accepted frames at ``stamps_ns`` against the ground truth
    read so far (NaN: rejected, not yet known or no ground truth): what the snapshot store keeps
    when it has to thin itself."""
    out = np.full(len(stamps_ns), np.nan)
    if proj is None or not gt_rows:
        return out
    gt = _gt_track(gt_rows, proj)
    est = {f.stamp_ns: (f.x_m, f.y_m) for f in frames if f.accepted}
    truth = gt.at(np.asarray(stamps_ns, np.int64), 0.5)
    for k, s in enumerate(stamps_ns):
        p = est.get(int(s))
        if p is not None:
            out[k] = float(np.hypot(p[0] - truth[k, 0], p[1] - truth[k, 1]))
    return out


def _gt_track(rows: list[tuple], proj: MapProjection) -> Track:
    """Ground truth in the map frame: poses as they are; RTK fixes projected, yaw unknown."""
    out = []
    for r in rows:
        if r[0] == "pose":
            out.append((r[1], r[2], r[3], r[4]))
        else:
            x, y = proj.forward(r[2], r[3])
            out.append((r[1], x, y, float("nan")))
    return Track.from_rows(out)
