"""Pinhole camera with distortion, and camera extrinsics. Lifting pixels into the vehicle's BEV
frame (flat ground, depth, the BEV grid) is :mod:`.lifting`.

Frames and conventions (see docs/conventions.md and docs/camera.md):

* Camera optical frame: z forward, x right, y down. ``base_link``: x forward, y left, z up; the
  ground plane is ``z = ground_z_m`` (0 by default) in ``base_link``.
* ``T_base_camera`` is a 4x4 homogeneous matrix that maps optical-frame points into
  ``base_link``: ``p_base = R @ p_cam + t``.
* Pixels: ``uv_px[:, 0] = u`` (column), ``uv_px[:, 1] = v`` (row); integer (u, v) is the centre
  of pixel ``[v, u]`` (OpenCV). The image covers ``u in [-0.5, W - 0.5]``,
  ``v in [-0.5, H - 0.5]``.
* "Normalized coordinates" are undistorted ``(x / z, y / z)`` of an optical-frame point.
* Invalid outputs are flagged in a boolean ``valid`` array and set to 0, never NaN.

Distortion models are the ROS ``sensor_msgs/CameraInfo`` ones: ``plumb_bob`` (k1, k2, p1, p2,
k3), ``rational_polynomial`` (k1, k2, p1, p2, k3, k4, k5, k6), ``equidistant`` (k1, k2, k3, k4;
OpenCV's fisheye model) and ``none`` (also spelled ``''``). Projection and undistortion use
OpenCV; undistortion iterates to a re-projection error of 1e-10 px, so project -> undistort
round trips agree to ~1e-12 (normalized units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal, Sequence

import cv2
import numpy as np

from .errors import CameraModelError, GeometryError

if TYPE_CHECKING:  # pragma: no cover - typing only
    pass

__all__ = [
    "DISTORTION_COEFF_COUNTS",
    "PinholeCamera",
    "T_base_camera_from_xyz_rpy",
    "camera_xy_base_m",
    "kitti_like_T_base_camera",
]

#: Number of distortion coefficients per supported ``distortion_model``.
DISTORTION_COEFF_COUNTS: dict[str, int] = {
    "none": 0,
    "plumb_bob": 5,
    "rational_polynomial": 8,
    "equidistant": 4,
}

# KITTI raw/odometry camera 2 (rectified colour camera) intrinsics at 1242 x 375.
_KITTI_WIDTH_PX = 1242
_KITTI_HEIGHT_PX = 375
_KITTI_FX_PX = 721.5377
_KITTI_FY_PX = 721.5377
_KITTI_CX_PX = 609.5593
_KITTI_CY_PX = 172.854

# Undistortion iteration limits. For cv2.undistortPoints EPS is the re-projection error in
# pixels (1e-10 px gives ~1e-13 normalized accuracy); for cv2.fisheye it is the theta update.
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)
_UNDISTORT_CRITERIA_FISHEYE = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
# A pixel whose undistorted point re-projects further than this from it is not invertible.
_UNDISTORT_REPROJ_TOL_PX = 1e-3
# Normalized radius beyond which a distorted radial model is never trusted (~88.9 deg).
_MAX_NORMALIZED_RADIUS = 50.0
# Optical z below this (metres) counts as "not in front of the camera".
_MIN_Z_CAM_M = 1e-9
# Optical depth between a point and the camera below which a ground ray counts as horizontal.
_MIN_RAY_DOWN = 1e-12

DepthKind = Literal["metric", "relative", "inverse"]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------
def _as_uv(uv_px: np.ndarray, name: str = "uv_px") -> np.ndarray:
    uv = np.asarray(uv_px, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise GeometryError(f"{name} must have shape (N, 2), got {uv.shape}")
    if not np.all(np.isfinite(uv)):
        raise GeometryError(f"{name} has non-finite entries")
    return uv


def _check_T(T: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a rigid 4x4 transform; return (R (3,3), t (3,))."""
    m = np.asarray(T, dtype=np.float64)
    if m.shape != (4, 4):
        raise GeometryError(f"{name} must be a 4x4 matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise GeometryError(f"{name} has non-finite entries")
    if not np.allclose(m[3], (0.0, 0.0, 0.0, 1.0), atol=1e-9):
        raise GeometryError(f"{name}: last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    r = m[:3, :3]
    if not np.allclose(r.T @ r, np.eye(3), atol=1e-6) or np.linalg.det(r) <= 0.0:
        raise GeometryError(f"{name}: the 3x3 block is not a rotation matrix")
    return r, m[:3, 3].copy()


def _rotate(r: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points (N, 3) -> (r @ points.T).T``, written out: a BLAS matmul with a 3-wide inner
    dimension is slow (and thread-hungry) for large N."""
    return points[:, 0:1] * r[:, 0] + points[:, 1:2] * r[:, 1] + points[:, 2:3] * r[:, 2]


def _check_camera_above_ground(t_base_cam: np.ndarray, ground_z_m: float) -> None:
    if not math.isfinite(ground_z_m):
        raise GeometryError(f"ground_z_m must be finite, got {ground_z_m!r}")
    if t_base_cam[2] <= ground_z_m:
        raise GeometryError(
            f"T_base_camera: camera centre z={t_base_cam[2]:.3f} m is not above the ground plane "
            f"z={ground_z_m:.3f} m"
        )


def _max_monotonic_radius(model: str, d: tuple[float, ...]) -> float:
    """Largest undistorted normalized radius up to which the radial distortion is invertible.

    Beyond it the distorted radius stops growing, so points far outside the field of view can
    "fold" back into the image. Tangential terms are ignored (they are small in practice).
    Returns ``inf`` for the undistorted model.
    """
    if model == "none":
        return math.inf
    if model == "equidistant":
        theta = np.linspace(0.0, math.pi / 2.0, 200_001)[:-1]
        t2 = theta * theta
        k1, k2, k3, k4 = d
        theta_d = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        bad = np.flatnonzero((np.diff(theta_d) <= 0.0) | (theta_d[1:] <= 0.0))
        theta_max = theta[bad[0]] if bad.size else theta[-1]
        return float(math.tan(theta_max))
    r = np.linspace(0.0, _MAX_NORMALIZED_RADIUS, 500_001)
    r2 = r * r
    k1, k2, _p1, _p2, k3 = d[:5]
    num = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    den = np.ones_like(r)
    if model == "rational_polynomial":
        k4, k5, k6 = d[5:8]
        den = 1.0 + r2 * (k4 + r2 * (k5 + r2 * k6))
    with np.errstate(divide="ignore", invalid="ignore"):
        r_d = r * num / den
    bad_sample = (den[1:] <= 0.0) | (num[1:] <= 0.0) | ~np.isfinite(r_d[1:])
    bad = np.flatnonzero(bad_sample | (np.diff(r_d) <= 0.0))
    return float(r[bad[0]]) if bad.size else _MAX_NORMALIZED_RADIUS


# --------------------------------------------------------------------------------------------
# Camera model
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PinholeCamera:
    """A pinhole camera with optional lens distortion, built from ``CameraInfo`` fields.

    Fields mirror ``sensor_msgs/CameraInfo``: ``k`` is the 9-element row-major intrinsic matrix
    (``fx 0 cx; 0 fy cy; 0 0 1``; skew must be 0), ``d`` the distortion coefficients in ROS
    order, ``distortion_model`` one of :data:`DISTORTION_COEFF_COUNTS` (``''`` is stored as
    ``'none'``; ``'none'`` also accepts an all-zero ``d``, stored as ``()``). ``K`` and ``D`` give
    them as numpy arrays for OpenCV. Invalid values raise :class:`CameraModelError`.
    """

    width_px: int
    height_px: int
    k: tuple[float, ...]
    d: tuple[float, ...] = ()
    distortion_model: str = "none"

    def __post_init__(self) -> None:
        for name in ("width_px", "height_px"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise CameraModelError(f"{name} must be an integer, got {value!r}")
            if int(value) <= 0:
                raise CameraModelError(f"{name} must be positive, got {value}")
            object.__setattr__(self, name, int(value))

        try:
            k = tuple(float(x) for x in np.asarray(self.k, dtype=np.float64).reshape(-1))
            d = tuple(float(x) for x in np.asarray(self.d, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError) as exc:
            raise CameraModelError(f"camera k/d must be numeric sequences: {exc}") from exc
        if len(k) != 9:
            raise CameraModelError(f"k must have 9 elements (row-major 3x3), got {len(k)}")
        if not all(math.isfinite(x) for x in k):
            raise CameraModelError(f"k has non-finite entries: {list(k)}")
        fx, skew, _cx, k10, fy, _cy, k20, k21, k22 = k
        if fx <= 0.0 or fy <= 0.0:
            raise CameraModelError(f"k: focal lengths must be > 0, got fx={fx}, fy={fy}")
        if skew != 0.0:
            raise CameraModelError(f"k: non-zero skew k[1]={skew} is not supported")
        if k10 != 0.0 or k20 != 0.0 or k21 != 0.0 or k22 != 1.0:
            raise CameraModelError(
                f"k: last rows must be [0, fy, cy] and [0, 0, 1], got {[k10, fy, _cy]} and "
                f"{[k20, k21, k22]}"
            )

        if not isinstance(self.distortion_model, str):
            raise CameraModelError(
                f"distortion_model must be a string, got {type(self.distortion_model).__name__}"
            )
        model = "none" if self.distortion_model == "" else self.distortion_model
        if model not in DISTORTION_COEFF_COUNTS:
            raise CameraModelError(
                f"distortion_model {self.distortion_model!r} is not supported; use one of "
                f"{sorted(DISTORTION_COEFF_COUNTS)} (or '' for none)"
            )
        if not all(math.isfinite(x) for x in d):
            raise CameraModelError(f"d has non-finite entries: {list(d)}")
        if model == "none" and d and all(x == 0.0 for x in d):
            d = ()
        expected = DISTORTION_COEFF_COUNTS[model]
        if len(d) != expected:
            raise CameraModelError(
                f"d has {len(d)} coefficients but distortion_model {model!r} needs {expected}"
            )
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "d", d)
        object.__setattr__(self, "distortion_model", model)

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def from_camera_info(
        cls,
        width: int,
        height: int,
        k: Sequence[float],
        d: Sequence[float],
        distortion_model: str,
    ) -> "PinholeCamera":
        """From the fields of a ``sensor_msgs/CameraInfo`` (plain lists/arrays are fine)."""
        return cls(width, height, k, d, distortion_model)

    @classmethod
    def from_intrinsics(
        cls,
        width_px: int,
        height_px: int,
        fx_px: float,
        fy_px: float,
        cx_px: float,
        cy_px: float,
        d: Sequence[float] = (),
        distortion_model: str = "none",
    ) -> "PinholeCamera":
        """From focal lengths and principal point in pixels."""
        k = (fx_px, 0.0, cx_px, 0.0, fy_px, cy_px, 0.0, 0.0, 1.0)
        return cls(width_px, height_px, k, tuple(d), distortion_model)

    @classmethod
    def kitti_like(
        cls, width_px: int = _KITTI_WIDTH_PX, height_px: int = _KITTI_HEIGHT_PX
    ) -> "PinholeCamera":
        """The KITTI colour camera (fx = fy = 721.5377, cx = 609.5593, cy = 172.854 at
        1242 x 375, no distortion), resized to ``width_px`` x ``height_px`` (see :meth:`resized`)."""
        base = cls.from_intrinsics(
            _KITTI_WIDTH_PX,
            _KITTI_HEIGHT_PX,
            _KITTI_FX_PX,
            _KITTI_FY_PX,
            _KITTI_CX_PX,
            _KITTI_CY_PX,
        )
        if (width_px, height_px) == (_KITTI_WIDTH_PX, _KITTI_HEIGHT_PX):
            return base
        return base.resized(width_px, height_px)

    def resized(self, width_px: int, height_px: int) -> "PinholeCamera":
        """The camera of this image resized to ``width_px`` x ``height_px`` (e.g. cv2.resize).

        With pixel centres at integer coordinates, a resize by ``s = new / old`` maps
        ``u' = (u + 0.5) * s - 0.5``, so ``fx' = s * fx`` and ``cx' = (cx + 0.5) * s - 0.5``
        (same for y). Distortion acts on normalized coordinates and is kept unchanged.
        """
        probe = PinholeCamera(width_px, height_px, self.k, self.d, self.distortion_model)
        sx = probe.width_px / self.width_px
        sy = probe.height_px / self.height_px
        return PinholeCamera.from_intrinsics(
            probe.width_px,
            probe.height_px,
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            self.d,
            self.distortion_model,
        )

    # -- accessors ----------------------------------------------------------------------------
    @property
    def K(self) -> np.ndarray:
        """The 3x3 intrinsic matrix (a fresh float64 array)."""
        return np.array(self.k, dtype=np.float64).reshape(3, 3)

    @property
    def D(self) -> np.ndarray:
        """The distortion coefficients (a fresh float64 array, possibly empty)."""
        return np.array(self.d, dtype=np.float64)

    @property
    def fx(self) -> float:
        return self.k[0]

    @property
    def fy(self) -> float:
        return self.k[4]

    @property
    def cx(self) -> float:
        return self.k[2]

    @property
    def cy(self) -> float:
        return self.k[5]

    @property
    def size_px(self) -> tuple[int, int]:
        """``(height_px, width_px)``, numpy order."""
        return (self.height_px, self.width_px)

    @cached_property
    def max_normalized_radius(self) -> float:
        """Undistorted normalized radius (``sqrt(x^2 + y^2) / z``) up to which the radial
        distortion is invertible; points beyond it are reported invalid by :meth:`project`."""
        return _max_monotonic_radius(self.distortion_model, self.d)

    # -- geometry -----------------------------------------------------------------------------
    def in_image(self, uv_px: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: the pixel lies inside the image, edges included
        (``-0.5 <= u <= W - 0.5`` and ``-0.5 <= v <= H - 0.5``)."""
        uv = _as_uv(uv_px)
        return (
            (uv[:, 0] >= -0.5)
            & (uv[:, 0] <= self.width_px - 0.5)
            & (uv[:, 1] >= -0.5)
            & (uv[:, 1] <= self.height_px - 0.5)
        )

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project optical-frame points (N, 3) in metres to distorted pixels.

        Returns ``uv_px (N, 2)`` float64 and ``valid (N,)`` bool. A point is valid when it is
        finite, in front of the camera (z > 0) and inside the invertible part of the distortion
        model (:attr:`max_normalized_radius`). Valid does not mean inside the image: combine with
        :meth:`in_image`. Invalid points get ``uv = 0``.
        """
        p = np.asarray(points_cam, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise GeometryError(f"points_cam must have shape (N, 3), got {p.shape}")
        n = p.shape[0]
        uv = np.zeros((n, 2), dtype=np.float64)
        valid = np.all(np.isfinite(p), axis=1)
        valid[valid] = p[valid, 2] > _MIN_Z_CAM_M
        if np.any(valid):
            pv = p[valid]
            r_n = np.hypot(pv[:, 0], pv[:, 1]) / pv[:, 2]
            inside = r_n < self.max_normalized_radius
            valid[np.flatnonzero(valid)[~inside]] = False
        if not np.any(valid):
            return uv, valid
        pv = p[valid]
        if self.distortion_model == "none":
            uv[valid, 0] = self.fx * pv[:, 0] / pv[:, 2] + self.cx
            uv[valid, 1] = self.fy * pv[:, 1] / pv[:, 2] + self.cy
        elif self.distortion_model == "equidistant":
            img, _ = cv2.fisheye.projectPoints(
                pv.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), self.K, self.D
            )
            uv[valid] = img.reshape(-1, 2)
        else:
            img, _ = cv2.projectPoints(pv, np.zeros(3), np.zeros(3), self.K, self.D)
            uv[valid] = img.reshape(-1, 2)
        # OpenCV never returns NaN for these inputs, but keep the contract explicit.
        bad = ~np.all(np.isfinite(uv), axis=1)
        if np.any(bad):
            uv[bad] = 0.0
            valid &= ~bad
        return uv, valid

    def undistort(self, uv_px: np.ndarray) -> np.ndarray:
        """Distorted pixels (N, 2) -> undistorted normalized coordinates ``(x/z, y/z)`` (N, 2).

        Uses ``cv2.undistortPoints`` (plumb_bob, rational_polynomial) or
        ``cv2.fisheye.undistortPoints`` (equidistant), iterated to convergence. For pixels
        outside the invertible region the result is only approximate; use
        :meth:`undistort_checked` to know.
        """
        uv = _as_uv(uv_px)
        if uv.shape[0] == 0:
            return np.zeros((0, 2), dtype=np.float64)
        if self.distortion_model == "none":
            return np.stack(((uv[:, 0] - self.cx) / self.fx, (uv[:, 1] - self.cy) / self.fy), 1)
        src = np.ascontiguousarray(uv.reshape(-1, 1, 2))
        if self.distortion_model == "equidistant":
            out = cv2.fisheye.undistortPoints(
                src, self.K, self.D, None, None, None, _UNDISTORT_CRITERIA_FISHEYE
            )
        else:
            out = cv2.undistortPoints(src, self.K, self.D, None, None, None, _UNDISTORT_CRITERIA)
        return out.reshape(-1, 2).astype(np.float64)

    def undistort_checked(self, uv_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`undistort`, plus ``ok (N,)``: the normalized point lies in the invertible
        region and re-projects onto the pixel within 1e-3 px. Not-ok rows are set to 0."""
        xy_n = self.undistort(uv_px)
        n = xy_n.shape[0]
        if self.distortion_model == "none" or n == 0:
            return xy_n, np.ones(n, dtype=bool)
        uv = _as_uv(uv_px)
        ok = np.all(np.isfinite(xy_n), axis=1)
        xy_safe = np.where(ok[:, None], xy_n, 0.0)
        uv_back, valid = self.project(np.column_stack((xy_safe, np.ones(n))))
        err_px = np.hypot(*(uv_back - uv).T)
        ok &= valid & (err_px <= _UNDISTORT_REPROJ_TOL_PX)
        xy_n[~ok] = 0.0
        return xy_n, ok

    def rays_camera(self, uv_px: np.ndarray) -> np.ndarray:
        """Unit viewing rays (N, 3) in the optical frame (z forward, x right, y down) of the
        distorted pixels ``uv_px (N, 2)``. Every ray has z > 0."""
        xy_n = self.undistort(uv_px)
        rays = np.column_stack((xy_n, np.ones(xy_n.shape[0])))
        return rays / np.linalg.norm(rays, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Extrinsics
# --------------------------------------------------------------------------------------------
# Columns are the optical x, y, z axes expressed in the camera body frame (x fwd, y left, z up):
# optical x = -body y, optical y = -body z, optical z = body x.
_R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def T_base_camera_from_xyz_rpy(
    x_m: float, y_m: float, z_m: float, roll_rad: float, pitch_rad: float, yaw_rad: float
) -> np.ndarray:
    """``T_base_camera`` (4x4, optical frame -> base_link) of a camera at ``(x_m, y_m, z_m)``.

    Roll/pitch/yaw (REP-103, applied as ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``) orient the camera's
    *body* frame (x forward, y left, z up) in ``base_link``; the optical frame is then fixed to
    it (optical z = body x, optical x = -body y, optical y = -body z). All zeros is a camera
    looking straight ahead along base x. Positive pitch tilts the camera DOWN (right-handed
    rotation about the left-pointing y axis); positive yaw turns it to the left.
    """
    vals = (x_m, y_m, z_m, roll_rad, pitch_rad, yaw_rad)
    if not all(math.isfinite(float(v)) for v in vals):
        raise GeometryError(f"T_base_camera_from_xyz_rpy: non-finite input {vals!r}")
    cr, sr = math.cos(roll_rad), math.sin(roll_rad)
    cp, sp = math.cos(pitch_rad), math.sin(pitch_rad)
    cy, sy = math.cos(yaw_rad), math.sin(yaw_rad)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    T = np.eye(4)
    T[:3, :3] = rz @ ry @ rx @ _R_BODY_OPTICAL
    T[:3, 3] = (x_m, y_m, z_m)
    return T


def kitti_like_T_base_camera(
    height_m: float = 1.65, x_m: float = 0.0, pitch_rad: float = 0.0
) -> np.ndarray:
    """A forward-looking camera ``height_m`` above the ground, ``x_m`` ahead of base_link,
    tilted down by ``pitch_rad`` (REP-103 sign; see :func:`T_base_camera_from_xyz_rpy`)."""
    return T_base_camera_from_xyz_rpy(x_m, 0.0, height_m, 0.0, pitch_rad, 0.0)


def camera_xy_base_m(T_base_camera: np.ndarray) -> np.ndarray:
    """The camera centre's ground projection ``(x, y)`` in base_link, shape (2,)."""
    _, t = _check_T(T_base_camera, "T_base_camera")
    return t[:2].copy()
