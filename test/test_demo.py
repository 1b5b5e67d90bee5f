"""``scripts/demo.py`` (``make demo``) end to end at toy size: world, drive, tile server and
``localizer_node`` as separate processes, playback through DDS, recording, the offline replay
of the drive for the frame panels, report.

The node's matcher is the labelled TEST DOUBLE ``localizer_doubles:make_prior_echo_matcher``
(poses at the GNSS prior) passed with ``--matcher-factory``: this tests the demo's plumbing,
not a trained matcher.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from report_fixtures import image_sources

pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs not built (scripts/build_tf2_msgs.sh)")
pytestmark = pytest.mark.ros
REPO = Path(__file__).resolve().parents[1]


def test_demo_pipeline_at_toy_size(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "test"), os.environ.get("PYTHONPATH", "")]),
           "XVIEW_TILE_CACHE": str(tmp_path / "tile_cache")}
    cmd = [sys.executable, str(REPO / "scripts" / "demo.py"), "--dir", str(tmp_path / "demo"), "--seconds", "4",
           "--width", "96", "--height", "32", "--world-size-m", "300", "--world-zoom-max", "18",
           "--patch-size-px", "128", "--patch-m-per-px", "0.5",
           "--matcher-factory", "localizer_doubles:make_prior_echo_matcher",
           # the echo double 'sees' whatever yaw it is given, so several unknown-yaw hypotheses
           # would (rightly) be rejected as ambiguous: one hypothesis for this plumbing test
           "--node-param", "unknown_yaw_hypotheses:=1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "stopped localizer_node (exit 0)" in out, out
    assert "GNSS-only" in out and "xview_localizer" in out and "report:" in out
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert report["frames"]["total"] == 40
    # The echo double keeps up with 10 Hz: most frames get a pose (the first ones wait for fixes).
    assert report["availability"] > 0.5, report["rejected_by_reason"]
    assert report["metrics"]["xview"]["n_samples"] == report["frames"]["accepted"]
    assert report["latency"]["n"] == report["frames"]["accepted"] and report["latency"]["p50_ms"] > 0
    assert (tmp_path / "demo" / "run" / "recorded" / "metadata.yaml").is_file()
    for name in report["plots"]:
        assert (tmp_path / "demo" / "report" / name).stat().st_size > 1000

    # Frame panels from the offline replay of the same bag (same matcher and parameters): the
    # page shows them (files on disk), says where they come from, and each one carries that
    # replay's numbers beside the node's outcome for the frame.
    rep = tmp_path / "demo" / "report"
    page = (rep / "index.html").read_text()
    srcs = image_sources(page)
    panels = [s for s in srcs if s.startswith("panels/")]
    assert panels and panels == [p["file"] for p in report["panels"]], (srcs, report["panels_note"])
    for src in panels:
        assert (rep / src).is_file() and (rep / src).stat().st_size > 5000, src
    assert "id='panels-source'" in page and "offline replay of the same bag" in page
    assert "same matcher checkpoint and the same node parameters" in page and "carry no matches" in page
    assert "frame panels below are from the offline replay" in page
    src = report["panels_from"]
    assert src["label"] == "offline replay" and src["main"]["accepted"] == report["frames"]["accepted"]
    assert src["run"]["frames"] == 40 and src["run"]["accepted"] > 20  # the echo double, every frame
    for p in report["panels"]:
        assert "(offline replay)" in p["caption"] and "; node (DDS): " in p["caption"]
        assert p["main_accepted"] is not None
        if p["kind"] == "rejected":
            assert not p["accepted"] and p["reason"] != "not_published"  # the replay's own reason
        else:
            assert p["accepted"] and p["err_xy_m"] is not None
    assert "offline replay" in report["meta"]["frame_panels"]
    timings = re.search(r"timings: .*panels replay (\d+) s.*", out)
    assert timings, out


def test_demo_depth_records_and_pairs_depth(tmp_path):
    """``make demo-depth`` plumbing at toy size: the drive is recorded with ``/camera/depth``,
    played over DDS with it, and the node (``use_depth``) pairs a depth map with every frame it
    processes (its /diagnostics totals, kept in the report's meta)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "test"), os.environ.get("PYTHONPATH", "")]),
           "XVIEW_TILE_CACHE": str(tmp_path / "tile_cache")}
    cmd = [sys.executable, str(REPO / "scripts" / "demo.py"), "--dir", str(tmp_path / "demo"), "--seconds", "3",
           "--width", "96", "--height", "32", "--world-size-m", "300", "--world-zoom-max", "18",
           "--patch-size-px", "128", "--patch-m-per-px", "0.5", "--depth", "--no-panels",
           "--matcher-factory", "localizer_doubles:make_prior_echo_matcher",
           "--node-param", "unknown_yaw_hypotheses:=1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    drives = [p for p in (tmp_path / "demo").iterdir() if p.name.startswith("drive_")]
    assert len(drives) == 1 and drives[0].name.endswith("_depth")
    assert "/camera/depth" in (drives[0] / "metadata.yaml").read_text()
    summary = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())["meta"]["node_summary"]
    processed = int(summary["frames_processed_total"])
    assert processed > 0 and int(summary["depths_total"]) == 30
    assert int(summary["frames_with_depth_total"]) == processed and int(summary["frames_without_depth_total"]) == 0
    # --no-panels: no offline replay, no panels, and the report says why
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert report["panels"] == [] and report["panels_from"] is None and "--no-panels" in report["panels_note"]
    assert report["meta"]["frame_panels"] == "none (--no-panels)" and "panels replay skipped" in out
