"""The numbers of the evaluation report: the GNSS-only baseline, signed errors, the paper's
metrics, latency percentiles, NEES and covariance statistics, and the per-frame
:class:`FrameTable` the CSV, plots and panels share.

Conventions: poses are (N, 3) arrays ``(x_m, y_m, yaw_rad)`` in the map frame, NaN where
unknown. Signed errors are ``pred - gt``; lateral / longitudinal are across / along the
ground-truth heading (as in the paper), yaw errors in degrees wrapped into [-180, 180).

Baseline: the GNSS-only pose at an image stamp is the fix track linearly interpolated to the
stamp (the nearest fix within ``fix_max_age_s`` across a hole) with the GNSS course (heading
of the displacement from the most recent fix at least ``course_min_baseline_m`` back, within
``course_max_window_s``) as yaw; NaN where neither is defined.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..core.errors import BagError
from ..train.metrics import METRIC_NAMES
from .report_data import NS_PER_S, EvalData, Track, wrap_rad

__all__ = ["CHI2_95", "FrameTable", "gnss_baseline", "signed_errors", "frame_table", "compute_report"]

#: chi-square 95 % quantiles for 2 and 3 degrees of freedom.
CHI2_95 = {2: 5.991464547107979, 3: 7.814727903251178}


# ----------------------------------------------------------------------------------------------
# The GNSS-only baseline
# ----------------------------------------------------------------------------------------------
def gnss_baseline(gnss: Track, stamps_ns: np.ndarray, fix_max_age_s: float = 2.0,
                  course_min_baseline_m: float = 5.0, course_max_window_s: float = 5.0) -> np.ndarray:
    """(N, 3) GNSS-only poses at the stamps (see the module docstring); NaN rows where no fix is
    within reach, NaN yaw where no course is defined (standing still, too few fixes)."""
    q = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
    out = np.full((q.shape[0], 3), np.nan)
    if len(gnss) == 0:
        return out
    st, xs, ys = gnss.stamp_ns, gnss.x_m, gnss.y_m
    max_ns = fix_max_age_s * NS_PER_S
    for k, t in enumerate(q):
        j = int(np.searchsorted(st, t, side="right"))  # st[j-1] <= t < st[j]
        if j > 0 and j < len(st) and st[j] - st[j - 1] <= 2 * max_ns:
            f = (t - st[j - 1]) / (st[j] - st[j - 1]) if st[j] != st[j - 1] else 0.0
            x, y = xs[j - 1] + f * (xs[j] - xs[j - 1]), ys[j - 1] + f * (ys[j] - ys[j - 1])
            head = j
        else:
            cands = [i for i in (j - 1, j) if 0 <= i < len(st) and abs(int(st[i]) - int(t)) <= max_ns]
            if not cands:
                continue
            i = min(cands, key=lambda i: abs(int(st[i]) - int(t)))
            x, y, head = xs[i], ys[i], i
        out[k, :2] = (x, y)
        # Course: from the newest fix used back to the most recent fix far enough away.
        b = min(head, len(st) - 1)
        for a in range(b - 1, -1, -1):
            if st[b] - st[a] > course_max_window_s * NS_PER_S:
                break
            if math.hypot(xs[b] - xs[a], ys[b] - ys[a]) >= course_min_baseline_m:
                out[k, 2] = math.atan2(ys[b] - ys[a], xs[b] - xs[a])
                break
    return out


# ----------------------------------------------------------------------------------------------
# Errors and metrics
# ----------------------------------------------------------------------------------------------
def signed_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Signed per-frame errors (pred - gt): lateral / longitudinal across / along the GT
    heading (NaN where the GT yaw is unknown), yaw (deg, wrapped), xy norm."""
    d = pred[:, :2] - gt[:, :2]
    c, s = np.cos(gt[:, 2]), np.sin(gt[:, 2])
    return {
        "xy_m": np.hypot(d[:, 0], d[:, 1]),
        "longitudinal_m": d[:, 0] * c + d[:, 1] * s,
        "lateral_m": -d[:, 0] * s + d[:, 1] * c,
        "yaw_deg": np.degrees(wrap_rad(pred[:, 2] - gt[:, 2])),
    }


def _metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    """The paper's metrics (:data:`METRIC_NAMES`) on rows with finite positions; lateral,
    longitudinal and yaw metrics on the rows whose yaws are finite too (``n_yaw_samples``).
    Empty input -> counts 0 and every other value None."""
    ok = np.all(np.isfinite(pred[:, :2]), axis=1) & np.all(np.isfinite(gt[:, :2]), axis=1)
    p, g = pred[ok], gt[ok]
    res: dict[str, Any] = {name: None for name in METRIC_NAMES}
    res["n_samples"] = int(p.shape[0])
    yaw_ok = np.isfinite(p[:, 2]) & np.isfinite(g[:, 2])
    res["n_yaw_samples"] = int(np.count_nonzero(yaw_ok))
    if p.shape[0] == 0:
        return res
    e = signed_errors(p, g)

    def recall(x: np.ndarray, thr: float) -> Optional[float]:
        return float(np.mean(np.abs(x) <= thr)) if x.size else None

    xy = e["xy_m"]
    res.update(xy_err_mean_m=float(np.mean(xy)), xy_err_median_m=float(np.median(xy)),
               xy_recall_1m=recall(xy, 1.0), xy_recall_5m=recall(xy, 5.0))
    gyaw_ok = np.isfinite(g[:, 2])
    lat, lon = e["lateral_m"][gyaw_ok], e["longitudinal_m"][gyaw_ok]
    res.update(lateral_recall_1m=recall(lat, 1.0), lateral_recall_5m=recall(lat, 5.0),
               longitudinal_recall_1m=recall(lon, 1.0), longitudinal_recall_5m=recall(lon, 5.0))
    yaw_err_deg = np.abs(e["yaw_deg"][yaw_ok])
    if yaw_err_deg.size:
        res.update(yaw_err_mean_deg=float(np.mean(yaw_err_deg)), yaw_err_median_deg=float(np.median(yaw_err_deg)),
                   yaw_recall_1deg=recall(yaw_err_deg, 1.0), yaw_recall_5deg=recall(yaw_err_deg, 5.0))
    return res


def _percentiles_ms(values_s: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values_s, float)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"n": 0, "mean_ms": None, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": int(v.size), "mean_ms": 1e3 * float(v.mean()), "p50_ms": 1e3 * float(np.percentile(v, 50)),
            "p90_ms": 1e3 * float(np.percentile(v, 90)), "p99_ms": 1e3 * float(np.percentile(v, 99)),
            "max_ms": 1e3 * float(v.max())}


def _stats(v: np.ndarray) -> dict[str, Any]:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"n": 0, "mean": None, "median": None, "p90": None}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "p90": float(np.percentile(v, 90))}


@dataclass(eq=False)
class FrameTable:
    """Per-frame arrays (N frames, in stamp order) shared by the JSON, CSV, plots and panels.

    ``err`` / ``err_gnss``: :func:`signed_errors` of xview / the GNSS baseline (keys ``xy_m``,
    ``lateral_m``, ``longitudinal_m``, ``yaw_deg``), NaN where undefined.
    """

    stamp_ns: np.ndarray
    accepted: np.ndarray
    reasons: list[str]
    est: np.ndarray          # (N, 3) NaN when rejected
    cov: np.ndarray          # (N, 3, 3) NaN when unknown
    latency_s: np.ndarray
    gt: np.ndarray           # (N, 3) NaN without ground truth
    gnss: np.ndarray         # (N, 3) baseline
    err: dict                # signed errors of xview
    err_gnss: dict           # signed errors of the baseline
    sigma_xy_m: np.ndarray
    sigma_yaw_deg: np.ndarray
    nees3: np.ndarray
    nees2: np.ndarray
    details: list[str]       # human detail of a rejection ('' when accepted)


def frame_table(data: EvalData) -> FrameTable:
    """The per-frame table of ``data`` (frames sorted by stamp; ground truth interpolated
    within ``data.gt_max_gap_s``; the GNSS baseline with ``data``'s settings)."""
    frames = sorted(data.frames, key=lambda f: f.stamp_ns)
    n = len(frames)
    stamps = np.array([f.stamp_ns for f in frames], np.int64)
    accepted = np.array([f.accepted for f in frames], bool)
    est = np.array([(f.x_m, f.y_m, f.yaw_rad) for f in frames], float).reshape(n, 3)
    cov = np.full((n, 3, 3), np.nan)
    for i, f in enumerate(frames):
        if f.accepted and f.cov_xyyaw is not None:
            cov[i] = f.cov_xyyaw
    gt = data.gt.at(stamps, data.gt_max_gap_s) if data.gt is not None else np.full((n, 3), np.nan)
    gnss = gnss_baseline(data.gnss, stamps, data.fix_max_age_s, data.course_min_baseline_m,
                         data.course_max_window_s)
    err, err_gnss = signed_errors(est, gt), signed_errors(gnss, gt)
    sig_xy = np.full(n, np.nan)
    sig_yaw = np.full(n, np.nan)
    nees3 = np.full(n, np.nan)
    nees2 = np.full(n, np.nan)
    for i in range(n):
        c = cov[i]
        if not np.all(np.isfinite(c)):
            continue
        sig_xy[i] = math.sqrt(max(float(np.linalg.eigvalsh(c[:2, :2]).max()), 0.0))
        sig_yaw[i] = math.degrees(math.sqrt(max(c[2, 2], 0.0)))
        d2 = est[i, :2] - gt[i, :2]
        if np.all(np.isfinite(d2)):
            nees2[i] = float(d2 @ np.linalg.solve(c[:2, :2], d2))
            if math.isfinite(gt[i, 2]):
                d3 = np.array([d2[0], d2[1], float(wrap_rad(est[i, 2] - gt[i, 2]))])
                nees3[i] = float(d3 @ np.linalg.solve(c, d3))
    return FrameTable(stamps, accepted, [f.reason for f in frames], est, cov,
                  np.array([f.latency_s for f in frames], float), gt, gnss, err, err_gnss, sig_xy, sig_yaw,
                  nees3, nees2, [f.detail for f in frames])


def _nees_summary(v: np.ndarray, dof: int) -> dict[str, Any]:
    v = v[np.isfinite(v)]
    if not v.size:
        return {"dof": dof, "n": 0, "mean": None, "median": None, "fraction_within_chi2_95": None}
    return {"dof": dof, "n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "fraction_within_chi2_95": float(np.mean(v <= CHI2_95[dof]))}


def compute_report(data: EvalData) -> tuple[dict, FrameTable]:
    """The ``report.json`` content (see the module docstring) and the per-frame table."""
    if not data.frames:
        raise BagError("no image frames to evaluate (is the image topic empty?)")
    t = frame_table(data)
    n = len(t.stamp_ns)
    has_gt = data.gt is not None and len(data.gt) > 0
    gt_ok = np.all(np.isfinite(t.gt[:, :2]), axis=1)
    same = t.accepted & gt_ok
    reasons: dict[str, int] = {}
    for r, a in zip(t.reasons, t.accepted):
        if not a:
            reasons[r] = reasons.get(r, 0) + 1
    duration_s = (t.stamp_ns[-1] - t.stamp_ns[0]) / NS_PER_S if n > 1 else 0.0
    report: dict[str, Any] = {
        "format": "xview-report/1",
        "meta": data.meta,
        "map_frame": {"projection": data.map_projection, "datum_lat_deg": data.datum_lat_deg,
                      "datum_lon_deg": data.datum_lon_deg},
        "frames": {"total": n, "accepted": int(t.accepted.sum()), "rejected": int(n - t.accepted.sum()),
                   "with_ground_truth": int(gt_ok.sum()), "duration_s": float(duration_s),
                   "skipped": int(data.skipped_frames)},
        "availability": float(t.accepted.mean()),
        "rejected_by_reason": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "latency": {"measures": data.latency_label, **_percentiles_ms(t.latency_s)},
        "covariance": {"sigma_xy_m": _stats(t.sigma_xy_m), "sigma_yaw_deg": _stats(t.sigma_yaw_deg)},
        "has_ground_truth": bool(has_gt),
    }
    if has_gt:
        report["metrics"] = {
            "xview": _metrics(t.est[same], t.gt[same]),
            "gnss_same_frames": _metrics(t.gnss[same], t.gt[same]),
            "gnss_all_frames": _metrics(t.gnss[gt_ok], t.gt[gt_ok]),
        }
        report["nees"] = {"position_2dof": _nees_summary(t.nees2, 2), "pose_3dof": _nees_summary(t.nees3, 3),
                          "note": "consistent covariances give mean NEES = dof and ~95 % within the "
                                  "chi-square 95 % bound"}
    else:
        report["metrics"] = None
        report["nees"] = None
        d = np.hypot(*(t.est[:, :2] - t.gnss[:, :2]).T)
        report["distance_to_gnss_m"] = _stats(d)
    return report, t

