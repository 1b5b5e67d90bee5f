#!/usr/bin/env python3
"""Per-frame latency of the depth-prior sparse matcher as the node calls it
(:meth:`xview_localizer.matcher.inference.SparseMatcher.match`, batch 1, no grad, fp16 autocast
on CUDA), for each depth kind with a known (±12.5° vote) and an unknown (whole circle) yaw.

Two timings per row: ``new_patch`` (a new satellite patch: satellite encoder + matching, what a
moving vehicle pays every frame) and ``cached_patch`` (the same patch again: the satellite
features come from the matcher's cache). Median over ``--repeats`` after one warm-up call.
Prints a table and writes JSON (``--json``). Synthetic inputs (random images, a flat-ground depth
map): the cost does not depend on the content.

    .venv/bin/python scripts/bench_sparse.py [--checkpoint PATH] [--device cpu|cuda] [--repeats 5]
                                             [--threads N] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS = (("metric", True), ("metric", False), ("relative", True), ("relative", False), ("none", True),
        ("none", False))


def main(argv: list[str] | None = None) -> int:
    import torch

    from xview_localizer.core.camera import PinholeCamera, kitti_like_T_base_camera
    from xview_localizer.matcher.factory import SPARSE_CHECKPOINT_NAME, resolve_checkpoint_path
    from xview_localizer.matcher.inference import SparseMatcher, load_matcher
    from xview_localizer.tiles.patch import PatchGeoref

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=SPARSE_CHECKPOINT_NAME, help="sparse-depth checkpoint (default: packaged)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    matcher = load_matcher(resolve_checkpoint_path(args.checkpoint), args.device)
    if not isinstance(matcher, SparseMatcher):
        ap.error(f"{args.checkpoint} is not a sparse-depth checkpoint")
    rng = np.random.default_rng(0)
    camera = PinholeCamera.kitti_like(1024, 256)
    T = kitti_like_T_base_camera()
    geo = PatchGeoref(49.0, 8.4, 0.2, 512, 512)
    ground = rng.integers(0, 255, (256, 1024, 3), dtype=np.uint8)
    # flat-ground optical-z depth below the horizon, holes above (sky)
    v = np.arange(256, dtype=np.float32)[:, None] - float(camera.k[5])
    depth = np.where(v > 1.0, 1.65 * float(camera.k[4]) / np.maximum(v, 1.0), 0.0).repeat(1024, 1).astype(np.float32)

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    def one(kind: str, yaw_known: bool, sat: np.ndarray) -> float:
        sync()
        t0 = time.perf_counter()
        matcher.match(ground, camera, T, sat, geo, 0.3 if yaw_known else None,
                      depth_m=None if kind == "none" else depth, depth_kind=kind)
        sync()
        return time.perf_counter() - t0

    rows = []
    for kind, yaw_known in ROWS:
        sat = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
        one(kind, yaw_known, sat)  # warm-up
        new, cached = [], []
        for _ in range(args.repeats):
            sat = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
            new.append(one(kind, yaw_known, sat))
            cached.append(one(kind, yaw_known, sat))
        rows.append({"depth_kind": kind, "yaw": "known" if yaw_known else "unknown",
                     "new_patch_ms": 1e3 * statistics.median(new), "cached_patch_ms": 1e3 * statistics.median(cached)})
    result = {
        "checkpoint": str(args.checkpoint), "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    if args.device == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(f"device {result['device']} ({result['device_name']}), {result['threads']} threads, "
          f"median of {args.repeats}")
    print("| depth | yaw | new patch ms | cached patch ms |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['depth_kind']} | {r['yaw']} | {r['new_patch_ms']:.0f} | {r['cached_patch_ms']:.0f} |")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
