"""Tiny, seeded real matchers for tests (a few thousand weights: milliseconds per frame on a CPU).

``tiny_sparse(...)`` / ``tiny_dense(...)`` build the depth-prior sparse matcher and the dense-flow
matcher behind their inference wrappers on the CPU, the same weights for the same arguments.
Ground input (32, 64) px (H, W); the satellite input side is ``sat_size_px``.
"""

from __future__ import annotations

import torch

from xview_localizer.matcher.dense_flow import DenseFlowConfig, DenseFlowMatcher
from xview_localizer.matcher.inference import Matcher, SparseMatcher
from xview_localizer.matcher.sparse_depth import SparseDepthConfig, SparseDepthMatcher

WIDTHS = (8, 12, 16)


def tiny_sparse(sat_norm: str = "instance", seed: int = 0, sat_size_px: int = 64) -> SparseMatcher:
    """The sparse matcher with 16 keypoints and 16-d features."""
    torch.manual_seed(seed)
    cfg = SparseDepthConfig(name="tiny", ground_size_px=(32, 64), sat_size_px=sat_size_px, encoder_widths=WIDTHS,
                            feature_dim=16, num_keypoints=16, sat_norm=sat_norm)
    return SparseMatcher(SparseDepthMatcher(cfg), "cpu")


def tiny_dense(sat_norm: str = "instance", seed: int = 0, sat_size_px: int = 64) -> Matcher:
    """The dense-flow matcher with 2 correlation levels of radius 1 and 2 GRU iterations."""
    torch.manual_seed(seed)
    cfg = DenseFlowConfig(name="tiny", ground_size_px=(32, 64), sat_size_px=sat_size_px, encoder_widths=WIDTHS,
                          feature_dim=16, hidden_dim=8, context_dim=8, corr_levels=2, corr_radius=1, iters=2,
                          sat_norm=sat_norm)
    return Matcher(DenseFlowMatcher(cfg), "cpu")
