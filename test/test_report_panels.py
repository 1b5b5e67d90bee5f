"""The replay report's map, panels and snapshot memory (synthetic inputs, real tiles on disk,
real ``StepResult`` objects; :mod:`report_fixtures`)."""

from __future__ import annotations

import json
import math
import tracemalloc

import cv2
import numpy as np
import pytest
import report_fixtures as rf

from xview_localizer.core.geo import LocalEnu
from xview_localizer.evaluation.report import (
    EvalData,
    FrameRecord,
    Track,
    compute_report,
    write_report,
)
from xview_localizer.evaluation.report_map import map_background, nice_length_m
from xview_localizer.evaluation.report_panels import map_pose_in_patch, select_panel_frames
from xview_localizer.evaluation.report_snapshots import SnapshotStore
from xview_localizer.pipeline.localizer import MapProjection


@pytest.fixture(autouse=True)
def _tile_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("XVIEW_TILE_CACHE", str(tmp_path / "tile_cache"))


def _data_with_points(xy_m: np.ndarray, projection: str, url: str) -> EvalData:
    stamps = np.arange(len(xy_m), dtype=np.int64) * 100_000_000
    frames = [FrameRecord(int(s), True, "", float(x), float(y), 0.0) for s, (x, y) in zip(stamps, xy_m)]
    return EvalData(frames=frames, gnss=Track(stamps, xy_m[:, 0], xy_m[:, 1], np.full(len(xy_m), np.nan)),
                    gt=None, map_projection=projection, datum_lat_deg=rf.DATUM_LAT_DEG,
                    datum_lon_deg=rf.DATUM_LON_DEG, tile_url=url)


@pytest.mark.parametrize("projection", ["enu", "utm"])
def test_a_known_map_point_lands_at_its_metres_on_the_background_and_the_plot(tmp_path, projection):
    """A red disc drawn into the tiles at the WGS84 point of map (x, y) = (-48, -33) m must
    appear at that map coordinate: in the background raster (``px_of``) and in the rendered
    trajectory figure (matplotlib data coordinates = metres east / north of the datum). In UTM
    the datum is 2.9 deg east of the central meridian (convergence ~2.1 deg): ignoring it would
    put the disc ~2 m (20 px) off."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from xview_localizer.evaluation.report_metrics import frame_table
    from xview_localizer.evaluation.report_plots import draw_trajectory, trajectory_points

    proj = MapProjection(projection, rf.DATUM_LAT_DEG, rf.DATUM_LON_DEG)
    target_m = np.array([-48.0, -33.0])
    url = rf.write_marker_tiles(tmp_path / "tiles", rf.DATUM_LAT_DEG, rf.DATUM_LON_DEG, 150.0,
                                [proj.inverse(*target_m)])
    xy = np.column_stack([np.linspace(-60.0, 60.0, 25), np.full(25, 40.0)])  # the drive: north of the disc
    data = _data_with_points(xy, projection, url)
    bg, note = map_background(data, np.vstack([xy, [[-60.0, -45.0]]]))
    assert bg is not None, note
    assert "zoom 19" in note and bg.m_per_px == pytest.approx(180.0 / 1600)  # 120 m + 2 x 30 m margin
    found = rf.red_centroid_px(bg.rgb)
    expected = bg.px_of(target_m)[0]
    assert np.hypot(*(found - expected)) < 1.5, (found, expected)  # 0.15 m
    # the convention of px_of and extent_m agree: the raster's corners are the extent
    left, right, bottom, top = bg.extent_m
    assert bg.px_of([[left, top]])[0] == pytest.approx([-0.5, -0.5])
    assert bg.px_of([[right, bottom]])[0] == pytest.approx([bg.rgb.shape[1] - 0.5, bg.rgb.shape[0] - 0.5])

    t = frame_table(data)
    fig, ax = plt.subplots(figsize=(8, 8))
    draw_trajectory(ax, t, data, bg, note)
    fig.canvas.draw()
    canvas = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    disp = ax.transData.transform(target_m)
    found_fig = rf.red_centroid_px(canvas)  # matplotlib display y counts from the bottom
    assert np.hypot(found_fig[0] - disp[0], (canvas.shape[0] - found_fig[1]) - disp[1]) < 2.0
    line = ax.get_lines()[-1]  # the estimates, in metres (not pixels)
    assert np.allclose(line.get_xdata(), xy[:, 0]) and np.allclose(line.get_ydata(), xy[:, 1])
    plt.close(fig)
    assert len(trajectory_points(t, data)) == 3 * len(xy)  # GNSS at the frames, the fixes, the estimates


def test_scale_bar_length_is_a_round_number():
    assert nice_length_m(123.0) == 20.0
    assert nice_length_m(30.0) == 5.0
    assert nice_length_m(1000.0) == 200.0
    assert nice_length_m(4.0) == 0.5


def test_map_pose_in_patch_includes_the_utm_convergence(tmp_path):
    """A pose heading grid north in UTM heads ~2.1 deg west of true north in the patch."""
    from xview_localizer.tiles.patch import PatchGeoref

    proj = MapProjection("utm", rf.DATUM_LAT_DEG, rf.DATUM_LON_DEG)
    lat, lon = proj.inverse(10.0, 20.0)
    g = PatchGeoref(lat, lon, 0.5, 128, 128)
    e, n, yaw = map_pose_in_patch(proj, g, 10.0, 20.0, math.pi / 2)
    assert abs(e) < 1e-6 and abs(n) < 1e-6
    gamma = proj.convergence_rad(lat, lon)
    assert math.degrees(gamma) == pytest.approx(2.12, abs=0.05)
    assert yaw == pytest.approx(math.pi / 2 - gamma, abs=1e-4)


def test_worst_and_typical_frame_selection(tmp_path):
    data, errors = rf.synthetic_eval(tmp_path)
    _, t = compute_report(data)
    # all frames available: the worst are the three big errors, then the 0.20 m ones, oldest first
    choices = select_panel_frames(t, set(int(s) for s in t.stamp_ns), n_worst=4, n_typical=2, n_rejected=3)
    worst = [c for c in choices if c.kind == "worst"]
    assert [c.index for c in worst[:3]] == [20, 29, 8]
    assert [c.rank for c in worst] == [1, 2, 3, 4] and [c.label for c in worst[:2]] == ["W1", "W2"]
    assert worst[0].key_value == pytest.approx(6.0, abs=1e-6) and worst[0].key_name == "position error"
    assert worst[3].key_value == pytest.approx(0.2, abs=1e-6) and errors[worst[3].index] == pytest.approx(0.2)
    median = float(np.median(list(errors.values())))
    typical = [c for c in choices if c.kind == "typical"]
    assert len(typical) == 2 and all(abs(c.key_value - median) < 1e-6 for c in typical)
    assert {c.index for c in typical}.isdisjoint({c.index for c in worst})
    rejected = [c for c in choices if c.kind == "rejected"]
    assert [t.reasons[c.index] for c in rejected] == ["too_few_matches", "gnss_inconsistent"]
    # a worst frame without a snapshot is skipped, the next one moves up
    have = set(int(s) for s in t.stamp_ns) - {int(t.stamp_ns[20])}
    worst2 = [c for c in select_panel_frames(t, have, n_worst=2) if c.kind == "worst"]
    assert [c.index for c in worst2] == [29, 8]


def test_report_writes_panels_and_lists_them(tmp_path):
    data, _ = rf.synthetic_eval(tmp_path)
    out = tmp_path / "report"
    report = write_report(data, out)
    assert report["plots"] == ["trajectory.png", "errors_time.png", "error_cdf.png", "rejections_time.png",
                               "latency_cdf.png"]
    kinds = [p["kind"] for p in report["panels"]]
    assert kinds == ["worst"] * 6 + ["typical"] * 3 + ["rejected"] * 2
    assert report["panels"][0]["err_xy_m"] == pytest.approx(6.0, abs=1e-6)
    assert report["snapshots"]["kept"] == 40 and report["snapshots"]["evicted"] == 0
    page = (out / "index.html").read_text()
    assert page.index("id='summary'") < page.index("src='trajectory.png'") < page.index("src='panels/")
    for p in report["panels"]:
        img = cv2.imread(str(out / p["file"]))
        assert img is not None and img.shape[1] > 800, p["file"]
        assert f"src='{p['file']}'" in page
    assert json.loads((out / "report.json").read_text())["panels"] == report["panels"]
    # a report without snapshots (a recorded pose topic) says why it has no panels
    data.snapshots = None
    report2 = write_report(data, tmp_path / "no_snap")
    assert report2["panels"] == [] and "No frame panels" in report2["panels_note"]
    assert not (tmp_path / "no_snap" / "panels").exists()


def test_panels_from_another_run_show_that_run_and_the_rest_stays_the_reports(tmp_path):
    """``EvalData.panels_from`` (``make demo``: an offline replay of the bag the node ran on):
    the panels are selected from and numbered with the OTHER run's frames (its errors: 6.0 m for
    the worst), each caption adds the report's own outcome for that frame, the page says where
    the panels come from, and the summary stays the report's own estimates (every 4th frame
    not published, the others 1.00 m east of the truth)."""
    from xview_localizer.evaluation.report import PanelSource

    replay, errors = rf.synthetic_eval(tmp_path)
    own = write_report(replay, tmp_path / "replay_report")
    gt = replay.gt
    frames = [FrameRecord(int(s), True, "", float(x) + 1.0, float(y), float(yaw), np.diag([0.5, 0.5, 1e-3]))
              if k % 4 else FrameRecord(int(s), False, "not_published")
              for k, (s, x, y, yaw) in enumerate(zip(gt.stamp_ns, gt.x_m, gt.y_m, gt.yaw_rad))]
    note = "NOTE: these panels come from an offline replay of the same bag."
    node = EvalData(frames=frames, gnss=replay.gnss, gt=gt, map_projection=replay.map_projection,
                    datum_lat_deg=replay.datum_lat_deg, datum_lon_deg=replay.datum_lon_deg, tile_url=replay.tile_url,
                    meta={"estimates": "recorded /xview/pose"},
                    panels_from=PanelSource(replay, "offline replay", note, "node (DDS)"))
    out = tmp_path / "node_report"
    report = write_report(node, out)

    assert report["metrics"]["xview"]["xy_err_median_m"] == pytest.approx(1.0, abs=1e-6)  # the node's
    assert report["rejected_by_reason"] == {"not_published": 10}
    # the same frames as the replay's own report, with the replay's numbers
    assert [(p["kind"], p["stamp_ns"]) for p in report["panels"]] == [(p["kind"], p["stamp_ns"]) for p in own["panels"]]
    assert report["panels"][0]["err_xy_m"] == pytest.approx(6.0, abs=1e-6) and report["panels"][0]["index"] == 20
    for p in report["panels"]:
        k = p["index"]
        assert p["accepted"] == (rf.frame_outcome(k) == "") and p["reason"] == rf.frame_outcome(k)
        if p["accepted"]:
            assert p["err_xy_m"] == pytest.approx(errors[k], abs=1e-6)
        assert p["main_accepted"] == bool(k % 4) and p["main_reason"] == ("" if k % 4 else "not_published")
        assert "(offline replay)" in p["caption"]
        assert p["caption"].endswith("node (DDS): accepted, position error 1.00 m" if k % 4
                                     else "node (DDS): rejected (not_published)"), p["caption"]
        assert (out / p["file"]).stat().st_size > 1000
    src = report["panels_from"]
    assert src["run"]["accepted"] == len(errors) and src["main"]["accepted"] == 30
    assert src["run"]["xy_err_median_m"] == pytest.approx(float(np.median(list(errors.values()))), abs=1e-6)
    page = (out / "index.html").read_text()
    assert page.index("id='summary'") < page.index("id='panels-source'") < page.index("src='panels/")
    assert note in page and f"Frames accepted: offline replay: {len(errors)} of 40 " in page
    assert "; node (DDS): 30 of 40 (75.0 %), median / mean position error 1.00 / 1.00 m." in page
    assert "frame panels below are from the offline replay" in page
    assert json.loads((out / "report.json").read_text())["panels_from"]["label"] == "offline replay"


def _step_result(k: int, rng: np.random.Generator, ground_hw=(128, 512), patch_px: int = 512):
    """A StepResult with incompressible (noise) images: the worst case for JPEG sizes."""
    from xview_localizer.matcher.base import Correspondences
    from xview_localizer.pipeline.localizer import Prior, StepResult
    from xview_localizer.tiles.patch import PatchGeoref

    lat, lon = LocalEnu(rf.DATUM_LAT_DEG, rf.DATUM_LON_DEG).inverse(float(k), 0.0)
    prior = Prior(k, float(k), 0.0, float(lat), float(lon), np.eye(2), None, 0.0, "interpolated")
    sat = rng.integers(0, 256, (patch_px, patch_px, 3), dtype=np.uint8)
    res = StepResult(None, "too_few_matches", "", {}, prior, sat, PatchGeoref(float(lat), float(lon), 0.2, patch_px,
                                                                           patch_px))
    n = 2000
    res.correspondences = Correspondences(rng.normal(0, 10, (n, 2)), rng.normal(0, 10, (n, 2)), rng.uniform(0, 1, n))
    res.inlier_mask = rng.uniform(size=n) > 0.5
    return rng.integers(0, 256, (*ground_hw, 3), dtype=np.uint8), res


def test_snapshot_store_stays_within_its_budget_and_keeps_the_worst():
    rng = np.random.default_rng(0)
    score = {}  # "position error" by stamp: frame 37 is the worst, 211 the second worst
    budget = 3 * 2**20
    store = SnapshotStore(max_bytes=budget, keep_worst=4,
                          score_fn=lambda st: np.array([score.get(int(s), np.nan) for s in st]))
    sizes = []
    for k in range(600):
        ground, res = _step_result(k, rng)
        snap = store.add_step(k, ground, res)
        score[k] = {37: 9.0, 211: 7.0}.get(k, 0.01 * (k % 10))
        sizes.append(snap.nbytes)
        assert store.nbytes <= budget
    assert store.nbytes == sum(store.get(s).nbytes for s in store.stamps_ns)
    assert len(store) + store.evicted == 600 and store.evicted > 0
    assert 37 in store and 211 in store
    # what is kept is spread over the whole drive, not only its end
    kept = np.array(store.stamps_ns)
    assert kept.min() <= 50 and np.diff(kept).max() <= 80
    snap = store.get(int(kept[-1]))
    assert len(snap.weight) == 300 and snap.n_matches == 2000  # a subsample of the matches
    assert snap.ground_rgb().shape == (80, 320, 3) and snap.sat_rgb().shape == (256, 256, 3)
    assert snap.georef.m_per_px == pytest.approx(0.4) and snap.georef.width_px == 256
    assert max(sizes) < 200_000


def test_snapshot_memory_of_a_600_frame_drive_is_bounded():
    """600 frames of the demo's size (512 x 128 camera, 512 px patches, 2000 matches) in the
    default store: the Python heap grows by less than the store's 24 MiB budget + 2 MiB (the
    images and arrays of one step are freed after it), well under 50 MB."""
    rng = np.random.default_rng(1)
    store = SnapshotStore()
    frames = [_step_result(k, rng) for k in range(3)]  # the same pixels again: allocation, not content
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for k in range(600):
            ground, res = frames[k % 3]
            store.add_step(k, ground, res)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert store.nbytes <= store.max_bytes
    assert grown < store.max_bytes + 2 * 2**20, grown
    assert len(store) >= 150
