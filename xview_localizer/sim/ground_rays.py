"""Per-camera ray tables of the ground renderer (:mod:`.ground`) for the camera models that are
not an undistorted pinhole: distorted pinholes and equirectangular panoramas.

Conventions (as :mod:`xview_localizer.core.camera` / :mod:`~xview_localizer.core.camera_pano`):
optical frame z forward, x right, y down; pixels (u, v) with integer = pixel centre.

* Distorted pinhole: the ray of pixel (u, v) is ``(x_n, y_n, 1)``, its undistorted normalized
  coordinates (:meth:`PinholeCamera.undistort_checked`): the ray parameter of a hit is its
  optical z. Pixels the model cannot undistort get ``ok = False`` (and a placeholder forward ray).
* Panorama: the unit ray of :meth:`EquirectangularCamera.pixel_to_ray`: the ray parameter is
  the range.

Beside the rays (``dirs_cam (H, W, 3)`` float64) a table holds each pixel's angular size
``pix_rad (H, W)`` (geometric mean of the angles to its right and lower neighbours; the
renderer's texture level of detail) and the tiles used for culling: the image cut into
``TILE_PX`` x ``TILE_PX`` tiles, each a cone (unit axis ``tile_dir``, half angle
``tile_half_rad``) holding the rays of its valid pixels. :func:`tile_rects` turns the bounding
spheres of primitives into the screen rectangles of the tiles whose cones they meet: exact
culling for any ray geometry, one rectangle per run of tile columns (a panorama's seam splits a
primitive behind the camera into two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TILE_PX", "CameraRays", "camera_rays", "sphere_bounds", "tile_rects"]

#: Side of a culling tile (pixels).
TILE_PX = 16
# slack added to every tile's half angle (radians): float32 rays, rounding
_CONE_SLACK_RAD = 1e-4


@dataclass(frozen=True, eq=False)
class CameraRays:
    """Ray table of one camera (see the module docstring).

    kind: ``'distorted'`` or ``'equirectangular'``. dirs_cam: (H, W, 3) float64 optical-frame
    rays. ok: (H, W) bool, the pixel has a ray. pix_rad: (H, W) float32 angular pixel size.
    tile_dir: (Ty * Tx, 3) unit cone axes, row-major tiles; tile_half_rad: (Ty * Tx,) half
    angles (-1 for a tile without valid pixels); tile_shape: (Ty, Tx).
    """

    kind: str
    width_px: int
    height_px: int
    dirs_cam: np.ndarray
    ok: np.ndarray
    pix_rad: np.ndarray
    tile_dir: np.ndarray
    tile_half_rad: np.ndarray
    tile_shape: tuple[int, int]


def _pixel_grid(w: int, h: int) -> np.ndarray:
    """(H * W, 2) float64 pixel centres (u, v), row-major."""
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.column_stack((u.reshape(-1), v.reshape(-1)))


def _angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle (rad) between unit vectors ``a`` and ``b`` (..., 3), exact also for tiny angles."""
    return 2.0 * np.arcsin(np.clip(0.5 * np.linalg.norm(a - b, axis=-1), 0.0, 1.0))


def _pixel_size_rad(unit: np.ndarray, wrap_u: bool) -> np.ndarray:
    """(H, W) angular pixel size from unit rays (H, W, 3)."""
    if wrap_u:
        du = _angle(unit, np.roll(unit, -1, axis=1))
    else:
        du = np.empty(unit.shape[:2])
        du[:, :-1] = _angle(unit[:, :-1], unit[:, 1:]) if unit.shape[1] > 1 else 0.0
        du[:, -1] = du[:, -2] if unit.shape[1] > 1 else 0.0
    dv = np.empty(unit.shape[:2])
    if unit.shape[0] > 1:
        dv[:-1] = _angle(unit[:-1], unit[1:])
        dv[-1] = dv[-2]
    else:
        dv[:] = du
    return np.sqrt(np.maximum(du, 1e-9) * np.maximum(dv, 1e-9)).astype(np.float32)


def _tiles(unit: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Cone axes (Ty * Tx, 3) and half angles (Ty * Tx,) of the tiles of unit rays (H, W, 3)."""
    h, w = ok.shape
    ty, tx = -(-h // TILE_PX), -(-w // TILE_PX)
    axes = np.zeros((ty * tx, 3))
    half = np.full(ty * tx, -1.0)
    for i in range(ty):
        for j in range(tx):
            sl = (slice(i * TILE_PX, (i + 1) * TILE_PX), slice(j * TILE_PX, (j + 1) * TILE_PX))
            rays = unit[sl][ok[sl]]
            if not len(rays):
                continue
            m = rays.mean(0)
            n = float(np.linalg.norm(m))
            if n < 1e-6:  # rays all round the circle (cannot happen for a 16 px tile)
                axes[i * tx + j] = (0.0, 0.0, 1.0)
                half[i * tx + j] = math.pi
                continue
            axes[i * tx + j] = m / n
            half[i * tx + j] = float(_angle(rays, axes[i * tx + j]).max()) + _CONE_SLACK_RAD
    return axes, half, (ty, tx)


def camera_rays(camera, kind: str) -> CameraRays:
    """The ray table of ``camera``: a distorted :class:`PinholeCamera` (``kind='distorted'``)
    or an :class:`EquirectangularCamera` (``kind='equirectangular'``)."""
    w, h = int(camera.width_px), int(camera.height_px)
    uv = _pixel_grid(w, h)
    if kind == "equirectangular":
        dirs = camera.pixel_to_ray(uv)
        ok = np.ones(len(uv), dtype=bool)
    elif kind == "distorted":
        xy_n, ok = camera.undistort_checked(uv)
        dirs = np.column_stack((xy_n, np.ones(len(uv))))
        dirs[~ok] = (0.0, 0.0, 1.0)  # placeholder, masked by the renderer
    else:
        raise ValueError(f"camera_rays: unknown kind {kind!r}")
    dirs = dirs.reshape(h, w, 3)
    ok = ok.reshape(h, w)
    unit = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    axes, half, shape = _tiles(unit, ok)
    return CameraRays(kind, w, h, dirs, ok, _pixel_size_rad(unit, kind == "equirectangular"), axes, half, shape)


def tile_rects(rays: CameraRays, centres_map: np.ndarray, radii_m: np.ndarray, R_map_cam: np.ndarray,
               o_map: np.ndarray, near_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Screen rectangles of bounding spheres (``centres_map (M, 3)``, ``radii_m (M,)``) seen
    from the camera at ``o_map`` with orientation ``R_map_cam``.

    Returns ``(which (K,), rects (K, 4))``: rectangle k, ``u0, v0, u1, v1`` (exclusive ends,
    whole tiles clipped to the image), belongs to sphere ``which[k]``; a sphere meeting no tile
    has none, one whose tiles form several runs of columns has one per run (rectangles of one
    sphere never overlap). A sphere that holds the camera (within ``near_m``) covers every tile.
    """
    m = len(centres_map)
    ty, tx = rays.tile_shape
    if m == 0:
        return np.zeros(0, int), np.zeros((0, 4), int)
    w = np.asarray(centres_map, float) - np.asarray(o_map, float)
    dist = np.linalg.norm(w, axis=1)
    inside = dist <= np.asarray(radii_m, float) + near_m
    unit = w / np.maximum(dist, 1e-12)[:, None]
    beta = np.arcsin(np.clip(radii_m / np.maximum(dist, 1e-12), 0.0, 1.0))
    axes_map = rays.tile_dir @ np.asarray(R_map_cam, float).T  # (T, 3)
    ang = _angle(unit[:, None, :], axes_map[None, :, :])  # (M, T)
    meets = (ang <= rays.tile_half_rad[None, :] + beta[:, None]) & (rays.tile_half_rad[None, :] >= 0.0)
    meets |= inside[:, None] & (rays.tile_half_rad[None, :] >= 0.0)
    meets = meets.reshape(m, ty, tx)
    which, rects = [], []
    w_px, h_px = rays.width_px, rays.height_px
    for i in np.flatnonzero(meets.any(axis=(1, 2))):
        cols = np.flatnonzero(meets[i].any(axis=0))
        for run in np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1):
            c0, c1 = int(run[0]), int(run[-1]) + 1
            rows = np.flatnonzero(meets[i, :, c0:c1].any(axis=1))
            which.append(i)
            rects.append((c0 * TILE_PX, int(rows[0]) * TILE_PX, min(c1 * TILE_PX, w_px),
                          min((int(rows[-1]) + 1) * TILE_PX, h_px)))
    return np.asarray(which, int), np.asarray(rects, int).reshape(-1, 4)


def sphere_bounds(params_cxy: np.ndarray, radius_xy: np.ndarray, z_range: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Bounding spheres ``(centres (M, 3), radii (M,))`` of vertical cylinders of radius
    ``radius_xy`` about ``params_cxy (M, 2)`` spanning ``z_range (M, 2)``: each renderer
    primitive lies inside its cylinder."""
    zc = z_range.mean(axis=1)
    centres = np.column_stack((params_cxy, zc))
    radii = np.hypot(radius_xy, 0.5 * (z_range[:, 1] - z_range[:, 0]))
    return centres, radii

