#!/usr/bin/env python3
"""Soak test of ``localizer_node``: a bounded synthetic stream at 10 Hz for a long time, the
node's resident memory sampled every ``--sample-s``.

The stream: a vehicle driving a circle (``--radius-m``, 50 m: one lap ~63 s at 5 m/s, looped) over a
folder of seeded random-texture tiles served by the real HTTP ``TileServer`` on 127.0.0.1;
``/clock`` (``use_sim_time``), odometry, NavSatFix, CameraInfo and 64x48 rgb8 images, stamps always
increasing. The node runs as its own process in its own ROS_DOMAIN_ID. By default its matcher is
the TEST DOUBLE ``localizer_doubles:make_prior_echo_matcher`` (test/ goes on its PYTHONPATH): the
soak measures the node's memory and queues, not a network's; ``--matcher-factory ''
--checkpoint PATH`` soaks a real checkpoint (slower than 10 Hz on a CPU: frames are dropped,
which is the point of latest-frame-only processing).

Printed and written as JSON (``--out``): the RSS series (s, MiB), the baseline (median of the
first three samples after ``--warmup-s``; keep the warm-up longer than a lap, so the tile cache
holds every tile of the loop), the largest growth over it after warm-up, and the
node's own counters from /diagnostics (images, frames processed and dropped, poses). Passes
(exit 0) when the growth is at most ``--max-growth`` (5 %), poses kept coming, the counters are
consistent (poses <= processed <= images; processed + dropped <= images) and the node exited 0
on SIGINT.

    python scripts/soak_node.py --duration-s 1800          # 30 min (the issue's soak)
    python scripts/soak_node.py --duration-s 180 --warmup-s 90 --out /tmp/soak.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
LAT0, LON0 = 52.5, 13.4
ZOOM = 18
RADIUS_M = 50.0
SPEED_MPS = 5.0
W, H = 64, 48


def rss_mib(pid: int) -> float:
    """Resident set size of a process (MiB) from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def write_tiles(root: Path, radius_m: float) -> Path:
    """Seeded random-texture PNG tiles covering the circle (and a margin) at ZOOM."""
    import cv2
    import numpy as np

    from xview_localizer.core.geo import LocalEnu, latlon_to_tile

    enu = LocalEnu(LAT0, LON0)
    r = radius_m + 150.0
    (lat_n, lon_w), (lat_s, lon_e) = enu.inverse(-r, r), enu.inverse(r, -r)
    x0, y0 = latlon_to_tile(float(lat_n), float(lon_w), ZOOM)
    x1, y1 = latlon_to_tile(float(lat_s), float(lon_e), ZOOM)
    rng = np.random.default_rng(0)
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            d = root / str(ZOOM) / str(x)
            d.mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            cv2.imwrite(str(d / f"{y}.png"), cv2.resize(small, (256, 256)))
    return root


def truth(t_s: float, radius_m: float) -> tuple[float, float, float]:
    """(east_m, north_m, yaw_rad) on the circle, counter-clockwise."""
    a = SPEED_MPS * t_s / radius_m
    return radius_m * math.cos(a), radius_m * math.sin(a), a + math.pi / 2


def run_soak(duration_s: float, rate_hz: float = 10.0, sample_s: float = 10.0, warmup_s: float = 90.0,
             domain_id: int = 190, matcher_factory: str = "localizer_doubles:make_prior_echo_matcher",
             checkpoint: str = "", max_growth: float = 0.05, progress: bool = True,
             radius_m: float = RADIUS_M) -> dict:
    """Run the soak (see the module docstring) and return the result dict."""
    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, NavSatFix, NavSatStatus

    from xview_localizer.core.geo import LocalEnu
    from xview_localizer.ros import conversions as conv
    from xview_localizer.tiles.server import TileServer

    tmp = Path(tempfile.mkdtemp(prefix="xvl_soak_"))
    server = TileServer(root=write_tiles(tmp / "tiles", radius_m), port=0).start()
    params = {"use_sim_time": "true", "tile_url": server.url_template(), "tile_cache_dir": str(tmp / "cache"),
              "matcher_factory": matcher_factory or '""', "checkpoint_path": checkpoint or '""', "patch_size_px": 128,
              "patch_m_per_px": 0.5, "datum_lat_deg": LAT0, "datum_lon_deg": LON0, "tf_static_wait_s": 0.0,
              "publish_tf": "false", "diagnostics_period_s": 1.0}
    script = Path(sys.executable).parent / "localizer_node"
    cmd = ([str(script)] if script.exists() else [sys.executable, "-m", "xview_localizer.ros.node"])
    cmd += ["--ros-args", "--params-file", str(REPO / "config" / "localizer.yaml")]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "test"), os.environ.get("PYTHONPATH", "")])}
    log_path = tmp / "node.log"
    log_file = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True)

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("xview_soak_feeder", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    pubs = {"clock": node.create_publisher(Clock, "/clock", 10), "image": node.create_publisher(Image, "image", 10),
            "info": node.create_publisher(CameraInfo, "camera_info", 10),
            "fix": node.create_publisher(NavSatFix, "fix", 10), "odom": node.create_publisher(Odometry, "odom", 10)}
    n_poses = [0]
    summary: dict = {}

    def on_diag(arr):
        for st in arr.status:
            if st.name == "xview_localizer: localization":
                summary.clear()
                summary.update({kv.key: kv.value for kv in st.values})

    node.create_subscription(PoseWithCovarianceStamped, "pose", lambda m: n_poses.__setitem__(0, n_poses[0] + 1), 10)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    enu = LocalEnu(LAT0, LON0)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8).tobytes()
    period_s = 1.0 / rate_hz
    series: list[tuple[float, float]] = []
    rc: Optional[int] = None
    try:
        t_wall0 = time.monotonic()
        while not (pubs["image"].get_subscription_count() and node.count_publishers("pose")):
            if proc.poll() is not None or time.monotonic() - t_wall0 > 60:
                raise RuntimeError(f"the node did not come up; log: {log_path}")
            executor.spin_once(timeout_sec=0.1)
        t_wall0 = time.monotonic()
        next_sample = 0.0
        k = 0
        while True:
            elapsed = time.monotonic() - t_wall0
            if elapsed >= duration_s:
                break
            if elapsed >= next_sample:
                series.append((round(elapsed, 1), round(rss_mib(proc.pid), 2)))
                next_sample += sample_s
                if progress:
                    print(f"t={elapsed:7.1f} s  rss={series[-1][1]:8.2f} MiB  poses={n_poses[0]}  "
                          f"dropped={summary.get('frames_dropped_total', '?')}", flush=True)
            k += 1
            t_s = 1000.0 + k * period_s
            stamp = conv.ns_to_stamp(int(round(t_s * 1e9)))
            e, n, yaw = truth(k * period_s, radius_m)
            pubs["clock"].publish(Clock(clock=stamp))
            odom = Odometry()
            odom.header.stamp, odom.header.frame_id, odom.child_frame_id = stamp, "odom", "base_link"
            odom.pose.pose.position.x, odom.pose.pose.position.y = e, n
            odom.pose.pose.orientation = conv.yaw_to_quaternion(yaw)
            pubs["odom"].publish(odom)
            lat, lon = enu.inverse(e + rng.normal(0, 0.5), n + rng.normal(0, 0.5))
            fix = NavSatFix(latitude=float(lat), longitude=float(lon), altitude=40.0,
                            position_covariance_type=NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN)
            fix.header.stamp, fix.header.frame_id = stamp, "gnss"
            fix.status.status = NavSatStatus.STATUS_FIX
            fix.position_covariance = [4.0, 0, 0, 0, 4.0, 0, 0, 0, 9.0]
            pubs["fix"].publish(fix)
            info = CameraInfo(width=W, height=H, distortion_model="plumb_bob")
            info.header.stamp, info.header.frame_id = stamp, "camera_optical"
            info.k = [50.0, 0.0, 31.5, 0.0, 50.0, 23.5, 0.0, 0.0, 1.0]
            info.d = [0.0] * 5
            pubs["info"].publish(info)
            img = Image(height=H, width=W, encoding="rgb8", step=W * 3, is_bigendian=0, data=rgb)
            img.header.stamp, img.header.frame_id = stamp, "camera_optical"
            pubs["image"].publish(img)
            end = t_wall0 + k * period_s
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=max(0.0, min(0.01, end - time.monotonic())))
        end = time.monotonic() + 1.5  # the last diagnostics
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        if proc.poll() is None:
            series.append((round(time.monotonic() - t_wall0, 1), round(rss_mib(proc.pid), 2)))
    finally:
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log_file.close()
        server.shutdown()
        for sub in ("tiles", "cache"):  # keep only the node's log
            shutil.rmtree(tmp / sub, ignore_errors=True)
    after = [r for t, r in series if t >= warmup_s]
    base = sorted(after[:3])[len(after[:3]) // 2] if after else float("nan")
    growth = (max(after) / base - 1.0) if after else float("nan")
    counts = {k: int(summary.get(f"{k}_total", -1)) for k in ("images", "frames_processed", "frames_dropped", "poses")}
    consistent = (0 <= counts["poses"] <= counts["frames_processed"] <= counts["images"]
                  and counts["frames_processed"] + counts["frames_dropped"] <= counts["images"])
    log_text = log_path.read_text()
    result = {
        "duration_s": duration_s, "rate_hz": rate_hz, "radius_m": radius_m, "sample_s": sample_s, "warmup_s": warmup_s,
        "matcher_factory": matcher_factory, "checkpoint": checkpoint,
        "rss_series_mib": series, "rss_baseline_mib": base, "rss_max_after_warmup_mib": max(after) if after else None,
        "rss_growth_after_warmup": growth, "max_growth": max_growth, "poses_received": n_poses[0],
        "node_counters": counts, "counters_consistent": consistent, "node_exit_code": rc,
        "traceback_in_log": "Traceback" in log_text, "node_log": str(log_path),
    }
    result["passed"] = bool(after and growth <= max_growth and n_poses[0] > 0 and consistent and rc == 0
                            and not result["traceback_in_log"])
    return result


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration-s", type=float, default=1800.0)
    p.add_argument("--rate-hz", type=float, default=10.0)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--warmup-s", type=float, default=90.0)
    p.add_argument("--radius-m", type=float, default=RADIUS_M, help="radius of the looped circle (m)")
    p.add_argument("--domain-id", type=int, default=190)
    p.add_argument("--matcher-factory", default="localizer_doubles:make_prior_echo_matcher")
    p.add_argument("--checkpoint", default="")
    p.add_argument("--max-growth", type=float, default=0.05, help="allowed RSS growth after warm-up (0.05 = 5 %%)")
    p.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    a = p.parse_args(argv)
    res = run_soak(a.duration_s, a.rate_hz, a.sample_s, a.warmup_s, a.domain_id, a.matcher_factory, a.checkpoint,
                   a.max_growth, radius_m=a.radius_m)
    print("RSS (s, MiB): " + ", ".join(f"{t:.0f}:{r:.1f}" for t, r in res["rss_series_mib"]))
    print(f"baseline {res['rss_baseline_mib']:.2f} MiB after {a.warmup_s:.0f} s warm-up, max after it "
          f"{res['rss_max_after_warmup_mib']:.2f} MiB: growth {100 * res['rss_growth_after_warmup']:+.2f} % "
          f"(allowed {100 * a.max_growth:.0f} %); poses {res['poses_received']}; node counters {res['node_counters']} "
          f"({'consistent' if res['counters_consistent'] else 'INCONSISTENT'}); exit {res['node_exit_code']}: "
          f"{'PASS' if res['passed'] else 'FAIL'}")
    if a.out is not None:
        a.out.write_text(json.dumps(res, indent=1))
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
