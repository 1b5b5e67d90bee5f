"""Confidence-weighted 2-D Procrustes: rigid SE(2) and scale-aware Sim(2) (Umeyama), robust
IRLS reweighting, and a calibrated 3x3 covariance of (x, y, yaw).

Problem
-------
Given correspondences ``src_xy_m (N, 2)`` in ``base_link`` (x forward, y left) and
``dst_xy_m (N, 2)`` in the patch frame (ENU, x east, y north, origin at the prior) with
confidences ``weight (N,) >= 0``, find ``T_patch_base`` minimising

    sum_i w_i * || dst_i - T_patch_base.apply(src_i) ||^2

where ``T_patch_base`` is an :class:`~xview_localizer.core.se2.SE2` (metric ``src``) or a
:class:`~xview_localizer.core.se2.Sim2` (``src`` from relative depth: ``dst = s R src + t``).
``(x_m, y_m)`` of the result is the position of ``base_link``'s origin in the patch frame and
``yaw_rad`` its heading (REP-103: 0 = east, CCW positive, wrapped to [-pi, pi)).

Three layers
------------
* :func:`weighted_procrustes` - one weighted closed-form solve (numpy; SVD with the
  determinant sign fixed, so never a reflection). Validates and raises.
* :func:`solve` / :func:`solve_arrays` - what the node calls: IRLS with a Huber or Cauchy
  kernel (residual scale from the median absolute residual, floored), a final least-squares
  refit on the inliers, and the covariance. Returns a :class:`ProcrustesResult`.
* :func:`procrustes_torch` / :func:`robust_procrustes_torch` - the batched, differentiable
  version for training (``(B, N, 2), (B, N, 2), (B, N)`` -> ``(B,)`` each). These never raise
  on degenerate batches (training must not stop): they are made numerically safe instead
  (see their docstrings). They do validate shapes.

Covariance
----------
``cov_xyyaw`` is the 3x3 covariance of ``(x_m, y_m, yaw_rad)`` of ``T_patch_base`` in the
patch frame: ``sigma^2 * (n_eff * J^T W J / sum(w))^-1`` (Gauss-Newton information; for Sim(2)
the scale is a fourth parameter and is marginalised out). Weights are treated as *relative*
confidences: multiplying them all by a constant changes nothing. ``n_eff = (sum w)^2 / sum w^2``
(Kish's effective sample size) makes the translation block exactly the variance of a weighted
mean under equal per-point noise. ``sigma^2`` is the weighted residual variance per axis with a
degrees-of-freedom correction (``sum w r^2 / (2 sum w) * n_eff / (n_eff - p/2)``, i.e.
``sum r^2 / (2N - p)`` for equal weights, ``p`` = 3 or 4 parameters), floored at
``ProcrustesConfig.cov_sigma_floor_m``. The result is symmetric, positive definite, and its
eigenvalues (hence diagonal) are >= ``ProcrustesConfig.cov_min_eigenvalue`` (1e-6).

With a robust kernel the covariance is computed for the final least-squares refit on the
inliers (residual <= ``inlier_threshold_sigmas`` x robust scale), not from the IRLS weights:
the kernel weights shrink large inlier residuals, which would bias ``sigma`` low and make the
covariance over-confident. Calibration (test/test_procrustes.py): mean NEES of (x, y, yaw) ~ 3
for equal weights, for heuristic unequal weights with equal noise, and for Sim(2); if the
weights are true inverse variances the covariance is conservative by
``mean(w^2) / mean(w)^2`` (NEES ~ 2.5 for weights uniform in [0.1, 1]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .correspondences import Correspondences
from .errors import ConfigError, DegenerateInputError, GeometryError
from .se2 import SE2, Sim2

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "KERNELS",
    "ProcrustesConfig",
    "ProcrustesResult",
    "TorchPose",
    "covariance_xyyaw",
    "kernel_weights",
    "procrustes_torch",
    "robust_procrustes_torch",
    "robust_residual_scale_m",
    "solve",
    "solve_arrays",
    "weighted_procrustes",
]

#: Robust kernels for IRLS. "none" = plain weighted least squares.
KERNELS = ("none", "huber", "cauchy")
#: Default tuning constants (95 % Gaussian efficiency in 1-D), in units of the residual scale.
DEFAULT_TUNING = {"none": 1.0, "huber": 1.345, "cauchy": 2.3849}
#: median(|r|) = sigma * sqrt(2 ln 2) for a 2-D isotropic Gaussian residual (Rayleigh median).
_RAYLEIGH_MEDIAN = math.sqrt(2.0 * math.log(2.0))


# --------------------------------------------------------------------------------------
# Config and result
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcrustesConfig:
    """Solver settings (all validated; bad values raise :class:`ConfigError`).

    Attributes:
        kernel: robust kernel for IRLS: "cauchy" (default, redescending, survives gross
            outliers), "huber", or "none" (plain weighted least squares, no IRLS).
        irls_iterations: maximum IRLS iterations (>= 1; stops early when converged).
        kernel_tuning: kernel constant c in units of the residual scale; ``None`` uses
            :data:`DEFAULT_TUNING` (Huber 1.345, Cauchy 2.3849).
        residual_scale_floor_m: floor of the robust residual scale (metres, per axis) used by
            the kernel, so noise-free data does not make every point an outlier.
        inlier_threshold_sigmas: after IRLS, points with residual <= this * robust scale are
            inliers; the final pose and covariance are a weighted least-squares refit on them.
        refit_inliers: do that final refit (True) or return the last IRLS iterate (False).
        cov_sigma_floor_m: floor on the per-axis residual sigma used for the covariance.
        cov_min_eigenvalue: eigenvalue floor of the returned covariance (m^2 / rad^2).
        min_effective_points: minimum number of effectively weighted points, i.e. with weight
            > ``negligible_weight_ratio`` x the largest weight (>= 2; 3 by default).
        negligible_weight_ratio: weights at or below this fraction of the largest weight do
            not count as effective points.
        min_spread_m: src points whose weighted RMS spread (sqrt of the largest scatter
            eigenvalue) is below this are "coincident".
        min_spread_ratio: src points whose smallest/largest weighted-scatter eigenvalue ratio
            is below this are "collinear". (In 2-D a rigid fit to collinear points is
            mathematically unique, but correspondences along one line are aperture-ambiguous
            along it, so such sets are rejected; set 0 to allow them.)
        convergence_tol: IRLS stops when the pose changes by less than this (m and rad).
    """

    kernel: str = "cauchy"
    irls_iterations: int = 20
    kernel_tuning: float | None = None
    residual_scale_floor_m: float = 0.05
    inlier_threshold_sigmas: float = 4.0
    refit_inliers: bool = True
    cov_sigma_floor_m: float = 0.02
    cov_min_eigenvalue: float = 1e-6
    min_effective_points: int = 3
    negligible_weight_ratio: float = 1e-6
    min_spread_m: float = 1e-6
    min_spread_ratio: float = 1e-6
    convergence_tol: float = 1e-10

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ConfigError(f"ProcrustesConfig.kernel must be one of {KERNELS}, got {self.kernel!r}")
        if isinstance(self.irls_iterations, bool) or not isinstance(self.irls_iterations, int) or self.irls_iterations < 1:
            raise ConfigError(f"ProcrustesConfig.irls_iterations must be an int >= 1, got {self.irls_iterations!r}")
        positive = {
            "residual_scale_floor_m": self.residual_scale_floor_m,
            "inlier_threshold_sigmas": self.inlier_threshold_sigmas,
            "cov_sigma_floor_m": self.cov_sigma_floor_m,
            "cov_min_eigenvalue": self.cov_min_eigenvalue,
            "min_spread_m": self.min_spread_m,
            "convergence_tol": self.convergence_tol,
        }
        if self.kernel_tuning is not None:
            positive["kernel_tuning"] = self.kernel_tuning
        for name, value in positive.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"ProcrustesConfig.{name} must be finite and > 0, got {value!r}")
        if (
            isinstance(self.min_effective_points, bool)
            or not isinstance(self.min_effective_points, int)
            or self.min_effective_points < 2
        ):
            raise ConfigError(
                f"ProcrustesConfig.min_effective_points must be an int >= 2, got {self.min_effective_points!r}"
            )
        if not (math.isfinite(self.negligible_weight_ratio) and 0.0 <= self.negligible_weight_ratio < 1.0):
            raise ConfigError(
                "ProcrustesConfig.negligible_weight_ratio must be in [0, 1), "
                f"got {self.negligible_weight_ratio!r}"
            )
        if not (math.isfinite(self.min_spread_ratio) and 0.0 <= self.min_spread_ratio < 1.0):
            raise ConfigError(
                f"ProcrustesConfig.min_spread_ratio must be in [0, 1), got {self.min_spread_ratio!r}"
            )

    @property
    def tuning(self) -> float:
        """The kernel constant actually used."""
        return float(self.kernel_tuning) if self.kernel_tuning is not None else DEFAULT_TUNING[self.kernel]


@dataclass(frozen=True, eq=False)
class ProcrustesResult:
    """Output of :func:`solve`.

    Attributes:
        T_patch_base: the rigid pose of ``base_link`` in the patch frame (``dst ~= T.apply(src)``
            when ``scale`` is 1; in general ``dst ~= transform.apply(src)``).
        scale: the depth scale ``s`` (``dst = s R src + t``); exactly 1.0 when scale is known.
        cov_xyyaw: (3, 3) covariance of (x_m, y_m, yaw_rad) in the patch frame; symmetric,
            positive definite, eigenvalues >= ``cov_min_eigenvalue``.
        inlier_weight: (N,) robust kernel weight of each point in [0, 1] after IRLS (ones for
            kernel "none"); the prior weights are not folded in.
        inlier_mask: (N,) bool, the points used by the final fit (positive weight, and within
            the inlier threshold when the inlier refit is on).
        rms_residual_m: weighted RMS residual norm of the final fit over ``inlier_mask``.
        sigma_m: per-axis residual sigma used for the covariance (after the floor).
        n_effective: Kish effective number of points of the final fit's weights.
        iterations: IRLS iterations run (0 for kernel "none").
    """

    T_patch_base: SE2
    scale: float
    cov_xyyaw: np.ndarray
    inlier_weight: np.ndarray
    inlier_mask: np.ndarray
    rms_residual_m: float
    sigma_m: float
    n_effective: float
    iterations: int

    @property
    def transform(self) -> Sim2:
        """The full similarity ``src -> dst`` (rigid pose plus scale)."""
        T = self.T_patch_base
        return Sim2(T.x_m, T.y_m, T.yaw_rad, self.scale)

    @property
    def n_inliers(self) -> int:
        return int(np.count_nonzero(self.inlier_mask))


# --------------------------------------------------------------------------------------
# Validation and the closed-form weighted solve (numpy)
# --------------------------------------------------------------------------------------
def _validate_arrays(src_xy_m, dst_xy_m, weight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.asarray(src_xy_m, dtype=np.float64)
    dst = np.asarray(dst_xy_m, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2:
        raise GeometryError(f"procrustes: src_xy_m must have shape (N, 2), got {src.shape}")
    if dst.shape != src.shape:
        raise GeometryError(f"procrustes: dst_xy_m shape {dst.shape} does not match src_xy_m {src.shape}")
    if w.shape != (src.shape[0],):
        raise GeometryError(f"procrustes: weight must have shape ({src.shape[0]},), got {w.shape}")
    for name, arr in (("src_xy_m", src), ("dst_xy_m", dst), ("weight", w)):
        if not np.all(np.isfinite(arr)):
            raise GeometryError(f"procrustes: {name} contains non-finite values (NaN/inf)")
    if w.size and w.min() < 0.0:
        raise GeometryError(f"procrustes: weight must be >= 0, got minimum {w.min():.6g}")
    return src, dst, w


def _effective_count(w: np.ndarray) -> float:
    s1 = float(w.sum())
    s2 = float(np.dot(w, w))
    return 0.0 if s2 <= 0.0 else s1 * s1 / s2


def _fit(
    src: np.ndarray, dst: np.ndarray, w: np.ndarray, with_scale: bool, cfg: ProcrustesConfig, stage: str
) -> tuple[float, float, float, float]:
    """Weighted Kabsch/Umeyama on validated arrays -> (x_m, y_m, yaw_rad, scale).

    Raises DegenerateInputError (naming ``stage``) when no unique solution exists.
    """
    w_sum = float(w.sum())
    if not w_sum > 1e-12 * max(1, w.size):
        raise DegenerateInputError(f"procrustes ({stage}): weights sum to ~0 ({w_sum:.3g}) over {w.size} points")
    n_weighted = int(np.count_nonzero(w > cfg.negligible_weight_ratio * float(w.max())))
    if n_weighted < cfg.min_effective_points:
        raise DegenerateInputError(
            f"procrustes ({stage}): only {n_weighted} effectively weighted points "
            f"(weight > {cfg.negligible_weight_ratio:g} x max; need >= {cfg.min_effective_points}; N = {w.size})"
        )
    wn = w / w_sum
    mu_src = wn @ src
    mu_dst = wn @ dst
    a = src - mu_src
    b = dst - mu_dst
    scatter_src = (a * wn[:, None]).T @ a  # (2, 2) weighted covariance of src
    ev = np.linalg.eigvalsh(scatter_src)  # ascending
    if ev[1] <= cfg.min_spread_m**2:
        raise DegenerateInputError(
            f"procrustes ({stage}): src points are coincident (weighted RMS spread "
            f"{math.sqrt(max(ev[1], 0.0)):.3g} m < {cfg.min_spread_m:g} m)"
        )
    if cfg.min_spread_ratio > 0.0 and ev[0] <= cfg.min_spread_ratio * ev[1]:
        raise DegenerateInputError(
            f"procrustes ({stage}): src points are collinear (scatter eigenvalue ratio "
            f"{max(ev[0], 0.0) / ev[1]:.3g} <= {cfg.min_spread_ratio:g})"
        )
    # Cross-covariance H = sum w a b^T; rotation R maximising trace(R H) (Kabsch), no reflection.
    H = (a * wn[:, None]).T @ b
    U, S, Vt = np.linalg.svd(H)
    d = 1.0 if np.linalg.det(Vt.T @ U.T) >= 0.0 else -1.0
    D = np.diag([1.0, d])
    R = Vt.T @ D @ U.T
    trace_ds = float(S[0] + d * S[1])  # = max over rotations of trace(R H) = |(sum w a.b, sum w a x b)|
    var_src = float(ev.sum())
    var_dst = float(np.einsum("i,ij,ij->", wn, b, b))
    if not trace_ds > 1e-12 * max(var_src, var_dst):
        raise DegenerateInputError(
            f"procrustes ({stage}): the src/dst cross-covariance vanishes (dst points coincident "
            "or uncorrelated with src): rotation undefined"
        )
    scale = trace_ds / var_src if with_scale else 1.0
    yaw_rad = math.atan2(R[1, 0], R[0, 0])
    t = mu_dst - scale * (R @ mu_src)
    return float(t[0]), float(t[1]), yaw_rad, float(scale)


def _apply(src: np.ndarray, x_m: float, y_m: float, yaw_rad: float, scale: float) -> np.ndarray:
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    out = np.empty_like(src)
    out[:, 0] = scale * (c * src[:, 0] - s * src[:, 1]) + x_m
    out[:, 1] = scale * (s * src[:, 0] + c * src[:, 1]) + y_m
    return out


def weighted_procrustes(
    src_xy_m, dst_xy_m, weight, *, with_scale: bool = False, config: ProcrustesConfig | None = None
) -> SE2 | Sim2:
    """One closed-form weighted fit: ``SE2`` (or ``Sim2`` when ``with_scale``) ``T`` with
    ``dst ~= T.apply(src)``.

    Args:
        src_xy_m: (N, 2) points in ``base_link``.
        dst_xy_m: (N, 2) the same points in the patch frame.
        weight: (N,) non-negative weights (only their ratios matter).
        with_scale: estimate the Sim(2) scale (Umeyama) instead of a rigid SE(2).
        config: degeneracy thresholds (defaults: :class:`ProcrustesConfig`).

    Raises:
        GeometryError: bad shapes, NaN/inf, negative weights.
        DegenerateInputError: weights summing to ~0, fewer than ``min_effective_points``
            effective points, coincident or collinear src, vanishing cross-covariance.
    """
    cfg = config or ProcrustesConfig()
    src, dst, w = _validate_arrays(src_xy_m, dst_xy_m, weight)
    x_m, y_m, yaw_rad, scale = _fit(src, dst, w, with_scale, cfg, "weighted fit")
    return Sim2(x_m, y_m, yaw_rad, scale) if with_scale else SE2(x_m, y_m, yaw_rad)


# --------------------------------------------------------------------------------------
# Robust reweighting (numpy)
# --------------------------------------------------------------------------------------
def robust_residual_scale_m(residual_m: np.ndarray, valid: np.ndarray, floor_m: float) -> float:
    """Per-axis residual scale from residual norms: ``lower_median(|r|) / sqrt(2 ln 2)``
    over the ``valid`` points (for a 2-D isotropic Gaussian, the median of |r| is
    ``sigma sqrt(2 ln 2)``), floored at ``floor_m``. The *lower* median (the
    ``(n-1)//2``-th order statistic) matches ``torch.nanmedian``.
    """
    r = np.sort(np.asarray(residual_m, dtype=np.float64)[np.asarray(valid, dtype=bool)])
    if r.size == 0:
        return float(floor_m)
    med = float(r[(r.size - 1) // 2])
    return max(med / _RAYLEIGH_MEDIAN, float(floor_m))


def kernel_weights(residual_m: np.ndarray, scale_m: float, kernel: str, tuning: float) -> np.ndarray:
    """IRLS weights in [0, 1] of residual norms for ``u = |r| / (tuning * scale_m)``:
    Huber ``min(1, 1/u)``, Cauchy ``1 / (1 + u^2)``, none ``1``."""
    u = np.asarray(residual_m, dtype=np.float64) / (tuning * scale_m)
    if kernel == "huber":
        return np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1.0))
    if kernel == "cauchy":
        return 1.0 / (1.0 + u * u)
    if kernel == "none":
        return np.ones_like(u)
    raise ConfigError(f"unknown robust kernel {kernel!r}; expected one of {KERNELS}")


# --------------------------------------------------------------------------------------
# Covariance
# --------------------------------------------------------------------------------------
def covariance_xyyaw(
    src_xy_m: np.ndarray,
    dst_xy_m: np.ndarray,
    weight: np.ndarray,
    transform: Sim2,
    *,
    with_scale: bool,
    config: ProcrustesConfig | None = None,
) -> tuple[np.ndarray, float]:
    """Covariance of (x_m, y_m, yaw_rad) of a fitted ``transform`` (see the module docstring).

    Args:
        src_xy_m, dst_xy_m: (N, 2) the points the fit used.
        weight: (N,) the weights the fit used (zero-weight points are ignored).
        transform: the fitted Sim2 (scale 1 for a rigid fit).
        with_scale: whether the scale was estimated (then marginalised out).

    Returns:
        (cov (3, 3), sigma_m): the covariance and the per-axis residual sigma used.
    """
    cfg = config or ProcrustesConfig()
    src, dst, w = _validate_arrays(src_xy_m, dst_xy_m, weight)
    n_params = 4 if with_scale else 3
    w_sum = float(w.sum())
    n_eff = _effective_count(w)
    if not (w_sum > 0.0 and n_eff > n_params / 2.0):
        raise DegenerateInputError(
            f"procrustes covariance: {n_eff:.2f} effective points for {n_params} parameters"
        )
    T = transform
    q = _apply(src, 0.0, 0.0, T.yaw_rad, T.scale)  # s R src: lever arms about base_link's origin
    resid = dst - (q + T.translation_m)
    r2 = np.einsum("ij,ij->i", resid, resid)
    var = float(w @ r2) / (2.0 * w_sum) * n_eff / (n_eff - n_params / 2.0)
    sigma_m = max(math.sqrt(max(var, 0.0)), cfg.cov_sigma_floor_m)
    # Per-point Jacobian of T.apply(src_i) w.r.t. (x, y, yaw[, s]) is the 2 x p block
    # [[1, 0, -q_y, q_x / s], [0, 1, q_x, q_y / s]]; J^T W J summed in closed form:
    wq = w @ q  # (sum w q_x, sum w q_y)
    wqq = float(w @ np.einsum("ij,ij->i", q, q))  # sum w |q|^2
    info = np.zeros((n_params, n_params))
    info[0, 0] = info[1, 1] = w_sum
    info[0, 2] = info[2, 0] = -wq[1]
    info[1, 2] = info[2, 1] = wq[0]
    info[2, 2] = wqq
    if with_scale:  # the yaw-scale term is zero: (-q_y q_x + q_x q_y) / s
        info[0, 3] = info[3, 0] = wq[0] / T.scale
        info[1, 3] = info[3, 1] = wq[1] / T.scale
        info[3, 3] = wqq / T.scale**2
    info *= n_eff / w_sum
    try:
        cov_full = np.linalg.inv(info) * sigma_m**2
    except np.linalg.LinAlgError as exc:
        raise DegenerateInputError(f"procrustes covariance: singular information matrix ({exc})") from exc
    cov = cov_full[:3, :3]
    cov = 0.5 * (cov + cov.T)
    evals, evecs = np.linalg.eigh(cov)
    if not np.all(np.isfinite(evals)):
        raise DegenerateInputError("procrustes covariance: non-finite eigenvalues")
    evals = np.maximum(evals, cfg.cov_min_eigenvalue)
    cov = (evecs * evals) @ evecs.T
    cov = 0.5 * (cov + cov.T)
    return cov, sigma_m


# --------------------------------------------------------------------------------------
# The solver the node calls
# --------------------------------------------------------------------------------------
def solve_arrays(
    src_xy_m, dst_xy_m, weight, *, scale_known: bool = True, config: ProcrustesConfig | None = None
) -> ProcrustesResult:
    """Robust weighted fit of ``T_patch_base`` (+ scale when ``scale_known`` is False) with
    covariance. Same inputs as :func:`weighted_procrustes`; see :func:`solve`."""
    cfg = config or ProcrustesConfig()
    src, dst, w_prior = _validate_arrays(src_xy_m, dst_xy_m, weight)
    with_scale = not scale_known
    params = _fit(src, dst, w_prior, with_scale, cfg, "initial fit")
    valid = w_prior > 0.0
    robust = np.ones_like(w_prior)
    iterations = 0
    used = w_prior
    if cfg.kernel != "none":
        tuning = cfg.tuning
        for _ in range(cfg.irls_iterations):
            iterations += 1
            r = np.linalg.norm(dst - _apply(src, *params), axis=1)
            scale_m = robust_residual_scale_m(r, valid, cfg.residual_scale_floor_m)
            robust = kernel_weights(r, scale_m, cfg.kernel, tuning)
            used = w_prior * robust
            new = _fit(src, dst, used, with_scale, cfg, f"IRLS iteration {iterations}")
            change = max(abs(new[0] - params[0]), abs(new[1] - params[1]),
                         abs(math.remainder(new[2] - params[2], 2 * math.pi)), abs(new[3] - params[3]))
            params = new
            if change < cfg.convergence_tol:
                break
        if cfg.refit_inliers:
            r = np.linalg.norm(dst - _apply(src, *params), axis=1)
            scale_m = robust_residual_scale_m(r, valid, cfg.residual_scale_floor_m)
            mask = valid & (r <= cfg.inlier_threshold_sigmas * scale_m)
            used = np.where(mask, w_prior, 0.0)
            params = _fit(src, dst, used, with_scale, cfg, "inlier refit")
    transform = Sim2(*params[:3], params[3])
    cov, sigma_m = covariance_xyyaw(src, dst, used, transform, with_scale=with_scale, config=cfg)
    mask = used > 0.0
    r = np.linalg.norm(dst - transform.apply(src), axis=1)
    rms = math.sqrt(float(used @ (r * r)) / float(used.sum()))
    inlier_weight = robust.copy()
    for arr in (cov, inlier_weight, mask):
        arr.setflags(write=False)
    return ProcrustesResult(
        T_patch_base=transform.to_se2(),
        scale=float(params[3]) if with_scale else 1.0,
        cov_xyyaw=cov,
        inlier_weight=inlier_weight,
        inlier_mask=mask,
        rms_residual_m=rms,
        sigma_m=sigma_m,
        n_effective=_effective_count(used),
        iterations=iterations,
    )


def solve(correspondences: Correspondences, config: ProcrustesConfig | None = None) -> ProcrustesResult:
    """Solve ``T_patch_base`` from a matcher's :class:`Correspondences` (what the node calls).

    Rigid SE(2) when ``correspondences.scale_known``, else Sim(2) with the depth scale in
    ``result.scale``. Steps: weighted closed-form fit -> IRLS with ``config.kernel`` (scale
    from the median residual, floored) -> least-squares refit on the inliers -> covariance.

    Raises:
        GeometryError: bad input (not a Correspondences, shapes, NaN/inf, negative weights).
        DegenerateInputError: no unique solution (see :func:`weighted_procrustes`), also when
            robust reweighting leaves too few effective points.
    """
    if not isinstance(correspondences, Correspondences):
        raise GeometryError(
            f"procrustes.solve: expected Correspondences, got {type(correspondences).__name__}"
        )
    c = correspondences
    return solve_arrays(c.src_xy_m, c.dst_xy_m, c.weight, scale_known=c.scale_known, config=config)


# --------------------------------------------------------------------------------------
# Torch: batched and differentiable (training)
# --------------------------------------------------------------------------------------
class TorchPose(NamedTuple):
    """Batched poses, each a (B,) tensor: ``dst = scale * R(yaw_rad) src + (x_m, y_m)``."""

    x_m: "torch.Tensor"
    y_m: "torch.Tensor"
    yaw_rad: "torch.Tensor"
    scale: "torch.Tensor"

    def apply(self, points_xy: "torch.Tensor") -> "torch.Tensor":
        """Transform (B, N, 2) points; returns (B, N, 2)."""
        import torch

        c = torch.cos(self.yaw_rad)[:, None]
        s = torch.sin(self.yaw_rad)[:, None]
        px, py = points_xy[..., 0], points_xy[..., 1]
        k = self.scale[:, None]
        return torch.stack(
            (k * (c * px - s * py) + self.x_m[:, None], k * (s * px + c * py) + self.y_m[:, None]), dim=-1
        )


def _check_torch_shapes(src, dst, weight) -> None:
    import torch

    for name, t in (("src_xy", src), ("dst_xy", dst), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise GeometryError(f"procrustes_torch: {name} must be a torch.Tensor, got {type(t).__name__}")
    if src.ndim != 3 or src.shape[-1] != 2:
        raise GeometryError(f"procrustes_torch: src_xy must have shape (B, N, 2), got {tuple(src.shape)}")
    if dst.shape != src.shape:
        raise GeometryError(
            f"procrustes_torch: dst_xy shape {tuple(dst.shape)} does not match src_xy {tuple(src.shape)}"
        )
    if weight.shape != src.shape[:2]:
        raise GeometryError(
            f"procrustes_torch: weight must have shape {tuple(src.shape[:2])}, got {tuple(weight.shape)}"
        )


def procrustes_torch(
    src_xy: "torch.Tensor",
    dst_xy: "torch.Tensor",
    weight: "torch.Tensor",
    *,
    with_scale: bool = False,
    eps: float = 1e-9,
) -> TorchPose:
    """Batched, differentiable weighted Procrustes (the training counterpart of
    :func:`weighted_procrustes`; same result to float64 precision).

    Args:
        src_xy: (B, N, 2) points in ``base_link``.
        dst_xy: (B, N, 2) the same points in the patch frame.
        weight: (B, N) non-negative weights (gradients flow into them).
        with_scale: also estimate the Sim(2) scale (else ``scale`` is ones).
        eps: numerical-safety constant (see below).

    Returns:
        :class:`TorchPose` of (B,) tensors ``x_m, y_m, yaw_rad, scale``, differentiable w.r.t.
        points and weights.

    Why atan2 and not SVD: in 2-D, on weighted-centred points ``a_i`` (src) and ``b_i`` (dst),
    ``trace(R(theta) H) = C cos(theta) + S sin(theta)`` with ``C = sum w a.b`` and
    ``S = sum w (a x b)_z``, maximised over rotations (never a reflection, since only
    ``theta`` is searched) at ``theta = atan2(S, C)``; Umeyama's scale is
    ``hypot(S, C) / sum w |a|^2``. The gradient of atan2 is ``(C dS - S dC) / (C^2 + S^2)``,
    finite whenever a rotation is defined, whereas the SVD backward divides by
    ``sigma_i^2 - sigma_j^2`` and blows up for isotropic point sets (equal singular values),
    which are common.

    Degenerate batches never raise (training must not stop): weight sums are clamped at
    ``eps``; where ``C^2 + S^2 <= eps^2`` (coincident points, zero weights) the rotation
    falls back to yaw 0 and the scale to 1 with zero gradient through them. NaN/inf inputs
    are NOT checked (that would need a device sync); they propagate. Shapes are validated
    (:class:`GeometryError`).
    """
    import torch

    _check_torch_shapes(src_xy, dst_xy, weight)
    w = weight
    w_sum = w.sum(dim=-1).clamp_min(eps)  # (B,)
    mu_src = (w[..., None] * src_xy).sum(dim=-2) / w_sum[:, None]  # (B, 2)
    mu_dst = (w[..., None] * dst_xy).sum(dim=-2) / w_sum[:, None]
    a = src_xy - mu_src[:, None, :]
    b = dst_xy - mu_dst[:, None, :]
    c_dot = (w * (a * b).sum(dim=-1)).sum(dim=-1)  # C = sum w a.b
    s_cross = (w * (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0])).sum(dim=-1)  # S = sum w a x b
    degenerate = (c_dot * c_dot + s_cross * s_cross) <= eps * eps
    c_safe = torch.where(degenerate, torch.ones_like(c_dot), c_dot)
    s_safe = torch.where(degenerate, torch.zeros_like(s_cross), s_cross)
    yaw_rad = torch.atan2(s_safe, c_safe)
    if with_scale:
        var_src = (w * (a * a).sum(dim=-1)).sum(dim=-1)
        bad = degenerate | (var_src <= eps)
        scale = torch.sqrt(c_safe * c_safe + s_safe * s_safe) / var_src.clamp_min(eps)
        scale = torch.where(bad, torch.ones_like(scale), scale)
    else:
        scale = torch.ones_like(yaw_rad)
    cy, sy = torch.cos(yaw_rad), torch.sin(yaw_rad)
    x_m = mu_dst[:, 0] - scale * (cy * mu_src[:, 0] - sy * mu_src[:, 1])
    y_m = mu_dst[:, 1] - scale * (sy * mu_src[:, 0] + cy * mu_src[:, 1])
    # atan2 returns (-pi, pi]; wrap +pi to -pi so the convention [-pi, pi) holds.
    yaw_rad = torch.where(yaw_rad >= math.pi, yaw_rad - 2 * math.pi, yaw_rad)
    return TorchPose(x_m, y_m, yaw_rad, scale)


def robust_procrustes_torch(
    src_xy: "torch.Tensor",
    dst_xy: "torch.Tensor",
    weight: "torch.Tensor",
    *,
    with_scale: bool = False,
    kernel: str = "cauchy",
    iterations: int = 3,
    kernel_tuning: float | None = None,
    residual_scale_floor_m: float = 0.05,
    eps: float = 1e-9,
) -> tuple[TorchPose, "torch.Tensor"]:
    """A few IRLS iterations on top of :func:`procrustes_torch`.

    The robust weights are computed without gradient (detached) from the previous iterate's
    residual norms, exactly as :func:`solve_arrays` with ``refit_inliers=False`` does: scale
    = lower median of |r| over positive-weight points / sqrt(2 ln 2), floored; kernel weights
    as :func:`kernel_weights`. The final solve is differentiable w.r.t. points and weights.

    Returns:
        (pose, robust_weight (B, N)): the final :class:`TorchPose` and the detached kernel
        weights used for it.
    """
    import torch

    if kernel not in KERNELS:
        raise ConfigError(f"robust_procrustes_torch: kernel must be one of {KERNELS}, got {kernel!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ConfigError(f"robust_procrustes_torch: iterations must be an int >= 0, got {iterations!r}")
    tuning = float(kernel_tuning) if kernel_tuning is not None else DEFAULT_TUNING[kernel]
    _check_torch_shapes(src_xy, dst_xy, weight)
    robust = torch.ones_like(weight)
    pose = procrustes_torch(src_xy, dst_xy, weight, with_scale=with_scale, eps=eps)
    if kernel == "none":
        return pose, robust
    for _ in range(iterations):
        with torch.no_grad():
            detached = TorchPose(*(p.detach() for p in pose))
            r = torch.linalg.vector_norm(dst_xy.detach() - detached.apply(src_xy.detach()), dim=-1)
            masked = torch.where(weight.detach() > 0, r, torch.full_like(r, float("nan")))
            med = torch.nan_to_num(torch.nanmedian(masked, dim=-1).values, nan=0.0)
            scale_m = (med / _RAYLEIGH_MEDIAN).clamp_min(residual_scale_floor_m)
            u = r / (tuning * scale_m[:, None])
            if kernel == "huber":
                robust = torch.where(u <= 1.0, torch.ones_like(u), 1.0 / u.clamp_min(1.0))
            else:
                robust = 1.0 / (1.0 + u * u)
        pose = procrustes_torch(src_xy, dst_xy, weight * robust, with_scale=with_scale, eps=eps)
    return pose, robust
