"""The synthetic world, public entry point: the data model and save/load
(:mod:`.world_model`: frames, rasters and objects are described there) plus the seeded
generator :func:`generate_world` (:mod:`.worldgen`).

Import every world name from here (``from xview_localizer.sim.world import World,
WorldConfig, generate_world``). Dependencies run one way, so there is no import cycle:
:mod:`.world_model` <- :mod:`.worldgen` <- this module (which imports the generator only when
:func:`generate_world` is called, so importing the data model stays light).
"""

from __future__ import annotations

from .world_model import (
    GROUND_CLASSES,
    PALETTES,
    SEASONS,
    WORLD_FORMAT_VERSION,
    Box,
    Building,
    Car,
    Intersection,
    RasterGeoref,
    Road,
    Tree,
    World,
    WorldConfig,
    WorldStyle,
)

__all__ = [
    "GROUND_CLASSES",
    "PALETTES",
    "SEASONS",
    "WORLD_FORMAT_VERSION",
    "Box",
    "Building",
    "Car",
    "Intersection",
    "RasterGeoref",
    "Road",
    "Tree",
    "World",
    "WorldConfig",
    "WorldStyle",
    "generate_world",
]


def generate_world(config: WorldConfig) -> World:
    """Generate a world from ``config`` (seeded, deterministic). See :mod:`.worldgen`."""
    from .worldgen import build_world  # lazy: importing the data model needs no cv2

    return build_world(config)
