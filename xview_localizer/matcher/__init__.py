"""Cross-view matchers: ground image + satellite patch -> weighted correspondences.

Holds the protocol (:mod:`.base`, re-exporting :mod:`..core.correspondences`), the two models
(:mod:`.sparse_depth` the default, :mod:`.dense_flow`), checkpoints (:mod:`.checkpoint`; the
packaged ones and the naming rule :mod:`.packaged`), loading by name or path (:mod:`.factory`,
:mod:`.inference`), satellite features per area (:mod:`.area`) and shared building blocks
(:mod:`.norms`, :mod:`.grids`).

May import: torch, :mod:`..core`, :mod:`..tiles` (patch georeferencing). Never ROS.
"""
