"""The evaluation report of one drive: numbers, a per-frame table, plots, frame panels and an
HTML page. This module is the public entry point; the work is split along its seams:

* :mod:`.report_data`: :class:`FrameRecord`, :class:`Track`, :class:`EvalData`;
* :mod:`.report_metrics`: the GNSS-only baseline, errors, the paper's metrics, NEES;
* :mod:`.report_files`: ``frames.csv``, TUM files, the evo rosbag2, :func:`frames_from_pose_bag`;
* :mod:`.report_map`: the satellite map in the map frame (via the tile patch sampler), scale bar;
* :mod:`.report_plots`: the PNG plots; :mod:`.report_panels`: the frame panels, drawn from the
  bounded per-frame snapshots of :mod:`.report_snapshots`;
* :mod:`.report_html`: ``index.html`` and the console summary table.

Input (:class:`EvalData`) is source-agnostic: the frames come either from an in-process
replay of a rosbag (:mod:`xview_localizer.evaluation.replay`, every frame with its outcome,
rejection reason, core latency and a snapshot for the panels) or from poses a running node
published and someone recorded (:func:`frames_from_pose_bag`, used by ``make demo``: a frame
without a recorded pose is ``not_published``; no snapshots of its own). The frame panels can come
from another run over the same drive (``EvalData.panels_from``, a :class:`PanelSource`): ``make
demo`` attaches an offline replay of the same bag with the same matcher and parameters, and the
panels then show that replay's estimate, errors and outcome per frame (each caption adds the
report's own outcome for the frame) while everything else stays the node's. Ground truth and GNSS
are :class:`Track` s in the SAME map frame as the estimates (x east-ish, y north-ish, metres
from the map datum; yaw about +z from +x).

:func:`write_report` writes into ``out_dir``:

* ``report.json``: the paper's metrics (:mod:`xview_localizer.train.metrics`) for xview and
  for the GNSS-only baseline on the same frames (accepted frames with ground truth), the
  baseline on all frames with ground truth, availability, rejected frames by reason, latency
  percentiles (ms), NEES (2-DoF position and 3-DoF pose, with the chi-square 95 % fraction),
  covariance statistics, the plots and the panels (``panels``: file, kind, stamp, errors);
* ``frames.csv``: one row per image frame (signed lateral / longitudinal / yaw errors of xview
  and GNSS, the 3x3 covariance, sigmas, NEES, latency);
* ``trajectory.png`` (metres east / north of the datum over the satellite map, scale bar),
  ``errors_time.png``, ``error_cdf.png`` (with ground truth) or ``covariance_time.png``
  (without), ``rejections_time.png``, ``latency_cdf.png``;
* ``panels/*.png``: the worst frames by position error, typical ones near the median and one
  example per frequent rejection reason (camera image, satellite patch with prior, estimate,
  truth and the matches coloured by confidence, the error numbers), of the report's own run or
  of ``panels_from`` (then ``report.json`` ``panels_from`` says what it is and sums up both runs);
* ``index.html``: the summary table first, then the plots and panels, then the detailed tables;
* ``poses/`` (rosbag2 mcap: ``/xview/pose`` PoseWithCovarianceStamped, ``/ground_truth/pose``
  and ``/gnss/pose`` PoseStamped) and ``xview.tum``, ``ground_truth.tum``, ``gnss.tum`` for
  ``evo``.

Lateral / longitudinal errors are across / along the ground-truth heading (as in the paper);
the GNSS-only baseline is described in :mod:`.report_metrics`.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .report_data import NS_PER_S, EvalData, FrameRecord, PanelSource, Track
from .report_files import frames_from_pose_bag, json_default, tum_lines, write_csv, write_pose_bag
from .report_html import format_summary, summary_rows, write_html
from .report_metrics import CHI2_95, FrameTable, compute_report, frame_table, gnss_baseline
from .report_panels import select_panel_frames, write_panels
from .report_plots import write_plots

__all__ = ["FrameRecord", "Track", "EvalData", "PanelSource", "compute_report", "write_report",
           "frames_from_pose_bag", "gnss_baseline", "CHI2_95", "format_summary", "summary_rows", "write_plots",
           "write_pose_bag", "FrameTable", "NS_PER_S"]

#: Panels per kind written by :func:`write_report` (worst, typical, rejected examples).
PANELS_WORST, PANELS_TYPICAL, PANELS_REJECTED = 6, 3, 3


def _panels_note(data: EvalData, n_frames: int, key_name: str) -> str:
    store = data.snapshots
    if store is None:
        return ("No frame panels: these estimates carry no per-frame snapshots (only an in-process replay, "
                "xview-localizer replay, keeps them; poses a node published carry none: make demo adds an "
                "offline replay of its bag for the panels unless --no-panels).")
    s = store.summary()
    return (f"Ranked by {key_name} among the {s['kept']} of {n_frames} frames with a snapshot "
            f"(snapshots {s['bytes'] / 2**20:.1f} MiB of a {s['max_bytes'] / 2**20:.0f} MiB budget; "
            f"{s['evicted']} thinned out).")


def _run_summary(t: FrameTable) -> dict:
    """Frames, accepted, availability and the accepted frames' position error (m) of one run."""
    n, acc = len(t.stamp_ns), int(t.accepted.sum())
    e = t.err["xy_m"][t.accepted & np.isfinite(t.err["xy_m"])]
    return {"frames": n, "accepted": acc, "availability": acc / n if n else None, "with_ground_truth": int(e.size),
            "xy_err_median_m": float(np.median(e)) if e.size else None,
            "xy_err_mean_m": float(np.mean(e)) if e.size else None}


def _panel_run(data: EvalData, t: FrameTable) -> tuple[EvalData, FrameTable, Optional[PanelSource]]:
    """(the run the panels are drawn from, its frame table, its PanelSource or None = ``data``)."""
    src = data.panels_from
    if src is None:
        return data, t, None
    if not src.data.frames:
        return src.data, t, src  # nothing to draw (its snapshots, if any, have no frames)
    return src.data, frame_table(src.data), src


def _add_main_outcome(entries: list[dict], t: FrameTable, main_label: str) -> None:
    """Add the report's own outcome of each panel's frame (``main_*`` keys, the caption's end)."""
    row = {int(s): i for i, s in enumerate(t.stamp_ns)}
    for e in entries:
        i = row.get(int(e["stamp_ns"]))
        if i is None:
            e.update(main_accepted=None, main_reason=None, main_err_xy_m=None)
            e["caption"] += f"; {main_label}: no frame at this stamp"
            continue
        err = float(t.err["xy_m"][i]) if t.accepted[i] and math.isfinite(t.err["xy_m"][i]) else None
        e.update(main_accepted=bool(t.accepted[i]), main_reason=t.reasons[i], main_err_xy_m=err)
        e["caption"] += (f"; {main_label}: " + ("accepted" if t.accepted[i] else f"rejected ({t.reasons[i]})")
                         + (f", position error {err:.2f} m" if err is not None else ""))


def write_report(data: EvalData, out_dir: Path, tile_cache: Any = None) -> dict:
    """Compute the report and write every file into ``out_dir`` (created; files in it are
    overwritten, an old ``panels/`` is replaced). ``tile_cache`` (a TileCache) draws the
    satellite map under the trajectory; None = built from ``data.tile_url`` when set.
    Returns the report dict (as in report.json)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report, t = compute_report(data)
    write_csv(t, out / "frames.csv")
    (out / "xview.tum").write_text(tum_lines(t.stamp_ns[t.accepted], t.est[t.accepted]))
    (out / "gnss.tum").write_text(tum_lines(t.stamp_ns, t.gnss))
    if report["has_ground_truth"]:
        (out / "ground_truth.tum").write_text(tum_lines(t.stamp_ns, t.gt))
    if (out / "poses").exists():
        shutil.rmtree(out / "poses")
    write_pose_bag(out / "poses", t, data, str(data.meta.get("map_frame_id", "map")))
    pdata, pt, source = _panel_run(data, t)
    choices = (select_panel_frames(pt, pdata.snapshots, PANELS_WORST, PANELS_TYPICAL, PANELS_REJECTED)
               if pdata.snapshots is not None and pdata.frames else [])
    row = {int(s): i for i, s in enumerate(t.stamp_ns)}  # the marks go on this report's trajectory
    marks = [{"index": row[c.stamp_ns], "kind": c.kind, "label": c.label} for c in choices if c.stamp_ns in row]
    report["plots"] = write_plots(t, data, report, out, tile_cache, marks)
    if (out / "panels").exists():
        shutil.rmtree(out / "panels")
    report["panels"] = write_panels(pt, pdata, out, choices, source.label if source is not None else "")
    key_name = choices[0].key_name if choices else "position error"
    report["panels_note"] = _panels_note(pdata, len(pt.stamp_ns) if pdata.frames else 0, key_name)
    report["panels_from"] = None
    if source is not None:
        _add_main_outcome(report["panels"], t, source.main_label)
        report["panels_from"] = {"label": source.label, "note": source.note, "main_label": source.main_label,
                                 "run": _run_summary(pt) if pdata.frames else None, "main": _run_summary(t)}
    report["snapshots"] = pdata.snapshots.summary() if pdata.snapshots is not None else None
    (out / "report.json").write_text(json.dumps(report, indent=2, default=json_default) + "\n")
    write_html(report, out / "index.html")
    return report
