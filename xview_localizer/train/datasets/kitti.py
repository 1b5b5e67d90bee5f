"""KITTI cross-view localization data set in the layout released by Shi & Li (the KITTI raw
drives plus one satellite image per frame), yielding the project's own pair samples
(:class:`xview_localizer.train.pairs.PairSample`).

Layout under ``root`` (exactly as released)::

    raw_data/<date>/calib_cam_to_cam.txt                  P_rect_02 (3x4), S_rect_02 (w h)
    raw_data/<date>/<drive>/image_02/data/<10 digits>.png rectified left colour image
    raw_data/<date>/<drive>/oxts/data/<10 digits>.txt     lat lon alt roll pitch yaw ...
    satmap/<date>/<drive>/<10 digits>.png                 512 x 512 north-up satellite image
    train_files.txt                                       <date>/<drive>/<10 digits>.png
    test1_files.txt, test2_files.txt                      <date>/<drive>/<10 digits>.png x y theta

``split``: ``train``; ``test1`` = same-area test; ``test2`` = cross-area test.

Conventions (what this loader assumes; the fixture tests pin every one of them):

* **base_link = the OXTS GPS/IMU position** on the ground, x forward, y left. Its heading is
  OXTS field 5 (``yaw``, counted from 0: lat, lon, alt, roll, pitch, yaw), radians, 0 = east,
  counter-clockwise: the ENU yaw of this project, used unchanged.
* **Satellite image**: north-up, ``SAT_M_PER_PX`` true ground metres per pixel (Web-Mercator
  zoom 18, scale 2, evaluated at latitude 49.015 deg for every image, as the release does:
  0.19583 m/px), **centred on the frame's GPS position**: the GPS position is the geometric
  centre of the image, i.e. pixel ``((W - 1) / 2, (H - 1) / 2) = (255.5, 255.5)`` in this
  project's pixel-centre convention (docs/conventions.md).
* **Camera** (``T_base_camera``): the camera is ``GPS_TO_CAMERA_M = (1.08, 0.26)`` from the GPS,
  read as 1.08 m forward and 0.26 m to the **right** (``y_base = -0.26``), ``CAMERA_HEIGHT_M``
  = 1.65 m above the ground, looking straight ahead. ``K`` = ``P_rect_02[:, :3]`` for the
  ``S_rect_02`` size (or the image size), rescaled to the ground input size (default 1024 x 256,
  a plain resize with :meth:`PinholeCamera.resized`).
* **Perturbation** (the KITTI protocol): a test line's ``x, y, theta`` in [-1, 1] give the true
  position of base_link in the patch frame, ``(x * 20 m east, y * 20 m north)``, and the prior
  yaw error, ``prior_yaw = true_yaw + theta * 10 deg``. The patch is the satellite image
  translated (bilinear, black outside) so that its centre is the prior ``GPS - (20 x, 20 y)``;
  it stays north-up. Train samples draw ``x, y, theta ~ U(-1, 1)`` from a generator seeded by
  ``(seed, index)``, so every epoch sees the same perturbation per index unless ``seed`` changes.
  The ranges can be changed with ``offset_range_m`` / ``yaw_range_deg``.
* ``depth_m`` is all zero (no depth in the release); ``world_seed`` is 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ...core.camera import PinholeCamera, T_base_camera_from_xyz_rpy
from ...core.errors import ConfigError, DatasetError
from ...core.geo import ground_resolution_m_per_px
from ..pairs import PairSample
from ._common import (
    normalize_index,
    offset_latlon,
    parse_float,
    read_rgb,
    sample_rng,
    shift_patch,
    split_lines,
)

__all__ = [
    "CAMERA_HEIGHT_M",
    "GPS_TO_CAMERA_M",
    "KITTI_SPLITS",
    "SAT_M_PER_PX",
    "KittiConfig",
    "KittiCrossView",
    "parse_calib",
    "parse_oxts",
]

#: Satellite resolution of the release: zoom 18, scale 2, at latitude 49.015 deg (0.19583 m/px).
SAT_M_PER_PX = float(ground_resolution_m_per_px(49.015, 18)) / 2.0
#: Camera position relative to the GPS: (forward_m, right_m).
GPS_TO_CAMERA_M = (1.08, 0.26)
CAMERA_HEIGHT_M = 1.65
KITTI_SPLITS = {"train": "train_files.txt", "test1": "test1_files.txt", "test2": "test2_files.txt"}
SAT_SIZE_PX = 512

_NAME_RE = re.compile(r"^(?P<date>\d{4}_\d{2}_\d{2})/(?P<drive>[^/]+)/(?:image_02/data/)?(?P<frame>\d{10})\.png$")


@dataclass(frozen=True)
class KittiConfig:
    """Loader settings: ground input size, perturbation ranges (1 unit of a split line =
    ``offset_range_m`` metres / ``yaw_range_deg`` degrees) and the train perturbation seed."""

    ground_width_px: int = 1024
    ground_height_px: int = 256
    offset_range_m: float = 20.0
    yaw_range_deg: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("ground_width_px", "ground_height_px"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"KittiConfig.{name} must be a positive integer, got {v!r}")
        for name in ("offset_range_m", "yaw_range_deg"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0.0):
                raise ConfigError(f"KittiConfig.{name} must be finite and >= 0, got {v!r}")
        if self.yaw_range_deg > 180.0:
            raise ConfigError(f"KittiConfig.yaw_range_deg must be <= 180, got {self.yaw_range_deg}")


@dataclass(frozen=True)
class _Entry:
    date: str
    drive: str
    frame: str
    where: str  # "split_file:line"
    shift: tuple[float, float, float] | None  # x, y, theta in [-1, 1] (test lines)

    @property
    def name(self) -> str:
        return f"{self.date}/{self.drive}/{self.frame}"


def parse_calib(path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """``P_rect_02`` (3, 4) and ``S_rect_02`` ``(width, height)`` (None when absent) of a
    ``calib_cam_to_cam.txt``; errors name the file and line."""
    if not path.is_file():
        raise DatasetError(f"{path}: calibration file missing")
    p = None
    size = None
    with open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            key, _, rest = line.partition(":")
            key = key.strip()
            if key not in ("P_rect_02", "S_rect_02"):
                continue
            where = f"{path}:{lineno}"
            vals = [parse_float(t, where, key) for t in rest.split()]
            if key == "P_rect_02":
                if len(vals) != 12:
                    raise DatasetError(f"{where}: P_rect_02 needs 12 numbers, got {len(vals)}")
                p = np.asarray(vals, float).reshape(3, 4)
            else:
                if len(vals) != 2 or min(vals) <= 0:
                    raise DatasetError(f"{where}: S_rect_02 needs 2 positive numbers, got {vals}")
                size = (int(round(vals[0])), int(round(vals[1])))
    if p is None:
        raise DatasetError(f"{path}: no P_rect_02 line")
    return p, size


def parse_oxts(path: Path) -> tuple[float, float, float]:
    """``(lat_deg, lon_deg, yaw_rad)`` of an OXTS text file (fields 0, 1 and 5)."""
    if not path.is_file():
        raise DatasetError(f"{path}: OXTS file missing")
    fields = path.read_text().split()
    where = f"{path}:1"
    if len(fields) < 6:
        raise DatasetError(f"{where}: expected at least 6 fields (lat lon alt roll pitch yaw), got {len(fields)}")
    lat = parse_float(fields[0], where, "lat")
    lon = parse_float(fields[1], where, "lon")
    yaw_enu_rad = parse_float(fields[5], where, "yaw")
    if abs(lat) > 85.0 or abs(lon) > 180.0:
        raise DatasetError(f"{where}: lat/lon ({lat}, {lon}) out of range")
    return lat, lon, yaw_enu_rad


class KittiCrossView:
    """The pairs of one split (``train``, ``test1`` = same area, ``test2`` = cross area).

    Split lines are parsed and every referenced file checked on construction (errors name the
    split file and line); images are read on ``__getitem__``, which returns a
    :class:`PairSample` (conventions in the module docstring).
    """

    def __init__(self, root: str | Path, split: str = "train", config: KittiConfig | None = None) -> None:
        self.root = Path(root)
        self.cfg = config or KittiConfig()
        if split not in KITTI_SPLITS:
            raise ConfigError(f"KITTI split must be one of {sorted(KITTI_SPLITS)}, got {split!r}")
        self.split = split
        split_path = self.root / KITTI_SPLITS[split]
        is_test = split != "train"
        self.entries: list[_Entry] = []
        self._calib: dict[str, tuple[np.ndarray, tuple[int, int] | None]] = {}
        for lineno, fields in split_lines(split_path):
            where = f"{split_path}:{lineno}"
            m = _NAME_RE.match(fields[0])
            if m is None:
                raise DatasetError(f"{where}: {fields[0]!r} is not <date>/<drive>/<10 digits>.png")
            shift = None
            if is_test:
                if len(fields) != 4:
                    raise DatasetError(f"{where}: test lines need 4 fields (file x y theta), got {len(fields)}")
                shift = tuple(parse_float(t, where, n) for t, n in zip(fields[1:], ("x", "y", "theta")))
                if any(abs(v) > 1.0 for v in shift):
                    raise DatasetError(f"{where}: x, y, theta must lie in [-1, 1], got {list(shift)}")
            elif len(fields) not in (1, 4):
                raise DatasetError(f"{where}: train lines need 1 field (file), got {len(fields)}")
            e = _Entry(m["date"], m["drive"], m["frame"], where, shift)
            for path in (self._image_path(e), self._oxts_path(e), self._sat_path(e)):
                if not path.is_file():
                    raise DatasetError(f"{where}: {path} is missing")
            if e.date not in self._calib:
                self._calib[e.date] = parse_calib(self.root / "raw_data" / e.date / "calib_cam_to_cam.txt")
            self.entries.append(e)
        if not self.entries:
            raise DatasetError(f"{split_path}: no samples")

    # -- paths --------------------------------------------------------------------------
    def _image_path(self, e: _Entry) -> Path:
        return self.root / "raw_data" / e.date / e.drive / "image_02" / "data" / f"{e.frame}.png"

    def _oxts_path(self, e: _Entry) -> Path:
        return self.root / "raw_data" / e.date / e.drive / "oxts" / "data" / f"{e.frame}.txt"

    def _sat_path(self, e: _Entry) -> Path:
        return self.root / "satmap" / e.date / e.drive / f"{e.frame}.png"

    # -- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[PairSample]:
        for i in range(len(self)):
            yield self[i]

    def shift(self, index: int) -> tuple[float, float, float]:
        """``(x, y, theta)`` in [-1, 1] of sample ``index`` (split line, or seeded draw for train)."""
        e = self.entries[index]
        if e.shift is not None:
            return e.shift
        rng = sample_rng(self.cfg.seed, index, 0x4B495454)
        x, y, th = rng.uniform(-1.0, 1.0, size=3)
        return float(x), float(y), float(th)

    def camera(self, index: int, image_size_px: tuple[int, int]) -> PinholeCamera:
        """The camera of sample ``index`` at the loader's ground size; ``image_size_px`` =
        ``(width, height)`` of the file (used when calib has no S_rect_02)."""
        e = self.entries[index]
        p, size = self._calib[e.date]
        w, h = size or image_size_px
        try:
            cam = PinholeCamera(w, h, tuple(p[:, :3].reshape(-1)))
        except Exception as exc:  # CameraModelError: name the file
            raise DatasetError(f"{self.root / 'raw_data' / e.date / 'calib_cam_to_cam.txt'}: P_rect_02: {exc}") from exc
        return cam.resized(self.cfg.ground_width_px, self.cfg.ground_height_px)

    @staticmethod
    def T_base_camera() -> np.ndarray:
        """4x4 optical frame -> base_link (GPS position on the ground)."""
        fwd, right = GPS_TO_CAMERA_M
        return T_base_camera_from_xyz_rpy(fwd, -right, CAMERA_HEIGHT_M, 0.0, 0.0, 0.0)

    def __getitem__(self, index: int) -> PairSample:
        import cv2

        index = normalize_index(index, len(self.entries))
        e = self.entries[index]
        ground = read_rgb(self._image_path(e), e.where)
        cam = self.camera(index, (ground.shape[1], ground.shape[0]))
        ground = cv2.resize(ground, (self.cfg.ground_width_px, self.cfg.ground_height_px),
                            interpolation=cv2.INTER_AREA)
        sat = read_rgb(self._sat_path(e), e.where)
        if sat.shape[0] != sat.shape[1]:
            raise DatasetError(f"{self._sat_path(e)}: satellite image must be square, got {sat.shape[1]}x{sat.shape[0]}")
        m_per_px = SAT_M_PER_PX * SAT_SIZE_PX / sat.shape[0]
        lat, lon, yaw_enu_rad = parse_oxts(self._oxts_path(e))
        x, y, th = self.shift(index)
        east_m, north_m = x * self.cfg.offset_range_m, y * self.cfg.offset_range_m
        # patch centre (prior) = GPS - (east, north): content moves by (+east, -north) pixels.
        patch = shift_patch(sat, east_m / m_per_px, -north_m / m_per_px)
        c_lat, c_lon = offset_latlon(lat, lon, -east_m, -north_m)
        yaw_enu_rad = math.remainder(yaw_enu_rad, 2.0 * math.pi)
        prior_yaw_rad = math.remainder(yaw_enu_rad + math.radians(th * self.cfg.yaw_range_deg), 2.0 * math.pi)
        return PairSample(
            id=e.name,
            world_seed=0,
            ground_rgb=np.ascontiguousarray(ground),
            depth_m=np.zeros(ground.shape[:2], np.float32),
            sat_rgb=patch,
            K=cam.K,
            T_base_camera=self.T_base_camera(),
            sat_m_per_px=m_per_px,
            sat_center_lat_deg=c_lat,
            sat_center_lon_deg=c_lon,
            T_patch_base=np.array([east_m, north_m, yaw_enu_rad]),
            prior_yaw_rad=prior_yaw_rad,
            gt_lat_deg=lat,
            gt_lon_deg=lon,
        )
