#!/usr/bin/env python3
"""Render a few ground-camera frames of a synthetic world beside their aerial patches (PNG).

    .venv/bin/python scripts/render_examples.py [--seed 7] [--size-m 400] [--count 3] [--out docs/img]

Each ``sim_pair_<k>.png`` is: the 1024x256 ground frame (KITTI-like camera, 1.65 m high), its
depth (turbo colour map, near = red... far = blue, sky black) below it, and on the right the
north-up aerial patch (64 m x 64 m at 0.125 m/px, upscaled) centred on the vehicle, with
the camera position (dot) and its field of view (wedge to 30 m) drawn in.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np


def _poses(world, count: int, rng: np.random.Generator):
    from xview_localizer.core.se2 import SE2

    out = []
    roads = sorted(world.roads, key=lambda r: -r.length_m())
    for k in range(count):
        r = roads[k % len(roads)]
        p = r.centerline_xy_m
        inside = np.flatnonzero(np.all(np.abs(p) < world.half_size_m - 40, axis=1))
        i = int(rng.choice(inside[:-1]))
        t = p[i + 1] - p[i]
        yaw = math.atan2(t[1], t[0])
        xy = p[i] + np.array([math.sin(yaw), -math.cos(yaw)]) * r.lane_width_m / 2
        out.append(SE2(float(xy[0]), float(xy[1]), yaw))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--size-m", type=float, default=400.0)
    ap.add_argument("--style", default="default", help="WorldStyle preset (default, heldout_autumn, ...)")
    ap.add_argument("--count", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    args = ap.parse_args(argv)

    from xview_localizer.core.camera import PinholeCamera, kitti_like_T_base_camera
    from xview_localizer.sim.aerial import render_orthophoto
    from xview_localizer.sim.ground import GroundRenderer
    from xview_localizer.sim.world import WorldConfig, WorldStyle, generate_world

    world = generate_world(WorldConfig(seed=args.seed, size_m=args.size_m, style=WorldStyle.preset(args.style)))
    aerial, g = render_orthophoto(world, m_per_px=0.125)
    cam = PinholeCamera.kitti_like(1024, 256)
    rend = GroundRenderer(world, cam, kitti_like_T_base_camera())
    half_fov = math.atan2(cam.width_px / 2, cam.fx)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for k, pose in enumerate(_poses(world, args.count, rng)):
        f = rend.render(pose)
        d = f.depth_m
        dvis = cv2.applyColorMap(np.clip(255 - np.sqrt(d / 200.0) * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_TURBO)
        dvis[d == 0] = 0
        left = np.vstack([f.rgb[:, :, ::-1], dvis])  # BGR, 512 x 1024
        c = g.xy_to_px(np.array([pose.x_m, pose.y_m]))
        r = int(32.0 / g.m_per_px)
        u, v = int(round(c[0])), int(round(c[1]))
        patch = np.ascontiguousarray(aerial[v - r:v + r, u - r:u + r, ::-1])
        s = 512 / (2 * r)
        patch = cv2.resize(patch, (512, 512), interpolation=cv2.INTER_CUBIC)
        ctr = ((c[0] - (u - r) + 0.5) * s - 0.5, (c[1] - (v - r) + 0.5) * s - 0.5)
        for sgn in (-1, 1):
            a = pose.yaw_rad + sgn * half_fov
            end = (ctr[0] + math.cos(a) * 30 / g.m_per_px * s, ctr[1] - math.sin(a) * 30 / g.m_per_px * s)
            cv2.line(patch, (int(ctr[0]), int(ctr[1])), (int(end[0]), int(end[1])), (0, 255, 255), 2, cv2.LINE_AA)
        cv2.circle(patch, (int(ctr[0]), int(ctr[1])), 6, (0, 0, 255), -1, cv2.LINE_AA)
        out = np.hstack([left, np.full((512, 8, 3), 255, np.uint8), patch])
        path = args.out / f"sim_pair_{k}.png"
        cv2.imwrite(str(path), out)
        print(f"{path}: pose x={pose.x_m:.1f} m y={pose.y_m:.1f} m yaw={math.degrees(pose.yaw_rad):.1f} deg")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
