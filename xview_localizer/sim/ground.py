"""Ground (vehicle camera) renderer: exact ray casting of a synthetic world.

Geometry
--------
The same 3-D world as the aerial view: the ground plane z = 0 textured by ``world.albedo_rgb``
(sampled through ``world.georef``, so a ground point lands on the same albedo pixel in both
views), buildings as upright oriented boxes (their ``parts``), parked cars as a body box and
a cabin box, trees as a vertical trunk cylinder and an ellipsoidal canopy. Every intersection
is analytic (slab test, quadratic), so depth is exact up to float64 rounding.

Camera
------
``camera`` is one of

* an undistorted pinhole (:class:`xview_localizer.core.camera.PinholeCamera` with distortion
  ``none`` or all-zero coefficients, or any object with ``K`` (3x3), ``width_px``, ``height_px``):
  pixel (u, v) (integer = pixel centre) looks along ``K^-1 [u, v, 1]`` in the optical frame;
* a distorted pinhole (a ``PinholeCamera`` with ``plumb_bob``, ``rational_polynomial`` or
  ``equidistant`` coefficients): pixel (u, v) looks along ``(x_n, y_n, 1)``, its undistorted
  normalized coordinates from :meth:`PinholeCamera.undistort_checked`, so a world point lands
  on the pixel :meth:`PinholeCamera.project` gives. Pixels the model cannot undistort (outside
  its invertible region) are black with depth 0 (id -1);
* an equirectangular 360 x 180 degree panorama
  (:class:`xview_localizer.core.camera_pano.EquirectangularCamera`): pixel (u, v) looks along
  :meth:`EquirectangularCamera.pixel_to_ray` (a unit ray; the image wraps around at u = -0.5 /
  W - 0.5).

``T_base_camera`` (4x4) maps camera-optical points (z forward, x right, y down) into
``base_link`` (x forward, y left, z up); ``T_map_base`` (:class:`xview_localizer.core.se2.SE2`)
places base_link on the ground (z = 0) of the world ENU frame. Depth is the **optical z** of the
hit for pinhole cameras (distorted or not, as ROS depth images) and the **range along the ray**
for a panorama (the only depth a panorama has, as :func:`camera_pano.lift_depth` and the sparse
matcher's panoramic rays expect), in metres.

Speed
-----
Two passes: visibility (depth test per primitive, restricted to the primitive's projected
screen rectangle; primitives outside ``max_range_m`` or behind the camera are culled with a
coarse spatial grid; for distorted and panoramic cameras the rectangles come from 16 x 16 pixel
tiles whose ray cones meet the primitive's bounding sphere, two rectangles where a panorama's
seam splits one) and shading (vectorised per primitive kind). Ground texture is sampled
from a mip pyramid (level by pixel footprint) to avoid aliasing. numpy + OpenCV on the CPU;
deterministic: the same world, camera and pose give byte-identical images.

Appearance differs from the aerial view on purpose: another sun direction, Lambert shading,
no cast shadows, its own white balance, sky, distance haze; facades with windows and storey
bands (which the aerial view never shows) and no roofs (which the ground view never sees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..core.errors import CameraModelError, ConfigError, GeometryError
from ..core.se2 import SE2
from .ground_rays import CameraRays, camera_rays, sphere_bounds, tile_rects
from .world import World

_KIND_BOX, _KIND_ELLIPSOID, _KIND_CYLINDER = 0, 1, 2
_MAT_FACADE, _MAT_CAR_BODY, _MAT_CAR_CABIN, _MAT_CANOPY, _MAT_TRUNK = 0, 1, 2, 3, 4
_ID_NONE, _ID_GROUND = -1, -2
_NEAR_M = 0.05
# the 12 edges of a box whose 8 corners are 4 bottom (0-3, a ring) then 4 top (4-7)
_BOX_EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4],
                       [0, 4], [1, 5], [2, 6], [3, 7]])


@dataclass(frozen=True)
class GroundStyle:
    """Appearance of the ground camera view.

    sun_azimuth_deg / sun_elevation_deg: compass direction towards the sun and its height.
    ambient, diffuse: Lambert lighting terms. white_balance: RGB gains. haze_m: distance at
    which 63 % of a surface's colour has turned to the horizon colour. max_range_m: nothing
    farther is rendered (depth 0, horizon colour). fill_rgb: ground albedo outside the world.
    """

    sun_azimuth_deg: float = 220.0
    sun_elevation_deg: float = 38.0
    ambient: float = 0.55
    diffuse: float = 0.6
    white_balance: tuple[float, float, float] = (0.96, 1.0, 1.06)
    haze_m: float = 600.0
    max_range_m: float = 200.0
    sky_zenith_rgb: tuple[int, int, int] = (92, 140, 210)
    sky_horizon_rgb: tuple[int, int, int] = (196, 212, 228)
    fill_rgb: tuple[int, int, int] = (128, 128, 128)

    def __post_init__(self) -> None:
        if not (0.0 < self.sun_elevation_deg <= 90.0):
            raise ConfigError(f"GroundStyle.sun_elevation_deg must be in (0, 90], got {self.sun_elevation_deg!r}")
        if not (10.0 <= self.max_range_m <= 2000.0):
            raise ConfigError(f"GroundStyle.max_range_m must be in [10, 2000], got {self.max_range_m!r}")
        if not (self.haze_m > 0.0):
            raise ConfigError(f"GroundStyle.haze_m must be > 0, got {self.haze_m!r}")
        if self.ambient < 0 or self.diffuse < 0:
            raise ConfigError("GroundStyle.ambient and diffuse must be >= 0")

    def sun_dir_enu(self) -> np.ndarray:
        az, el = math.radians(self.sun_azimuth_deg), math.radians(self.sun_elevation_deg)
        return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])


@dataclass(frozen=True, eq=False)
class GroundFrame:
    """One rendered camera frame.

    rgb: (H, W, 3) uint8. depth_m: (H, W) float32, optical z of the first hit in metres
    (pinhole cameras) or its range along the ray (panorama); 0.0 where the ray sees sky or
    nothing within ``max_range_m``, or the pixel has no ray.
    """

    rgb: np.ndarray
    depth_m: np.ndarray


class _Primitives:
    """All world solids as flat arrays for culling and intersection."""

    def __init__(self, world: World) -> None:
        params, kinds, mats, cols, extra = [], [], [], [], []
        for b in world.buildings:
            for p in b.parts:
                params.append([p.cx_m, p.cy_m, p.yaw_rad, p.half_length_m, p.half_width_m, p.z0_m, p.z1_m])
                kinds.append(_KIND_BOX)
                mats.append(_MAT_FACADE)
                cols.append(b.facade_rgb)
                extra.append([b.storey_m, b.window_spacing_m, b.id])
        for i, c in enumerate(world.cars):
            for j, p in enumerate(c.boxes()):
                params.append([p.cx_m, p.cy_m, p.yaw_rad, p.half_length_m, p.half_width_m, p.z0_m, p.z1_m])
                kinds.append(_KIND_BOX)
                mats.append(_MAT_CAR_BODY if j == 0 else _MAT_CAR_CABIN)
                cols.append(c.rgb)
                extra.append([0.0, 0.0, i])
        for i, t in enumerate(world.trees):
            rz = 0.5 * (t.canopy_top_m - t.canopy_bottom_m)
            cz = 0.5 * (t.canopy_top_m + t.canopy_bottom_m)
            params.append([t.xy_m[0], t.xy_m[1], cz, t.canopy_radius_m, rz, 0.0, 0.0])
            kinds.append(_KIND_ELLIPSOID)
            mats.append(_MAT_CANOPY)
            cols.append(t.canopy_rgb)
            extra.append([0.0, 0.0, i])
            params.append([t.xy_m[0], t.xy_m[1], t.trunk_radius_m, 0.0, cz, 0.0, 0.0])
            kinds.append(_KIND_CYLINDER)
            mats.append(_MAT_TRUNK)
            cols.append((92, 74, 58))
            extra.append([0.0, 0.0, i])
        self.params = np.asarray(params, float).reshape(-1, 7)
        self.kind = np.asarray(kinds, np.int32)
        self.mat = np.asarray(mats, np.int32)
        self.rgb = np.asarray(cols, np.float64).reshape(-1, 3) / 255.0
        self.extra = np.asarray(extra, float).reshape(-1, 3)
        # bounding cylinders: centre xy, radius, z range
        p = self.params
        n = len(p)
        self.cxy = p[:, :2].copy() if n else np.zeros((0, 2))
        self.radius = np.zeros(n)
        self.zr = np.zeros((n, 2))
        box = self.kind == _KIND_BOX
        self.radius[box] = np.hypot(p[box, 3], p[box, 4])
        self.zr[box] = p[box][:, [5, 6]]
        ell = self.kind == _KIND_ELLIPSOID
        self.radius[ell] = p[ell, 3]
        self.zr[ell] = np.stack([p[ell, 2] - p[ell, 4], p[ell, 2] + p[ell, 4]], 1)
        cyl = self.kind == _KIND_CYLINDER
        self.radius[cyl] = p[cyl, 2]
        self.zr[cyl] = p[cyl][:, [3, 4]]
        # footprint rectangles (n, 4, 2) bounding each primitive, for screen rectangles
        self.footprint = np.zeros((n, 4, 2))
        sq = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float)
        for i in range(n):
            if self.kind[i] == _KIND_BOX:
                c, s = math.cos(p[i, 2]), math.sin(p[i, 2])
                local = sq * [p[i, 3], p[i, 4]]
                self.footprint[i] = local @ np.array([[c, s], [-s, c]]) + p[i, :2]
            else:
                self.footprint[i] = sq * self.radius[i] + p[i, :2]
        # coarse grid for range queries
        self.cell_m = 50.0
        self.grid: dict[tuple[int, int], np.ndarray] = {}
        if n:
            keys = np.floor(self.cxy / self.cell_m).astype(int)
            order = np.lexsort((keys[:, 1], keys[:, 0]))
            ks = keys[order]
            splits = np.nonzero(np.any(np.diff(ks, axis=0) != 0, axis=1))[0] + 1
            for idx in np.split(order, splits):
                k = tuple(keys[idx[0]])
                self.grid[k] = np.sort(idx)
        self.max_radius = float(self.radius.max()) if n else 0.0

    def near(self, xy: np.ndarray, range_m: float) -> np.ndarray:
        r = range_m + self.max_radius
        lo = np.floor((xy - r) / self.cell_m).astype(int)
        hi = np.floor((xy + r) / self.cell_m).astype(int)
        found = [self.grid[(i, j)] for i in range(lo[0], hi[0] + 1) for j in range(lo[1], hi[1] + 1)
                 if (i, j) in self.grid]
        if not found:
            return np.zeros(0, int)
        idx = np.sort(np.concatenate(found))
        d = np.hypot(*(self.cxy[idx] - xy).T) - self.radius[idx]
        return idx[d < range_m]


def _hash01(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Deterministic per-cell pseudo-random numbers in [0, 1)."""
    x = np.sin(a * 12.9898 + b * 78.233 + c * 37.719) * 43758.5453
    return x - np.floor(x)


def _ray_dirs(K: np.ndarray, w: int, h: int) -> np.ndarray:
    """(H, W, 3) optical-frame ray directions with z = 1 (so the ray parameter is the depth)."""
    u, v = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    return np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T


def _camera_kind(camera) -> str:
    """``'pinhole'`` (undistorted), ``'distorted'`` (a PinholeCamera with non-zero distortion)
    or ``'equirectangular'``; CameraModelError for distortion the renderer cannot invert."""
    from ..core.camera_pano import EquirectangularCamera

    if isinstance(camera, EquirectangularCamera):
        return "equirectangular"
    d = np.asarray(getattr(camera, "D", np.zeros(0)), float)
    if not (d.size and np.any(d != 0)):
        return "pinhole"
    if not (hasattr(camera, "undistort_checked") and getattr(camera, "distortion_model", "none") != "none"):
        raise CameraModelError("GroundRenderer: a camera with distortion must be a PinholeCamera (distortion_model "
                               f"and undistort_checked), got {type(camera).__name__} with D={d.tolist()}")
    return "distorted"


def _checked_camera(camera, T_base_camera: np.ndarray) -> tuple[np.ndarray, int, int, np.ndarray, str]:
    """``(K (3, 3), width_px, height_px, T_base_camera (4, 4), kind)`` of a camera above the
    ground (``kind`` from :func:`_camera_kind`; K is the pseudo intrinsics of a panorama), or a
    :class:`CameraModelError` / :class:`GeometryError` naming the problem."""
    try:
        K = np.asarray(camera.K, float)
        w, h = int(camera.width_px), int(camera.height_px)
    except AttributeError as exc:
        raise CameraModelError(f"GroundRenderer: camera needs K, width_px, height_px ({exc})") from exc
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CameraModelError(f"GroundRenderer: camera K must be a finite 3x3 with fx, fy > 0, got {K!r}")
    kind = _camera_kind(camera)
    T = np.asarray(T_base_camera, float)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise GeometryError(f"GroundRenderer: T_base_camera must be a finite 4x4, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
        raise GeometryError("GroundRenderer: T_base_camera's 3x3 block is not a rotation")
    if T[2, 3] <= 0.0:
        raise GeometryError(f"GroundRenderer: camera must be above the ground, z = {T[2, 3]} m")
    return K, w, h, T, kind


def _ray_table(camera, K: np.ndarray, w: int, h: int, kind: str) -> tuple[np.ndarray, Optional[CameraRays]]:
    """``(dirs_cam (H, W, 3), table)``: the undistorted pinhole's ``K^-1 [u, v, 1]`` rays and no
    table, or the rays and :class:`CameraRays` of a distorted / panoramic camera."""
    if kind == "pinhole":
        return _ray_dirs(K, w, h), None
    table = camera_rays(camera, kind)
    return table.dirs_cam, table


class GroundRenderer:
    """Renders :class:`GroundFrame` s of ``world`` from a vehicle camera.

    world: the :class:`World`. camera: an undistorted pinhole (``K``, ``width_px``,
    ``height_px``), a distorted :class:`~xview_localizer.core.camera.PinholeCamera` or an
    :class:`~xview_localizer.core.camera_pano.EquirectangularCamera` (module docstring).
    T_base_camera: (4, 4) optical -> base_link. device: accepted for interface symmetry with
    the torch code; rendering runs in numpy/OpenCV on the CPU for any value.
    style: :class:`GroundStyle`. threads: column bands rendered in parallel (default 2).
    """

    def __init__(self, world: World, camera, T_base_camera: np.ndarray, device: str = "cpu",
                 style: GroundStyle = GroundStyle(), threads: int = 2) -> None:
        if not isinstance(world, World):
            raise ConfigError(f"GroundRenderer: world must be a World, got {type(world).__name__}")
        K, w, h, T, kind = _checked_camera(camera, T_base_camera)
        self.world = world
        self.K = K
        self.camera_kind = kind
        self.width_px, self.height_px = w, h
        self.T_base_camera = T.copy()
        self.device = device
        if not (isinstance(threads, int) and 1 <= threads <= 64):
            raise ConfigError(f"GroundRenderer: threads must be an int in [1, 64], got {threads!r}")
        self.threads = threads
        self.style = style
        self.prims = _Primitives(world)
        self._dirs_cam, self._rays = _ray_table(camera, K, w, h, kind)
        # albedo mip pyramid (level l has m_per_px * 2**l)
        levels = [world.albedo_rgb]
        while levels[-1].shape[0] > 64 and len(levels) < 8:
            a = levels[-1]
            levels.append(cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA))
        self._mips = levels
        self._sun = style.sun_dir_enu()

    def with_camera(self, camera, T_base_camera: np.ndarray) -> "GroundRenderer":
        """A renderer of the same world and style with another camera (any model the constructor
        takes, the same checks), sharing this one's primitives and albedo mip pyramid (cheap:
        per-image camera variation)."""
        import copy

        K, w, h, T, kind = _checked_camera(camera, T_base_camera)
        other = copy.copy(self)
        other.K, other.width_px, other.height_px, other.T_base_camera = K, w, h, T.copy()
        other.camera_kind = kind
        other._dirs_cam, other._rays = _ray_table(camera, K, w, h, kind)
        return other

    # -- geometry ------------------------------------------------------------------------
    def camera_pose(self, T_map_base: SE2) -> tuple[np.ndarray, np.ndarray]:
        """(R_map_cam (3, 3), o_map (3,)) of the camera for a base pose."""
        if not isinstance(T_map_base, SE2):
            raise GeometryError(f"GroundRenderer.render: T_map_base must be an SE2, got {type(T_map_base).__name__}")
        c, s = math.cos(T_map_base.yaw_rad), math.sin(T_map_base.yaw_rad)
        Tmb = np.array([[c, -s, 0, T_map_base.x_m], [s, c, 0, T_map_base.y_m], [0, 0, 1, 0], [0, 0, 0, 1.0]])
        Tmc = Tmb @ self.T_base_camera
        return Tmc[:3, :3], Tmc[:3, 3]

    def _screen_rects(self, idx: np.ndarray, R: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Screen rectangles (M, 4) ``u0, v0, u1, v1`` (exclusive ends) of primitives ``idx``
        and a (M,) mask of those at least partly in front of the camera and on screen."""
        P = self.prims
        fp = P.footprint[idx]  # (M, 4, 2)
        zr = P.zr[idx]  # (M, 2)
        corners = np.concatenate([np.concatenate([fp, np.repeat(zr[:, None, 0:1], 4, 1)], 2),
                                  np.concatenate([fp, np.repeat(zr[:, None, 1:2], 4, 1)], 2)], 1)  # (M, 8, 3)
        pc = (corners - o) @ R  # camera coordinates
        zc = pc[..., 2]
        front = zc >= _NEAR_M
        any_front = front.any(1)
        # clip the box at the near plane: add the points where its 12 edges cross z = near
        a, b = pc[:, _BOX_EDGES[:, 0]], pc[:, _BOX_EDGES[:, 1]]  # (M, 12, 3)
        za, zb = a[..., 2], b[..., 2]
        cross = (za >= _NEAR_M) != (zb >= _NEAR_M)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.where(cross, (_NEAR_M - za) / (zb - za), 0.0)
        pts = np.concatenate([pc, a + f[..., None] * (b - a)], 1)  # (M, 20, 3)
        valid = np.concatenate([front, cross], 1)
        zp = np.where(valid, np.maximum(pts[..., 2], _NEAR_M), 1.0)
        u = pts[..., 0] / zp * self.K[0, 0] + self.K[0, 2]
        v = pts[..., 1] / zp * self.K[1, 1] + self.K[1, 2]
        big = 1e9
        w, h = self.width_px, self.height_px
        rect = np.zeros((len(idx), 4), int)
        rect[:, 0] = np.clip(np.floor(np.where(valid, u, big).min(1)), 0, w)
        rect[:, 1] = np.clip(np.floor(np.where(valid, v, big).min(1)), 0, h)
        rect[:, 2] = np.clip(np.ceil(np.where(valid, u, -big).max(1)) + 1, 0, w)
        rect[:, 3] = np.clip(np.ceil(np.where(valid, v, -big).max(1)) + 1, 0, h)
        ok = any_front & (rect[:, 0] < rect[:, 2]) & (rect[:, 1] < rect[:, 3])
        return rect, ok

    @staticmethod
    def _intersect(kind: int, p: np.ndarray, o: np.ndarray, D: np.ndarray) -> np.ndarray:
        """Ray parameters t (= optical depth) of the first hit, inf for misses. D (..., 3)."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if kind == _KIND_BOX:
                c, s = math.cos(p[2]), math.sin(p[2])
                ox, oy = o[0] - p[0], o[1] - p[1]
                olx, oly = c * ox + s * oy, -s * ox + c * oy
                dlx = c * D[..., 0] + s * D[..., 1]
                dly = -s * D[..., 0] + c * D[..., 1]
                dz = D[..., 2]
                tmin = np.full(D.shape[:-1], -np.inf, D.dtype)
                tmax = np.full(D.shape[:-1], np.inf, D.dtype)
                for oo, dd, lo, hi in ((olx, dlx, -p[3], p[3]), (oly, dly, -p[4], p[4]), (o[2], dz, p[5], p[6])):
                    inv = 1.0 / np.where(dd == 0.0, np.float32(1e-30), dd)
                    ta = (lo - oo) * inv
                    tb = (hi - oo) * inv
                    tmin = np.maximum(tmin, np.minimum(ta, tb))
                    tmax = np.minimum(tmax, np.maximum(ta, tb))
                hit = (tmax >= tmin) & (tmin > _NEAR_M)
                return np.where(hit, tmin, np.inf)
            if kind == _KIND_ELLIPSOID:
                sc = p[3] / p[4]
                oz = (o[2] - p[2]) * sc
                ox, oy = o[0] - p[0], o[1] - p[1]
                dzs = D[..., 2] * sc
                a = D[..., 0] ** 2 + D[..., 1] ** 2 + dzs**2
                b = 2.0 * (ox * D[..., 0] + oy * D[..., 1] + oz * dzs)
                cc = ox * ox + oy * oy + oz * oz - p[3] ** 2
                disc = b * b - 4 * a * cc
                t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
                return np.where((disc >= 0) & (t > _NEAR_M), t, np.inf)
            # vertical cylinder, no caps
            ox, oy = o[0] - p[0], o[1] - p[1]
            a = D[..., 0] ** 2 + D[..., 1] ** 2
            b = 2.0 * (ox * D[..., 0] + oy * D[..., 1])
            cc = ox * ox + oy * oy - p[2] ** 2
            disc = b * b - 4 * a * cc
            t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * np.where(a == 0, np.float32(1e-30), a))
            z = o[2] + t * D[..., 2]
            ok = (disc >= 0) & (t > _NEAR_M) & (z >= p[3]) & (z <= p[4])
            return np.where(ok, t, np.inf)

    # -- rendering ------------------------------------------------------------------------
    def render(self, T_map_base: SE2, return_ids: bool = False) -> GroundFrame:
        """Render the camera view for base pose ``T_map_base`` (world ENU, base on z = 0).

        Returns :class:`GroundFrame` (rgb uint8 (H, W, 3), depth_m float32 (H, W)); with
        ``return_ids`` also an (H, W) int32 map of what each pixel sees (-1 sky / nothing,
        -2 ground plane, >= 0 a solid primitive). The image is split into ``threads`` column
        bands rendered in parallel (numpy releases the GIL); the result does not depend on
        the number of threads.
        """
        R, o = self.camera_pose(T_map_base)
        # (H, W, 3) world directions, optical z = 1; float32 for speed (depth error < 1e-4 m)
        D = (self._dirs_cam @ R.T).astype(np.float32)
        _H, W = self.height_px, self.width_px
        P = self.prims
        cand = P.near(o[:2], self.style.max_range_m)
        if self._rays is None:
            rects, ok = self._screen_rects(cand, R, o)
            cand, rects = cand[ok], rects[ok]
        else:
            centres, radii = sphere_bounds(P.cxy[cand], P.radius[cand], P.zr[cand])
            which, rects = tile_rects(self._rays, centres, radii, R, o, _NEAR_M)
            cand = cand[which]
        n = max(1, min(self.threads, W // 64))
        edges = [round(k * W / n) for k in range(n + 1)]
        bands = list(zip(edges[:-1], edges[1:]))
        if n == 1:
            parts = [self._render_band(D, o, cand, rects, 0, W)]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=n) as ex:
                parts = list(ex.map(lambda b: self._render_band(D, o, cand, rects, b[0], b[1]), bands))
        rgb = np.concatenate([p[0] for p in parts], axis=1)
        depth = np.concatenate([p[1] for p in parts], axis=1)
        frame = GroundFrame(rgb, depth)
        if return_ids:
            return frame, np.concatenate([p[2] for p in parts], axis=1)  # type: ignore[return-value]
        return frame

    def _render_band(self, D_full: np.ndarray, o: np.ndarray, cand: np.ndarray, rects: np.ndarray,
                     ub0: int, ub1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Visibility and shading of image columns [ub0, ub1): (rgb, depth_m, ids). Pixels
        without a ray (distorted cameras) come out black, depth 0, id -1."""
        st = self.style
        P = self.prims
        D = np.ascontiguousarray(D_full[:, ub0:ub1])
        H, W = D.shape[:2]
        depth = np.full((H, W), np.inf, np.float32)
        ids = np.full((H, W), _ID_NONE, np.int32)
        # ground plane
        with np.errstate(divide="ignore", invalid="ignore"):
            tg = np.where(D[..., 2] < 0, np.float32(-o[2]) / D[..., 2], np.float32(np.inf))
        g = np.isfinite(tg) & (tg * np.hypot(D[..., 0], D[..., 1]) <= st.max_range_m)
        depth[g] = tg[g]
        ids[g] = _ID_GROUND
        # solids whose screen rectangle meets the band
        for i, (u0, v0, u1, v1) in zip(cand, rects):
            u0, u1 = max(int(u0), ub0) - ub0, min(int(u1), ub1) - ub0
            if u0 >= u1:
                continue
            t = self._intersect(int(P.kind[i]), P.params[i], o, D[v0:v1, u0:u1])
            dw = depth[v0:v1, u0:u1]
            closer = t < dw
            if np.any(closer):
                dw[closer] = t[closer]
                ids[v0:v1, u0:u1][closer] = i
        far = np.isfinite(depth) & (depth * np.sqrt(np.einsum("hwc,hwc->hw", D, D)) > st.max_range_m)
        ids[far] = _ID_NONE
        depth[far] = np.inf
        if self._rays is None:
            rgb = self._shade(D, o, depth, ids)
        else:
            no_ray = ~self._rays.ok[:, ub0:ub1]
            ids[no_ray] = _ID_NONE
            depth[no_ray] = np.inf
            rgb = self._shade(D, o, depth, ids, np.ascontiguousarray(self._rays.pix_rad[:, ub0:ub1]))
            rgb[no_ray] = 0
        return rgb, np.where(np.isfinite(depth), depth, 0.0).astype(np.float32), ids

    def _sample_ground(self, xy: np.ndarray, level: np.ndarray) -> np.ndarray:
        """Bilinear albedo (N, 3) in [0, 1] at world points xy (N, 2) from mip ``level`` (N,)."""
        out = np.empty((len(xy), 3))
        g = self.world.georef
        fill = tuple(float(c) for c in self.style.fill_rgb)
        for lv in np.unique(level):
            sel = level == lv
            img = self._mips[int(lv)]
            s = 2.0**lv
            u = ((xy[sel, 0] - g.x_min_m) / g.m_per_px) / s - 0.5
            v = ((g.y_max_m - xy[sel, 1]) / g.m_per_px) / s - 0.5
            m = len(u)
            rows = -(-m // 4096)
            mu = np.full(rows * 4096, -10.0, np.float32)
            mv = np.full(rows * 4096, -10.0, np.float32)
            mu[:m], mv[:m] = u, v
            smp = cv2.remap(img, mu.reshape(rows, 4096), mv.reshape(rows, 4096), cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
            out[sel] = smp.reshape(-1, 3)[:m].astype(np.float64) / 255.0
        return out

    def _shade(self, D: np.ndarray, o: np.ndarray, depth: np.ndarray, ids: np.ndarray,
               pix_rad: Optional[np.ndarray] = None) -> np.ndarray:
        """Colours (H, W, 3) uint8 of a band. ``pix_rad`` (H, W): angular pixel size for the
        texture level of detail (None: the undistorted pinhole's ``1 / fx``)."""
        st = self.style
        H, W = ids.shape
        sun = self._sun.astype(np.float32)
        Df = D.reshape(-1, 3)
        idf = ids.reshape(-1)
        tf = depth.reshape(-1).astype(np.float32)
        img = np.empty((H * W, 3), np.float32)
        dnorm = np.sqrt(np.einsum("ij,ij->i", Df, Df))
        hor = np.asarray(st.sky_horizon_rgb, np.float32) / 255.0
        zen = np.asarray(st.sky_zenith_rgb, np.float32) / 255.0
        # sky
        sky = np.flatnonzero(idf == _ID_NONE)
        f = np.sqrt(np.clip(Df[sky, 2] / dnorm[sky], 0.0, 1.0))[:, None]
        img[sky] = hor * (1 - f) + zen * f
        # ground
        gi = np.flatnonzero(idf == _ID_GROUND)
        if len(gi):
            t = tf[gi]
            Dg = Df[gi]
            xy = o[:2] + t[:, None].astype(np.float64) * Dg[:, :2]
            dn = dnorm[gi]
            if pix_rad is None:
                lateral = t * dn / np.float32(self.K[0, 0])
            else:
                lateral = t * dn * pix_rad.reshape(-1)[gi]
            along = lateral * dn / np.maximum(-Dg[:, 2], np.float32(1e-6))
            foot = np.sqrt(lateral * along) / np.float32(self.world.georef.m_per_px)
            level = np.clip(np.round(np.log2(np.maximum(foot, 1e-6))), 0, len(self._mips) - 1).astype(int)
            alb = self._sample_ground(xy, level)
            light = st.ambient + st.diffuse * max(float(sun[2]), 0.0)
            img[gi] = alb * np.float32(light)
        # solids
        si = np.flatnonzero(idf >= 0)
        if len(si):
            img[si] = self._shade_solids(idf[si], o.astype(np.float32) + tf[si, None] * Df[si], sun)
        # distance haze on everything that was hit
        hit = np.flatnonzero(idf != _ID_NONE)
        if len(hit):
            a = (1.0 - np.exp(-(tf[hit] * dnorm[hit]) / np.float32(st.haze_m)))[:, None]
            img[hit] = img[hit] * (1 - a) + hor * a
        img *= np.asarray(st.white_balance, np.float32)
        out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return out.reshape(H, W, 3)

    def _shade_solids(self, idx: np.ndarray, pts: np.ndarray, sun: np.ndarray) -> np.ndarray:
        """Lambert-shaded colours (M, 3) of hits ``pts`` (M, 3) on primitives ``idx`` (M,)."""
        P = self.prims
        st = self.style
        kind = P.kind[idx]
        prm = P.params[idx].astype(np.float32)
        col = P.rgb[idx].astype(np.float32)
        normal = np.zeros((len(idx), 3), np.float32)
        b = np.flatnonzero(kind == _KIND_BOX)
        if len(b):
            pb = prm[b]
            c, s = np.cos(pb[:, 2]), np.sin(pb[:, 2])
            dx, dy = pts[b, 0] - pb[:, 0], pts[b, 1] - pb[:, 1]
            lx, ly = c * dx + s * dy, -s * dx + c * dy
            z = pts[b, 2]
            err = np.stack([np.abs(np.abs(lx) - pb[:, 3]), np.abs(np.abs(ly) - pb[:, 4]),
                            np.abs(z - pb[:, 6]), np.abs(z - pb[:, 5])], 1)
            face = np.argmin(err, axis=1)
            nlx = np.where(face == 0, np.sign(lx), 0.0)
            nly = np.where(face == 1, np.sign(ly), 0.0)
            nlz = np.where(face == 2, 1.0, np.where(face == 3, -1.0, 0.0))
            normal[b] = np.stack([c * nlx - s * nly, s * nlx + c * nly, nlz], 1)
            along = np.where(face == 0, ly + pb[:, 4], lx + pb[:, 3])
            span = np.where(face == 0, 2 * pb[:, 4], 2 * pb[:, 3])
            mat = P.mat[idx[b]]
            cb = col[b]
            fac = np.flatnonzero((mat == _MAT_FACADE) & (face < 2))
            if len(fac):
                ext = P.extra[idx[b[fac]]].astype(np.float32)
                storey, spacing = ext[:, 0], ext[:, 1]
                zf, af, sp = z[fac], along[fac], span[fac]
                fz = (zf / storey) % 1.0
                n_win = np.maximum(np.floor((sp - 1.0) / spacing), 1.0)
                pitch = (sp - 1.0) / n_win
                cellx = np.floor((af - 0.5) / pitch)
                fa = (af - 0.5) / pitch - cellx
                inside = (af > 0.5) & (af < sp - 0.5)
                win = inside & (fz > 0.3) & (fz < 0.82) & (fa > 0.18) & (fa < 0.78) & (zf > 0.9)
                band = (fz < 0.05) & (zf > 1.0)
                cf = cb[fac]
                cf[band] *= 0.78
                hsh = _hash01(cellx[win], np.floor(zf[win] / storey[win]), ext[win, 2])
                cf[win] = np.stack([0.16 + 0.18 * hsh, 0.2 + 0.2 * hsh, 0.26 + 0.22 * hsh], 1)
                cb[fac] = cf
            low = (mat == _MAT_CAR_BODY) & (z < 0.32)
            cb[low] = 0.08
            cb[(mat == _MAT_CAR_CABIN) & (face != 2)] = (0.14, 0.16, 0.19)
            col[b] = cb
        e = np.flatnonzero(kind == _KIND_ELLIPSOID)
        if len(e):
            pe = prm[e]
            sc = pe[:, 3] / pe[:, 4]
            nn = np.stack([pts[e, 0] - pe[:, 0], pts[e, 1] - pe[:, 1], (pts[e, 2] - pe[:, 2]) * sc * sc], 1)
            normal[e] = nn / np.linalg.norm(nn, axis=1, keepdims=True)
            q1 = np.floor(pts[e] / 0.45)
            q2 = np.floor(pts[e] / 0.13)
            leaf = 0.7 + 0.32 * _hash01(q1[:, 0], q1[:, 1], q1[:, 2]) + 0.22 * _hash01(q2[:, 0], q2[:, 1], q2[:, 2])
            col[e] *= leaf[:, None]
        cyl = np.flatnonzero(kind == _KIND_CYLINDER)
        if len(cyl):
            pc = prm[cyl]
            nn = np.stack([pts[cyl, 0] - pc[:, 0], pts[cyl, 1] - pc[:, 1], np.zeros(len(cyl), np.float32)], 1)
            normal[cyl] = nn / np.maximum(np.linalg.norm(nn, axis=1, keepdims=True), 1e-9)
        lam = np.clip(normal @ sun, 0.0, 1.0)
        return col * (np.float32(st.ambient) + np.float32(st.diffuse) * lam)[:, None]
