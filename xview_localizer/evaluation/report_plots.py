"""The report's plots (matplotlib, Agg backend selected inside :func:`write_plots`).

* ``trajectory.png``: ground truth, GNSS fixes, estimates and rejected frames in metres east /
  north of the map datum, over the satellite map (:mod:`.report_map`), with a scale bar; the
  frames shown as panels are numbered on it;
* ``errors_time.png``, ``error_cdf.png`` (with ground truth) or ``covariance_time.png``
  (without);
* ``rejections_time.png``: frames per time bin, accepted and rejected by reason, stacked;
* ``latency_cdf.png``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .report_data import NS_PER_S, EvalData
from .report_map import MapBackground, add_scale_bar, map_background
from .report_metrics import FrameTable

__all__ = ["write_plots", "draw_trajectory", "trajectory_points", "rejection_bins", "PLOT_CAPTIONS"]

#: One line under each plot in index.html.
PLOT_CAPTIONS = {
    "trajectory.png": "Trajectory in metres east / north of the map datum over the satellite map; numbered "
                      "markers are the frames shown as panels below.",
    "errors_time.png": "Errors over time: position error of xview and of GNSS alone, xview's signed lateral / "
                       "longitudinal error, yaw error.",
    "error_cdf.png": "Cumulative distributions of position and yaw error.",
    "covariance_time.png": "Without ground truth: reported sigmas and the distance to GNSS over time.",
    "rejections_time.png": "Frames per time bin: accepted (green) and rejected, stacked by reason.",
    "latency_cdf.png": "Latency distribution.",
}
_KIND_COLOURS = {"worst": "red", "typical": "white", "rejected": "magenta"}
_REASON_COLOURS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive",
                   "tab:cyan", "tab:blue", "black")


def trajectory_points(t: FrameTable, data: EvalData) -> np.ndarray:
    """(N, 2) every finite map position the trajectory plot shows (for its extent)."""
    pts = [a[np.all(np.isfinite(a[:, :2]), axis=1), :2] for a in (t.gt, t.gnss, t.est)]
    if len(data.gnss):
        pts.append(np.column_stack([data.gnss.x_m, data.gnss.y_m]))
    return np.concatenate([p for p in pts if len(p)] or [np.zeros((1, 2))])


def draw_trajectory(ax: Any, t: FrameTable, data: EvalData, bg: Optional[MapBackground], note: str,
                    marks: Sequence[dict] = ()) -> None:
    """Draw the trajectory on ``ax`` in map metres (data coordinates = metres east / north of
    the datum), ``bg`` beneath (its ``extent_m``), a scale bar, and ``marks`` (panel entries
    with ``index``, ``kind``, ``label``) at their ground-truth (else estimate, else GNSS)
    positions."""
    has_gt = bool(np.any(np.all(np.isfinite(t.gt[:, :2]), axis=1)))
    if bg is not None:
        ax.imshow(bg.rgb, extent=bg.extent_m, origin="upper", interpolation="bilinear", zorder=0)

    def draw(a: np.ndarray, mask: np.ndarray, **kw) -> None:
        sel = mask & np.all(np.isfinite(a[:, :2]), axis=1)
        if np.any(sel):
            ax.plot(a[sel, 0], a[sel, 1], **kw)

    anchor = np.where(np.all(np.isfinite(t.gt[:, :2]), axis=1)[:, None], t.gt, t.gnss)
    draw(anchor, ~t.accepted, color="red", ls="none", marker="x", ms=3, alpha=0.5, label="rejected frames")
    if has_gt:
        draw(t.gt, np.ones(len(t.stamp_ns), bool), color="lime", lw=1.5, label="ground truth")
    if len(data.gnss):
        g = np.column_stack([data.gnss.x_m, data.gnss.y_m, data.gnss.yaw_rad])
        draw(g, np.ones(len(g), bool), color="orange", ls="none", marker=".", ms=4, label="GNSS fixes")
    draw(t.est, t.accepted, color="deepskyblue", ls="none", marker="o", ms=4, markeredgecolor="k",
         markeredgewidth=0.5, label="xview estimates")
    for m in marks:
        i = int(m["index"])
        p = next((a[i, :2] for a in (t.gt, t.est, t.gnss) if np.all(np.isfinite(a[i, :2]))), None)
        if p is None:
            continue
        ax.annotate(m["label"], p, xytext=(6, 6), textcoords="offset points", fontsize=8, color="black",
                    bbox={"boxstyle": "round,pad=0.2", "fc": _KIND_COLOURS.get(m["kind"], "white"), "alpha": 0.85})
    if bg is not None:
        left, right, bottom, top = bg.extent_m
    else:
        pts = trajectory_points(t, data)
        (left, bottom), (right, top) = pts.min(axis=0) - 20.0, pts.max(axis=0) + 20.0
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    grid = "UTM grid " if data.map_projection == "utm" else ""
    ax.set_xlabel(f"{grid}east of the map datum (m)")
    ax.set_ylabel(f"{grid}north of the map datum (m)")
    add_scale_bar(ax, max(right - left, top - bottom))
    ax.set_title(f"trajectory ({note})", fontsize=9)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.85)


def rejection_bins(t: FrameTable, n_bins: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(edges_s (B+1,), {'accepted' or reason: frames per bin (B,)}, rel_s (N,)) of the frames
    over time since the first frame (``rel_s``); 'accepted' first, then the reasons by their
    total count. ``n_bins`` 0 = about one bin per 10 frames, between 10 and 60."""
    rel_s = (t.stamp_ns - t.stamp_ns[0]) / NS_PER_S
    n = len(rel_s)
    b = n_bins or int(min(60, max(10, n // 10)))
    span = float(rel_s[-1]) if n > 1 and rel_s[-1] > 0 else 1.0
    edges = np.linspace(0.0, span, b + 1)
    counts = {"accepted": np.histogram(rel_s[t.accepted], edges)[0]}
    reasons = [r for a, r in zip(t.accepted, t.reasons) if not a]
    for r in sorted(set(reasons), key=lambda r: (-reasons.count(r), r)):
        sel = np.array([(not a) and rr == r for a, rr in zip(t.accepted, t.reasons)])
        counts[r] = np.histogram(rel_s[sel], edges)[0]
    return edges, counts, rel_s


def _save(fig: Any, out: Any, name: str, names: list[str]) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    names.append(name)


def write_plots(t: FrameTable, data: EvalData, report: dict, out: Any, tile_cache: Any = None,
                marks: Sequence[dict] = ()) -> list[str]:
    """Write the PNG plots into ``out`` (a Path); returns their file names in page order."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names: list[str] = []
    rel_s = (t.stamp_ns - t.stamp_ns[0]) / NS_PER_S
    has_gt = bool(report["has_ground_truth"])
    rej = ~t.accepted

    pts = trajectory_points(t, data)
    bg, note = map_background(data, pts, tile_cache)
    if bg is not None:
        left, right, bottom, top = bg.extent_m
        aspect = (top - bottom) / max(right - left, 1e-6)
    else:
        span = np.ptp(pts, axis=0) + 40.0
        aspect = span[1] / span[0]
    fig, ax = plt.subplots(figsize=(10, float(np.clip(9.0 * aspect + 1.2, 4.0, 13.0))))
    draw_trajectory(ax, t, data, bg, note, marks)
    _save(fig, out, "trajectory.png", names)

    if has_gt:
        fig, axs = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
        axs[0].plot(rel_s, t.err_gnss["xy_m"], color="orange", lw=1, label="GNSS-only")
        axs[0].plot(rel_s[t.accepted], t.err["xy_m"][t.accepted], "o", color="deepskyblue", ms=3, label="xview")
        axs[0].plot(rel_s[rej], np.zeros(int(rej.sum())), "|", color="red", ms=8, label="rejected")
        axs[0].set_ylabel("position error (m)")
        axs[0].legend(loc="upper right")
        axs[1].plot(rel_s[t.accepted], t.err["lateral_m"][t.accepted], ".", ms=3, label="lateral")
        axs[1].plot(rel_s[t.accepted], t.err["longitudinal_m"][t.accepted], ".", ms=3, label="longitudinal")
        axs[1].axhline(0.0, color="k", lw=0.5)
        axs[1].set_ylabel("xview signed error (m)")
        axs[1].legend(loc="upper right")
        axs[2].plot(rel_s, t.err_gnss["yaw_deg"], color="orange", lw=1, label="GNSS course")
        axs[2].plot(rel_s[t.accepted], t.err["yaw_deg"][t.accepted], "o", color="deepskyblue", ms=3, label="xview")
        axs[2].set_ylabel("yaw error (deg)")
        axs[2].set_xlabel("time (s)")
        axs[2].legend(loc="upper right")
        _save(fig, out, "errors_time.png", names)

        same = t.accepted & np.all(np.isfinite(t.gt[:, :2]), axis=1)
        fig, axs = plt.subplots(1, 2, figsize=(12, 5))
        for ax_, key, unit in ((axs[0], "xy_m", "position error (m)"), (axs[1], "yaw_deg", "|yaw error| (deg)")):
            for label, e, mask, color in (("xview", t.err, same, "deepskyblue"),
                                          ("GNSS-only, same frames", t.err_gnss, same, "orange"),
                                          ("GNSS-only, all frames", t.err_gnss,
                                           np.all(np.isfinite(t.gt[:, :2]), axis=1), "grey")):
                v = np.sort(np.abs(e[key][mask]))
                v = v[np.isfinite(v)]
                if v.size:
                    ax_.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=color, label=label)
            ax_.set_xlabel(unit)
            ax_.set_ylabel("fraction of frames")
            ax_.grid(alpha=0.3)
            if ax_.get_legend_handles_labels()[0]:
                ax_.legend(loc="lower right")
            else:
                ax_.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax_.transAxes)
        _save(fig, out, "error_cdf.png", names)
    else:
        fig, axs = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
        axs[0].plot(rel_s[t.accepted], t.sigma_xy_m[t.accepted], "o", ms=3, label="sigma xy (largest axis)")
        d = np.hypot(*(t.est[:, :2] - t.gnss[:, :2]).T)
        axs[0].plot(rel_s[t.accepted], d[t.accepted], ".", ms=3, label="distance to GNSS")
        axs[0].plot(rel_s[rej], np.zeros(int(rej.sum())), "|", color="red", ms=8, label="rejected")
        axs[0].set_ylabel("m")
        axs[0].legend(loc="upper right")
        axs[1].plot(rel_s[t.accepted], t.sigma_yaw_deg[t.accepted], "o", ms=3, label="sigma yaw")
        axs[1].set_ylabel("deg")
        axs[1].set_xlabel("time (s)")
        axs[1].legend(loc="upper right")
        _save(fig, out, "covariance_time.png", names)

    edges, counts, _ = rejection_bins(t)
    fig, ax = plt.subplots(figsize=(11, 4))
    width, base = np.diff(edges), np.zeros(len(edges) - 1)
    for k, (label, c) in enumerate(counts.items()):
        colour = "tab:green" if label == "accepted" else _REASON_COLOURS[(k - 1) % len(_REASON_COLOURS)]
        ax.bar(edges[:-1], c, width=width, bottom=base, align="edge", color=colour, alpha=0.45 if k == 0 else 0.9,
               label=f"{label} ({int(c.sum())})", edgecolor="none")
        base = base + c
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"frames per {float(width[0]):.1f} s")
    ax.set_title("accepted and rejected frames over time" + ("" if len(counts) > 1 else " (no rejected frames)"),
                 fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    _save(fig, out, "rejections_time.png", names)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    v = np.sort(1e3 * t.latency_s[np.isfinite(t.latency_s)])
    if v.size:
        ax.step(v, np.arange(1, v.size + 1) / v.size, where="post")
    ax.set_xlabel(f"latency (ms): {data.latency_label}")
    ax.set_ylabel("fraction of frames")
    ax.grid(alpha=0.3)
    _save(fig, out, "latency_cdf.png", names)
    return names
