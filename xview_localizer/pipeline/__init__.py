"""The per-frame pipeline without ROS: configuration, the localizer and its inputs.

Holds the typed frozen configuration (:mod:`.config`), the :class:`~.localizer.Localizer`
(prior from GNSS/odometry, patch cutting, matcher call, Procrustes, gating, map-frame output),
stamp bookkeeping (:mod:`.timebase`) and ROS-free decoding of sensor messages into the
pipeline's types (:mod:`.messages`: works on rclpy messages and on rosbags' types alike).

May import: :mod:`..core`, :mod:`..matcher` (the matcher protocol and area features),
:mod:`..tiles`. Never rclpy or a ROS message package.
"""
