"""xview_localizer: cross-view (ground camera to satellite imagery) localization for ROS 2.

Layout (each subpackage's docstring says what it holds and what it may import):

- :mod:`.core`        geometry core: errors, SE(2), geodesy, cameras, Procrustes (imports nothing of ours)
- :mod:`.tiles`       satellite tiles: HTTP, cache, metric patches
- :mod:`.matcher`     cross-view matchers (torch)
- :mod:`.pipeline`    config and the ROS-free :class:`Localizer`
- :mod:`.sim`         the synthetic world, drives and bags
- :mod:`.train`       data sets, losses, the trainer
- :mod:`.evaluation`  replay, report, calibration, benchmark
- :mod:`.ros`         the rclpy node (the only place that imports ROS)
"""

__version__ = "0.1.0"
