"""Covariance calibration of a matcher checkpoint against ground truth (ROS-free).

The Procrustes covariance (:mod:`xview_localizer.core.procrustes`) treats every correspondence as an
independent measurement. A dense-flow matcher's ~1000 flow vectors are not independent (the GRU
smooths neighbouring cells, the encoders share receptive fields), so the raw covariance is far
too small: a robot_localization filter would trust the pose too much, and the localizer's GNSS
gate would reject good frames. The fix is one scale factor per checkpoint, measured here:

* run the matcher on held-out pairs exactly as the localizer does (same ``min_weight``,
  ``min_confident_matches`` and solver settings) and keep the frames it would solve;
* NEES of each frame: ``e^T C^-1 e`` with ``e = (dx_m, dy_m, dyaw_rad)`` the error of the
  solved ``T_patch_base`` and ``C`` the solver's 3x3 covariance (patch frame);
* ``covariance_scale = median(NEES) / median(chi2_3)`` (2.366): after scaling the covariance by it
  the median NEES is that of a consistent 3-dof estimator. The median, not the mean, so that a
  few gross failures (which the localizer's gates exist for) do not dominate.

For a matcher with a pose vote (sparse-depth) the NEES also grows as the vote mass near the
chosen pose falls (docs/styles.md), which one factor cannot follow: :func:`fit_evidence_inflation`
fits an inflation ``(m_ref / vote_mass) ** p`` below the median vote mass ``m_ref`` so that the
low-mass half of the frames is as consistent as the high-mass half, and the scale is then taken
from the inflated NEES (``covariance_evidence_by_depth`` in the checkpoint, applied by
:func:`~xview_localizer.pipeline.solving.matcher_covariance_scale`).

The factor is stored in the checkpoint (``"covariance_scale"``); :class:`~xview_localizer.
matcher.inference.Matcher` exposes it and the localizer multiplies the solver covariance by it
(before the user's ``cov_inflation``). CLI: ``xview-localizer calibrate-covariance``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable

import numpy as np
import torch

from ..core import procrustes
from ..core.errors import LocalizationRejected, XViewError
from ..core.se2 import wrap_angle_rad
from ..pipeline.config import LocalizerConfig
from ..pipeline.localizer import min_weight_for, solution_from_camera_centred, solve_confident
from ..pipeline.solving import MAX_EVIDENCE_COV_FACTOR, evidence_covariance_factor
from ..train.sparse_data import depth_for_kind

__all__ = ["CHI2_3_MEDIAN", "CHI2_3_P95", "FrameNees", "NeesSummary", "frame_nees", "summarize_nees",
           "collect_nees", "pair_depth_kwargs", "fit_evidence_inflation", "inflate_frames", "shift_record",
           "fit_peak_inflation", "DEFAULT_SHIFT"]

#: Median and 95 % quantile of the chi-square distribution with 3 degrees of freedom.
CHI2_3_MEDIAN = 2.365974
CHI2_3_P95 = 7.814728


@dataclass(frozen=True)
class FrameNees:
    """One solved frame: its errors and NEES under the raw solver covariance."""

    sample_id: str
    err_xy_m: float
    err_yaw_deg: float
    nees_raw: float
    #: pose-vote mass of the frame (sparse-depth ``last_evidence``), NaN without a vote
    vote_mass: float = math.nan
    #: pose-vote peak score of the frame (``last_evidence``), NaN without a vote
    vote_peak: float = math.nan


@dataclass(frozen=True)
class NeesSummary:
    """Calibration result over the solved frames.

    Attributes:
        n_frames: frames tried; n_solved: frames the localizer's solver settings accepted.
        median_nees_raw, mean_nees_raw: of the raw solver covariance.
        covariance_scale: factor for the covariance (median NEES / 2.366), >= ``min_scale``.
        frac_within_p95_raw, frac_within_p95_scaled: share of solved frames with NEES below the
            chi-square 95 % bound (7.81) before / after scaling (0.95 for a consistent estimator).
        median_nees_scaled: after scaling (2.366 by construction unless the scale was clamped).
        median_err_xy_m, median_err_yaw_deg: of the solved frames.
    """

    n_frames: int
    n_solved: int
    median_nees_raw: float
    mean_nees_raw: float
    covariance_scale: float
    frac_within_p95_raw: float
    frac_within_p95_scaled: float
    median_nees_scaled: float
    median_err_xy_m: float
    median_err_yaw_deg: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def frame_nees(T_est: Any, T_true: Any, cov_xyyaw: np.ndarray) -> float:
    """NEES of one pose: ``e^T C^-1 e`` with ``e = (dx_m, dy_m, wrapped dyaw_rad)``.

    ``T_est``, ``T_true``: objects with ``x_m``, ``y_m``, ``yaw_rad``; ``cov_xyyaw`` (3, 3).
    Returns inf when the covariance is singular (never NaN).
    """
    e = np.array([T_est.x_m - T_true.x_m, T_est.y_m - T_true.y_m,
                  float(wrap_angle_rad(T_est.yaw_rad - T_true.yaw_rad))])
    c = np.asarray(cov_xyyaw, dtype=float)
    try:
        v = float(e @ np.linalg.solve(c, e))
    except np.linalg.LinAlgError:
        return math.inf
    return v if math.isfinite(v) and v >= 0.0 else math.inf


def summarize_nees(frames: list[FrameNees], n_frames: int, min_scale: float = 1.0) -> NeesSummary:
    """The calibration factor and consistency figures from solved frames.

    Raises:
        XViewError: no frame was solved (nothing to calibrate on).
    """
    if not frames:
        raise XViewError(f"covariance calibration: none of {n_frames} frames was solved; nothing to calibrate")
    nees = np.array([f.nees_raw for f in frames])
    med = float(np.median(nees))
    scale = max(float(min_scale), med / CHI2_3_MEDIAN) if math.isfinite(med) else float("inf")
    if not math.isfinite(scale):
        raise XViewError("covariance calibration: the median NEES is infinite (singular covariances)")
    scaled = nees / scale
    return NeesSummary(
        n_frames=int(n_frames),
        n_solved=len(frames),
        median_nees_raw=med,
        mean_nees_raw=float(np.mean(nees[np.isfinite(nees)])) if np.isfinite(nees).any() else math.inf,
        covariance_scale=scale,
        frac_within_p95_raw=float(np.mean(nees <= CHI2_3_P95)),
        frac_within_p95_scaled=float(np.mean(scaled <= CHI2_3_P95)),
        median_nees_scaled=float(np.median(scaled)),
        median_err_xy_m=float(np.median([f.err_xy_m for f in frames])),
        median_err_yaw_deg=float(np.median([f.err_yaw_deg for f in frames])),
    )


def pair_depth_kwargs(matcher: Any, rec: Any, depth_kind: str) -> dict:
    """The depth keywords a pair's matcher call gets: none for a matcher without depth; else the
    record's metric ``depth_m`` as ``depth_kind`` ("inverse": inverted with the training conversion
    :func:`~xview_localizer.train.sparse_data.depth_for_kind`, scale 1; "none": flat ground)."""
    if not getattr(matcher, "accepts_depth", False):
        return {}
    depth = getattr(rec, "depth_m", None)
    if depth_kind == "inverse" and depth is not None:  # the record's metric z, inverted (scale 1)
        z = torch.from_numpy(np.asarray(depth, dtype=np.float32))[None]
        depth = depth_for_kind(z, torch.ones(1), depth_kind)[0].numpy()
    return {"depth_m": None if depth_kind == "none" else depth, "depth_kind": depth_kind}


def collect_nees(matcher: Any, samples: Iterable[Any], config: LocalizerConfig | None = None,
                 procrustes_config: procrustes.ProcrustesConfig | None = None,
                 depth_kind: str | None = None,
                 transform: Callable[[Any], Any] | None = None) -> tuple[list[FrameNees], int]:
    """Match and solve each pair like :class:`~xview_localizer.pipeline.localizer.Localizer` does.

    Args:
        matcher: an object with ``match(ground_rgb, camera, T_base_camera, sat_rgb, georef,
            prior_yaw_rad) -> Correspondences`` (:class:`~xview_localizer.matcher.inference.Matcher`).
        samples: :class:`~xview_localizer.train.pairs.PairSample` records (ground truth in
            ``T_patch_base``).
        config: the localizer settings used for the confident-match threshold and count.
        depth_kind: for a matcher that accepts depth (sparse-depth): "metric" (the record's
            metric ``depth_m``), "relative" (the same map, scale unknown to the matcher),
            "inverse" (1 / that map), "none" (flat ground), or None = ``config.depth_kind``.
            Relative kinds are turned into base_link poses as the localizer does.
        transform: applied to each record before matching (:func:`shift_record`: the
            calibration pairs with a photometric shift).
    Returns:
        (solved frames, number of frames tried). Frames the localizer would reject for too few
        matches or a degenerate solve are left out.
    """
    cfg = config or LocalizerConfig()
    pcfg = procrustes_config or procrustes.ProcrustesConfig()
    frames: list[FrameNees] = []
    n = 0
    kind = depth_kind or cfg.depth_kind
    for rec in samples:
        n += 1
        if transform is not None:
            rec = transform(rec)
        depth_kw = pair_depth_kwargs(matcher, rec, kind)
        corr = matcher.match(rec.ground_rgb, rec.camera, rec.T_base_camera, rec.sat_rgb, rec.georef,
                             float(rec.prior_yaw_rad), **depth_kw)
        try:
            _, sol = solve_confident(corr, cfg, pcfg, min_weight_for(matcher, cfg))
        except LocalizationRejected:
            continue
        if not corr.scale_known:
            sol = solution_from_camera_centred(sol, rec.T_base_camera)
        T_true = rec.T_patch_base_se2
        T_est = sol.T_patch_base
        frames.append(FrameNees(
            sample_id=str(rec.id),
            err_xy_m=math.hypot(T_est.x_m - T_true.x_m, T_est.y_m - T_true.y_m),
            err_yaw_deg=abs(math.degrees(float(wrap_angle_rad(T_est.yaw_rad - T_true.yaw_rad)))),
            nees_raw=frame_nees(T_est, T_true, sol.cov_xyyaw),
            vote_mass=_evidence_value(getattr(matcher, "last_evidence", None), "vote_mass"),
            vote_peak=_evidence_value(getattr(matcher, "last_evidence", None), "vote_peak"),
        ))
    return frames, n


def _evidence_value(evidence: Any, key: str) -> float:
    try:
        value = float(evidence[key])
    except (TypeError, KeyError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


#: Exponents :func:`fit_evidence_inflation` tries.
EVIDENCE_EXPONENTS = tuple(np.round(np.arange(0.25, 8.01, 0.25), 2))
#: Fewest frames with a vote mass (and in each half) for a fit.
MIN_EVIDENCE_FRAMES = 20


def fit_evidence_inflation(frames: list[FrameNees]) -> dict | None:
    """Fit the low-vote-mass covariance inflation ``(m_ref / m) ** p`` (``m < m_ref``;
    :func:`~xview_localizer.pipeline.solving.evidence_covariance_factor`).

    ``m_ref`` is the median vote mass of the solved frames; ``p`` the exponent (from
    :data:`EVIDENCE_EXPONENTS`) after which the median NEES of the frames below ``m_ref`` is
    closest (in log) to that of the frames above it, which the inflation leaves alone. None
    when fewer than :data:`MIN_EVIDENCE_FRAMES` frames carry a vote mass, or when the low half is
    not less consistent than the high half (no inflation needed).

    Returns:
        ``{"vote_mass_ref": m_ref, "exponent": p, "median_nees_low_raw": ..,
        "median_nees_low": .., "median_nees_high": .., "n_low": .., "n_high": ..}`` (NEES of the
        raw solver covariance; only the first two keys are used at run time).
    """
    pts = [(f.vote_mass, f.nees_raw) for f in frames if math.isfinite(f.vote_mass) and f.vote_mass > 0
           and math.isfinite(f.nees_raw)]
    if len(pts) < MIN_EVIDENCE_FRAMES:
        return None
    mass = np.array([m for m, _ in pts])
    nees = np.array([e for _, e in pts])
    m_ref = float(np.median(mass))
    low = mass < m_ref
    fit = _fit_split_exponent(nees, low, m_ref / np.maximum(mass, 1e-12), EVIDENCE_EXPONENTS)
    if fit is None:
        return None
    best_p, med_low_raw, best_med, med_high = fit
    return {"vote_mass_ref": m_ref, "exponent": best_p, "median_nees_low_raw": med_low_raw,
            "median_nees_low": best_med, "median_nees_high": med_high,
            "n_low": int(low.sum()), "n_high": int((~low).sum())}


def _fit_split_exponent(nees: np.ndarray, low: np.ndarray, ratio: np.ndarray,
                        exponents: Iterable[float]) -> tuple[float, float, float, float] | None:
    """The exponent ``p`` (of ``exponents``) after which the median of ``nees / ratio ** p``
    (capped at MAX_EVIDENCE_COV_FACTOR) over the ``low`` frames is closest in log to the median
    NEES of the others: ``(p, low median before, low median after, others' median)``. None when
    either side has fewer than half of MIN_EVIDENCE_FRAMES frames or the low side is not less
    consistent."""
    if int(low.sum()) < MIN_EVIDENCE_FRAMES // 2 or int((~low).sum()) < MIN_EVIDENCE_FRAMES // 2:
        return None
    med_high = float(np.median(nees[~low]))
    med_low_raw = float(np.median(nees[low]))
    if not (med_high > 0 and med_low_raw > med_high):
        return None
    best, best_cost, best_med = None, math.inf, med_low_raw
    for p in exponents:
        med_low = float(np.median(nees[low] / np.minimum(ratio[low] ** float(p), MAX_EVIDENCE_COV_FACTOR)))
        cost = abs(math.log(med_low / med_high)) if med_low > 0 else math.inf
        if cost < best_cost - 1e-12:
            best, best_cost, best_med = float(p), cost, med_low
    return None if best is None else (best, med_low_raw, best_med, med_high)


def inflate_frames(frames: list[FrameNees], model: dict | None) -> list[FrameNees]:
    """The frames with ``nees_raw`` divided by the evidence inflation ``model`` gives each (the
    NEES under the inflated raw covariance); unchanged for ``model`` None."""
    if not model:
        return list(frames)
    return [replace(f, nees_raw=f.nees_raw / evidence_covariance_factor(
        {"vote_mass": f.vote_mass, "vote_peak": f.vote_peak}, model)) for f in frames]


#: The photometric shift :func:`shift_record` applies by default: every colour transform of the
#: training augmentation at full probability and more than training strength, hue rotated up
#: to 120 deg; independently drawn for the ground image and the aerial patch. The calibration
#: frames' vote peak falls like that of unseen looks (docs/styles.md).
DEFAULT_SHIFT = {"p_colour": 1.0, "saturation": 0.6, "p_hue": 1.0, "hue_max_deg": 120.0, "p_gamma": 0.8,
                 "p_noise": 0.5, "p_blur": 0.5}
#: Quantile of the unshifted calibration frames' vote peaks below which the peak inflation acts.
PEAK_REF_QUANTILE = 0.10
#: Exponents :func:`fit_peak_inflation` tries.
PEAK_EXPONENTS = tuple(np.round(np.arange(0.5, 16.01, 0.5), 2))


def shift_record(rec: Any, shift: Any, seed: int = 0) -> Any:
    """``rec`` (a :class:`~xview_localizer.train.pairs.PairSample`) with its ground image and
    aerial patch photometrically shifted by ``shift`` (a :class:`~xview_localizer.train.augment.
    PhotometricAugment`), each with its own generator seeded from ``(seed, rec.id)``:
    deterministic, geometry untouched."""
    from ..train.augment import augment_images

    key = int(hashlib.sha256(f"{seed}/{rec.id}".encode()).hexdigest()[:8], 16)

    def one(img: np.ndarray, view: int) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0
        out = augment_images(t, shift, torch.Generator().manual_seed(key * 2 + view))
        return (out[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()

    return replace(rec, ground_rgb=one(rec.ground_rgb, 0), sat_rgb=one(rec.sat_rgb, 1))


def fit_peak_inflation(frames: list[FrameNees], shifted: list[FrameNees], model: dict | None = None,
                       min_vote_mass: float = 0.0) -> dict | None:
    """Fit the low-vote-peak covariance inflation ``(q_ref / q) ** r`` (``q < q_ref``;
    :func:`~xview_localizer.pipeline.solving.evidence_covariance_factor`).

    An unseen look makes every descriptor match worse, so the vote's peak score ``q`` falls
    for good and bad frames alike, while the NEES of those frames rises many times (the
    held-out styles, docs/styles.md). The calibration pairs in the training styles barely show
    it, so the fit also uses them photometrically shifted (``shifted``, :func:`shift_record`):
    ``q_ref`` is the :data:`PEAK_REF_QUANTILE` quantile of the unshifted frames' peaks (so it
    leaves ~90 % of in-distribution frames alone), ``r`` (from :data:`PEAK_EXPONENTS`) the
    exponent after which the median NEES of all frames below ``q_ref`` is closest (in log) to
    that of the frames above it. Only frames the low-evidence gate passes
    (``vote_mass >= min_vote_mass``) count: the others are never published. ``model`` is the
    vote-mass inflation already fitted (applied first), or None.

    Returns:
        ``{"vote_peak_ref": q_ref, "peak_exponent": r, "median_nees_low_raw": ..,
        "median_nees_low": .., "median_nees_high": .., "n_low": .., "n_low_shifted": ..,
        "n_high": ..}`` (only the first two keys are used at run time), or None when fewer than
        :data:`MIN_EVIDENCE_FRAMES` unshifted frames carry a peak, either side has fewer than
        half that many frames, or the low side is not less consistent.
    """
    def usable(fs: list[FrameNees]) -> list[FrameNees]:
        return [f for f in fs if math.isfinite(f.vote_peak) and math.isfinite(f.nees_raw)
                and not (math.isfinite(f.vote_mass) and f.vote_mass < min_vote_mass)]

    clean, shift = usable(frames), usable(shifted)
    if len(clean) < MIN_EVIDENCE_FRAMES:
        return None
    q_ref = float(np.quantile([f.vote_peak for f in clean], PEAK_REF_QUANTILE))
    both = inflate_frames(clean + shift, model)
    peak = np.array([f.vote_peak for f in both])
    nees = np.array([f.nees_raw for f in both])
    low = peak < q_ref
    fit = _fit_split_exponent(nees, low, q_ref / np.maximum(peak, 1e-6), PEAK_EXPONENTS)
    if fit is None:
        return None
    best_r, med_low_raw, best_med, med_high = fit
    n_shift_low = int(sum(1 for f in shift if f.vote_peak < q_ref))
    return {"vote_peak_ref": q_ref, "peak_exponent": best_r, "median_nees_low_raw": med_low_raw,
            "median_nees_low": best_med, "median_nees_high": med_high, "n_low": int(low.sum()),
            "n_low_shifted": n_shift_low, "n_high": int((~low).sum())}
