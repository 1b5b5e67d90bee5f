"""The rclpy node ``xview_localizer`` (console script ``localizer_node``).

A thin shell around :class:`xview_localizer.pipeline.localizer.Localizer`: callbacks convert messages
and return at once, so the executor is never blocked; one worker thread processes only the
LATEST image, starting it as soon as the previous one is done (a slow matcher drops frames,
counted, instead of building a backlog); results are published as

* ``pose`` (geometry_msgs/PoseWithCovarianceStamped; stamp = image stamp; frame = ``map_frame``),
* TF ``map -> odom`` (with odometry; computed from the pose and odom->base_link at the image
  stamp and future-dated by ``transform_tolerance_s``, like nav2_amcl) or ``map -> base_link``
  (without); none with ``publish_tf: false``,
* ``/diagnostics`` (one status per cause, rates, drop counts, per-stage latency p50 / p90 /
  mean / max over the last 100 frames),
* ``debug_image`` (optional): the satellite patch with matches, estimate and prior.

Inputs (sensor-data QoS): ``image`` or ``image/compressed`` (``image_transport``),
``camera_info``, ``fix``, optional ``odom``, optional ``depth`` (``use_depth``; 32FC1 m or
16UC1 mm). Each image gets the depth map whose stamp is nearest its own within
``depth_tolerance_s`` (default 0.05 s; the worker waits up to
:data:`DEPTH_WAIT_S` for it while depth flows, the latest less than 1 s older than the
image, but has not reached the image stamp yet, and in the first :data:`DEPTH_STARTUP_S` before
any depth map arrived), resized nearest-neighbour to
the image when the sizes differ - as the offline replay does; without one the frame runs on
flat ground (cause ``depth_missing``). ``T_base_camera`` comes from
``/tf_static`` (tf2_ros when importable, else the node composes the static transforms itself)
or, after ``tf_static_wait_s`` without them, from the ``camera_*`` parameters.

Failure policy: nothing raises out of a callback; every bad input or rejected frame is counted
under a stable cause key, logged once per cause, and reported on /diagnostics; the node keeps
running. A matcher that cannot be loaded at start-up ends the node with exit status 1 and one
line naming the cause, unless ``allow_degraded_start`` keeps it up with a lasting ERROR
'matcher unavailable'.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, NavSatFix

from ..core.camera import T_base_camera_from_xyz_rpy
from ..core.depth_utils import DepthBuffer, fit_depth_to_image
from ..core.errors import (
    ConfigError,
    ImageConversionError,
    LocalizationRejected,
    XViewError,
)
from ..matcher.factory import apply_runtime, resolve_factory
from ..pipeline.config import NodeConfig, describe_unknown_parameters
from ..pipeline.localizer import NS_PER_S, Frame, Localizer, StepResult
from ..pipeline.timebase import StampReference
from . import conversions as conv
from .health import (  # noqa: F401 - LATENCY_WINDOW_FRAMES, Stats, latency_values re-exported for tests
    ERROR_CAUSES,
    LATENCY_WINDOW_FRAMES,
    TILE_KIND_CAUSES,
    Stats,
    TileWatch,
    UnavailableTiles,
    diagnostics_array,
    latency_values,
    raised_in,
)
from .interface import NODE_NAME, TOPICS_IN, TOPICS_OUT, usage_text, wants_help  # noqa: F401 - re-exported
from .params import declare_parameters, read_config

try:  # optional: not on PyPI
    import tf2_ros  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    tf2_ros = None
try:  # optional: built by scripts/build_tf2_msgs.sh
    from tf2_msgs.msg import TFMessage  # type: ignore
except ImportError:  # pragma: no cover - depends on the environment
    TFMessage = None

#: Tile-request back-off of the node (s): short, so that it never outlives an outage by long.
TILE_BACKOFF_S, TILE_BACKOFF_MAX_S = 0.2, 1.0
#: Longest the worker waits for the depth map of an image when no depth stamped at or after
#: the image has arrived yet (depth usually arrives with or just after its image).
DEPTH_WAIT_S = 0.05
#: before the first depth map has arrived, frames in this many seconds after the first image
#: also wait (up to DEPTH_WAIT_S) for it: at start-up the depth stream may trail the images
DEPTH_STARTUP_S = 2.0
#: longest wait of one executor ``spin_once`` in :func:`main`: bounds how long SIGINT/SIGTERM take to be seen (s)
SHUTDOWN_POLL_S = 0.1
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass
class _Pending:
    image: Any
    compressed: bool
    received_mono_s: float


class LocalizerNode(Node):
    """See the module docstring. Construction declares parameters, builds publishers and
    subscriptions and starts the worker; nothing blocks (the matcher loads in the worker)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self._warn_unknown_parameters()
        self.cfg: NodeConfig = read_config(self)
        self.stats = Stats()
        self._started_mono_s = time.monotonic()
        self._camera = None
        self._camera_frame = ""
        self._T_base_camera: Optional[np.ndarray] = None
        self._extrinsics_source = ""
        self._matcher_state = "loading"
        self._matcher_detail = ""
        #: set by the worker when the node must exit (the matcher did not load, no degraded start)
        self.fatal_error = ""
        # The matcher and the tile cache are attached by the worker (loading can take seconds).
        self._localizer = Localizer(self.cfg.localizer, None, UnavailableTiles("tile cache is starting"))
        self._logged: set[str] = set()
        self._stop = False
        self._depths = DepthBuffer(max_items=16)
        self._first_image_mono_s: Optional[float] = None
        #: the clock inputs are checked against: node clock + the recent inputs' offset from it
        self._stamps = StampReference()
        self._last_image_stamp_ns: Optional[int] = None
        self._depth_resize_logged = False
        self._tiles: Optional[TileWatch] = None
        #: why the tile cache directory cannot be written ('' = it can): a lasting WARN
        self._cache_write_error = ""

        cfg = self.cfg
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "pose", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.debug_pub = self.create_publisher(Image, "debug_image", 1) if cfg.publish_debug_image else None
        self._tf_broadcaster = None
        self._tf_pub = None
        if cfg.publish_tf:
            if tf2_ros is not None:
                self._tf_broadcaster = tf2_ros.TransformBroadcaster(self)
            elif TFMessage is not None:
                self._tf_pub = self.create_publisher(TFMessage, "/tf", TF_QOS)
            else:
                self.get_logger().error(
                    "publish_tf is true but neither tf2_ros nor tf2_msgs is importable: no TF will be "
                    "published (build tf2_msgs with scripts/build_tf2_msgs.sh)")
        self._tf_buffer = None
        self._static_tf: Optional[conv.StaticTfTree] = None
        if tf2_ros is not None:
            self._tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self._tf_buffer, self)
        elif TFMessage is not None:
            self._static_tf = conv.StaticTfTree()
            self.create_subscription(TFMessage, "/tf_static", self._static_tf.add, TF_STATIC_QOS)
        else:
            self.get_logger().warning(
                "neither tf2_ros nor tf2_msgs is importable: /tf_static cannot be read; the camera "
                "extrinsics come from the camera_* parameters")

        sensor_qos = qos_profile_sensor_data
        if cfg.image_transport == "compressed":
            self.create_subscription(CompressedImage, "image/compressed",
                                     lambda m: self._on_image(m, True), sensor_qos)
        else:
            self.create_subscription(Image, "image", lambda m: self._on_image(m, False), sensor_qos)
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, sensor_qos)
        self.create_subscription(NavSatFix, "fix", self._on_fix, sensor_qos)
        if cfg.use_odom:
            self.create_subscription(Odometry, "odom", self._on_odom, sensor_qos)
        if cfg.use_depth:
            self.create_subscription(Image, "depth", self._on_depth, sensor_qos)
        # Steady clock: diagnostics keep coming with use_sim_time even when /clock stops.
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        # A fatal start-up error found by the worker ends the executor from the executor's own
        # thread (shutting the context down from the worker could race the constructor or spin).
        self.create_timer(0.05, self._end_if_fatal, clock=Clock(clock_type=ClockType.STEADY_TIME))

        self._pending: Optional[_Pending] = None
        self._cv = threading.Condition()
        self._stop = False
        self._worker = threading.Thread(target=self._work, name="xview_localizer_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"started: map_frame={cfg.map_frame} ({cfg.localizer.map_projection}), image_transport="
            f"{cfg.image_transport}, publish_tf={cfg.publish_tf}, tf via "
            f"{'tf2_ros' if tf2_ros else ('tf2_msgs' if TFMessage else 'none')}")

    def _warn_unknown_parameters(self) -> None:
        """One WARN listing the parameters given (params file, ``-p``) that the node does not
        declare, each with the nearest known name: they would otherwise be ignored silently."""
        # rclpy keeps the overrides of the context's arguments (params files, -p) there; it has
        # no public accessor for those not declared.
        overrides = getattr(self, "_parameter_overrides", {}) or {}
        unknown = [name for name in overrides if not self.has_parameter(name) and not name.startswith("qos_overrides.")]
        if unknown:
            self.get_logger().warning(f"unknown parameter(s), ignored: {describe_unknown_parameters(unknown)} "
                                      "(localizer_node --help lists them all)")

    # -- reporting ---------------------------------------------------------------------------------
    def _report(self, key: str, detail: str) -> None:
        """Count a cause; log its first occurrence (and the first after it had cleared). Nothing
        is logged once shutting down (rosout is gone with the context; causes then are the
        shutdown's own, e.g. fetches cut short)."""
        if not self._can_publish():
            return
        if self.stats.cause(key, detail) or key not in self._logged:
            self._logged.add(key)
            # rclpy fixes the severity per call site: one call site per severity.
            if key in ERROR_CAUSES:
                self.get_logger().error(f"{key}: {detail}")
            else:
                self.get_logger().warning(f"{key}: {detail}")

    # -- callbacks (never block, never raise) -------------------------------------------------------
    def _clock_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _observe_stamp(self, stamp) -> Optional[int]:
        """Record an input stamp against the node clock; the reference clock (or None) after it."""
        clock_ns = self._clock_ns()
        self._stamps.observe(conv.stamp_to_ns(stamp), clock_ns)
        return self._stamps.reference_ns(clock_ns)

    def _on_image(self, msg, compressed: bool) -> None:
        self.stats.event("images")
        self._observe_stamp(msg.header.stamp)
        with self._cv:
            if self._pending is not None:
                self.stats.event("frames_dropped")
            self._pending = _Pending(msg, compressed, time.monotonic())
            self._cv.notify()

    def _can_publish(self) -> bool:
        return not self._stop and self.context.ok()

    def _publish_msg(self, publish, msg) -> bool:
        """Publish unless shutting down; a publish that loses the race with the context's
        shutdown (SIGINT/SIGTERM) is dropped silently instead of raising RCLError."""
        if not self._can_publish():
            return False
        try:
            publish(msg)
            return True
        except Exception:  # noqa: BLE001 - rclpy raises RCLError / InvalidHandle once the context is gone
            if self._can_publish():
                raise
            return False

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.stats.event("camera_infos")
        try:
            cam = conv.camera_info_to_camera(msg)
        except XViewError as exc:
            self._report("camera_info_invalid", str(exc))
            return
        self._camera = cam
        self._camera_frame = msg.header.frame_id

    def _on_fix(self, msg: NavSatFix) -> None:
        self.stats.event("fixes")
        reference_ns = self._observe_stamp(msg.header.stamp)
        try:
            fix = conv.navsat_to_fix(msg, on_repair=self._report)
            order = self._localizer.add_fix(fix, now_ns=reference_ns)
        except LocalizationRejected as rej:
            self._report(rej.reason, rej.detail)
            return
        if order == "out_of_order":
            self._report("fix_stamp_out_of_order", "a fix older than the newest one arrived: used, inserted in time order")
        self.stats.event("fixes_valid")

    def _on_odom(self, msg: Odometry) -> None:
        self.stats.event("odoms")
        reference_ns = self._observe_stamp(msg.header.stamp)
        try:
            sample = conv.odometry_to_sample(msg)
        except XViewError as exc:
            self._report("odom_invalid", str(exc))
            return
        try:
            order = self._localizer.add_odom(sample, now_ns=reference_ns)
        except LocalizationRejected as rej:
            self._report(rej.reason, rej.detail)
            return
        if order == "out_of_order":
            self._report("odom_stamp_out_of_order", "an odometry message older than the newest one arrived: used, "
                                                    "inserted in time order")

    def _on_depth(self, msg: Image) -> None:
        self.stats.event("depths")
        try:
            depth_m = conv.depth_image_to_m(msg)
        except XViewError as exc:
            self._report(exc.key if isinstance(exc, ImageConversionError) else "depth_invalid", str(exc))
            return
        self._depths.add(conv.stamp_to_ns(msg.header.stamp), depth_m)

    # -- worker -----------------------------------------------------------------------------------
    def _build_localizer(self) -> None:
        """Tile cache and matcher (in the worker: loading a network can take seconds)."""
        cfg = self.cfg
        from ..tiles.cache import TileCache, TileCacheConfig

        try:
            cache = TileCache(cfg.tile_url, Path(cfg.tile_cache_dir).expanduser() if cfg.tile_cache_dir else None,
                              TileCacheConfig(offline=cfg.tile_offline, timeout_s=cfg.tile_timeout_s,
                                              connect_timeout_s=cfg.tile_connect_timeout_s,
                                              retries=cfg.tile_retries, backoff_s=TILE_BACKOFF_S,
                                              backoff_max_s=TILE_BACKOFF_MAX_S,
                                              negative_ttl_s=cfg.tile_negative_ttl_s,
                                              max_concurrency=cfg.tile_max_in_flight))
            self._tiles = TileWatch(cache, self)
            self._cache_write_error = self._tiles.write_error()
            if self._cache_write_error:
                self._report("tile_cache_not_writable", f"{self._cache_write_error}: tiles are served from memory "
                                                        "only, nothing persists for offline use")
            tiles = self._tiles
        except (XViewError, OSError) as exc:
            if not cfg.allow_degraded_start:
                self.fatal_error = (f"tile source unusable: {exc} (set allow_degraded_start:=true to keep the "
                                    "node up without tiles)")
                self._stop = True
                return
            self._report("tiles_unconfigured", f"tile source {cfg.tile_url!r}: {exc}")
            tiles = UnavailableTiles(f"tile source {cfg.tile_url!r} unusable: {exc}")
        self._localizer.tile_cache = tiles
        try:
            matcher = resolve_factory(cfg.matcher_factory)(cfg.checkpoint_path, cfg.device)
            runtime = apply_runtime(matcher, cfg.matcher_runtime)
            self._localizer.matcher = matcher
            self._matcher_state = "ready"
            note = " (the first frame compiles the ground encoder, ~10 s the first time)" if runtime == "compile" else ""
            self.get_logger().info(f"matcher ready ({type(matcher).__name__}, runtime {runtime or 'custom'}){note}")
        except Exception as exc:  # noqa: BLE001 - any loader failure is reported, never raised
            self._matcher_state = "unavailable"
            self._matcher_detail = f"matcher unavailable: {type(exc).__name__}: {exc}"
            if not cfg.allow_degraded_start:
                # main() prints the one line after the executor has stopped
                self.fatal_error = (f"{self._matcher_detail} (set allow_degraded_start:=true to keep the node up "
                                    "without a matcher)")
                self._stop = True
                return
            self._report("matcher_unavailable", self._matcher_detail)

    def _end_if_fatal(self) -> None:
        """Timer: once the worker has set :attr:`fatal_error`, shut the context down so that
        the spin loop of :func:`main` ends and it prints the one line and exits 1."""
        if self.fatal_error:
            self.context.try_shutdown()

    def _work(self) -> None:
        """Build the localizer, then loop: take the pending (newest) frame, process it, repeat.
        The image callback replaces the pending frame (counting the one it replaces as dropped)
        and notifies the condition, so a frame that arrived while the worker was busy starts the
        moment the previous one is done - no polling; the timed wait only re-checks ``_stop``."""
        try:
            self._build_localizer()
        except Exception as exc:  # noqa: BLE001
            self._report("internal_error", f"building the localizer failed: {exc!r}")
            return
        while True:
            with self._cv:
                while self._pending is None and not self._stop:
                    self._cv.wait(timeout=0.5)
                if self._stop:
                    return
                pending, self._pending = self._pending, None
            try:
                self._process(pending)
            except Exception as exc:  # noqa: BLE001 - never let the worker die
                self._report("internal_error", f"{type(exc).__name__}: {exc}")

    def _extrinsics(self, camera_frame: str) -> Optional[np.ndarray]:
        cfg = self.cfg
        T = None
        if camera_frame:
            if self._tf_buffer is not None:
                try:
                    t = self._tf_buffer.lookup_transform(cfg.base_frame, camera_frame, rclpy.time.Time())
                    T = conv.transform_to_matrix(t.transform)
                except Exception:  # noqa: BLE001 - tf2 raises several lookup exception types
                    T = None
            elif self._static_tf is not None:
                T = self._static_tf.lookup(cfg.base_frame, camera_frame)
        if T is not None:
            if self._extrinsics_source != "tf":
                self.get_logger().info(f"T_base_camera from /tf_static ({cfg.base_frame} <- {camera_frame})")
            self._extrinsics_source = "tf"
            return T
        if self._T_base_camera is not None and self._extrinsics_source == "tf":
            return self._T_base_camera
        if time.monotonic() - self._started_mono_s < cfg.tf_static_wait_s:
            return None
        if self._extrinsics_source != "parameters":
            self.get_logger().warning(
                f"no transform {cfg.base_frame} <- {camera_frame or '<no frame_id>'} on /tf_static after "
                f"{cfg.tf_static_wait_s} s: using the camera_* parameters")
        self._extrinsics_source = "parameters"
        return T_base_camera_from_xyz_rpy(cfg.camera_x_m, cfg.camera_y_m, cfg.camera_z_m, cfg.camera_roll_rad,
                                          cfg.camera_pitch_rad, cfg.camera_yaw_rad)

    def _check_image_stamp(self, stamp_ns: int) -> bool:
        """Reject an image far from the reference clock, a repeated stamp or one older than the
        last image processed; an image more than ``history_s`` older that agrees with the clock
        means the clock jumped back (a bag played again): the time buffers are reset."""
        loc = self.cfg.localizer
        reference_ns = self._stamps.reference_ns(self._clock_ns())
        if reference_ns is not None:
            lead_s = (stamp_ns - reference_ns) / NS_PER_S
            if lead_s > loc.max_stamp_lead_s:
                self._report("image_stamp_future", f"image stamped {lead_s:.2f} s ahead of the clock "
                                                   f"(max_stamp_lead_s = {loc.max_stamp_lead_s:g}): dropped")
                return False
            if -lead_s > loc.history_s:
                self._report("image_stamp_past", f"image stamped {-lead_s:.2f} s behind the clock "
                                                 f"(history_s = {loc.history_s:g}): dropped")
                return False
        last = self._last_image_stamp_ns
        if last is not None and stamp_ns <= last:
            if stamp_ns == last:
                self._report("image_stamp_duplicate", f"image stamp {stamp_ns} ns repeats the last one processed: "
                                                      "dropped")
                return False
            if (last - stamp_ns) / NS_PER_S <= loc.history_s:
                self._report("image_stamp_out_of_order", f"image stamped {(last - stamp_ns) / NS_PER_S:.3f} s before "
                                                         "the last one processed: dropped")
                return False
            self._report("time_jumped_back", f"image stamped {(last - stamp_ns) / NS_PER_S:.1f} s before the last one "
                                             "and consistent with the clock: the clock jumped back, fixes, odometry "
                                             "and the last estimate are forgotten")
            self._localizer.reset()
        self._last_image_stamp_ns = stamp_ns
        return True

    def _process(self, pending: _Pending) -> None:
        cfg = self.cfg
        msg = pending.image
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        # how long the frame waited in the pending slot (up to one frame's processing time)
        self.stats.timing("receive_to_start", time.monotonic() - pending.received_mono_s)
        if not self._check_image_stamp(stamp_ns):
            return
        if not pending.compressed and int(msg.width) * int(msg.height) > cfg.max_image_pixels:
            self._report("image_too_large", f"image of {msg.width}x{msg.height} px is larger than max_image_pixels "
                                            f"= {cfg.max_image_pixels}: dropped before conversion")
            return
        t0 = time.perf_counter()
        try:
            rgb = conv.compressed_to_rgb8(msg) if pending.compressed else conv.image_to_rgb8(msg)
        except XViewError as exc:
            self._report(exc.key if isinstance(exc, ImageConversionError) else "image_invalid", str(exc))
            return
        if rgb.shape[0] * rgb.shape[1] > cfg.max_image_pixels:
            self._report("image_too_large", f"decoded image of {rgb.shape[1]}x{rgb.shape[0]} px is larger than "
                                            f"max_image_pixels = {cfg.max_image_pixels}: dropped")
            return
        self.stats.timing("convert", time.perf_counter() - t0)
        camera = self._camera
        if camera is None:
            self._report("no_camera_info", "no valid camera_info received yet; frames are dropped")
            return
        if (camera.width_px, camera.height_px) != (rgb.shape[1], rgb.shape[0]):
            self._report("camera_info_mismatch", f"image is {rgb.shape[1]}x{rgb.shape[0]} px, camera_info says "
                                                 f"{camera.width_px}x{camera.height_px}")
            return
        T_base_camera = self._extrinsics(msg.header.frame_id or self._camera_frame)
        if T_base_camera is None:
            self._report("waiting_for_extrinsics", f"waiting up to {cfg.tf_static_wait_s} s for "
                                                   f"{cfg.base_frame} <- camera on /tf_static")
            return
        self._T_base_camera = T_base_camera
        if self._matcher_state == "loading":
            self._report("matcher_loading", "the matcher is still loading; frames are dropped")
            return
        if self._matcher_state != "ready":
            self._report("matcher_unavailable", self._matcher_detail)
            return
        if cfg.use_odom:
            self._wait_for_odom(stamp_ns)
        depth = self._depth_for(stamp_ns, rgb.shape) if cfg.use_depth else None
        try:
            result = self._localizer.step(Frame(stamp_ns, rgb, camera, T_base_camera, depth))
        except Exception as exc:  # noqa: BLE001 - a matcher raising e.g. a torch RuntimeError
            if not raised_in(exc, self._localizer.matcher):
                raise
            self._report("matcher_failed", f"the matcher raised {type(exc).__name__}: {exc} (frame dropped)")
            return
        for stage, seconds in result.timings_s.items():
            self.stats.timing(stage, seconds)
        self.stats.event("frames_processed")
        if result.estimate is None:
            self._report(result.reason, result.detail)
            self._publish_debug(result, pending)
            return
        self._publish(result, pending)

    def _depth_for(self, stamp_ns: int, image_shape: tuple[int, ...]) -> Optional[np.ndarray]:
        """The depth map nearest the image stamp within the tolerance, at the image's size
        (nearest-neighbour resize, counted), or None (cause ``depth_missing``)."""
        now = time.monotonic()
        deadline = now + DEPTH_WAIT_S
        if self._first_image_mono_s is None:
            self._first_image_mono_s = now
        starting = now - self._first_image_mono_s < DEPTH_STARTUP_S
        while True:
            depth_m = self._depths.nearest(stamp_ns, self.cfg.depth_tolerance_s)
            latest = self._depths.latest_stamp_ns()
            # wait only while depth flows (the latest within 1 s of the image) but has not reached
            # it, or at start-up before the first depth map
            flowing = (latest is not None and stamp_ns - NS_PER_S <= latest < stamp_ns) or (latest is None and starting)
            if depth_m is not None or not flowing or time.monotonic() >= deadline or self._stop:
                break
            time.sleep(0.002)
        if depth_m is None:
            self.stats.event("frames_without_depth")
            self._report("depth_missing", f"no valid depth within {self.cfg.depth_tolerance_s * 1e3:.0f} ms of the "
                                          "image stamp: the frame runs on flat ground")
            return None
        depth_m, resized = fit_depth_to_image(depth_m, image_shape)
        self.stats.event("frames_with_depth")
        if resized:
            self.stats.event("depth_resized")
            if not self._depth_resize_logged:
                self._depth_resize_logged = True
                self.get_logger().info(f"depth maps are resized (nearest neighbour) to the image size "
                                       f"{image_shape[1]}x{image_shape[0]}")
        return depth_m

    def _wait_for_odom(self, stamp_ns: int) -> None:
        """Odometry usually arrives with or just after the image: give it ``odom_wait_s`` to
        reach the image stamp, so map->odom uses interpolated, not extrapolated, odometry."""
        deadline = time.monotonic() + self.cfg.odom_wait_s
        while True:
            latest = self._localizer.latest_odom_stamp_ns()
            if latest is None or latest >= stamp_ns or time.monotonic() >= deadline or self._stop:
                return
            time.sleep(0.002)

    # -- outputs ------------------------------------------------------------------------------------
    def _publish(self, result: StepResult, pending: _Pending) -> None:
        cfg = self.cfg
        est = result.estimate
        try:
            pose = conv.estimate_to_pose_msg(est, cfg.map_frame)
        except XViewError as exc:
            self._report("internal_error", f"pose message: {exc}")
            return
        if not self._publish_msg(self.pose_pub.publish, pose):
            return
        self.stats.event("poses")
        if cfg.publish_tf and (self._tf_broadcaster is not None or self._tf_pub is not None):
            if est.T_odom_base is not None and cfg.use_odom:
                T_map_odom = est.T_map_base @ est.T_odom_base.inverse()
                tol_ns = int(round(cfg.transform_tolerance_s * 1e9))
                tf = conv.se2_to_transform_stamped(T_map_odom, cfg.map_frame, cfg.odom_frame, est.stamp_ns + tol_ns)
            else:
                tf = conv.se2_to_transform_stamped(est.T_map_base, cfg.map_frame, cfg.base_frame, est.stamp_ns)
            if self._tf_broadcaster is not None:
                self._publish_msg(self._tf_broadcaster.sendTransform, tf)
            else:
                self._publish_msg(self._tf_pub.publish, TFMessage(transforms=[tf]))
        latency_s = time.monotonic() - pending.received_mono_s
        self.stats.timing("receive_to_publish", latency_s)
        now_ns = self.get_clock().now().nanoseconds
        self.stats.timing("stamp_to_publish", (now_ns - est.stamp_ns) / 1e9)
        self._publish_debug(result, pending)

    def _publish_debug(self, result: StepResult, pending: _Pending) -> None:
        if self.debug_pub is None or result.sat_rgb is None:
            return
        rgb = conv.render_debug_image(result)
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0,
                    step=rgb.shape[1] * 3)
        msg.header.stamp = pending.image.header.stamp
        msg.header.frame_id = self.cfg.map_frame
        msg.data = rgb.tobytes()
        self._publish_msg(self.debug_pub.publish, msg)

    def _publish_diagnostics(self) -> None:
        if self._cache_write_error and "tile_cache_not_writable" not in self.stats.causes:  # found while serving
            self._report("tile_cache_not_writable", f"{self._cache_write_error}: tiles are served from memory only, "
                                                    "nothing persists for offline use")
        arr = diagnostics_array(self.stats, period_s=self.cfg.diagnostics_period_s,
                                stamp=self.get_clock().now().to_msg(), hardware_id=self.get_fully_qualified_name(),
                                matcher_state=self._matcher_state, cache_write_error=self._cache_write_error,
                                use_depth=self.cfg.use_depth, extrinsics_source=self._extrinsics_source,
                                logged=self._logged)
        self._publish_msg(self.diag_pub.publish, arr)

    # -- shutdown -----------------------------------------------------------------------------------
    def stop(self, timeout_s: float = 3.0) -> bool:
        """Ask the worker to finish and wait up to ``timeout_s``; True when it has finished.

        A frame inside the matcher is not interrupted (torch offers no safe way to); when it
        outlives the timeout, :func:`main` ends the process without running interpreter
        finalisation, which would otherwise abort in torch's C++ thread pool."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        tiles = self._tiles
        if tiles is not None:  # requests not yet sent fail at once; no retries, no back-off sleeps
            fetcher = getattr(tiles.cache, "_fetcher", None)
            if fetcher is not None:
                fetcher.close()
        self._worker.join(timeout=timeout_s)
        finished = not self._worker.is_alive()
        if finished and tiles is not None:
            tiles.close()  # waits for fetches in flight: every tile on disk is whole
        return finished


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``localizer_node`` (``--ros-args`` are passed to rclpy; ``-h`` / ``--help``
    prints :func:`usage_text` and exits 0 without initialising rclpy)."""
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.executors import ExternalShutdownException

    if wants_help(list(sys.argv[1:] if argv is None else argv[1:])):
        print(usage_text())
        return 0
    # SIGINT / SIGTERM only set a flag that the spin loop below checks between callbacks. (The
    # default handlers raise KeyboardInterrupt at whatever bytecode runs, which can be inside
    # rclpy's Task constructor - a half-built Task whose __del__ prints a traceback - or inside
    # the shutdown path.) After the first one, further SIGINT / SIGTERM are ignored: shutdown is
    # bounded (Node.stop waits at most 3 s for the worker), and SIG_IGN, unlike a Python handler,
    # survives interpreter finalisation, where a second Ctrl-C would otherwise kill the process.
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        stop_requested.set()

    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    node = None
    executor = None
    worker_finished = True
    try:
        node = LocalizerNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not stop_requested.is_set():
            executor.spin_once(timeout_sec=SHUTDOWN_POLL_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, InvalidParameterValueException) as exc:
        print(f"localizer_node: invalid parameters: {exc}", flush=True)
        return 2
    finally:
        if node is not None and node.fatal_error:
            print(f"localizer_node: error: {node.fatal_error}", file=sys.stderr, flush=True)
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            worker_finished = node.stop()
            if not worker_finished:
                node.get_logger().warning("shutdown: the worker is still inside the matcher; exiting without waiting")
            node.destroy_node()
        rclpy.try_shutdown()
    if not worker_finished:
        # A daemon thread still running torch code would make interpreter finalisation abort
        # ("terminate called without an active exception"); everything ROS is already shut down.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 1 if node is not None and node.fatal_error else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
