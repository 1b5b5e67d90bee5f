"""Bounded per-frame snapshots of an in-process replay: what the report's frame panels draw.

A :class:`FrameSnapshot` keeps, for one frame that ran through ``Localizer.step``:

* the camera image, downsized to at most ``ground_max_px`` on its longest side, as JPEG;
* the satellite patch the frame was matched against, downsized to at most ``sat_max_px``, as
  JPEG, with the georeference of the DOWNSIZED patch (same centre and frame, scaled
  ``m_per_px``; :mod:`xview_localizer.tiles.patch` for the pixel <-> ENU convention);
* the prior (map frame) and, when accepted, the solver's ``T_patch_base`` (patch frame:
  true-north ENU about the patch centre, metres, yaw radians from east);
* up to ``max_points`` of the correspondences (a uniform subsample in the matcher's order):
  ``dst_xy_m`` (patch frame), ``src_xy_m`` (base_link), ``weight`` in [0, 1], the inlier flag.

What is available comes from :class:`~xview_localizer.pipeline.localizer.StepResult`: the
patch whenever tiles were fetched; the correspondences and inliers only for frames that
reached gating (accepted, or rejected there, e.g. ``gnss_inconsistent``); not for
``too_few_matches`` or ``low_evidence`` rejections, which StepResult does not carry.

Memory (:class:`SnapshotStore`): a snapshot is ~10-40 kB. The store keeps the total of
:attr:`FrameSnapshot.nbytes` at most ``max_bytes``. When a new snapshot pushes it over, the
store thins itself: it protects the ``keep_worst`` frames with the largest known score (the
replay passes the position error against the ground truth read so far), the first
``keep_per_reason`` frames of each rejection reason and the ``keep_recent`` frames added last
(whose score may not be known yet: their ground truth can arrive later), and drops the unprotected frames whose
add-order number is not a multiple of its stride (1, doubled whenever that alone does not
fit), so what is kept stays evenly spread over the drive: one frame in ``stride``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import cv2
import numpy as np

__all__ = ["FrameSnapshot", "SnapshotStore", "snapshot_from_step", "encode_jpeg", "decode_jpeg",
           "DEFAULT_MAX_BYTES"]

#: Default byte budget of a store (24 MiB: a 600-frame drive fits without thinning).
DEFAULT_MAX_BYTES = 24 * 2**20
#: Bookkeeping bytes counted per snapshot besides its images and arrays.
_OVERHEAD_BYTES = 512


def encode_jpeg(rgb: np.ndarray, max_side_px: int, quality: int) -> tuple[bytes, float]:
    """(JPEG bytes, scale): ``rgb`` (H, W, 3) uint8 downsized (area interpolation) so that its
    longest side is at most ``max_side_px``; ``scale`` = new width / old width (1 = unchanged)."""
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    h, w = rgb.shape[:2]
    s = min(1.0, float(max_side_px) / max(h, w))
    if s < 1.0:
        w2, h2 = max(1, int(round(w * s))), max(1, int(round(h * s)))
        rgb = cv2.resize(rgb, (w2, h2), interpolation=cv2.INTER_AREA)
        s = w2 / w
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError("JPEG encoding failed")
    return buf.tobytes(), s


def decode_jpeg(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB of JPEG ``data``."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True, eq=False)
class FrameSnapshot:
    """The compact record of one frame (see the module docstring for frames and units).

    Attributes:
        stamp_ns: image stamp.
        reason: the step's rejection reason ('' when accepted).
        ground_jpeg: downsized camera image (JPEG).
        sat_jpeg: downsized satellite patch (JPEG), b'' when the frame had none.
        georef: :class:`~xview_localizer.tiles.patch.PatchGeoref` of the downsized patch, or None.
        prior_xy_m: (x_m, y_m) of the GNSS prior in the map frame, or None.
        prior_yaw_map_rad: prior yaw in the map frame (NaN = unknown).
        T_patch_base: (x_m, y_m, yaw_rad) of the accepted estimate in the patch frame, or None.
        dst_xy_m, src_xy_m: (K, 2) float32 kept correspondences (patch frame / base_link).
        weight: (K,) float32 confidences in [0, 1]; inlier: (K,) bool.
        n_matches, n_inliers: counts before subsampling.
        scale_known: False when ``src_xy_m`` is in relative depth units (Sim(2)).
    """

    stamp_ns: int
    reason: str
    ground_jpeg: bytes
    sat_jpeg: bytes = b""
    georef: Any = None
    prior_xy_m: Optional[tuple[float, float]] = None
    prior_yaw_map_rad: float = float("nan")
    T_patch_base: Optional[tuple[float, float, float]] = None
    dst_xy_m: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    src_xy_m: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    weight: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    inlier: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    n_matches: int = 0
    n_inliers: int = 0
    scale_known: bool = True

    @property
    def nbytes(self) -> int:
        """Bytes this snapshot holds (images, arrays, a fixed bookkeeping allowance)."""
        arrays = sum(int(a.nbytes) for a in (self.dst_xy_m, self.src_xy_m, self.weight, self.inlier))
        return len(self.ground_jpeg) + len(self.sat_jpeg) + arrays + _OVERHEAD_BYTES

    def ground_rgb(self) -> np.ndarray:
        """The downsized camera image, (h, w, 3) uint8."""
        return decode_jpeg(self.ground_jpeg)

    def sat_rgb(self) -> Optional[np.ndarray]:
        """The downsized satellite patch, (H, W, 3) uint8, or None."""
        return decode_jpeg(self.sat_jpeg) if self.sat_jpeg else None


def snapshot_from_step(stamp_ns: int, ground_rgb: np.ndarray, result: Any, ground_max_px: int = 320,
                       sat_max_px: int = 256, max_points: int = 300, jpeg_quality: int = 80) -> FrameSnapshot:
    """The :class:`FrameSnapshot` of one ``Localizer.step`` ``result`` (a StepResult) for the
    image ``ground_rgb`` (H, W, 3) uint8."""
    from ..tiles.patch import PatchGeoref

    ground_jpeg, _ = encode_jpeg(ground_rgb, ground_max_px, jpeg_quality)
    sat_jpeg, georef = b"", None
    if result.sat_rgb is not None and result.georef is not None:
        g = result.georef
        sat_jpeg, s = encode_jpeg(result.sat_rgb, sat_max_px, jpeg_quality)
        w2, h2 = max(1, int(round(g.width_px * s))), max(1, int(round(g.height_px * s)))
        georef = PatchGeoref(g.center_lat_deg, g.center_lon_deg, g.m_per_px * g.width_px / w2, w2, h2)
    prior = result.prior
    prior_xy = (float(prior.x_m), float(prior.y_m)) if prior is not None else None
    prior_yaw = float(prior.yaw_map_rad) if prior is not None and prior.yaw_map_rad is not None else math.nan
    est = result.estimate
    T = (float(est.T_patch_base.x_m), float(est.T_patch_base.y_m), float(est.T_patch_base.yaw_rad)) if est else None
    corr = result.correspondences
    kw: dict = {}
    if corr is not None and len(corr.weight):
        n = int(len(corr.weight))
        idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
        inl = np.asarray(result.inlier_mask, bool) if result.inlier_mask is not None else np.zeros(n, bool)
        kw = {"dst_xy_m": np.asarray(corr.dst_xy_m, np.float32)[idx],
              "src_xy_m": np.asarray(corr.src_xy_m, np.float32)[idx],
              "weight": np.asarray(corr.weight, np.float32)[idx], "inlier": inl[idx],
              "n_matches": n, "n_inliers": int(np.count_nonzero(inl)), "scale_known": bool(corr.scale_known)}
    reason = "" if est is not None else (result.reason or "rejected")
    return FrameSnapshot(int(stamp_ns), reason, ground_jpeg, sat_jpeg, georef, prior_xy, prior_yaw, T, **kw)


class SnapshotStore:
    """Snapshots by stamp, their total bytes bounded by ``max_bytes`` (see the module docstring).

    ``score_fn(stamps_ns (N,) int64) -> (N,) float``: how bad each frame is known to be so far
    (larger = worse, NaN = unknown), consulted only when thinning; None = no frame protected
    by score.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, keep_worst: int = 16, keep_per_reason: int = 3,
                 keep_recent: int = 8,
                 ground_max_px: int = 320, sat_max_px: int = 256, max_points: int = 300, jpeg_quality: int = 80,
                 score_fn: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> None:
        if max_bytes <= 0:
            raise ValueError(f"SnapshotStore.max_bytes must be > 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.keep_worst, self.keep_per_reason, self.keep_recent = int(keep_worst), int(keep_per_reason), int(keep_recent)
        self.ground_max_px, self.sat_max_px = int(ground_max_px), int(sat_max_px)
        self.max_points, self.jpeg_quality = int(max_points), int(jpeg_quality)
        self.score_fn = score_fn
        self._snaps: dict[int, FrameSnapshot] = {}
        self._seq: dict[int, int] = {}
        self._n_added = 0
        self._stride = 1
        self.nbytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._snaps)

    def __contains__(self, stamp_ns: int) -> bool:
        return int(stamp_ns) in self._snaps

    def get(self, stamp_ns: int) -> Optional[FrameSnapshot]:
        return self._snaps.get(int(stamp_ns))

    @property
    def stamps_ns(self) -> list[int]:
        return sorted(self._snaps)

    def add_step(self, stamp_ns: int, ground_rgb: np.ndarray, result: Any) -> FrameSnapshot:
        """Snapshot a ``Localizer.step`` result (see :func:`snapshot_from_step`) and add it."""
        snap = snapshot_from_step(stamp_ns, ground_rgb, result, self.ground_max_px, self.sat_max_px,
                                  self.max_points, self.jpeg_quality)
        self.add(snap)
        return snap

    def add(self, snap: FrameSnapshot) -> None:
        """Add (or replace) the snapshot of ``snap.stamp_ns``; thin the store when over budget."""
        old = self._snaps.pop(snap.stamp_ns, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._snaps[snap.stamp_ns] = snap
        self._seq[snap.stamp_ns] = self._n_added
        self._n_added += 1
        self.nbytes += snap.nbytes
        if self.nbytes > self.max_bytes:
            self._thin()

    def _drop(self, stamp_ns: int) -> None:
        snap = self._snaps.pop(stamp_ns)
        self._seq.pop(stamp_ns)
        self.nbytes -= snap.nbytes
        self.evicted += 1

    def _protected(self) -> list[int]:
        """Stamps kept while thinning, most important first: the worst by score, the first
        frames of each rejection reason, the most recently added ones."""
        stamps = np.array(self.stamps_ns, np.int64)
        out: list[int] = []
        if self.score_fn is not None and self.keep_worst > 0 and stamps.size:
            score = np.asarray(self.score_fn(stamps), float).reshape(-1)
            ok = np.flatnonzero(np.isfinite(score))
            out += [int(stamps[i]) for i in ok[np.argsort(-score[ok], kind="stable")][:self.keep_worst]]
        per_reason: dict[str, int] = {}
        for s in stamps:
            r = self._snaps[int(s)].reason
            if r and per_reason.get(r, 0) < self.keep_per_reason:
                per_reason[r] = per_reason.get(r, 0) + 1
                if int(s) not in out:
                    out.append(int(s))
        recent = sorted(self._seq, key=self._seq.__getitem__)[-self.keep_recent:] if self.keep_recent > 0 else []
        out += [s for s in reversed(recent) if s not in out]
        return out

    def _thin(self) -> None:
        protected = self._protected()
        keep = set(protected)
        while self.nbytes > self.max_bytes:
            pool = [s for s in self.stamps_ns if s not in keep]
            if not pool:  # the protected ones alone are too many: drop the least important
                self._drop(protected.pop())
                continue
            dropped = [s for s in pool if self._seq[s] % self._stride]
            if not dropped:  # everything is on the stride: thin twice as much
                if len(pool) == 1:
                    dropped = pool
                else:
                    self._stride *= 2
                    continue
            for s in dropped:
                self._drop(s)

    def summary(self) -> dict:
        """Counts for the report: kept, evicted, bytes, budget."""
        return {"kept": len(self), "evicted": self.evicted, "bytes": int(self.nbytes), "max_bytes": self.max_bytes}
