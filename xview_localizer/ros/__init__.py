"""The ROS 2 edge: the rclpy node, parameters, message construction and TF publishing.

Only this subpackage imports rclpy and ROS message packages; it converts at the edge (message
decoding itself is the ROS-free :mod:`xview_localizer.pipeline.messages`, re-exported by
:mod:`.conversions`) and calls the pipeline for everything else.

May import: rclpy, tf2_ros, ROS message packages, :mod:`..core`, :mod:`..tiles`, :mod:`..matcher`,
:mod:`..pipeline`. Never the offline tools (evaluation, train, sim).
"""
