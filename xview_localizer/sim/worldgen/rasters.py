"""The ground rasters of a generated world (step 6 of :mod:`xview_localizer.sim.worldgen`):
the class map (:data:`xview_localizer.sim.world_model.GROUND_CLASSES`) and the albedo, painted
layer by layer (grass, dirt, parking lots, road corridors, lane markings, crosswalks, stop
lines) and multiplied by multi-scale texture noise (:func:`_paint_ground`).

Conventions: ``(N, N)`` north-up rasters at ``config.albedo_m_per_px`` with the pixel-centre
convention of :class:`xview_localizer.sim.world_model.RasterGeoref`; albedo is uint8 RGB.
:func:`_noise_field` is also used by :mod:`xview_localizer.sim.style`.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..world_model import GROUND_CLASSES, WorldConfig
from .geometry import _SCALE, _SHIFT, _arclength, _left_normals, _Painter, _point_at, _rect
from .palette import _GRASS, _jitter, _Palette


def _dashes(p: np.ndarray, offset_m: float, dash_m: float, gap_m: float, phase_m: float):
    q = p + offset_m * _left_normals(p)
    scum = _arclength(q)
    starts = np.arange(phase_m, scum[-1] - dash_m, dash_m + gap_m)
    a = np.stack([np.interp(starts, scum, q[:, 0]), np.interp(starts, scum, q[:, 1])], 1)
    b = np.stack([np.interp(starts + dash_m, scum, q[:, 0]), np.interp(starts + dash_m, scum, q[:, 1])], 1)
    return a, b


def _noise_field(rng, n: int, cells: int, interp) -> np.ndarray:
    small = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(small, (n, n), interpolation=interp)


def _paint_ground(rng, config: WorldConfig, roads, inters, arms_all, parks, lots, pal: _Palette):
    st = config.style
    P = _Painter(config.size_m, config.albedo_m_per_px)
    n = P.n
    gc = GROUND_CLASSES
    base = np.empty((n, n, 3), np.uint8)
    base[:] = _GRASS[st.season]
    cls = np.full((n, n), gc["grass"], np.uint8)
    h = config.size_m / 2

    # dirt patches and worn grass
    k = int(config.size_m**2 / 6000.0)
    for c, ax, ang in zip(rng.uniform(-h, h, (k, 2)), rng.uniform(1.5, 8.0, (k, 2)), rng.uniform(0, 180, k)):
        uv = P.px(c)
        col = _jitter(rng, pal.dirt, 10) if rng.random() < 0.5 else _jitter(rng, _GRASS[st.season], 18)
        axes = (int(ax[0] / P.res * _SCALE), int(ax[1] / P.res * _SCALE))
        cv2.ellipse(base, (int(uv[0]), int(uv[1])), axes, float(ang), 0, 360, col, -1, cv2.LINE_8, _SHIFT)
    # park paths (dirt) across parks
    for poly in parks:
        lo, hi = poly.min(0), poly.max(0)
        a = lo + rng.uniform(0, 1, 2) * (hi - lo) * [1, 0]
        b = lo + rng.uniform(0, 1, 2) * (hi - lo) * [1, 0] + [0, hi[1] - lo[1]]
        P.polyline([base, cls], [_jitter(rng, pal.dirt, 6), gc["dirt"]], np.array([a, (a + b) / 2 + rng.uniform(-10, 10, 2), b]), 2.5)

    # parking lots: asphalt + stall lines
    for poly, c, t, nn, half_t, half_n, _drive in lots:
        P.polygons([base, cls], [_jitter(rng, pal.lot, 6), gc["parking"]], [poly])
        rows = int(round((2 * half_n - 1.0) / 5.0))
        cols = int((2 * half_t - 1.0) // 2.6)
        a_list, b_list = [], []
        for i in range(rows):
            if i % 3 == 1:
                continue
            n0 = -half_n + 0.5 + 5.0 * i
            for j in range(cols + 1):
                off_t = -half_t + 0.5 + 2.6 * j
                a_list.append(c + off_t * t + (n0 + 0.3) * nn)
                b_list.append(c + off_t * t + (n0 + 4.8) * nn)
        if a_list:
            P.segments([base, cls], [pal.marking, gc["marking"]], np.array(a_list), np.array(b_list), 0.12)

    # road corridors, layer by layer across all roads
    for r in roads:
        P.polyline([base, cls], [_jitter(rng, pal.sidewalk, 5), gc["sidewalk"]], r.centerline_xy_m,
                   r.width_m + 2 * (r.parking_bay_m + r.sidewalk_m))
    for r in roads:
        if r.parking_bay_m > 0:
            P.polyline([base, cls], [pal.bay, gc["parking_bay"]], r.centerline_xy_m, r.width_m + 2 * r.parking_bay_m)
    if lots:
        P.polygons([base, cls], [pal.lot, gc["parking"]], [lot[6] for lot in lots])
    for r in roads:
        P.polyline([base, cls], [pal.curb, gc["curb"]], r.centerline_xy_m, r.width_m + 0.5)
    for r in roads:
        P.polyline([base, cls], [_jitter(rng, pal.asphalt, 5), gc["road"]], r.centerline_xy_m, r.width_m)

    # lane markings into a mask; cleared inside junctions; then crosswalks and stop lines
    mark = np.zeros((n, n), np.uint8)  # anti-aliased coverage 0..255
    P.aa.add(id(mark))
    for r in roads:
        p = r.centerline_xy_m
        hw = r.width_m / 2
        if r.lanes == 2:
            a, b = _dashes(p, 0.0, 3.0, 6.0, float(rng.uniform(0, 9)))
            P.segments([mark], [255], a, b, 0.15)
        else:
            for off in (-0.15, 0.15):
                P.polyline([mark], [255], p + off * _left_normals(p), 0.12)
            for off in (-hw / 2, hw / 2):
                a, b = _dashes(p, off, 3.0, 6.0, float(rng.uniform(0, 9)))
                P.segments([mark], [255], a, b, 0.15)
        if r.width_m >= 7.0:
            for off in (-(hw - 0.3), hw - 0.3):
                P.polyline([mark], [255], p + off * _left_normals(p), 0.15)
    for it in inters:
        P.circles([mark], [0], it.xy_m[None], np.array([it.radius_m]))
    stripes, stops = [], []
    for arms in arms_all:
        for arm in arms:
            r = arm.road
            p = r.centerline_xy_m
            scum = _arclength(p)
            hw = r.width_m / 2
            s0 = arm.s_m + arm.direction * (arm.d_m + 0.5)
            c, t = _point_at(p, scum, s0 + arm.direction * 1.5)
            a = arm.direction * t  # pointing away from the junction
            nl = np.array([-a[1], a[0]])
            for off in np.arange(-hw + 0.6, hw - 0.5, 1.0):
                stripes.append(_rect(c + off * nl, a, nl, 1.5, 0.25))
            # stop line across the incoming lanes (on the left of the outward direction)
            cs, _ = _point_at(p, scum, s0 + arm.direction * 4.0)
            stops.append(_rect(cs + nl * hw / 2, a, nl, 0.2, hw / 2 - 0.1))
    P.polygons([mark], [255], stripes + stops)
    cls[mark >= 128] = gc["marking"]
    mcol = np.asarray(pal.marking, np.float32)
    for v0 in range(0, n, 1000):
        a = mark[v0:v0 + 1000, :, None].astype(np.float32) / 255.0
        base[v0:v0 + 1000] = (base[v0:v0 + 1000] * (1.0 - a) + mcol * a + 0.5).astype(np.uint8)
    del mark

    # texture noise: low (~20 m), mid (~2 m), fine (per-pixel, two coprime tiles), per class
    amp = 0.04 + 0.22 * st.texture_noise
    albedo = np.empty_like(base)
    low = _noise_field(rng, n, max(4, int(config.size_m / 20)), cv2.INTER_CUBIC)
    mid = _noise_field(rng, n, max(8, int(config.size_m / 2)), cv2.INTER_CUBIC)
    t1 = rng.standard_normal((509, 509)).astype(np.float32)
    t2 = rng.standard_normal((521, 521)).astype(np.float32)
    class_gain = np.zeros(256, np.float32)
    class_fine = np.zeros(256, np.float32)
    for name, g, f in (("grass", 1.3, 0.9), ("road", 0.7, 0.7), ("marking", 0.5, 0.5), ("sidewalk", 0.5, 0.6),
                       ("curb", 0.3, 0.4), ("parking", 0.7, 0.7), ("dirt", 1.0, 0.9),
                       ("parking_bay", 0.5, 0.7), ("plaza", 0.5, 0.6)):
        class_gain[gc[name]] = g
        class_fine[gc[name]] = f
    strip = 500
    for v0 in range(0, n, strip):
        v1 = min(n, v0 + strip)
        rows = np.arange(v0, v1)
        cols = np.arange(n)
        fine = 0.5 * (t1[(rows % 509)[:, None], (cols % 509)[None, :]] + t2[(rows % 521)[:, None], (cols % 521)[None, :]])
        c = cls[v0:v1]
        f = 1.0 + amp * (class_gain[c] * (0.6 * low[v0:v1] + 0.5 * mid[v0:v1]) + class_fine[c] * 0.45 * fine)
        albedo[v0:v1] = np.clip(base[v0:v1].astype(np.float32) * f[..., None], 0, 255).astype(np.uint8)
    return albedo, cls
