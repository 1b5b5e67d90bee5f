"""Equirectangular camera model and BEV lifting (camera_pano)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xview_localizer.core.camera import PinholeCamera, T_base_camera_from_xyz_rpy
from xview_localizer.core.camera_pano import (
    EquirectangularCamera,
    bev_sampling_grid_any,
    lift_depth,
    lift_flat_ground,
)
from xview_localizer.core.camera_pano import bev_sampling_grid as pano_grid
from xview_localizer.core.errors import CameraModelError, GeometryError
from xview_localizer.core.lifting import BevGrid, bev_sampling_grid, bev_sampling_grid_to_torch

CAM = EquirectangularCamera(2048, 1024)
T_LEVEL = T_base_camera_from_xyz_rpy(0.5, 0.2, 2.5, 0.0, 0.0, 0.0)


def test_cardinal_directions():
    w, h = CAM.width_px, CAM.height_px
    uv = np.array([[(w - 1) / 2, (h - 1) / 2], [w / 4 - 0.5, (h - 1) / 2], [3 * w / 4 - 0.5, (h - 1) / 2],
                   [(w - 1) / 2, -0.5], [(w - 1) / 2, h - 0.5]])
    rays = CAM.pixel_to_ray(uv)
    np.testing.assert_allclose(rays, [[0, 0, 1], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0]], atol=1e-12)


def test_pseudo_intrinsics_match_the_model():
    rng = np.random.default_rng(0)
    uv = rng.uniform([-0.5, 0.0], [2047.0, 1023.0], (100, 2))
    r = CAM.pixel_to_ray(uv)
    phi = np.arctan2(r[:, 0], r[:, 2])
    theta = np.arcsin(-r[:, 1])
    K = CAM.K
    np.testing.assert_allclose(K[0, 0] * phi + K[0, 2], uv[:, 0], atol=1e-9)
    np.testing.assert_allclose(-K[1, 1] * theta + K[1, 2], uv[:, 1], atol=1e-9)
    EquirectangularCamera.from_K(2048, 1024, K)
    with pytest.raises(CameraModelError):
        EquirectangularCamera.from_K(2048, 1024, np.eye(3))


@settings(max_examples=200, deadline=None)
@given(u=st.floats(-0.5, 2047.49), v=st.floats(0.0, 1023.0), d=st.floats(0.1, 100.0))
def test_project_ray_round_trip(u, v, d):
    uv = np.array([[u, v]])
    uv2, ok = CAM.project(d * CAM.pixel_to_ray(uv))
    assert ok.all()
    np.testing.assert_allclose(uv2, uv, atol=1e-6)


def test_flat_ground_and_bev_grid_agree():
    bev = BevGrid((32, 32), 0.5)
    uv, valid = pano_grid(CAM, T_LEVEL, bev)
    assert uv.dtype == np.float32 and uv.shape == (32, 32, 2)
    assert valid.all()  # a full panorama sees every ground cell
    xy, ok = lift_flat_ground(CAM, T_LEVEL, uv.reshape(-1, 2).astype(float))
    assert ok.all()
    np.testing.assert_allclose(xy, bev.cell_centres_base_xy().reshape(-1, 2), atol=2e-3)  # float32 uv
    # a point ahead of the camera lies on the centre column, below the horizon
    u, v = pano_grid(CAM, T_LEVEL, BevGrid((1, 1), 1.0))[0][0, 0]
    assert v > (CAM.height_px - 1) / 2
    grid = bev_sampling_grid_to_torch(uv, valid, CAM.width_px, CAM.height_px)
    assert grid.shape == (32, 32, 2) and float(grid.abs().max()) <= 1.0


def test_behind_and_above_horizon():
    xy, ok = lift_flat_ground(CAM, T_LEVEL, np.array([[0.0, 100.0], [10.0, 1000.0], [1023.5, 511.5]]))
    assert not ok[0] and ok[1] and not ok[2]  # sky, ground behind-left, horizon
    assert xy[1, 0] < 0.5  # behind the camera (camera at x = 0.5)
    np.testing.assert_array_equal(xy[[0, 2]], 0.0)


def test_lift_depth_range():
    rng = np.random.default_rng(1)
    p_base = rng.uniform([-20, -20, -1], [20, 20, 5], (50, 3))
    R, t = T_LEVEL[:3, :3], T_LEVEL[:3, 3]
    p_cam = (p_base - t) @ R
    uv, ok = CAM.project(p_cam)
    assert ok.all()
    xy, valid = lift_depth(CAM, T_LEVEL, uv, np.linalg.norm(p_cam, axis=1))
    assert valid.all()
    np.testing.assert_allclose(xy, p_base[:, :2], atol=1e-6)
    xy, valid = lift_depth(CAM, T_LEVEL, uv[:2], np.array([-1.0, np.nan]))
    assert not valid.any() and not xy.any()


def test_dispatch_keeps_pinhole_behaviour():
    cam = PinholeCamera.kitti_like(1024, 256)
    T = T_base_camera_from_xyz_rpy(0.0, 0.0, 1.65, 0.0, 0.0, 0.0)
    bev = BevGrid((16, 16), 1.0)
    a = bev_sampling_grid(cam, T, bev)
    b = bev_sampling_grid_any(cam, T, bev)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(bev_sampling_grid_any(CAM, T_LEVEL, bev)[0], pano_grid(CAM, T_LEVEL, bev)[0])


def test_bad_inputs():
    with pytest.raises(CameraModelError, match="width_px"):
        EquirectangularCamera(0, 10)
    with pytest.raises(GeometryError, match="uv_px"):
        CAM.pixel_to_ray(np.zeros((3, 3)))
    with pytest.raises(GeometryError, match="not above the ground"):
        lift_flat_ground(CAM, T_base_camera_from_xyz_rpy(0, 0, -1.0, 0, 0, 0), np.zeros((1, 2)))
    with pytest.raises(GeometryError, match="BevGrid"):
        pano_grid(CAM, T_LEVEL, (4, 4))
    uv, ok = CAM.project(np.array([[0.0, 0.0, 0.0], [np.nan, 0, 1]]))
    assert not ok.any() and not uv.any()
    assert math.isfinite(float(CAM.K.sum()))
