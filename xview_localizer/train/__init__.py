"""Training: pair data sets, augmentation, losses, metrics and the resumable trainer.

Holds :mod:`.pairs` / :mod:`.sparse_data` (data), :mod:`.augment`, :mod:`.losses` /
:mod:`.losses_sparse`, :mod:`.metrics`, :mod:`.trainer` and importers of public data sets
and bags (:mod:`.datasets`).

May import: torch, :mod:`..core`, :mod:`..matcher`, :mod:`..tiles`, :mod:`..sim` (bag reading),
:mod:`..pipeline` (message decoding). Never rclpy or a ROS message package.
"""
