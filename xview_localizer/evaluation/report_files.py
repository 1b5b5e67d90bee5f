"""The report's data files: ``frames.csv``, the TUM trajectories and the evo rosbag2 of poses,
and the reverse direction, frames from poses a node published and someone recorded.

All poses are in the map frame (x, y metres; yaw radians about +z from +x); stamps are
integer nanoseconds.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional

import numpy as np

from ..core.errors import BagError
from .report_data import NS_PER_S, EvalData, FrameRecord
from .report_metrics import FrameTable

__all__ = ["write_csv", "tum_lines", "write_pose_bag", "frames_from_pose_bag", "json_default"]


def _fmt(v: float, nd: int = 4) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.{nd}f}"


def write_csv(t: FrameTable, path: Path) -> None:
    t0 = int(t.stamp_ns[0])
    cols = ["stamp_ns", "t_s", "accepted", "reason", "est_x_m", "est_y_m", "est_yaw_deg", "gt_x_m", "gt_y_m",
            "gt_yaw_deg", "err_xy_m", "err_lateral_m", "err_longitudinal_m", "err_yaw_deg", "gnss_x_m", "gnss_y_m",
            "gnss_err_xy_m", "gnss_err_lateral_m", "gnss_err_longitudinal_m", "gnss_err_yaw_deg", "cov_xx_m2",
            "cov_xy_m2", "cov_yy_m2", "cov_xyaw_m_rad", "cov_yyaw_m_rad", "cov_yawyaw_rad2", "sigma_xy_m",
            "sigma_yaw_deg", "nees_2dof", "nees_3dof", "latency_ms"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for i in range(len(t.stamp_ns)):
            c = t.cov[i]
            deg = math.degrees
            w.writerow([
                int(t.stamp_ns[i]), f"{(int(t.stamp_ns[i]) - t0) / NS_PER_S:.3f}", int(t.accepted[i]), t.reasons[i],
                _fmt(t.est[i, 0]), _fmt(t.est[i, 1]), _fmt(deg(t.est[i, 2])), _fmt(t.gt[i, 0]), _fmt(t.gt[i, 1]),
                _fmt(deg(t.gt[i, 2])), _fmt(t.err["xy_m"][i]), _fmt(t.err["lateral_m"][i]),
                _fmt(t.err["longitudinal_m"][i]), _fmt(t.err["yaw_deg"][i]), _fmt(t.gnss[i, 0]), _fmt(t.gnss[i, 1]),
                _fmt(t.err_gnss["xy_m"][i]), _fmt(t.err_gnss["lateral_m"][i]),
                _fmt(t.err_gnss["longitudinal_m"][i]), _fmt(t.err_gnss["yaw_deg"][i]),
                _fmt(c[0, 0], 6), _fmt(c[0, 1], 6), _fmt(c[1, 1], 6), _fmt(c[0, 2], 6), _fmt(c[1, 2], 6),
                _fmt(c[2, 2], 8), _fmt(t.sigma_xy_m[i]), _fmt(t.sigma_yaw_deg[i]), _fmt(t.nees2[i]),
                _fmt(t.nees3[i]), _fmt(1e3 * t.latency_s[i], 2)])


def tum_lines(stamps_ns, xyz_yaw) -> str:
    lines = []
    for s, (x, y, yaw_map_rad) in zip(stamps_ns, xyz_yaw):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        yaw_map_rad = 0.0 if not math.isfinite(yaw_map_rad) else yaw_map_rad
        lines.append(f"{int(s) / NS_PER_S:.9f} {x:.6f} {y:.6f} 0.0 0.0 0.0 {math.sin(yaw_map_rad / 2):.9f} "
                     f"{math.cos(yaw_map_rad / 2):.9f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_pose_bag(out: Path, t: FrameTable, data: EvalData, map_frame: str = "map") -> Path:
    """``out`` = a new rosbag2 (mcap) with ``/xview/pose`` (PoseWithCovarianceStamped, the
    accepted estimates), ``/ground_truth/pose`` and ``/gnss/pose`` (PoseStamped, at the frame
    stamps) in ``map_frame``, for ``evo``."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    Time, Header = ts.types["builtin_interfaces/msg/Time"], ts.types["std_msgs/msg/Header"]
    Pose, Point = ts.types["geometry_msgs/msg/Pose"], ts.types["geometry_msgs/msg/Point"]
    Quat = ts.types["geometry_msgs/msg/Quaternion"]
    PoseStamped = ts.types["geometry_msgs/msg/PoseStamped"]
    PWCS = ts.types["geometry_msgs/msg/PoseWithCovarianceStamped"]
    PWC = ts.types["geometry_msgs/msg/PoseWithCovariance"]

    def header(s: int):
        return Header(stamp=Time(sec=int(s // NS_PER_S), nanosec=int(s % NS_PER_S)), frame_id=map_frame)

    def pose(x: float, y: float, yaw_map_rad: float):
        yaw_map_rad = 0.0 if not math.isfinite(yaw_map_rad) else yaw_map_rad
        return Pose(position=Point(x=float(x), y=float(y), z=0.0),
                    orientation=Quat(x=0.0, y=0.0, z=math.sin(yaw_map_rad / 2), w=math.cos(yaw_map_rad / 2)))

    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        c_est = writer.add_connection("/xview/pose", PWCS.__msgtype__, typestore=ts)
        c_gt = writer.add_connection("/ground_truth/pose", PoseStamped.__msgtype__, typestore=ts)
        c_gnss = writer.add_connection("/gnss/pose", PoseStamped.__msgtype__, typestore=ts)
        for i, s in enumerate(t.stamp_ns):
            s = int(s)
            if t.accepted[i]:
                c6 = np.zeros((6, 6))
                c6[2, 2] = c6[3, 3] = c6[4, 4] = 1e6
                c3 = t.cov[i] if np.all(np.isfinite(t.cov[i])) else np.diag([1e6, 1e6, 1e6])
                for a, ia in enumerate((0, 1, 5)):
                    for b, ib in enumerate((0, 1, 5)):
                        c6[ia, ib] = c3[a, b]
                msg = PWCS(header=header(s), pose=PWC(pose=pose(*t.est[i]), covariance=c6.reshape(-1)))
                writer.write(c_est, s, ts.serialize_cdr(msg, msg.__msgtype__))
            if np.all(np.isfinite(t.gt[i, :2])):
                msg = PoseStamped(header=header(s), pose=pose(*t.gt[i]))
                writer.write(c_gt, s, ts.serialize_cdr(msg, msg.__msgtype__))
            if np.all(np.isfinite(t.gnss[i, :2])):
                msg = PoseStamped(header=header(s), pose=pose(*t.gnss[i]))
                writer.write(c_gnss, s, ts.serialize_cdr(msg, msg.__msgtype__))
    finally:
        writer.close()
    return out

def json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)



def frames_from_pose_bag(bag: Path, topic: str, image_stamps_ns, latency_s_by_stamp: Optional[dict] = None
                         ) -> list[FrameRecord]:
    """Frames from poses a node published and someone recorded to a rosbag2: one
    :class:`FrameRecord` per image stamp, accepted where a ``PoseWithCovarianceStamped`` with
    that stamp was recorded on ``topic`` (x, y, yaw and the x/y/yaw covariance), else rejected
    ``not_published``. ``latency_s_by_stamp`` adds a latency per stamp.

    Raises:
        BagError: the bag cannot be read or has no ``topic`` (the message lists its topics).
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    lat = latency_s_by_stamp or {}
    poses: dict[int, tuple] = {}
    try:
        with AnyReader([Path(bag)], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
            conns = [c for c in reader.connections if c.topic == topic]
            if not conns:
                have = ", ".join(f"{c.topic} ({c.msgtype})" for c in reader.connections) or "none"
                raise BagError(f"{bag}: no topic {topic!r}; the bag has: {have}")
            for c, _, raw in reader.messages(connections=conns):
                m = reader.deserialize(raw, c.msgtype)
                s = int(m.header.stamp.sec) * NS_PER_S + int(m.header.stamp.nanosec)
                p, q = m.pose.pose.position, m.pose.pose.orientation
                yaw_map_rad = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
                c6 = np.asarray(m.pose.covariance, float).reshape(6, 6)
                idx = [0, 1, 5]
                poses[s] = (float(p.x), float(p.y), yaw_map_rad, c6[np.ix_(idx, idx)])
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for unreadable bags
        raise BagError(f"{bag}: cannot read the recorded poses: {exc}") from exc
    out = []
    for s in sorted(int(v) for v in image_stamps_ns):
        if s in poses:
            x, y, yaw, c = poses[s]
            out.append(FrameRecord(s, True, "", x, y, yaw, c, float(lat.get(s, float("nan")))))
        else:
            out.append(FrameRecord(s, False, "not_published"))
    return out
