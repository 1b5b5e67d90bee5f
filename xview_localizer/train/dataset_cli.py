"""``xview-localizer dataset`` commands.

    xview-localizer dataset from-bag BAG --tiles URL --gt-topic T --out DIR [--image-topic T]
        [--camera-info-topic T] [--datum LAT LON] [--stride N] [--min-spacing-m M] [--max-pairs N]
        [--offset-m 20] [--yaw-range 10] [--sat-size 512] [--sat-m-per-px 0.2]
        [--width W --height H] [--world-id N] [--seed N] [--cache-dir DIR] [--zoom Z]
    xview-localizer dataset info SPEC [--split S] [--area same|cross] [--orientation known|unknown]

``from-bag`` writes ``xview-pairs/1`` pairs (docs/datasets.md); ``info`` opens a data set
(``kitti:PATH``, ``vigor:PATH`` or a pair directory), validates it and prints its size and the
first sample.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register", "run_from_bag", "run_info"]


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import add_command

    p = add_command(sub, "dataset", help="data sets: pairs from your own bags, benchmark checks",
                    description="Data sets for training and evaluation: 'from-bag' turns a rosbag2 with "
                    "accurate poses (RTK, a mapping run) and a tile source into xview-pairs/1 pairs "
                    "(docs/datasets.md); 'info' opens a data set (kitti:PATH, vigor:PATH or a pair "
                    "directory), validates it and prints its size and first sample.",
                    examples=["xview-localizer dataset from-bag bags/run1 --tiles file:///data/tiles/{z}/{x}/{y}.png "
                              "--gt-topic /gt/pose --out pairs/run1",
                              "xview-localizer dataset info kitti:/data/kitti --split test1"])
    dsub = p.add_subparsers(dest="dataset_command", metavar="DATASET_COMMAND")
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])

    b = add_command(dsub, "from-bag", help="xview-pairs/1 training pairs from a rosbag2 with accurate poses",
                    description="Export xview-pairs/1 training pairs from a rosbag2: each used image becomes "
                    "a pair with the satellite patch around its ground-truth pose (from --gt-topic, base_link "
                    "in the ENU map frame at the datum), a prior drawn within --offset-m / --yaw-range and "
                    "the camera model. Exits 1 when no pair was written.",
                    examples=["xview-localizer dataset from-bag bags/run1 --tiles file:///data/tiles/{z}/{x}/{y}.png "
                              "--gt-topic /gt/pose --out pairs/run1 --min-spacing-m 2"])
    b.add_argument("bag", help="rosbag2 directory (mcap or sqlite3)")
    b.add_argument("--tiles", required=True, help="tile URL template (XYZ/TMS/quadkey/file:///, mbtiles://)")
    b.add_argument("--gt-topic", required=True, help="pose topic (PoseStamped/PoseWithCovarianceStamped/Odometry) "
                   "of base_link in the map frame = ENU at the datum")
    b.add_argument("--out", required=True, help="output pair directory")
    b.add_argument("--image-topic", default="", help="default: auto-detected")
    b.add_argument("--camera-info-topic", default="", help="default: auto-detected")
    b.add_argument("--base-frame", default="base_link", help="vehicle frame the poses and the camera refer to")
    b.add_argument("--datum", nargs=2, type=float, metavar=("LAT", "LON"), default=None,
                   help="origin of the map frame (default: the bag's sim.yaml)")
    b.add_argument("--stride", type=int, default=1, help="use every N-th image")
    b.add_argument("--min-spacing-m", type=float, default=0.0, help="skip images closer than this to the last pair")
    b.add_argument("--max-pairs", type=int, default=0, help="stop after N pairs (0 = all)")
    b.add_argument("--max-gt-gap-s", type=float, default=0.5,
                   help="skip an image without a ground-truth sample within this on both sides of its stamp (s)")
    b.add_argument("--offset-m", type=float, default=20.0, help="prior offset range, +/- metres east and north")
    b.add_argument("--yaw-range", type=float, default=10.0, help="prior yaw range, +/- degrees (180 = unknown)")
    b.add_argument("--sat-size", type=int, default=512, help="satellite patch size (px)")
    b.add_argument("--sat-m-per-px", type=float, default=0.2, help="satellite patch resolution (m/px)")
    b.add_argument("--width", type=int, default=None, help="ground image width (default: the camera's)")
    b.add_argument("--height", type=int, default=None, help="ground image height (default: the camera's)")
    b.add_argument("--world-id", type=int, default=0, help="stored as world_seed (distinct per area)")
    b.add_argument("--seed", type=int, default=0, help="seed of the prior draws")
    b.add_argument("--cache-dir", default=None, help="tile cache directory (default: the user cache)")
    b.add_argument("--zoom", type=int, default=None, help="force a tile zoom")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(handler=run_from_bag)

    i = add_command(dsub, "info", help="open and validate a data set, print its size and first sample",
                    description="Open a data set the way training and evaluation do (kitti:PATH, vigor:PATH "
                    "or a pair directory), validate it, and print its number of samples and the shapes, "
                    "resolution and pose of the first one.",
                    examples=["xview-localizer dataset info pairs/run1",
                              "xview-localizer dataset info vigor:/data/VIGOR --area cross --orientation unknown"])
    i.add_argument("spec", help="kitti:PATH, vigor:PATH or a pair directory")
    i.add_argument("--split", default=None, help="kitti: train|test1|test2; vigor: train|test")
    i.add_argument("--area", default=None, choices=["same", "cross"], help="vigor: same- or cross-area split")
    i.add_argument("--orientation", default=None, choices=["known", "unknown"], help="vigor: heading known or not")
    i.set_defaults(handler=run_info)


def run_from_bag(args: argparse.Namespace) -> int:
    from ..tiles.cache import TileCacheConfig
    from .datasets.from_bag import FromBagConfig, export_pairs_from_bag

    cfg = FromBagConfig(
        gt_topic=args.gt_topic, image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
        base_frame=args.base_frame,
        datum_lat_deg=args.datum[0] if args.datum else None, datum_lon_deg=args.datum[1] if args.datum else None,
        stride=args.stride, min_spacing_m=args.min_spacing_m, max_pairs=args.max_pairs,
        max_gt_gap_s=args.max_gt_gap_s, offset_range_m=args.offset_m, yaw_range_deg=args.yaw_range,
        sat_size_px=args.sat_size, sat_m_per_px=args.sat_m_per_px, ground_width_px=args.width,
        ground_height_px=args.height, world_seed=args.world_id, seed=args.seed,
    )
    tile_cfg = TileCacheConfig(zoom=args.zoom) if args.zoom is not None else None
    summary = export_pairs_from_bag(args.bag, args.out, args.tiles, cfg,
                                    cache_dir=Path(args.cache_dir) if args.cache_dir else None,
                                    tile_config=tile_cfg, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0 if summary["count"] else 1


def run_info(args: argparse.Namespace) -> int:
    from .datasets import open_dataset

    opts = {"split": args.split, "area": args.area, "orientation": args.orientation}
    ds = open_dataset(args.spec, **opts)
    print(f"{args.spec}: {len(ds)} samples ({type(ds).__name__})")
    s = ds[0]
    print(f"first: id={s.id} ground={s.ground_rgb.shape} sat={s.sat_rgb.shape} m/px={s.sat_m_per_px:.6f} "
          f"T_patch_base=[{s.T_patch_base[0]:.2f} m, {s.T_patch_base[1]:.2f} m, {s.T_patch_base[2]:.4f} rad] "
          f"prior_yaw={s.prior_yaw_rad:.4f} rad")
    return 0
