"""ROS message <-> core type conversions at the edge of the node (no cv_bridge).

Decoding (messages -> core types) needs no message class and lives in the ROS-free
:mod:`xview_localizer.pipeline.messages` (the replay and the bag data-set exporter use it on
rosbags' message objects); it is re-exported here, so ``conv.image_to_rgb8``,
``conv.navsat_to_fix``, ``conv.StaticTfTree`` etc. keep working for the node and the tests.

This module adds what CONSTRUCTS ROS messages and therefore imports their packages:

* :func:`ns_to_stamp`: integer nanoseconds -> ``builtin_interfaces/Time``;
* :func:`yaw_to_quaternion`: a planar yaw (REP-103) -> ``geometry_msgs/Quaternion``;
* :func:`estimate_to_pose_msg`: a ``PoseWithCovarianceStamped`` (stamp = the image stamp,
  x, y, yaw covariance with the x-y cross term; z/roll/pitch variances
  :data:`UNUSED_VARIANCE`, finite; :func:`covariance_6x6`);
* :func:`se2_to_transform_stamped`: a planar ``TransformStamped`` for TF
  (:func:`transform_to_matrix` reads one back).
"""

from __future__ import annotations

import math

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseWithCovarianceStamped, Quaternion, TransformStamped

from ..core.se2 import SE2
from ..pipeline import messages as _messages
from ..pipeline.localizer import NS_PER_S, Estimate
from ..pipeline.messages import (  # noqa: F401 - re-exported (see __all__)
    FIX_COVARIANCE_REPAIRED,
    IMAGE_ENCODINGS,
    MIN_VARIANCE,
    UNUSED_VARIANCE,
    StaticTfTree,
    camera_info_to_camera,
    compressed_to_rgb8,
    covariance_6x6,
    depth_image_to_m,
    image_to_numpy,
    image_to_rgb8,
    matrix_to_se2,
    navsat_to_fix,
    odometry_to_sample,
    quaternion_to_yaw_rad,
    render_debug_image,
    stamp_to_ns,
    transform_to_matrix,
)

__all__ = [
    # built here (ROS message classes)
    "ns_to_stamp",
    "yaw_to_quaternion",
    "estimate_to_pose_msg",
    "se2_to_transform_stamped",
    # re-exported: the ROS-free decoders of pipeline.messages
    *(name for name in _messages.__all__ if name != "header_stamp_ns"),
]


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds -> ``builtin_interfaces/Time``."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return Time(sec=int(sec), nanosec=int(nanosec))


def yaw_to_quaternion(yaw_rad: float) -> Quaternion:
    """A rotation of ``yaw_rad`` about z (REP-103: CCW positive) as a unit quaternion."""
    return Quaternion(x=0.0, y=0.0, z=math.sin(0.5 * yaw_rad), w=math.cos(0.5 * yaw_rad))


def estimate_to_pose_msg(est: Estimate, frame_id: str) -> PoseWithCovarianceStamped:
    """The pose message: stamp = the image stamp, ``frame_id`` = the map frame, z = 0."""
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = ns_to_stamp(est.stamp_ns)
    msg.header.frame_id = frame_id
    msg.pose.pose.position.x = float(est.T_map_base.x_m)
    msg.pose.pose.position.y = float(est.T_map_base.y_m)
    msg.pose.pose.position.z = 0.0
    msg.pose.pose.orientation = yaw_to_quaternion(est.T_map_base.yaw_rad)
    msg.pose.covariance = covariance_6x6(est.cov_xyyaw)
    return msg


def se2_to_transform_stamped(T_parent_child: SE2, parent: str, child: str, stamp_ns: int) -> TransformStamped:
    """A planar transform (z = 0) as ``TransformStamped`` (maps child points into parent)."""
    msg = TransformStamped()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = parent
    msg.child_frame_id = child
    msg.transform.translation.x = float(T_parent_child.x_m)
    msg.transform.translation.y = float(T_parent_child.y_m)
    msg.transform.translation.z = 0.0
    msg.transform.rotation = yaw_to_quaternion(T_parent_child.yaw_rad)
    return msg
