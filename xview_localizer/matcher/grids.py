"""Constant index grids of the networks, built once per (shape, device) instead of every frame
(issue 15: "no per-frame allocation of constant grids"). The returned tensors are shared:
callers must not modify them in place."""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["cached_grid"]

_GRIDS: dict[tuple, torch.Tensor] = {}
#: more distinct grids than this (many shapes / devices) and the cache starts afresh
_MAX_GRIDS = 256


def cached_grid(key: tuple, device: torch.device | str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The tensor ``build()`` (which must create it on ``device``) for ``key``, built once per
    (key, device). ``key`` holds every argument the grid depends on (sizes, steps, dtype)."""
    k = (*key, str(device))
    t = _GRIDS.get(k)
    if t is None:
        if len(_GRIDS) >= _MAX_GRIDS:
            _GRIDS.clear()
        t = _GRIDS[k] = build()
    return t
