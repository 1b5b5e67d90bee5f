"""The matcher protocol's output type, :class:`Correspondences` (re-exported).

The contract itself lives in :mod:`xview_localizer.core.correspondences`, next to the solver
that consumes it (the core imports nothing of ours outside the core); this module keeps the
import path every matcher, the pipeline and the tests use.
"""

from __future__ import annotations

from ..core.correspondences import Correspondences

__all__ = ["Correspondences"]
