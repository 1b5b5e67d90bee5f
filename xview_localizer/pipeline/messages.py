"""Sensor messages -> the pipeline's types, without ROS (no rclpy, no message package, no cv_bridge).

Every function here only READS fields, by the names of the ROS 2 message definitions
(``msg.header.stamp.sec``, ``msg.encoding``, ``msg.pose.pose.orientation``, ...), so the same
code decodes rclpy messages (the node) and the message objects ``rosbags`` deserializes (the
replay, the bag data-set exporter). Message constants a decoder needs are module constants
here (:data:`NAVSAT_STATUS_FIX`, :data:`NAVSAT_COVARIANCE_TYPE_UNKNOWN`, ...), equal to the
``sensor_msgs`` ones. Building ROS messages (stamps, quaternions, the pose and TF outputs) is
the ROS edge's job: :mod:`xview_localizer.ros.conversions`, which re-exports everything here.

Time
    :func:`stamp_to_ns`: ``builtin_interfaces/Time`` -> integer nanoseconds;
    :func:`header_stamp_ns` the same for ``msg.header.stamp``.
Images
    :func:`image_to_numpy` turns a ``sensor_msgs/Image`` into an ``(H, W)`` or ``(H, W, C)``
    array of its native dtype (rgb8, bgr8, rgba8, bgra8, mono8, mono16, 32FC1, 16UC1), honouring
    row padding (``step``) and ``is_bigendian``; :func:`image_to_rgb8` gives the (H, W, 3) uint8
    RGB the matcher takes (mono16 keeps its 8 most significant bits); :func:`depth_image_to_m`
    gives (H, W) float32 metres (16UC1 millimetres scaled, 0 -> NaN); :func:`compressed_to_rgb8`
    decodes JPEG/PNG ``CompressedImage`` with ``cv2.imdecode``. Anything unsupported or
    inconsistent raises :class:`~xview_localizer.core.errors.ImageConversionError` naming the
    field and the cause.
GNSS / odometry / camera
    :func:`navsat_to_fix` rejects NO_FIX and NaN fixes with
    :class:`~xview_localizer.core.errors.LocalizationRejected` (reasons ``fix_no_fix`` /
    ``fix_invalid``) and repairs unusable covariances; :func:`odometry_to_sample` projects the
    3-D odometry pose to the plane (``T_odom_base``: x, y, yaw); :func:`camera_info_to_camera`
    gives a :class:`~xview_localizer.core.camera.PinholeCamera`.
Geometry
    :func:`quaternion_to_yaw_rad` (REP-103 yaw about z), :func:`transform_to_matrix`
    (``geometry_msgs/Transform`` -> 4x4 ``T_parent_child``), :func:`matrix_to_se2` (its planar
    part), :class:`StaticTfTree` (``/tf_static`` chains composed), :func:`covariance_6x6`
    (3x3 (x, y, yaw) -> the row-major 6x6 of a ``PoseWithCovariance``; z/roll/pitch variances
    :data:`UNUSED_VARIANCE`, finite).
Debug
    :func:`render_debug_image`: one frame's matches, prior and estimate on its satellite patch.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, Optional

import cv2
import numpy as np

from ..core.camera import PinholeCamera
from ..core.errors import GeometryError, ImageConversionError, LocalizationRejected, XViewError
from ..core.se2 import SE2
from .samples import NS_PER_S, FixSample, OdomSample, StepResult

__all__ = [
    "FIX_COVARIANCE_REPAIRED",
    "IMAGE_ENCODINGS",
    "MIN_VARIANCE",
    "NAVSAT_COVARIANCE_TYPE_APPROXIMATED",
    "NAVSAT_COVARIANCE_TYPE_DIAGONAL_KNOWN",
    "NAVSAT_COVARIANCE_TYPE_KNOWN",
    "NAVSAT_COVARIANCE_TYPE_UNKNOWN",
    "NAVSAT_STATUS_FIX",
    "NAVSAT_STATUS_GBAS_FIX",
    "NAVSAT_STATUS_NO_FIX",
    "NAVSAT_STATUS_SBAS_FIX",
    "NAVSAT_STATUS_UNKNOWN",
    "UNUSED_VARIANCE",
    "StaticTfTree",
    "camera_info_to_camera",
    "compressed_to_rgb8",
    "covariance_6x6",
    "depth_image_to_m",
    "header_stamp_ns",
    "image_to_numpy",
    "image_to_rgb8",
    "matrix_to_se2",
    "navsat_to_fix",
    "odometry_to_sample",
    "quaternion_to_yaw_rad",
    "render_debug_image",
    "stamp_to_ns",
    "transform_to_matrix",
]

#: Variance written for the unobserved z, roll, pitch (large but finite: 1e308-style values
#: turn filters to NaN).
UNUSED_VARIANCE = 1e6
#: Smallest variance ever written.
MIN_VARIANCE = 1e-6

#: ``sensor_msgs/NavSatStatus.status`` values (``STATUS_UNKNOWN`` = -2 exists since Kilted).
NAVSAT_STATUS_UNKNOWN = -2
NAVSAT_STATUS_NO_FIX = -1
NAVSAT_STATUS_FIX = 0
NAVSAT_STATUS_SBAS_FIX = 1
NAVSAT_STATUS_GBAS_FIX = 2
#: ``sensor_msgs/NavSatFix.position_covariance_type`` values.
NAVSAT_COVARIANCE_TYPE_UNKNOWN = 0
NAVSAT_COVARIANCE_TYPE_APPROXIMATED = 1
NAVSAT_COVARIANCE_TYPE_DIAGONAL_KNOWN = 2
NAVSAT_COVARIANCE_TYPE_KNOWN = 3

#: encoding -> (channels, numpy base dtype)
IMAGE_ENCODINGS: dict[str, tuple[int, str]] = {
    "rgb8": (3, "u1"),
    "bgr8": (3, "u1"),
    "rgba8": (4, "u1"),
    "bgra8": (4, "u1"),
    "mono8": (1, "u1"),
    "mono16": (1, "u2"),
    "16UC1": (1, "u2"),
    "32FC1": (1, "f4"),
}


# ----------------------------------------------------------------------------------------------
# Time
# ----------------------------------------------------------------------------------------------
def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (``sec``, ``nanosec``) -> integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` of any stamped message -> integer nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------
def image_to_numpy(msg: Any) -> np.ndarray:
    """A ``sensor_msgs/Image`` as an array of its native dtype (a copy, native byte order).

    Returns (H, W) for one channel, else (H, W, C), channel order as in the encoding.

    Raises:
        ImageConversionError: unknown encoding, zero size, ``step`` smaller than a row, or a
            data length that is not ``step * height``.
    """
    enc = msg.encoding
    if enc not in IMAGE_ENCODINGS:
        raise ImageConversionError(
            f"Image.encoding {enc!r} is not supported (use one of {', '.join(IMAGE_ENCODINGS)})")
    channels, base = IMAGE_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"Image has zero size ({w} x {h})")
    dtype = np.dtype(base).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"Image.step {step} is smaller than a {enc} row of width {w} ({row_bytes} bytes)")
    if step % dtype.itemsize:
        raise ImageConversionError(f"Image.step {step} is not a multiple of the {enc} sample size")
    data = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if data.size != step * h:
        raise ImageConversionError(
            f"Image.data has {data.size} bytes, expected step * height = {step} * {h} = {step * h}")
    rows = data.reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dtype).reshape(h, w, channels)
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    return arr[:, :, 0] if channels == 1 else arr


def _to_rgb8(arr: np.ndarray, enc: str) -> np.ndarray:
    if enc == "rgb8":
        return np.ascontiguousarray(arr)
    if enc == "bgr8":
        return np.ascontiguousarray(arr[:, :, ::-1])
    if enc == "rgba8":
        return np.ascontiguousarray(arr[:, :, :3])
    if enc == "bgra8":
        return np.ascontiguousarray(arr[:, :, 2::-1])
    if enc == "mono8":
        return np.repeat(arr[:, :, None], 3, axis=2)
    if enc in ("mono16", "16UC1"):
        return np.repeat((arr >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    raise ImageConversionError(f"Image.encoding {enc!r} cannot be shown as RGB (is it a depth image?)")


def image_to_rgb8(msg: Any) -> np.ndarray:
    """A colour or mono ``sensor_msgs/Image`` as (H, W, 3) uint8 RGB."""
    return _to_rgb8(image_to_numpy(msg), msg.encoding)


def compressed_to_rgb8(msg: Any) -> np.ndarray:
    """A JPEG or PNG ``sensor_msgs/CompressedImage`` as (H, W, 3) uint8 RGB."""
    fmt = (msg.format or "").lower()
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ImageConversionError(f"CompressedImage.format {msg.format!r} is not JPEG or PNG")
    buf = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if buf.size == 0:
        raise ImageConversionError("CompressedImage.data is empty", key="image_undecodable")
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # some corrupt streams raise instead of returning None
        raise ImageConversionError(f"CompressedImage.data ({buf.size} bytes, format {msg.format!r}) does not "
                                   f"decode: {str(exc).strip().splitlines()[-1]}", key="image_undecodable") from None
    if img is None or img.size == 0:
        raise ImageConversionError(
            f"CompressedImage.data ({buf.size} bytes, format {msg.format!r}) does not decode as JPEG/PNG",
            key="image_undecodable")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def depth_image_to_m(msg: Any) -> np.ndarray:
    """A depth image (32FC1 metres or 16UC1 millimetres) as (H, W) float32 metres; invalid
    (0, negative, non-finite) -> NaN.

    Raises:
        ImageConversionError: key ``depth_invalid`` (encoding, size vs data, ...) or
            ``depth_all_invalid`` (not one valid depth value).
    """
    if msg.encoding not in ("32FC1", "16UC1"):
        raise ImageConversionError(f"depth Image.encoding {msg.encoding!r} must be 32FC1 (m) or 16UC1 (mm)",
                                   key="depth_invalid")
    try:
        arr = image_to_numpy(msg)
    except ImageConversionError as exc:
        raise ImageConversionError(f"depth {exc}", key="depth_invalid") from None
    depth = arr.astype(np.float32) * (np.float32(1e-3) if msg.encoding == "16UC1" else np.float32(1.0))
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        raise ImageConversionError(f"depth image ({msg.width}x{msg.height} {msg.encoding}) has no valid value "
                                   "(all zero, negative or non-finite)", key="depth_all_invalid")
    depth[~valid] = np.nan
    return depth


# ----------------------------------------------------------------------------------------------
# Sensors
# ----------------------------------------------------------------------------------------------
#: Diagnostic cause of a NavSatFix whose covariance was repaired (see :func:`navsat_to_fix`).
FIX_COVARIANCE_REPAIRED = "fix_covariance_repaired"


def navsat_to_fix(msg: Any, on_repair: Optional[Callable[[str, str], None]] = None) -> FixSample:
    """``sensor_msgs/NavSatFix`` -> :class:`FixSample` (covariance: the east/north block when
    the covariance type is known and valid, else None).

    A known covariance that is unusable is REPAIRED, not rejected (the position is still
    good): a NaN, infinite, zero or negative east/north variance -> None (the localizer then
    uses ``fix_default_std_m``); a cross term that makes the block not positive definite ->
    dropped (the diagonal is kept). Each repair calls ``on_repair(FIX_COVARIANCE_REPAIRED,
    detail)`` so the caller can name it (the node logs it once and shows it on /diagnostics).

    Raises:
        LocalizationRejected: ``fix_no_fix`` (status below :data:`NAVSAT_STATUS_FIX`: NO_FIX or
            UNKNOWN) or ``fix_invalid`` (NaN / out of range latitude or longitude).
    """
    if msg.status.status < NAVSAT_STATUS_FIX:
        raise LocalizationRejected("fix_no_fix", f"NavSatFix.status.status = {msg.status.status} (NO_FIX)")
    lat, lon, alt = float(msg.latitude), float(msg.longitude), float(msg.altitude)
    cov = None
    repair = ""
    if msg.position_covariance_type != NAVSAT_COVARIANCE_TYPE_UNKNOWN:
        c = np.asarray(msg.position_covariance, dtype=float).reshape(3, 3)[:2, :2]
        if not (np.all(np.isfinite(c)) and c[0, 0] > 0 and c[1, 1] > 0):
            repair = (f"NavSatFix.position_covariance east/north block {c.tolist()} has a NaN, infinite, zero or "
                      "negative variance: replaced by fix_default_std_m")
        elif c[0, 0] * c[1, 1] - (0.5 * (c[0, 1] + c[1, 0])) ** 2 <= 0:
            repair = (f"NavSatFix.position_covariance east/north block {c.tolist()} is not positive definite: "
                      "the cross term is dropped")
            cov = np.diag(np.diag(c))
        else:
            cov = c
    try:
        fix = FixSample(stamp_to_ns(msg.header.stamp), lat, lon, alt if math.isfinite(alt) else 0.0, cov)
    except GeometryError as exc:
        raise LocalizationRejected("fix_invalid", f"NavSatFix: {exc}") from exc
    if repair and on_repair is not None:
        on_repair(FIX_COVARIANCE_REPAIRED, repair)
    return fix


def quaternion_to_yaw_rad(q: Any) -> float:
    """Yaw (rotation about z, REP-103) of a ``geometry_msgs/Quaternion`` (x, y, z, w)."""
    return math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))


def odometry_to_sample(msg: Any) -> OdomSample:
    """``nav_msgs/Odometry`` -> :class:`OdomSample` (``T_odom_base``: x, y, yaw).

    Raises:
        GeometryError: a non-finite or zero-norm pose.
    """
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    vals = (p.x, p.y, q.x, q.y, q.z, q.w)
    if not all(math.isfinite(v) for v in vals) or (q.x**2 + q.y**2 + q.z**2 + q.w**2) < 1e-12:
        raise GeometryError(f"Odometry.pose is not finite or has a zero quaternion: {vals}")
    return OdomSample(stamp_to_ns(msg.header.stamp), SE2(p.x, p.y, quaternion_to_yaw_rad(q)))


def camera_info_to_camera(msg: Any) -> PinholeCamera:
    """``sensor_msgs/CameraInfo`` -> :class:`PinholeCamera` (raises CameraModelError)."""
    return PinholeCamera.from_camera_info(int(msg.width), int(msg.height), list(msg.k), list(msg.d),
                                          msg.distortion_model)


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------
def covariance_6x6(cov_xyyaw: np.ndarray) -> list[float]:
    """Row-major 6x6 (x, y, z, roll, pitch, yaw) from a 3x3 (x, y, yaw) covariance.

    Raises:
        GeometryError: a non-finite, asymmetric or not positive definite input.
    """
    c = np.asarray(cov_xyyaw, dtype=float)
    if c.shape != (3, 3) or not np.all(np.isfinite(c)):
        raise GeometryError(f"covariance must be a finite 3x3 matrix, got shape {c.shape}")
    c = 0.5 * (c + c.T)
    if np.linalg.eigvalsh(c).min() <= 0:
        raise GeometryError("covariance is not positive definite")
    out = np.zeros((6, 6))
    idx = (0, 1, 5)
    for i, a in enumerate(idx):
        for j, b in enumerate(idx):
            out[a, b] = c[i, j]
    for k in idx:
        out[k, k] = max(out[k, k], MIN_VARIANCE)
    for k in (2, 3, 4):
        out[k, k] = UNUSED_VARIANCE
    return [float(v) for v in out.reshape(-1)]


def transform_to_matrix(transform: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` -> 4x4 homogeneous matrix (parent <- child).

    Raises:
        GeometryError: a non-finite transform or a zero quaternion.
    """
    t, q = transform.translation, transform.rotation
    vals = np.array([q.w, q.x, q.y, q.z], dtype=float)
    n = float(np.linalg.norm(vals))
    if not np.all(np.isfinite(vals)) or n < 1e-12 or not all(math.isfinite(v) for v in (t.x, t.y, t.z)):
        raise GeometryError(f"Transform is not finite or has a zero quaternion: {transform}")
    w, x, y, z = vals / n
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = (t.x, t.y, t.z)
    return T


def matrix_to_se2(T: np.ndarray) -> SE2:
    """The planar part (x, y, yaw) of a 4x4 transform."""
    return SE2(float(T[0, 3]), float(T[1, 3]), math.atan2(T[1, 0], T[0, 0]))


class StaticTfTree:
    """Static transforms (``/tf_static`` messages, rclpy or rosbags objects) composed along their
    chains, thread-safe. Used by the node when tf2_ros is not importable, by the replay and by the
    bag data-set loader. Invalid transforms in a message are skipped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._edges: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_child)

    def add(self, msg: Any) -> None:
        """Add every transform of a ``tf2_msgs/TFMessage``."""
        with self._lock:
            for t in msg.transforms:
                try:
                    self._edges[t.child_frame_id.lstrip("/")] = (t.header.frame_id.lstrip("/"),
                                                                 transform_to_matrix(t.transform))
                except XViewError:
                    continue

    def _to_root(self, frame: str) -> tuple[str, np.ndarray]:
        T = np.eye(4)
        seen = set()
        while frame in self._edges and frame not in seen:
            seen.add(frame)
            parent, T_parent_child = self._edges[frame]
            T = T_parent_child @ T
            frame = parent
        return frame, T

    def lookup(self, target: str, source: str) -> Optional[np.ndarray]:
        """``T_target_source`` (maps source points into target) or None if not connected."""
        with self._lock:
            root_t, T_root_target = self._to_root(target)
            root_s, T_root_source = self._to_root(source)
        if root_t != root_s:
            return None
        return np.linalg.inv(T_root_target) @ T_root_source


# ----------------------------------------------------------------------------------------------
# Debug
# ----------------------------------------------------------------------------------------------
def render_debug_image(result: StepResult) -> np.ndarray:
    """(H, W, 3) uint8 RGB debug view of one frame on its satellite patch: inlier matches green,
    the other matches red, the prior (patch centre) a yellow circle, the estimate blue (arrow
    along base_link x). Needs ``result.sat_rgb``."""
    img = np.ascontiguousarray(result.sat_rgb.copy())
    geo = result.georef
    corr = result.correspondences
    if corr is not None and len(corr):
        uv = geo.enu_to_px(corr.dst_xy_m)
        inl = result.inlier_mask if result.inlier_mask is not None else np.zeros(len(corr), bool)
        for (u, v), ok in zip(np.round(uv).astype(int), inl):
            cv2.circle(img, (int(u), int(v)), 1, (0, 255, 0) if ok else (255, 0, 0), -1)
    centre = geo.enu_to_px(np.zeros((1, 2)))[0]
    c = (int(round(centre[0])), int(round(centre[1])))
    cv2.circle(img, c, 8, (255, 255, 0), 2)
    arrow_m = 5.0
    if result.estimate is not None:
        T = result.estimate.T_patch_base
        a = geo.enu_to_px(np.array([[T.x_m, T.y_m]]))[0]
        b = geo.enu_to_px(np.array([[T.x_m + arrow_m * math.cos(T.yaw_rad), T.y_m + arrow_m * math.sin(T.yaw_rad)]]))[0]
        cv2.arrowedLine(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), (0, 0, 255), 2, tipLength=0.3)
    return img
