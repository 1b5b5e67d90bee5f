"""Which matcher the node and the replay load (ROS-free).

* ``checkpoint_path = ''`` means the packaged default, :data:`DEFAULT_CHECKPOINT_NAME` in
  ``xview_localizer/checkpoints/``: the depth-prior sparse matcher (flat ground when the node has
  no depth topic, the depth map when it has one). It is the default because it is the more
  accurate one on worlds neither model saw (README, "Status"). Other packaged checkpoints are
  selected by bare file name or by matcher name (``checkpoint_path = 'dense_flow_compact.pt'`` or
  ``'dense_flow'``: the dense-flow matcher), or by path (:func:`resolve_checkpoint_path`; the
  names and the rule live in :mod:`.packaged`, re-exported here). This one
  rule holds everywhere a checkpoint is named: the node's ``checkpoint_path``, ``--checkpoint`` of
  ``replay``, ``evaluate``, ``calibrate-covariance``, ``benchmark --matcher``, and the Python API
  (:func:`xview_localizer.matcher.inference.load_matcher`, ``matcher.checkpoint.load_model``); a
  checkpoint that is not found names the packaged names (:func:`packaged_checkpoint_names`).
* ``matcher_factory = 'module:function'`` replaces the loader (tests, custom matchers); the
  function is called as ``f(checkpoint_path, device)`` and returns an object with ``match``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from ..core.errors import CheckpointError
from .packaged import (
    DEFAULT_CHECKPOINT_NAME,
    DENSE_FLOW_CHECKPOINT_NAME,
    MATCHER_NAMES,
    SPARSE_CHECKPOINT_NAME,
    default_checkpoint_path,
    packaged_checkpoint_dir,
    packaged_checkpoint_names,
    resolve_checkpoint_path,
)

__all__ = ["DEFAULT_CHECKPOINT_NAME", "SPARSE_CHECKPOINT_NAME", "DENSE_FLOW_CHECKPOINT_NAME", "MATCHER_NAMES",
           "packaged_checkpoint_dir", "packaged_checkpoint_names", "default_checkpoint_path", "resolve_checkpoint_path",
           "resolve_factory", "apply_runtime"]


def _builtin_matcher_factory(checkpoint_path: str, device: str) -> Any:
    from .inference import load_matcher  # heavy (torch): only when a matcher is built

    path = str(resolve_checkpoint_path(checkpoint_path))
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_matcher(path, device)


def resolve_factory(spec: str) -> Callable[[str, str], Any]:
    """``'module:function'`` -> the function; ``''`` -> the built-in checkpoint loader (dense-flow
    or sparse-depth, whichever the checkpoint holds)."""
    if not spec:
        return _builtin_matcher_factory
    module, _, func = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"matcher_factory {spec!r} cannot be imported: {exc}") from exc


def apply_runtime(matcher: Any, runtime: str) -> str:
    """Put a loaded matcher on ``runtime`` (``matcher_runtime``: "compile" | "eager") when it
    supports runtimes (the packaged matchers; custom factories' matchers are left alone).
    Returns what was applied ("" = not supported)."""
    use = getattr(matcher, "use_runtime", None)
    if not callable(use):
        return ""
    use(runtime)
    return runtime
