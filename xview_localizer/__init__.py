"""xview_localizer: cross-view (ground camera to satellite imagery) localization for ROS 2.

The core modules (geo, se2, procrustes, camera, tiles, matcher, localizer, sim, train)
never import rclpy; the ROS node lives in :mod:`xview_localizer.ros`.
"""

__version__ = "0.1.0"
