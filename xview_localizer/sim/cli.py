"""``xview-localizer sim ...``: synthetic worlds, drives (rosbag2), training pairs, tile server.

    xview-localizer sim world --seed 1 --out worlds/w1
    xview-localizer sim drive --world worlds/w1 --seconds 60 --seed 7 --out bags/w1_d7
    xview-localizer sim dataset --worlds worlds/w1 worlds/w2 --pairs 1000 --out pairs/train
    xview-localizer sim serve-tiles worlds/w1 --port 8080

Seed convention for experiments: training worlds use seeds 1-999, held-out test worlds seeds
1001 and up (ideally with a held-out ``--style``), so train and test never share a world.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ..cli import add_command, add_device_option, resolve_device
from ..core.errors import ConfigError

log = logging.getLogger(__name__)

STYLE_PRESETS = ("default", "heldout_autumn", "heldout_winter", "dense")


def register(sub) -> None:
    """Add the ``sim`` command group to the top-level subparsers."""
    p = add_command(sub, "sim", help="synthetic worlds, drives, training pairs and tile serving",
                    description="Synthetic data: generate a world and its aerial tile pyramid, drive a "
                    "simulated vehicle through it into a rosbag2, export training pairs, or serve the "
                    "world's tiles over HTTP. Training worlds use seeds 1-999, held-out test worlds 1001 "
                    "and up (ideally with a held-out --style), so train and test never share a world.",
                    examples=["xview-localizer sim world --seed 1 --out worlds/w1",
                              "xview-localizer sim drive --world worlds/w1 --seconds 60 --seed 7 --out bags/w1_d7",
                              "xview-localizer sim dataset --worlds worlds/w1 worlds/w2 --pairs 1000 --out pairs/train",
                              "xview-localizer sim serve-tiles worlds/w1 --port 8080"])
    simsub = p.add_subparsers(dest="sim_command", metavar="SIM_COMMAND")
    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])

    w = add_command(simsub, "world", help="generate a world and write its aerial tile pyramid",
                    description="Generate a synthetic world (roads, buildings, vegetation) from a seed and "
                    "write its aerial imagery as a z/x/y tile pyramid (and an MBTiles file) georeferenced "
                    "at the datum, plus the world description the drives and the pair export read.",
                    examples=["xview-localizer sim world --seed 1 --out worlds/w1 --size-m 800"])
    w.add_argument("--seed", type=int, required=True, help="world seed (train 1-999, test 1001+)")
    w.add_argument("--out", type=Path, required=True, help="output world directory")
    w.add_argument("--size-m", type=float, default=1000.0, help="side of the square world (m)")
    w.add_argument("--style", choices=STYLE_PRESETS, default="default", help="style preset (classic look)")
    w.add_argument("--family", default="",
                   help="draw the world's layout and look from a style family instead (sim/style.py: "
                        "town_grid, suburb_curved, rural_roads, arterial_industrial, autumn_town, "
                        "mediterranean_dry; held out: winter_snow, arid_sprawl); writes style.json")
    w.add_argument("--style-seed", type=int, default=None, help="seed of the style draw (default: --seed)")
    w.add_argument("--lat", type=float, default=49.01, help="datum latitude (deg)")
    w.add_argument("--lon", type=float, default=8.42, help="datum longitude (deg)")
    w.add_argument("--zoom-max", type=int, default=20, help="finest tile zoom (20 ~ 0.1 m/px)")
    w.add_argument("--zoom-min", type=int, default=14, help="coarsest tile zoom")
    w.add_argument("--tile-margin-m", type=float, default=64.0,
                   help="also write tiles this far outside the world (background fill), so patches "
                        "around vehicles near the edge are complete")
    w.add_argument("--no-mbtiles", action="store_true", help="skip the MBTiles file")
    w.set_defaults(handler=cmd_world)

    d = add_command(simsub, "drive", help="simulate a drive through a world and write a rosbag2",
                    description="Simulate a vehicle driving through a world and write a rosbag2 with what "
                    "the node subscribes to (camera images, camera_info, GNSS fixes with a bias, odometry, "
                    "/tf_static, optionally depth and /clock) and the ground-truth pose, ready for "
                    "'xview-localizer replay' or a ros2 bag play.",
                    examples=["xview-localizer sim drive --world worlds/w1 --seconds 60 --seed 7 --out bags/w1_d7"])
    d.add_argument("--world", type=Path, required=True, help="world directory (from `sim world`)")
    d.add_argument("--seconds", type=float, default=60.0, help="drive duration (s)")
    d.add_argument("--seed", type=int, default=0, help="drive seed (route, GNSS and odometry noise)")
    d.add_argument("--out", type=Path, required=True, help="output bag directory (must not exist)")
    d.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage")
    d.add_argument("--compressed", action="store_true", help="also write JPEG CompressedImage")
    d.add_argument("--depth", action="store_true", help="also write 32FC1 depth images")
    d.add_argument("--no-clock", action="store_true", help="do not write /clock")
    d.add_argument("--width", type=int, default=1242, help="image width (px)")
    d.add_argument("--height", type=int, default=375, help="image height (px)")
    d.add_argument("--distortion-model", choices=("none", "plumb_bob", "rational_polynomial", "equidistant"),
                   default="none", help="lens of the KITTI-like camera (rendered through it; written to camera_info)")
    d.add_argument("--distortion", type=float, nargs="+", default=[], metavar="D",
                   help="distortion coefficients in ROS order (plumb_bob: k1 k2 p1 p2 k3; equidistant: k1-k4)")
    d.add_argument("--rate-hz", type=float, default=10.0, help="camera / trajectory rate")
    d.add_argument("--gnss-rate-hz", type=float, default=5.0, help="GNSS rate (divides --rate-hz)")
    d.add_argument("--gnss-sigma-m", type=float, default=3.0, help="GNSS bias sigma per axis (m)")
    add_device_option(d, "the renderer", default="cpu")
    d.set_defaults(handler=cmd_drive)

    s = add_command(simsub, "dataset", help="export training/evaluation pairs",
                    description="Render ground images and satellite patches at random poses in the given "
                    "worlds and write them as xview-pairs/1 pairs (with the true pose, a noisy prior and "
                    "the depth map) for 'xview-localizer train', 'evaluate' and 'benchmark'.",
                    examples=["xview-localizer sim dataset --worlds worlds/w1 worlds/w2 --pairs 1000 --out pairs/train"])
    s.add_argument("--worlds", type=Path, nargs="+", required=True, help="world directories")
    s.add_argument("--pairs", type=int, required=True, help="number of pairs")
    s.add_argument("--out", type=Path, required=True, help="output directory (new or empty)")
    s.add_argument("--yaw-range", type=float, default=10.0,
                   help="prior yaw noise, +- degrees (10 = KITTI protocol, 180 = unknown)")
    s.add_argument("--offset-m", type=float, default=20.0, help="prior offset, +- metres east and north")
    s.add_argument("--sat-size", type=int, default=512, help="satellite patch size (px)")
    s.add_argument("--sat-m-per-px", type=float, default=0.2, help="satellite patch resolution")
    s.add_argument("--width", type=int, default=1024, help="ground image width (px)")
    s.add_argument("--height", type=int, default=256, help="ground image height (px)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed")
    add_device_option(s, "the renderer", default="cpu")
    s.add_argument("--preview", type=int, default=0, metavar="N",
                   help="also write N side-by-side PNGs (ground | satellite with truth and prior) to OUT/preview")
    s.set_defaults(handler=cmd_dataset)

    t = add_command(simsub, "serve-tiles", help="serve a world's tiles over HTTP on 127.0.0.1",
                    description="Serve a world's tile pyramid at http://127.0.0.1:PORT/{z}/{x}/{y}.png until "
                    "interrupted, for the node's tile_url parameter or any tile client.",
                    examples=["xview-localizer sim serve-tiles worlds/w1 --port 8080"])
    t.add_argument("world_dir", type=Path, help="world directory (from `sim world`)")
    t.add_argument("--port", type=int, default=8080, help="TCP port on 127.0.0.1")
    t.set_defaults(handler=cmd_serve_tiles)


def cmd_world(args) -> int:
    from .aerial import write_tile_pyramid
    from .world import WorldConfig, WorldStyle, generate_world

    if args.family:
        from .style import write_styled_world

        t0 = time.perf_counter()
        st = write_styled_world(args.seed, args.family, args.out, style_seed=args.style_seed, size_m=args.size_m,
                                zoom_max=args.zoom_max, zoom_min=args.zoom_min, margin_m=args.tile_margin_m,
                                mbtiles=not args.no_mbtiles, datum_lat_deg=args.lat, datum_lon_deg=args.lon)
        print(f"world seed {args.seed}, style {st.family} (seed {st.seed}{', held out' if st.heldout else ''}) -> "
              f"{args.out} in {time.perf_counter() - t0:.1f} s")
        return 0
    cfg = WorldConfig(seed=args.seed, datum_lat_deg=args.lat, datum_lon_deg=args.lon, size_m=args.size_m,
                      style=WorldStyle.preset(args.style))
    t0 = time.perf_counter()
    world = generate_world(cfg)
    t1 = time.perf_counter()
    world.save(args.out)
    info = write_tile_pyramid(world, Path(args.out) / "tiles", zoom_max=args.zoom_max, zoom_min=args.zoom_min,
                              mbtiles=not args.no_mbtiles, progress=True, margin_m=args.tile_margin_m)
    t2 = time.perf_counter()
    print(f"world seed {args.seed}: {len(world.roads)} roads, {len(world.buildings)} buildings, "
          f"{len(world.trees)} trees -> {args.out} (generate {t1 - t0:.1f} s, tiles {t2 - t1:.1f} s, "
          f"{info.tile_count} tiles)")
    print(f"tile URL: {info.url_template}")
    return 0


def cmd_drive(args) -> int:
    from .bag import BagConfig, record_drive
    from .drive import DriveConfig, GnssConfig, OdomConfig

    if args.out.exists():
        raise ConfigError(f"--out {args.out} exists; rosbag2 never overwrites, choose a new path")
    drive = DriveConfig(seconds=args.seconds, rate_hz=args.rate_hz, seed=args.seed)
    gnss = GnssConfig(rate_hz=args.gnss_rate_hz, bias_sigma_m=args.gnss_sigma_m, seed=args.seed)
    odom = OdomConfig(seed=args.seed)
    bag = BagConfig(storage=args.storage, compressed=args.compressed, depth=args.depth, clock=not args.no_clock)
    camera = None
    if args.distortion_model != "none" or args.distortion:
        from ..core.camera import PinholeCamera

        base = PinholeCamera.kitti_like(args.width, args.height)
        camera = PinholeCamera(base.width_px, base.height_px, base.k, tuple(args.distortion), args.distortion_model)
    t0 = time.perf_counter()
    out = record_drive(args.world, args.out, drive_config=drive, gnss_config=gnss, odom_config=odom,
                       bag_config=bag, width_px=args.width, height_px=args.height, device=resolve_device(args.device),
                       camera=camera)
    dt = time.perf_counter() - t0
    print(f"wrote {out} ({drive.n_samples} frames, {args.storage}) in {dt:.1f} s "
          f"({drive.n_samples / max(dt, 1e-9):.2f} frames/s)")
    return 0


def cmd_dataset(args) -> int:
    from .dataset import DatasetConfig, export_pairs, write_previews

    cfg = DatasetConfig(pairs=args.pairs, offset_m=args.offset_m, yaw_range_deg=args.yaw_range,
                        sat_size_px=args.sat_size, sat_m_per_px=args.sat_m_per_px, width_px=args.width,
                        height_px=args.height, seed=args.seed)
    t0 = time.perf_counter()
    out = export_pairs(args.worlds, args.out, cfg, device=resolve_device(args.device))
    dt = time.perf_counter() - t0
    print(f"wrote {args.pairs} pairs to {out} in {dt:.1f} s ({args.pairs / max(dt, 1e-9):.2f} pairs/s)")
    if args.preview > 0:
        paths = write_previews(out, Path(out) / "preview", args.preview)
        print(f"previews: {', '.join(str(p) for p in paths)}")
    return 0


def cmd_serve_tiles(args) -> int:
    from ..tiles.server import install_stop_signals
    from .serve import serve_world_tiles

    install_stop_signals()  # stops on SIGINT / SIGTERM even when started with SIGINT ignored
    server = serve_world_tiles(args.world_dir, args.port)
    try:  # print inside: a SIGINT right after the line (a client that got its answer) is a clean stop
        print(f"serving {args.world_dir} at {server.url_template()} (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0
