"""``sim dataset``: training / evaluation pairs (ground image + depth + satellite patch with an
exact ground-truth offset) exported from synthetic worlds, in the ``xview-pairs/1`` layout
that :class:`xview_localizer.train.pairs.PairDataset` reads (documented in
docs/sim_drives.md).

Protocol (as for KITTI in the cross-view literature): the prior is the true position plus a
uniform offset of +-``offset_m`` in east and north; the satellite patch (north-up,
``sat_size_px`` square at ``sat_m_per_px``) is centred on the prior and cut from the world's
tile pyramid through :class:`~xview_localizer.tiles.cache.TileCache` (``file://`` URL), so it
is exactly what the node sees. The prior yaw is the true yaw plus uniform noise within
+-``yaw_range_deg`` (180 = unknown orientation).

Ground truth ``T_patch_base`` = the pose of ``base_link`` in the patch frame (ENU tangent
plane about the patch centre, x east, y north; docs/conventions.md), computed through WGS84
so it is exact for the patch georeference (:class:`~xview_localizer.tiles.patch.PatchGeoref`).

Cameras: the KITTI-like pinhole for classic worlds; for styled worlds one drawn per image
(:func:`~xview_localizer.sim.style.draw_ground_camera`: height, pitch, roll and field of view
from the pair's stream, the lens — undistorted, plumb_bob, fisheye or a 360-degree panorama of
the same image size — from a stream of its own, seeded by ``(seed, world seed, pair, 47)``).
Each record stores its camera model (:func:`~xview_localizer.train.pairs.camera_record`);
depth PNGs hold optical z for pinhole cameras and the range along the ray for panoramas.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ..core.errors import ConfigError, DatasetError
from ..core.se2 import SE2
from .drive import RoadNetwork

log = logging.getLogger(__name__)

__all__ = ["DatasetConfig", "PAIRS_FORMAT", "export_pairs", "sample_road_pose", "depth_to_png16", "png16_to_depth"]

PAIRS_FORMAT = "xview-pairs/1"
#: Seed convention: training worlds 1-999, held-out test worlds TEST_SEED_START and up.
TEST_SEED_START = 1001
#: Depth PNGs store optical-z depth in millimetres (uint16); 0 = invalid (no return or
#: beyond 65.535 m).
DEPTH_MM_MAX = 65535


@dataclass(frozen=True)
class DatasetConfig:
    """pairs: how many. offset_m: prior = truth + U(-offset_m, offset_m) in east and north.
    yaw_range_deg: prior yaw = true yaw + U(-range, range) (10 = KITTI protocol, 180 =
    unknown). sat_size_px / sat_m_per_px: the square satellite patch. width_px / height_px:
    ground images (the KITTI camera resized, ``PinholeCamera.kitti_like``). camera_height_m:
    above base_link. lane_jitter_m / heading_jitter_deg: uniform lateral jitter about the
    lane centre and yaw jitter about the road direction. seed: pose, prior and yaw noise."""

    pairs: int
    offset_m: float = 20.0
    yaw_range_deg: float = 10.0
    sat_size_px: int = 512
    sat_m_per_px: float = 0.2
    width_px: int = 1024
    height_px: int = 256
    camera_height_m: float = 1.65
    lane_jitter_m: float = 0.4
    heading_jitter_deg: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        def intin(name: str, lo: int, hi: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ConfigError(f"DatasetConfig.{name} must be an int in [{lo}, {hi}], got {v!r}")

        def numin(name: str, lo: float, hi: float) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and lo <= v <= hi):
                raise ConfigError(f"DatasetConfig.{name} must be a number in [{lo}, {hi}], got {v!r}")

        intin("pairs", 1, 10_000_000)
        intin("sat_size_px", 16, 4096)
        intin("width_px", 16, 8192)
        intin("height_px", 16, 8192)
        intin("seed", 0, 2**63 - 1)
        numin("offset_m", 0.0, 1000.0)
        numin("yaw_range_deg", 0.0, 180.0)
        numin("sat_m_per_px", 0.01, 10.0)
        numin("camera_height_m", 0.2, 10.0)
        numin("lane_jitter_m", 0.0, 5.0)
        numin("heading_jitter_deg", 0.0, 45.0)

    @property
    def margin_m(self) -> float:
        """Distance a true pose keeps from the world's edge so the patch stays inside it."""
        return self.offset_m + 0.5 * self.sat_size_px * self.sat_m_per_px + 2.0


def depth_to_png16(depth_m: np.ndarray) -> np.ndarray:
    """Metric depth (H, W) -> uint16 millimetres, 0 where invalid (<= 0, non-finite, too far)."""
    d = np.asarray(depth_m, dtype=np.float64)
    mm = np.where(np.isfinite(d) & (d > 0.0), np.round(d * 1000.0), 0.0)
    mm[mm > DEPTH_MM_MAX] = 0.0
    return mm.astype(np.uint16)


def png16_to_depth(mm: np.ndarray) -> np.ndarray:
    """uint16 millimetres -> float32 metres (0 = invalid)."""
    return np.asarray(mm, dtype=np.float32) / 1000.0


def sample_road_pose(net: RoadNetwork, rng: np.random.Generator, config: DatasetConfig,
                     max_tries: int = 1000) -> SE2:
    """A pose on a driving lane (either direction, any of its lanes) with yaw along the road,
    at least ``config.margin_m`` from the world's edge, on drivable ground."""
    roads = list(net.roads.values())
    lengths = np.array([net.lines[r.id].length_m for r in roads])
    half = net.world.half_size_m - config.margin_m
    if half <= 0:
        raise DatasetError(
            f"world of {net.world.size_m} m is too small for a {config.sat_size_px} px x "
            f"{config.sat_m_per_px} m/px patch with +-{config.offset_m} m prior offsets"
        )
    for _ in range(max_tries):
        road = roads[int(rng.choice(len(roads), p=lengths / lengths.sum()))]
        line = net.lines[road.id]
        s = float(rng.uniform(0.0, line.length_m))
        direction = 1 if rng.random() < 0.5 else -1
        lanes_per_side = max(1, int(road.lanes) // 2)
        k = int(rng.integers(lanes_per_side))
        offset = (k + 0.5) * road.width_m / max(1, int(road.lanes)) if road.lanes > 1 else 0.0
        offset += float(rng.uniform(-config.lane_jitter_m, config.lane_jitter_m))
        t = line.tangent(s) * direction
        xy = line.point(s) + offset * np.array([t[1], -t[0]])
        if np.any(np.abs(xy) > half) or not net.is_drivable(xy)[0]:
            continue
        yaw_rad = math.atan2(t[1], t[0]) + math.radians(float(rng.uniform(-config.heading_jitter_deg,
                                                                        config.heading_jitter_deg)))
        return SE2(float(xy[0]), float(xy[1]), yaw_rad)
    raise DatasetError(f"no valid road pose found in {max_tries} tries (world seed {net.world.config.seed})")


def patch_pose_from_map(world_enu, patch_enu, T_map_base: SE2, baseline_m: float = 10.0) -> SE2:
    """Re-express a ``T_map_base`` (world ENU about the datum) in another ENU tangent plane (the
    patch frame) exactly, through WGS84: position directly, yaw from a point ``baseline_m``
    ahead."""
    ahead = T_map_base.apply(np.array([[0.0, 0.0], [baseline_m, 0.0]]))
    lat, lon = world_enu.inverse(ahead[:, 0], ahead[:, 1])
    e, n = patch_enu.forward(np.asarray(lat), np.asarray(lon))
    e, n = np.asarray(e, float), np.asarray(n, float)
    return SE2(float(e[0]), float(n[0]), math.atan2(n[1] - n[0], e[1] - e[0]))


def _write_png(path: Path, img: np.ndarray) -> None:
    import cv2

    arr = img[:, :, ::-1] if img.ndim == 3 else img
    if not cv2.imwrite(str(path), np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise DatasetError(f"{path}: could not write image")


def export_pairs(
    world_dirs: Sequence[Path],
    out_dir: Path,
    config: DatasetConfig,
    *,
    progress: bool = True,
    device: str = "cpu",
    renderer_factory: Optional[Callable] = None,
) -> Path:
    """Export ``config.pairs`` pairs from the worlds (round robin) into ``out_dir`` (created,
    must be empty or new). Returns ``out_dir``. Each world directory must hold ``world.json``
    and ``tiles/{z}/{x}/{y}.png`` (``sim world`` writes both)."""
    from ..core.camera import PinholeCamera, kitti_like_T_base_camera
    from ..tiles.cache import TileCache
    from ..train.pairs import camera_record
    from .bag import world_tile_url
    from .lens import lens_kind
    from .world import World

    if not world_dirs:
        raise ConfigError("export_pairs needs at least one world directory")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out}: exists and is not empty; choose a new output directory")
    for sub in ("ground", "sat", "depth"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    camera = PinholeCamera.kitti_like(config.width_px, config.height_px)
    T_base_camera = kitti_like_T_base_camera(config.camera_height_m)
    from .style import (
        degrade,
        draw_ground_camera,
        ground_capture_world,
        ground_style_of,
        load_scene_style,
    )

    worlds = []
    seeds: list[int] = []
    tmp = tempfile.TemporaryDirectory(prefix="xview_pairs_tiles_")  # file sources keep no disk copy
    for d in world_dirs:
        d = Path(d)
        world = World.load(d)
        if not (d / "tiles").is_dir():
            raise DatasetError(f"{d}: no tiles/ folder (run `xview-localizer sim world` to write the pyramid)")
        if world.config.seed in seeds:
            log.warning("world seed %d appears twice in the world list (%s); its pairs are not independent",
                        world.config.seed, d)
        seeds.append(world.config.seed)
        style = load_scene_style(d)
        seen = world if style is None else ground_capture_world(world, style)
        if renderer_factory is None:
            from .ground import GroundRenderer

            renderer = GroundRenderer(seen, camera, T_base_camera, device=device,
                                      **({} if style is None else {"style": ground_style_of(style)}))
        else:
            renderer = renderer_factory(seen, camera, T_base_camera, device)
        cache = TileCache(world_tile_url(d), cache_dir=Path(tmp.name))
        worlds.append((d, world, RoadNetwork(world), renderer, cache, style))

    if any(s < TEST_SEED_START for s in seeds) and any(s >= TEST_SEED_START for s in seeds):
        log.warning("worlds mix the training (< %d) and test (>= %d) seed ranges: %s",
                    TEST_SEED_START, TEST_SEED_START, seeds)
    it = range(config.pairs)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="exporting pairs", unit="pair")
    T_bc = T_base_camera.reshape(-1).tolist()
    kinds: Counter = Counter()
    yaw_range = math.radians(config.yaw_range_deg)
    try:
        with open(out / "pairs.jsonl", "w") as fh:
            for i in it:
                d, world, net, renderer, cache, style = worlds[i % len(worlds)]
                rng = np.random.default_rng([config.seed, world.config.seed, i])
                T_map_base = sample_road_pose(net, rng, config)
                dx, dy = rng.uniform(-config.offset_m, config.offset_m, size=2)
                prior_lat, prior_lon = world.enu.inverse(T_map_base.x_m + dx, T_map_base.y_m + dy)
                prior_lat, prior_lon = float(prior_lat), float(prior_lon)
                sat_rgb, georef = cache.patch(prior_lat, prior_lon, config.sat_size_px, config.sat_m_per_px)
                T_patch_base = patch_pose_from_map(world.enu, georef.enu(), T_map_base)
                gt_lat, gt_lon = world.enu.inverse(T_map_base.x_m, T_map_base.y_m)
                prior_yaw = T_patch_base.yaw_rad + float(rng.uniform(-yaw_range, yaw_range))
                prior_yaw = (prior_yaw + math.pi) % (2 * math.pi) - math.pi
                rend, cam_i, T_bc_i = renderer, camera, T_bc
                if style is not None and hasattr(renderer, "with_camera"):
                    # styled worlds: a camera drawn per image (height, pitch, roll, field of view),
                    # its lens from a stream of its own (the pair's stream draws as without lenses)
                    lens_rng = np.random.default_rng([config.seed, world.config.seed, i, 47])
                    cam_i, T_i = draw_ground_camera(style.camera, config.width_px, config.height_px, rng, lens_rng)
                    rend = renderer.with_camera(cam_i, T_i)
                    T_bc_i = T_i.reshape(-1).tolist()
                cam_fields = camera_record(cam_i)
                kinds[lens_kind(cam_i)] += 1
                frame = rend.render(T_map_base)
                rgb = np.asarray(frame.rgb, np.uint8)
                if style is not None:
                    rgb = degrade(rgb, style.ground, rng)
                name = f"{i:06d}"
                _write_png(out / "ground" / f"{name}.png", rgb)
                _write_png(out / "depth" / f"{name}.png", depth_to_png16(frame.depth_m))
                _write_png(out / "sat" / f"{name}.png", np.asarray(sat_rgb, np.uint8))
                record = {
                    "id": name,
                    "world_seed": world.config.seed,
                    "ground": f"ground/{name}.png",
                    "depth": f"depth/{name}.png",
                    "sat": f"sat/{name}.png",
                    "K": cam_fields["K"],
                    "width_px": camera.width_px,
                    "height_px": camera.height_px,
                    "camera_model": cam_fields["camera_model"],
                    "distortion_model": cam_fields["distortion_model"],
                    "d": cam_fields["d"],
                    "T_base_camera": T_bc_i,
                    "style_family": style.family if style is not None else "classic",
                    "sat_m_per_px": config.sat_m_per_px,
                    "sat_size_px": config.sat_size_px,
                    "sat_center_lat_deg": prior_lat,
                    "sat_center_lon_deg": prior_lon,
                    "T_patch_base": [T_patch_base.x_m, T_patch_base.y_m, T_patch_base.yaw_rad],
                    "prior_yaw_rad": prior_yaw,
                    "gt_lat_deg": float(gt_lat),
                    "gt_lon_deg": float(gt_lon),
                    "T_map_base": [T_map_base.x_m, T_map_base.y_m, T_map_base.yaw_rad],
                    "sat_zoom": cache.zoom_for(prior_lat, config.sat_m_per_px),
                }
                fh.write(json.dumps(record) + "\n")
    finally:
        for entry in worlds:
            entry[4].close()
        tmp.cleanup()
    meta = {
        "format": PAIRS_FORMAT,
        "count": config.pairs,
        "worlds": seeds,
        "world_dirs": [str(Path(d).resolve()) for d in world_dirs],
        "offset_range_m": config.offset_m,
        "yaw_range_deg": config.yaw_range_deg,
        "sat_size_px": config.sat_size_px,
        "sat_m_per_px": config.sat_m_per_px,
        "ground_width_px": config.width_px,
        "ground_height_px": config.height_px,
        "camera_height_m": config.camera_height_m,
        "depth_encoding": "png16_mm",
        "depth_definition": "optical-frame z (pinhole cameras) or range along the ray (camera_model "
                            "equirectangular) in millimetres (uint16 PNG), 0 = invalid",
        "camera_models": dict(sorted(kinds.items())),
        "seed": config.seed,
        "frames": "T_patch_base: base_link in the patch frame (ENU about the patch centre); "
                  "T_map_base: base_link in the world's ENU frame about its datum",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def write_previews(pairs_dir: Path, out_dir: Path, count: int = 4) -> list[Path]:
    """Side-by-side PNGs of the first ``count`` pairs for eyeballing: the ground image (left)
    and the satellite patch (right) with the true pose (red dot + arrow, 8 m long) and the
    prior (yellow cross at the patch centre + arrow along the prior yaw). Returns the paths."""
    import cv2

    from ..train.pairs import PairDataset

    ds = PairDataset(pairs_dir, load_depth=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(count, len(ds))):
        s = ds[i]
        sat = s.sat_rgb.copy()
        g = s.georef
        x, y, yaw_rad = (float(v) for v in s.T_patch_base)
        arrow_m = 8.0
        pts = g.enu_to_px(np.array([[x, y], [x + arrow_m * math.cos(yaw_rad), y + arrow_m * math.sin(yaw_rad)],
                                    [0.0, 0.0], [arrow_m * math.cos(s.prior_yaw_rad),
                                                 arrow_m * math.sin(s.prior_yaw_rad)]]))
        p = [tuple(int(round(c)) for c in q) for q in pts]
        cv2.drawMarker(sat, p[2], (255, 220, 0), cv2.MARKER_CROSS, 14, 2)
        cv2.arrowedLine(sat, p[2], p[3], (255, 220, 0), 2, tipLength=0.25)
        cv2.circle(sat, p[0], 4, (255, 0, 0), -1)
        cv2.arrowedLine(sat, p[0], p[1], (255, 0, 0), 2, tipLength=0.25)
        ground = s.ground_rgb
        h = max(ground.shape[0], sat.shape[0])
        canvas = np.zeros((h, ground.shape[1] + sat.shape[1] + 8, 3), np.uint8)
        canvas[: ground.shape[0], : ground.shape[1]] = ground
        canvas[: sat.shape[0], ground.shape[1] + 8:] = sat
        path = out / f"pair_{s.id}.png"
        _write_png(path, canvas)
        paths.append(path)
    return paths
