"""VIGOR cross-view data set (panoramas + 640 x 640 satellite images of four US cities),
yielding the project's pair samples with an equirectangular ground camera.

Layout under ``root`` (as released by the authors)::

    <City>/panorama/<panoid>,<lat>,<lon>,.jpg          2048 x 1024 equirectangular, north-aligned
    <City>/satellite/satellite_<lat>_<lon>.png         640 x 640, north-up, centred on (lat, lon)
    splits/<City>/same_area_balanced_train.txt
    splits/<City>/same_area_balanced_test.txt
    splits/<City>/pano_label_balanced.txt              all panoramas of the city (cross-area)
    splits__corrected/<City>/<same name>__corrected.txt   corrected labels (used by default)

A split line is ``<pano file> <positive sat file> <drow> <dcol>`` followed by three
``<semi-positive sat file> <drow> <dcol>`` triples (13 fields; only the first four are used:
the **positive** satellite image). Cities: NewYork, Seattle, SanFrancisco, Chicago.

``area='same'``: train = ``same_area_balanced_train`` of all four cities, test =
``same_area_balanced_test`` of all four. ``area='cross'``: train = ``pano_label_balanced`` of
NewYork + Seattle, test = ``pano_label_balanced`` of SanFrancisco + Chicago.

Conventions (pinned by the fixture tests):

* **Label**: the panorama is at ``(col, row) = (320 - dcol, 320 + drow)`` of the 640 x 640
  satellite image, where 320 is the image centre (= the lat/lon in the satellite file name).
  In this project's pixel-centre convention the centre is 319.5, so the position is pixel
  ``uv = (319.5 - dcol, 319.5 + drow)`` and, in the patch frame (x east, y north, metres),
  ``T_patch_base[:2] = (-dcol, -drow) * m_per_px``. Field 3 of the line is ``drow``, field 4
  ``dcol`` (counted from 1). A satellite image of another size scales the label by size / 640.
* **m/px** at 640 px: :data:`VIGOR_M_PER_PX` per city (NewYork 0.113248, Seattle 0.100817,
  SanFrancisco 0.118141, Chicago 0.111262).
* **Patch = the positive satellite image** unchanged: its centre (the prior) is the lat/lon of
  its file name; ``gt_lat/lon`` is that centre moved by ``T_patch_base[:2]`` (consistent with
  the label; the panorama file name's lat/lon is not used for the pose).
* **Orientation**: the panorama is north-aligned, its centre column
  (``u = (W - 1) / 2``) looks north, so base_link (x forward = the centre column) has
  ``yaw = pi / 2``. ``orientation='known'``: ``prior_yaw_rad`` = the true yaw.
  ``orientation='unknown'``: the panorama is rolled left by ``s ~ U{0..W-1}`` columns
  (``np.roll(pano, -s, axis=1)``, seeded by ``(seed, index)``), so the true yaw becomes
  ``pi / 2 - 2 pi s / W``, while ``prior_yaw_rad`` stays ``pi / 2`` (no information).
* **Camera**: :class:`~xview_localizer.core.camera_pano.EquirectangularCamera`; ``K`` holds its pseudo
  intrinsics, ``T_base_camera`` a level camera ``camera_height_m`` above base_link (the release
  does not state the height; 2.5 m, a Street View roof camera, is assumed).
* ``depth_m`` is all zero; ``world_seed`` is the index of the city in :data:`VIGOR_CITIES`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ...core.camera import T_base_camera_from_xyz_rpy
from ...core.camera_pano import EquirectangularCamera
from ...core.errors import ConfigError, DatasetError
from ..pairs import PairSample
from ._common import normalize_index, offset_latlon, parse_float, read_rgb, sample_rng, split_lines

__all__ = ["VIGOR_CITIES", "VIGOR_M_PER_PX", "PanoPairSample", "VigorConfig", "Vigor", "parse_pano_name",
           "parse_sat_name"]

VIGOR_CITIES = ("NewYork", "Seattle", "SanFrancisco", "Chicago")
VIGOR_M_PER_PX = {"NewYork": 0.113248, "Seattle": 0.100817, "SanFrancisco": 0.118141, "Chicago": 0.111262}
VIGOR_SAT_SIZE_PX = 640
LABEL_CENTER_PX = 320.0
CROSS_TRAIN = ("NewYork", "Seattle")
CROSS_TEST = ("SanFrancisco", "Chicago")

_PANO_RE = re.compile(r"^(?P<id>[^,/]+),(?P<lat>[-+0-9.eE]+),(?P<lon>[-+0-9.eE]+),\.jpg$")
_SAT_RE = re.compile(r"^satellite_(?P<lat>[-+0-9.eE]+)_(?P<lon>[-+0-9.eE]+)\.png$")


@dataclass(frozen=True, eq=False)
class PanoPairSample(PairSample):
    """A :class:`PairSample` whose ground image is an equirectangular panorama:
    :attr:`camera` is an :class:`EquirectangularCamera`."""

    camera_model: str = "equirectangular"

    @property
    def camera(self) -> EquirectangularCamera:  # type: ignore[override]
        h, w = self.ground_rgb.shape[:2]
        return EquirectangularCamera(w, h)


@dataclass(frozen=True)
class VigorConfig:
    """``area`` same | cross, ``orientation`` known | unknown, ``corrected`` labels, optional
    panorama resize (``ground_width_px`` x ``ground_height_px``; None = native 2048 x 1024)."""

    area: str = "same"
    orientation: str = "known"
    corrected: bool = True
    camera_height_m: float = 2.5
    ground_width_px: int | None = None
    ground_height_px: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.area not in ("same", "cross"):
            raise ConfigError(f"VigorConfig.area must be 'same' or 'cross', got {self.area!r}")
        if self.orientation not in ("known", "unknown"):
            raise ConfigError(f"VigorConfig.orientation must be 'known' or 'unknown', got {self.orientation!r}")
        if not (math.isfinite(self.camera_height_m) and self.camera_height_m > 0):
            raise ConfigError(f"VigorConfig.camera_height_m must be > 0, got {self.camera_height_m!r}")
        if (self.ground_width_px is None) != (self.ground_height_px is None):
            raise ConfigError("VigorConfig: give both ground_width_px and ground_height_px, or neither")
        for name in ("ground_width_px", "ground_height_px"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ConfigError(f"VigorConfig.{name} must be a positive integer, got {v!r}")


def parse_pano_name(name: str, where: str) -> tuple[str, float, float]:
    """``<panoid>,<lat>,<lon>,.jpg`` -> (panoid, lat_deg, lon_deg)."""
    m = _PANO_RE.match(name)
    if m is None:
        raise DatasetError(f"{where}: {name!r} is not a panorama name <panoid>,<lat>,<lon>,.jpg")
    return m["id"], parse_float(m["lat"], where, "panorama lat"), parse_float(m["lon"], where, "panorama lon")


def parse_sat_name(name: str, where: str) -> tuple[float, float]:
    """``satellite_<lat>_<lon>.png`` -> (lat_deg, lon_deg) of the image centre."""
    m = _SAT_RE.match(name)
    if m is None:
        raise DatasetError(f"{where}: {name!r} is not a satellite name satellite_<lat>_<lon>.png")
    return parse_float(m["lat"], where, "satellite lat"), parse_float(m["lon"], where, "satellite lon")


@dataclass(frozen=True)
class _Entry:
    city: str
    pano: str
    sat: str
    sat_lat_deg: float
    sat_lon_deg: float
    drow_px: float
    dcol_px: float
    where: str


class Vigor:
    """The samples of one VIGOR split (``split`` train | test) under ``config``. Split lines
    are parsed and the referenced files checked on construction (errors name file and line)."""

    def __init__(self, root: str | Path, split: str = "test", config: VigorConfig | None = None,
                 cities: tuple[str, ...] | None = None) -> None:
        self.root = Path(root)
        self.cfg = config or VigorConfig()
        if split not in ("train", "test"):
            raise ConfigError(f"VIGOR split must be 'train' or 'test', got {split!r}")
        self.split = split
        if cities is None:
            if self.cfg.area == "same":
                cities = VIGOR_CITIES
            else:
                cities = CROSS_TRAIN if split == "train" else CROSS_TEST
        for c in cities:
            if c not in VIGOR_M_PER_PX:
                raise ConfigError(f"unknown VIGOR city {c!r}; cities: {list(VIGOR_CITIES)}")
        self.cities = tuple(cities)
        self.entries: list[_Entry] = []
        for city in self.cities:
            self._read_split(city)
        if not self.entries:
            raise DatasetError(f"{self.root}: no VIGOR samples for cities {list(self.cities)}")

    def split_path(self, city: str) -> Path:
        """The split file used for ``city`` under the configuration."""
        if self.cfg.area == "same":
            stem = f"same_area_balanced_{self.split}"
        else:
            stem = "pano_label_balanced"
        if self.cfg.corrected:
            return self.root / "splits__corrected" / city / f"{stem}__corrected.txt"
        return self.root / "splits" / city / f"{stem}.txt"

    def _read_split(self, city: str) -> None:
        path = self.split_path(city)
        for lineno, fields in split_lines(path):
            where = f"{path}:{lineno}"
            if len(fields) not in (4, 13):
                raise DatasetError(f"{where}: expected 13 fields (pano, 4 x (sat, drow, dcol)), got {len(fields)}")
            parse_pano_name(fields[0], where)
            lat, lon = parse_sat_name(fields[1], where)
            drow = parse_float(fields[2], where, "drow")
            dcol = parse_float(fields[3], where, "dcol")
            if max(abs(drow), abs(dcol)) > LABEL_CENTER_PX:
                raise DatasetError(f"{where}: offset ({drow}, {dcol}) px lies outside the 640 px satellite image")
            e = _Entry(city, fields[0], fields[1], lat, lon, drow, dcol, where)
            for p in (self._pano_path(e), self._sat_path(e)):
                if not p.is_file():
                    raise DatasetError(f"{where}: {p} is missing")
            self.entries.append(e)

    def _pano_path(self, e: _Entry) -> Path:
        return self.root / e.city / "panorama" / e.pano

    def _sat_path(self, e: _Entry) -> Path:
        return self.root / e.city / "satellite" / e.sat

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[PanoPairSample]:
        for i in range(len(self)):
            yield self[i]

    def roll_px(self, index: int, width_px: int) -> int:
        """Columns the panorama of ``index`` is rolled left by (0 for known orientation)."""
        if self.cfg.orientation == "known":
            return 0
        return int(sample_rng(self.cfg.seed, index, 0x5649474F).integers(0, width_px))

    def T_base_camera(self) -> np.ndarray:
        return T_base_camera_from_xyz_rpy(0.0, 0.0, self.cfg.camera_height_m, 0.0, 0.0, 0.0)

    def __getitem__(self, index: int) -> PanoPairSample:
        import cv2

        index = normalize_index(index, len(self.entries))
        e = self.entries[index]
        pano = read_rgb(self._pano_path(e), e.where)
        if self.cfg.ground_width_px is not None:
            pano = cv2.resize(pano, (self.cfg.ground_width_px, self.cfg.ground_height_px),
                              interpolation=cv2.INTER_AREA)
        h, w = pano.shape[:2]
        s = self.roll_px(index, w)
        if s:
            pano = np.roll(pano, -s, axis=1)
        sat = read_rgb(self._sat_path(e), e.where)
        if sat.shape[0] != sat.shape[1]:
            raise DatasetError(f"{self._sat_path(e)}: satellite image must be square, got {sat.shape[1]}x{sat.shape[0]}")
        scale = sat.shape[0] / VIGOR_SAT_SIZE_PX
        m_per_px = VIGOR_M_PER_PX[e.city] / scale
        east_m = -e.dcol_px * scale * m_per_px
        north_m = -e.drow_px * scale * m_per_px
        gt_lat, gt_lon = offset_latlon(e.sat_lat_deg, e.sat_lon_deg, east_m, north_m)
        yaw_true_rad = math.remainder(math.pi / 2.0 - 2.0 * math.pi * s / w, 2.0 * math.pi)
        prior_yaw = yaw_true_rad if self.cfg.orientation == "known" else math.pi / 2.0
        return PanoPairSample(
            id=f"{e.city}/{e.pano}",
            world_seed=VIGOR_CITIES.index(e.city),
            ground_rgb=np.ascontiguousarray(pano),
            depth_m=np.zeros((h, w), np.float32),
            sat_rgb=sat,
            K=EquirectangularCamera(w, h).K,
            T_base_camera=self.T_base_camera(),
            sat_m_per_px=m_per_px,
            sat_center_lat_deg=e.sat_lat_deg,
            sat_center_lon_deg=e.sat_lon_deg,
            T_patch_base=np.array([east_m, north_m, yaw_true_rad]),
            prior_yaw_rad=prior_yaw,
            gt_lat_deg=gt_lat,
            gt_lon_deg=gt_lon,
        )
