"""Localization metrics of the seed paper (section 4.2, KITTI protocol) and the prior baseline.

All poses are ``T_patch_base`` = (x_m, y_m, yaw_rad) of base_link in the patch frame (ENU,
origin at the patch centre = the prior position). The prior-only baseline is therefore the pose
``(0, 0, prior_yaw_rad)``.

Lateral / longitudinal errors are the components of the position error across / along the
**ground-truth** heading (longitudinal = along ``(cos yaw_gt, sin yaw_gt)``). Recalls are
fractions in [0, 1] of samples whose absolute error is ``<=`` the threshold.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.errors import GeometryError

__all__ = ["pose_errors", "localization_metrics", "evaluate_with_baseline", "format_table", "METRIC_NAMES"]

METRIC_NAMES = (
    "n_samples",
    "xy_err_mean_m",
    "xy_err_median_m",
    "xy_recall_1m",
    "xy_recall_5m",
    "lateral_recall_1m",
    "lateral_recall_5m",
    "longitudinal_recall_1m",
    "longitudinal_recall_5m",
    "yaw_err_mean_deg",
    "yaw_err_median_deg",
    "yaw_recall_1deg",
    "yaw_recall_5deg",
)


def _poses(name: str, arr) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise GeometryError(f"{name} must have shape (N, 3) = (x_m, y_m, yaw_rad), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise GeometryError(f"{name}: {int(np.count_nonzero(~np.isfinite(a)))} non-finite value(s)")
    return a


def pose_errors(pred, gt) -> dict[str, np.ndarray]:
    """Per-sample errors: ``xy_m``, ``lateral_m``, ``longitudinal_m`` (absolute) and ``yaw_deg``
    (absolute, wrapped to [0, 180]). ``pred``, ``gt``: (N, 3)."""
    p, g = _poses("pred", pred), _poses("gt", gt)
    if p.shape != g.shape:
        raise GeometryError(f"pred {p.shape} and gt {g.shape} must have the same shape")
    d = p[:, :2] - g[:, :2]
    c, s = np.cos(g[:, 2]), np.sin(g[:, 2])
    longitudinal = d[:, 0] * c + d[:, 1] * s
    lateral = -d[:, 0] * s + d[:, 1] * c
    dyaw = (p[:, 2] - g[:, 2] + math.pi) % (2 * math.pi) - math.pi
    return {
        "xy_m": np.hypot(d[:, 0], d[:, 1]),
        "lateral_m": np.abs(lateral),
        "longitudinal_m": np.abs(longitudinal),
        "yaw_deg": np.abs(np.degrees(dyaw)),
    }


def localization_metrics(pred, gt) -> dict[str, float]:
    """The paper's metrics (names carry units, see :data:`METRIC_NAMES`)."""
    e = pose_errors(pred, gt)
    n = int(e["xy_m"].shape[0])
    if n == 0:
        raise GeometryError("localization_metrics: no samples")

    def recall(x: np.ndarray, thr: float) -> float:
        return float(np.mean(x <= thr))

    return {
        "n_samples": n,
        "xy_err_mean_m": float(np.mean(e["xy_m"])),
        "xy_err_median_m": float(np.median(e["xy_m"])),
        "xy_recall_1m": recall(e["xy_m"], 1.0),
        "xy_recall_5m": recall(e["xy_m"], 5.0),
        "lateral_recall_1m": recall(e["lateral_m"], 1.0),
        "lateral_recall_5m": recall(e["lateral_m"], 5.0),
        "longitudinal_recall_1m": recall(e["longitudinal_m"], 1.0),
        "longitudinal_recall_5m": recall(e["longitudinal_m"], 5.0),
        "yaw_err_mean_deg": float(np.mean(e["yaw_deg"])),
        "yaw_err_median_deg": float(np.median(e["yaw_deg"])),
        "yaw_recall_1deg": recall(e["yaw_deg"], 1.0),
        "yaw_recall_5deg": recall(e["yaw_deg"], 5.0),
    }


def evaluate_with_baseline(pred, gt, prior_yaw_rad) -> dict[str, dict[str, float]]:
    """``{"model": metrics(pred), "prior": metrics((0, 0, prior_yaw))}`` on the same samples."""
    g = _poses("gt", gt)
    prior_yaw = np.asarray(prior_yaw_rad, dtype=np.float64).reshape(-1)
    if prior_yaw.shape[0] != g.shape[0]:
        raise GeometryError(f"prior_yaw_rad has {prior_yaw.shape[0]} values for {g.shape[0]} samples")
    prior = np.column_stack([np.zeros_like(prior_yaw), np.zeros_like(prior_yaw), prior_yaw])
    return {"model": localization_metrics(pred, g), "prior": localization_metrics(prior, g)}


def format_table(result: dict[str, dict[str, float]]) -> str:
    """A text table: one row per metric, columns model and prior (recalls in %)."""
    cols = list(result)
    lines = [f"{'metric':<24}" + "".join(f"{c:>12}" for c in cols)]
    for name in METRIC_NAMES:
        row = f"{name:<24}"
        for c in cols:
            v = result[c][name]
            if "recall" in name:
                row += f"{100.0 * v:>11.2f}%"
            elif name == "n_samples":
                row += f"{int(v):>12d}"
            else:
                row += f"{v:>12.3f}"
        lines.append(row)
    return "\n".join(lines)
