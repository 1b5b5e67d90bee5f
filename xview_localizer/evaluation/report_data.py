"""What the evaluation report reads: one :class:`FrameRecord` per image frame, the ground-truth
and GNSS :class:`Track` s, and the :class:`EvalData` that holds them (plus, from an in-process
replay, the bounded per-frame snapshots the frame panels are drawn from, or a
:class:`PanelSource`: another run over the same drive that the panels come from).

Frames: the map frame of the localizer (x east-ish, y north-ish, metres, origin at the map
datum; yaw about +z from +x, radians). Stamps are integer nanoseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..core.errors import GeometryError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .report_snapshots import SnapshotStore

__all__ = ["NS_PER_S", "FrameRecord", "Track", "EvalData", "PanelSource", "wrap_rad"]

NS_PER_S = 1_000_000_000


def wrap_rad(a):
    """Angles (scalar or array, radians) wrapped into [-pi, pi)."""
    return (np.asarray(a) + math.pi) % (2.0 * math.pi) - math.pi


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
            dyaw = wrap_rad(self.yaw_rad[j] - self.yaw_rad[j - 1])
            out[k] = (self.x_m[j - 1] + f * (self.x_m[j] - self.x_m[j - 1]),
                      self.y_m[j - 1] + f * (self.y_m[j] - self.y_m[j - 1]),
                      wrap_rad(self.yaw_rad[j - 1] + f * dyaw))
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
        snapshots: per-frame thumbnails and matches for the frame panels
            (:class:`~xview_localizer.evaluation.report_snapshots.SnapshotStore`, bounded in
            bytes), or None (e.g. estimates from a recorded pose topic: no panels).
        panels_from: draw the frame panels from this other run over the same drive instead
            of from ``frames`` / ``snapshots`` (``make demo``: the node's recorded poses carry
            no matches, an offline replay of the same bag does); None = from this data.
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
    snapshots: Optional["SnapshotStore"] = None
    panels_from: Optional["PanelSource"] = None


@dataclass(frozen=True, eq=False)
class PanelSource:
    """Where a report's frame panels come from when not from its own frames.

    The panels (selection, images, numbers) then describe ``data``: its frames (estimate,
    acceptance, rejection reason), its ground truth and GNSS, its snapshots. The report's
    summary table, plots and detailed tables stay those of the :class:`EvalData` that holds
    this source. ``data`` must cover the same drive (the same image stamps) in the same map
    frame; its own ``panels_from`` is ignored.

    Attributes:
        data: the other run, with ``snapshots`` (e.g. an in-process replay of the same bag).
        label: short name of that run for captions and panel titles, e.g. "offline replay".
        note: sentences shown above the panels saying what that run is and how it relates to
            the report's own estimates.
        main_label: short name of the report's own estimates, for the per-panel comparison
            in the captions, e.g. "node (DDS)".
    """

    data: EvalData
    label: str
    note: str
    main_label: str = "report's estimates"
