"""Frame panels: the worst frames, a few typical ones and examples of each rejection, each as
one PNG (camera image | satellite patch with prior, estimate, truth and the matches | the
numbers).

Selection (:func:`select_panel_frames`), among frames with a snapshot
(:mod:`.report_snapshots`): the ``n_worst`` accepted frames with the largest position error
against ground truth (without ground truth: the largest reported sigma xy), then the
``n_typical`` accepted frames whose value is nearest the median of ALL accepted frames, then
for the most frequent rejection reasons the middle (in time) frame of that reason, up to
``n_rejected``. The table and the snapshots are those of one run: the report's own, or the
other run of ``EvalData.panels_from`` (:class:`~.report_data.PanelSource`; ``make demo``: an
offline replay of the bag the node ran on), whose estimate, errors and outcome each panel then
shows.

Patch panel frame: metres east / north of the patch centre (true north up), the frame the
matcher's ``dst_xy_m`` live in. Map-frame poses (prior, truth) are carried into it exactly
through WGS84 (map -> lat/lon -> local ENU at the patch centre); headings through a second
point 5 m ahead. The estimate is the solver's ``T_patch_base``; "projected" points are the
ground points ``src_xy_m`` mapped by it (metric depth only).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .report_data import NS_PER_S, EvalData
from .report_map import add_scale_bar
from .report_metrics import FrameTable
from .report_snapshots import FrameSnapshot

__all__ = ["PanelChoice", "select_panel_frames", "write_panels", "map_pose_in_patch"]

_HEADING_STEP_M = 5.0


@dataclass(frozen=True)
class PanelChoice:
    """One chosen frame: row ``index`` of the :class:`FrameTable`, ``kind`` ('worst',
    'typical', 'rejected'), 1-based ``rank`` within its kind, the ranking quantity
    (``key_name``) and its value in metres (NaN for a rejected frame)."""

    index: int
    stamp_ns: int
    kind: str
    rank: int
    key_name: str
    key_value: float

    @property
    def label(self) -> str:
        return {"worst": "W", "typical": "T", "rejected": "R"}[self.kind] + str(self.rank)


def select_panel_frames(t: FrameTable, available_stamps: Any, n_worst: int = 6, n_typical: int = 3,
                        n_rejected: int = 3) -> list[PanelChoice]:
    """The frames to show (see the module docstring); ``available_stamps`` is a container of
    the stamps that have a snapshot."""
    have = np.array([int(s) in available_stamps for s in t.stamp_ns], bool)
    err = t.err["xy_m"]
    if np.any(t.accepted & np.isfinite(err)):
        key, key_name = err, "position error"
    else:
        key, key_name = t.sigma_xy_m, "reported sigma xy (no ground truth)"
    scored = t.accepted & np.isfinite(key)
    cand = np.flatnonzero(scored & have)
    out: list[PanelChoice] = []
    order = cand[np.lexsort((t.stamp_ns[cand], -key[cand]))]
    for r, i in enumerate(order[:n_worst]):
        out.append(PanelChoice(int(i), int(t.stamp_ns[i]), "worst", r + 1, key_name, float(key[i])))
    if np.any(scored):
        median = float(np.median(key[scored]))
        taken = {c.index for c in out}
        rest = np.array([i for i in cand if int(i) not in taken], int)
        if rest.size:
            near = rest[np.lexsort((t.stamp_ns[rest], np.abs(key[rest] - median)))]
            for r, i in enumerate(near[:n_typical]):
                out.append(PanelChoice(int(i), int(t.stamp_ns[i]), "typical", r + 1, key_name, float(key[i])))
    reasons = [r for a, r in zip(t.accepted, t.reasons) if not a]
    rank = 0
    for reason in sorted(set(reasons), key=lambda r: (-reasons.count(r), r)):
        if rank >= n_rejected:
            break
        rows = [i for i in range(len(t.reasons)) if not t.accepted[i] and t.reasons[i] == reason and have[i]]
        if rows:
            rank += 1
            i = rows[len(rows) // 2]
            out.append(PanelChoice(int(i), int(t.stamp_ns[i]), "rejected", rank, key_name, float(key[i])))
    return out


def map_pose_in_patch(proj: Any, georef: Any, x_m: float, y_m: float, yaw_map_rad: float = math.nan
                      ) -> tuple[float, float, float]:
    """(east_m, north_m, yaw_rad) in the patch frame of ``georef`` of a map-frame pose (yaw NaN
    stays NaN), through WGS84 (exact: UTM convergence and grid scale included)."""
    enu = georef.enu()

    def to_patch(x: float, y: float) -> tuple[float, float]:
        lat, lon = proj.inverse(x, y)
        e, n = enu.forward(lat, lon)
        return float(e), float(n)

    e0, n0 = to_patch(x_m, y_m)
    if not math.isfinite(yaw_map_rad):
        return e0, n0, math.nan
    e1, n1 = to_patch(x_m + _HEADING_STEP_M * math.cos(yaw_map_rad), y_m + _HEADING_STEP_M * math.sin(yaw_map_rad))
    return e0, n0, math.atan2(n1 - n0, e1 - e0)


def _fmt(v: float, unit: str, nd: int = 2) -> str:
    return f"{v:+.{nd}f} {unit}" if math.isfinite(v) else "n/a"


def _numbers(t: FrameTable, i: int, snap: FrameSnapshot) -> list[str]:
    acc = bool(t.accepted[i])
    lines = [f"t = {(int(t.stamp_ns[i]) - int(t.stamp_ns[0])) / NS_PER_S:.2f} s", f"stamp {int(t.stamp_ns[i])} ns", ""]
    if acc:
        lines.append("ACCEPTED")
    else:
        lines.append(f"REJECTED: {t.reasons[i]}")
        lines += ["  " + w for w in textwrap.wrap(t.details[i] or "", 34, max_lines=6, placeholder=" ...")]
    lines.append("")
    e = t.err
    if np.isfinite(e["xy_m"][i]):
        lines += [f"position error  {e['xy_m'][i]:.2f} m", f"  lateral       {_fmt(e['lateral_m'][i], 'm')}",
                  f"  longitudinal  {_fmt(e['longitudinal_m'][i], 'm')}", f"yaw error       {_fmt(e['yaw_deg'][i], 'deg')}"]
    elif acc:
        lines.append("no ground truth at this stamp")
    g = t.err_gnss
    if np.isfinite(g["xy_m"][i]):
        lines.append(f"GNSS error      {g['xy_m'][i]:.2f} m")
    if math.isfinite(t.sigma_xy_m[i]):
        lines.append(f"sigma xy / yaw  {t.sigma_xy_m[i]:.2f} m / {t.sigma_yaw_deg[i]:.2f} deg")
    if snap.n_matches:
        lines += [f"matches shown   {len(snap.weight)} of {snap.n_matches}", f"solver inliers  {snap.n_inliers}"]
    else:
        lines.append("no matches kept for this frame")
    return lines


def _arrow(ax: Any, e_m: float, n_m: float, yaw_patch_rad: float, colour: str, label: str, length_m: float) -> None:
    """A pose on the patch axes: a circle at (east, north) metres and, when the yaw (CCW from
    east, patch frame) is finite, an arrow ``length_m`` long along it."""
    ax.plot([e_m], [n_m], "o", ms=7, mfc="none", mec=colour, mew=2, label=label, zorder=5)
    if math.isfinite(yaw_patch_rad):
        ax.annotate("", (e_m + length_m * math.cos(yaw_patch_rad), n_m + length_m * math.sin(yaw_patch_rad)),
                    (e_m, n_m), zorder=5,
                    arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 2})


def _draw_patch(ax: Any, snap: FrameSnapshot, t: FrameTable, i: int, proj: Any) -> Optional[Any]:
    """Satellite patch with overlays on ``ax``; returns the scatter of the matches (colour bar) or None."""
    sat, g = snap.sat_rgb(), snap.georef
    if sat is None or g is None:
        ax.text(0.5, 0.5, "no satellite patch\n(the frame stopped before the tiles)", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
        return None
    half_w, half_h = 0.5 * g.width_px * g.m_per_px, 0.5 * g.height_px * g.m_per_px
    ax.imshow(sat, extent=(-half_w, half_w, -half_h, half_h), origin="upper", interpolation="bilinear")
    arrow_m = 0.08 * 2 * half_w
    sc = None
    if len(snap.weight):
        d, w, inl = snap.dst_xy_m, snap.weight, snap.inlier
        if snap.T_patch_base is not None and snap.scale_known:
            x_m, y_m, yaw_patch_base_rad = snap.T_patch_base
            c, s = math.cos(yaw_patch_base_rad), math.sin(yaw_patch_base_rad)
            p = np.column_stack([x_m + c * snap.src_xy_m[:, 0] - s * snap.src_xy_m[:, 1],
                                 y_m + s * snap.src_xy_m[:, 0] + c * snap.src_xy_m[:, 1]])
            ax.plot(p[:, 0], p[:, 1], ".", color="white", ms=2, alpha=0.7, label="ground points projected")
        sc = ax.scatter(d[inl, 0], d[inl, 1], c=w[inl], cmap="viridis", vmin=0.0, vmax=1.0, s=12, marker="o",
                        linewidths=0, label="matches (solver inliers)")
        if np.any(~inl):
            sc = ax.scatter(d[~inl, 0], d[~inl, 1], c=w[~inl], cmap="viridis", vmin=0.0, vmax=1.0, s=14, marker="x",
                            linewidths=1, label="matches (outliers)")
    if snap.prior_xy_m is not None:
        _arrow(ax, *map_pose_in_patch(proj, g, *snap.prior_xy_m, snap.prior_yaw_map_rad), "yellow", "GNSS prior",
               arrow_m)
    if snap.T_patch_base is not None:
        _arrow(ax, *snap.T_patch_base, "deepskyblue", "estimate", arrow_m)
    if np.all(np.isfinite(t.gt[i, :2])):
        _arrow(ax, *map_pose_in_patch(proj, g, t.gt[i, 0], t.gt[i, 1], t.gt[i, 2]), "lime", "ground truth", arrow_m)
    ax.set_xlim(-half_w, half_w)
    ax.set_ylim(-half_h, half_h)
    ax.set_xlabel("east of the patch centre (m)")
    ax.set_ylabel("north (m)")
    add_scale_bar(ax, 2 * half_w)
    ax.legend(loc="upper left", fontsize=7, framealpha=0.8)
    return sc


def _render(path: Path, snap: FrameSnapshot, t: FrameTable, choice: PanelChoice, proj: Any,
            source_label: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(14, 4.8))
    gs = fig.add_gridspec(1, 3, width_ratios=[1.45, 1.0, 0.62], wspace=0.22, left=0.01, right=0.99, top=0.88,
                          bottom=0.11)
    ax_g, ax_s, ax_t = fig.add_subplot(gs[0]), fig.add_subplot(gs[1]), fig.add_subplot(gs[2])
    ground = snap.ground_rgb()
    ax_g.imshow(ground)
    ax_g.set_title(f"camera image (shown at {ground.shape[1]}x{ground.shape[0]} px)", fontsize=9)
    ax_g.set_axis_off()
    sc = _draw_patch(ax_s, snap, t, choice.index, proj)
    if sc is not None:
        fig.colorbar(sc, ax=ax_s, fraction=0.046, pad=0.02, label="match confidence")
    ax_s.set_title("satellite patch (north up)", fontsize=9)
    ax_t.set_axis_off()
    ax_t.text(0.0, 1.0, "\n".join(_numbers(t, choice.index, snap)), va="top", ha="left", family="monospace",
              fontsize=8.5, transform=ax_t.transAxes)
    what = {"worst": "worst", "typical": "typical", "rejected": "rejected example"}[choice.kind]
    fig.suptitle(f"{choice.label}: {what} #{choice.rank}" + (f" — {choice.key_name} {choice.key_value:.2f} m"
                 if math.isfinite(choice.key_value) else "") + (f" ({source_label})" if source_label else ""),
                 fontsize=11)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_panels(t: FrameTable, data: EvalData, out: Path, choices: list[PanelChoice],
                 source_label: str = "") -> list[dict]:
    """Render ``choices`` into ``out/panels/``; returns one entry per panel (``file`` relative to
    ``out``, ``kind``, ``label``, ``index``, ``stamp_ns``, ``t_s``, ``accepted``, ``reason``,
    errors, ``caption``) for report.json and the page. ``t`` is the table of ``data`` (whose
    snapshots are drawn); ``source_label`` (e.g. "offline replay") names that run in each panel's
    title and caption ('' = the report's own run, not named)."""
    from ..pipeline.localizer import MapProjection

    if data.snapshots is None or not choices:
        return []
    proj = MapProjection(data.map_projection, data.datum_lat_deg, data.datum_lon_deg)
    (out / "panels").mkdir(exist_ok=True)
    entries = []
    for k, c in enumerate(choices):
        snap = data.snapshots.get(c.stamp_ns)
        if snap is None:
            continue
        name = f"panels/{k:02d}_{c.kind}_{c.stamp_ns}.png"
        _render(out / name, snap, t, c, proj, source_label)
        i = c.index
        t_s = (int(t.stamp_ns[i]) - int(t.stamp_ns[0])) / NS_PER_S

        def num(v: float) -> Optional[float]:
            return float(v) if math.isfinite(v) else None

        err = num(t.err["xy_m"][i])
        caption = (f"{c.label} at t = {t_s:.2f} s" + (f" ({source_label})" if source_label else "") + ": "
                   + ("accepted" if t.accepted[i] else f"rejected ({t.reasons[i]})")
                   + (f", position error {err:.2f} m" if err is not None else ""))
        entries.append({"file": name, "kind": c.kind, "label": c.label, "rank": c.rank, "index": i,
                        "stamp_ns": int(t.stamp_ns[i]), "t_s": t_s, "accepted": bool(t.accepted[i]),
                        "reason": t.reasons[i], "err_xy_m": err, "err_lateral_m": num(t.err["lateral_m"][i]),
                        "err_longitudinal_m": num(t.err["longitudinal_m"][i]), "err_yaw_deg": num(t.err["yaw_deg"][i]),
                        "caption": caption})
    return entries
