"""The seeded world generator behind :func:`xview_localizer.sim.world.generate_world`.

Steps (each draws from its own child of ``numpy.random.SeedSequence(config.seed)``, so
changing one knob does not reshuffle everything else):

1. roads: a jittered grid of north-south and east-west roads spanning the world (a share
   bent into smooth sinusoidal curves) plus free cubic-Bezier curved roads across it;
2. intersections: exact polyline crossings, merged when closer than 12 m;
3. zones on a 1 m occupancy grid: road corridors (carriageway + bays + sidewalks), parks,
   parking lots along roads;
4. buildings along both sides of every road (setback, frontage, depth, rectangles and
   L-shapes, heights 5-30 m), rejected where they would overlap anything;
5. parked cars in the parking bays and the lots; trees along roads, in parks and yards;
6. the ground rasters at ``albedo_m_per_px``: class map and albedo (grass, dirt, sidewalks,
   parking bays, curbs, asphalt, lane markings, crosswalks, stop lines, parking stalls),
   multiplied by multi-scale texture noise.

Modules: :mod:`.layout` (steps 1-2), :mod:`.objects` (steps 3-5), :mod:`.rasters` (step 6),
:mod:`.palette` (colours of each palette and season), :mod:`.geometry` (polyline helpers and
the sub-pixel painter shared by the others). This module only runs the steps in order
(:func:`build_world`). Everything works in the world frame of
:mod:`xview_localizer.sim.world_model` (ENU metres, datum at the world centre) and imports
only that data model, never :mod:`xview_localizer.sim.world`.
"""

from __future__ import annotations

import numpy as np

from ..world_model import World, WorldConfig
from .layout import _make_intersections, _make_roads
from .objects import _make_buildings, _make_cars, _make_trees, _make_zones, _Occupancy
from .palette import _PALETTES
from .rasters import _paint_ground

__all__ = ["build_world"]


def build_world(config: WorldConfig) -> World:
    """Generate the world described by ``config``; deterministic in ``config``."""
    ss = np.random.SeedSequence(config.seed)
    r_roads, r_zones, r_bld, r_cars, r_trees, r_paint = (np.random.default_rng(s) for s in ss.spawn(6))
    pal = _PALETTES[config.style.palette]
    roads = _make_roads(r_roads, config)
    inters, arms = _make_intersections(roads, config.size_m)
    occ = _Occupancy(config.size_m)
    parks, lots = _make_zones(r_zones, config, roads, occ)
    buildings = _make_buildings(r_bld, config, roads, occ, pal)
    cars = _make_cars(r_cars, config, roads, inters, lots, occ)
    trees = _make_trees(r_trees, config, roads, parks, occ)
    albedo, cls = _paint_ground(r_paint, config, roads, inters, arms, parks, lots, pal)
    return World(config, roads, inters, buildings, trees, cars, albedo, cls)
