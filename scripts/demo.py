#!/usr/bin/env python3
"""``make demo``: the whole system on a bare machine, end to end, in a few minutes.

1. Generates (or reuses) a synthetic world and a 60 s drive under ``./demo_out/`` (or
   ``$XVIEW_DEMO_DIR``): ``world/`` (aerial tile pyramid) and ``drive/`` (rosbag2 mcap).
2. Serves the world's tiles over HTTP on 127.0.0.1 (``xview-localizer sim serve-tiles``, a
   separate process).
3. Starts ``localizer_node --ros-args --params-file config/localizer.yaml`` (separate process,
   its own ``ROS_DOMAIN_ID``, ``use_sim_time``, map frame = the world's ENU at its datum,
   topics remapped to the drive's, output ``/xview/pose``).
4. Plays the drive through DDS with rclpy publishers (``/clock`` + every topic, at ``--rate``
   times real time) and records the node's ``/xview/pose`` into ``run/recorded`` (mcap), plus
   the last ``/diagnostics`` (rejection causes, latency).
5. Replays the same drive offline, in-process (``replay_bag``: the node's core without DDS), with
   the same matcher and the same node parameters, for the report's frame panels: the poses the
   node published carry no matches or satellite patches (``--no-panels`` skips it).
6. Writes the same report as ``xview-localizer replay`` (``report/index.html``) from the recorded
   poses and the drive's ground truth and GNSS (summary, trajectory, plots: the node's results),
   with the frame panels of step 5 (labelled as the offline replay's), and prints a short table.

Every process it starts is stopped with SIGINT. The matcher is whatever checkpoint exists:
``--checkpoint`` / ``$XVIEW_DEMO_CHECKPOINT``, else the packaged default (the depth-prior sparse
matcher ``xview_localizer/checkpoints/sparse_depth_compact.pt``: flat ground, or the depth map
with ``--depth``), else the newest ``models/*.pt``. ``--checkpoint dense_flow`` runs the
dense-flow matcher. Without any, the node
runs but publishes no pose (matcher unavailable) and the report says so: the numbers are
never faked.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NS = 1_000_000_000
POSE_TOPIC = "/xview/pose"


def log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_checkpoint(arg: str) -> str:
    """The checkpoint the demo uses ('' = none found)."""
    if arg:
        from xview_localizer.matcher.factory import resolve_checkpoint_path

        return str(resolve_checkpoint_path(arg).resolve())
    env = os.environ.get("XVIEW_DEMO_CHECKPOINT", "")
    if env:
        return str(Path(env).resolve())
    from xview_localizer.core.errors import CheckpointError
    from xview_localizer.matcher.factory import default_checkpoint_path

    try:
        return str(default_checkpoint_path())
    except CheckpointError:
        pass
    models = sorted((REPO / "models").glob("*.pt"), key=lambda p: p.stat().st_mtime)
    return str(models[-1]) if models else ""


#: Tiles also cover this band outside the world (background fill): the node's 512 px x 0.2 m
#: patch reaches 51 m around the vehicle, and drives may run along the world's edge.
TILE_MARGIN_M = 64.0


def ensure_world(world_dir: Path, size_m: float, seed: int, zoom_max: int = 19) -> None:
    if (world_dir / "world.json").is_file() and (world_dir / "tiles").is_dir():
        log(f"reusing world {world_dir}")
        return
    from xview_localizer.sim.aerial import write_tile_pyramid
    from xview_localizer.sim.world import WorldConfig, generate_world

    t0 = time.perf_counter()
    log(f"generating a {size_m:.0f} m synthetic world (seed {seed}) ...")
    world = generate_world(WorldConfig(seed=seed, size_m=size_m))
    tmp = world_dir.with_name(world_dir.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    world.save(tmp)
    write_tile_pyramid(world, tmp / "tiles", zoom_max=zoom_max, zoom_min=zoom_max - 3,
                       mbtiles=False, progress=True, margin_m=TILE_MARGIN_M)
    tmp.rename(world_dir)
    log(f"world ready in {time.perf_counter() - t0:.1f} s")


def ensure_drive(world_dir: Path, drive_dir: Path, seconds: float, width: int, height: int, seed: int,
                 depth: bool = False) -> None:
    if (drive_dir / "metadata.yaml").is_file() and (drive_dir / "sim.yaml").is_file():
        log(f"reusing drive {drive_dir}")
        return
    import shutil

    from xview_localizer.sim.bag import BagConfig, record_drive
    from xview_localizer.sim.drive import DriveConfig, GnssConfig, OdomConfig

    if drive_dir.exists():
        shutil.rmtree(drive_dir)
    tmp = drive_dir.with_name(drive_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    t0 = time.perf_counter()
    log(f"recording a {seconds:.0f} s drive at {width}x{height} px ...")
    record_drive(world_dir, tmp, drive_config=DriveConfig(seconds=seconds, seed=seed),
                 gnss_config=GnssConfig(seed=seed), odom_config=OdomConfig(seed=seed),
                 bag_config=BagConfig(depth=depth), width_px=width, height_px=height, progress=True)
    tmp.rename(drive_dir)
    log(f"drive ready in {time.perf_counter() - t0:.1f} s")


def stop(proc: subprocess.Popen, name: str, timeout_s: float = 15.0) -> int:
    """SIGINT, then wait; SIGKILL only if it hangs (reported)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop on SIGINT within {timeout_s:.0f} s; killing it")
        proc.kill()
        proc.wait()
    return proc.returncode


def wait_http(url: str, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1.0):
                return
        except OSError as exc:
            if getattr(exc, "code", None) == 404:
                return  # the server answers
            time.sleep(0.2)
    raise RuntimeError(f"tile server at {url} did not come up")


def load_drive(drive_dir: Path, depth: bool = False):
    """All messages to play, as rclpy objects in log-time order, plus the ground truth, the fixes
    and the image stamps (for the report)."""
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, NavSatFix
    from tf2_msgs.msg import TFMessage

    from xview_localizer.sim.bag import TOPICS

    types = {"clock": Clock, "tf_static": TFMessage, "image": Image, "camera_info": CameraInfo, "fix": NavSatFix,
             "odom": Odometry, "ground_truth": PoseStamped}
    if depth:
        types["depth"] = Image
    by_topic = {TOPICS[k]: k for k in types}
    msgs = []
    with AnyReader([drive_dir], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
        conns = [c for c in reader.connections if c.topic in by_topic]
        for c, log_ns, raw in reader.messages(connections=conns):
            kind = by_topic[c.topic]
            msgs.append((log_ns, kind, deserialize_message(bytes(raw), types[kind])))
    msgs.sort(key=lambda m: m[0])
    return msgs, types


def play_and_record(msgs, types, domain_id: int, rate: float, recorded_dir: Path, ready_timeout_s: float):
    """Publish the drive into the node's domain and record its poses; returns
    (image publish wall times by stamp, pose receive wall times by stamp, last diagnostics)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from xview_localizer.sim.bag import TOPICS

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = rclpy.create_node("xview_demo_player", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    static_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs = {k: node.create_publisher(t, TOPICS[k], static_qos if k == "tf_static" else 10) for k, t in types.items()}
    ts = get_typestore(Stores.ROS2_KILTED)
    writer = Writer(recorded_dir, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    conn = writer.add_connection(POSE_TOPIC, "geometry_msgs/msg/PoseWithCovarianceStamped", typestore=ts)
    received: dict[int, float] = {}
    diags: dict[str, dict] = {}
    published: dict[int, float] = {}

    def on_pose(m: PoseWithCovarianceStamped) -> None:
        s = int(m.header.stamp.sec) * NS + int(m.header.stamp.nanosec)
        received[s] = time.monotonic()
        writer.write(conn, s, serialize_message(m))

    def on_diag(arr: DiagnosticArray) -> None:
        for st in arr.status:
            diags[st.name] = {"level": int.from_bytes(st.level, "little") if isinstance(st.level, bytes)
                              else int(st.level), "message": st.message,
                              **{kv.key: kv.value for kv in st.values}}

    node.create_subscription(PoseWithCovarianceStamped, POSE_TOPIC, on_pose, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            ex.spin_once(timeout_sec=min(0.01, left))

    try:
        # Wait until the node subscribes and its matcher is ready (or definitely unavailable).
        end = time.monotonic() + ready_timeout_s
        state = ""
        while time.monotonic() < end:
            spin_for(0.2)
            state = diags.get("xview_localizer: localization", {}).get("matcher", "")
            if node.count_subscribers(TOPICS["image"]) and state in ("ready", "unavailable"):
                break
        log(f"node is up (matcher: {state or 'unknown'}); playing {len(msgs)} messages at {rate:g}x real time")
        t_wall0, t_bag0 = time.monotonic(), msgs[0][0]
        n_img = 0
        for log_ns, kind, msg in msgs:
            delay = (log_ns - t_bag0) / NS / rate - (time.monotonic() - t_wall0)
            if delay > 0:
                spin_for(delay)
            pubs[kind].publish(msg)
            if kind == "image":
                s = int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)
                published[s] = time.monotonic()
                n_img += 1
                if n_img % 100 == 0:
                    log(f"played {n_img} images, {len(received)} poses received")
        spin_for(3.0)
    finally:
        writer.close()
        ex.shutdown()
        node.destroy_node()
        ctx.try_shutdown()
    return published, received, diags


#: Parameters the demo gives localizer_node that belong to ROS, not to the localizer's config.
ROS_ONLY_PARAMS = ("use_sim_time",)


def node_params_flat(params_file: Path, overrides: dict[str, str]) -> dict:
    """The parameters localizer_node ran with, as flat ``{name: value}``: ``params_file``
    (``xview_localizer: ros__parameters:``), then the ``-p NAME:=VALUE`` overrides parsed as YAML
    values (as ROS parses them; an empty value is ''), less :data:`ROS_ONLY_PARAMS`."""
    import yaml

    flat = dict(yaml.safe_load(params_file.read_text())["xview_localizer"]["ros__parameters"])
    flat.update({k: (yaml.safe_load(v) if v.strip() else "") for k, v in overrides.items()})
    for name in ROS_ONLY_PARAMS:
        flat.pop(name, None)
    return flat


def replay_for_panels(drive_dir: Path, node_params: dict[str, str], world_tile_url: str) -> tuple:
    """Replay ``drive_dir`` offline in-process (:func:`replay_bag`, the node's core, no DDS) with
    the node's parameters (``config/localizer.yaml`` + ``node_params``, the ``-p`` overrides the
    node got) and matcher, for the report's frame panels. The node's HTTP tile server is gone by
    now: tiles come from the world's folder (``world_tile_url``, the same pixels). Depth and
    odometry are used as the node used them (``use_depth``, ``use_odom``).

    Returns (EvalData with snapshots, wall seconds incl. loading the matcher).

    Raises:
        XViewError: the matcher does not load, the tiles do not answer, ...
    """
    from xview_localizer.cli import resolve_device
    from xview_localizer.evaluation.replay import (
        ReplayConfig,
        load_matcher_for_replay,
        node_config_for_bag,
        replay_bag,
    )
    from xview_localizer.pipeline.config import node_config_from_flat
    from xview_localizer.tiles.cache import TileCache, TileCacheConfig

    t0 = time.perf_counter()
    flat = node_params_flat(REPO / "config" / "localizer.yaml", node_params)
    flat["tile_url"] = world_tile_url
    node, tile_url = node_config_for_bag(drive_dir, node_config_from_flat(flat), world_tile_url)
    cfg = ReplayConfig(node=node, depth_topic="" if node.use_depth else "none",
                       odom_topic="" if node.use_odom else "none", progress=sys.stderr.isatty())
    device = resolve_device(node.device)
    matcher = load_matcher_for_replay(node.checkpoint_path, device, node.matcher_factory, node.matcher_runtime)
    meta = {"estimates": "offline in-process replay of the same bag (replay_bag), for the frame panels",
            "checkpoint": node.checkpoint_path, "matcher": node.matcher_factory or type(matcher).__name__,
            "device": device, "matcher_runtime": node.matcher_runtime}
    with TileCache(tile_url, Path(node.tile_cache_dir) if node.tile_cache_dir else None,
                   TileCacheConfig(offline=node.tile_offline, timeout_s=node.tile_timeout_s,
                                   retries=node.tile_retries)) as tiles:
        data = replay_bag(drive_dir, cfg, matcher, tiles, tile_url, meta=meta)
    return data, time.perf_counter() - t0


#: What the report says above the panels when they come from the offline replay.
PANELS_NOTE = ("These frame panels come from an offline replay of the same bag, run in-process after the node "
               "(replay_bag: the node's Localizer core without DDS) with the same matcher checkpoint and the same "
               "node parameters, because the poses the node published over DDS carry no matches or satellite "
               "patches. Each panel shows that replay's estimate, errors and outcome for its frame (its caption "
               "adds what the node published for it). The summary table, the trajectory and the other plots "
               "above are the node's (DDS) results. The two can differ frame by frame: the replay runs every "
               "image with every message logged before it, the live node skips images that arrive while it is "
               "busy and sees its inputs with DDS timing.")


def build_report(drive_dir: Path, recorded_dir: Path, out_dir: Path, published, received, diags, tile_url: str,
                 meta: dict, panels_from=None) -> dict:
    """The report of the node's recorded poses; ``panels_from`` (a
    :class:`~xview_localizer.evaluation.report.PanelSource`, or None) supplies the frame panels."""
    import math

    from xview_localizer.core.geo import LocalEnu
    from xview_localizer.evaluation.report import (
        EvalData,
        Track,
        frames_from_pose_bag,
        write_report,
    )
    from xview_localizer.sim.bag import TOPICS, read_sidecar
    from xview_localizer.tiles.cache import TileCache, TileCacheConfig

    side = read_sidecar(drive_dir)
    lat0, lon0 = side["datum"]["lat_deg"], side["datum"]["lon_deg"]
    enu = LocalEnu(lat0, lon0)
    gt_rows, fix_rows, image_stamps = [], [], []
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with AnyReader([drive_dir], default_typestore=get_typestore(Stores.ROS2_KILTED)) as r:
        conns = [c for c in r.connections if c.topic in (TOPICS["ground_truth"], TOPICS["fix"], TOPICS["image"])]
        for c, _, raw in r.messages(connections=conns):
            m = r.deserialize(raw, c.msgtype)
            s = int(m.header.stamp.sec) * NS + int(m.header.stamp.nanosec)
            if c.topic == TOPICS["image"]:
                image_stamps.append(s)
            elif c.topic == TOPICS["ground_truth"]:
                q = m.pose.orientation
                yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
                gt_rows.append((s, m.pose.position.x, m.pose.position.y, yaw))
            elif m.status.status >= 0 and math.isfinite(m.latitude):
                e, n = enu.forward(m.latitude, m.longitude)
                fix_rows.append((s, float(e), float(n), float("nan")))
    latency = {s: received[s] - published[s] for s in received if s in published}
    frames = frames_from_pose_bag(recorded_dir, POSE_TOPIC, image_stamps, latency)
    causes = {k.split(": ", 1)[1]: v.get("total") for k, v in diags.items()
              if "total" in v and k.split(": ", 1)[-1] not in ("localization", "latency")}
    meta = {**meta, "node_rejection_causes_total": causes,
            "node_latency_ms": diags.get("xview_localizer: latency", {}),
            "node_summary": {k: v for k, v in diags.get("xview_localizer: localization", {}).items()
                             if k.endswith("_total") or k in ("message", "matcher", "extrinsics_source")}}
    data = EvalData(frames=frames, gnss=Track.from_rows(fix_rows), gt=Track.from_rows(gt_rows), map_projection="enu",
                    datum_lat_deg=lat0, datum_lon_deg=lon0, tile_url=tile_url, meta=meta,
                    latency_label="end to end: player publishes the image -> the pose arrives (DDS)",
                    course_min_baseline_m=10.0, panels_from=panels_from)
    with TileCache(tile_url, None, TileCacheConfig()) as tiles:
        return write_report(data, out_dir, tile_cache=tiles)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path(os.environ.get("XVIEW_DEMO_DIR", REPO / "demo_out")),
                   help="work folder (default ./demo_out or $XVIEW_DEMO_DIR)")
    p.add_argument("--checkpoint", default="", help="matcher checkpoint (default: see the module docstring)")
    p.add_argument("--seconds", type=float, default=60.0, help="drive length (s)")
    p.add_argument("--width", type=int, default=512, help="camera width (px)")
    p.add_argument("--height", type=int, default=128, help="camera height (px)")
    p.add_argument("--world-size-m", type=float, default=1000.0, help="side of the synthetic world (m)")
    p.add_argument("--seed", type=int, default=2001,
                   help="world and drive seed (2001: never used by the training recipes, seeds 1-20 and 1001-1003)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed (x real time)")
    p.add_argument("--matcher-factory", default="",
                   help="tests only: node parameter matcher_factory ('module:function', e.g. a labelled test "
                        "double with test/ on PYTHONPATH) instead of the checkpoint")
    p.add_argument("--world-zoom-max", type=int, default=19, help="finest tile zoom of the world")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra localizer_node parameter (repeatable), e.g. max_gnss_mahalanobis:=4.0")
    p.add_argument("--patch-size-px", type=int, default=512, help="satellite patch size (node parameter)")
    p.add_argument("--patch-m-per-px", type=float, default=0.2, help="satellite patch resolution (node parameter)")
    p.add_argument("--depth", action="store_true",
                   help="record the drive with /camera/depth (metric) and run the depth-prior sparse matcher "
                        "(the default sparse_depth_compact.pt) with use_depth; `make demo-depth`")
    p.add_argument("--no-panels", action="store_true",
                   help="skip the offline replay of the drive that gives the report its frame panels (the node's "
                        "published poses carry no matches); saves ~13 s on 2 idle CPU cores, minutes on a busy machine")
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    work: Path = args.dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    world_dir = work / f"world_{args.world_size_m:g}m_s{args.seed}"
    drive_dir = work / (f"drive_{args.world_size_m:g}m_{args.seconds:g}s_{args.width}x{args.height}_s{args.seed}"
                        + ("_depth" if args.depth else ""))
    ensure_world(world_dir, args.world_size_m, args.seed, args.world_zoom_max)
    ensure_drive(world_dir, drive_dir, args.seconds, args.width, args.height, args.seed, args.depth)
    t_data = time.perf_counter()

    from xview_localizer.sim.bag import TOPICS, read_sidecar

    side = read_sidecar(drive_dir)
    checkpoint = find_checkpoint(args.checkpoint)
    if args.matcher_factory:
        log(f"matcher: {args.matcher_factory} (matcher_factory, NOT a trained checkpoint)")
    elif checkpoint:
        log(f"matcher checkpoint: {checkpoint}")
    else:
        log("WARNING: no matcher checkpoint found (xview_localizer/checkpoints/*.pt, models/*.pt, --checkpoint, "
            "$XVIEW_DEMO_CHECKPOINT): the node will run with 'matcher unavailable' and publish no pose; the "
            "report then shows the GNSS-only baseline and 0 % availability")

    run_dir = work / "run"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir()
    port = free_port()
    domain_id = 30 + os.getpid() % 60
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "PYTHONUNBUFFERED": "1"}
    bin_dir = Path(sys.executable).parent
    tiles_log = (run_dir / "tile_server.log").open("w")
    server = subprocess.Popen([str(bin_dir / "xview-localizer"), "sim", "serve-tiles", str(world_dir), "--port",
                               str(port)], stdout=tiles_log, stderr=subprocess.STDOUT, env=env)
    tile_url = f"http://127.0.0.1:{port}/{{z}}/{{x}}/{{y}}.png"
    node_log = (run_dir / "node.log").open("w")
    params = {"use_sim_time": "true", "tile_url": tile_url, "tile_cache_dir": str(run_dir / "tile_cache"),
              "checkpoint_path": checkpoint or str(run_dir / "no_checkpoint.pt"), "device": "auto",
              "map_projection": "enu", "datum_lat_deg": repr(side["datum"]["lat_deg"]),
              "datum_lon_deg": repr(side["datum"]["lon_deg"]), "patch_m_per_px": repr(args.patch_m_per_px),
              "patch_size_px": str(args.patch_size_px),
              "base_frame": side["frames"]["base"], "odom_frame": side["frames"]["odom"]}
    if args.matcher_factory:
        params["matcher_factory"] = args.matcher_factory
    elif not checkpoint:  # no checkpoint anywhere: show the GNSS baseline rather than no demo at all
        params["allow_degraded_start"] = "true"
    if args.depth:
        params.update({"use_depth": "true", "depth_kind": "metric"})
    for item in args.node_param:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise SystemExit(f"demo: --node-param expects NAME:=VALUE, got {item!r}")
        params[name] = value
    cmd = [str(bin_dir / "localizer_node"), "--ros-args", "--params-file", str(REPO / "config" / "localizer.yaml")]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    for k, v in {"image": TOPICS["image"], "camera_info": TOPICS["camera_info"], "fix": TOPICS["fix"],
                 "odom": TOPICS["odom"], "pose": POSE_TOPIC, "depth": TOPICS["depth"]}.items():
        cmd += ["-r", f"{k}:={v}"]
    node = subprocess.Popen(cmd, stdout=node_log, stderr=subprocess.STDOUT, env=env)
    log(f"tile server pid {server.pid} on :{port}, localizer_node pid {node.pid} (ROS_DOMAIN_ID {domain_id})")
    rc_node = rc_server = None
    try:
        wait_http(f"http://127.0.0.1:{port}/0/0/0.png")
        msgs, types = load_drive(drive_dir, args.depth)
        published, received, diags = play_and_record(msgs, types, domain_id, args.rate, run_dir / "recorded",
                                                     ready_timeout_s=120.0)
        if node.poll() is not None:
            log(f"localizer_node exited early with status {node.returncode}; see {run_dir / 'node.log'}")
    finally:
        rc_node = stop(node, "localizer_node")
        rc_server = stop(server, "tile server")
        node_log.close()
        tiles_log.close()
    log(f"stopped localizer_node (exit {rc_node}) and the tile server (exit {rc_server}) with SIGINT")
    t_play = time.perf_counter()
    meta = {"demo": "synthetic world + drive played through DDS into localizer_node", "drive": str(drive_dir),
            "checkpoint": checkpoint or "(none found)", "matcher_factory": args.matcher_factory or None, "playback_rate": args.rate,
            "estimates": f"recorded {POSE_TOPIC} (run/recorded)", "map_frame_id": "map"}
    panels_from, panels_s = None, None
    if args.no_panels:
        meta["frame_panels"] = "none (--no-panels)"
    elif not (checkpoint or args.matcher_factory):
        meta["frame_panels"] = "none (no matcher checkpoint)"
    else:
        from xview_localizer.core.errors import XViewError
        from xview_localizer.evaluation.report import PanelSource

        log("replaying the drive offline (in-process, same matcher and parameters) for the report's frame panels ...")
        try:
            # The tile server is stopped by now: the replay reads the world's tiles directly.
            replayed, panels_s = replay_for_panels(drive_dir, params, side["tile_url"])
        except XViewError as exc:
            log(f"no frame panels: the offline replay failed: {exc}")
            meta["frame_panels"] = f"none (the offline replay failed: {exc})"
        else:
            import numpy as np

            n_acc = sum(f.accepted for f in replayed.frames)
            step_ms = np.array([1e3 * f.latency_s for f in replayed.frames if math.isfinite(f.latency_s)])
            log(f"offline replay: {n_acc} of {len(replayed.frames)} frames accepted in {panels_s:.1f} s"
                + (f" (core step p50 / p90 {np.percentile(step_ms, 50):.0f} / {np.percentile(step_ms, 90):.0f} ms)"
                   if step_ms.size else ""))
            panels_from = PanelSource(replayed, "offline replay", PANELS_NOTE, "node (DDS)")
            meta["frame_panels"] = ("offline replay of the same bag (in-process) with the same matcher and node "
                                    f"parameters ({panels_s:.1f} s; the node's published poses carry no matches)")
    t_panels = time.perf_counter()
    # The report's background map reads the world's tiles directly, too.
    report = build_report(drive_dir, run_dir / "recorded", work / "report", published, received, diags,
                          side["tile_url"], meta, panels_from)
    from xview_localizer.evaluation.report import format_summary

    t_end = time.perf_counter()
    print()
    print(format_summary(report))
    causes = report["meta"].get("node_rejection_causes_total") or {}
    if causes:
        print("node-reported causes (totals): " + ", ".join(f"{k}={v}" for k, v in causes.items()))
    if report.get("panels_from"):
        print(f"frame panels: {len(report['panels'])}, from the offline replay of the same bag "
              f"({report['panels_from']['run']['accepted']} of {report['panels_from']['run']['frames']} frames "
              "accepted there)")
    print(f"\ntimings: data {t_data - t_start:.0f} s, node + playback {t_play - t_data:.0f} s, panels replay "
          + (f"{t_panels - t_play:.0f} s" if panels_s is not None else "skipped")
          + f", report {t_end - t_panels:.0f} s, total {t_end - t_start:.0f} s")
    print(f"report: {work / 'report' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
