"""The node's latest-frame worker over real DDS, with a matcher far slower than the camera.

``localizer_node`` runs as a separate process (own ROS_DOMAIN_ID) with the TEST DOUBLE
``localizer_doubles.SlowEchoMatcher`` (``matcher_factory``): every frame sleeps
``SLOW_MATCH_S`` (2 s) in the matcher, then comes out at the GNSS prior. The harness publishes a
standing vehicle's fixes, camera_info and images at 10 Hz and records ``pose`` and
``/diagnostics``. What is checked follows from causality, not from timing margins on the
matcher:

* the executor is never blocked: /diagnostics keep arriving on their 0.2 s timer while the
  worker sleeps in the matcher, and the image callbacks keep counting images meanwhile;
* the worker takes the NEWEST pending frame the moment it has finished the previous one: the
  image behind each pose was sent before the previous pose arrived (it was already waiting; a
  worker that polls or idles would pick a later one) and less than 1 s before it (a FIFO
  backlog would pick one sent ~2 s before);
* after the images stop, the last image sent is the last one processed;
* every other image was dropped and counted: images = dropped + taken by the worker;
* the ``latency`` status has p50 / p90 (and mean / max) for every stage, the matcher's >= 2 s.
"""

from __future__ import annotations

import math
import os
import time

import pytest
from localizer_doubles import SLOW_MATCH_S, write_tile_folder
from test_node import (
    LAT0,
    LON0,
    NS,
    ZOOM,
    Harness,
    _camera_info,
    _fix,
    _image,
    _start_node,
    _stop_node,
)

from xview_localizer.ros import conversions as conv

pytestmark = pytest.mark.ros
DIAG_PERIOD_S = 0.2
#: Causes with which the worker drops a frame it has taken before ``Localizer.step``.
EARLY_CAUSES = ("image_invalid", "no_camera_info", "camera_info_mismatch", "waiting_for_extrinsics",
                "matcher_loading", "matcher_unavailable")


def _values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_slow_matcher_executor_stays_responsive_and_the_newest_frame_is_processed(tmp_path):
    domain = 150 + os.getpid() % 21
    tiles = write_tile_folder(tmp_path / "tiles", LAT0, LON0, ZOOM, radius_tiles=2, seed=7)
    params = {"use_odom": "false", "tile_url": f"file://{tiles}/{{z}}/{{x}}/{{y}}.png",
              "matcher_factory": "localizer_doubles:make_slow_echo_matcher",
              "patch_size_px": 128, "patch_m_per_px": 0.5, "map_projection": "enu",
              "diagnostics_period_s": DIAG_PERIOD_S, "tf_static_wait_s": 0.2}
    proc = _start_node(domain, params)
    h = Harness(domain)
    sent: dict[int, float] = {}  # image stamp_ns -> monotonic time it was published
    t_sim = [100.0]

    def send_frame() -> None:
        t = t_sim[0] = round(t_sim[0] + 0.1, 3)
        h.pub_fix.publish(_fix(t, LAT0, LON0))  # standing still: no GNSS course, one match per frame
        h.pub_info.publish(_camera_info(t))
        h.pub_image.publish(_image(t))
        sent[int(round(t * NS))] = time.monotonic()
        h.spin_for(0.1)

    try:
        h.wait_for_node(proc)
        # Warm-up: the matcher loads, the extrinsics fall back to the parameters, the first
        # frame goes through the 2 s matcher.
        deadline = time.monotonic() + 30.0
        while not h.poses and time.monotonic() < deadline:
            send_frame()
        assert h.poses, "no pose during the warm-up"
        warm_stamps = set(sent)
        # Busy: images keep coming at 10 Hz while every frame takes 2 s.
        t_busy0 = time.monotonic()
        while time.monotonic() - t_busy0 < 4.5:
            send_frame()
        last_ns = max(sent)
        # Images stop: the frame in the matcher finishes, then the last image is processed.
        deadline = time.monotonic() + 3 * SLOW_MATCH_S + 5.0
        while time.monotonic() < deadline and last_ns not in {conv.stamp_to_ns(m.header.stamp) for _, m in h.poses}:
            h.spin_for(0.1)
        h.spin_for(3 * DIAG_PERIOD_S)
        assert proc.poll() is None, "node died"
    finally:
        h.close()
        rc, out = _stop_node(proc)
    assert rc == 0 and "Traceback" not in out, out

    poses = [(t_arr, conv.stamp_to_ns(m.header.stamp)) for t_arr, m in h.poses]
    stamps = [s for _, s in poses]
    assert set(stamps) <= set(sent) and len(set(stamps)) == len(stamps)
    # After the images stopped, the last image sent is the one processed last.
    assert stamps[-1] == last_ns, (stamps[-1], last_ns)

    # Newest pending frame, started at once: the image behind pose k+1 was sent before pose k
    # arrived (it was already waiting), and no image sent more than 1 s before pose k arrived
    # (surely received by then) is newer than it (not the oldest of a backlog).
    busy = [(t_arr, s) for t_arr, s in poses if s not in warm_stamps]
    assert len(busy) >= 2, poses
    for (t_prev, _), (_, s_next) in zip(poses, poses[1:]):
        assert sent[s_next] < t_prev, (s_next, sent[s_next] - t_prev)
        newer = [s for s, t in sent.items() if s > s_next and t < t_prev - 1.0]
        assert not newer, (s_next, newer)
    # ~one pose per 2 s: the rest of the images were dropped.
    span_s = busy[-1][0] - poses[0][0]
    assert len(busy) <= math.ceil(span_s / SLOW_MATCH_S) + 1, (len(busy), span_s)

    # The executor is never blocked: between consecutive poses (the worker sleeping in the
    # matcher) /diagnostics keep coming on their timer, and image callbacks keep counting.
    diag_times = [t for t, _ in h.diags]
    for (t_a, _), (t_b, _) in zip(poses, poses[1:]):
        inside = [(t, arr) for t, arr in h.diags if t_a + 0.3 < t < t_b - 0.3]
        assert len(inside) >= 3, (t_b - t_a, len(inside))
        if any(inside[0][0] < t < inside[-1][0] - 0.2 for t in sent.values()):  # images were flowing
            images_seen = [int(_values(s)["images_total"]) for _, arr in inside for s in arr.status
                           if s.name == "xview_localizer: localization"]
            assert images_seen[-1] > images_seen[0], images_seen
    gaps_s = [b - a for a, b in zip(diag_times, diag_times[1:]) if a >= poses[0][0]]
    assert max(gaps_s) < 1.0, max(gaps_s)

    # Every image was either taken by the worker or dropped (and counted) when a newer one came.
    summary = _values(h.statuses(0.0, "localization")[-1])
    images = int(summary["images_total"])
    dropped = int(summary["frames_dropped_total"])
    taken = int(summary["frames_processed_total"])
    for cause in EARLY_CAUSES:
        found = h.statuses(0.0, cause)
        taken += int(_values(found[-1])["total"]) if found else 0
    assert images == dropped + taken, summary
    assert images >= 0.9 * len(sent), (images, len(sent))
    assert int(summary["poses_total"]) == len(poses)
    assert dropped >= images - len(warm_stamps) - len(busy), (dropped, images, len(warm_stamps), len(busy))

    # Per-stage latency: p50 / p90 (and mean / max) for every stage the core reports.
    latency = _values(h.statuses(0.0, "latency")[-1])
    stages = ("convert", "receive_to_start", "prior", "tiles", "matcher", "solver", "total", "receive_to_publish",
              "stamp_to_publish")
    for stage in stages:
        p50, p90 = float(latency[f"{stage}_p50_ms"]), float(latency[f"{stage}_p90_ms"])
        assert 0.0 <= p50 <= p90 <= float(latency[f"{stage}_max_ms"]) + 1e-6, (stage, latency)
        assert f"{stage}_mean_ms" in latency
    assert float(latency["matcher_p50_ms"]) >= 1e3 * SLOW_MATCH_S
    assert float(latency["receive_to_publish_p90_ms"]) >= 1e3 * SLOW_MATCH_S
    print(f"slow matcher: {len(poses)} poses of {len(sent)} images sent ({images} received, {dropped} dropped); "
          f"latency ms: matcher p50 {latency['matcher_p50_ms']}, receive_to_start p90 {latency['receive_to_start_p90_ms']}, "
          f"receive_to_publish p50/p90 {latency['receive_to_publish_p50_ms']}/{latency['receive_to_publish_p90_ms']}")
