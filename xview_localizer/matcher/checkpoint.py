"""Dense-flow checkpoints: one ``.pt`` file holding weights, preset, config, metrics and the
training arguments, loadable with ``torch.load(..., weights_only=True)`` (plain tensors, dicts,
lists, strings and numbers only; no pickled classes).

Layout (``format`` = :data:`FORMAT`)::

    {"format": "xview_localizer.dense_flow/1", "preset": "compact", "config": {...},
     "state_dict": {name: tensor}, "metrics": {...}, "train_args": {...},
     "epoch": int, "step": int, "optimizer": {...} | absent, "scaler": {...} | absent}

Weights can be stored as float16 (``half=True``) to halve the file (the shipped checkpoint);
they are cast back to float32 on load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from .dense_flow import PRESETS, DenseFlowConfig, DenseFlowMatcher

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint_dict", "load_model", "config_from_checkpoint"]

FORMAT = "xview_localizer.dense_flow/1"


def _plain(value: Any) -> Any:
    """Make metrics/args safe for ``weights_only`` loading (str/int/float/bool/None/list/dict)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def save_checkpoint(
    path: str | os.PathLike,
    model: DenseFlowMatcher,
    *,
    metrics: dict | None = None,
    train_args: dict | None = None,
    epoch: int = 0,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: Any = None,
    half: bool = False,
) -> Path:
    """Write a checkpoint atomically (temp file + rename). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = getattr(model, "module", model)  # unwrap DDP
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in net.state_dict().items()}
    blob: dict[str, Any] = {
        "format": FORMAT,
        "preset": net.cfg.name,
        "config": net.cfg.to_dict(),
        "state_dict": state,
        "metrics": _plain(metrics or {}),
        "train_args": _plain(train_args or {}),
        "epoch": int(epoch),
        "step": int(step),
    }
    if optimizer is not None:
        blob["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        blob["scaler"] = scaler.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate the raw checkpoint dict (on the CPU).

    Raises:
        CheckpointError: missing file, unreadable/garbage file, wrong format, unknown preset.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"checkpoint {path}: not a loadable torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        got = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointError(f"checkpoint {path}: format {got!r} is not {FORMAT!r}")
    for key in ("preset", "config", "state_dict"):
        if key not in blob:
            raise CheckpointError(f"checkpoint {path}: missing key {key!r}")
    return blob


def config_from_checkpoint(blob: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> DenseFlowConfig:
    """The model config stored in a checkpoint; its preset must be a known one."""
    name = blob.get("preset")
    if name not in PRESETS:
        raise CheckpointError(f"checkpoint {path}: unknown preset {name!r}; known: {sorted(PRESETS)}")
    try:
        cfg = DenseFlowConfig.from_dict(dict(blob["config"]))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path}: invalid config ({exc})") from exc
    if cfg.name != name:
        raise CheckpointError(f"checkpoint {path}: preset {name!r} but config names {cfg.name!r}")
    return cfg


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[DenseFlowMatcher, dict[str, Any]]:
    """Build the model of a checkpoint, load its weights (float32), move it to ``device`` and
    put it in eval mode. Returns ``(model, checkpoint dict)``."""
    blob = load_checkpoint_dict(path)
    cfg = config_from_checkpoint(blob, path)
    model = DenseFlowMatcher(cfg)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in blob["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit preset {cfg.name!r} ({exc})") from exc
    return model.to(device).eval(), blob
