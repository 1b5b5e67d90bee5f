#!/usr/bin/env python3
"""Per-stage latency of the localizer as the node runs it, for each matcher and depth mode, side
by side in one run (issue 15, requirement 6). A benchmark, not a timed test: it prints a table
and writes JSON.

For every configuration (matcher x depth x heading x area features) a fresh subprocess (so the
peak RSS is its own) runs the same Localizer core the node runs over the ``make demo`` drive
(``scripts/demo.py`` builds the world and the bags on first use, in ``--dir``), as fast as it
can, and reports:

* per-stage p50 / p90 (ms): tiles (patch, or the area window), preprocess, sat_features,
  ground_encoder, matching (matcher stages), solver (confident set + robust Procrustes), gating
  (evidence / GNSS / odometry checks, map frame), total = the frame's ``Localizer.step``;
* frames/s of the loop, the pose rate, peak RSS (MB);
* the fraction of a 10 Hz camera the node would serve: the measured per-frame times replayed
  against a 10 Hz arrival clock with the node's policy (one worker; when it is free it takes the
  NEWEST image, older ones are dropped), over all frames and after the first 2 s (the first
  frame compiles the ground encoder and builds the first area). It ignores DDS overhead (~1 ms
  per image here).

Configurations: ``sparse-flat`` (the default: sparse matcher, flat ground), ``sparse-depth``
(metric depth), ``dense-flow``, each with a known heading (tracking; the first frames search)
and ``heading_prior: none`` (every frame searches the heading), with area features on
and off.

    .venv/bin/python scripts/bench_node.py [--frames 200] [--threads 2] [--json bench_node.json]
        [--only sparse-flat ...] [--device cpu|cuda] [--dir demo_out]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

STAGES = ("tiles", "preprocess", "sat_features", "ground_encoder", "matching", "solver", "gating", "total")
#: name -> (checkpoint, depth bag?, heading_prior, area_features)
CONFIGS = {
    "sparse-flat": ("", False, "auto", True),
    "sparse-flat-unknown": ("", False, "none", True),
    "sparse-flat-noarea": ("", False, "auto", False),
    "sparse-depth": ("", True, "auto", True),
    "sparse-depth-unknown": ("", True, "none", True),
    "dense-flow": ("dense_flow", False, "auto", True),
    "dense-flow-unknown": ("dense_flow", False, "none", True),
    "dense-flow-noarea": ("dense_flow", False, "auto", False),
}
CAMERA_HZ = 10.0


def served_fraction(latencies_s: list[float], period_s: float = 1.0 / CAMERA_HZ) -> float:
    """Share of images a newest-frame worker processes when images arrive every ``period_s``
    and image i takes ``latencies_s[i]`` (the node's policy: when the worker frees up it takes
    the newest image that arrived, the older waiting ones are dropped)."""
    n = len(latencies_s)
    if n == 0:
        return 0.0
    served, free_at, i = 0, 0.0, 0
    while i < n:
        arrive = i * period_s
        if free_at <= arrive:  # idle: take this image at once
            free_at = arrive + latencies_s[i]
            served += 1
            i += 1
            continue
        # busy: the newest image that arrived by the time it frees up (>= i)
        j = min(n - 1, int(free_at / period_s + 1e-9))
        if j < i:
            j = i
        free_at = max(free_at, j * period_s) + latencies_s[j]
        served += 1
        i = j + 1
    return served / n


def run_one(name: str, args: argparse.Namespace) -> dict:
    """One configuration, in this process (called in the subprocess)."""
    import resource
    import statistics

    import torch

    torch.set_num_threads(args.threads)
    from xview_localizer.evaluation.replay import (
        ReplayConfig,
        load_matcher_for_replay,
        node_config_for_bag,
        replay_bag,
    )
    from xview_localizer.pipeline.config import node_config_from_flat
    from xview_localizer.tiles.cache import TileCache, TileCacheConfig

    ckpt, depth, heading, area = CONFIGS[name]
    bag = Path(args.bag_depth if depth else args.bag)
    node = node_config_from_flat({"checkpoint_path": ckpt, "use_depth": depth, "heading_prior": heading,
                                  "area_features": area})
    node, tile_url = node_config_for_bag(bag, node, "")
    device = args.device
    matcher = load_matcher_for_replay(node.checkpoint_path, device, runtime=args.runtime)
    timings: list[dict] = []
    accepted = [0]

    def on_frame(_stamp_ns, result):
        timings.append(dict(result.timings_s))
        accepted[0] += result.estimate is not None

    cfg = ReplayConfig(node=node, max_frames=args.frames, progress=False, depth_topic="" if depth else "none")
    with TileCache(tile_url, Path(args.dir) / "bench_tile_cache", TileCacheConfig()) as tiles:
        t0 = time.perf_counter()
        data = replay_bag(bag, cfg, matcher, tiles, tile_url, on_frame=on_frame)
        wall = time.perf_counter() - t0
    skip = min(5, len(timings) // 10)  # warm-up frames (first area, allocator)
    steady = timings[skip:]
    row = {"config": name, "checkpoint": ckpt or "(default sparse)", "depth": "metric" if depth else "none",
           "heading_prior": heading, "area_features": area, "frames": len(timings),
           "frames_per_s": len(timings) / wall if wall > 0 else 0.0,
           "pose_share": accepted[0] / max(len(timings), 1),
           "realtime_factor": data.meta.get("realtime_factor"),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
           "served_10hz": served_fraction([t.get("total", 0.0) for t in timings]),
           # after the first 2 s (the first frame compiles the encoder and builds an area)
           "served_10hz_steady": served_fraction([t.get("total", 0.0) for t in timings[20:]]), "stages_ms": {}}
    for st in STAGES:
        vals = sorted(1e3 * t.get(st, 0.0) for t in steady)
        if vals:
            row["stages_ms"][st] = {"p50": statistics.median(vals), "p90": vals[int(0.9 * (len(vals) - 1))]}
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200, help="images per configuration")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("XVIEW_DEMO_DIR", REPO / "demo_out")),
                    help="demo folder (world + drives; built on first use)")
    ap.add_argument("--only", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), metavar="CONFIG",
                    help=f"configurations (default all: {', '.join(CONFIGS)})")
    ap.add_argument("--runtime", default="compile", choices=("compile", "eager"),
                    help="matcher_runtime of every configuration (default: the node's default, compile)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # subprocess entry
    ap.add_argument("--bag", default="", help=argparse.SUPPRESS)
    ap.add_argument("--bag-depth", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args)), flush=True)
        return 0

    import demo  # scripts/demo.py: the same world and drives as `make demo`

    work = args.dir
    world = work / "world_1000m_s2001"
    bag = work / "drive_1000m_60s_512x128_s2001"
    bag_d = work / "drive_1000m_60s_512x128_s2001_depth"
    demo.ensure_world(world, 1000.0, 2001)
    demo.ensure_drive(world, bag, 60.0, 512, 128, 2001)
    if any(CONFIGS[c][1] for c in args.only):
        demo.ensure_drive(world, bag_d, 60.0, 512, 128, 2001, depth=True)
    rows = []
    for name in args.only:
        cmd = [sys.executable, __file__, "--one", name, "--frames", str(args.frames), "--threads", str(args.threads),
               "--runtime", args.runtime,
               "--device", args.device, "--dir", str(work), "--bag", str(bag), "--bag-depth", str(bag_d)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(f"[{name}] failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(line[-1][len("RESULT "):])
        rows.append(row)
        print(f"[{name}] {row['frames']} frames in {time.perf_counter() - t0:.0f} s "
              f"({row['frames_per_s']:.1f} frames/s)", flush=True)
    import torch

    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
               "runtime": args.runtime,
               "device": args.device, "torch": torch.__version__,
               "load_avg_1m": os.getloadavg()[0]}
    if args.device == "cuda" and torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(0)
    print(f"\n{machine['cpu']}, {machine['cores']} cores, torch threads {args.threads}, device {args.device}, "
          f"runtime {args.runtime}, "
          f"load avg {machine['load_avg_1m']:.2f}; {args.frames} frames of the demo drive per row; ms p50 / p90")
    head = ["config", *STAGES, "frames/s", "10 Hz served (after 2 s)", "poses", "peak RSS MB"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["config"]]
        for st in STAGES:
            v = r["stages_ms"].get(st)
            cells.append(f"{v['p50']:.1f} / {v['p90']:.1f}" if v else "-")
        cells += [f"{r['frames_per_s']:.1f}", f"{100 * r['served_10hz']:.0f} % ({100 * r['served_10hz_steady']:.0f} %)",
                  f"{100 * r['pose_share']:.0f} %",
                  f"{r['peak_rss_mb']:.0f}"]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
