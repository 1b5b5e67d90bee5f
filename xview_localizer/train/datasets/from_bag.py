"""Training pairs (``xview-pairs/1``, docs/sim_drives.md) from a user's own rosbag2 drive with
accurate poses (RTK-grade or ground truth) and a tile source: ``xview-localizer dataset
from-bag``.

What is read (rosbags ``AnyReader`` through :func:`xview_localizer.sim.bag.open_reader`, mcap or
sqlite3; messages decoded by the ROS-free :mod:`xview_localizer.pipeline.messages`):

* ``gt_topic``: ``geometry_msgs/PoseStamped``, ``PoseWithCovarianceStamped`` or
  ``nav_msgs/Odometry`` of ``base_link`` in the **map frame = the local ENU plane at the datum**
  (x east, y north). The datum comes from ``datum_lat_deg``/``datum_lon_deg`` or, for bags
  written by ``sim drive``, from their ``sim.yaml`` sidecar. The pose at an image stamp is
  interpolated linearly between the two bracketing samples (yaw on the circle); images with no
  sample within ``max_gt_gap_s`` on both sides are skipped.
* the image topic (``sensor_msgs/Image`` or ``CompressedImage``; auto-detected when ''), the
  ``CameraInfo`` topic (auto) and ``/tf_static`` (``base_link <- image frame``, chains composed).
  Distorted images are undistorted to the same ``K`` (OpenCV), so pairs are pinhole.

Per kept image (every ``stride``-th image, at least ``min_spacing_m`` apart) the **KITTI-protocol
perturbation** is drawn from a generator seeded by ``(seed, image index)``: prior position =
truth + U(-offset_range_m, offset_range_m) east and north, prior heading = true heading +
U(-yaw_range_deg, yaw_range_deg). The satellite patch (``sat_size_px``, ``sat_m_per_px``) is cut
around the prior through :class:`~xview_localizer.tiles.cache.TileCache` exactly as the node
does; ``T_patch_base`` is the truth in the patch frame (through WGS84). Depth PNGs are all
zero (no depth). ``world_seed`` is ``cfg.world_seed`` (0): give drives of different areas
different ids to keep ``check_disjoint_worlds`` meaningful.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ...core.errors import BagError, ConfigError, TileError, XViewError
from ...pipeline.messages import header_stamp_ns, quaternion_to_yaw_rad
from ..pairs import PAIRS_FORMAT
from ._common import offset_latlon, sample_rng

log = logging.getLogger(__name__)

__all__ = ["FromBagConfig", "export_pairs_from_bag", "POSE_TYPES"]

POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "nav_msgs/msg/Odometry")
_NS = 1_000_000_000


@dataclass(frozen=True)
class FromBagConfig:
    """Export settings (CLI flags of the same names)."""

    gt_topic: str
    image_topic: str = ""
    camera_info_topic: str = ""
    base_frame: str = "base_link"
    datum_lat_deg: Optional[float] = None
    datum_lon_deg: Optional[float] = None
    stride: int = 1
    min_spacing_m: float = 0.0
    max_pairs: int = 0
    max_gt_gap_s: float = 0.5
    offset_range_m: float = 20.0
    yaw_range_deg: float = 10.0
    sat_size_px: int = 512
    sat_m_per_px: float = 0.2
    ground_width_px: Optional[int] = None
    ground_height_px: Optional[int] = None
    world_seed: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.gt_topic:
            raise ConfigError("FromBagConfig.gt_topic must name the ground-truth pose topic")
        for name in ("stride", "sat_size_px"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"FromBagConfig.{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.max_pairs, bool) or not isinstance(self.max_pairs, int) or self.max_pairs < 0:
            raise ConfigError(f"FromBagConfig.max_pairs must be an integer >= 0, got {self.max_pairs!r}")
        for name, lo in (("min_spacing_m", 0.0), ("offset_range_m", 0.0), ("yaw_range_deg", 0.0)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= lo):
                raise ConfigError(f"FromBagConfig.{name} must be finite and >= {lo}, got {v!r}")
        for name in ("max_gt_gap_s", "sat_m_per_px"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"FromBagConfig.{name} must be finite and > 0, got {v!r}")
        if self.yaw_range_deg > 180.0:
            raise ConfigError(f"FromBagConfig.yaw_range_deg must be <= 180, got {self.yaw_range_deg}")
        if (self.datum_lat_deg is None) != (self.datum_lon_deg is None):
            raise ConfigError("FromBagConfig: give both datum_lat_deg and datum_lon_deg, or neither")
        if (self.ground_width_px is None) != (self.ground_height_px is None):
            raise ConfigError("FromBagConfig: give both ground_width_px and ground_height_px, or neither")


def _pose_xy_yaw(msg: Any, msgtype: str) -> Optional[tuple[float, float, float]]:
    pose = msg.pose if msgtype == "geometry_msgs/msg/PoseStamped" else msg.pose.pose
    p, q = pose.position, pose.orientation
    vals = (p.x, p.y, q.x, q.y, q.z, q.w)
    if not all(math.isfinite(v) for v in vals):
        return None
    return float(p.x), float(p.y), quaternion_to_yaw_rad(q)


class _GtTrack:
    """Sorted (stamp_ns, x, y, yaw) with interpolation at a stamp."""

    def __init__(self, rows: list[tuple[int, float, float, float]], max_gap_ns: int) -> None:
        rows = sorted(rows)
        self.t = np.array([r[0] for r in rows], dtype=np.int64)
        self.xyyaw = np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 3)
        self.max_gap_ns = max_gap_ns

    def at(self, stamp_ns: int) -> Optional[tuple[float, float, float]]:
        if self.t.size == 0:
            return None
        i = int(np.searchsorted(self.t, stamp_ns))
        if i < self.t.size and self.t[i] == stamp_ns:
            return tuple(self.xyyaw[i])  # type: ignore[return-value]
        if i == 0 or i == self.t.size:
            return None
        t0, t1 = int(self.t[i - 1]), int(self.t[i])
        if stamp_ns - t0 > self.max_gap_ns or t1 - stamp_ns > self.max_gap_ns:
            return None
        a = (stamp_ns - t0) / (t1 - t0)
        p0, p1 = self.xyyaw[i - 1], self.xyyaw[i]
        dyaw = math.remainder(p1[2] - p0[2], 2 * math.pi)
        return (p0[0] + a * (p1[0] - p0[0]), p0[1] + a * (p1[1] - p0[1]),
                math.remainder(p0[2] + a * dyaw, 2 * math.pi))


def _pick_topic(conns: dict[str, str], given: str, types: tuple[str, ...], what: str, bag: Path,
                avoid: tuple[str, ...] = ()) -> str:
    listing = ", ".join(f"{t} ({ty.rsplit('/', 1)[-1]})" for t, ty in sorted(conns.items()))
    if given:
        if given not in conns:
            raise BagError(f"{bag}: no {what} topic {given!r}; the bag has: {listing}")
        if conns[given] not in types:
            raise BagError(f"{bag}: {what} topic {given!r} has type {conns[given]}, expected one of {list(types)}")
        return given
    for ty in types:
        for topic in sorted(conns):
            if conns[topic] == ty and not any(h in topic.lower() for h in avoid):
                return topic
    raise BagError(f"{bag}: no {what} topic (types {list(types)}); the bag has: {listing}")


def _undistort(rgb: np.ndarray, camera: Any) -> np.ndarray:
    import cv2

    if camera.distortion_model == "none":
        return rgb
    if camera.distortion_model == "equidistant":
        return cv2.fisheye.undistortImage(rgb, camera.K, camera.D, Knew=camera.K)
    return cv2.undistort(rgb, camera.K, camera.D)


def export_pairs_from_bag(bag: str | Path, out: str | Path, tile_url: str, cfg: FromBagConfig,
                          cache_dir: Optional[Path] = None, tile_config: Any = None,
                          progress: bool = False) -> dict:
    """Write the pairs of ``bag`` to ``out`` (``xview-pairs/1``); returns a summary dict
    (``count``, ``skipped`` by reason, topics). Raises :class:`BagError` (unreadable bag,
    missing topics: the message lists the bag's topics), :class:`ConfigError` (no datum),
    :class:`DatasetError`-free: frames without a pose or tiles are skipped and counted."""
    import cv2

    from ...core.camera import PinholeCamera
    from ...core.geo import LocalEnu
    from ...pipeline import messages
    from ...sim.bag import open_reader, sidecar_of
    from ...tiles.cache import TileCache

    bag = Path(bag)
    out = Path(out)
    lat0, lon0 = cfg.datum_lat_deg, cfg.datum_lon_deg
    if lat0 is None:
        side = sidecar_of(bag)
        if side is None:
            raise ConfigError(f"{bag}: no datum: pass --datum LAT LON (the origin of the map frame of {cfg.gt_topic})")
        lat0, lon0 = float(side["datum"]["lat_deg"]), float(side["datum"]["lon_deg"])
    map_enu = LocalEnu(float(lat0), float(lon0))

    skipped: dict[str, int] = {}
    records: list[dict] = []
    with open_reader(bag) as reader:
        conns = {c.topic: c.msgtype for c in reader.connections}
        gt_topic = _pick_topic(conns, cfg.gt_topic, POSE_TYPES, "ground-truth", bag)
        image_topic = _pick_topic(conns, cfg.image_topic, ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"),
                                  "image", bag, avoid=("depth", "debug", "disparity", "mask", "seg"))
        info_topic = _pick_topic(conns, cfg.camera_info_topic, ("sensor_msgs/msg/CameraInfo",), "camera_info", bag)
        compressed = conns[image_topic].endswith("CompressedImage")
        # pass 1: ground truth, camera_info, tf_static
        rows: list[tuple[int, float, float, float]] = []
        tf = messages.StaticTfTree()
        camera = None
        first = [c for c in reader.connections if c.topic in (gt_topic, info_topic, "/tf_static")]
        for c, _t, raw in reader.messages(connections=first):
            msg = reader.deserialize(raw, c.msgtype)
            if c.topic == gt_topic:
                p = _pose_xy_yaw(msg, c.msgtype)
                if p is not None:
                    rows.append((header_stamp_ns(msg), *p))
            elif c.topic == info_topic:
                if camera is None:
                    try:
                        camera = messages.camera_info_to_camera(msg)
                    except XViewError as exc:
                        raise BagError(f"{bag}: {info_topic}: invalid camera_info: {exc}") from exc
            else:
                tf.add(msg)
        if camera is None:
            raise BagError(f"{bag}: {info_topic} has no messages")
        if not rows:
            raise BagError(f"{bag}: {gt_topic} has no valid poses")
        track = _GtTrack(rows, int(cfg.max_gt_gap_s * _NS))
        wpx = cfg.ground_width_px or camera.width_px
        hpx = cfg.ground_height_px or camera.height_px
        cam_out = camera if (wpx, hpx) == (camera.width_px, camera.height_px) else camera.resized(wpx, hpx)
        cam_out = PinholeCamera(wpx, hpx, cam_out.k)  # undistorted images: pinhole K only
        for sub in ("ground", "depth", "sat"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        zero_depth = np.zeros((hpx, wpx), np.uint16)
        tiles = TileCache(tile_url, cache_dir=cache_dir, config=tile_config)
        last_xy = None
        img_conns = [c for c in reader.connections if c.topic == image_topic]
        try:
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(desc="pairs", unit="img")
            for k, (c, _t, raw) in enumerate(reader.messages(connections=img_conns)):
                if bar is not None:
                    bar.update(1)
                if k % cfg.stride:
                    continue
                if cfg.max_pairs and len(records) >= cfg.max_pairs:
                    break
                msg = reader.deserialize(raw, c.msgtype)
                stamp = header_stamp_ns(msg)
                pose = track.at(stamp)
                if pose is None:
                    skipped["no_ground_truth"] = skipped.get("no_ground_truth", 0) + 1
                    continue
                x, y, yaw_rad = pose
                if last_xy is not None and math.hypot(x - last_xy[0], y - last_xy[1]) < cfg.min_spacing_m:
                    skipped["spacing"] = skipped.get("spacing", 0) + 1
                    continue
                T_bc = tf.lookup(cfg.base_frame, (msg.header.frame_id or "").lstrip("/"))
                if T_bc is None:
                    raise BagError(f"{bag}: /tf_static has no transform {cfg.base_frame} <- "
                                   f"{msg.header.frame_id!r} (the image frame)")
                rgb = messages.compressed_to_rgb8(msg) if compressed else messages.image_to_rgb8(msg)
                if (rgb.shape[1], rgb.shape[0]) != (camera.width_px, camera.height_px):
                    skipped["camera_info_mismatch"] = skipped.get("camera_info_mismatch", 0) + 1
                    continue
                rgb = _undistort(rgb, camera)
                if (wpx, hpx) != (rgb.shape[1], rgb.shape[0]):
                    rgb = cv2.resize(rgb, (wpx, hpx), interpolation=cv2.INTER_AREA)
                # truth in WGS84; heading through a point 1 m ahead (exact across tangent planes)
                gt_lat, gt_lon = (float(v) for v in map_enu.inverse(x, y))
                ah_lat, ah_lon = (float(v) for v in map_enu.inverse(x + math.cos(yaw_rad), y + math.sin(yaw_rad)))
                rng = sample_rng(cfg.seed, k, 0x42414721)
                de, dn = rng.uniform(-cfg.offset_range_m, cfg.offset_range_m, size=2) if cfg.offset_range_m else (0, 0)
                dyaw = math.radians(rng.uniform(-cfg.yaw_range_deg, cfg.yaw_range_deg)) if cfg.yaw_range_deg else 0.0
                p_lat, p_lon = offset_latlon(gt_lat, gt_lon, float(de), float(dn))
                try:
                    sat, georef = tiles.patch(p_lat, p_lon, cfg.sat_size_px, cfg.sat_m_per_px)
                except TileError as exc:
                    skipped["tiles"] = skipped.get("tiles", 0) + 1
                    log.warning("image %d: no satellite patch: %s", k, exc)
                    continue
                patch_enu = LocalEnu(georef.center_lat_deg, georef.center_lon_deg)
                px, py = (float(v) for v in patch_enu.forward(gt_lat, gt_lon))
                ax, ay = (float(v) for v in patch_enu.forward(ah_lat, ah_lon))
                yaw_patch = math.atan2(ay - py, ax - px)
                i = len(records)
                name = f"{i:06d}"
                cv2.imwrite(str(out / "ground" / f"{name}.png"), np.ascontiguousarray(rgb[:, :, ::-1]))
                cv2.imwrite(str(out / "depth" / f"{name}.png"), zero_depth)
                cv2.imwrite(str(out / "sat" / f"{name}.png"), np.ascontiguousarray(sat[:, :, ::-1]))
                records.append({
                    "id": name, "world_seed": cfg.world_seed,
                    "ground": f"ground/{name}.png", "depth": f"depth/{name}.png", "sat": f"sat/{name}.png",
                    "K": [float(v) for v in cam_out.k], "width_px": wpx, "height_px": hpx,
                    "T_base_camera": [float(v) for v in np.asarray(T_bc).reshape(-1)],
                    "sat_m_per_px": float(georef.m_per_px), "sat_size_px": cfg.sat_size_px,
                    "sat_center_lat_deg": float(georef.center_lat_deg),
                    "sat_center_lon_deg": float(georef.center_lon_deg),
                    "T_patch_base": [px, py, yaw_patch],
                    "prior_yaw_rad": math.remainder(yaw_patch + dyaw, 2 * math.pi),
                    "gt_lat_deg": gt_lat, "gt_lon_deg": gt_lon,
                    "T_map_base": [x, y, yaw_rad], "stamp_ns": stamp, "image_index": k,
                })
                last_xy = (x, y)
        finally:
            tiles.close()
            if progress and bar is not None:
                bar.close()
    with open(out / "pairs.jsonl", "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    meta = {
        "format": PAIRS_FORMAT, "count": len(records), "worlds": [cfg.world_seed],
        "offset_range_m": cfg.offset_range_m, "yaw_range_deg": cfg.yaw_range_deg,
        "sat_size_px": cfg.sat_size_px, "sat_m_per_px": cfg.sat_m_per_px,
        "ground_width_px": wpx, "ground_height_px": hpx, "depth_encoding": "png16_mm",
        "seed": cfg.seed, "source": "from-bag", "bag": str(bag), "tile_url": tile_url,
        "datum_lat_deg": float(lat0), "datum_lon_deg": float(lon0),
        "topics": {"image": image_topic, "camera_info": info_topic, "ground_truth": gt_topic},
        "config": asdict(cfg), "skipped": skipped,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return {"count": len(records), "skipped": skipped, "out": str(out), "topics": meta["topics"]}
