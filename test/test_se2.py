"""Property tests of xview_localizer.core.se2 (SE2 / Sim2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xview_localizer.core.errors import GeometryError
from xview_localizer.core.se2 import SE2, Sim2, wrap_angle_rad

coord = st.floats(-1e3, 1e3, allow_nan=False)
angle = st.floats(-50.0, 50.0, allow_nan=False)
log_scale = st.floats(-3.0, 3.0)
se2s = st.builds(SE2, coord, coord, angle)
sim2s = st.builds(lambda x, y, a, ls: Sim2(x, y, a, math.exp(ls)), coord, coord, angle, log_scale)
points = st.lists(st.tuples(coord, coord), min_size=1, max_size=8).map(np.array)


def assert_same_pose(a, b, tol=1e-6):
    assert abs(a.x_m - b.x_m) <= tol * (1 + abs(b.x_m))
    assert abs(a.y_m - b.y_m) <= tol * (1 + abs(b.y_m))
    assert abs(math.remainder(a.yaw_rad - b.yaw_rad, 2 * math.pi)) <= tol
    if isinstance(b, Sim2):
        assert abs(a.scale - b.scale) <= tol * b.scale


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.floats(-1e6, 1e6, allow_nan=False))
def test_wrap_angle_range_and_equivalence(a):
    w = wrap_angle_rad(a)
    assert -math.pi <= w < math.pi
    assert abs(math.sin(w) - math.sin(a)) < 1e-6 and abs(math.cos(w) - math.cos(a)) < 1e-6


def test_wrap_angle_edges():
    assert wrap_angle_rad(math.pi) == -math.pi
    assert wrap_angle_rad(-math.pi) == -math.pi
    assert wrap_angle_rad(3 * math.pi) == -math.pi
    assert wrap_angle_rad(0.0) == 0.0
    assert SE2(0, 0, math.pi).yaw_rad == -math.pi
    assert Sim2(0, 0, 2 * math.pi + 0.5, 2.0).yaw_rad == pytest.approx(0.5)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(se2s)
def test_se2_yaw_is_wrapped(T):
    assert -math.pi <= T.yaw_rad < math.pi


@settings(max_examples=150, deadline=None, derandomize=True)
@given(se2s, se2s, se2s)
def test_se2_compose_is_associative(a, b, c):
    assert_same_pose((a @ b) @ c, a @ (b @ c), tol=1e-9)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(sim2s, sim2s, sim2s)
def test_sim2_compose_is_associative(a, b, c):
    left, right = (a @ b) @ c, a @ (b @ c)
    scale = max(1.0, a.scale * b.scale, a.scale)
    assert abs(left.x_m - right.x_m) <= 1e-9 * scale * (1 + abs(right.x_m))
    assert abs(left.y_m - right.y_m) <= 1e-9 * scale * (1 + abs(right.y_m))
    assert abs(math.remainder(left.yaw_rad - right.yaw_rad, 2 * math.pi)) <= 1e-9
    assert left.scale == pytest.approx(right.scale, rel=1e-12)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(se2s)
def test_se2_inverse(T):
    ident = SE2.identity()
    assert_same_pose(T @ T.inverse(), ident, tol=1e-9)
    assert_same_pose(T.inverse() @ T, ident, tol=1e-9)
    assert_same_pose(T.inverse().inverse(), T, tol=1e-9)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(sim2s)
def test_sim2_inverse(T):
    assert_same_pose(T @ T.inverse(), Sim2.identity(), tol=1e-8)
    assert_same_pose(T.inverse() @ T, Sim2.identity(), tol=1e-8)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(se2s, se2s, points)
def test_se2_apply_matches_matrix_and_compose(a, b, pts):
    homog = np.c_[pts, np.ones(len(pts))]
    np.testing.assert_allclose(a.apply(pts), (homog @ a.matrix().T)[:, :2], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose((a @ b).apply(pts), a.apply(b.apply(pts)), rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(a.inverse().apply(a.apply(pts)), pts, rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose((a @ b).matrix(), a.matrix() @ b.matrix(), rtol=1e-9, atol=1e-7)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(sim2s, sim2s, points)
def test_sim2_apply_matches_matrix_and_compose(a, b, pts):
    homog = np.c_[pts, np.ones(len(pts))]
    np.testing.assert_allclose(a.apply(pts), (homog @ a.matrix().T)[:, :2], rtol=1e-12, atol=1e-8)
    mag = 1.0 + np.abs(a.apply(b.apply(pts))).max()
    np.testing.assert_allclose((a @ b).apply(pts), a.apply(b.apply(pts)), atol=1e-9 * mag)
    product = a.matrix() @ b.matrix()
    np.testing.assert_allclose((a @ b).matrix(), product, atol=1e-9 * (1 + np.abs(product).max()))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(sim2s, se2s)
def test_sim2_composes_with_se2(a, b):
    got = a @ b
    assert isinstance(got, Sim2)
    np.testing.assert_allclose(got.matrix(), a.matrix() @ b.matrix(), atol=1e-9 * (1 + np.abs(got.matrix()).max()))
    assert_same_pose(b.to_sim2().to_se2(), b, tol=0)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(se2s)
def test_se2_matrix_round_trip(T):
    assert_same_pose(SE2.from_matrix(T.matrix()), T, tol=1e-12)
    assert SE2.from_xyyaw(*T.to_xyyaw()) == T
    np.testing.assert_allclose(T.translation_m, [T.x_m, T.y_m])


@settings(max_examples=150, deadline=None, derandomize=True)
@given(sim2s)
def test_sim2_matrix_round_trip(T):
    assert_same_pose(Sim2.from_matrix(T.matrix()), T, tol=1e-10)


def test_apply_single_point_and_yaw_convention():
    # REP-103: yaw +90 deg turns the body x axis (forward) to ENU north.
    T = SE2(10.0, 20.0, math.pi / 2)
    np.testing.assert_allclose(T.apply(np.array([1.0, 0.0])), [[10.0, 21.0]], atol=1e-12)
    np.testing.assert_allclose(Sim2(0, 0, 0, 3.0).apply(np.array([1.0, 2.0])), [[3.0, 6.0]])


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SE2(float("nan"), 0, 0), "non-finite"),
        (lambda: SE2(0, 0, float("inf")), "non-finite"),
        (lambda: Sim2(0, 0, 0, 0.0), "scale must be > 0"),
        (lambda: Sim2(0, 0, 0, -1.0), "scale must be > 0"),
        (lambda: Sim2(0, float("nan"), 0, 1.0), "non-finite"),
        (lambda: SE2.from_matrix(np.eye(2)), "must be 3x3"),
        (lambda: SE2.from_matrix(np.diag([1.0, -1.0, 1.0])), "not a rotation"),
        (lambda: SE2.from_matrix(np.diag([2.0, 2.0, 1.0])), "not a rotation"),
        (lambda: SE2.from_matrix(np.full((3, 3), np.nan)), "non-finite"),
        (lambda: Sim2.from_matrix(np.diag([1.0, -1.0, 1.0])), "not a scaled rotation"),
        (lambda: Sim2.from_matrix(np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 1]])), "not a scaled rotation"),
        (lambda: Sim2.from_matrix(np.ones((4, 4))), "must be 3x3"),
        (lambda: SE2().apply(np.zeros((3, 3))), r"shape \(N, 2\)"),
        (lambda: SE2().apply(np.zeros(3)), r"shape \(N, 2\)"),
        (lambda: Sim2().apply(np.zeros((2, 2, 2))), r"shape \(N, 2\)"),
        (lambda: SE2() @ Sim2(), "cannot compose SE2"),
        (lambda: Sim2().compose("x"), "cannot compose Sim2"),
    ],
)
def test_bad_shapes_and_values_raise(make, match):
    with pytest.raises(GeometryError, match=match):
        make()
