#!/usr/bin/env python3
"""Benchmark the synthetic world: generation + aerial tile pyramid for a 1 km^2 world, and the
ground renderer's frames per second at 1024x256.

    .venv/bin/python scripts/bench_sim.py [--size-m 1000] [--frames 20] [--out bench_sim.json]

Prints a summary and writes JSON (wall and CPU seconds; the CPU is shared, so both are given).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


class _Timer:
    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def lap(self) -> tuple[float, float]:
        w, c = time.perf_counter(), time.process_time()
        out = (w - self.wall, c - self.cpu)
        self.wall, self.cpu = w, c
        return out


def _road_poses(world, n: int, step_m: float = 2.0):
    from xview_localizer.core.se2 import SE2

    road = max(world.roads, key=lambda r: r.length_m())
    p = road.centerline_xy_m
    inside = np.flatnonzero(np.all(np.abs(p) < world.half_size_m - 30, axis=1))
    poses = []
    for k in range(n):
        i = int(inside[min(len(inside) - 2, k * max(1, int(step_m / 2.0)))])
        t = p[i + 1] - p[i]
        yaw = math.atan2(t[1], t[0])
        xy = p[i] + np.array([math.sin(yaw), -math.cos(yaw)]) * road.lane_width_m / 2
        poses.append(SE2(float(xy[0]), float(xy[1]), yaw))
    return poses


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-m", type=float, default=1000.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--zoom-min", type=int, default=14)
    ap.add_argument("--out", type=Path, default=Path("bench_sim.json"))
    args = ap.parse_args(argv)

    from xview_localizer.core.camera import PinholeCamera, kitti_like_T_base_camera
    from xview_localizer.sim.aerial import render_orthophoto, write_tile_pyramid
    from xview_localizer.sim.ground import GroundRenderer
    from xview_localizer.sim.world import WorldConfig, generate_world

    res: dict = {"size_m": args.size_m, "seed": args.seed, "cpu_count": os.cpu_count(),
                 "loadavg_start": os.getloadavg(), "python": platform.python_version()}
    t = _Timer()
    world = generate_world(WorldConfig(seed=args.seed, size_m=args.size_m))
    res["world_generate_s"], res["world_generate_cpu_s"] = t.lap()
    res["objects"] = {"roads": len(world.roads), "intersections": len(world.intersections),
                      "buildings": len(world.buildings), "trees": len(world.trees), "cars": len(world.cars)}
    with tempfile.TemporaryDirectory() as tmp:
        world.save(Path(tmp) / "world")
        res["world_save_s"], _ = t.lap()
        ortho = render_orthophoto(world)
        res["orthophoto_s"], res["orthophoto_cpu_s"] = t.lap()
        info = write_tile_pyramid(world, Path(tmp) / "world" / "tiles", zoom_max=20, zoom_min=args.zoom_min,
                                  ortho=ortho)
        res["pyramid_s"], res["pyramid_cpu_s"] = t.lap()
        res["tiles_total"] = info.tile_count
        x0, y0, x1, y1 = info.tile_ranges[20]
        res["tiles_z20"] = (x1 - x0 + 1) * (y1 - y0 + 1)
        res["tiles_bytes"] = sum(f.stat().st_size for f in (Path(tmp) / "world" / "tiles").rglob("*.png"))
    res["world_plus_pyramid_s"] = res["world_generate_s"] + res["orthophoto_s"] + res["pyramid_s"]
    del ortho

    cam = PinholeCamera.kitti_like(1024, 256)
    rend = GroundRenderer(world, cam, kitti_like_T_base_camera())
    poses = _road_poses(world, args.frames)
    rend.render(poses[0])  # warm-up
    t.lap()
    walls, cpus = [], []
    for pose in poses:
        rend.render(pose)
        w, c = t.lap()
        walls.append(w)
        cpus.append(c)
    res["ground_1024x256_frames"] = len(walls)
    res["ground_1024x256_wall_s_mean"] = float(np.mean(walls))
    res["ground_1024x256_wall_s_max"] = float(np.max(walls))
    res["ground_1024x256_fps_wall"] = float(1.0 / np.mean(walls))
    res["ground_1024x256_cpu_s_mean"] = float(np.mean(cpus))
    res["ground_1024x256_fps_per_cpu_second"] = float(1.0 / np.mean(cpus))
    cam_k = PinholeCamera.kitti_like()
    rend_k = GroundRenderer(world, cam_k, kitti_like_T_base_camera())
    t.lap()
    for pose in poses[:5]:
        rend_k.render(pose)
    w, _ = t.lap()
    res["ground_1242x375_fps_wall"] = 5.0 / w
    res["loadavg_end"] = os.getloadavg()
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    print(f"world {args.size_m:.0f} m: generate {res['world_generate_s']:.1f} s + ortho {res['orthophoto_s']:.1f} s "
          f"+ pyramid z{args.zoom_min}-20 ({res['tiles_total']} tiles) {res['pyramid_s']:.1f} s "
          f"= {res['world_plus_pyramid_s']:.1f} s; ground 1024x256: {res['ground_1024x256_fps_wall']:.2f} fps wall, "
          f"{res['ground_1024x256_fps_per_cpu_second']:.2f} frames per CPU-second")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
