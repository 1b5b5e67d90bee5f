"""The ROS 2 edge: the rclpy node, message conversions and TF publishing.
Only this subpackage imports rclpy."""
