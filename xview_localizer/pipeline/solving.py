"""Match and solve one frame: the matcher call(s) for the prior yaw or every yaw hypothesis,
the confident-correspondence Procrustes solve, the covariance scale and floor, and the
match-level gates (too few matches, yaw ambiguity) with the thresholds they use.

Poses: ``T_patch_base`` in the patch's true-north ENU plane (x east, y north, metres, yaw CCW
from east); ``T_base_camera`` a (4, 4) matrix; covariances 3x3 over (x_m, y_m, yaw_rad).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from typing import Any, Optional

import numpy as np

from ..core import procrustes
from ..core.errors import DegenerateInputError, LocalizationRejected
from ..core.se2 import wrap_angle_rad
from ..matcher.base import Correspondences
from .config import LocalizerConfig


def floor_covariance(cov: np.ndarray, floor_xy_m2: float, floor_yaw_rad2: float) -> np.ndarray:
    """Symmetrise; clamp the x-y block's eigenvalues and the yaw variance from below (both
    only add a positive semi-definite matrix, so the result stays positive definite)."""
    c = 0.5 * (cov + cov.T)
    w, v = np.linalg.eigh(c[:2, :2])
    delta = np.maximum(w, floor_xy_m2) - w
    c[:2, :2] += (v * delta) @ v.T
    c[2, 2] = max(c[2, 2], floor_yaw_rad2)
    w3, v3 = np.linalg.eigh(c)
    if w3.min() < 1e-6:
        c = (v3 * np.maximum(w3, 1e-6)) @ v3.T
    return 0.5 * (c + c.T)


def gate_threshold(gate: Any, yaw_known: bool) -> float:
    """The vote-mass threshold of a calibrated ``evidence_gate`` dict for a frame with / without
    a prior yaw (0 = off: no gate, or no threshold for that case)."""
    if not isinstance(gate, dict):
        return 0.0
    value = gate.get("min_vote_mass" if yaw_known else "min_vote_mass_unknown_yaw")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else 0.0


#: Largest factor :func:`evidence_covariance_factor` applies (a frame with almost no vote mass
#: is gated as low_evidence anyway; the cap keeps the covariance finite and well conditioned).
MAX_EVIDENCE_COV_FACTOR = 1000.0


def _power_factor(value: Any, ref: Any, exponent: Any) -> float:
    """``(ref / value) ** exponent`` for ``value < ref`` (capped), 1 above or for bad inputs."""
    try:
        ref, exponent, value = float(ref), float(exponent), float(value)
    except (TypeError, ValueError):
        return 1.0
    if not (math.isfinite(ref) and ref > 0 and math.isfinite(exponent) and exponent > 0 and math.isfinite(value)):
        return 1.0
    if value >= ref:
        return 1.0
    return MAX_EVIDENCE_COV_FACTOR if value <= 0 else min(MAX_EVIDENCE_COV_FACTOR, (ref / value) ** exponent)


def evidence_covariance_factor(evidence: Any, model: Any) -> float:
    """Covariance inflation for a frame with little or unfamiliar pose-vote evidence (>= 1).

    ``model`` is calibrated per depth kind by ``xview-localizer calibrate-covariance``
    (:mod:`~xview_localizer.evaluation.calibration`); ``evidence`` the frame's ``{"vote_mass":
    m, "vote_peak": q, ...}``. The factor is the product, capped at
    :data:`MAX_EVIDENCE_COV_FACTOR`, of

    * ``(m_ref / m) ** p`` for ``m < m_ref`` (``"vote_mass_ref"``, ``"exponent"``): a flat vote,
      other places fit almost as well (:func:`~xview_localizer.evaluation.calibration.
      fit_evidence_inflation`); ``m`` is ``vote_mass_posterior`` when the vote had a position
      prior (the ambiguity left once the GNSS fix has ruled out far places), else ``vote_mass``;
    * ``(q_ref / q) ** r`` for ``q < q_ref`` (``"vote_peak_ref"``, ``"peak_exponent"``): the
      best pose's descriptors match worse than on nearly all calibration frames, the sign of a
      look the matcher was not trained on (:func:`~xview_localizer.evaluation.calibration.
      fit_peak_inflation`).

    The solver's covariance only sees how well the chosen correspondences agree, while the NEES
    of both kinds of frame is many times higher (docs/styles.md). A term whose keys or input are
    missing or invalid contributes 1.
    """
    if not isinstance(model, dict) or not isinstance(evidence, dict):
        return 1.0
    mass = evidence.get("vote_mass_posterior", evidence.get("vote_mass"))
    f = _power_factor(mass, model.get("vote_mass_ref"), model.get("exponent"))
    f *= _power_factor(evidence.get("vote_peak"), model.get("vote_peak_ref"), model.get("peak_exponent"))
    return min(MAX_EVIDENCE_COV_FACTOR, f)


def min_weight_for(matcher: Any, cfg: LocalizerConfig) -> float:
    """The confidence threshold for ``matcher``'s weights: ``cfg.sparse_min_weight`` for a
    matcher whose weights are keypoint weights (``keypoint_weights = True``, the sparse-depth
    matcher), else ``cfg.min_weight``."""
    return cfg.sparse_min_weight if getattr(matcher, "keypoint_weights", False) else cfg.min_weight


def solve_confident(corr: Correspondences, cfg: LocalizerConfig,
                    procrustes_config: procrustes.ProcrustesConfig,
                    min_weight: float | None = None) -> tuple[np.ndarray, procrustes.ProcrustesResult]:
    """The localizer's solve of one matcher output: keep the correspondences with weight >=
    ``min_weight`` (default ``cfg.min_weight``; see :func:`min_weight_for`), need ``min_confident_matches`` of them and as many inliers after the robust
    Procrustes. Returns (confident mask over ``corr``, solver result; poses of camera-centred points
    when ``corr.scale_known`` is False). Also used by :mod:`xview_localizer.evaluation.calibration`.

    Raises:
        LocalizationRejected: "too_few_matches" or "solver_degenerate".
    """
    min_w = cfg.min_weight if min_weight is None else float(min_weight)
    confident = corr.weight >= min_w
    n_confident = int(np.count_nonzero(confident))
    if n_confident < cfg.min_confident_matches:
        raise LocalizationRejected("too_few_matches", f"{n_confident} confident matches (weight >= "
                                                      f"{min_w}), need {cfg.min_confident_matches}")
    try:
        sol = procrustes.solve(corr.select(confident), procrustes_config)
    except DegenerateInputError as exc:
        raise LocalizationRejected("solver_degenerate", str(exc)) from exc
    if sol.n_inliers < cfg.min_confident_matches:
        raise LocalizationRejected("too_few_matches", f"{sol.n_inliers} inliers after robust fitting, "
                                                      f"need {cfg.min_confident_matches}")
    return confident, sol


def accepts_depth(matcher: Any) -> bool:
    """Whether ``matcher.match`` takes ``depth_m`` / ``depth_kind`` keywords: an
    ``accepts_depth`` attribute, else its signature (test doubles without either get none)."""
    flag = getattr(matcher, "accepts_depth", None)
    if flag is not None:
        return bool(flag)
    try:
        return "depth_m" in inspect.signature(matcher.match).parameters
    except (TypeError, ValueError):
        return False


def solution_from_camera_centred(sol: procrustes.ProcrustesResult, T_base_camera: np.ndarray) -> procrustes.ProcrustesResult:
    """A Sim(2) solution on camera-centred relative-depth points -> the result with
    ``T_patch_base`` of base_link (``lifting.T_patch_base_from_camera_centred``) and its
    covariance propagated through ``(x, y, yaw) -> (x - R(yaw) c, yaw)``. The returned result's
    ``scale`` is still the depth scale, so its ``transform`` no longer maps ``src`` to ``dst``."""
    from ..core.camera import camera_xy_base_m
    from ..core.lifting import T_patch_base_from_camera_centred

    c = camera_xy_base_m(T_base_camera)
    T_patch_base, _ = T_patch_base_from_camera_centred(sol.transform, c)
    cy, sy = math.cos(sol.T_patch_base.yaw_rad), math.sin(sol.T_patch_base.yaw_rad)
    J = np.eye(3)
    J[0, 2] = sy * c[0] + cy * c[1]
    J[1, 2] = -(cy * c[0] - sy * c[1])
    cov = J @ np.asarray(sol.cov_xyyaw, float) @ J.T
    return dataclasses.replace(sol, T_patch_base=T_patch_base, cov_xyyaw=0.5 * (cov + cov.T))


def yaw_tries(matcher: Any, prior_yaw_rad: Optional[float], cfg: LocalizerConfig) -> list[Optional[float]]:
    """The prior yaws the matcher is run with for one frame: the prior; without one ``[None]`` for a
    matcher that searches every yaw itself (``needs_yaw_prior = False``, sparse-depth: one run), else
    ``cfg.unknown_yaw_hypotheses`` evenly around the circle."""
    if prior_yaw_rad is not None:
        return [prior_yaw_rad]
    if not getattr(matcher, "needs_yaw_prior", True):
        return [None]
    n_hyp = cfg.unknown_yaw_hypotheses
    return [wrap_angle_rad(2.0 * math.pi * k / n_hyp) for k in range(n_hyp)]


def match_and_solve(matcher: Any, image_rgb: np.ndarray, camera: Any, T_base_camera: np.ndarray, sat_rgb: np.ndarray,
                    georef: Any, prior_yaw_rad: Optional[float], depth_kw: dict, cfg: LocalizerConfig,
                    procrustes_config: procrustes.ProcrustesConfig,
                    timings: Optional[dict] = None) -> tuple[Correspondences, np.ndarray, Any, float, Optional[dict]]:
    """Matcher + Procrustes for one prior yaw (None: unknown, only for matchers with
    ``needs_yaw_prior = False``; ``depth_kw``: the keywords the matcher gets besides the common
    arguments - depth for a matcher that takes depth, ``sat_features`` of an area window - else
    empty): (correspondences, inlier mask over them, solver result, support = summed weight
    of the inliers, the matcher's vote evidence or None). Stage times accumulate in ``timings``.

    Raises:
        LocalizationRejected: "matcher_failed", or :func:`solve_confident`'s reasons.
    """
    timings = {} if timings is None else timings
    t0 = time.perf_counter()
    corr = None
    try:
        corr = matcher.match(image_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad, **depth_kw)
    except Exception as exc:  # noqa: BLE001 - bad input (XViewError) or a torch failure (OOM): no crash
        raise LocalizationRejected("matcher_failed", f"{type(exc).__name__}: {exc}") from exc
    finally:
        _add_matcher_timings(matcher, timings, time.perf_counter() - t0, stages=corr is not None)
    return _solve_matched(matcher, corr, T_base_camera, cfg, procrustes_config, timings)


def _add_matcher_timings(matcher: Any, timings: dict, total_s: float, stages: bool = True) -> None:
    """Accumulate a matcher call: ``matcher`` (its wall time) and, after a call that returned
    (``stages``), the matcher's own stages (``last_timings_s``: preprocess, sat_features,
    ground_encoder, matching) when it has them."""
    timings["matcher"] = timings.get("matcher", 0.0) + total_s
    stages = getattr(matcher, "last_timings_s", None) if stages else None
    if isinstance(stages, dict):
        for name, seconds in stages.items():
            timings[name] = timings.get(name, 0.0) + float(seconds)


def _solve_matched(matcher: Any, corr: Any, T_base_camera: np.ndarray, cfg: LocalizerConfig,
                   procrustes_config: procrustes.ProcrustesConfig,
                   timings: dict) -> tuple[Correspondences, np.ndarray, Any, float, Optional[dict]]:
    """The solver half of :func:`match_and_solve` for correspondences already matched."""
    if not isinstance(corr, Correspondences):
        raise LocalizationRejected("matcher_failed", f"matcher returned {type(corr).__name__}, not Correspondences")
    t0 = time.perf_counter()
    try:
        confident, sol = solve_confident(corr, cfg, procrustes_config, min_weight_for(matcher, cfg))
        if not corr.scale_known:
            sol = solution_from_camera_centred(sol, T_base_camera)
        inlier_mask = np.zeros(len(corr), dtype=bool)
        idx = np.flatnonzero(confident)[sol.inlier_mask]
        inlier_mask[idx] = True
        evidence = getattr(matcher, "last_evidence", None)
        return corr, inlier_mask, sol, float(corr.weight[idx].sum()), dict(evidence) if evidence else None
    finally:
        timings["solver"] = timings.get("solver", 0.0) + time.perf_counter() - t0


def match_and_solve_all(matcher: Any, image_rgb: np.ndarray, camera: Any, T_base_camera: np.ndarray,
                        sat_rgb: np.ndarray, georef: Any, yaws: list[Optional[float]], match_kw: dict,
                        cfg: LocalizerConfig, procrustes_config: procrustes.ProcrustesConfig,
                        timings: Optional[dict] = None) -> tuple[list[tuple], Optional[LocalizationRejected]]:
    """:func:`match_and_solve` for every prior yaw of :func:`yaw_tries`: ``(candidates, the first
    rejection or None)``. Several yaws and a matcher with ``match_hypotheses`` (dense-flow) run
    in ONE batched forward pass (encoders once, the rest batched over the hypotheses) with the
    same results as one call per yaw; otherwise one call per yaw."""
    timings = {} if timings is None else timings
    cands: list[tuple] = []
    first: Optional[LocalizationRejected] = None
    batched = getattr(matcher, "match_hypotheses", None)
    if len(yaws) > 1 and callable(batched) and all(y is not None for y in yaws):
        t0 = time.perf_counter()
        corrs = None
        try:
            corrs = batched(image_rgb, camera, T_base_camera, sat_rgb, georef, yaws, **match_kw)
        except Exception as exc:  # noqa: BLE001 - as in match_and_solve
            return [], LocalizationRejected("matcher_failed", f"{type(exc).__name__}: {exc}")
        finally:
            _add_matcher_timings(matcher, timings, time.perf_counter() - t0, stages=corrs is not None)
        for corr in corrs:
            try:
                cands.append(_solve_matched(matcher, corr, T_base_camera, cfg, procrustes_config, timings))
            except LocalizationRejected as rej:
                first = first or rej
        return cands, first
    for yaw in yaws:
        try:
            cands.append(match_and_solve(matcher, image_rgb, camera, T_base_camera, sat_rgb, georef, yaw, match_kw,
                                         cfg, procrustes_config, timings))
        except LocalizationRejected as rej:
            first = first or rej
    return cands, first


def check_yaw_ambiguity(best: tuple, cands: list[tuple], cfg: LocalizerConfig) -> None:
    """Without a prior yaw, a runner-up solution that disagrees with the best one (yaw or
    position) but has nearly its support makes the frame ambiguous: no pose beats a pose that may
    be turned around. ``best`` and ``cands``: :func:`match_and_solve` results.

    Raises:
        LocalizationRejected: "yaw_ambiguous".
    """
    T_best = best[2].T_patch_base
    for c in cands:
        if c is best:
            continue
        T = c[2].T_patch_base
        dyaw = abs(wrap_angle_rad(T.yaw_rad - T_best.yaw_rad))
        dpos = math.hypot(T.x_m - T_best.x_m, T.y_m - T_best.y_m)
        disagrees = dyaw > cfg.max_prior_yaw_deviation_rad or dpos > cfg.max_jump_m
        if disagrees and best[3] < cfg.unknown_yaw_min_support_ratio * c[3]:
            raise LocalizationRejected(
                "yaw_ambiguous",
                f"no prior yaw and two solutions {math.degrees(dyaw):.0f} deg / {dpos:.1f} m apart have "
                f"support {best[3]:.1f} vs {c[3]:.1f} (need a ratio of "
                f"{cfg.unknown_yaw_min_support_ratio:g})")


def matcher_covariance_scale(matcher: Any, depth_kind: str = "none", evidence: Any = None) -> float:
    """The matcher's calibrated covariance factor (``covariance_scale`` of its checkpoint, see
    :mod:`xview_localizer.evaluation.calibration`; a matcher with ``covariance_scale_for`` (sparse-depth)
    gives the one calibrated for the frame's depth kind, "none" = flat ground); 1.0 for matchers
    without a valid one. With the frame's pose-vote ``evidence`` and a matcher with
    ``covariance_evidence_for`` (a calibrated model for that depth kind), times
    :func:`evidence_covariance_factor`."""
    scale_for = getattr(matcher, "covariance_scale_for", None)
    scale = scale_for(depth_kind) if callable(scale_for) else getattr(matcher, "covariance_scale", 1.0)
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        return 1.0
    scale = scale if math.isfinite(scale) and scale > 0.0 else 1.0
    model_for = getattr(matcher, "covariance_evidence_for", None)
    if evidence is not None and callable(model_for):
        scale *= evidence_covariance_factor(evidence, model_for(depth_kind))
    return scale

