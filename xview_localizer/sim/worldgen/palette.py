"""Colours of the generated world: per-palette ground and building colours
(:data:`_PALETTES`, keyed by :data:`xview_localizer.sim.world_model.PALETTES`), per-season
grass and tree canopies, car paint frequencies, and :func:`_jitter` (a seeded colour variation).

Conventions: colours are 8-bit RGB tuples (not OpenCV BGR).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _Palette:
    asphalt: tuple
    sidewalk: tuple
    bay: tuple
    curb: tuple
    marking: tuple
    dirt: tuple
    lot: tuple
    roofs: tuple
    facades: tuple


_PALETTES = {
    "temperate": _Palette(
        asphalt=(78, 80, 84), sidewalk=(168, 164, 156), bay=(120, 116, 110), curb=(190, 188, 182),
        marking=(232, 232, 226), dirt=(128, 106, 80), lot=(92, 92, 94),
        roofs=((150, 72, 52), (120, 60, 50), (92, 92, 98), (70, 72, 78), (160, 158, 150), (110, 120, 110)),
        facades=((210, 200, 180), (225, 220, 205), (180, 160, 140), (200, 190, 170), (160, 150, 145),
                 (215, 205, 190)),
    ),
    "mediterranean": _Palette(
        asphalt=(92, 90, 88), sidewalk=(196, 184, 160), bay=(150, 132, 110), curb=(210, 204, 190),
        marking=(238, 236, 220), dirt=(156, 126, 88), lot=(104, 100, 96),
        roofs=((184, 96, 60), (196, 112, 72), (170, 84, 56), (220, 214, 200), (150, 140, 130)),
        facades=((236, 226, 200), (230, 210, 170), (240, 232, 220), (214, 180, 140), (225, 200, 160)),
    ),
    "nordic": _Palette(
        asphalt=(64, 66, 72), sidewalk=(150, 152, 156), bay=(100, 102, 108), curb=(176, 178, 182),
        marking=(226, 228, 232), dirt=(104, 92, 80), lot=(76, 78, 84),
        roofs=((60, 62, 70), (40, 44, 52), (120, 40, 36), (90, 96, 104), (50, 70, 60)),
        facades=((150, 50, 40), (200, 196, 180), (60, 80, 100), (220, 200, 140), (180, 184, 188),
                 (120, 130, 120)),
    ),
    "industrial": _Palette(
        asphalt=(86, 86, 86), sidewalk=(150, 150, 146), bay=(110, 110, 108), curb=(176, 176, 172),
        marking=(236, 230, 200), dirt=(120, 110, 95), lot=(100, 100, 100),
        roofs=((140, 142, 146), (170, 172, 176), (110, 112, 118), (90, 96, 90), (180, 176, 168)),
        facades=((150, 150, 150), (170, 160, 150), (120, 126, 134), (190, 190, 186), (140, 120, 110)),
    ),
}

_GRASS = {"summer": (92, 116, 62), "autumn": (116, 116, 70), "winter": (128, 124, 106)}
_CANOPY = {
    "summer": ((58, 96, 40), (70, 110, 46), (48, 82, 38), (80, 116, 52)),
    "autumn": ((170, 96, 34), (190, 140, 40), (150, 60, 30), (90, 110, 44), (200, 160, 60)),
    "winter": ((104, 92, 80), (96, 88, 78), (40, 62, 44), (112, 102, 90)),
}
_CAR_COLOURS = ((235, 235, 235), (20, 20, 22), (160, 162, 166), (100, 102, 108), (30, 50, 110),
                (150, 20, 20), (200, 200, 196), (60, 60, 64), (20, 70, 50), (210, 180, 60))
_CAR_WEIGHTS = np.array([0.22, 0.2, 0.15, 0.13, 0.08, 0.07, 0.05, 0.04, 0.03, 0.03])


def _jitter(rng: np.random.Generator, rgb: tuple, amount: float = 12.0) -> tuple[int, int, int]:
    c = np.asarray(rgb, float) * (1.0 + rng.uniform(-0.06, 0.06)) + rng.uniform(-amount, amount, 3)
    return tuple(int(v) for v in np.clip(np.round(c), 0, 255))
