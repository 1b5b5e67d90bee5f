"""Route planning and path geometry of a drive: a random route over the
:class:`~.roads.RoadNetwork` turned into a list of path pieces (points, cruise speed, stops).

Model (docs/sim_drives.md): a random route over the road graph (right-hand traffic, no U-turns
at junctions, dead ends only when nothing else is left) is turned into a path: lane centre
lines (outermost lane on the right) joined at junctions by circular arcs whose radius is the
largest (up to ``turn_radius_max_m``) that keeps the whole arc on drivable ground (the world's
ground-class raster). :mod:`.trajectory` resamples, smooths and times the pieces.

Conventions: world frame (ENU metres); headings are unit vectors (x east, y north), turn angles
``theta`` are counter-clockwise positive radians; arc lengths ``s_m`` are centre-line metres of
the road a leg runs on. Everything is private to :mod:`xview_localizer.sim.drive`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import DriveConfig
from .roads import RoadNetwork, _right_of

#: Half the vehicle's width: junction arcs keep this clearance from non-drivable ground.
_HALF_WIDTH_M = 1.0


@dataclass
class _Leg:
    road_id: int
    direction: int  # +1 along the polyline, -1 against
    s_from: float
    s_to: float
    cruise_m_s: float


@dataclass
class _Junction:
    kind: str  # "turn" | "straight" | "uturn"
    junction_id: Optional[int]
    dwell_s: Optional[float]  # stop before the junction for this long; None = no stop


def _heading_angle(v: np.ndarray) -> float:
    return math.atan2(float(v[1]), float(v[0]))


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def _plan_route(net: RoadNetwork, cfg: DriveConfig, length_m: float, rng: np.random.Generator):
    """A random route of at least ``length_m``: legs along roads and the junctions between."""
    edges = net.edges()
    inner = [e for e in edges if not net.is_stub(*e) and
             abs(net.nodes[e[0]][e[1] + 1].s_m - net.nodes[e[0]][e[1]].s_m) > 20.0]
    pool = inner or edges
    rid, i = pool[int(rng.integers(len(pool)))]
    lst = net.nodes[rid]
    direction = 1 if rng.random() < 0.5 else -1
    a, b = lst[i].s_m, lst[i + 1].s_m
    s0 = a + (b - a) * float(rng.uniform(0.2, 0.5)) if direction > 0 else b - (b - a) * float(rng.uniform(0.2, 0.5))
    j = i + 1 if direction > 0 else i  # node we drive towards
    v_lo, v_hi = cfg.speed_range_m_s
    legs = [_Leg(rid, direction, s0, lst[j].s_m, float(rng.uniform(v_lo, v_hi)))]
    junctions: list[_Junction] = []
    total = abs(lst[j].s_m - s0)
    while total < length_m:
        leg = legs[-1]
        node = net.nodes[leg.road_id][j]
        if node.junction is None:  # dead end: U-turn
            legs_dir = -leg.direction
            j_next = j + legs_dir
            s_end = node.s_m
            junctions.append(_Junction("uturn", None, None))
            legs.append(_Leg(leg.road_id, legs_dir, s_end, net.nodes[leg.road_id][j_next].s_m,
                             float(rng.uniform(v_lo, v_hi))))
            total += abs(net.nodes[leg.road_id][j_next].s_m - s_end)
            j = j_next
            continue
        h_in = net.lines[leg.road_id].tangent(node.s_m) * leg.direction
        options = []
        for rid2 in net.intersections[node.junction].road_ids:
            j2 = net.node_index(rid2, node.junction)
            for d2 in (1, -1):
                k2 = j2 + d2
                if not 0 <= k2 < len(net.nodes[rid2]):
                    continue
                if rid2 == leg.road_id and d2 == -leg.direction:
                    continue
                h_out = net.lines[rid2].tangent(net.nodes[rid2][j2].s_m) * d2
                theta = _wrap(_heading_angle(h_out) - _heading_angle(h_in))
                if abs(theta) > math.radians(150):
                    continue
                dead = net.nodes[rid2][k2].junction is None
                options.append((rid2, d2, j2, k2, theta, dead))
        live = [o for o in options if not o[5]] or options
        if not live:  # nowhere to go but back
            junctions.append(_Junction("uturn", None, None))
            legs.append(_Leg(leg.road_id, -leg.direction, node.s_m,
                             net.nodes[leg.road_id][j - leg.direction].s_m, float(rng.uniform(v_lo, v_hi))))
            total += abs(legs[-1].s_to - legs[-1].s_from)
            j = j - leg.direction
            continue
        straight = [o for o in live if abs(o[4]) < math.radians(30)]
        turns = [o for o in live if abs(o[4]) >= math.radians(30)]
        if straight and (not turns or rng.random() < cfg.straight_probability):
            choice = straight[int(rng.integers(len(straight)))]
        else:
            choice = turns[int(rng.integers(len(turns)))]
        rid2, d2, j2, k2, theta, _dead = choice
        stop = float(rng.uniform(*cfg.stop_duration_range_s)) if rng.random() < cfg.stop_probability else None
        seg = abs(net.nodes[rid2][k2].s_m - net.nodes[rid2][j2].s_m)
        if rid2 == leg.road_id and d2 == leg.direction and stop is None:
            leg.s_to = net.nodes[rid2][k2].s_m  # straight on along the same road: extend
        else:
            kind = "straight" if abs(theta) < math.radians(15) else "turn"
            junctions.append(_Junction(kind, node.junction, stop))
            legs.append(_Leg(rid2, d2, net.nodes[rid2][j2].s_m, net.nodes[rid2][k2].s_m,
                             float(rng.uniform(v_lo, v_hi))))
        total += seg
        j = k2
    return legs, junctions


def _line_intersection(p: np.ndarray, u: np.ndarray, q: np.ndarray, w: np.ndarray) -> Optional[np.ndarray]:
    """Intersection of lines p + a u and q + b w (None when parallel)."""
    m = np.array([[u[0], -w[0]], [u[1], -w[1]]])
    if abs(np.linalg.det(m)) < 1e-6:
        return None
    a, _b = np.linalg.solve(m, q - p)
    return p + a * u


def _arc_points(entry: np.ndarray, h_in: np.ndarray, radius_m: float, theta_rad: float,
                step_m: float = 0.25) -> np.ndarray:
    """Points of a circular arc starting at ``entry`` heading ``h_in``, turning by
    ``theta_rad`` (CCW positive) with ``radius_m``; (M, 2), entry excluded."""
    left = np.array([-h_in[1], h_in[0]])
    sign = 1.0 if theta_rad > 0 else -1.0
    centre = entry + sign * radius_m * left
    arc_len = radius_m * abs(theta_rad)
    n = max(2, int(math.ceil(arc_len / step_m)))
    phi = np.linspace(0.0, theta_rad, n + 1)[1:]
    start = entry - centre
    c, s = np.cos(phi), np.sin(phi)
    return centre + np.stack([c * start[0] - s * start[1], s * start[0] + c * start[1]], axis=1)


@dataclass
class _PathPiece:
    pts: np.ndarray
    cruise_m_s: float
    stop_dwell_s: Optional[float] = None  # stop at the END of this piece


@dataclass
class _Connector:
    """How leg a ends and leg b starts at a junction: trims (centre-line metres cut from the
    end of a / start of b), the connecting points, the extra distance of the stop line before
    the end of a, and the swing (metres towards the road centre) both lanes ramp into."""

    trim_a: float
    trim_b: float
    pts: np.ndarray
    stop_extra: float
    swing_m: float = 0.0


def _arc_fits(net: RoadNetwork, entry: np.ndarray, h_in: np.ndarray, radius: float, theta: float) -> bool:
    """The vehicle's footprint (+-half width about the arc) stays on drivable ground."""
    left = np.array([-h_in[1], h_in[0]])
    footprint = [np.vstack([entry + side * left,
                            _arc_points(entry + side * left, h_in, radius - side * np.sign(theta), theta)])
                 for side in (-_HALF_WIDTH_M, _HALF_WIDTH_M)]
    return bool(net.is_drivable(np.vstack(footprint)).all())


def _junction_connector(net: RoadNetwork, cfg: DriveConfig, leg_a: _Leg, leg_b: _Leg,
                        junction: _Junction) -> _Connector:
    """The arc (or straight join, or U-turn) from the end of leg a to the start of leg b.

    Turns are circular arcs tangent to the two lanes. Right turns at tight corners may swing
    out: both lane lines are shifted towards the road centre by up to ``offset - 1.2 m`` (the
    legs ramp into the shift), whichever swing allows the largest radius that fits."""
    line_a, line_b = net.lines[leg_a.road_id], net.lines[leg_b.road_id]
    s_a, s_b = leg_a.s_to, leg_b.s_from
    h_in = line_a.tangent(s_a) * leg_a.direction
    h_out = line_b.tangent(s_b) * leg_b.direction
    o_a, o_b = net.lane_offset_m(leg_a.road_id), net.lane_offset_m(leg_b.road_id)

    if junction.kind == "uturn":
        # Half circle from the right lane to the opposite lane, near the road's end.
        trim = 2.0 + o_a
        entry = line_a.point(s_a - leg_a.direction * trim) + o_a * _right_of(h_in)
        return _Connector(trim, trim, _arc_points(entry, h_in, max(o_a, 1.0), math.pi), 0.0)

    theta = _wrap(_heading_angle(h_out) - _heading_angle(h_in))
    wa = net.roads[leg_a.road_id].width_m
    wb = net.roads[leg_b.road_id].width_m
    inter = net.intersections.get(junction.junction_id) if junction.junction_id is not None else None
    junction_r = max(float(getattr(inter, "radius_m", 0.0) or 0.0), 0.5 * max(wa, wb))
    stop_back = junction_r + 1.5
    if abs(theta) < math.radians(15):
        # (nearly) straight: trim both sides to the junction edge, join straight
        return _Connector(junction_r, junction_r, np.zeros((0, 2)), max(stop_back - junction_r, 0.0))
    r_lo, r_hi = cfg.turn_radius_range_m
    max_swing = max(0.0, min(o_a, o_b) - 1.2) if theta < 0 else 0.0
    best = None  # (radius, swing, px, tan_len, pts)
    for swing in np.arange(0.0, max_swing + 1e-9, 0.5):
        p_a = line_a.point(s_a) + (o_a - swing) * _right_of(h_in)
        p_b = line_b.point(s_b) + (o_b - swing) * _right_of(h_out)
        px = _line_intersection(p_a, h_in, p_b, h_out)
        if px is None:
            continue
        for radius in np.arange(r_hi, r_lo - 1e-9, -0.5):
            if best is not None and radius <= best[0]:
                break
            tan_len = float(radius * math.tan(abs(theta) / 2.0))
            entry = px - h_in * tan_len
            if _arc_fits(net, entry, h_in, float(radius), theta):
                best = (float(radius), float(swing), px, tan_len, _arc_points(entry, h_in, float(radius), theta))
                break
        if best is not None and best[0] >= r_hi:
            break
    if best is None:  # nothing fits: the tightest arc on the lanes themselves
        p_a = line_a.point(s_a) + o_a * _right_of(h_in)
        p_b = line_b.point(s_b) + o_b * _right_of(h_out)
        px = _line_intersection(p_a, h_in, p_b, h_out)
        if px is None:
            return _Connector(junction_r, junction_r, np.zeros((0, 2)), max(stop_back - junction_r, 0.0))
        tan_len = float(r_lo * math.tan(abs(theta) / 2.0))
        best = (r_lo, 0.0, px, tan_len, _arc_points(px - h_in * tan_len, h_in, r_lo, theta))
    _radius, swing, px, tan_len, pts = best
    # trims in centre-line metres from the junction's (shifted) lane points back to the arc's
    # entry (leg a) and on to its exit (leg b)
    p_a = line_a.point(s_a) + (o_a - swing) * _right_of(h_in)
    p_b = line_b.point(s_b) + (o_b - swing) * _right_of(h_out)
    trim_a = tan_len - float(np.dot(px - p_a, h_in))
    trim_b = tan_len + float(np.dot(px - p_b, h_out))
    return _Connector(trim_a, trim_b, pts, max(stop_back - trim_a, 0.0), swing)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _build_path(net: RoadNetwork, cfg: DriveConfig, legs: list[_Leg], junctions: list[_Junction]):
    """Concatenate legs and connectors into pieces (points + cruise speed + stops)."""
    conns = [_junction_connector(net, cfg, legs[k], legs[k + 1], j) for k, j in enumerate(junctions)]
    pieces: list[_PathPiece] = []
    for k, leg in enumerate(legs):
        before_c = conns[k - 1] if k > 0 else None
        after_c = conns[k] if k < len(conns) else None
        s_from = leg.s_from + leg.direction * (before_c.trim_b if before_c else 0.0)
        s_to = leg.s_to - leg.direction * (after_c.trim_a if after_c else 0.0)
        o = net.lane_offset_m(leg.road_id)
        swing_in = before_c.swing_m if before_c else 0.0
        swing_out = after_c.swing_m if after_c else 0.0

        def offset(s, s_from=s_from, s_to=s_to, o=o, swing_in=swing_in, swing_out=swing_out, d=leg.direction):
            """Lane offset along the leg: ramps into the swings of the adjacent turns."""
            ramp_in = max(8.0, 6.0 * swing_in)
            ramp_out = max(8.0, 6.0 * swing_out)
            w_in = swing_in * _smoothstep(1.0 - (s - s_from) * d / ramp_in)
            w_out = swing_out * _smoothstep(1.0 - (s_to - s) * d / ramp_out)
            return o - np.maximum(w_in, w_out)

        long_enough = (s_to - s_from) * leg.direction > 0.5
        pts = net.lane_points(leg.road_id, leg.direction, s_from, s_to if long_enough else s_from, offset)
        if not long_enough:
            pts = pts[:1]
        if after_c is not None:
            junction = junctions[k]
            stop_extra = after_c.stop_extra
            if junction.dwell_s is not None and stop_extra > 0.0 and (s_to - s_from) * leg.direction > stop_extra + 0.5:
                s_stop = s_to - leg.direction * stop_extra
                before = net.lane_points(leg.road_id, leg.direction, s_from, s_stop, offset)
                after = net.lane_points(leg.road_id, leg.direction, s_stop, s_to, offset)[1:]
                pieces.append(_PathPiece(before, leg.cruise_m_s, junction.dwell_s))
                pieces.append(_PathPiece(after, leg.cruise_m_s))
            else:
                pieces.append(_PathPiece(pts, leg.cruise_m_s, junction.dwell_s))
            if len(after_c.pts):
                pieces.append(_PathPiece(after_c.pts, min(leg.cruise_m_s, legs[k + 1].cruise_m_s)))
        else:
            pieces.append(_PathPiece(pts, leg.cruise_m_s))
    return pieces
