"""Tests of xview_localizer.core.procrustes (and the Correspondences contract it consumes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xview_localizer.core import procrustes as P
from xview_localizer.core.correspondences import Correspondences
from xview_localizer.core.errors import ConfigError, DegenerateInputError, GeometryError, XViewError
from xview_localizer.core.se2 import SE2, Sim2


def _angle_err(a: float, b: float) -> float:
    return abs(math.remainder(a - b, 2.0 * math.pi))


def _scene(seed: int, n: int, sigma_m: float, outlier_frac: float = 0.0, spread_m: float = 20.0):
    """Random SE2 truth, src in base_link, dst = T(src) + noise, a fraction replaced by
    gross outliers uniform in +-50 m."""
    rng = np.random.default_rng(seed)
    T = SE2(rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-math.pi, math.pi))
    src = rng.uniform(-spread_m, spread_m, (n, 2))
    dst = T.apply(src) + rng.normal(0.0, sigma_m, (n, 2))
    n_out = int(round(outlier_frac * n))
    idx = rng.permutation(n)[:n_out]
    dst[idx] = rng.uniform(-50.0, 50.0, (n_out, 2))
    return T, src, dst


poses = st.tuples(
    st.floats(-100, 100), st.floats(-100, 100), st.floats(-math.pi, math.pi)
)


# --------------------------------------------------------------------------------------
# exact recovery
# --------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, derandomize=True)
@given(pose=poses, seed=st.integers(0, 2**31 - 1), n=st.integers(3, 60))
def test_exact_recovery_se2(pose, seed, n):
    rng = np.random.default_rng(seed)
    T = SE2(*pose)
    src = rng.uniform(-30, 30, (n, 2))
    w = rng.uniform(0.2, 1.0, n)
    got = P.weighted_procrustes(src, T.apply(src), w)
    assert isinstance(got, SE2)
    assert abs(got.x_m - T.x_m) < 1e-6 and abs(got.y_m - T.y_m) < 1e-6
    assert _angle_err(got.yaw_rad, T.yaw_rad) < 1e-6
    res = P.solve(Correspondences(src, T.apply(src), w, scale_known=True))
    assert abs(res.T_patch_base.x_m - T.x_m) < 1e-6 and abs(res.T_patch_base.y_m - T.y_m) < 1e-6
    assert _angle_err(res.T_patch_base.yaw_rad, T.yaw_rad) < 1e-6
    assert res.scale == 1.0
    assert np.all(np.isfinite(res.cov_xyyaw))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(pose=poses, log_scale=st.floats(-1.6, 1.6), seed=st.integers(0, 2**31 - 1), n=st.integers(3, 60))
def test_exact_recovery_sim2(pose, log_scale, seed, n):
    rng = np.random.default_rng(seed)
    T = Sim2(*pose, math.exp(log_scale))
    src = rng.uniform(-30, 30, (n, 2))
    w = rng.uniform(0.2, 1.0, n)
    got = P.weighted_procrustes(src, T.apply(src), w, with_scale=True)
    assert isinstance(got, Sim2)
    assert abs(got.scale - T.scale) < 1e-6 * T.scale
    assert abs(got.x_m - T.x_m) < 1e-6 and abs(got.y_m - T.y_m) < 1e-6
    assert _angle_err(got.yaw_rad, T.yaw_rad) < 1e-6
    res = P.solve(Correspondences(src, T.apply(src), w, scale_known=False))
    assert abs(res.scale - T.scale) < 1e-6 * T.scale
    assert _angle_err(res.T_patch_base.yaw_rad, T.yaw_rad) < 1e-6
    np.testing.assert_allclose(res.transform.apply(src), T.apply(src), atol=1e-6)


def test_mirrored_input_gives_best_rotation_not_reflection():
    rng = np.random.default_rng(3)
    src = rng.uniform(-10, 10, (50, 2))
    dst = src * np.array([1.0, -1.0]) + np.array([2.0, 1.0])  # a reflection: no rotation fits
    w = rng.uniform(0.1, 1.0, 50)
    got = P.weighted_procrustes(src, dst, w)
    assert np.linalg.det(got.rotation_matrix()) > 0.0

    def cost(yaw_rad: float) -> float:
        # best translation for a given rotation is the weighted centroid difference
        wn = w / w.sum()
        R = SE2(0, 0, yaw_rad).rotation_matrix()
        t = wn @ dst - R @ (wn @ src)
        r = dst - (src @ R.T + t)
        return float(w @ (r * r).sum(1))

    grid = np.linspace(-math.pi, math.pi, 7201)
    best = min(cost(y) for y in grid)
    assert cost(got.yaw_rad) <= best + 1e-9


# --------------------------------------------------------------------------------------
# numpy vs torch
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("with_scale", [False, True])
def test_numpy_and_torch_agree_float64(with_scale, device):
    rng = np.random.default_rng(11)
    B, N = 16, 40
    src = rng.uniform(-20, 20, (B, N, 2))
    dst = np.empty_like(src)
    for b in range(B):
        T = Sim2(*rng.uniform(-10, 10, 2), rng.uniform(-math.pi, math.pi), rng.uniform(0.5, 2) if with_scale else 1)
        dst[b] = T.apply(src[b]) + rng.normal(0, 0.3, (N, 2))
    w = rng.uniform(0.0, 1.0, (B, N))
    out = P.procrustes_torch(
        torch.tensor(src, device=device), torch.tensor(dst, device=device), torch.tensor(w, device=device),
        with_scale=with_scale,
    )
    for b in range(B):
        ref = P.weighted_procrustes(src[b], dst[b], w[b], with_scale=with_scale)
        assert abs(out.x_m[b].item() - ref.x_m) < 1e-6
        assert abs(out.y_m[b].item() - ref.y_m) < 1e-6
        assert _angle_err(out.yaw_rad[b].item(), ref.yaw_rad) < 1e-6
        assert abs(out.scale[b].item() - (ref.scale if with_scale else 1.0)) < 1e-6
    assert torch.all(out.yaw_rad >= -math.pi) and torch.all(out.yaw_rad < math.pi)


@pytest.mark.parametrize("kernel", ["huber", "cauchy"])
def test_numpy_and_torch_irls_agree_float64(kernel):
    B, N, iters = 4, 100, 6
    srcs, dsts = [], []
    for b in range(B):
        _, src, dst = _scene(200 + b, N, 0.3, outlier_frac=0.3)
        srcs.append(src)
        dsts.append(dst)
    src, dst = np.stack(srcs), np.stack(dsts)
    w = np.random.default_rng(5).uniform(0.3, 1.0, (B, N))
    pose, robust = P.robust_procrustes_torch(
        torch.tensor(src), torch.tensor(dst), torch.tensor(w), kernel=kernel, iterations=iters
    )
    cfg = P.ProcrustesConfig(kernel=kernel, irls_iterations=iters, refit_inliers=False, convergence_tol=1e-300)
    for b in range(B):
        ref = P.solve_arrays(src[b], dst[b], w[b], config=cfg)
        assert ref.iterations == iters
        assert abs(pose.x_m[b].item() - ref.T_patch_base.x_m) < 1e-6
        assert abs(pose.y_m[b].item() - ref.T_patch_base.y_m) < 1e-6
        assert _angle_err(pose.yaw_rad[b].item(), ref.T_patch_base.yaw_rad) < 1e-6
        np.testing.assert_allclose(robust[b].numpy(), ref.inlier_weight, atol=1e-6)


@pytest.mark.parametrize("with_scale", [False, True])
def test_torch_gradcheck(with_scale):
    g = torch.Generator().manual_seed(0)
    src = torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 10 - 5
    dst = torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * 10 - 5
    w = torch.rand(2, 5, generator=g, dtype=torch.float64) * 0.8 + 0.2
    src.requires_grad_(True)
    dst.requires_grad_(True)
    w.requires_grad_(True)

    def fn(s, d, ww):
        return tuple(P.procrustes_torch(s, d, ww, with_scale=with_scale))

    assert torch.autograd.gradcheck(fn, (src, dst, w), eps=1e-6, atol=1e-5)


def test_torch_degenerate_batch_is_finite_with_finite_gradients():
    src = torch.randn(3, 6, 2, dtype=torch.float64, requires_grad=True)
    dst = torch.randn(3, 6, 2, dtype=torch.float64, requires_grad=True)
    w = torch.ones(3, 6, dtype=torch.float64)
    w[1] = 0.0  # all weights zero
    w = w.requires_grad_(True)
    with torch.no_grad():
        src[2] = 1.0  # coincident src points
    for with_scale in (False, True):
        out = P.procrustes_torch(src, dst, w, with_scale=with_scale)
        total = sum(t.sum() for t in out)
        assert all(torch.isfinite(t).all() for t in out)
        grads = torch.autograd.grad(total, (src, dst, w))
        assert all(torch.isfinite(g).all() for g in grads)
        assert out.yaw_rad[1].item() == 0.0 and out.scale[1].item() == 1.0


def test_torch_robust_survives_outliers_and_has_gradients(device):
    B, N = 4, 300
    truths, srcs, dsts = [], [], []
    for b in range(B):
        T, src, dst = _scene(300 + b, N, 0.3, outlier_frac=0.4)
        truths.append(T)
        srcs.append(src)
        dsts.append(dst)
    src = torch.tensor(np.stack(srcs), dtype=torch.float32, device=device, requires_grad=True)
    dst = torch.tensor(np.stack(dsts), dtype=torch.float32, device=device)
    w = torch.ones(B, N, device=device, requires_grad=True)
    pose, robust = P.robust_procrustes_torch(src, dst, w, iterations=8)
    for b, T in enumerate(truths):
        assert math.hypot(pose.x_m[b].item() - T.x_m, pose.y_m[b].item() - T.y_m) < 0.3
        assert math.degrees(_angle_err(pose.yaw_rad[b].item(), T.yaw_rad)) < 0.5
    assert robust.shape == (B, N) and not robust.requires_grad
    (pose.x_m.sum() + pose.yaw_rad.sum()).backward()
    assert torch.isfinite(src.grad).all() and torch.isfinite(w.grad).all()
    assert w.grad.abs().sum() > 0


def test_torch_validates_shapes():
    with pytest.raises(GeometryError, match=r"src_xy must have shape \(B, N, 2\)"):
        P.procrustes_torch(torch.zeros(5, 2), torch.zeros(5, 2), torch.ones(5))
    with pytest.raises(GeometryError, match="dst_xy shape"):
        P.procrustes_torch(torch.zeros(1, 5, 2), torch.zeros(1, 4, 2), torch.ones(1, 5))
    with pytest.raises(GeometryError, match="weight must have shape"):
        P.procrustes_torch(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2), torch.ones(1, 5, 1))
    with pytest.raises(GeometryError, match="must be a torch.Tensor"):
        P.procrustes_torch(np.zeros((1, 5, 2)), torch.zeros(1, 5, 2), torch.ones(1, 5))
    with pytest.raises(ConfigError, match="kernel"):
        P.robust_procrustes_torch(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2), torch.ones(1, 5), kernel="tukey")


# --------------------------------------------------------------------------------------
# robustness
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["cauchy", "huber"])
def test_survives_40_percent_gross_outliers(kernel):
    cfg = P.ProcrustesConfig(kernel=kernel)
    for seed in range(12):
        sigma_m = 0.1 + 0.4 * seed / 11
        T, src, dst = _scene(seed, 250, sigma_m, outlier_frac=0.4)
        res = P.solve_arrays(src, dst, np.ones(250), config=cfg)
        xy_err = math.hypot(res.T_patch_base.x_m - T.x_m, res.T_patch_base.y_m - T.y_m)
        assert xy_err < 0.25, (seed, xy_err)
        assert math.degrees(_angle_err(res.T_patch_base.yaw_rad, T.yaw_rad)) < 0.5
        assert 130 <= res.n_inliers <= 155  # 150 true inliers
        assert res.sigma_m == pytest.approx(sigma_m, rel=0.3)


def test_plain_least_squares_is_ruined_by_the_same_outliers():
    T, src, dst = _scene(0, 250, 0.3, outlier_frac=0.4)
    res = P.solve_arrays(src, dst, np.ones(250), config=P.ProcrustesConfig(kernel="none"))
    assert math.hypot(res.T_patch_base.x_m - T.x_m, res.T_patch_base.y_m - T.y_m) > 0.5


def test_low_prior_weight_on_outliers_helps_plain_least_squares():
    T, src, dst = _scene(1, 200, 0.2, outlier_frac=0.0)
    dst[:20] += 30.0
    w = np.ones(200)
    w[:20] = 0.0
    res = P.solve_arrays(src, dst, w, config=P.ProcrustesConfig(kernel="none"))
    assert math.hypot(res.T_patch_base.x_m - T.x_m, res.T_patch_base.y_m - T.y_m) < 0.1
    assert not res.inlier_mask[:20].any()


# --------------------------------------------------------------------------------------
# covariance
# --------------------------------------------------------------------------------------
def _mean_nees(cfg: P.ProcrustesConfig, draws: int, n: int, offset_m: float = 0.0, seed0: int = 1000) -> float:
    nees = []
    for i in range(draws):
        rng = np.random.default_rng(seed0 + i)
        sigma_m = rng.uniform(0.1, 0.5)
        T = SE2(rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-math.pi, math.pi))
        src = rng.uniform(-15, 15, (n, 2)) + np.array([offset_m, 0.0])
        dst = T.apply(src) + rng.normal(0.0, sigma_m, (n, 2))
        res = P.solve_arrays(src, dst, np.ones(n), config=cfg)
        e = np.array([
            res.T_patch_base.x_m - T.x_m,
            res.T_patch_base.y_m - T.y_m,
            math.remainder(res.T_patch_base.yaw_rad - T.yaw_rad, 2 * math.pi),
        ])
        nees.append(float(e @ np.linalg.solve(res.cov_xyyaw, e)))
    return float(np.mean(nees))


@pytest.mark.parametrize("kernel", ["none", "cauchy"])
def test_covariance_is_calibrated_nees(kernel):
    nees = _mean_nees(P.ProcrustesConfig(kernel=kernel), draws=500, n=60)
    assert 2.6 <= nees <= 3.4, nees


def test_covariance_is_calibrated_for_sim2_with_unequal_weights():
    # Equal per-point noise, heuristic confidences in [0.1, 1], unknown depth scale.
    nees = []
    for i in range(400):
        rng = np.random.default_rng(9000 + i)
        sigma_m = rng.uniform(0.1, 0.5)
        T = Sim2(*rng.uniform(-5, 5, 2), rng.uniform(-math.pi, math.pi), rng.uniform(0.5, 2.0))
        src = rng.uniform(-15, 15, (60, 2))
        w = rng.uniform(0.1, 1.0, 60)
        dst = T.apply(src) + rng.normal(0.0, sigma_m, (60, 2))
        res = P.solve(Correspondences(src, dst, w, scale_known=False), P.ProcrustesConfig(kernel="none"))
        e = np.array([
            res.T_patch_base.x_m - T.x_m,
            res.T_patch_base.y_m - T.y_m,
            math.remainder(res.T_patch_base.yaw_rad - T.yaw_rad, 2 * math.pi),
        ])
        nees.append(float(e @ np.linalg.solve(res.cov_xyyaw, e)))
    assert 2.6 <= float(np.mean(nees)) <= 3.4, np.mean(nees)


def test_covariance_is_calibrated_with_points_ahead_of_the_vehicle():
    # Points 5..35 m ahead: the x/y-yaw cross terms (lever arm) matter here.
    nees = _mean_nees(P.ProcrustesConfig(kernel="none"), draws=400, n=60, offset_m=20.0, seed0=5000)
    assert 2.6 <= nees <= 3.4, nees


def test_covariance_shape_symmetry_floor_and_weight_scale_invariance():
    T, src, dst = _scene(7, 80, 0.3)
    w = np.random.default_rng(0).uniform(0.2, 1.0, 80)
    a = P.solve_arrays(src, dst, w)
    b = P.solve_arrays(src, dst, 0.25 * w)
    assert a.cov_xyyaw.shape == (3, 3)
    np.testing.assert_allclose(a.cov_xyyaw, a.cov_xyyaw.T, atol=0)
    assert np.all(np.linalg.eigvalsh(a.cov_xyyaw) > 0)
    np.testing.assert_allclose(a.cov_xyyaw, b.cov_xyyaw, rtol=1e-9)
    assert a.T_patch_base.x_m == pytest.approx(b.T_patch_base.x_m, abs=1e-12)
    # noise-free: the sigma floor keeps the covariance positive definite and >= 1e-6
    exact = P.solve_arrays(src, T.apply(src), w)
    assert exact.sigma_m == pytest.approx(P.ProcrustesConfig().cov_sigma_floor_m)
    assert np.all(np.diag(exact.cov_xyyaw) >= 1e-6)
    assert np.all(np.linalg.eigvalsh(exact.cov_xyyaw) >= 1e-6 * (1 - 1e-9))
    assert exact.rms_residual_m < 1e-9


def test_sim2_covariance_is_larger_than_rigid():
    T, src, dst = _scene(8, 60, 0.3)
    rigid = P.solve_arrays(src, dst, np.ones(60), scale_known=True)
    sim = P.solve_arrays(src, dst, np.ones(60), scale_known=False)
    assert sim.scale == pytest.approx(1.0, abs=0.02)
    assert sim.cov_xyyaw[2, 2] == pytest.approx(rigid.cov_xyyaw[2, 2], rel=0.2)
    # Same fit, same points: marginalising the scale can only add uncertainty.
    fit = rigid.transform
    cov_rigid, _ = P.covariance_xyyaw(src, dst, np.ones(60), fit, with_scale=False)
    cov_sim, _ = P.covariance_xyyaw(src, dst, np.ones(60), fit, with_scale=True)
    assert np.all(np.linalg.eigvalsh(cov_sim - cov_rigid) > -1e-15)


# --------------------------------------------------------------------------------------
# degenerate and invalid input
# --------------------------------------------------------------------------------------
def _pts(n=10, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-5, 5, (n, 2))
    return src, SE2(1, 2, 0.3).apply(src), np.ones(n)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda s, d, w: (s[:2], d[:2], w[:2]), DegenerateInputError, "effectively weighted points"),
        (lambda s, d, w: (s, d, np.r_[1.0, 1.0, np.zeros(8)]), DegenerateInputError, "effectively weighted"),
        (lambda s, d, w: (s, d, np.zeros(10)), DegenerateInputError, "weights sum to ~0"),
        (lambda s, d, w: (s[:0], d[:0], w[:0]), DegenerateInputError, "weights sum to ~0"),
        (lambda s, d, w: (np.tile(s[:1], (10, 1)), d, w), DegenerateInputError, "src points are coincident"),
        (lambda s, d, w: (np.c_[s[:, 0], 2 * s[:, 0] + 1], d, w), DegenerateInputError, "collinear"),
        (lambda s, d, w: (s, np.tile(d[:1], (10, 1)), w), DegenerateInputError, "cross-covariance vanishes"),
        (lambda s, d, w: (np.where(np.arange(10)[:, None] == 3, np.nan, s), d, w), GeometryError, "src_xy_m contains non-finite"),
        (lambda s, d, w: (s, np.where(np.arange(10)[:, None] == 3, np.inf, d), w), GeometryError, "dst_xy_m contains non-finite"),
        (lambda s, d, w: (s, d, np.r_[np.nan, w[1:]]), GeometryError, "weight contains non-finite"),
        (lambda s, d, w: (s, d, np.r_[-0.5, w[1:]]), GeometryError, "weight must be >= 0"),
        (lambda s, d, w: (s, d[:9], w), GeometryError, "does not match"),
        (lambda s, d, w: (np.c_[s, s[:, :1]], d, w), GeometryError, r"src_xy_m must have shape \(N, 2\)"),
        (lambda s, d, w: (s, d, w[:, None]), GeometryError, "weight must have shape"),
    ],
)
@pytest.mark.parametrize("scale_known", [True, False])
def test_degenerate_and_invalid_inputs_raise(make, exc, match, scale_known):
    src, dst, w = make(*_pts())
    with pytest.raises(exc, match=match):
        P.solve_arrays(src, dst, w, scale_known=scale_known)
    with pytest.raises(exc, match=match):
        P.weighted_procrustes(src, dst, w, with_scale=not scale_known)


def test_collinear_allowed_when_ratio_is_zero():
    src = np.c_[np.linspace(-5, 5, 10), np.zeros(10)]
    T = SE2(1.0, -1.0, 0.7)
    got = P.weighted_procrustes(src, T.apply(src), np.ones(10), config=P.ProcrustesConfig(min_spread_ratio=0.0))
    assert _angle_err(got.yaw_rad, T.yaw_rad) < 1e-9


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
    n=st.integers(0, 8),
    seed=st.integers(0, 2**31 - 1),
    zero_frac=st.floats(0, 1),
    collapse=st.sampled_from(["none", "src", "dst", "line"]),
    scale_known=st.booleans(),
)
def test_never_returns_nan(n, seed, zero_frac, collapse, scale_known):
    rng = np.random.default_rng(seed)
    src = rng.uniform(-1, 1, (n, 2)) * 10.0 ** rng.uniform(-6, 3)
    dst = rng.uniform(-1, 1, (n, 2)) * 10.0 ** rng.uniform(-6, 3)
    w = rng.uniform(0, 1, n) * (rng.uniform(0, 1, n) >= zero_frac)
    if collapse == "src" and n:
        src[:] = src[0]
    elif collapse == "dst" and n:
        dst[:] = dst[0]
    elif collapse == "line":
        src[:, 1] = 3.0 * src[:, 0]
    try:
        res = P.solve(Correspondences(src, dst, w, scale_known=scale_known))
    except XViewError:
        return
    assert all(math.isfinite(v) for v in res.T_patch_base.to_xyyaw())
    assert math.isfinite(res.scale) and res.scale > 0
    assert np.all(np.isfinite(res.cov_xyyaw)) and np.all(np.diag(res.cov_xyyaw) >= 1e-6 * (1 - 1e-9))
    assert math.isfinite(res.rms_residual_m) and math.isfinite(res.n_effective)


def test_solve_rejects_non_correspondences_and_bad_config():
    src, dst, w = _pts()
    with pytest.raises(GeometryError, match="expected Correspondences"):
        P.solve((src, dst, w))
    with pytest.raises(ConfigError, match="kernel must be one of"):
        P.ProcrustesConfig(kernel="tukey")
    with pytest.raises(ConfigError, match="irls_iterations"):
        P.ProcrustesConfig(irls_iterations=0)
    with pytest.raises(ConfigError, match="cov_sigma_floor_m"):
        P.ProcrustesConfig(cov_sigma_floor_m=-1.0)
    with pytest.raises(ConfigError, match="min_effective_points"):
        P.ProcrustesConfig(min_effective_points=1)
    with pytest.raises(ConfigError, match="min_spread_ratio"):
        P.ProcrustesConfig(min_spread_ratio=1.0)
    assert P.ProcrustesConfig(kernel="huber").tuning == pytest.approx(1.345)


# --------------------------------------------------------------------------------------
# Correspondences contract
# --------------------------------------------------------------------------------------
def test_correspondences_validates_and_copies():
    src, dst, w = _pts()
    c = Correspondences(src, dst, w, scale_known=False)
    assert len(c) == 10 and c.n_points == 10 and c.scale_known is False
    assert c.src_xy_m.dtype == np.float64 and not c.src_xy_m.flags.writeable
    src[0, 0] = 99.0
    assert c.src_xy_m[0, 0] != 99.0
    sub = c.select(c.weight > 0.5)
    assert len(sub) == 10 and sub.scale_known is False
    t = Correspondences(torch.tensor(src, requires_grad=True), torch.tensor(dst), torch.tensor(w))
    np.testing.assert_array_equal(t.src_xy_m, src)
    assert len(Correspondences(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(src_xy_m=np.zeros((3, 3))), r"src_xy_m must have shape \(N, 2\)"),
        (dict(dst_xy_m=np.zeros(6)), r"dst_xy_m must have shape \(N, 2\)"),
        (dict(weight=np.ones((3, 1))), r"weight must have shape \(N,\)"),
        (dict(weight=np.ones(4)), "mismatched N"),
        (dict(src_xy_m=np.array([[0, 0], [1, np.nan], [2, 2]])), "src_xy_m: 1 non-finite"),
        (dict(weight=np.array([0.5, 1.5, 1.0])), r"weight must lie in \[0, 1\]"),
        (dict(weight=np.array([0.5, -0.1, 1.0])), r"weight must lie in \[0, 1\]"),
        (dict(scale_known="yes"), "scale_known must be a bool"),
        (dict(weight=["a", "b", "c"]), "weight: not a numeric array"),
    ],
)
def test_correspondences_rejects_bad_input(kwargs, match):
    base = dict(src_xy_m=np.zeros((3, 2)), dst_xy_m=np.zeros((3, 2)), weight=np.ones(3), scale_known=True)
    base.update(kwargs)
    with pytest.raises(GeometryError, match=match):
        Correspondences(**base)
