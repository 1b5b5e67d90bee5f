"""The synthetic world's data model and its save/load; import it through
:mod:`xview_localizer.sim.world`, which adds the generator (:func:`~.world.generate_world`).

Holds :data:`GROUND_CLASSES`, :class:`WorldStyle`, :class:`WorldConfig`, :class:`RasterGeoref`,
the objects (:class:`Road`, :class:`Intersection`, :class:`Box`, :class:`Building`,
:class:`Tree`, :class:`Car`) and :class:`World` (``save``/``load``). Imports nothing of
:mod:`xview_localizer.sim` (the generator in :mod:`.worldgen` imports this module).

Frames and rasters
------------------
* World frame = local ENU tangent plane about the datum (:class:`xview_localizer.core.geo.LocalEnu`):
  x east, y north, z up, metres; the datum is the world centre; the world covers
  ``[-size_m/2, size_m/2]^2``. The ground is the plane z = 0 (flat; curbs are painted, not
  modelled in 3-D), so ground-truth depth on the ground is exact.
* World rasters (``albedo_rgb``, ``ground_class``) are north-up images of the ground plane at
  ``config.albedo_m_per_px`` (default 0.1 m/px), ``n_px = size_m / albedo_m_per_px`` square.
  Pixel ``[v, u]`` has its CENTRE at (OpenCV convention: integer uv = pixel centre)::

      x_m = -size_m/2 + (u + 0.5) * m_per_px
      y_m = +size_m/2 - (v + 0.5) * m_per_px

  :class:`RasterGeoref` implements this mapping both ways; the aerial and the ground renderer
  both use it, so they sample the same albedo at the same place.

Objects
-------
* :class:`Road`: centre line polyline (N, 2), carriageway ``width_m`` (curb to curb),
  ``lanes`` (2 = one lane each way, 4 = two each way; vehicles drive on the right). Outside
  the carriageway each side has an optional parking bay (``parking_bay_m``) and a sidewalk
  (``sidewalk_m``); parked cars stand in the bays, never in driving lanes.
* :class:`Building`: extruded footprint (K, 2) CCW (rectangle or L-shape), made of one or
  two oriented boxes (``parts``) that the ray caster intersects exactly.
* :class:`Tree`: vertical trunk cylinder plus an ellipsoidal canopy.
* :class:`Car`: parked car, an oriented box body plus a smaller cabin box on top.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..core.errors import ConfigError, DatasetError
from ..core.geo import LocalEnu

#: Ground classes of :attr:`World.ground_class` (uint8 raster).
GROUND_CLASSES: dict[str, int] = {
    "grass": 0,
    "road": 1,
    "marking": 2,
    "sidewalk": 3,
    "curb": 4,
    "parking": 5,
    "dirt": 6,
    "parking_bay": 7,
    "plaza": 8,
}

SEASONS = ("summer", "autumn", "winter")
PALETTES = ("temperate", "mediterranean", "nordic", "industrial")

WORLD_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
        raise ConfigError(f"{name} must be a finite number in [{lo}, {hi}], got {value!r}")


def _check_pair(name: str, pair: tuple, lo: float, hi: float) -> None:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise ConfigError(f"{name} must be a (min, max) pair, got {pair!r}")
    for v in pair:
        _check_range(name, v, lo, hi)
    if pair[0] > pair[1]:
        raise ConfigError(f"{name} must have min <= max, got {pair!r}")


@dataclass(frozen=True)
class WorldStyle:
    """Style knobs: the looks and densities of a world. Held-out worlds use other styles.

    palette: one of :data:`PALETTES` (ground, roof, facade and car colour sets).
    season: 'summer' | 'autumn' | 'winter' (grass and canopy colours; winter = sparse, grey).
    building_density, tree_density, parked_car_density, park_fraction,
    parking_lot_fraction: in [0, 1].
    road_width_range_m: carriageway widths, within [6, 14] m.
    grid_spacing_range_m: spacing of the road grid.
    curved_road_fraction: share of grid roads bent into smooth curves; plus
    ``diagonal_roads`` free curved roads across the grid.
    building_height_range_m: within [5, 30] m.
    texture_noise: amplitude of multiplicative albedo noise in [0, 1].
    """

    palette: str = "temperate"
    season: str = "summer"
    building_density: float = 0.8
    tree_density: float = 0.6
    parked_car_density: float = 0.5
    park_fraction: float = 0.12
    parking_lot_fraction: float = 0.08
    road_width_range_m: tuple[float, float] = (6.0, 14.0)
    grid_spacing_range_m: tuple[float, float] = (90.0, 170.0)
    curved_road_fraction: float = 0.35
    diagonal_roads: int = 1
    building_height_range_m: tuple[float, float] = (5.0, 30.0)
    texture_noise: float = 0.5

    def __post_init__(self) -> None:
        if self.palette not in PALETTES:
            raise ConfigError(f"WorldStyle.palette must be one of {PALETTES}, got {self.palette!r}")
        if self.season not in SEASONS:
            raise ConfigError(f"WorldStyle.season must be one of {SEASONS}, got {self.season!r}")
        for name in (
            "building_density",
            "tree_density",
            "parked_car_density",
            "park_fraction",
            "parking_lot_fraction",
            "curved_road_fraction",
            "texture_noise",
        ):
            _check_range(f"WorldStyle.{name}", getattr(self, name), 0.0, 1.0)
        _check_pair("WorldStyle.road_width_range_m", self.road_width_range_m, 6.0, 14.0)
        _check_pair("WorldStyle.grid_spacing_range_m", self.grid_spacing_range_m, 50.0, 500.0)
        _check_pair("WorldStyle.building_height_range_m", self.building_height_range_m, 5.0, 30.0)
        if not (isinstance(self.diagonal_roads, int) and 0 <= self.diagonal_roads <= 4):
            raise ConfigError(f"WorldStyle.diagonal_roads must be an int in [0, 4], got {self.diagonal_roads!r}")
        object.__setattr__(self, "road_width_range_m", tuple(float(v) for v in self.road_width_range_m))
        object.__setattr__(self, "grid_spacing_range_m", tuple(float(v) for v in self.grid_spacing_range_m))
        object.__setattr__(
            self, "building_height_range_m", tuple(float(v) for v in self.building_height_range_m)
        )

    @classmethod
    def from_dict(cls, data: dict) -> "WorldStyle":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for k in ("road_width_range_m", "grid_spacing_range_m", "building_height_range_m"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)

    @classmethod
    def preset(cls, name: str) -> "WorldStyle":
        """Named styles: 'default' (training), 'heldout_autumn', 'heldout_winter', 'dense'."""
        presets = {
            "default": cls(),
            "heldout_autumn": cls(palette="mediterranean", season="autumn", building_density=0.6,
                                  tree_density=0.8, road_width_range_m=(7.0, 13.0),
                                  grid_spacing_range_m=(110.0, 200.0), texture_noise=0.7),
            "heldout_winter": cls(palette="nordic", season="winter", building_density=0.9,
                                  tree_density=0.4, parked_car_density=0.7, curved_road_fraction=0.5,
                                  diagonal_roads=2),
            "dense": cls(palette="industrial", building_density=1.0, tree_density=0.3,
                         grid_spacing_range_m=(70.0, 120.0), park_fraction=0.05),
        }
        if name not in presets:
            raise ConfigError(f"unknown WorldStyle preset {name!r}; known: {sorted(presets)}")
        return presets[name]


@dataclass(frozen=True)
class WorldConfig:
    """What a world is generated from. Same config -> identical world (arrays and bytes).

    seed: non-negative int. datum_lat_deg/datum_lon_deg: the world centre (WGS84).
    size_m: side of the square world in metres, in [50, 5000].
    albedo_m_per_px: resolution of the ground rasters, in [0.05, 1.0].
    """

    seed: int
    datum_lat_deg: float = 49.01
    datum_lon_deg: float = 8.42
    size_m: float = 1000.0
    style: WorldStyle = field(default_factory=WorldStyle)
    albedo_m_per_px: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"WorldConfig.seed must be a non-negative int, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        _check_range("WorldConfig.datum_lat_deg", self.datum_lat_deg, -80.0, 80.0)
        _check_range("WorldConfig.datum_lon_deg", self.datum_lon_deg, -180.0, 180.0)
        _check_range("WorldConfig.size_m", self.size_m, 50.0, 5000.0)
        _check_range("WorldConfig.albedo_m_per_px", self.albedo_m_per_px, 0.05, 1.0)
        if not isinstance(self.style, WorldStyle):
            raise ConfigError(f"WorldConfig.style must be a WorldStyle, got {type(self.style).__name__}")
        n = self.size_m / self.albedo_m_per_px
        if abs(n - round(n)) > 1e-6:
            raise ConfigError(
                f"WorldConfig.size_m / albedo_m_per_px must be an integer, got {self.size_m} / "
                f"{self.albedo_m_per_px}"
            )

    @property
    def raster_size_px(self) -> int:
        return int(round(self.size_m / self.albedo_m_per_px))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["style"] = asdict(self.style)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "WorldConfig":
        try:
            return cls(
                seed=int(data["seed"]),
                datum_lat_deg=float(data["datum_lat_deg"]),
                datum_lon_deg=float(data["datum_lon_deg"]),
                size_m=float(data["size_m"]),
                style=WorldStyle.from_dict(data.get("style", {})),
                albedo_m_per_px=float(data.get("albedo_m_per_px", 0.1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"world config is malformed: {exc}") from exc


# --------------------------------------------------------------------------------------
# raster georeference
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RasterGeoref:
    """North-up raster of the ground plane: pixel [v, u] centre <-> world ENU (x_m, y_m).

    x_m = x_min_m + (u + 0.5) * m_per_px ; y_m = y_max_m - (v + 0.5) * m_per_px.
    """

    x_min_m: float
    y_max_m: float
    m_per_px: float
    width_px: int
    height_px: int

    def px_to_xy(self, uv_px: np.ndarray) -> np.ndarray:
        """(..., 2) pixel (u, v) -> (..., 2) world (x_m, y_m)."""
        uv = np.asarray(uv_px, dtype=float)
        x = self.x_min_m + (uv[..., 0] + 0.5) * self.m_per_px
        y = self.y_max_m - (uv[..., 1] + 0.5) * self.m_per_px
        return np.stack([x, y], axis=-1)

    def xy_to_px(self, xy_m: np.ndarray) -> np.ndarray:
        """(..., 2) world (x_m, y_m) -> (..., 2) fractional pixel (u, v)."""
        xy = np.asarray(xy_m, dtype=float)
        u = (xy[..., 0] - self.x_min_m) / self.m_per_px - 0.5
        v = (self.y_max_m - xy[..., 1]) / self.m_per_px - 0.5
        return np.stack([u, v], axis=-1)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------
# objects
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Road:
    """A road. ``centerline_xy_m`` (N, 2) world ENU polyline; ``width_m`` carriageway (curb to
    curb); ``lanes`` 2 (one each way) or 4 (two each way), driving on the right: for travel
    along increasing polyline index the lanes are on the right of the centre line, lane ``k``
    (0 = innermost) centred at lateral offset ``-(k + 0.5) * width_m / lanes`` (left positive).
    ``parking_bay_m`` (0 or ~2.3) and ``sidewalk_m`` lie outside the carriageway on each side.
    """

    id: int
    centerline_xy_m: np.ndarray
    width_m: float
    lanes: int = 2
    sidewalk_m: float = 2.5
    parking_bay_m: float = 0.0
    curved: bool = False

    @property
    def lane_width_m(self) -> float:
        return self.width_m / self.lanes

    def length_m(self) -> float:
        d = np.diff(self.centerline_xy_m, axis=0)
        return float(np.sum(np.hypot(d[:, 0], d[:, 1])))

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "centerline_xy_m": np.asarray(self.centerline_xy_m, float).tolist(),
            "width_m": self.width_m,
            "lanes": self.lanes,
            "sidewalk_m": self.sidewalk_m,
            "parking_bay_m": self.parking_bay_m,
            "curved": self.curved,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Road":
        return cls(int(d["id"]), np.asarray(d["centerline_xy_m"], float).reshape(-1, 2),
                   float(d["width_m"]), int(d["lanes"]), float(d["sidewalk_m"]),
                   float(d["parking_bay_m"]), bool(d.get("curved", False)))


@dataclass(frozen=True, eq=False)
class Intersection:
    """Where two or more roads cross: ``xy_m`` (2,) world ENU, ``road_ids`` of the roads,
    ``radius_m`` of the junction area (no lane markings inside; crosswalks just outside)."""

    id: int
    xy_m: np.ndarray
    road_ids: tuple[int, ...]
    radius_m: float = 0.0

    def to_dict(self) -> dict:
        return {"id": self.id, "xy_m": np.asarray(self.xy_m, float).tolist(), "road_ids": list(self.road_ids),
                "radius_m": self.radius_m}

    @classmethod
    def from_dict(cls, d: dict) -> "Intersection":
        return cls(int(d["id"]), np.asarray(d["xy_m"], float), tuple(int(i) for i in d["road_ids"]),
                   float(d.get("radius_m", 0.0)))


@dataclass(frozen=True)
class Box:
    """An upright oriented box: centre (cx_m, cy_m), yaw_rad of its local x (length) axis,
    half extents (half_length_m along local x, half_width_m along local y), z in [z0_m, z1_m]."""

    cx_m: float
    cy_m: float
    yaw_rad: float
    half_length_m: float
    half_width_m: float
    z0_m: float
    z1_m: float

    def corners_xy(self) -> np.ndarray:
        """(4, 2) footprint corners, counter-clockwise."""
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        local = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], float) * [self.half_length_m, self.half_width_m]
        return local @ np.array([[c, s], [-s, c]]) + [self.cx_m, self.cy_m]

    def to_list(self) -> list[float]:
        return [float(v) for v in (self.cx_m, self.cy_m, self.yaw_rad, self.half_length_m, self.half_width_m,
                                   self.z0_m, self.z1_m)]


@dataclass(frozen=True, eq=False)
class Building:
    """An extruded building: ``footprint_xy_m`` (K, 2) outline, CCW; ``parts`` the oriented boxes
    (one for a rectangle, two for an L) whose union is the footprint, all from z = 0 to
    ``height_m``; ``roof_rgb`` / ``facade_rgb`` (uint8 triples); ``storey_m`` storey height and
    ``window_spacing_m`` for the facade pattern."""

    id: int
    footprint_xy_m: np.ndarray
    height_m: float
    parts: tuple[Box, ...]
    roof_rgb: tuple[int, int, int]
    facade_rgb: tuple[int, int, int]
    storey_m: float = 3.0
    window_spacing_m: float = 3.0

    def to_dict(self) -> dict:
        return {"id": self.id, "footprint_xy_m": np.asarray(self.footprint_xy_m, float).tolist(),
                "height_m": self.height_m, "parts": [p.to_list() for p in self.parts],
                "roof_rgb": list(self.roof_rgb), "facade_rgb": list(self.facade_rgb),
                "storey_m": self.storey_m, "window_spacing_m": self.window_spacing_m}

    @classmethod
    def from_dict(cls, d: dict) -> "Building":
        return cls(int(d["id"]), np.asarray(d["footprint_xy_m"], float).reshape(-1, 2), float(d["height_m"]),
                   tuple(Box(*map(float, p)) for p in d["parts"]), tuple(int(c) for c in d["roof_rgb"]),
                   tuple(int(c) for c in d["facade_rgb"]), float(d["storey_m"]),
                   float(d["window_spacing_m"]))


@dataclass(frozen=True, eq=False)
class Tree:
    """A tree: trunk (vertical cylinder, ``trunk_radius_m``, z 0 .. canopy top) and an ellipsoid
    canopy centred above ``xy_m`` with horizontal radius ``canopy_radius_m`` between
    ``canopy_bottom_m`` and ``canopy_top_m``; ``canopy_rgb`` base colour."""

    xy_m: np.ndarray
    canopy_radius_m: float
    canopy_bottom_m: float
    canopy_top_m: float
    trunk_radius_m: float
    canopy_rgb: tuple[int, int, int]

    def to_dict(self) -> dict:
        return {"xy_m": np.asarray(self.xy_m, float).tolist(), "canopy_radius_m": self.canopy_radius_m,
                "canopy_bottom_m": self.canopy_bottom_m, "canopy_top_m": self.canopy_top_m,
                "trunk_radius_m": self.trunk_radius_m, "canopy_rgb": list(self.canopy_rgb)}

    @classmethod
    def from_dict(cls, d: dict) -> "Tree":
        return cls(np.asarray(d["xy_m"], float), float(d["canopy_radius_m"]), float(d["canopy_bottom_m"]),
                   float(d["canopy_top_m"]), float(d["trunk_radius_m"]), tuple(int(c) for c in d["canopy_rgb"]))


@dataclass(frozen=True, eq=False)
class Car:
    """A parked car: centre ``xy_m`` (2,), ``yaw_rad`` of its forward axis, ``length_m``,
    ``width_m``, ``height_m``, body ``rgb``. Geometry: a body box (z 0 .. 0.55 h) and a cabin
    box (z 0.55 h .. h, 55 % of the length, 90 % of the width) — see :meth:`boxes`."""

    xy_m: np.ndarray
    yaw_rad: float
    length_m: float
    width_m: float
    height_m: float
    rgb: tuple[int, int, int]

    def boxes(self) -> tuple[Box, Box]:
        x, y = float(self.xy_m[0]), float(self.xy_m[1])
        hb = 0.55 * self.height_m
        body = Box(x, y, self.yaw_rad, self.length_m / 2, self.width_m / 2, 0.0, hb)
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        off = -0.06 * self.length_m
        cabin = Box(x + c * off, y + s * off, self.yaw_rad, 0.275 * self.length_m, 0.45 * self.width_m,
                    hb, self.height_m)
        return body, cabin

    def to_dict(self) -> dict:
        return {"xy_m": np.asarray(self.xy_m, float).tolist(), "yaw_rad": float(self.yaw_rad),
                "length_m": self.length_m, "width_m": self.width_m, "height_m": self.height_m,
                "rgb": list(self.rgb)}

    @classmethod
    def from_dict(cls, d: dict) -> "Car":
        return cls(np.asarray(d["xy_m"], float), float(d["yaw_rad"]), float(d["length_m"]),
                   float(d["width_m"]), float(d["height_m"]), tuple(int(c) for c in d["rgb"]))


# --------------------------------------------------------------------------------------
# the world
# --------------------------------------------------------------------------------------
@dataclass(eq=False)
class World:
    """A generated world (see the module docstring for frames).

    albedo_rgb: (N, N, 3) uint8 ground-plane albedo, north-up, ``georef`` maps its pixels.
    ground_class: (N, N) uint8, values of :data:`GROUND_CLASSES`.
    """

    config: WorldConfig
    roads: list[Road]
    intersections: list[Intersection]
    buildings: list[Building]
    trees: list[Tree]
    cars: list[Car]
    albedo_rgb: np.ndarray
    ground_class: np.ndarray
    _enu: Optional[LocalEnu] = field(default=None, repr=False)

    @property
    def size_m(self) -> float:
        return self.config.size_m

    @property
    def half_size_m(self) -> float:
        return self.config.size_m / 2.0

    @property
    def georef(self) -> RasterGeoref:
        n = self.config.raster_size_px
        h = self.half_size_m
        return RasterGeoref(-h, h, self.config.albedo_m_per_px, n, n)

    @property
    def enu(self) -> LocalEnu:
        """The world frame <-> WGS84 (datum = world centre)."""
        if self._enu is None:
            self._enu = LocalEnu(self.config.datum_lat_deg, self.config.datum_lon_deg)
        return self._enu

    def contains_xy(self, xy_m: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy_m, float)
        return np.all(np.abs(xy) <= self.half_size_m, axis=-1)

    def road_by_id(self, road_id: int) -> Road:
        for r in self.roads:
            if r.id == road_id:
                return r
        raise ConfigError(f"world has no road with id {road_id}")

    # -- persistence ---------------------------------------------------------------------
    def to_json_dict(self) -> dict:
        return {
            "format_version": WORLD_FORMAT_VERSION,
            "config": self.config.to_dict(),
            "datum": {"lat_deg": self.config.datum_lat_deg, "lon_deg": self.config.datum_lon_deg,
                      "frame": "local ENU tangent plane at the datum (x east, y north, metres)"},
            "raster_georef": self.georef.to_dict(),
            "ground_classes": GROUND_CLASSES,
            "roads": [r.to_dict() for r in self.roads],
            "intersections": [i.to_dict() for i in self.intersections],
            "buildings": [b.to_dict() for b in self.buildings],
            "trees": [t.to_dict() for t in self.trees],
            "cars": [c.to_dict() for c in self.cars],
        }

    def save(self, directory: Path) -> Path:
        """Write ``world.json`` (config, datum, objects) and ``albedo.png`` (RGB) and
        ``ground_class.png`` into ``directory`` (created). Returns the directory."""
        import cv2

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "world.json").write_text(json.dumps(self.to_json_dict(), indent=1))
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        jobs = [(d / "albedo.png", self.albedo_rgb[:, :, ::-1]), (d / "ground_class.png", self.ground_class)]

        def write(job) -> bool:
            return bool(cv2.imwrite(str(job[0]), job[1], params))

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=2) as ex:  # PNG encoding releases the GIL
            ok = list(ex.map(write, jobs))
        for (path, _), good in zip(jobs, ok):
            if not good:
                raise DatasetError(f"{path}: could not write the raster")
        return d

    @classmethod
    def load(cls, directory: Path) -> "World":
        """Read a world written by :meth:`save`; raises DatasetError naming the bad file."""
        import cv2

        d = Path(directory)
        jpath = d / "world.json"
        if not jpath.is_file():
            raise DatasetError(f"{jpath}: no world.json (not a world directory)")
        try:
            data = json.loads(jpath.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{jpath}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
        if data.get("format_version") != WORLD_FORMAT_VERSION:
            raise DatasetError(f"{jpath}: unsupported format_version {data.get('format_version')!r}")
        try:
            config = WorldConfig.from_dict(data["config"])
            roads = [Road.from_dict(r) for r in data["roads"]]
            inters = [Intersection.from_dict(i) for i in data["intersections"]]
            buildings = [Building.from_dict(b) for b in data["buildings"]]
            trees = [Tree.from_dict(t) for t in data["trees"]]
            cars = [Car.from_dict(c) for c in data["cars"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{jpath}: malformed world description: {exc!r}") from exc
        albedo_bgr = cv2.imread(str(d / "albedo.png"), cv2.IMREAD_COLOR)
        ground_class = cv2.imread(str(d / "ground_class.png"), cv2.IMREAD_UNCHANGED)
        n = config.raster_size_px
        if albedo_bgr is None or albedo_bgr.shape != (n, n, 3):
            raise DatasetError(f"{d / 'albedo.png'}: missing or not {n}x{n} RGB")
        if ground_class is None or ground_class.shape != (n, n):
            raise DatasetError(f"{d / 'ground_class.png'}: missing or not {n}x{n}")
        return cls(config, roads, inters, buildings, trees, cars,
                   np.ascontiguousarray(albedo_bgr[:, :, ::-1]), ground_class)
