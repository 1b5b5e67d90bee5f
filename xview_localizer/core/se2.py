"""Small typed planar rigid (SE(2)) and similarity (Sim(2)) transforms.

Naming: ``T_a_b`` maps points expressed in frame ``b`` into frame ``a``
(``p_a = T_a_b.apply(p_b)``), so ``T_a_c = T_a_b @ T_b_c``. Yaw is the rotation of
frame ``b``'s x axis in frame ``a``, counter-clockwise positive, in radians, wrapped to
[-pi, pi). Sim(2) adds a positive ``scale``: ``p_a = scale * R(yaw) p_b + t``.

Both types are frozen dataclasses; shapes and values are checked with
:class:`~xview_localizer.core.errors.GeometryError` (a ``ValueError``), never ``assert``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import GeometryError


def wrap_angle_rad(angle_rad):
    """Wrap angles (a float or an array) to [-pi, pi); returns the same kind."""
    a = (np.asarray(angle_rad, dtype=float) + math.pi) % (2.0 * math.pi) - math.pi
    # Floating point can land exactly on +pi for inputs just below it.
    a = np.where(a >= math.pi, -math.pi, a)
    return float(a) if a.ndim == 0 else a


def _as_points(points_xy: np.ndarray) -> np.ndarray:
    pts = np.asarray(points_xy, dtype=float)
    if pts.ndim == 1 and pts.shape == (2,):
        return pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise GeometryError(f"points must have shape (N, 2) or (2,), got {pts.shape}")
    return pts


def _check_finite(name: str, *values: float) -> None:
    for v in values:
        if not math.isfinite(v):
            raise GeometryError(f"{name}: non-finite value {v!r}")


@dataclass(frozen=True)
class SE2:
    """A planar rigid transform: rotation by ``yaw_rad``, then translation ``(x_m, y_m)``."""

    x_m: float = 0.0
    y_m: float = 0.0
    yaw_rad: float = 0.0

    def __post_init__(self) -> None:
        _check_finite("SE2", self.x_m, self.y_m, self.yaw_rad)
        object.__setattr__(self, "x_m", float(self.x_m))
        object.__setattr__(self, "y_m", float(self.y_m))
        object.__setattr__(self, "yaw_rad", wrap_angle_rad(self.yaw_rad))

    # -- constructors ---------------------------------------------------------------
    @classmethod
    def identity(cls) -> "SE2":
        return cls(0.0, 0.0, 0.0)

    @classmethod
    def from_xyyaw(cls, x_m: float, y_m: float, yaw_rad: float) -> "SE2":
        return cls(x_m, y_m, yaw_rad)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "SE2":
        """From a 3x3 homogeneous matrix whose 2x2 block is a rotation."""
        m = np.asarray(matrix, dtype=float)
        if m.shape != (3, 3):
            raise GeometryError(f"SE2 matrix must be 3x3, got {m.shape}")
        if not np.all(np.isfinite(m)):
            raise GeometryError("SE2 matrix has non-finite entries")
        r = m[:2, :2]
        if not np.allclose(r.T @ r, np.eye(2), atol=1e-6) or np.linalg.det(r) < 0:
            raise GeometryError("SE2 matrix's 2x2 block is not a rotation")
        return cls(m[0, 2], m[1, 2], math.atan2(m[1, 0], m[0, 0]))

    # -- accessors --------------------------------------------------------------------
    def to_xyyaw(self) -> tuple[float, float, float]:
        return (self.x_m, self.y_m, self.yaw_rad)

    @property
    def translation_m(self) -> np.ndarray:
        return np.array([self.x_m, self.y_m])

    def rotation_matrix(self) -> np.ndarray:
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        return np.array([[c, -s], [s, c]])

    def matrix(self) -> np.ndarray:
        """The 3x3 homogeneous matrix."""
        m = np.eye(3)
        m[:2, :2] = self.rotation_matrix()
        m[:2, 2] = (self.x_m, self.y_m)
        return m

    # -- group operations ---------------------------------------------------------
    def compose(self, other: "SE2") -> "SE2":
        """``self @ other``: apply ``other`` first, then ``self``."""
        if not isinstance(other, SE2):
            raise GeometryError(f"cannot compose SE2 with {type(other).__name__}")
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        return SE2(
            self.x_m + c * other.x_m - s * other.y_m,
            self.y_m + s * other.x_m + c * other.y_m,
            self.yaw_rad + other.yaw_rad,
        )

    def __matmul__(self, other: "SE2") -> "SE2":
        return self.compose(other)

    def inverse(self) -> "SE2":
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        return SE2(-(c * self.x_m + s * self.y_m), -(-s * self.x_m + c * self.y_m), -self.yaw_rad)

    def apply(self, points_xy: np.ndarray) -> np.ndarray:
        """Transform points of shape (N, 2) (or one point (2,)); returns (N, 2)."""
        pts = _as_points(points_xy)
        return pts @ self.rotation_matrix().T + self.translation_m

    def to_sim2(self) -> "Sim2":
        return Sim2(self.x_m, self.y_m, self.yaw_rad, 1.0)


@dataclass(frozen=True)
class Sim2:
    """A planar similarity: ``p -> scale * R(yaw_rad) p + (x_m, y_m)``, ``scale > 0``."""

    x_m: float = 0.0
    y_m: float = 0.0
    yaw_rad: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_finite("Sim2", self.x_m, self.y_m, self.yaw_rad, self.scale)
        if self.scale <= 0.0:
            raise GeometryError(f"Sim2 scale must be > 0, got {self.scale!r}")
        object.__setattr__(self, "x_m", float(self.x_m))
        object.__setattr__(self, "y_m", float(self.y_m))
        object.__setattr__(self, "yaw_rad", wrap_angle_rad(self.yaw_rad))
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def identity(cls) -> "Sim2":
        return cls()

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "Sim2":
        m = np.asarray(matrix, dtype=float)
        if m.shape != (3, 3):
            raise GeometryError(f"Sim2 matrix must be 3x3, got {m.shape}")
        if not np.all(np.isfinite(m)):
            raise GeometryError("Sim2 matrix has non-finite entries")
        sr = m[:2, :2]
        scale = math.sqrt(abs(np.linalg.det(sr)))
        if scale <= 0 or np.linalg.det(sr) < 0:
            raise GeometryError("Sim2 matrix's 2x2 block is not a scaled rotation")
        r = sr / scale
        if not np.allclose(r.T @ r, np.eye(2), atol=1e-6):
            raise GeometryError("Sim2 matrix's 2x2 block is not a scaled rotation")
        return cls(m[0, 2], m[1, 2], math.atan2(r[1, 0], r[0, 0]), scale)

    def to_xyyaw(self) -> tuple[float, float, float]:
        return (self.x_m, self.y_m, self.yaw_rad)

    @property
    def translation_m(self) -> np.ndarray:
        return np.array([self.x_m, self.y_m])

    def rotation_matrix(self) -> np.ndarray:
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        return np.array([[c, -s], [s, c]])

    def matrix(self) -> np.ndarray:
        m = np.eye(3)
        m[:2, :2] = self.scale * self.rotation_matrix()
        m[:2, 2] = (self.x_m, self.y_m)
        return m

    def compose(self, other: "Sim2 | SE2") -> "Sim2":
        if isinstance(other, SE2):
            other = other.to_sim2()
        if not isinstance(other, Sim2):
            raise GeometryError(f"cannot compose Sim2 with {type(other).__name__}")
        t = self.scale * self.rotation_matrix() @ other.translation_m + self.translation_m
        return Sim2(t[0], t[1], self.yaw_rad + other.yaw_rad, self.scale * other.scale)

    def __matmul__(self, other: "Sim2 | SE2") -> "Sim2":
        return self.compose(other)

    def inverse(self) -> "Sim2":
        inv_s = 1.0 / self.scale
        t = -inv_s * (self.rotation_matrix().T @ self.translation_m)
        return Sim2(t[0], t[1], -self.yaw_rad, inv_s)

    def apply(self, points_xy: np.ndarray) -> np.ndarray:
        pts = _as_points(points_xy)
        return self.scale * (pts @ self.rotation_matrix().T) + self.translation_m

    def to_se2(self) -> SE2:
        """Drop the scale (the rigid part)."""
        return SE2(self.x_m, self.y_m, self.yaw_rad)
