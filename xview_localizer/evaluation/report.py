"""The evaluation report of one drive: numbers, a per-frame table, plots and an HTML page.

Input (:class:`EvalData`) is source-agnostic: the frames come either from an in-process
replay of a rosbag (:mod:`xview_localizer.evaluation.replay`, every frame with its outcome, rejection
reason and core latency) or from poses a running node published and someone recorded
(:func:`frames_from_pose_bag`, used by ``make demo``: a frame without a recorded pose is
``not_published``). Ground truth and GNSS are :class:`Track` s in the SAME map frame as the
estimates (x east-ish, y north-ish, metres; yaw about +z from +x).

:func:`write_report` writes into ``out_dir``:

* ``report.json``: the paper's metrics (:mod:`xview_localizer.train.metrics`) for xview and
  for the GNSS-only baseline on the same frames (accepted frames with ground truth), the
  baseline on all frames with ground truth, availability, rejected frames by reason, latency
  percentiles (ms), NEES (2-DoF position and 3-DoF pose, with the chi-square 95 % fraction)
  and covariance statistics;
* ``frames.csv``: one row per image frame (signed lateral / longitudinal / yaw errors of xview
  and GNSS, the 3x3 covariance, sigmas, NEES, latency);
* ``trajectory.png`` (over the satellite map stitched from the tile source when it answers),
  ``errors_time.png``, ``error_cdf.png`` (with ground truth) or ``covariance_time.png``
  (without), ``latency_cdf.png``;
* ``index.html`` showing tables and plots together;
* ``poses/`` (rosbag2 mcap: ``/xview/pose`` PoseWithCovarianceStamped, ``/ground_truth/pose``
  and ``/gnss/pose`` PoseStamped) and ``xview.tum``, ``ground_truth.tum``, ``gnss.tum`` for
  ``evo``.

Baseline: the GNSS-only pose at an image stamp is the fix track linearly interpolated to the
stamp (the nearest fix within ``fix_max_age_s`` across a hole) with the GNSS course (heading
of the displacement from the most recent fix at least ``course_min_baseline_m`` back, within
``course_max_window_s``) as yaw; NaN where neither is defined. Lateral / longitudinal errors
are across / along the ground-truth heading (as in the paper).
"""

from __future__ import annotations

import csv
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..core.errors import BagError, GeometryError
from ..train.metrics import METRIC_NAMES

__all__ = ["FrameRecord", "Track", "EvalData", "compute_report", "write_report", "frames_from_pose_bag",
           "gnss_baseline", "CHI2_95"]

NS_PER_S = 1_000_000_000
#: chi-square 95 % quantiles for 2 and 3 degrees of freedom.
CHI2_95 = {2: 5.991464547107979, 3: 7.814727903251178}
PLOT_NAMES_GT = ("trajectory.png", "errors_time.png", "error_cdf.png", "latency_cdf.png")
PLOT_NAMES_NO_GT = ("trajectory.png", "covariance_time.png", "latency_cdf.png")


@dataclass(frozen=True, eq=False)
class FrameRecord:
    """The outcome of one image frame.

    Attributes:
        stamp_ns: image stamp (ns).
        accepted: an estimate was produced (published).
        reason: rejection key ('' when accepted), e.g. ``too_few_matches``, ``not_published``.
        x_m, y_m, yaw_rad: the estimate ``T_map_base`` (NaN when rejected).
        cov_xyyaw: (3, 3) covariance of (x_m, y_m, yaw_rad) or None.
        latency_s: processing latency of the frame (NaN = unknown).
        detail: human detail of a rejection.
    """

    stamp_ns: int
    accepted: bool
    reason: str = ""
    x_m: float = float("nan")
    y_m: float = float("nan")
    yaw_rad: float = float("nan")
    cov_xyyaw: Optional[np.ndarray] = None
    latency_s: float = float("nan")
    detail: str = ""

    def __post_init__(self) -> None:
        if self.accepted:
            if not all(math.isfinite(v) for v in (self.x_m, self.y_m, self.yaw_rad)):
                raise GeometryError(f"FrameRecord at {self.stamp_ns}: an accepted frame needs a finite pose")
            if self.cov_xyyaw is not None:
                c = np.asarray(self.cov_xyyaw, float)
                if c.shape != (3, 3) or not np.all(np.isfinite(c)):
                    raise GeometryError(f"FrameRecord at {self.stamp_ns}: cov_xyyaw must be a finite 3x3 matrix")
                object.__setattr__(self, "cov_xyyaw", 0.5 * (c + c.T))
        elif not self.reason:
            raise GeometryError(f"FrameRecord at {self.stamp_ns}: a rejected frame needs a reason")


@dataclass(frozen=True, eq=False)
class Track:
    """A time series of planar poses in the map frame; ``yaw_rad`` may hold NaN (unknown)."""

    stamp_ns: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    yaw_rad: np.ndarray

    def __post_init__(self) -> None:
        st = np.asarray(self.stamp_ns, dtype=np.int64).reshape(-1)
        order = np.argsort(st, kind="stable")
        arrs = [np.asarray(a, dtype=float).reshape(-1) for a in (self.x_m, self.y_m, self.yaw_rad)]
        if any(a.shape != st.shape for a in arrs):
            raise GeometryError(f"Track arrays must have the same length, got {[st.shape] + [a.shape for a in arrs]}")
        if not (np.all(np.isfinite(arrs[0])) and np.all(np.isfinite(arrs[1]))):
            raise GeometryError("Track positions must be finite")
        object.__setattr__(self, "stamp_ns", st[order])
        for name, a in zip(("x_m", "y_m", "yaw_rad"), arrs):
            object.__setattr__(self, name, a[order])

    @classmethod
    def from_rows(cls, rows: list[tuple[int, float, float, float]]) -> "Track":
        """From ``[(stamp_ns, x_m, y_m, yaw_rad), ...]``."""
        if not rows:
            return cls(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
        a = list(zip(*rows))
        return cls(np.array(a[0], np.int64), np.array(a[1]), np.array(a[2]), np.array(a[3]))

    def __len__(self) -> int:
        return int(self.stamp_ns.shape[0])

    def at(self, stamps_ns: np.ndarray, max_gap_s: float) -> np.ndarray:
        """(N, 3) poses at ``stamps_ns``: exact samples, or linear interpolation between the two
        samples around a stamp when they are at most ``max_gap_s`` apart; NaN rows otherwise."""
        q = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
        out = np.full((q.shape[0], 3), np.nan)
        if len(self) == 0:
            return out
        st = self.stamp_ns
        i1 = np.searchsorted(st, q, side="left")
        for k, (t, j) in enumerate(zip(q, i1)):
            if j < len(st) and st[j] == t:
                out[k] = (self.x_m[j], self.y_m[j], self.yaw_rad[j])
                continue
            if j == 0 or j >= len(st) or (st[j] - st[j - 1]) > max_gap_s * NS_PER_S:
                continue
            f = (t - st[j - 1]) / (st[j] - st[j - 1])
            dyaw = _wrap(self.yaw_rad[j] - self.yaw_rad[j - 1])
            out[k] = (self.x_m[j - 1] + f * (self.x_m[j] - self.x_m[j - 1]),
                      self.y_m[j - 1] + f * (self.y_m[j] - self.y_m[j - 1]),
                      _wrap(self.yaw_rad[j - 1] + f * dyaw))
        return out


@dataclass(eq=False)
class EvalData:
    """Everything the report needs.

    Attributes:
        frames: one :class:`FrameRecord` per image frame, in stamp order.
        gnss: valid GNSS fixes in the map frame (yaw NaN).
        gt: ground truth in the map frame, or None.
        map_projection, datum_lat_deg, datum_lon_deg: the map frame (for the satellite map).
        tile_url: tile source for the background map ('' = none).
        meta: free-form provenance (bag, checkpoint, topics, estimate source, ...).
        latency_label: what ``FrameRecord.latency_s`` measures.
        gt_max_gap_s: largest ground-truth gap bridged by interpolation.
        fix_max_age_s, course_min_baseline_m, course_max_window_s: GNSS baseline settings.
        skipped_frames: image frames deliberately not localized (``replay --every``): not in
            ``frames``, neither accepted nor rejected; reported as ``frames.skipped``.
    """

    frames: list[FrameRecord]
    gnss: Track
    gt: Optional[Track]
    map_projection: str
    datum_lat_deg: float
    datum_lon_deg: float
    tile_url: str = ""
    meta: dict = field(default_factory=dict)
    latency_label: str = "core step (matcher + tiles + solver)"
    gt_max_gap_s: float = 0.5
    fix_max_age_s: float = 2.0
    course_min_baseline_m: float = 5.0
    course_max_window_s: float = 5.0
    skipped_frames: int = 0


def _wrap(a):
    return (np.asarray(a) + math.pi) % (2.0 * math.pi) - math.pi


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
def _signed_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Signed per-frame errors (pred - gt): lateral / longitudinal across / along the GT
    heading (NaN where the GT yaw is unknown), yaw (deg, wrapped), xy norm."""
    d = pred[:, :2] - gt[:, :2]
    c, s = np.cos(gt[:, 2]), np.sin(gt[:, 2])
    return {
        "xy_m": np.hypot(d[:, 0], d[:, 1]),
        "longitudinal_m": d[:, 0] * c + d[:, 1] * s,
        "lateral_m": -d[:, 0] * s + d[:, 1] * c,
        "yaw_deg": np.degrees(_wrap(pred[:, 2] - gt[:, 2])),
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
    e = _signed_errors(p, g)

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
class _Table:
    """Per-frame arrays (N frames) shared by the JSON, CSV and plots."""

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


def _table(data: EvalData) -> _Table:
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
    err, err_gnss = _signed_errors(est, gt), _signed_errors(gnss, gt)
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
                d3 = np.array([d2[0], d2[1], float(_wrap(est[i, 2] - gt[i, 2]))])
                nees3[i] = float(d3 @ np.linalg.solve(c, d3))
    return _Table(stamps, accepted, [f.reason for f in frames], est, cov,
                  np.array([f.latency_s for f in frames], float), gt, gnss, err, err_gnss, sig_xy, sig_yaw,
                  nees3, nees2)


def _nees_summary(v: np.ndarray, dof: int) -> dict[str, Any]:
    v = v[np.isfinite(v)]
    if not v.size:
        return {"dof": dof, "n": 0, "mean": None, "median": None, "fraction_within_chi2_95": None}
    return {"dof": dof, "n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "fraction_within_chi2_95": float(np.mean(v <= CHI2_95[dof]))}


def compute_report(data: EvalData) -> tuple[dict, _Table]:
    """The ``report.json`` content (see the module docstring) and the per-frame table."""
    if not data.frames:
        raise BagError("no image frames to evaluate (is the image topic empty?)")
    t = _table(data)
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


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def _fmt(v: float, nd: int = 4) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.{nd}f}"


def _write_csv(t: _Table, path: Path) -> None:
    t0 = int(t.stamp_ns[0])
    cols = ["stamp_ns", "t_s", "accepted", "reason", "est_x_m", "est_y_m", "est_yaw_deg", "gt_x_m", "gt_y_m",
            "gt_yaw_deg", "err_xy_m", "err_lateral_m", "err_longitudinal_m", "err_yaw_deg", "gnss_x_m", "gnss_y_m",
            "gnss_err_xy_m", "gnss_err_lateral_m", "gnss_err_longitudinal_m", "gnss_err_yaw_deg", "cov_xx_m2",
            "cov_xy_m2", "cov_yy_m2", "cov_xyaw_m_rad", "cov_yyaw_m_rad", "cov_yawyaw_rad2", "sigma_xy_m",
            "sigma_yaw_deg", "nees_2dof", "nees_3dof", "latency_ms"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for i in range(len(t.stamp_ns)):
            c = t.cov[i]
            deg = math.degrees
            w.writerow([
                int(t.stamp_ns[i]), f"{(int(t.stamp_ns[i]) - t0) / NS_PER_S:.3f}", int(t.accepted[i]), t.reasons[i],
                _fmt(t.est[i, 0]), _fmt(t.est[i, 1]), _fmt(deg(t.est[i, 2])), _fmt(t.gt[i, 0]), _fmt(t.gt[i, 1]),
                _fmt(deg(t.gt[i, 2])), _fmt(t.err["xy_m"][i]), _fmt(t.err["lateral_m"][i]),
                _fmt(t.err["longitudinal_m"][i]), _fmt(t.err["yaw_deg"][i]), _fmt(t.gnss[i, 0]), _fmt(t.gnss[i, 1]),
                _fmt(t.err_gnss["xy_m"][i]), _fmt(t.err_gnss["lateral_m"][i]),
                _fmt(t.err_gnss["longitudinal_m"][i]), _fmt(t.err_gnss["yaw_deg"][i]),
                _fmt(c[0, 0], 6), _fmt(c[0, 1], 6), _fmt(c[1, 1], 6), _fmt(c[0, 2], 6), _fmt(c[1, 2], 6),
                _fmt(c[2, 2], 8), _fmt(t.sigma_xy_m[i]), _fmt(t.sigma_yaw_deg[i]), _fmt(t.nees2[i]),
                _fmt(t.nees3[i]), _fmt(1e3 * t.latency_s[i], 2)])


def _tum_lines(stamps_ns, xyz_yaw) -> str:
    lines = []
    for s, (x, y, yaw_map_rad) in zip(stamps_ns, xyz_yaw):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        yaw_map_rad = 0.0 if not math.isfinite(yaw_map_rad) else yaw_map_rad
        lines.append(f"{int(s) / NS_PER_S:.9f} {x:.6f} {y:.6f} 0.0 0.0 0.0 {math.sin(yaw_map_rad / 2):.9f} "
                     f"{math.cos(yaw_map_rad / 2):.9f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_pose_bag(out: Path, t: _Table, data: EvalData, map_frame: str = "map") -> Path:
    """``out`` = a new rosbag2 (mcap) with ``/xview/pose`` (PoseWithCovarianceStamped, the
    accepted estimates), ``/ground_truth/pose`` and ``/gnss/pose`` (PoseStamped, at the frame
    stamps) in ``map_frame``, for ``evo``."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    Time, Header = ts.types["builtin_interfaces/msg/Time"], ts.types["std_msgs/msg/Header"]
    Pose, Point = ts.types["geometry_msgs/msg/Pose"], ts.types["geometry_msgs/msg/Point"]
    Quat = ts.types["geometry_msgs/msg/Quaternion"]
    PoseStamped = ts.types["geometry_msgs/msg/PoseStamped"]
    PWCS = ts.types["geometry_msgs/msg/PoseWithCovarianceStamped"]
    PWC = ts.types["geometry_msgs/msg/PoseWithCovariance"]

    def header(s: int):
        return Header(stamp=Time(sec=int(s // NS_PER_S), nanosec=int(s % NS_PER_S)), frame_id=map_frame)

    def pose(x: float, y: float, yaw_map_rad: float):
        yaw_map_rad = 0.0 if not math.isfinite(yaw_map_rad) else yaw_map_rad
        return Pose(position=Point(x=float(x), y=float(y), z=0.0),
                    orientation=Quat(x=0.0, y=0.0, z=math.sin(yaw_map_rad / 2), w=math.cos(yaw_map_rad / 2)))

    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        c_est = writer.add_connection("/xview/pose", PWCS.__msgtype__, typestore=ts)
        c_gt = writer.add_connection("/ground_truth/pose", PoseStamped.__msgtype__, typestore=ts)
        c_gnss = writer.add_connection("/gnss/pose", PoseStamped.__msgtype__, typestore=ts)
        for i, s in enumerate(t.stamp_ns):
            s = int(s)
            if t.accepted[i]:
                c6 = np.zeros((6, 6))
                c6[2, 2] = c6[3, 3] = c6[4, 4] = 1e6
                c3 = t.cov[i] if np.all(np.isfinite(t.cov[i])) else np.diag([1e6, 1e6, 1e6])
                for a, ia in enumerate((0, 1, 5)):
                    for b, ib in enumerate((0, 1, 5)):
                        c6[ia, ib] = c3[a, b]
                msg = PWCS(header=header(s), pose=PWC(pose=pose(*t.est[i]), covariance=c6.reshape(-1)))
                writer.write(c_est, s, ts.serialize_cdr(msg, msg.__msgtype__))
            if np.all(np.isfinite(t.gt[i, :2])):
                msg = PoseStamped(header=header(s), pose=pose(*t.gt[i]))
                writer.write(c_gt, s, ts.serialize_cdr(msg, msg.__msgtype__))
            if np.all(np.isfinite(t.gnss[i, :2])):
                msg = PoseStamped(header=header(s), pose=pose(*t.gnss[i]))
                writer.write(c_gnss, s, ts.serialize_cdr(msg, msg.__msgtype__))
    finally:
        writer.close()
    return out


def write_report(data: EvalData, out_dir: Path, tile_cache: Any = None) -> dict:
    """Compute the report and write every file into ``out_dir`` (created; files in it are
    overwritten). ``tile_cache`` (a TileCache) draws the satellite map under the trajectory;
    None = built from ``data.tile_url`` when set. Returns the report dict (as in report.json)."""
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report, t = compute_report(data)
    _write_csv(t, out / "frames.csv")
    (out / "xview.tum").write_text(_tum_lines(t.stamp_ns[t.accepted], t.est[t.accepted]))
    (out / "gnss.tum").write_text(_tum_lines(t.stamp_ns, t.gnss))
    if report["has_ground_truth"]:
        (out / "ground_truth.tum").write_text(_tum_lines(t.stamp_ns, t.gt))
    if (out / "poses").exists():
        shutil.rmtree(out / "poses")
    write_pose_bag(out / "poses", t, data, str(data.meta.get("map_frame_id", "map")))
    report["plots"] = write_plots(t, data, report, out, tile_cache)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    _write_html(report, out / "index.html")
    return report


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg backend selected inside the function)
# ----------------------------------------------------------------------------------------------
def _satellite_background(data: EvalData, xy_m: np.ndarray, tile_cache: Any, max_side_px: int = 1800):
    """(rgb, to_px, note): a Web-Mercator mosaic of the source's tiles covering ``xy_m`` (N, 2)
    map points plus a margin (missing tiles, e.g. beyond a synthetic world's edge, stay grey),
    and a function map xy (N, 2) -> mosaic pixels; (None, None, note) when there is no tile
    source or none of the tiles answers."""
    from ..core.geo import latlon_to_global_px
    from ..pipeline.localizer import MapProjection

    if not data.tile_url and tile_cache is None:
        return None, None, "no tile source"
    if not (math.isfinite(data.datum_lat_deg) and math.isfinite(data.datum_lon_deg)):
        return None, None, "map datum unknown"
    proj = MapProjection(data.map_projection, data.datum_lat_deg, data.datum_lon_deg)
    margin_m = 30.0
    lo, hi = xy_m.min(axis=0) - margin_m, xy_m.max(axis=0) + margin_m
    corners = [proj.inverse(float(x), float(y)) for x in (lo[0], hi[0]) for y in (lo[1], hi[1])]
    lats, lons = np.array([c[0] for c in corners]), np.array([c[1] for c in corners])
    own = None
    try:
        if tile_cache is None:
            from ..tiles.cache import TileCache, TileCacheConfig

            own = tile_cache = TileCache(data.tile_url, None, TileCacheConfig(timeout_s=5.0, retries=1))
        z_top = int(tile_cache.zoom_for(float(lats.mean()), 0.1))
        tries = 0
        n_ok, first_error = 0, ""
        for zoom in range(z_top, max(z_top - 10, 0), -1):
            gx, gy = latlon_to_global_px(lats, lons, zoom)
            if max(gx.max() - gx.min(), gy.max() - gy.min()) > max_side_px:
                continue
            tx0, tx1 = int(gx.min() // 256), int(gx.max() // 256)
            ty0, ty1 = int(gy.min() // 256), int(gy.max() // 256)
            mosaic = np.full(((ty1 - ty0 + 1) * 256, (tx1 - tx0 + 1) * 256, 3), 160, np.uint8)
            for ty in range(ty0, ty1 + 1):
                for tx in range(tx0, tx1 + 1):
                    try:
                        tile = tile_cache.get_tile(zoom, tx, ty)
                    except Exception as exc:  # noqa: BLE001 - a missing tile stays grey
                        first_error = first_error or str(exc)[:80]
                        continue
                    mosaic[(ty - ty0) * 256:(ty - ty0 + 1) * 256,
                           (tx - tx0) * 256:(tx - tx0 + 1) * 256] = tile[..., :3]
                    n_ok += 1
            tries += 1
            if n_ok or tries >= 4:  # a pyramid may lack the finest zooms: try coarser ones
                break
    except Exception as exc:  # noqa: BLE001 - a missing background must not lose the report
        return None, None, f"satellite map unavailable: {str(exc)[:80]}"
    finally:
        if own is not None:
            own.close()
    n_all = (ty1 - ty0 + 1) * (tx1 - tx0 + 1)
    if n_ok == 0:
        return None, None, f"satellite map unavailable: {first_error}"
    # crop to the area of interest
    u0, v0 = int(gx.min()) - tx0 * 256, int(gy.min()) - ty0 * 256
    u1, v1 = int(math.ceil(gx.max())) - tx0 * 256, int(math.ceil(gy.max())) - ty0 * 256
    rgb = np.ascontiguousarray(mosaic[v0:v1 + 1, u0:u1 + 1])

    def to_px(pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, float).reshape(-1, 2)
        ll = np.array([proj.inverse(float(x), float(y)) for x, y in pts]).reshape(-1, 2)
        px, py = latlon_to_global_px(ll[:, 0], ll[:, 1], zoom)
        return np.column_stack([np.ravel(px) - tx0 * 256 - u0, np.ravel(py) - ty0 * 256 - v0])

    note = f"satellite tiles zoom {zoom}, {n_ok}/{n_all} tiles"
    return rgb, to_px, note


def write_plots(t: _Table, data: EvalData, report: dict, out: Path, tile_cache: Any = None) -> list[str]:
    """Write the PNG plots into ``out``; returns their file names."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names: list[str] = []
    rel_s = (t.stamp_ns - t.stamp_ns[0]) / NS_PER_S
    has_gt = bool(report["has_ground_truth"])
    rej = ~t.accepted

    # -- trajectory over the satellite map ---------------------------------------------------
    pts = [a[np.all(np.isfinite(a[:, :2]), axis=1), :2] for a in (t.gt, t.gnss, t.est)]
    if len(data.gnss):
        pts.append(np.column_stack([data.gnss.x_m, data.gnss.y_m]))
    allpts = np.concatenate([p for p in pts if len(p)] or [np.zeros((1, 2))])
    rgb, to_px, note = _satellite_background(data, allpts, tile_cache)
    fig, ax = plt.subplots(figsize=(10, 10))
    if rgb is not None:
        ax.imshow(rgb)
        conv = to_px
        ax.set_xlabel("pixel (north up)")
    else:
        def conv(p):
            return np.asarray(p, float).reshape(-1, 2)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("map x (m)")
        ax.set_ylabel("map y (m)")

    def draw(a: np.ndarray, mask: np.ndarray, **kw) -> None:
        sel = mask & np.all(np.isfinite(a[:, :2]), axis=1)
        if np.any(sel):
            p = conv(a[sel, :2])
            ax.plot(p[:, 0], p[:, 1], **kw)

    everything = np.ones(len(t.stamp_ns), bool)
    anchor = np.where(np.all(np.isfinite(t.gt[:, :2]), axis=1)[:, None], t.gt, t.gnss)
    draw(anchor, rej, color="red", ls="none", marker="x", ms=3, alpha=0.35, label="rejected frames")
    if has_gt:
        draw(t.gt, everything, color="lime", lw=1.5, label="ground truth")
    if len(data.gnss):
        g = np.column_stack([data.gnss.x_m, data.gnss.y_m, data.gnss.yaw_rad])
        draw(g, np.ones(len(g), bool), color="orange", ls="none", marker=".", ms=4, label="GNSS fixes")
    draw(t.est, t.accepted, color="deepskyblue", ls="none", marker="o", ms=4, markeredgecolor="k",
         markeredgewidth=0.5, label="xview estimates")
    ax.set_title(f"trajectory ({note})", fontsize=9)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(out / "trajectory.png", dpi=90)
    plt.close(fig)
    names.append("trajectory.png")

    if has_gt:
        fig, axs = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
        axs[0].plot(rel_s, t.err_gnss["xy_m"], color="orange", lw=1, label="GNSS-only")
        axs[0].plot(rel_s[t.accepted], t.err["xy_m"][t.accepted], "o", color="deepskyblue", ms=3, label="xview")
        axs[0].plot(rel_s[rej], np.zeros(int(rej.sum())), "|", color="red", ms=8, label="rejected")
        axs[0].set_ylabel("position error (m)")
        axs[0].legend(loc="upper right")
        axs[1].plot(rel_s[t.accepted], t.err["lateral_m"][t.accepted], ".", ms=3, label="lateral")
        axs[1].plot(rel_s[t.accepted], t.err["longitudinal_m"][t.accepted], ".", ms=3, label="longitudinal")
        axs[1].axhline(0.0, color="k", lw=0.5)
        axs[1].set_ylabel("xview signed error (m)")
        axs[1].legend(loc="upper right")
        axs[2].plot(rel_s, t.err_gnss["yaw_deg"], color="orange", lw=1, label="GNSS course")
        axs[2].plot(rel_s[t.accepted], t.err["yaw_deg"][t.accepted], "o", color="deepskyblue", ms=3, label="xview")
        axs[2].set_ylabel("yaw error (deg)")
        axs[2].set_xlabel("time (s)")
        axs[2].legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(out / "errors_time.png", dpi=90)
        plt.close(fig)
        names.append("errors_time.png")

        same = t.accepted & np.all(np.isfinite(t.gt[:, :2]), axis=1)
        fig, axs = plt.subplots(1, 2, figsize=(12, 5))
        for ax_, key, unit in ((axs[0], "xy_m", "position error (m)"), (axs[1], "yaw_deg", "|yaw error| (deg)")):
            for label, e, mask, color in (("xview", t.err, same, "deepskyblue"),
                                          ("GNSS-only, same frames", t.err_gnss, same, "orange"),
                                          ("GNSS-only, all frames", t.err_gnss,
                                           np.all(np.isfinite(t.gt[:, :2]), axis=1), "grey")):
                v = np.sort(np.abs(e[key][mask]))
                v = v[np.isfinite(v)]
                if v.size:
                    ax_.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=color, label=label)
            ax_.set_xlabel(unit)
            ax_.set_ylabel("fraction of frames")
            ax_.grid(alpha=0.3)
            if ax_.get_legend_handles_labels()[0]:
                ax_.legend(loc="lower right")
            else:
                ax_.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax_.transAxes)
        fig.tight_layout()
        fig.savefig(out / "error_cdf.png", dpi=90)
        plt.close(fig)
        names.append("error_cdf.png")
    else:
        fig, axs = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
        axs[0].plot(rel_s[t.accepted], t.sigma_xy_m[t.accepted], "o", ms=3, label="sigma xy (largest axis)")
        d = np.hypot(*(t.est[:, :2] - t.gnss[:, :2]).T)
        axs[0].plot(rel_s[t.accepted], d[t.accepted], ".", ms=3, label="distance to GNSS")
        axs[0].plot(rel_s[rej], np.zeros(int(rej.sum())), "|", color="red", ms=8, label="rejected")
        axs[0].set_ylabel("m")
        axs[0].legend(loc="upper right")
        axs[1].plot(rel_s[t.accepted], t.sigma_yaw_deg[t.accepted], "o", ms=3, label="sigma yaw")
        axs[1].set_ylabel("deg")
        axs[1].set_xlabel("time (s)")
        axs[1].legend(loc="upper right")
        fig.tight_layout()
        fig.savefig(out / "covariance_time.png", dpi=90)
        plt.close(fig)
        names.append("covariance_time.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    v = np.sort(1e3 * t.latency_s[np.isfinite(t.latency_s)])
    if v.size:
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post")
    ax.set_xlabel(f"latency (ms): {data.latency_label}")
    ax.set_ylabel("fraction of frames")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=90)
    plt.close(fig)
    names.append("latency_cdf.png")
    return names


# ----------------------------------------------------------------------------------------------
# HTML and the console table
# ----------------------------------------------------------------------------------------------
def _cell(v: Any, name: str = "") -> str:
    if v is None:
        return "n/a"
    if "recall" in name or name == "availability":
        return f"{100.0 * v:.1f} %"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def summary_rows(report: dict) -> list[tuple[str, str, str]]:
    """(quantity, GNSS-only, xview_localizer) rows of the short comparison table."""
    m = report.get("metrics") or {}
    x, g = m.get("xview") or {}, m.get("gnss_same_frames") or {}
    lat = report["latency"]
    rows = [
        ("frames evaluated (accepted, with GT)", _cell(g.get("n_samples")), _cell(x.get("n_samples"))),
        ("median position error (m)", _cell(g.get("xy_err_median_m")), _cell(x.get("xy_err_median_m"))),
        ("mean position error (m)", _cell(g.get("xy_err_mean_m")), _cell(x.get("xy_err_mean_m"))),
        ("median yaw error (deg)", _cell(g.get("yaw_err_median_deg")), _cell(x.get("yaw_err_median_deg"))),
        ("mean yaw error (deg)", _cell(g.get("yaw_err_mean_deg")), _cell(x.get("yaw_err_mean_deg"))),
        ("lateral recall @1 m", _cell(g.get("lateral_recall_1m"), "recall"),
         _cell(x.get("lateral_recall_1m"), "recall")),
        ("availability", "100.0 % (GNSS)", _cell(report["availability"], "availability")),
        ("latency p50 / p90 (ms)", "-", f"{_cell(lat['p50_ms'])} / {_cell(lat['p90_ms'])}"),
    ]
    skipped = report["frames"].get("skipped", 0)
    if skipped:
        rows.append(("frames localized / skipped (--every)", "-", f"{report['frames']['total']} / {skipped}"))
    return rows


def format_summary(report: dict) -> str:
    """The short console table (GNSS-only vs xview_localizer)."""
    rows = summary_rows(report)
    w0 = max(len(r[0]) for r in rows)
    lines = [f"{'':<{w0}}  {'GNSS-only':>16}  {'xview_localizer':>16}"]
    lines += [f"{a:<{w0}}  {b:>16}  {c:>16}" for a, b, c in rows]
    return "\n".join(lines)


def _write_html(report: dict, path: Path) -> None:
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>xview_localizer report</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             "td:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}</style>",
             "</head><body><h1>xview_localizer evaluation</h1>"]
    meta = report.get("meta") or {}
    parts.append("<p>" + "<br>".join(f"<b>{esc(str(k))}</b>: {esc(str(v))}" for k, v in meta.items()) + "</p>")
    fr = report["frames"]
    parts.append(f"<p>{fr['total']} frames over {fr['duration_s']:.1f} s; accepted {fr['accepted']} "
                 f"(availability {100 * report['availability']:.1f} %); with ground truth {fr['with_ground_truth']}"
                 + (f"; {fr['skipped']} more skipped (not localized: replay --every)" if fr.get("skipped") else "")
                 + ".</p>")
    parts.append("<h2>Summary</h2><table><tr><th></th><th>GNSS-only</th><th>xview_localizer</th></tr>")
    parts += [f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td></tr>" for a, b, c in summary_rows(report)]
    parts.append("</table>")
    if report.get("metrics"):
        cols = list(report["metrics"])
        parts.append("<h2>Metrics (paper protocol)</h2><table><tr><th>metric</th>"
                     + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>")
        names = ["n_samples", "n_yaw_samples", *[n for n in METRIC_NAMES if n != "n_samples"]]
        for name in names:
            parts.append(f"<tr><td>{esc(name)}</td>" + "".join(
                f"<td>{esc(_cell(report['metrics'][c].get(name), name))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    if report.get("nees"):
        parts.append("<h2>Covariance consistency (NEES)</h2><table><tr><th></th><th>n</th><th>mean</th>"
                     "<th>median</th><th>within chi2 95 %</th></tr>")
        for k in ("position_2dof", "pose_3dof"):
            v = report["nees"][k]
            parts.append(f"<tr><td>{k} (expected mean {v['dof']})</td><td>{v['n']}</td><td>{_cell(v['mean'])}</td>"
                         f"<td>{_cell(v['median'])}</td><td>{_cell(v['fraction_within_chi2_95'], 'recall')}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Rejected frames by reason</h2><table><tr><th>reason</th><th>frames</th></tr>")
    parts += [f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in report["rejected_by_reason"].items()]
    parts.append("</table>")
    lat = report["latency"]
    parts.append(f"<h2>Latency</h2><p>{esc(lat['measures'])}</p><table><tr>"
                 + "".join(f"<th>{k}</th>" for k in ("n", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"))
                 + "</tr><tr>" + "".join(f"<td>{_cell(lat[k])}</td>" for k in
                                          ("n", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")) + "</tr></table>")
    cov = report["covariance"]
    parts.append("<h2>Reported uncertainty</h2><table><tr><th></th><th>n</th><th>mean</th><th>median</th>"
                 "<th>p90</th></tr>")
    for k, v in cov.items():
        parts.append(f"<tr><td>{k}</td><td>{v['n']}</td><td>{_cell(v['mean'])}</td><td>{_cell(v['median'])}</td>"
                     f"<td>{_cell(v['p90'])}</td></tr>")
    parts.append("</table><h2>Plots</h2>")
    for name in report.get("plots", []):
        parts.append(f"<div><img src='{esc(name)}' alt='{esc(name)}'></div>")
    parts.append("<p>Per-frame values: <a href='frames.csv'>frames.csv</a>; numbers: "
                 "<a href='report.json'>report.json</a>; trajectories for evo: <code>poses/</code> (rosbag2), "
                 "<code>*.tum</code>.</p></body></html>")
    path.write_text("\n".join(parts))


# ----------------------------------------------------------------------------------------------
# Estimates from a recorded pose topic (e.g. the demo's node output)
# ----------------------------------------------------------------------------------------------
def frames_from_pose_bag(bag: Path, topic: str, image_stamps_ns, latency_s_by_stamp: Optional[dict] = None
                         ) -> list[FrameRecord]:
    """Frames from poses a node published and someone recorded to a rosbag2: one
    :class:`FrameRecord` per image stamp, accepted where a ``PoseWithCovarianceStamped`` with
    that stamp was recorded on ``topic`` (x, y, yaw and the x/y/yaw covariance), else rejected
    ``not_published``. ``latency_s_by_stamp`` adds a latency per stamp.

    Raises:
        BagError: the bag cannot be read or has no ``topic`` (the message lists its topics).
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    lat = latency_s_by_stamp or {}
    poses: dict[int, tuple] = {}
    try:
        with AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
            conns = [c for c in reader.connections if c.topic == topic]
            if not conns:
                have = ", ".join(f"{c.topic} ({c.msgtype})" for c in reader.connections) or "none"
                raise BagError(f"{bag}: no topic {topic!r}; the bag has: {have}")
            for c, _, raw in reader.messages(connections=conns):
                m = reader.deserialize(raw, c.msgtype)
                s = int(m.header.stamp.sec) * NS_PER_S + int(m.header.stamp.nanosec)
                p, q = m.pose.pose.position, m.pose.pose.orientation
                yaw_map_rad = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
                c6 = np.asarray(m.pose.covariance, float).reshape(6, 6)
                idx = [0, 1, 5]
                poses[s] = (float(p.x), float(p.y), yaw_map_rad, c6[np.ix_(idx, idx)])
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for unreadable bags
        raise BagError(f"{bag}: cannot read the recorded poses: {exc}") from exc
    out = []
    for s in sorted(int(v) for v in image_stamps_ns):
        if s in poses:
            x, y, yaw, c = poses[s]
            out.append(FrameRecord(s, True, "", x, y, yaw, c, float(lat.get(s, float("nan")))))
        else:
            out.append(FrameRecord(s, False, "not_published"))
    return out
