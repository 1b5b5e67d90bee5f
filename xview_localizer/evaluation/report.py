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
without a recorded pose is ``not_published``; no snapshots, so no panels). Ground truth and GNSS
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
  truth and the matches coloured by confidence, the error numbers);
* ``index.html``: the summary table first, then the plots and panels, then the detailed tables;
* ``poses/`` (rosbag2 mcap: ``/xview/pose`` PoseWithCovarianceStamped, ``/ground_truth/pose``
  and ``/gnss/pose`` PoseStamped) and ``xview.tum``, ``ground_truth.tum``, ``gnss.tum`` for
  ``evo``.

Lateral / longitudinal errors are across / along the ground-truth heading (as in the paper);
the GNSS-only baseline is described in :mod:`.report_metrics`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .report_data import NS_PER_S, EvalData, FrameRecord, Track
from .report_files import frames_from_pose_bag, json_default, tum_lines, write_csv, write_pose_bag
from .report_html import format_summary, summary_rows, write_html
from .report_metrics import CHI2_95, FrameTable, compute_report, gnss_baseline
from .report_panels import select_panel_frames, write_panels
from .report_plots import write_plots

__all__ = ["FrameRecord", "Track", "EvalData", "compute_report", "write_report", "frames_from_pose_bag",
           "gnss_baseline", "CHI2_95", "format_summary", "summary_rows", "write_plots", "write_pose_bag",
           "FrameTable", "NS_PER_S"]

#: Panels per kind written by :func:`write_report` (worst, typical, rejected examples).
PANELS_WORST, PANELS_TYPICAL, PANELS_REJECTED = 6, 3, 3


def _panels_note(data: EvalData, n_frames: int, key_name: str) -> str:
    store = data.snapshots
    if store is None:
        return ("No frame panels: these estimates carry no per-frame snapshots (only an in-process replay, "
                "xview-localizer replay, keeps them; e.g. make demo reads the poses a node published).")
    s = store.summary()
    return (f"Ranked by {key_name} among the {s['kept']} of {n_frames} frames with a snapshot "
            f"(snapshots {s['bytes'] / 2**20:.1f} MiB of a {s['max_bytes'] / 2**20:.0f} MiB budget; "
            f"{s['evicted']} thinned out).")


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
    choices = (select_panel_frames(t, data.snapshots, PANELS_WORST, PANELS_TYPICAL, PANELS_REJECTED)
               if data.snapshots is not None else [])
    marks = [{"index": c.index, "kind": c.kind, "label": c.label} for c in choices]
    report["plots"] = write_plots(t, data, report, out, tile_cache, marks)
    if (out / "panels").exists():
        shutil.rmtree(out / "panels")
    report["panels"] = write_panels(t, data, out, choices)
    key_name = choices[0].key_name if choices else "position error"
    report["panels_note"] = _panels_note(data, len(t.stamp_ns), key_name)
    report["snapshots"] = data.snapshots.summary() if data.snapshots is not None else None
    (out / "report.json").write_text(json.dumps(report, indent=2, default=json_default) + "\n")
    write_html(report, out / "index.html")
    return report
