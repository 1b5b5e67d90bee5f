"""Benchmark data sets in their published layouts, yielding the project's pair samples
(:class:`xview_localizer.train.pairs.PairSample`), and pair export from users' own bags.

* :mod:`.kitti` — KITTI cross-view (Shi & Li release): ``kitti:PATH``, splits train/test1/test2;
* :mod:`.vigor` — VIGOR panoramas: ``vigor:PATH``, split train/test, area same/cross,
  orientation known/unknown;
* :mod:`.from_bag` — ``xview-localizer dataset from-bag`` (writes ``xview-pairs/1``).

:func:`open_dataset` turns a ``--dataset`` spec into a sized, indexable sequence of samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.errors import ConfigError, DatasetError

__all__ = ["open_dataset", "DATASET_KINDS"]

DATASET_KINDS = ("kitti", "vigor")

_KITTI_OPTS = {"split", "seed", "ground_width_px", "ground_height_px", "offset_range_m", "yaw_range_deg"}
_VIGOR_OPTS = {"split", "seed", "area", "orientation", "corrected", "camera_height_m", "ground_width_px",
               "ground_height_px", "cities"}


def open_dataset(spec: str, **opts: Any):
    """Open ``kitti:PATH``, ``vigor:PATH`` or an ``xview-pairs/1`` directory.

    Options (None values are ignored, so CLI arguments can be passed straight through):

    * ``kitti:PATH``: ``split`` (train | test1 | test2; default test1), ``seed``,
      ``ground_width_px``/``ground_height_px`` (1024 x 256), ``offset_range_m`` (20),
      ``yaw_range_deg`` (10).
    * ``vigor:PATH``: ``split`` (train | test; default test), ``area`` (same | cross),
      ``orientation`` (known | unknown), ``corrected`` (True), ``seed``, ``camera_height_m``,
      ``ground_width_px``/``ground_height_px``, ``cities``.
    * a directory: :class:`~xview_localizer.train.pairs.PairDataset` (no options).

    Returns an object with ``len()`` and ``[i] -> PairSample``. Unknown options raise
    :class:`ConfigError`; a bad path or layout raises :class:`DatasetError`.
    """
    opts = {k: v for k, v in opts.items() if v is not None}
    kind, sep, rest = spec.partition(":")
    if sep and kind in DATASET_KINDS:
        if not rest:
            raise DatasetError(f"dataset {spec!r}: expected {kind}:PATH")
        root = Path(rest)
        if not root.is_dir():
            raise DatasetError(f"dataset {spec!r}: {root} is not a directory")
        allowed = _KITTI_OPTS if kind == "kitti" else _VIGOR_OPTS
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ConfigError(f"dataset {spec!r}: unknown options {unknown}; allowed: {sorted(allowed)}")
        if kind == "kitti":
            from .kitti import KittiConfig, KittiCrossView

            split = opts.pop("split", "test1")
            return KittiCrossView(root, split, KittiConfig(**opts))
        from .vigor import Vigor, VigorConfig

        split = opts.pop("split", "test")
        cities = opts.pop("cities", None)
        return Vigor(root, split, VigorConfig(**opts), cities=tuple(cities) if cities else None)
    if opts:
        raise ConfigError(f"dataset {spec!r}: a pair directory takes no options, got {sorted(opts)}")
    path = Path(spec)
    if not path.is_dir():
        raise DatasetError(f"dataset {spec!r}: not a directory, kitti:PATH or vigor:PATH")
    from ..pairs import PairDataset

    return PairDataset(path, load_depth=False)
