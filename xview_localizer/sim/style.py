"""Seeded scene styles: how a world and its two captures look, apart from its geometry (issue 14).

A world is drawn from a *layout* (:class:`~xview_localizer.sim.world.WorldStyle`: road network,
densities, heights; the geometry) and a *style* (:class:`SceneStyle`): the materials of the
ground and of the objects (:class:`Materials`), and two :class:`Capture` s, the aerial one (the
satellite tiles) and the ground one (the vehicle camera), taken at different times of day with
different sensors. A style family (:data:`STYLE_FAMILIES`) is a distribution over styles:
``draw_scene_style(family, seed)`` draws one, deterministically.

* Appearance never moves geometry: :func:`apply_materials` repaints the albedo from the world's
  ``ground_class`` raster and recolours objects with its own random stream, so two styles of the
  same layout have identical roads, buildings, trees and cars (tested).
* Movable objects differ between the captures: each capture keeps its own random subset of the
  parked cars (``Capture.car_keep``).
* Sun and shadows differ: the aerial capture's sun shades and shadows the orthophoto
  (``render_orthophoto``), the ground capture's sun casts shadows on the ground albedo the
  camera sees (:func:`ground_capture_world`).
* Sensors differ: exposure, white balance, gamma, haze, noise, blur, JPEG (:func:`degrade`);
  the aerial one adds building lean (off-nadir), a coarser native resolution and leaf-off
  crowns, the ground one a camera drawn per image (height, pitch, roll, field of view and lens:
  undistorted pinhole, radial distortion, fisheye or 360-degree panorama, :func:`draw_ground_camera`
  and :mod:`.lens`).

Held-out families (:data:`HELDOUT_FAMILIES`) are never used for training; evaluation reports
them separately (docs/styles.md).
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from ..core.errors import ConfigError, DatasetError
from .lens import LensRanges, draw_lens
from .world import GROUND_CLASSES, World, WorldStyle

__all__ = ["Materials", "Capture", "GroundCameraRanges", "SceneStyle", "STYLE_FAMILIES", "TRAINING_FAMILIES",
           "HELDOUT_FAMILIES", "draw_scene_style", "apply_materials", "aerial_style_of", "ground_style_of",
           "keep_cars", "ground_capture_world", "degrade", "draw_ground_camera", "save_scene_style",
           "load_scene_style", "STYLE_FILE"]

#: File of a world directory that holds its :class:`SceneStyle` (absent: the classic look).
STYLE_FILE = "style.json"
STYLE_FORMAT = "xview-style/1"

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Materials:
    """Ground and object materials (uint8 RGB base colours; shares and strengths in [0, 1]).

    dry_grass: share of the grass that is dry (low-frequency patches). dirt: share of bare
    ground blotches on grass. gravel: fine-grain noise on dirt and grass. asphalt_wear: share
    of the carriageway under repair patches and worn tracks. marking_fade: how much the lane
    markings have faded towards the asphalt; marking_missing: share of marking pieces gone.
    snow: snow banks along the carriageway and on grass (0 = none). texture_noise: multiscale
    albedo noise; texture_scale_m: its coarse wavelength. leaf_off: crowns without leaves
    (aerial opacity 1 - 0.7 leaf_off). roof/facade/canopy/car colours: the sets objects draw from.
    """

    grass_rgb: RGB = (92, 116, 62)
    dry_grass_rgb: RGB = (150, 140, 90)
    dry_grass: float = 0.2
    dirt_rgb: RGB = (128, 106, 80)
    dirt: float = 0.1
    gravel: float = 0.3
    asphalt_rgb: RGB = (78, 80, 84)
    asphalt_wear: float = 0.2
    marking_rgb: RGB = (232, 232, 226)
    marking_fade: float = 0.1
    marking_missing: float = 0.0
    sidewalk_rgb: RGB = (168, 164, 156)
    curb_rgb: RGB = (190, 188, 182)
    lot_rgb: RGB = (92, 92, 94)
    bay_rgb: RGB = (120, 116, 110)
    plaza_rgb: RGB = (176, 170, 160)
    snow: float = 0.0
    texture_noise: float = 0.5
    texture_scale_m: float = 20.0
    leaf_off: float = 0.0
    roof_rgbs: tuple[RGB, ...] = ((150, 72, 52), (92, 92, 98), (160, 158, 150))
    facade_rgbs: tuple[RGB, ...] = ((210, 200, 180), (180, 160, 140))
    canopy_rgbs: tuple[RGB, ...] = ((58, 96, 40), (70, 110, 46))
    car_rgbs: tuple[RGB, ...] = ((235, 235, 235), (20, 20, 22), (160, 162, 166), (30, 50, 110), (150, 20, 20))

    def __post_init__(self) -> None:
        for name in ("dry_grass", "dirt", "gravel", "asphalt_wear", "marking_fade", "marking_missing", "snow",
                     "texture_noise", "leaf_off"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise ConfigError(f"Materials.{name} must be in [0, 1], got {v!r}")
        if not (2.0 <= self.texture_scale_m <= 100.0):
            raise ConfigError(f"Materials.texture_scale_m must be in [2, 100], got {self.texture_scale_m!r}")
        for name in ("roof_rgbs", "facade_rgbs", "canopy_rgbs", "car_rgbs"):
            if not getattr(self, name):
                raise ConfigError(f"Materials.{name} must hold at least one colour")


@dataclass(frozen=True)
class Capture:
    """One capture of the world (aerial survey or ground camera).

    sun_azimuth_deg: compass direction towards the sun (0 = north, clockwise);
    sun_elevation_deg in (5, 90]; shadow_strength in [0, 1]. exposure: linear gain;
    white_balance: RGB gains; gamma: applied after them; haze: blend towards a bright grey in
    [0, 0.5]. noise_sigma: Gaussian sensor noise (fraction of full scale); blur_sigma_px: optical
    blur; jpeg_quality: 0 = none, else 20-98. car_keep: share of parked cars present.
    lean_m_per_m (aerial only): off-nadir lean (see :class:`~xview_localizer.sim.aerial.AerialStyle`).
    resolution_factor (aerial only): native resolution = tile resolution x this (>= 1: coarser).
    """

    sun_azimuth_deg: float = 150.0
    sun_elevation_deg: float = 48.0
    shadow_strength: float = 0.55
    exposure: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    haze: float = 0.0
    noise_sigma: float = 0.0
    blur_sigma_px: float = 0.0
    jpeg_quality: int = 0
    car_keep: float = 1.0
    lean_m_per_m: tuple[float, float] = (0.0, 0.0)
    resolution_factor: float = 1.0

    def __post_init__(self) -> None:
        if not (5.0 < self.sun_elevation_deg <= 90.0):
            raise ConfigError(f"Capture.sun_elevation_deg must be in (5, 90], got {self.sun_elevation_deg!r}")
        checks = {"shadow_strength": (0.0, 1.0), "exposure": (0.2, 4.0), "gamma": (0.3, 3.0), "haze": (0.0, 0.5),
                  "noise_sigma": (0.0, 0.2), "blur_sigma_px": (0.0, 4.0), "car_keep": (0.0, 1.0),
                  "resolution_factor": (1.0, 4.0)}
        for name, (lo, hi) in checks.items():
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
                raise ConfigError(f"Capture.{name} must be in [{lo}, {hi}], got {v!r}")
        if not (self.jpeg_quality == 0 or 20 <= self.jpeg_quality <= 98):
            raise ConfigError(f"Capture.jpeg_quality must be 0 or in [20, 98], got {self.jpeg_quality!r}")
        if len(self.white_balance) != 3 or not all(0.3 <= g <= 3.0 for g in self.white_balance):
            raise ConfigError(f"Capture.white_balance must be 3 gains in [0.3, 3], got {self.white_balance!r}")
        object.__setattr__(self, "white_balance", tuple(float(g) for g in self.white_balance))
        object.__setattr__(self, "lean_m_per_m", tuple(float(g) for g in self.lean_m_per_m))
        object.__setattr__(self, "jpeg_quality", int(self.jpeg_quality))


@dataclass(frozen=True)
class GroundCameraRanges:
    """Ranges (min, max) the ground camera of each image is drawn from: height above the ground
    (m), pitch (deg, + = down, REP-103 sign of :func:`~xview_localizer.core.camera.kitti_like_T_base_camera`),
    roll (deg), horizontal field of view (deg; the KITTI camera's is 81.2); ``lens``: the
    shares of distorted, fisheye and panoramic images (:class:`~xview_localizer.sim.lens.LensRanges`;
    the default, and a style file written before lenses existed, has none)."""

    height_m: tuple[float, float] = (1.65, 1.65)
    pitch_deg: tuple[float, float] = (0.0, 0.0)
    roll_deg: tuple[float, float] = (0.0, 0.0)
    hfov_deg: tuple[float, float] = (81.2, 81.2)
    lens: LensRanges = field(default_factory=LensRanges)

    def __post_init__(self) -> None:
        if not isinstance(self.lens, LensRanges):
            raise ConfigError(f"GroundCameraRanges.lens must be a LensRanges, got {type(self.lens).__name__}")
        for name, lo, hi in (("height_m", 0.5, 4.0), ("pitch_deg", -15.0, 15.0), ("roll_deg", -10.0, 10.0),
                             ("hfov_deg", 40.0, 120.0)):
            pair = tuple(float(v) for v in getattr(self, name))
            if len(pair) != 2 or not (lo <= pair[0] <= pair[1] <= hi):
                raise ConfigError(f"GroundCameraRanges.{name} must be (min, max) within [{lo}, {hi}], got {pair!r}")
            object.__setattr__(self, name, pair)


@dataclass(frozen=True)
class SceneStyle:
    """Everything a world's look is drawn from: family name, the seed it was drawn with, the
    layout knobs (geometry), materials, the two captures and the ground camera ranges."""

    family: str
    seed: int
    layout: WorldStyle = field(default_factory=WorldStyle)
    materials: Materials = field(default_factory=Materials)
    aerial: Capture = field(default_factory=Capture)
    ground: Capture = field(default_factory=Capture)
    camera: GroundCameraRanges = field(default_factory=GroundCameraRanges)

    @property
    def heldout(self) -> bool:
        return self.family in HELDOUT_FAMILIES

    def to_dict(self) -> dict:
        return {"format": STYLE_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "SceneStyle":
        try:
            def tup(d: dict) -> dict:
                return {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
                        for k, v in d.items()}

            camera = dict(data["camera"])
            lens = LensRanges(**tup(camera.pop("lens", None) or {}))
            return cls(family=str(data["family"]), seed=int(data["seed"]),
                       layout=WorldStyle.from_dict(data["layout"]),
                       materials=Materials(**tup(data["materials"])), aerial=Capture(**tup(data["aerial"])),
                       ground=Capture(**tup(data["ground"])), camera=GroundCameraRanges(**tup(camera), lens=lens))
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"scene style: malformed ({exc})") from exc


# ----------------------------------------------------------------------------------------------
# families
# ----------------------------------------------------------------------------------------------
def _jit(rng: np.random.Generator, rgb, amount: float = 14.0, hue: float = 0.03, sat: float = 0.15) -> RGB:
    """A colour near ``rgb``: hue, saturation and brightness jitter."""
    r, g, b = (np.asarray(rgb, float) / 255.0).tolist()
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    h = (h + rng.uniform(-hue, hue)) % 1.0
    s = float(np.clip(s * (1.0 + rng.uniform(-sat, sat)), 0.0, 1.0))
    v = float(np.clip(v + rng.uniform(-amount, amount) / 255.0, 0.0, 1.0))
    return tuple(int(round(c * 255.0)) for c in colorsys.hsv_to_rgb(h, s, v))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


#: Per family: layout knobs, base colours and the ranges styles are drawn from.
_FAMILY_SPECS: dict[str, dict] = {
    "town_grid": dict(
        layout=dict(palette="temperate", building_density=0.8, tree_density=0.5, grid_spacing_range_m=(90.0, 150.0),
                    curved_road_fraction=0.15, diagonal_roads=1),
        grass=(92, 116, 62), dry=(150, 140, 90), asphalt=(78, 80, 84), sidewalk=(168, 164, 156),
        roofs=((150, 72, 52), (120, 60, 50), (92, 92, 98), (70, 72, 78), (160, 158, 150)),
        canopy=((58, 96, 40), (70, 110, 46), (48, 82, 38)), dry_range=(0.0, 0.3), snow=(0.0, 0.0), leaf_off=(0.0, 0.1)),
    "suburb_curved": dict(
        layout=dict(palette="temperate", building_density=0.55, tree_density=0.9, grid_spacing_range_m=(110.0, 190.0),
                    curved_road_fraction=0.8, diagonal_roads=2, road_width_range_m=(6.0, 9.0),
                    building_height_range_m=(5.0, 12.0), parked_car_density=0.6),
        grass=(84, 124, 58), dry=(140, 138, 84), asphalt=(70, 72, 76), sidewalk=(180, 176, 166),
        roofs=((110, 56, 44), (80, 80, 88), (140, 100, 80), (60, 64, 70)),
        canopy=((50, 90, 36), (66, 104, 44), (40, 76, 34)), dry_range=(0.0, 0.4), snow=(0.0, 0.0), leaf_off=(0.0, 0.2)),
    "rural_roads": dict(
        layout=dict(palette="temperate", building_density=0.15, tree_density=0.35, grid_spacing_range_m=(200.0, 400.0),
                    curved_road_fraction=0.6, diagonal_roads=2, road_width_range_m=(6.0, 8.0),
                    building_height_range_m=(5.0, 9.0), parked_car_density=0.15, park_fraction=0.0,
                    parking_lot_fraction=0.02),
        grass=(110, 122, 64), dry=(170, 150, 96), asphalt=(88, 88, 86), sidewalk=(150, 140, 120),
        roofs=((140, 70, 50), (100, 96, 90), (70, 80, 70)),
        canopy=((64, 96, 44), (80, 104, 50)), dry_range=(0.2, 0.8), snow=(0.0, 0.0), leaf_off=(0.0, 0.3)),
    "arterial_industrial": dict(
        layout=dict(palette="industrial", building_density=0.9, tree_density=0.2, grid_spacing_range_m=(120.0, 220.0),
                    curved_road_fraction=0.1, diagonal_roads=1, road_width_range_m=(11.0, 14.0),
                    building_height_range_m=(6.0, 20.0), parking_lot_fraction=0.2),
        grass=(100, 112, 70), dry=(146, 138, 100), asphalt=(90, 90, 90), sidewalk=(150, 150, 146),
        roofs=((140, 142, 146), (170, 172, 176), (110, 112, 118), (200, 200, 196)),
        canopy=((60, 92, 44), (76, 100, 52)), dry_range=(0.1, 0.5), snow=(0.0, 0.0), leaf_off=(0.0, 0.1)),
    "autumn_town": dict(
        layout=dict(palette="nordic", season="autumn", building_density=0.75, tree_density=0.7,
                    grid_spacing_range_m=(90.0, 170.0), curved_road_fraction=0.35),
        grass=(104, 112, 64), dry=(140, 120, 70), asphalt=(58, 60, 64), sidewalk=(150, 152, 156),
        roofs=((60, 62, 70), (40, 44, 52), (120, 40, 36), (90, 96, 104)),
        canopy=((170, 96, 34), (190, 140, 40), (150, 60, 30), (90, 110, 44)), dry_range=(0.1, 0.5), snow=(0.0, 0.0),
        leaf_off=(0.1, 0.5)),
    "mediterranean_dry": dict(
        layout=dict(palette="mediterranean", building_density=0.85, tree_density=0.35,
                    grid_spacing_range_m=(80.0, 140.0), curved_road_fraction=0.3, building_height_range_m=(6.0, 18.0)),
        grass=(130, 128, 74), dry=(184, 164, 110), asphalt=(96, 94, 92), sidewalk=(200, 186, 160),
        roofs=((184, 96, 60), (196, 112, 72), (170, 84, 56), (220, 214, 200)),
        canopy=((70, 90, 44), (90, 100, 56)), dry_range=(0.4, 0.9), snow=(0.0, 0.0), leaf_off=(0.0, 0.1)),
    # --- held out: never used for training ---
    "winter_snow": dict(
        layout=dict(palette="nordic", season="winter", building_density=0.7, tree_density=0.6,
                    grid_spacing_range_m=(100.0, 180.0), curved_road_fraction=0.5, diagonal_roads=2),
        grass=(150, 150, 140), dry=(170, 166, 150), asphalt=(70, 72, 78), sidewalk=(196, 198, 202),
        roofs=((60, 62, 70), (200, 202, 206), (120, 40, 36), (90, 96, 104)),
        canopy=((96, 88, 78), (104, 92, 80), (40, 62, 44)), dry_range=(0.0, 0.2), snow=(0.4, 0.9),
        leaf_off=(0.6, 1.0), sun_elevation=(12.0, 28.0)),
    "arid_sprawl": dict(
        layout=dict(palette="mediterranean", building_density=0.5, tree_density=0.15,
                    grid_spacing_range_m=(130.0, 240.0), curved_road_fraction=0.25, road_width_range_m=(9.0, 14.0),
                    building_height_range_m=(5.0, 10.0), parking_lot_fraction=0.15),
        grass=(176, 156, 118), dry=(196, 176, 134), asphalt=(110, 106, 100), sidewalk=(206, 196, 176),
        roofs=((226, 224, 218), (200, 190, 170), (170, 120, 90)),
        canopy=((90, 104, 60), (110, 110, 70)), dry_range=(0.6, 1.0), snow=(0.0, 0.0), leaf_off=(0.0, 0.2),
        sun_elevation=(55.0, 80.0)),
}

#: Per family: the shares of ground images with a radial (plumb_bob) lens, a fisheye and a
#: 360-degree panorama (:class:`~xview_localizer.sim.lens.LensRanges`, its default coefficient
#: ranges). Constants, not draws: a family's style draws are those it had before lenses.
_FAMILY_LENSES: dict[str, dict] = {
    "town_grid": dict(plumb_bob_share=0.25),
    "suburb_curved": dict(plumb_bob_share=0.2, fisheye_share=0.1),
    "rural_roads": dict(plumb_bob_share=0.2, panorama_share=0.15),
    "arterial_industrial": dict(plumb_bob_share=0.3),
    "autumn_town": dict(plumb_bob_share=0.2, panorama_share=0.15),
    "mediterranean_dry": dict(plumb_bob_share=0.2, fisheye_share=0.1),
    "winter_snow": dict(plumb_bob_share=0.3, fisheye_share=0.1, panorama_share=0.15),
    "arid_sprawl": dict(plumb_bob_share=0.2, fisheye_share=0.1, panorama_share=0.2),
}

#: Every style family.
STYLE_FAMILIES: tuple[str, ...] = tuple(_FAMILY_SPECS)
#: Families never used for training (evaluation only).
HELDOUT_FAMILIES: tuple[str, ...] = ("winter_snow", "arid_sprawl")
#: Families the training data is drawn from.
TRAINING_FAMILIES: tuple[str, ...] = tuple(f for f in STYLE_FAMILIES if f not in HELDOUT_FAMILIES)


def _capture(rng: np.random.Generator, spec: dict, aerial: bool) -> Capture:
    el_lo, el_hi = spec.get("sun_elevation", (20.0, 70.0))
    wb = tuple(float(np.clip(1.0 + rng.normal(0.0, 0.07), 0.75, 1.3)) for _ in range(3))
    return Capture(
        sun_azimuth_deg=_u(rng, 0.0, 360.0), sun_elevation_deg=_u(rng, el_lo, el_hi),
        shadow_strength=_u(rng, 0.3, 0.7), exposure=float(np.exp(rng.normal(0.0, 0.2))), white_balance=wb,
        gamma=float(np.exp(rng.normal(0.0, 0.12))), haze=_u(rng, 0.0, 0.2 if aerial else 0.1),
        noise_sigma=_u(rng, 0.0, 0.03), blur_sigma_px=_u(rng, 0.0, 1.0 if aerial else 0.8),
        jpeg_quality=int(rng.integers(35, 96)) if rng.random() < 0.7 else 0,
        car_keep=_u(rng, 0.5, 1.0),
        lean_m_per_m=tuple(float(v) for v in rng.normal(0.0, 0.08, 2)) if aerial else (0.0, 0.0),
        resolution_factor=_u(rng, 1.0, 2.0) if aerial else 1.0)


def draw_scene_style(family: str, seed: int) -> SceneStyle:
    """A style of ``family`` (one of :data:`STYLE_FAMILIES`), deterministic in ``(family, seed)``."""
    if family not in _FAMILY_SPECS:
        raise ConfigError(f"unknown style family {family!r}; known: {list(STYLE_FAMILIES)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"style seed must be a non-negative int, got {seed!r}")
    spec = _FAMILY_SPECS[family]
    rng = np.random.default_rng([int(seed), STYLE_FAMILIES.index(family), 14])
    mats = Materials(
        grass_rgb=_jit(rng, spec["grass"]), dry_grass_rgb=_jit(rng, spec["dry"]),
        dry_grass=_u(rng, *spec["dry_range"]), dirt_rgb=_jit(rng, (128, 106, 80), 20), dirt=_u(rng, 0.0, 0.25),
        gravel=_u(rng, 0.0, 0.8), asphalt_rgb=_jit(rng, spec["asphalt"], 16, 0.02, 0.3),
        asphalt_wear=_u(rng, 0.0, 0.6), marking_rgb=_jit(rng, (232, 232, 226), 12, 0.05, 0.5),
        marking_fade=_u(rng, 0.0, 0.7), marking_missing=_u(rng, 0.0, 0.35) if rng.random() < 0.5 else 0.0,
        sidewalk_rgb=_jit(rng, spec["sidewalk"]), curb_rgb=_jit(rng, (190, 188, 182)),
        lot_rgb=_jit(rng, spec["asphalt"], 18), bay_rgb=_jit(rng, (120, 116, 110), 18),
        plaza_rgb=_jit(rng, spec["sidewalk"], 20), snow=_u(rng, *spec["snow"]),
        texture_noise=_u(rng, 0.2, 0.9), texture_scale_m=_u(rng, 8.0, 40.0), leaf_off=_u(rng, *spec["leaf_off"]),
        roof_rgbs=tuple(_jit(rng, c, 18) for c in spec["roofs"]),
        facade_rgbs=tuple(_jit(rng, c, 18) for c in ((210, 200, 180), (180, 160, 140), (150, 150, 150),
                                                     (200, 190, 170))),
        canopy_rgbs=tuple(_jit(rng, c, 12) for c in spec["canopy"]),
        car_rgbs=((235, 235, 235), (20, 20, 22), (160, 162, 166), (100, 102, 108), (30, 50, 110), (150, 20, 20),
                  (20, 70, 50), (210, 180, 60)))
    layout = WorldStyle(**spec["layout"], texture_noise=mats.texture_noise)
    cam = GroundCameraRanges(height_m=(1.4, 2.2), pitch_deg=(-3.0, 5.0), roll_deg=(-2.0, 2.0), hfov_deg=(60.0, 100.0),
                             lens=LensRanges(**_FAMILY_LENSES[family]))
    return SceneStyle(family=family, seed=int(seed), layout=layout, materials=mats, aerial=_capture(rng, spec, True),
                      ground=_capture(rng, spec, False), camera=cam)


def save_scene_style(style: SceneStyle, world_dir: Path) -> Path:
    path = Path(world_dir) / STYLE_FILE
    path.write_text(json.dumps(style.to_dict(), indent=1))
    return path


def load_scene_style(world_dir: Path) -> Optional[SceneStyle]:
    """The world directory's style, or None for a world of the classic look (no ``style.json``)."""
    path = Path(world_dir) / STYLE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable scene style ({exc})") from exc
    if data.get("format") != STYLE_FORMAT:
        raise DatasetError(f"{path}: format {data.get('format')!r}, expected {STYLE_FORMAT!r}")
    return SceneStyle.from_dict(data)


# ----------------------------------------------------------------------------------------------
# materials: repaint a world (geometry untouched)
# ----------------------------------------------------------------------------------------------
def _noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Smooth zero-mean, unit-ish noise (n, n) float32 with ``cells`` (>= 2) lattice cells per
    side: the world generator's noise field, bicubic."""
    from .worldgen.rasters import _noise_field

    return _noise_field(rng, n, max(2, cells), cv2.INTER_CUBIC)


def apply_materials(world: World, materials: Materials, seed: int) -> World:
    """``world`` repainted with ``materials``: a new albedo from its ``ground_class`` raster and
    new object colours, drawn from a stream seeded by ``(world seed, seed)``. Geometry (roads,
    building footprints and heights, tree and car shapes and places) and ``ground_class`` are the
    same objects as in ``world``."""
    m = materials
    rng = np.random.default_rng([world.config.seed, int(seed), 141])
    cls = world.ground_class
    n = cls.shape[0]
    res = world.config.albedo_m_per_px
    gc = GROUND_CLASSES
    lut = np.zeros((256, 3), np.float32)
    for name, col in (("grass", m.grass_rgb), ("road", m.asphalt_rgb), ("marking", m.marking_rgb),
                      ("sidewalk", m.sidewalk_rgb), ("curb", m.curb_rgb), ("parking", m.lot_rgb),
                      ("dirt", m.dirt_rgb), ("parking_bay", m.bay_rgb), ("plaza", m.plaza_rgb)):
        lut[gc[name]] = col
    img = lut[cls]  # (n, n, 3) float32
    size_m = n * res
    low = _noise(rng, n, int(size_m / m.texture_scale_m))
    mid = _noise(rng, n, int(size_m / 3.0))
    grass = cls == gc["grass"]
    # dry grass in low-frequency patches, dirt blotches, gravel grain
    if m.dry_grass > 0:
        thr = np.quantile(low[::8, ::8], 1.0 - m.dry_grass)
        w = np.clip((low - thr) * 2.0 + 0.5, 0.0, 1.0)[..., None] * grass[..., None]
        img = img * (1 - w) + np.asarray(m.dry_grass_rgb, np.float32) * w
    if m.dirt > 0:
        blot = _noise(rng, n, int(size_m / 6.0))
        thr = np.quantile(blot[::8, ::8], 1.0 - 0.5 * m.dirt)
        w = (np.clip((blot - thr) * 3.0, 0.0, 1.0) * grass)[..., None]
        img = img * (1 - w) + np.asarray(m.dirt_rgb, np.float32) * w
    # asphalt wear: repair patches (rectangles) and worn tracks, on the carriageway only
    road = cls == gc["road"]
    if m.asphalt_wear > 0 and road.any():
        patch = np.zeros((n, n), np.uint8)
        count = int(m.asphalt_wear * size_m * size_m / 800.0)
        for c, wh, ang in zip(rng.uniform(0, n, (count, 2)), rng.uniform(0.8, 6.0, (count, 2)) / res,
                              rng.uniform(0, 180, count)):
            box = cv2.boxPoints(((float(c[0]), float(c[1])), (float(wh[0]), float(wh[1])), float(ang)))
            cv2.fillPoly(patch, [np.round(box).astype(np.int32)], int(rng.integers(1, 255)))
        tone = (patch.astype(np.float32) / 255.0 - 0.5) * 0.5 * (patch > 0)
        img[road] *= (1.0 + tone[road])[:, None]
        img[road] *= (1.0 + 0.12 * m.asphalt_wear * mid[road])[:, None]
    # markings: whole pieces missing, the rest faded towards the asphalt
    mark = (cls == gc["marking"]).astype(np.uint8)
    if mark.any() and (m.marking_missing > 0 or m.marking_fade > 0):
        k, labels = cv2.connectedComponents(mark, connectivity=8)
        gone = np.concatenate([[False], rng.random(k - 1) < m.marking_missing])
        fade = np.concatenate([[0.0], rng.uniform(0.5, 1.0, k - 1) * m.marking_fade]).astype(np.float32)
        sel = mark.astype(bool)
        lab = labels[sel]
        f = np.where(gone[lab], 1.0, fade[lab]).astype(np.float32)[:, None]
        img[sel] = img[sel] * (1 - f) + np.asarray(m.asphalt_rgb, np.float32) * f
    # snow: banks along the carriageway (ploughed), patches on grass
    if m.snow > 0:
        carriage = ((cls == gc["road"]) | (cls == gc["marking"])).astype(np.uint8)
        dist_m = cv2.distanceTransform(1 - carriage, cv2.DIST_L2, 3) * res
        edge = np.exp(-np.maximum(dist_m - 0.6, 0.0) / (1.0 + 2.5 * m.snow)) * (dist_m > 0.25)
        cover = np.clip(edge * (0.7 + 0.3 * mid) + m.snow * grass * np.clip(0.6 + 0.5 * low, 0, 1), 0, 1)
        w = (np.clip(cover * (0.4 + m.snow), 0, 1) * (carriage == 0))[..., None]
        img = img * (1 - w) + np.float32(236.0) * w
    # multiscale texture and fine grain (gravel on grass and dirt)
    amp = 0.04 + 0.2 * m.texture_noise
    fine = rng.standard_normal((n, n)).astype(np.float32)
    fine = cv2.GaussianBlur(fine, (0, 0), 0.7)
    grain = amp * 0.5 + m.gravel * 0.25 * (grass | (cls == gc["dirt"]))
    img *= (1.0 + amp * (0.6 * low + 0.4 * mid) + grain * fine)[..., None]
    albedo = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    del img

    def pick(cols):
        return tuple(int(v) for v in cols[int(rng.integers(len(cols)))])

    buildings = [dataclasses.replace(b, roof_rgb=_jit(rng, pick(m.roof_rgbs), 10, 0.01, 0.1),
                                     facade_rgb=_jit(rng, pick(m.facade_rgbs), 10, 0.01, 0.1)) for b in world.buildings]
    trees = [dataclasses.replace(t, canopy_rgb=_jit(rng, pick(m.canopy_rgbs), 10, 0.02, 0.1)) for t in world.trees]
    cars = [dataclasses.replace(c, rgb=pick(m.car_rgbs)) for c in world.cars]
    return dataclasses.replace(world, buildings=buildings, trees=trees, cars=cars, albedo_rgb=albedo)


# ----------------------------------------------------------------------------------------------
# captures
# ----------------------------------------------------------------------------------------------
def keep_cars(world: World, keep: float, seed: int, capture: str) -> World:
    """``world`` with a random share ``keep`` of its parked cars (movable objects differ between
    the captures ``capture`` = 'aerial' / 'ground', each its own draw)."""
    rng = np.random.default_rng([world.config.seed, int(seed), 0 if capture == "aerial" else 1, 77])
    cars = [c for c in world.cars if rng.random() < keep]
    return dataclasses.replace(world, cars=cars)


def aerial_style_of(style: SceneStyle):
    """The :class:`~xview_localizer.sim.aerial.AerialStyle` of the aerial capture (sun, shadow,
    white balance, gamma, blur, lean, leaf-off crowns); exposure, haze, noise, resolution and JPEG
    are applied afterwards by :func:`degrade`."""
    from .aerial import AerialStyle

    a = style.aerial
    return AerialStyle(sun_azimuth_deg=a.sun_azimuth_deg, sun_elevation_deg=a.sun_elevation_deg,
                       shadow_strength=a.shadow_strength,
                       white_balance=tuple(float(np.clip(g * a.exposure, 0.2, 5.0)) for g in a.white_balance),
                       gamma=a.gamma, haze_rgb=(0, 0, 0), blur_sigma_px=a.blur_sigma_px,
                       lean_m_per_m=a.lean_m_per_m, canopy_alpha=1.0 - 0.7 * style.materials.leaf_off)


def ground_style_of(style: SceneStyle):
    """The :class:`~xview_localizer.sim.ground.GroundStyle` of the ground capture (its sun and
    haze distance; neutral white balance: :func:`degrade` applies exposure, white balance and
    gamma to the rendered image)."""
    from .ground import GroundStyle

    g = style.ground
    return GroundStyle(sun_azimuth_deg=g.sun_azimuth_deg, sun_elevation_deg=g.sun_elevation_deg,
                       white_balance=(1.0, 1.0, 1.0), haze_m=float(600.0 / (1.0 + 20.0 * g.haze)))


def ground_capture_world(world: World, style: SceneStyle) -> World:
    """The world as the ground camera sees it: its own subset of parked cars, and the cast
    shadows of the ground capture's sun (another time of day than the aerial's) darkening the
    ground albedo. Geometry of everything else unchanged."""
    from .aerial import AerialStyle, _Canvas, _paint_shadows

    g = style.ground
    w = keep_cars(world, g.car_keep, style.seed, "ground")
    mask = _paint_shadows(w, _Canvas(w.georef), AerialStyle(sun_azimuth_deg=g.sun_azimuth_deg,
                                                             sun_elevation_deg=g.sun_elevation_deg))
    k = g.shadow_strength / 255.0
    albedo = np.empty_like(w.albedo_rgb)
    for v0 in range(0, albedo.shape[0], 1000):
        f = 1.0 - k * mask[v0:v0 + 1000].astype(np.float32)
        albedo[v0:v0 + 1000] = (w.albedo_rgb[v0:v0 + 1000].astype(np.float32) * f[..., None] + 0.5).astype(np.uint8)
    return dataclasses.replace(w, albedo_rgb=albedo)


def degrade(rgb: np.ndarray, capture: Capture, rng: np.random.Generator, *, colour: bool = True,
            blur: bool = True) -> np.ndarray:
    """Sensor effects of ``capture`` on an image (H, W, 3) uint8: (``colour``) exposure x white
    balance and gamma, haze, coarser native resolution, (``blur``) optical blur, noise, JPEG.
    The aerial renderer applies colour and blur itself (``colour=blur=False`` there). Returns
    uint8; pixel positions unchanged."""
    img = rgb.astype(np.float32) / 255.0
    c = capture
    if colour:
        img = np.clip(img * (np.asarray(c.white_balance, np.float32) * np.float32(c.exposure)), 0, 1) ** np.float32(c.gamma)
    if c.haze > 0:
        img = img * (1 - c.haze) + np.float32(0.78) * c.haze
    h, w = img.shape[:2]
    if c.resolution_factor > 1.0:
        small = cv2.resize(img, (max(1, int(round(w / c.resolution_factor))), max(1, int(round(h / c.resolution_factor)))),
                           interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if blur and c.blur_sigma_px > 0:
        img = cv2.GaussianBlur(img, (0, 0), c.blur_sigma_px)
    if c.noise_sigma > 0:
        img = img + rng.normal(0.0, c.noise_sigma, img.shape).astype(np.float32)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if c.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(c.jpeg_quality)])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    return out


def draw_ground_camera(ranges: GroundCameraRanges, width_px: int, height_px: int, rng: np.random.Generator,
                       lens_rng: Optional[np.random.Generator] = None):
    """A ground camera drawn from ``ranges``: ``(camera, T_base_camera (4, 4))``; the principal
    point is the image centre, fx = fy from the field of view.

    ``rng`` draws the field of view, height, roll and pitch (four numbers, always). Without
    ``lens_rng`` the camera is the undistorted ``PinholeCamera``; with it, ``ranges.lens``
    may replace it by a distorted ``PinholeCamera`` (plumb_bob keeping the field of view, or an
    equidistant fisheye) or an ``EquirectangularCamera`` of the image size, drawn from
    ``lens_rng`` alone (:func:`~xview_localizer.sim.lens.draw_lens`): the pose draws and every
    later draw from ``rng`` are the same with or without lenses."""
    from ..core.camera import PinholeCamera, T_base_camera_from_xyz_rpy

    hfov = math.radians(_u(rng, *ranges.hfov_deg))
    f_px = 0.5 * width_px / math.tan(0.5 * hfov)
    cam = PinholeCamera.from_intrinsics(width_px, height_px, f_px, f_px, 0.5 * width_px - 0.5, 0.5 * height_px - 0.5)
    T = T_base_camera_from_xyz_rpy(0.0, 0.0, _u(rng, *ranges.height_m), math.radians(_u(rng, *ranges.roll_deg)),
                                   math.radians(_u(rng, *ranges.pitch_deg)), 0.0)
    if lens_rng is not None:
        lens_cam = draw_lens(ranges.lens, width_px, height_px, hfov, lens_rng)
        if lens_cam is not None:
            cam = lens_cam
    return cam, T


# ----------------------------------------------------------------------------------------------
# a styled world directory
# ----------------------------------------------------------------------------------------------
def write_styled_world(seed: int, family: str, out_dir: Path, *, style_seed: Optional[int] = None,
                       size_m: float = 400.0, zoom_max: int = 20, zoom_min: int = 18, margin_m: float = 64.0,
                       mbtiles: bool = False, datum_lat_deg: float = 49.01, datum_lon_deg: float = 8.42) -> SceneStyle:
    """Generate world ``seed`` with a style of ``family`` (drawn with ``style_seed``, default
    ``seed``) into ``out_dir``: ``world.json`` / ``albedo.png`` (materials applied), ``style.json``
    and the tile pyramid of the aerial capture (its cars, sun, lean, leaf-off crowns, sensor).
    The ground capture is made per image by ``sim dataset`` from ``style.json``. Returns the style."""
    from .aerial import render_orthophoto, write_tile_pyramid
    from .world import WorldConfig, generate_world

    style = draw_scene_style(family, seed if style_seed is None else style_seed)
    world = generate_world(WorldConfig(seed=seed, datum_lat_deg=datum_lat_deg, datum_lon_deg=datum_lon_deg,
                                       size_m=size_m, style=style.layout))
    world = apply_materials(world, style.materials, style.seed)
    out = Path(out_dir)
    world.save(out)
    save_scene_style(style, out)
    aerial = keep_cars(world, style.aerial.car_keep, style.seed, "aerial")
    ast = aerial_style_of(style)
    img, georef = render_orthophoto(aerial, style=ast)
    img = degrade(img, style.aerial, np.random.default_rng([seed, style.seed, 5]), colour=False, blur=False)
    write_tile_pyramid(aerial, out / "tiles", zoom_max=zoom_max, zoom_min=zoom_min, mbtiles=mbtiles, style=ast,
                       ortho=(img, georef), margin_m=margin_m)
    return style
