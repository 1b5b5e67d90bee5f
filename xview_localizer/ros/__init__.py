"""The ROS 2 edge: the rclpy node, parameters, message construction and TF publishing.

Only this subpackage imports rclpy and ROS message packages; it converts at the edge and
calls :mod:`..pipeline` for everything else.
"""
