"""Cross-view matchers: ground image + satellite patch -> weighted correspondences.

Holds the protocol (:mod:`.base`), the two models (:mod:`.sparse_depth` the default, built from
:mod:`.sparse_config`, :mod:`.sparse_geometry`, :mod:`.sparse_blocks`, :mod:`.sparse_vote`; and
:mod:`.dense_flow`, built from :mod:`.dense_blocks`, :mod:`.dense_geometry`), checkpoints
(:mod:`.checkpoint`), loading by name or path (:mod:`.factory`, :mod:`.inference`), satellite
features per area (:mod:`.area`) and shared building blocks (:mod:`.norms`, :mod:`.grids`).

May import: torch, :mod:`..core`, :mod:`..tiles` (patch georeferencing). Never ROS.

The contract type itself lives in the core (:mod:`..core.correspondences`, re-exported by
:mod:`.base`); the packaged checkpoints and the rule that resolves a checkpoint name in
:mod:`.packaged` (re-exported by :mod:`.factory`).
"""
