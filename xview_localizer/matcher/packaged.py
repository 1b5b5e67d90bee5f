"""The packaged matcher checkpoints and the one rule that resolves a checkpoint name (ROS-free,
no torch).

``''`` is the packaged default (:data:`DEFAULT_CHECKPOINT_NAME` in ``xview_localizer/checkpoints/``,
the depth-prior sparse matcher); a matcher name of :data:`MATCHER_NAMES` (``'dense_flow'``) or a
bare packaged file name (``'dense_flow_compact.pt'``) is the packaged file; anything else is a
path (:func:`resolve_checkpoint_path`). :mod:`.factory` (which loads matchers) and
:mod:`.checkpoint` (which loads weights) both resolve names here, so neither imports the other's
loader; :mod:`.factory` re-exports every name.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import CheckpointError

__all__ = ["DEFAULT_CHECKPOINT_NAME", "SPARSE_CHECKPOINT_NAME", "DENSE_FLOW_CHECKPOINT_NAME", "MATCHER_NAMES",
           "packaged_checkpoint_dir", "packaged_checkpoint_names", "default_checkpoint_path",
           "resolve_checkpoint_path"]

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
