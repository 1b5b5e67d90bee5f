"""rosbag2 I/O with ``rosbags`` (pure Python): write a synthetic drive (mcap or sqlite3), read any bag.

Topics of a drive (all stamps simulated time; every message's bag log time equals its header stamp):

=========================== ===================================== ============================
topic                       type                                  notes
=========================== ===================================== ============================
/camera/image_raw           sensor_msgs/msg/Image                 rgb8, every trajectory sample
/camera/image_raw/compressed sensor_msgs/msg/CompressedImage      JPEG, only with ``compressed``
/camera/camera_info         sensor_msgs/msg/CameraInfo            with every image; the camera's
                                                                  distortion_model and d
                                                                  (plumb_bob, zeros when
                                                                  undistorted)
/camera/depth               sensor_msgs/msg/Image                 32FC1 metres (optical z), NaN
                                                                  = no return (REP 118); only
                                                                  with ``depth``
/gnss/fix                   sensor_msgs/msg/NavSatFix             GnssConfig.rate_hz; NO_FIX:
                                                                  status -1, NaN position,
                                                                  covariance type UNKNOWN
/odom                       nav_msgs/msg/Odometry                 odom -> base_link, every sample
/tf_static                  tf2_msgs/msg/TFMessage                base_link -> camera optical
                                                                  frame, once, transient-local
/ground_truth/pose          geometry_msgs/msg/PoseStamped         T_map_base, frame ``map``
/clock                      rosgraph_msgs/msg/Clock               every sample (``clock``)
=========================== ===================================== ============================

Beside the messages the bag directory holds ``sim.yaml`` (:data:`SIDECAR_NAME`): datum, map
frame, tile URL, world directory and seed, drive/GNSS/odometry configs and seeds, the
realised odometry drift, the camera. A few keys are also stored in the bag's
``custom_data`` (metadata.yaml) so ``ros2 bag info`` shows them.

Reading bags back (any rosbag2, not only these; the replay and the bag data-set exporter):
:func:`open_reader` (rosbags' ``AnyReader``) and :func:`sidecar_of` (the ``sim.yaml`` of a
``sim drive`` bag, or None).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import yaml

from ..core.errors import BagError, ConfigError
from ..core.se2 import SE2

log = logging.getLogger(__name__)

__all__ = [
    "BagConfig",
    "FRAMES",
    "SIDECAR_NAME",
    "TOPICS",
    "open_reader",
    "read_sidecar",
    "record_drive",
    "sidecar_of",
    "write_drive_bag",
]

SIDECAR_NAME = "sim.yaml"
SIDECAR_FORMAT = "xview-sim-drive/1"

#: Frame ids written into the bag.
FRAMES = {
    "map": "map",
    "odom": "odom",
    "base": "base_link",
    "camera": "camera_optical_frame",
    "gnss": "base_link",
}

#: Topic names (fixed; remap on playback).
TOPICS = {
    "image": "/camera/image_raw",
    "compressed": "/camera/image_raw/compressed",
    "camera_info": "/camera/camera_info",
    "depth": "/camera/depth",
    "fix": "/gnss/fix",
    "odom": "/odom",
    "tf_static": "/tf_static",
    "ground_truth": "/ground_truth/pose",
    "clock": "/clock",
}

#: Variance written for unobserved 6-DoF components (large but finite; see DESIGN.md).
UNOBSERVED_VAR = 1e6
STORAGES = ("mcap", "sqlite3")


@dataclass(frozen=True)
class BagConfig:
    """What goes into the bag.

    storage: 'mcap' (default) or 'sqlite3'. compressed: also write JPEG
    CompressedImage. depth: also write 32FC1 depth. clock: write /clock.
    jpeg_quality: 1..100.
    """

    storage: str = "mcap"
    compressed: bool = False
    depth: bool = False
    clock: bool = True
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ConfigError(f"BagConfig.storage must be one of {STORAGES}, got {self.storage!r}")
        if isinstance(self.jpeg_quality, bool) or not isinstance(self.jpeg_quality, int) or not (
            1 <= self.jpeg_quality <= 100
        ):
            raise ConfigError(f"BagConfig.jpeg_quality must be an int in [1, 100], got {self.jpeg_quality!r}")


# --------------------------------------------------------------------------------------
# message builders
# --------------------------------------------------------------------------------------
def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _quat_from_yaw(yaw_rad: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation about z."""
    return (0.0, 0.0, math.sin(yaw_rad / 2.0), math.cos(yaw_rad / 2.0))


def _quat_from_matrix(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation matrix (w >= 0)."""
    m = np.asarray(R, float)
    tr = float(np.trace(m))
    if tr > 0.0:
        s = math.sqrt(tr + 1.0) * 2.0
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2.0
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2.0
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2.0
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([x, y, z, w])
    q /= np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return tuple(float(v) for v in q)


class _Messages:
    """Builds rosbags message objects for one drive."""

    def __init__(self, ts) -> None:
        self.ts = ts
        t = ts.types
        self.Time = t["builtin_interfaces/msg/Time"]
        self.Header = t["std_msgs/msg/Header"]
        self.Image = t["sensor_msgs/msg/Image"]
        self.CompressedImage = t["sensor_msgs/msg/CompressedImage"]
        self.CameraInfo = t["sensor_msgs/msg/CameraInfo"]
        self.Roi = t["sensor_msgs/msg/RegionOfInterest"]
        self.NavSatFix = t["sensor_msgs/msg/NavSatFix"]
        self.NavSatStatus = t["sensor_msgs/msg/NavSatStatus"]
        self.Odometry = t["nav_msgs/msg/Odometry"]
        self.PoseWithCovariance = t["geometry_msgs/msg/PoseWithCovariance"]
        self.TwistWithCovariance = t["geometry_msgs/msg/TwistWithCovariance"]
        self.Pose = t["geometry_msgs/msg/Pose"]
        self.Point = t["geometry_msgs/msg/Point"]
        self.Quaternion = t["geometry_msgs/msg/Quaternion"]
        self.Twist = t["geometry_msgs/msg/Twist"]
        self.Vector3 = t["geometry_msgs/msg/Vector3"]
        self.PoseStamped = t["geometry_msgs/msg/PoseStamped"]
        self.Transform = t["geometry_msgs/msg/Transform"]
        self.TransformStamped = t["geometry_msgs/msg/TransformStamped"]
        self.TFMessage = t["tf2_msgs/msg/TFMessage"]
        self.Clock = t["rosgraph_msgs/msg/Clock"]

    def time(self, stamp_ns: int):
        return self.Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))

    def header(self, stamp_ns: int, frame_id: str):
        return self.Header(stamp=self.time(stamp_ns), frame_id=frame_id)

    def pose2d(self, T: SE2):
        q = _quat_from_yaw(T.yaw_rad)
        return self.Pose(position=self.Point(x=T.x_m, y=T.y_m, z=0.0),
                         orientation=self.Quaternion(x=q[0], y=q[1], z=q[2], w=q[3]))

    def image_rgb8(self, stamp_ns: int, rgb: np.ndarray):
        h, w = rgb.shape[:2]
        data = np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1)
        return self.Image(header=self.header(stamp_ns, FRAMES["camera"]), height=h, width=w,
                          encoding="rgb8", is_bigendian=0, step=w * 3, data=data)

    def image_32fc1(self, stamp_ns: int, depth_m: np.ndarray):
        h, w = depth_m.shape
        d = np.asarray(depth_m, dtype="<f4").copy()
        d[~(d > 0.0)] = np.nan  # REP 118: NaN = no measurement
        data = np.frombuffer(d.tobytes(), dtype=np.uint8)
        return self.Image(header=self.header(stamp_ns, FRAMES["camera"]), height=h, width=w,
                          encoding="32FC1", is_bigendian=0, step=w * 4, data=data)

    def compressed(self, stamp_ns: int, rgb: np.ndarray, quality: int):
        import cv2

        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise BagError("JPEG encoding of a camera frame failed")
        return self.CompressedImage(header=self.header(stamp_ns, FRAMES["camera"]),
                                    format="rgb8; jpeg compressed bgr8", data=buf.reshape(-1).astype(np.uint8))

    def camera_info(self, stamp_ns: int, camera):
        K = camera.K
        d = list(camera.d) if camera.distortion_model != "none" else [0.0] * 5
        model = camera.distortion_model if camera.distortion_model != "none" else "plumb_bob"
        P = np.zeros((3, 4))
        P[:, :3] = K
        return self.CameraInfo(
            header=self.header(stamp_ns, FRAMES["camera"]), height=camera.height_px, width=camera.width_px,
            distortion_model=model, d=np.asarray(d, float), k=K.reshape(-1).astype(float),
            r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
            roi=self.Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def navsat(self, stamp_ns: int, status: int, lat: float, lon: float, alt: float, cov_enu: np.ndarray):
        fix = int(status) != -1
        cov = np.zeros(9)
        if fix:
            cov[[0, 4, 8]] = cov_enu
        return self.NavSatFix(
            header=self.header(stamp_ns, FRAMES["gnss"]),
            status=self.NavSatStatus(status=int(status), service=self.NavSatStatus.SERVICE_GPS),
            latitude=float(lat), longitude=float(lon), altitude=float(alt), position_covariance=cov,
            position_covariance_type=(self.NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN if fix
                                      else self.NavSatFix.COVARIANCE_TYPE_UNKNOWN))

    def odometry(self, stamp_ns: int, T_odom_base: SE2, speed: float, yaw_rate: float,
                 var_xy: float, var_yaw: float, twist_var: tuple[float, float]):
        pc = np.zeros((6, 6))
        pc[0, 0] = pc[1, 1] = var_xy
        pc[2, 2] = pc[3, 3] = pc[4, 4] = UNOBSERVED_VAR
        pc[5, 5] = var_yaw
        tc = np.zeros((6, 6))
        tc[0, 0] = twist_var[0]
        tc[1, 1] = 1e-4  # non-holonomic: no sideways speed
        tc[2, 2] = tc[3, 3] = tc[4, 4] = UNOBSERVED_VAR
        tc[5, 5] = twist_var[1]
        twist = self.Twist(linear=self.Vector3(x=float(speed), y=0.0, z=0.0),
                           angular=self.Vector3(x=0.0, y=0.0, z=float(yaw_rate)))
        return self.Odometry(
            header=self.header(stamp_ns, FRAMES["odom"]), child_frame_id=FRAMES["base"],
            pose=self.PoseWithCovariance(pose=self.pose2d(T_odom_base), covariance=pc.reshape(-1)),
            twist=self.TwistWithCovariance(twist=twist, covariance=tc.reshape(-1)))

    def pose_stamped(self, stamp_ns: int, T_map_base: SE2):
        return self.PoseStamped(header=self.header(stamp_ns, FRAMES["map"]), pose=self.pose2d(T_map_base))

    def tf_static(self, stamp_ns: int, T_base_camera: np.ndarray):
        T = np.asarray(T_base_camera, float)
        q = _quat_from_matrix(T[:3, :3])
        tfm = self.Transform(translation=self.Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                             rotation=self.Quaternion(x=q[0], y=q[1], z=q[2], w=q[3]))
        ts = self.TransformStamped(header=self.header(stamp_ns, FRAMES["base"]),
                                   child_frame_id=FRAMES["camera"], transform=tfm)
        return self.TFMessage(transforms=[ts])

    def clock(self, stamp_ns: int):
        return self.Clock(clock=self.time(stamp_ns))


def _qos(transient_local: bool, depth: int):
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    infinite = QosTime(sec=9223372036, nsec=854775807)
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        deadline=infinite,
        lifespan=infinite,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=infinite,
        avoid_ros_namespace_conventions=False,
    )


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def write_drive_bag(
    out_path: Path,
    *,
    trajectory,
    gnss,
    odometry,
    camera,
    T_base_camera: np.ndarray,
    frames: Iterable,
    config: BagConfig = BagConfig(),
    sidecar: Optional[dict] = None,
    custom_data: Optional[dict] = None,
) -> Path:
    """Write one drive to a new rosbag2 directory ``out_path``.

    trajectory / gnss / odometry: from :mod:`.drive`. camera: ``PinholeCamera`` of the
    images; ``T_base_camera`` (4, 4) optical frame -> base_link. frames: an iterable of
    ``GroundFrame`` (rgb (H, W, 3) uint8, depth_m (H, W) float32), one per trajectory sample,
    consumed lazily (rendering is the slow part). sidecar: dict written as ``sim.yaml``.
    custom_data: str -> str pairs for the bag metadata. Returns ``out_path``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.errors import WriterError

    out = Path(out_path)
    if out.exists():
        raise BagError(f"{out}: exists already; rosbag2 writers never overwrite, choose a new path")
    T_bc = np.asarray(T_base_camera, float)
    if T_bc.shape != (4, 4) or not np.all(np.isfinite(T_bc)):
        raise BagError(f"T_base_camera must be a finite 4x4 matrix, got shape {T_bc.shape}")
    ts = _typestore()
    mk = _Messages(ts)
    plugin = StoragePlugin.MCAP if config.storage == "mcap" else StoragePlugin.SQLITE3
    gnss_at = {int(i): j for j, i in enumerate(gnss.index)}
    n = len(trajectory)
    try:
        writer = Writer(out, version=9, storage_plugin=plugin)
    except WriterError as exc:
        raise BagError(f"{out}: cannot create bag: {exc}") from exc
    for k, v in (custom_data or {}).items():
        writer.set_custom_data(str(k), str(v))
    writer.open()
    try:
        sensor = _qos(False, 10)
        conns = {}

        def add(key: str, msgtype: str, qos=sensor):
            conns[key] = writer.add_connection(TOPICS[key], msgtype, typestore=ts, offered_qos_profiles=[qos])

        if config.clock:
            add("clock", "rosgraph_msgs/msg/Clock")
        add("tf_static", "tf2_msgs/msg/TFMessage", _qos(True, 1))
        add("ground_truth", "geometry_msgs/msg/PoseStamped")
        add("odom", "nav_msgs/msg/Odometry")
        add("fix", "sensor_msgs/msg/NavSatFix")
        add("camera_info", "sensor_msgs/msg/CameraInfo")
        add("image", "sensor_msgs/msg/Image")
        if config.compressed:
            add("compressed", "sensor_msgs/msg/CompressedImage")
        if config.depth:
            add("depth", "sensor_msgs/msg/Image")

        def put(key: str, msg, stamp_ns: int) -> None:
            writer.write(conns[key], int(stamp_ns), ts.serialize_cdr(msg, msg.__msgtype__))

        count = 0
        for k, frame in enumerate(frames):
            if k >= n:
                raise BagError(f"more frames than trajectory samples ({n})")
            stamp = int(trajectory.stamp_ns[k])
            if config.clock:
                put("clock", mk.clock(stamp), stamp)
            if k == 0:
                put("tf_static", mk.tf_static(stamp, T_bc), stamp)
            put("ground_truth", mk.pose_stamped(stamp, trajectory.T_map_base(k)), stamp)
            put("odom", mk.odometry(stamp, odometry.T_odom_base(k), odometry.speed_m_s[k],
                                    odometry.yaw_rate_rad_s[k], odometry.cov_xy_m2[k],
                                    odometry.cov_yaw_rad2[k], odometry.twist_var), stamp)
            if k in gnss_at:
                j = gnss_at[k]
                put("fix", mk.navsat(stamp, gnss.status[j], gnss.lat_deg[j], gnss.lon_deg[j],
                                     gnss.alt_m[j], gnss.cov_enu_m2), stamp)
            rgb = np.asarray(frame.rgb)
            if rgb.shape != (camera.height_px, camera.width_px, 3) or rgb.dtype != np.uint8:
                raise BagError(
                    f"frame {k}: rgb must be uint8 {(camera.height_px, camera.width_px, 3)}, got "
                    f"{rgb.dtype} {rgb.shape}"
                )
            put("camera_info", mk.camera_info(stamp, camera), stamp)
            put("image", mk.image_rgb8(stamp, rgb), stamp)
            if config.compressed:
                put("compressed", mk.compressed(stamp, rgb, config.jpeg_quality), stamp)
            if config.depth:
                put("depth", mk.image_32fc1(stamp, np.asarray(frame.depth_m)), stamp)
            count += 1
        if count != n:
            raise BagError(f"got {count} frames for {n} trajectory samples")
    finally:
        writer.close()
    if sidecar is not None:
        (out / SIDECAR_NAME).write_text(yaml.safe_dump(sidecar, sort_keys=False))
    return out


def read_sidecar(bag_dir: Path) -> dict:
    """The ``sim.yaml`` of a bag written by :func:`write_drive_bag`."""
    path = Path(bag_dir) / SIDECAR_NAME
    if not path.is_file():
        raise BagError(f"{bag_dir}: no {SIDECAR_NAME} (not a bag written by `sim drive`)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BagError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise BagError(f"{path}: not a {SIDECAR_FORMAT} sidecar")
    return data


# --------------------------------------------------------------------------------------
# reading any rosbag2 (the replay, the bag data-set exporter)
# --------------------------------------------------------------------------------------
def open_reader(bag: Path):
    """An opened-on-enter ``rosbags`` :class:`AnyReader` for ``bag`` (a rosbag2 directory, or
    an ``.mcap`` / ``.db3`` file; any producer), with the ROS 2 Kilted type store as the
    default for bags that carry no message definitions. Use as ``with open_reader(bag) as r:``.

    Raises:
        BagError: ``bag`` does not exist or is not a readable rosbag2.
    """
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    if not bag.exists():
        raise BagError(f"{bag}: no such bag (a rosbag2 directory, or an .mcap / .db3 file)")
    try:
        return AnyReader([bag], default_typestore=_typestore())
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types
        raise BagError(f"{bag}: not a readable rosbag2: {exc}") from exc


def sidecar_of(bag: Path) -> Optional[dict]:
    """The ``sim.yaml`` of a bag written by ``sim drive`` (``bag`` is its directory or a file
    in it), or None when there is none or it is invalid."""
    bag = Path(bag)
    try:
        return read_sidecar(bag if bag.is_dir() else bag.parent)
    except BagError:
        return None


# --------------------------------------------------------------------------------------
# the whole recording: world dir -> bag
# --------------------------------------------------------------------------------------
def world_tile_url(world_dir: Path) -> str:
    """``file://`` URL template of a world's XYZ tile folder (written by ``sim world``)."""
    return f"file://{Path(world_dir).resolve()}/tiles/{{z}}/{{x}}/{{y}}.png"


def record_drive(
    world_dir: Path,
    out_path: Path,
    *,
    drive_config,
    gnss_config,
    odom_config,
    bag_config: BagConfig = BagConfig(),
    width_px: int = 1242,
    height_px: int = 375,
    camera_height_m: float = 1.65,
    device: str = "cpu",
    progress: bool = True,
    world=None,
    renderer_factory: Optional[Callable] = None,
    camera=None,
) -> Path:
    """Load the world in ``world_dir``, simulate a drive and write it to ``out_path``.

    The camera is ``camera`` (a :class:`~xview_localizer.core.camera.PinholeCamera` with any
    distortion model; ``width_px`` / ``height_px`` are then ignored) or by default the KITTI-like
    one resized to ``width_px`` x ``height_px`` (``PinholeCamera.kitti_like``), in both cases
    ``camera_height_m`` above base_link, looking forward. The images are rendered through the
    camera's lens and every CameraInfo carries its ``distortion_model`` and ``d``. A panorama
    has no CameraInfo model: ``EquirectangularCamera`` raises BagError. ``world`` may pass an
    already loaded World; ``renderer_factory(world, camera, T_base_camera, device)`` replaces
    the default ``GroundRenderer``.
    """
    from ..core.camera import PinholeCamera, kitti_like_T_base_camera
    from .drive import generate_trajectory, simulate_gnss, simulate_odometry
    from .world import World

    if camera is None:
        camera = PinholeCamera.kitti_like(width_px, height_px)
    elif not isinstance(camera, PinholeCamera):
        raise BagError(f"record_drive: camera must be a PinholeCamera (CameraInfo has no model for a "
                       f"{type(camera).__name__}), got {camera!r}")
    else:
        from .lens import covers_image

        if not covers_image(camera):
            log.warning("camera %s: its distortion is not invertible over the whole image; pixels without "
                        "a ray are rendered black", camera)
    world_dir = Path(world_dir)
    if world is None:
        world = World.load(world_dir)
    T_base_camera = kitti_like_T_base_camera(camera_height_m)
    trajectory = generate_trajectory(world, drive_config)
    gnss = simulate_gnss(world, trajectory, gnss_config)
    odometry = simulate_odometry(trajectory, odom_config)
    if renderer_factory is None:
        from .ground import GroundRenderer

        renderer = GroundRenderer(world, camera, T_base_camera, device=device)
    else:
        renderer = renderer_factory(world, camera, T_base_camera, device)

    def frames():
        it = range(len(trajectory))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="rendering drive", unit="frame")
        for k in it:
            yield renderer.render(trajectory.T_map_base(k))

    cfg = world.config
    sidecar = {
        "format": SIDECAR_FORMAT,
        "datum": {"lat_deg": cfg.datum_lat_deg, "lon_deg": cfg.datum_lon_deg, "h_m": 0.0},
        "map_frame": {"id": FRAMES["map"],
                      "definition": "local ENU tangent plane at the datum (x east, y north, metres)"},
        "frames": dict(FRAMES),
        "topics": dict(TOPICS),
        "tile_url": world_tile_url(world_dir),
        "world": {"dir": str(world_dir.resolve()), "seed": cfg.seed, "size_m": cfg.size_m},
        "drive": {**_plain(asdict(drive_config)), "n_samples": len(trajectory),
                  "distance_m": float(trajectory.distance_m[-1]) if len(trajectory) else 0.0},
        "gnss": {**_plain(asdict(gnss_config)), "reported_sigma_m": gnss_config.horizontal_sigma_m,
                 "n_fixes": int(len(gnss)), "n_no_fix": int(np.sum(gnss.status == -1)),
                 "n_outliers": int(np.sum(gnss.is_outlier))},
        "odom": {**_plain(asdict(odom_config)), "realised_speed_scale_error": odometry.speed_scale_error,
                 "realised_yaw_rate_bias_rad_s": odometry.yaw_rate_bias_rad_s},
        "camera": {"width_px": camera.width_px, "height_px": camera.height_px, "k": list(camera.k),
                   "d": list(camera.d), "distortion_model": camera.distortion_model,
                   "frame_id": FRAMES["camera"], "T_base_camera": T_base_camera.tolist()},
        "bag": _plain(asdict(bag_config)),
    }
    custom = {
        "xview_sim_format": SIDECAR_FORMAT,
        "datum_lat_deg": repr(cfg.datum_lat_deg),
        "datum_lon_deg": repr(cfg.datum_lon_deg),
        "map_frame": "map = local ENU tangent plane at the datum",
        "tile_url": sidecar["tile_url"],
        "world_seed": str(cfg.seed),
        "drive_seed": str(drive_config.seed),
    }
    return write_drive_bag(out_path, trajectory=trajectory, gnss=gnss, odometry=odometry, camera=camera,
                           T_base_camera=T_base_camera, frames=frames(), config=bag_config,
                           sidecar=sidecar, custom_data=custom)


def _plain(d):
    """Tuples -> lists, numpy scalars -> Python, for YAML."""
    if isinstance(d, dict):
        return {k: _plain(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_plain(v) for v in d]
    if isinstance(d, np.generic):
        return d.item()
    return d
