"""The node's interface as text: its name, the topics it subscribes and publishes (name, type,
when) and the ``localizer_node --help`` text (topics + every parameter from the typed config).
Imports no rclpy: ``--help`` works before anything of ROS starts."""

from __future__ import annotations

from .params import parameter_help

NODE_NAME = "xview_localizer"

#: Topics of the node (name, type, when) for ``--help``; all names are remappable with ``-r``.
TOPICS_IN = (
    ("image", "sensor_msgs/msg/Image", "image_transport: raw"),
    ("image/compressed", "sensor_msgs/msg/CompressedImage", "image_transport: compressed"),
    ("camera_info", "sensor_msgs/msg/CameraInfo", ""),
    ("fix", "sensor_msgs/msg/NavSatFix", ""),
    ("odom", "nav_msgs/msg/Odometry", "use_odom: true"),
    ("depth", "sensor_msgs/msg/Image (32FC1 m or 16UC1 mm)", "use_depth: true"),
    ("/tf_static", "tf2_msgs/msg/TFMessage", "base_frame <- camera; else the camera_* parameters"),
)
TOPICS_OUT = (
    ("pose", "geometry_msgs/msg/PoseWithCovarianceStamped", "frame map_frame, stamp = the image's"),
    ("/tf", "tf2_msgs/msg/TFMessage", "publish_tf: true; map->odom with odometry, else map->base_link"),
    ("/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", "every diagnostics_period_s"),
    ("debug_image", "sensor_msgs/msg/Image", "publish_debug_image: true"),
)


def usage_text() -> str:
    """What ``localizer_node --help`` prints: usage, topics in and out, every parameter (from
    the typed config, :func:`xview_localizer.ros.params.parameter_help`)."""

    def topics(rows):
        width = max(len(name) for name, _, _ in rows)
        return [f"  {name:<{width}}  {kind}" + (f"  [{when}]" if when else "") for name, kind, when in rows]

    lines = [
        "usage: localizer_node [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE ...] [-r FROM:=TO ...]]",
        "",
        f"ROS 2 node '{NODE_NAME}': localizes a camera against satellite tiles around the GNSS fix and publishes",
        "the pose with its covariance for robot_localization. Parameters are read once at start-up (read-only).",
        "",
        "example:",
        "  localizer_node --ros-args --params-file config/localizer.yaml -p tile_url:=file:///data/tiles/{z}/{x}/{y}.png",
        "",
        "options:",
        "  -h, --help  show this help and exit (before anything of ROS starts)",
        "",
        "subscribed topics (sensor-data QoS):",
        *topics(TOPICS_IN),
        "",
        "published topics:",
        *topics(TOPICS_OUT),
        parameter_help(),
    ]
    return "\n".join(lines)


def wants_help(argv: list[str]) -> bool:
    """``-h`` / ``--help`` among the node's own arguments (those before ``--ros-args``)."""
    own = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    return "-h" in own or "--help" in own
