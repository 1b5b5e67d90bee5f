"""Which matcher the node and the replay load (ROS-free).

* ``checkpoint_path = ''`` means the packaged default, :data:`DEFAULT_CHECKPOINT_NAME` in
  ``xview_localizer/checkpoints/``: the depth-prior sparse matcher (flat ground when the node has
  no depth topic, the depth map when it has one). It is the default because it is the more
  accurate one on worlds neither model saw (README, "Status"). Other packaged checkpoints are
  selected by bare file name or by matcher name (``checkpoint_path = 'dense_flow_compact.pt'`` or
  ``'dense_flow'``: the dense-flow matcher), or by path (:func:`resolve_checkpoint_path`). This one
  rule holds everywhere a checkpoint is named: the node's ``checkpoint_path``, ``--checkpoint`` of
  ``replay``, ``evaluate``, ``calibrate-covariance``, ``benchmark --matcher``, and the Python API
  (:func:`xview_localizer.matcher.inference.load_matcher`, ``matcher.checkpoint.load_model``); a
  checkpoint that is not found names the packaged names (:func:`packaged_checkpoint_names`).
* ``matcher_factory = 'module:function'`` replaces the loader (tests, custom matchers); the
  function is called as ``f(checkpoint_path, device)`` and returns an object with ``match``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable

from ..core.errors import CheckpointError

__all__ = ["DEFAULT_CHECKPOINT_NAME", "SPARSE_CHECKPOINT_NAME", "DENSE_FLOW_CHECKPOINT_NAME", "MATCHER_NAMES",
           "packaged_checkpoint_dir", "packaged_checkpoint_names", "default_checkpoint_path", "resolve_checkpoint_path",
           "resolve_factory"]

#: File name of the packaged depth-prior sparse matcher.
SPARSE_CHECKPOINT_NAME = "sparse_depth_compact.pt"
#: File name of the packaged dense-flow matcher (select it with ``checkpoint_path``).
DENSE_FLOW_CHECKPOINT_NAME = "dense_flow_compact.pt"
#: File name of the default matcher in the package's ``checkpoints/`` folder.
DEFAULT_CHECKPOINT_NAME = SPARSE_CHECKPOINT_NAME
#: Matcher names accepted as ``checkpoint_path`` for the packaged checkpoints.
MATCHER_NAMES = {"sparse_depth": SPARSE_CHECKPOINT_NAME, "dense_flow": DENSE_FLOW_CHECKPOINT_NAME}


def packaged_checkpoint_dir() -> Path:
    """``xview_localizer/checkpoints`` of the installed package."""
    return Path(__file__).resolve().parents[1] / "checkpoints"


def packaged_checkpoint_names() -> list[str]:
    """What names a packaged checkpoint: the matcher names, then the ``.pt`` files packaged."""
    folder = packaged_checkpoint_dir()
    files = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
    return sorted(MATCHER_NAMES) + files


def _not_found(checkpoint_path: str, path: Path) -> CheckpointError:
    names = ", ".join(packaged_checkpoint_names()) or "none"
    return CheckpointError(
        f"checkpoint {checkpoint_path!r}: no such file ({path}); give '' for the packaged default "
        f"({DEFAULT_CHECKPOINT_NAME}), a packaged name ({names}) or the path of a .pt file")


def default_checkpoint_path() -> Path:
    """The packaged default checkpoint (:data:`DEFAULT_CHECKPOINT_NAME`).

    Raises:
        CheckpointError: it is not packaged (names the folder and what is there).
    """
    folder = packaged_checkpoint_dir()
    path = folder / DEFAULT_CHECKPOINT_NAME
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
        raise CheckpointError(
            f"no packaged default checkpoint {path} (present: {present or 'none'}); "
            "set the checkpoint_path parameter"
        )
    return path


def resolve_checkpoint_path(checkpoint_path: str | os.PathLike, *, must_exist: bool = False) -> Path:
    """``''`` -> the packaged default; an existing file -> itself; a matcher name of
    :data:`MATCHER_NAMES` (``'dense_flow'``) or a bare file name that is not a file here but is
    packaged (``'dense_flow_compact.pt'``) -> the packaged one; anything else unchanged.

    Raises:
        CheckpointError: with ``must_exist``, the result is not a file (the message lists the
            packaged names); the packaged default is not packaged.
    """
    checkpoint_path = os.fspath(checkpoint_path)
    if not checkpoint_path:
        return default_checkpoint_path()
    given = checkpoint_path
    path = Path(checkpoint_path).expanduser()
    if not path.exists() and checkpoint_path in MATCHER_NAMES:
        checkpoint_path = MATCHER_NAMES[checkpoint_path]
        path = Path(checkpoint_path)
    if not path.exists() and path.name == checkpoint_path:
        packaged = packaged_checkpoint_dir() / checkpoint_path
        if packaged.is_file():
            return packaged
    if must_exist and not path.is_file():
        raise _not_found(given, path)
    return path


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
