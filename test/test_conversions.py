"""Message conversions of xview_localizer.ros.conversions (real rclpy message classes, no DDS) and of
the ROS-free decoders of xview_localizer.pipeline.messages it re-exports (also on rosbags' objects)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from geometry_msgs.msg import Transform
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, NavSatFix, NavSatStatus

from xview_localizer.core.errors import CameraModelError, ImageConversionError, LocalizationRejected
from xview_localizer.core.se2 import SE2
from xview_localizer.pipeline.localizer import Estimate, Prior
from xview_localizer.ros import conversions as cv

RNG = np.random.default_rng(0)


def _image(arr: np.ndarray, encoding: str, pad_bytes: int = 0, bigendian: bool = False) -> Image:
    """Build an Image by hand (not with the code under test): rows padded with junk bytes."""
    h, w = arr.shape[:2]
    dt = arr.dtype.newbyteorder(">" if bigendian else "<")
    raw = np.ascontiguousarray(arr.astype(dt)).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([raw, np.full((h, pad_bytes), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize(
    ("encoding", "channels", "dtype"),
    [("rgb8", 3, np.uint8), ("bgr8", 3, np.uint8), ("rgba8", 4, np.uint8), ("bgra8", 4, np.uint8),
     ("mono8", 1, np.uint8), ("mono16", 1, np.uint16), ("16UC1", 1, np.uint16), ("32FC1", 1, np.float32)],
)
@pytest.mark.parametrize("bigendian", [False, True])
def test_image_to_numpy_round_trip(encoding, channels, dtype, pad, bigendian):
    # For 8-bit encodings is_bigendian must simply be ignored (same bytes either way).
    shape = (7, 9) if channels == 1 else (7, 9, channels)
    if dtype == np.float32:
        arr = RNG.normal(size=shape).astype(np.float32)
    else:
        arr = RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)
    pad_bytes = pad * np.dtype(dtype).itemsize
    out = cv.image_to_numpy(_image(arr, encoding, pad_bytes, bigendian))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_image_to_rgb8_channel_orders():
    rgb = RNG.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(cv.image_to_rgb8(_image(rgb, "rgb8")), rgb)
    np.testing.assert_array_equal(cv.image_to_rgb8(_image(rgb[:, :, ::-1], "bgr8")), rgb)
    rgba = np.concatenate([rgb, np.full((4, 6, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(cv.image_to_rgb8(_image(rgba, "rgba8")), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((4, 6, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(cv.image_to_rgb8(_image(bgra, "bgra8", pad_bytes=3)), rgb)
    mono16 = np.array([[0x1234, 0xFF00]], np.uint16)
    out = cv.image_to_rgb8(_image(mono16, "mono16", bigendian=True))
    assert out.shape == (1, 2, 3) and out[0, 0, 0] == 0x12 and out[0, 1, 2] == 0xFF


def test_bad_images_raise_named_errors():
    good = _image(np.zeros((4, 6, 3), np.uint8), "rgb8")
    bad = _image(np.zeros((4, 6, 3), np.uint8), "rgb8")
    bad.encoding = "yuv422"
    with pytest.raises(ImageConversionError, match="'yuv422' is not supported"):
        cv.image_to_numpy(bad)
    bad = _image(np.zeros((4, 6, 3), np.uint8), "rgb8")
    bad.step = 10
    with pytest.raises(ImageConversionError, match="step 10 is smaller"):
        cv.image_to_numpy(bad)
    bad = _image(np.zeros((4, 6, 3), np.uint8), "rgb8")
    bad.data = bytes(good.data)[:-1]
    with pytest.raises(ImageConversionError, match="71 bytes, expected step"):
        cv.image_to_numpy(bad)
    bad = Image(height=0, width=3, encoding="mono8", step=3)
    with pytest.raises(ImageConversionError, match="zero size"):
        cv.image_to_numpy(bad)
    with pytest.raises(ImageConversionError, match="depth"):
        cv.image_to_rgb8(_image(np.zeros((2, 2), np.float32), "32FC1"))


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_compressed_images(ext):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12] = (200, 30, 10)
    rgb[:, 12:] = (10, 30, 200)
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format="jpeg" if ext == ".jpg" else "png")
    msg.data = buf.tobytes()
    out = cv.compressed_to_rgb8(msg)
    assert out.shape == rgb.shape
    # JPEG: chroma subsampling blurs the colour edge; compare away from it.
    err = np.abs(out.astype(int) - rgb)[:, np.r_[0:6, 18:24]]
    assert err.max() <= (0 if ext == ".png" else 12)
    gray = CompressedImage(format="png")
    gray.data = cv2.imencode(".png", np.full((5, 5), 99, np.uint8))[1].tobytes()
    assert cv.compressed_to_rgb8(gray).shape == (5, 5, 3)
    junk = CompressedImage(format="jpeg")
    junk.data = b"not an image at all"
    with pytest.raises(ImageConversionError, match="does not decode"):
        cv.compressed_to_rgb8(junk)
    with pytest.raises(ImageConversionError, match="not JPEG or PNG"):
        cv.compressed_to_rgb8(CompressedImage(format="theora", data=b"x"))


def test_depth_images():
    mm = np.array([[0, 1500], [65535, 20]], np.uint16)
    d = cv.depth_image_to_m(_image(mm, "16UC1"))
    assert d.dtype == np.float32 and math.isnan(d[0, 0])
    assert d[0, 1] == pytest.approx(1.5) and d[1, 1] == pytest.approx(0.02)
    m = np.array([[np.nan, -1.0, 3.25]], np.float32)
    d = cv.depth_image_to_m(_image(m, "32FC1", bigendian=True))
    assert math.isnan(d[0, 0]) and math.isnan(d[0, 1]) and d[0, 2] == 3.25
    with pytest.raises(ImageConversionError, match="32FC1"):
        cv.depth_image_to_m(_image(np.zeros((2, 2), np.uint8), "mono8"))


def _navsat(lat, lon, status=NavSatStatus.STATUS_FIX, cov_type=NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN):
    msg = NavSatFix(latitude=lat, longitude=lon, altitude=50.0, position_covariance_type=cov_type)
    msg.status.status = status
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 500
    msg.position_covariance = [4.0, 0.5, 0.0, 0.5, 9.0, 0.0, 0.0, 0.0, 16.0]
    return msg


def test_navsat_conversion_and_rejections():
    fix = cv.navsat_to_fix(_navsat(48.1, 11.5))
    assert fix.stamp_ns == 12_000_000_500
    assert fix.cov_en_m2.tolist() == [[4.0, 0.5], [0.5, 9.0]]
    assert cv.navsat_to_fix(_navsat(48.1, 11.5, cov_type=NavSatFix.COVARIANCE_TYPE_UNKNOWN)).cov_en_m2 is None
    with pytest.raises(LocalizationRejected, match="NO_FIX") as exc:
        cv.navsat_to_fix(_navsat(48.1, 11.5, status=NavSatStatus.STATUS_NO_FIX))
    assert exc.value.reason == "fix_no_fix"
    with pytest.raises(LocalizationRejected, match="finite") as exc:
        cv.navsat_to_fix(_navsat(float("nan"), 11.5))
    assert exc.value.reason == "fix_invalid"


def test_odometry_and_camera_info():
    odom = Odometry()
    odom.header.stamp.sec = 3
    odom.pose.pose.position.x, odom.pose.pose.position.y = 1.0, -2.0
    odom.pose.pose.orientation = cv.yaw_to_quaternion(2.5)
    s = cv.odometry_to_sample(odom)
    assert s.stamp_ns == 3_000_000_000
    assert s.T_odom_base.to_xyyaw() == pytest.approx((1.0, -2.0, 2.5))
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    info.d = [0.1, -0.05, 0.0, 0.0, 0.0]
    cam = cv.camera_info_to_camera(info)
    assert cam.fx == 500.0 and cam.width_px == 640
    with pytest.raises(CameraModelError):
        cv.camera_info_to_camera(CameraInfo(width=640, height=480))  # all-zero K


def _estimate(cov: np.ndarray) -> Estimate:
    prior = Prior(0, 0.0, 0.0, 0.0, 0.0, np.eye(2), None, 0.0, "nearest")
    return Estimate(stamp_ns=1_700_000_000_123_456_789, T_map_base=SE2(10.0, -3.0, 2.0), cov_xyyaw=cov,
                    T_patch_base=SE2(), cov_xyyaw_patch=cov, T_odom_base=None, lat_deg=0.0, lon_deg=0.0,
                    n_confident=50, n_inliers=40, gnss_mahalanobis=1.0, prior=prior)


def test_estimate_to_pose_message():
    cov = np.array([[0.04, 0.01, 0.001], [0.01, 0.09, -0.002], [0.001, -0.002, 1e-4]])
    msg = cv.estimate_to_pose_msg(_estimate(cov), "map")
    assert msg.header.frame_id == "map"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert msg.pose.pose.position.x == 10.0 and msg.pose.pose.position.y == -3.0
    assert cv.quaternion_to_yaw_rad(msg.pose.pose.orientation) == pytest.approx(2.0)
    c = np.array(msg.pose.covariance).reshape(6, 6)
    assert np.allclose(c, c.T)
    assert c[0, 1] == 0.01 and c[0, 5] == 0.001 and c[5, 5] == 1e-4 and c[1, 5] == -0.002
    assert c[2, 2] == c[3, 3] == c[4, 4] == cv.UNUSED_VARIANCE
    assert np.all(np.isfinite(c)) and np.all(np.diag(c) >= 1e-6)
    assert np.all(np.linalg.eigvalsh(c) > 0)
    with pytest.raises(Exception, match="positive definite"):
        cv.covariance_6x6(-np.eye(3))


def test_transform_builders_round_trip():
    T = SE2(3.0, 4.0, -1.0)
    msg = cv.se2_to_transform_stamped(T, "map", "odom", 5 * 10**9 + 7)
    assert (msg.header.frame_id, msg.child_frame_id) == ("map", "odom")
    assert cv.stamp_to_ns(msg.header.stamp) == 5 * 10**9 + 7
    back = cv.matrix_to_se2(cv.transform_to_matrix(msg.transform))
    assert back.to_xyyaw() == pytest.approx(T.to_xyyaw())
    with pytest.raises(Exception, match="zero quaternion"):
        zero = Transform()
        zero.rotation.w = 0.0
        cv.transform_to_matrix(zero)


def test_static_tf_tree_composes_chains_and_skips_bad_transforms():
    from types import SimpleNamespace

    from geometry_msgs.msg import TransformStamped

    def tf(parent, child, x, yaw_rad, w=None):
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = parent, child
        t.transform.translation.x = x
        t.transform.rotation.z, t.transform.rotation.w = math.sin(yaw_rad / 2), math.cos(yaw_rad / 2)
        if w is not None:
            t.transform.rotation.z, t.transform.rotation.w = 0.0, w
        return t

    tree = cv.StaticTfTree()
    tree.add(SimpleNamespace(transforms=[tf("/base_link", "cam_link", 1.0, math.pi / 2),
                                         tf("cam_link", "cam_optical", 2.0, 0.0),
                                         tf("base_link", "broken", 1.0, 0.0, w=0.0)]))  # zero quaternion
    T = tree.lookup("base_link", "cam_optical")
    # cam_optical origin: 2 m along cam_link x, which is base_link y (90 deg), plus 1 m along x
    np.testing.assert_allclose(T @ [0, 0, 0, 1], [1.0, 2.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(tree.lookup("cam_optical", "base_link"), np.linalg.inv(T), atol=1e-12)
    assert tree.lookup("base_link", "broken") is None and tree.lookup("base_link", "map") is None


@pytest.mark.parametrize("cov, expected, what", [
    ([-4.0, 0, 0, 0, 9.0, 0, 0, 0, 16.0], None, "negative"),
    ([float("nan"), 0, 0, 0, 9.0, 0, 0, 0, 16.0], None, "NaN"),
    ([0.0, 0, 0, 0, 0.0, 0, 0, 0, 16.0], None, "zero"),
    ([4.0, 7.0, 0, 7.0, 9.0, 0, 0, 0, 16.0], [[4.0, 0.0], [0.0, 9.0]], "not positive definite"),
])
def test_bad_fix_covariance_is_repaired_and_named(cov, expected, what):
    """A negative / NaN / zero variance falls back to fix_default_std_m (cov None) and a cross
    term that breaks positive definiteness is dropped: never silently, always through on_repair."""
    msg = _navsat(48.1, 11.5)
    msg.position_covariance = cov
    repairs = []
    fix = cv.navsat_to_fix(msg, on_repair=lambda key, detail: repairs.append((key, detail)))
    assert (fix.cov_en_m2 is None) if expected is None else (fix.cov_en_m2.tolist() == expected)
    assert [k for k, _ in repairs] == [cv.FIX_COVARIANCE_REPAIRED]
    assert ("fix_default_std_m" if expected is None else "cross term") in repairs[0][1]
    good = []
    cv.navsat_to_fix(_navsat(48.1, 11.5), on_repair=lambda k, d: good.append(k))
    assert good == []


def test_input_error_keys_name_the_cause():
    bad = CompressedImage(format="jpeg")
    bad.data = bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8))
    with pytest.raises(ImageConversionError, match="does not decode") as exc:
        cv.compressed_to_rgb8(bad)
    assert exc.value.key == "image_undecodable"
    truncated = CompressedImage(format="png")
    truncated.data = cv2.imencode(".png", np.full((32, 32, 3), 7, np.uint8))[1].tobytes()[:40]
    with pytest.raises(ImageConversionError) as exc:
        cv.compressed_to_rgb8(truncated)
    assert exc.value.key == "image_undecodable"
    with pytest.raises(ImageConversionError, match="no valid value") as exc:
        cv.depth_image_to_m(_image(np.zeros((4, 4), np.float32), "32FC1"))
    assert exc.value.key == "depth_all_invalid"
    short = _image(np.ones((4, 4), np.float32), "32FC1")
    short.data = bytes(short.data)[:10]
    with pytest.raises(ImageConversionError, match="expected step") as exc:
        cv.depth_image_to_m(short)
    assert exc.value.key == "depth_invalid"
    with pytest.raises(ImageConversionError) as exc:
        cv.image_to_rgb8(Image(height=0, width=0, encoding="rgb8", step=0))
    assert exc.value.key == "image_invalid"


# ----------------------------------------------------------------------------------------------
# The ROS-free decoders (pipeline.messages) behind the re-exports
# ----------------------------------------------------------------------------------------------
def test_decoders_are_the_ros_free_ones_and_constants_match_sensor_msgs():
    from xview_localizer.pipeline import messages

    for name in ("image_to_numpy", "image_to_rgb8", "compressed_to_rgb8", "depth_image_to_m", "navsat_to_fix",
                 "odometry_to_sample", "camera_info_to_camera", "stamp_to_ns", "quaternion_to_yaw_rad",
                 "transform_to_matrix", "matrix_to_se2", "covariance_6x6", "render_debug_image", "StaticTfTree"):
        assert getattr(cv, name) is getattr(messages, name), name
    assert messages.NAVSAT_STATUS_UNKNOWN == NavSatStatus.STATUS_UNKNOWN
    assert messages.NAVSAT_STATUS_NO_FIX == NavSatStatus.STATUS_NO_FIX
    assert messages.NAVSAT_STATUS_FIX == NavSatStatus.STATUS_FIX
    assert messages.NAVSAT_STATUS_SBAS_FIX == NavSatStatus.STATUS_SBAS_FIX
    assert messages.NAVSAT_STATUS_GBAS_FIX == NavSatStatus.STATUS_GBAS_FIX
    assert messages.NAVSAT_COVARIANCE_TYPE_UNKNOWN == NavSatFix.COVARIANCE_TYPE_UNKNOWN
    assert messages.NAVSAT_COVARIANCE_TYPE_APPROXIMATED == NavSatFix.COVARIANCE_TYPE_APPROXIMATED
    assert messages.NAVSAT_COVARIANCE_TYPE_DIAGONAL_KNOWN == NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
    assert messages.NAVSAT_COVARIANCE_TYPE_KNOWN == NavSatFix.COVARIANCE_TYPE_KNOWN


def test_rosbags_objects_decode_like_rclpy_messages():
    """The same CDR bytes, once as an rclpy message and once as rosbags' deserialized object
    (what the replay reads), give identical decoded values."""
    from rclpy.serialization import serialize_message
    from rosbags.typesys import Stores, get_typestore

    from xview_localizer.pipeline import messages

    ts = get_typestore(Stores.ROS2_KILTED)

    def as_rosbags(msg, msgtype: str):
        return ts.deserialize_cdr(serialize_message(msg), msgtype)

    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img = _image(rgb[:, :, ::-1], "bgr8", pad_bytes=3)
    np.testing.assert_array_equal(messages.image_to_rgb8(as_rosbags(img, "sensor_msgs/msg/Image")), rgb)
    depth = _image(np.array([[0, 1500], [2500, 65535]], np.uint16), "16UC1", bigendian=True)
    np.testing.assert_array_equal(messages.depth_image_to_m(as_rosbags(depth, "sensor_msgs/msg/Image")),
                                  cv.depth_image_to_m(depth))
    comp = CompressedImage(format="png")
    comp.data = cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()
    np.testing.assert_array_equal(messages.compressed_to_rgb8(as_rosbags(comp, "sensor_msgs/msg/CompressedImage")),
                                  rgb)
    fix = messages.navsat_to_fix(as_rosbags(_navsat(48.1, 11.5), "sensor_msgs/msg/NavSatFix"))
    assert (fix.stamp_ns, fix.lat_deg, fix.lon_deg) == (12_000_000_500, 48.1, 11.5)
    assert fix.cov_en_m2.tolist() == [[4.0, 0.5], [0.5, 9.0]]
    with pytest.raises(LocalizationRejected) as exc:
        messages.navsat_to_fix(as_rosbags(_navsat(48.1, 11.5, status=NavSatStatus.STATUS_NO_FIX),
                                          "sensor_msgs/msg/NavSatFix"))
    assert exc.value.reason == "fix_no_fix"
    odom = Odometry()
    odom.header.stamp.sec, odom.header.stamp.nanosec = 3, 9
    odom.pose.pose.position.x, odom.pose.pose.position.y = 1.0, -2.0
    odom.pose.pose.orientation = cv.yaw_to_quaternion(-2.5)
    s = messages.odometry_to_sample(as_rosbags(odom, "nav_msgs/msg/Odometry"))
    assert s.stamp_ns == 3_000_000_009
    assert s.T_odom_base.to_xyyaw() == pytest.approx((1.0, -2.0, -2.5))
    info = CameraInfo(width=640, height=480, distortion_model="plumb_bob")
    info.k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0]
    info.d = [0.1, -0.05, 0.0, 0.0, 0.0]
    cam = messages.camera_info_to_camera(as_rosbags(info, "sensor_msgs/msg/CameraInfo"))
    assert (cam.fx, cam.cx, cam.width_px, cam.d) == (500.0, 320.0, 640, cv.camera_info_to_camera(info).d)
    tf = cv.se2_to_transform_stamped(SE2(3.0, 4.0, -1.0), "map", "odom", 5)
    back = messages.matrix_to_se2(messages.transform_to_matrix(
        as_rosbags(tf, "geometry_msgs/msg/TransformStamped").transform))
    assert back.to_xyyaw() == pytest.approx((3.0, 4.0, -1.0))
