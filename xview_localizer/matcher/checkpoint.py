"""Matcher checkpoints (dense-flow and sparse-depth): one ``.pt`` file holding weights, model
type, preset, config, metrics and the training arguments, loadable with
``torch.load(..., weights_only=True)`` (plain tensors, dicts, lists, strings and numbers only;
no pickled classes).

Layout (``format`` = :data:`FORMAT`)::

    {"format": "xview_localizer.dense_flow/1", "model": "dense-flow" | "sparse-depth",
     "preset": "compact", "config": {...},
     "state_dict": {name: tensor}, "metrics": {...}, "train_args": {...},
     "epoch": int, "step": int, "optimizer": {...} | absent, "scaler": {...} | absent}

``model`` names the network class (:data:`MODEL_NAMES`); a checkpoint without it is a
dense-flow one (written before the sparse-depth matcher existed), so old files keep loading.
The format string is shared by both models (the layout is the same).

Weights can be stored as float16 (``half=True``) to halve the file (the shipped checkpoint);
they are cast back to float32 on load.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError, ConfigError
from .dense_flow import PRESETS, DenseFlowConfig, DenseFlowMatcher
from .packaged import resolve_checkpoint_path
from .sparse_depth import SPARSE_PRESETS, SparseDepthConfig, SparseDepthMatcher

__all__ = [
    "set_covariance_scale",
    "FORMAT",
    "MODEL_NAMES",
    "model_name_of",
    "model_name_from_checkpoint",
    "build_model",
    "save_checkpoint",
    "load_checkpoint_dict",
    "load_model",
    "config_from_checkpoint",
]

FORMAT = "xview_localizer.dense_flow/1"
#: Model names stored under ``"model"``: network class, config class and presets of each.
_MODELS: dict[str, tuple[type, type, dict]] = {
    "dense-flow": (DenseFlowMatcher, DenseFlowConfig, PRESETS),
    "sparse-depth": (SparseDepthMatcher, SparseDepthConfig, SPARSE_PRESETS),
}
MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)
AnyMatcherNet = DenseFlowMatcher | SparseDepthMatcher
AnyMatcherConfig = DenseFlowConfig | SparseDepthConfig


def model_name_of(model: Any) -> str:
    """``"dense-flow"`` or ``"sparse-depth"`` from a network (DDP-wrapped or not) or its config."""
    net = getattr(model, "module", model)
    for name, (net_cls, cfg_cls, _) in _MODELS.items():
        if isinstance(net, (net_cls, cfg_cls)):
            return name
    raise CheckpointError(f"not a matcher network or config: {type(net).__name__}")


def build_model(cfg: AnyMatcherConfig) -> AnyMatcherNet:
    """A fresh network for a dense-flow or sparse-depth config."""
    net_cls = _MODELS[model_name_of(cfg)][0]
    return net_cls(cfg)


def model_name_from_checkpoint(blob: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> str:
    """The ``"model"`` of a checkpoint dict; missing = ``"dense-flow"``.

    Raises:
        CheckpointError: an unknown model name.
    """
    name = blob.get("model", "dense-flow")
    if name not in _MODELS:
        raise CheckpointError(f"checkpoint {path}: unknown model {name!r}; known: {list(MODEL_NAMES)}")
    return name


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


def _save_atomic(blob: dict[str, Any], path: Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves a
    half-written checkpoint under the real name."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def save_checkpoint(
    path: str | os.PathLike,
    model: AnyMatcherNet,
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
        "model": model_name_of(net),
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
    return _save_atomic(blob, path)


#: The covariance evidence model's terms (``pipeline.solving.evidence_covariance_factor``): the
#: vote-mass inflation and the vote-peak inflation; a model has either or both, each complete.
EVIDENCE_MODEL_TERMS = (("vote_mass_ref", "exponent"), ("vote_peak_ref", "peak_exponent"))


def set_covariance_scale(path: str | os.PathLike, scale: float, report: dict | None = None,
                         depth_kind: str | None = None, evidence_model: dict | None = None) -> Path:
    """Store a calibrated covariance scale (``xview-localizer calibrate-covariance``) in a
    checkpoint, rewriting it atomically; the weights are untouched. With ``depth_kind``
    (sparse-depth: metric / relative / inverse / none) it goes to
    ``covariance_scale_by_depth[depth_kind]``; the checkpoint-wide ``covariance_scale`` is set
    too for "metric" or when there is none yet. With ``depth_kind``, ``evidence_model`` (the
    low-vote-mass inflation ``{"vote_mass_ref", "exponent"}``, optionally with the low-vote-peak
    inflation ``{"vote_peak_ref", "peak_exponent"}``, the scale was fitted with) goes to
    ``covariance_evidence_by_depth[depth_kind]``; None removes a stale one for that kind.

    Raises:
        CheckpointError: the file does not load, ``scale`` is not finite and > 0, or the
            evidence model's values are not finite numbers > 0.
    """
    if not (math.isfinite(float(scale)) and float(scale) > 0.0):
        raise CheckpointError(f"covariance scale must be finite and > 0, got {scale!r}")
    model = None
    if evidence_model is not None:
        model = {}
        for pair in EVIDENCE_MODEL_TERMS:
            if not any(k in evidence_model for k in pair):
                continue  # a term the model does not have
            for key in pair:
                value = evidence_model.get(key)
                if not (isinstance(value, (int, float)) and math.isfinite(float(value)) and float(value) > 0.0):
                    raise CheckpointError(f"covariance evidence model {key} must be a finite number > 0, got {value!r}")
                model[key] = float(value)
        if not model:
            raise CheckpointError(f"covariance evidence model has none of the terms {EVIDENCE_MODEL_TERMS}: "
                                  f"{sorted(evidence_model)}")
    path = resolve_checkpoint_path(path, must_exist=True)
    blob = load_checkpoint_dict(path)
    if depth_kind is not None:
        by_kind = blob.setdefault("covariance_evidence_by_depth", {})
        if model is None:
            by_kind.pop(str(depth_kind), None)
        else:
            by_kind[str(depth_kind)] = model
        blob.setdefault("covariance_scale_by_depth", {})[str(depth_kind)] = float(scale)
        blob.setdefault("covariance_calibration_by_depth", {})[str(depth_kind)] = _plain(report or {})
        if depth_kind != "metric" and isinstance(blob.get("covariance_scale"), (int, float)):
            return _save_atomic(blob, path)
    blob["covariance_scale"] = float(scale)
    blob["covariance_calibration"] = _plain(report or {})
    return _save_atomic(blob, path)


def set_evidence_gate(path: str | os.PathLike, gate: dict, report: dict | None = None) -> Path:
    """Store the calibrated low-evidence gate (``{"min_vote_mass": k, "min_vote_mass_unknown_yaw": u}``, ``xview-localizer
    benchmark --calibrate-gate``) in a checkpoint, atomically; the weights are untouched.

    Raises:
        CheckpointError: the file does not load, or a threshold is not a finite number >= 0.
    """
    clean = {}
    for key, value in dict(gate).items():
        if not (isinstance(value, (int, float)) and math.isfinite(float(value)) and float(value) >= 0.0):
            raise CheckpointError(f"evidence gate {key} must be a finite number >= 0, got {value!r}")
        clean[str(key)] = float(value)
    path = resolve_checkpoint_path(path, must_exist=True)
    blob = load_checkpoint_dict(path)
    blob["evidence_gate"] = clean
    blob["evidence_gate_calibration"] = _plain(report or {})
    return _save_atomic(blob, path)


def load_checkpoint_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate the raw checkpoint dict (on the CPU). ``path`` follows the one
    checkpoint rule (:func:`~xview_localizer.matcher.factory.resolve_checkpoint_path`: ``''`` =
    the packaged default, a bare packaged name, else a path).

    Raises:
        CheckpointError: missing file (naming the packaged names), unreadable/garbage file, wrong
            format, unknown model.
    """
    path = resolve_checkpoint_path(path, must_exist=True)
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
    model_name_from_checkpoint(blob, path)
    return blob


def config_from_checkpoint(blob: dict[str, Any], path: str | os.PathLike = "<checkpoint>") -> AnyMatcherConfig:
    """The model config stored in a checkpoint (:class:`DenseFlowConfig` or
    :class:`SparseDepthConfig`, by its ``"model"``); its preset must be a known one."""
    model = model_name_from_checkpoint(blob, path)
    _, cfg_cls, presets = _MODELS[model]
    name = blob.get("preset")
    if name not in presets:
        raise CheckpointError(f"checkpoint {path}: unknown preset {name!r} of model {model}; known: {sorted(presets)}")
    try:
        cfg = cfg_cls.from_dict(dict(blob["config"]))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path}: invalid config ({exc})") from exc
    if cfg.name != name:
        raise CheckpointError(f"checkpoint {path}: preset {name!r} but config names {cfg.name!r}")
    return cfg


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[AnyMatcherNet, dict[str, Any]]:
    """Build the model of a checkpoint (dense-flow or sparse-depth, by its ``"model"``), load its
    weights (float32), move it to ``device`` and put it in eval mode. Returns
    ``(model, checkpoint dict)``."""
    blob = load_checkpoint_dict(path)
    cfg = config_from_checkpoint(blob, path)
    model = build_model(cfg)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in blob["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit preset {cfg.name!r} ({exc})") from exc
    return model.to(device).eval(), blob
