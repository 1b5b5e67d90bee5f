"""Launch the xview_localizer node.

    ros2 launch xview_localizer localizer.launch.py \
        params_file:=/path/to/localizer.yaml use_sim_time:=true namespace:=vehicle1 \
        image_topic:=/camera/image_raw camera_info_topic:=/camera/camera_info fix_topic:=/gnss/fix

Arguments: ``params_file`` (default: the package's config/localizer.yaml), ``namespace``,
``use_sim_time``, ``log_level``, and one remapping target per input/output topic. The node
subscribes to ``image`` or ``image/compressed`` (parameter ``image_transport``); both are
remapped from ``image_topic`` (``<image_topic>/compressed`` for the compressed one).

With a non-empty namespace the parameters file must address the namespaced node, e.g. with a
top-level key ``/**/xview_localizer:`` instead of ``xview_localizer:``.

Everything this starts can also be started without launch:
``localizer_node --ros-args --params-file config/localizer.yaml -r image:=/camera/image_raw``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

TOPIC_ARGS = {
    # node-side name: (launch argument, default target, description)
    "image": ("image_topic", "/camera/image_raw", "sensor_msgs/Image input"),
    "camera_info": ("camera_info_topic", "/camera/camera_info", "sensor_msgs/CameraInfo input"),
    "fix": ("fix_topic", "/gnss/fix", "sensor_msgs/NavSatFix input"),
    "odom": ("odom_topic", "/odom", "nav_msgs/Odometry input (parameter use_odom)"),
    "depth": ("depth_topic", "/camera/depth", "depth Image input (parameter use_depth)"),
    "pose": ("pose_topic", "xview/pose", "PoseWithCovarianceStamped output"),
    "debug_image": ("debug_image_topic", "xview/debug_image", "debug Image output"),
}


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("xview_localizer"), "config", "localizer.yaml")
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the node's parameters"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (rosbag replay, simulation)"),
        DeclareLaunchArgument("log_level", default_value="info", description="rclpy log level"),
    ]
    remappings = []
    for node_topic, (arg, default, description) in TOPIC_ARGS.items():
        arguments.append(DeclareLaunchArgument(arg, default_value=default, description=description))
        remappings.append((node_topic, LaunchConfiguration(arg)))
    remappings.append(("image/compressed", [LaunchConfiguration("image_topic"), "/compressed"]))

    node = Node(
        package="xview_localizer",
        executable="localizer_node",
        name="xview_localizer",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)},
        ],
        remappings=remappings,
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription(arguments + [node])
