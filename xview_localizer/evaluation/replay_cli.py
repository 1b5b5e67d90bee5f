"""``xview-localizer replay BAG --out REPORT_DIR``: evaluate the localizer on a rosbag2.

Runs :func:`xview_localizer.evaluation.replay.replay_bag` (the node's core, no DDS) and writes the report
of :mod:`xview_localizer.evaluation.report`. Failure modes exit non-zero with one clear line: a bag
without the named topics (the message lists what it has), a tile source that does not answer,
a checkpoint that does not load, an output folder that exists (without ``--force``).

Also runnable as ``python -m xview_localizer.evaluation.replay_cli BAG --out DIR``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ..core.errors import ConfigError, XViewError

log = logging.getLogger(__name__)

#: ``replay --help``: what it does, and an example.
DESCRIPTION = ("Evaluate the localizer on a rosbag2 (mcap or sqlite3) without DDS: the node's core runs on "
               "every image with the bag's fixes, odometry, camera_info and /tf_static, and a report "
               "(index.html, metrics JSON, plots) is written to --out. A bag without the named topics, a tile "
               "source that does not answer, a checkpoint that does not load or an existing --out (without "
               "--force) exit non-zero with one line. Also runnable as python -m xview_localizer.evaluation.replay_cli.")
EXAMPLES = ["xview-localizer replay bags/w1_d7 --out reports/w1_d7",
            "xview-localizer replay my.mcap --out rep --tiles file:///data/tiles/{z}/{x}/{y}.png "
            "--checkpoint dense_flow -p min_weight:=0.3"]


def _int_at_least(lowest: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lowest:
            raise argparse.ArgumentTypeError(f"must be >= {lowest}, got {value}")
        return value

    parse.__name__ = f"int >= {lowest}"
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_device_option

    p.add_argument("bag", type=Path, help="rosbag2 directory (mcap or sqlite3) or a single .mcap/.db3 file")
    p.add_argument("--out", type=Path, required=True, help="report directory (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing report directory")
    p.add_argument("--tiles", default="", metavar="URL",
                   help="tile source (http(s) template, file://, mbtiles://); default: the bag's sim.yaml "
                        "tile_url, else tile_url of --params-file")
    p.add_argument("--tile-cache-dir", type=Path, default=None, help="disk cache of fetched tiles")
    p.add_argument("--checkpoint", default="",
                   help="matcher checkpoint: '' = checkpoint_path of the parameters, else the packaged default "
                        "(sparse_depth_compact.pt); a packaged name (sparse_depth, dense_flow, or its file name); "
                        "or a path to a .pt")
    add_device_option(p, "the matcher", default=None, default_note="the device parameter of --params-file, else auto")
    p.add_argument("--params-file", type=Path, default=None,
                   help="node parameters YAML (config/localizer.yaml format) for the core's settings")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override one node parameter (YAML value), e.g. -p patch_m_per_px=0.5; repeatable")
    p.add_argument("--map-projection", choices=("utm", "enu"), default=None,
                   help="map frame of the estimates (and of a pose ground truth); default: enu at the sim "
                        "datum for sim bags, else the parameters' (utm)")
    p.add_argument("--datum", type=float, nargs=2, metavar=("LAT", "LON"), default=None,
                   help="map origin (deg); default: the sim datum, else the parameters', else the first fix")
    p.add_argument("--image-topic", default="", help="sensor_msgs/Image or CompressedImage topic")
    p.add_argument("--camera-info-topic", default="", help="sensor_msgs/CameraInfo topic")
    p.add_argument("--fix-topic", default="", help="sensor_msgs/NavSatFix topic (the GNSS input)")
    p.add_argument("--odom-topic", default="", help="nav_msgs/Odometry topic ('none' = do not use)")
    p.add_argument("--gt-topic", default="",
                   help="ground truth: PoseStamped, PoseWithCovarianceStamped, Odometry (map frame) or RTK "
                        "NavSatFix ('none' = no ground truth)")
    p.add_argument("--depth-topic", default="",
                   help="sensor_msgs/Image depth topic (32FC1 m or 16UC1 mm); default: a topic named *depth* "
                        "whose first message has such an encoding, if any")
    p.add_argument("--no-depth", action="store_true", help="ignore depth in the bag (frames run on flat ground)")
    p.add_argument("--depth-tolerance-s", type=float, default=None, metavar="S",
                   help="pair an image with the depth map nearest its stamp within S seconds (unset: depth_tolerance_s, 0.05)")
    p.add_argument("--every", type=_int_at_least(1), default=1, metavar="N",
                   help="quick look: localize every N-th image (the 1st, the N+1-th, ...); the others are skipped "
                        "(not decoded, counted as skipped in the report, not as rejected); fixes, odometry, "
                        "camera_info and /tf_static are all still fed (1 = every image)")
    p.add_argument("--max-frames", type=_int_at_least(0), default=0, metavar="N",
                   help="stop after N localized images (0 = all); with --every M these are images 1, M+1, ..., "
                        "(N-1)*M+1")
    p.add_argument("--matcher-factory", default="",
                   help="advanced / tests: 'module:function' building the matcher as f(checkpoint, device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub: Any) -> None:
    """Add the ``replay`` subcommand to the ``xview-localizer`` subparsers."""
    from ..cli import add_command

    p = add_command(sub, "replay", help="evaluate the localizer on a rosbag2 and write a report",
                    description=DESCRIPTION, examples=EXAMPLES)
    add_arguments(p)
    p.set_defaults(handler=cmd_replay)


def _load_params(path: Optional[Path]) -> dict:
    """Flat ``{name: value}`` from a node params YAML (``<node>: ros__parameters: {...}``)."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--params-file {path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"--params-file {path}: not a mapping")
    for value in data.values():
        if isinstance(value, dict) and isinstance(value.get("ros__parameters"), dict):
            return dict(value["ros__parameters"])
    raise ConfigError(f"--params-file {path}: no '<node>: ros__parameters:' section")


def _parse_overrides(items: Sequence[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param {item!r} must be NAME=VALUE")
        out[name.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists():
        if not force:
            raise ConfigError(f"output folder {out} exists; choose another --out or pass --force to replace it")
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()


def format_depth_summary(depth: Optional[dict]) -> str:
    """One line on the depth the frames got (``meta['depth']`` of the replay, None = no depth)."""
    if not depth:
        return "depth: none (frames run on flat ground)"
    line = (f"depth: {depth['topic']}: {depth['frames_with_depth']} frames with depth, "
            f"{depth['frames_without_depth']} without (none within {1e3 * depth['tolerance_s']:.0f} ms), "
            f"{depth['resized']} resized to the image, {depth['invalid_messages']} invalid messages skipped")
    if depth.get("last_invalid"):
        line += f" (last: {depth['last_invalid']})"
    return line


def format_speed_summary(meta: dict) -> str:
    """One line on what was replayed and how fast (``meta`` of the replay)."""
    images = meta.get("images") or {}
    line = f"replayed {images.get('localized', 0)} of {images.get('in_bag', 0)} images"
    if images.get("skipped"):
        line += f" ({images['skipped']} skipped: --every {images['every']})"
    if images.get("not_replayed"):
        line += f" ({images['not_replayed']} not reached: --max-frames {images['max_frames']})"
    line += f" in {meta.get('replay_wall_s', float('nan')):.1f} s"
    if meta.get("replay_frames_per_s") is not None:
        line += f", {meta['replay_frames_per_s']:.2f} frames/s"
    if meta.get("realtime_factor") is not None:
        line += f", {meta['realtime_factor']:.2f}x real time"
    return line


def cmd_replay(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..cli import resolve_device
    from ..pipeline.config import node_config_from_flat
    from ..tiles.cache import TileCache, TileCacheConfig
    from .replay import (
        ReplayConfig,
        detect_depth_topic,
        detect_topics,
        load_matcher_for_replay,
        node_config_for_bag,
        open_reader,
        replay_bag,
    )
    from .report import format_summary, write_report

    out: Path = args.out
    if out.exists() and not args.force:
        raise ConfigError(f"output folder {out} exists; choose another --out or pass --force to replace it")
    params = _load_params(args.params_file)
    params.update(_parse_overrides(args.param))
    if args.checkpoint:
        params["checkpoint_path"] = args.checkpoint
    if args.device:
        params["device"] = args.device
    if args.matcher_factory:
        params["matcher_factory"] = args.matcher_factory
    node = node_config_from_flat(params)
    node, tile_url = node_config_for_bag(args.bag, node, args.tiles)
    if args.map_projection or args.datum:
        loc = node.localizer
        if args.map_projection:
            loc = replace(loc, map_projection=args.map_projection)
        if args.datum:
            loc = replace(loc, datum_lat_deg=args.datum[0], datum_lon_deg=args.datum[1])
        node = replace(node, localizer=loc)
    tile_url = tile_url or node.tile_url
    if args.no_depth and args.depth_topic:
        raise ConfigError("--no-depth and --depth-topic contradict each other; give one")
    depth_kw = {} if args.depth_tolerance_s is None else {"depth_tolerance_s": args.depth_tolerance_s}
    cfg = ReplayConfig(image_topic=args.image_topic, fix_topic=args.fix_topic, gt_topic=args.gt_topic,
                       odom_topic=args.odom_topic, camera_info_topic=args.camera_info_topic,
                       depth_topic="none" if args.no_depth else args.depth_topic, every=args.every,
                       max_frames=args.max_frames,
                       node=node, progress=not args.no_progress, **depth_kw)
    with open_reader(args.bag) as reader:  # named / required topics before anything slow
        topics = detect_topics({c.topic: c.msgtype for c in reader.connections}, cfg, str(args.bag))
        detect_depth_topic(reader, cfg, topics.image, str(args.bag))
    device = resolve_device(node.device)
    matcher = load_matcher_for_replay(node.checkpoint_path, device, node.matcher_factory, node.matcher_runtime)
    tiles = TileCache(tile_url, args.tile_cache_dir or (Path(node.tile_cache_dir) if node.tile_cache_dir else None),
                      TileCacheConfig(offline=node.tile_offline, timeout_s=node.tile_timeout_s,
                                      retries=node.tile_retries))
    meta = {"checkpoint": node.checkpoint_path or ("(packaged default)" if not node.matcher_factory else ""),
            "matcher": node.matcher_factory or type(matcher).__name__, "device": device}
    try:
        data = replay_bag(args.bag, cfg, matcher, tiles, tile_url, meta=meta)
        _prepare_out(out, args.force)
        report = write_report(data, out, tile_cache=tiles)
    finally:
        tiles.close()
    print(format_summary(report))
    print(format_speed_summary(data.meta))
    print(format_depth_summary(data.meta.get("depth")))
    print(f"report: {out.resolve() / 'index.html'}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Stand-alone entry point (same as ``xview-localizer replay``)."""
    from ..cli import HelpFormatter

    parser = argparse.ArgumentParser(prog="xview-localizer replay", description=DESCRIPTION,
                                     epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES),
                                     formatter_class=HelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return cmd_replay(args)
    except XViewError as exc:
        print(f"xview-localizer replay: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
