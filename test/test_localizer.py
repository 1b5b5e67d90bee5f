"""The ROS-free Localizer core: prior alignment, map frames (UTM with meridian convergence, local
ENU), covariance, gating, recovery. Tiles come from the real TileCache over a folder of real PNG
tiles (and the real HTTP TileServer for the failure case); the matcher is a clearly labelled
TEST DOUBLE (test/localizer_doubles.py) producing correspondences from a known true pose."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from localizer_doubles import NoisyTruthMatcher, write_tile_folder

from xview_localizer.core.camera import PinholeCamera, T_base_camera_from_xyz_rpy
from xview_localizer.core.errors import GeometryError
from xview_localizer.core.geo import LocalEnu, UtmProjection
from xview_localizer.core.se2 import SE2
from xview_localizer.matcher.base import Correspondences
from xview_localizer.pipeline.config import LocalizerConfig
from xview_localizer.pipeline.localizer import (
    NS_PER_S,
    FixSample,
    Frame,
    Localizer,
    MapProjection,
    OdomSample,
)
from xview_localizer.tiles.cache import TileCache, TileCacheConfig
from xview_localizer.tiles.server import serve_directory

# Berlin: zone 33 (central meridian 15 deg E), 1.6 deg west of it -> convergence ~ -1.27 deg.
LAT0, LON0 = 52.5, 13.4
ZOOM = 18
CAMERA = PinholeCamera.from_intrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
T_BASE_CAMERA = T_base_camera_from_xyz_rpy(1.5, 0.0, 1.6, 0.0, 0.1, 0.0)
IMAGE = np.zeros((48, 64, 3), np.uint8)


@pytest.fixture(scope="module")
def tile_root(tmp_path_factory):
    return write_tile_folder(tmp_path_factory.mktemp("tiles"), LAT0, LON0, ZOOM, radius_tiles=3, seed=1)


@pytest.fixture
def tile_cache(tile_root, tmp_path):
    with TileCache(f"file://{tile_root}/{{z}}/{{x}}/{{y}}.png", tmp_path / "cache",
                   TileCacheConfig(zoom=ZOOM)) as cache:
        yield cache


def _config(**kw) -> LocalizerConfig:
    base = dict(patch_size_px=128, patch_m_per_px=0.5, datum_lat_deg=LAT0, datum_lon_deg=LON0)
    base.update(kw)
    return LocalizerConfig(**base)


def _frame(t_s: float) -> Frame:
    return Frame(int(t_s * NS_PER_S), IMAGE, CAMERA, T_BASE_CAMERA)


def _enu0() -> LocalEnu:
    return LocalEnu(LAT0, LON0)


def _latlon(e_m: float, n_m: float) -> tuple[float, float]:
    lat, lon = _enu0().inverse(e_m, n_m)
    return float(lat), float(lon)


def _fix(t_s: float, e_m: float, n_m: float, std_m: float = 3.0) -> FixSample:
    lat, lon = _latlon(e_m, n_m)
    return FixSample(int(t_s * NS_PER_S), lat, lon, 40.0, np.eye(2) * std_m**2)


def test_estimate_in_utm_map_frame_with_convergence(tile_cache):
    matcher = NoisyTruthMatcher(seed=2, noise_m=0.05, outlier_fraction=0.3)
    loc = Localizer(_config(), matcher, tile_cache)
    true_lat, true_lon = _latlon(12.0, -7.0)
    yaw_true = 0.6
    matcher.truth = (true_lat, true_lon, yaw_true)
    loc.add_fix(_fix(10.0, 9.0, -4.0))  # GNSS 4.2 m off
    res = loc.step(_frame(10.0))
    assert res.ok, res.detail
    est = res.estimate
    utm = UtmProjection(LAT0, LON0)
    e0, n0 = utm.forward(LAT0, LON0)
    e, n = utm.forward(true_lat, true_lon)
    gamma = utm.convergence_rad(true_lat, true_lon)
    assert math.degrees(gamma) == pytest.approx(-1.27, abs=0.05)
    assert est.T_map_base.x_m == pytest.approx(float(e - e0), abs=0.05)
    assert est.T_map_base.y_m == pytest.approx(float(n - n0), abs=0.05)
    # Yaw in the grid = true yaw + convergence; without the correction it would be 1.27 deg off.
    assert math.degrees(est.T_map_base.yaw_rad - (yaw_true + gamma)) == pytest.approx(0.0, abs=0.05)
    assert est.stamp_ns == 10 * NS_PER_S
    assert est.lat_deg == pytest.approx(true_lat, abs=1e-6)
    # Covariance: the patch covariance rotated by the convergence (UTM scale ~0.9996).
    c, s = math.cos(gamma), math.sin(gamma)
    J = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    expected = J @ est.cov_xyyaw_patch @ J.T
    cfg = loc.config
    assert np.allclose(est.cov_xyyaw, est.cov_xyyaw.T)
    assert np.all(np.linalg.eigvalsh(est.cov_xyyaw) > 0)
    if expected[0, 0] > cfg.cov_floor_xy_m2 and expected[1, 1] > cfg.cov_floor_xy_m2:
        assert np.allclose(est.cov_xyyaw[:2, :2], expected[:2, :2], rtol=2e-3)
    assert est.cov_xyyaw[0, 0] >= cfg.cov_floor_xy_m2 * 0.999
    assert est.cov_xyyaw[2, 2] >= cfg.cov_floor_yaw_rad2
    assert set(res.timings_s) >= {"prior", "tiles", "matcher", "solver", "total"}
    assert res.inlier_mask.sum() == est.n_inliers


def test_enu_map_frame_and_datum_from_first_fix(tile_cache):
    matcher = NoisyTruthMatcher(seed=3, noise_m=0.05)
    loc = Localizer(_config(map_projection="enu", datum_lat_deg=float("nan"), datum_lon_deg=float("nan")),
                    matcher, tile_cache)
    assert loc.projection is None
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    assert loc.projection.datum_lat_deg == pytest.approx(LAT0)
    matcher.truth = (*_latlon(5.0, 3.0), -2.0)
    res = loc.step(_frame(1.0))
    assert res.ok, res.detail
    assert res.estimate.T_map_base.x_m == pytest.approx(5.0, abs=0.05)
    assert res.estimate.T_map_base.y_m == pytest.approx(3.0, abs=0.05)
    assert res.estimate.T_map_base.yaw_rad == pytest.approx(-2.0, abs=1e-3)
    # No yaw prior (one fix, no previous estimate): the matcher ran at 4 yaw hypotheses.
    assert [c["prior_yaw_rad"] for c in matcher.calls] == pytest.approx([0, math.pi / 2, -math.pi, -math.pi / 2])


def test_nees_is_chi_square_consistent(tile_cache):
    """Over many frames the normalised estimation error squared averages ~3 (3 dof)."""
    rng = np.random.default_rng(5)
    matcher = NoisyTruthMatcher(seed=6, noise_m=0.3, outlier_fraction=0.2, n_points=150)
    # The vehicle teleports between frames (random position and yaw), so the "GNSS course" is
    # meaningless here: the prior-yaw gate is opened; this test is about the covariance.
    loc = Localizer(_config(cov_floor_xy_m2=1e-6, cov_floor_yaw_rad2=1e-6, jump_gate_max_age_s=0.1,
                            max_prior_yaw_deviation_rad=math.pi),
                    matcher, tile_cache)
    utm = UtmProjection(LAT0, LON0)
    e0, n0 = utm.forward(LAT0, LON0)
    nees = []
    for k in range(80):
        t_s = 100.0 + k
        e_true, n_true = rng.uniform(-10, 10, size=2)
        yaw_true = rng.uniform(-math.pi, math.pi)
        lat, lon = _latlon(e_true, n_true)
        matcher.truth = (lat, lon, yaw_true)
        loc.add_fix(_fix(t_s, e_true + rng.normal(0, 2), n_true + rng.normal(0, 2)))
        res = loc.step(_frame(t_s))
        assert res.ok, res.detail
        e, n = utm.forward(lat, lon)
        err = np.array([res.estimate.T_map_base.x_m - (e - e0), res.estimate.T_map_base.y_m - (n - n0),
                        math.remainder(res.estimate.T_map_base.yaw_rad - yaw_true - utm.convergence_rad(lat, lon),
                                       2 * math.pi)])
        nees.append(float(err @ np.linalg.solve(res.estimate.cov_xyyaw, err)))
    mean = float(np.mean(nees))
    print(f"NEES mean over {len(nees)} frames: {mean:.2f} (3 dof)")
    # chi2(3 * 80) / 80: 99 % band is about [2.37, 3.72].
    assert 2.2 < mean < 3.9, mean


def test_prior_is_interpolated_to_the_image_stamp(tile_cache):
    matcher = NoisyTruthMatcher(seed=7, noise_m=0.05)
    loc = Localizer(_config(), matcher, tile_cache)
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    loc.add_fix(_fix(2.0, 20.0, 0.0))
    matcher.truth = (*_latlon(10.0, 0.0), 0.0)
    res = loc.step(_frame(1.5))
    assert res.ok, res.detail
    prior = res.prior
    assert prior.source == "interpolated"
    lat, lon = _latlon(10.0, 0.0)
    px, py = loc.projection.forward(lat, lon)
    assert (prior.x_m, prior.y_m) == pytest.approx((px, py), abs=0.01)
    # GNSS course east (20 m over 1 s) gives the prior yaw, handed to the matcher in true-north ENU.
    assert matcher.calls[-1]["prior_yaw_rad"] == pytest.approx(0.0, abs=1e-3)
    assert res.prior.yaw_map_rad == pytest.approx(loc.projection.convergence_rad(lat, lon), abs=1e-3)


def test_prior_propagated_with_odometry_after_an_estimate(tile_cache):
    matcher = NoisyTruthMatcher(seed=8, noise_m=0.05)
    loc = Localizer(_config(), matcher, tile_cache)
    # Odometry frame rotated 90 deg from the map: odom +x is map north (yaw in map = pi/2 + small).
    for k in range(0, 31):
        t_s = 1.0 + 0.1 * k
        loc.add_odom(OdomSample(int(t_s * NS_PER_S), SE2(2.0 * (t_s - 1.0), 0.0, 0.0)))  # 2 m/s along odom x
    gamma = loc.projection.convergence_rad(LAT0, LON0)
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    matcher.truth = (*_latlon(0.0, 0.0), math.pi / 2 - gamma)  # heading grid north
    res = loc.step(_frame(1.0))
    assert res.ok, res.detail
    assert res.estimate.T_odom_base == SE2(0.0, 0.0, 0.0)
    # One second later, no new fix: the prior is the old fix moved 2 m along map +y by odometry.
    matcher.truth = (*_latlon(0.0, 2.0), math.pi / 2 - gamma)
    res2 = loc.step(_frame(2.0))
    assert res2.prior.source == "odometry"
    assert res2.prior.x_m == pytest.approx(0.0, abs=0.05)
    assert res2.prior.y_m == pytest.approx(2.0, abs=0.05)
    assert res2.prior.yaw_map_rad == pytest.approx(math.pi / 2, abs=0.01)
    assert res2.ok, res2.detail


def test_gating_too_few_matches(tile_cache):
    matcher = NoisyTruthMatcher(seed=9, n_points=10, outlier_fraction=0.0)
    loc = Localizer(_config(min_confident_matches=20), matcher, tile_cache)
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    matcher.truth = (LAT0, LON0, 0.0)
    res = loc.step(_frame(1.0))
    assert res.estimate is None and res.reason == "too_few_matches"
    assert "10 confident" in res.detail


def test_gating_gnss_inconsistent(tile_cache):
    matcher = NoisyTruthMatcher(seed=10, noise_m=0.05)
    loc = Localizer(_config(), matcher, tile_cache)
    loc.add_fix(_fix(1.0, 0.0, 0.0, std_m=1.0))
    matcher.truth = (*_latlon(20.0, 0.0), 0.0)  # 20 m from a 1-m GNSS fix
    res = loc.step(_frame(1.0))
    assert res.reason == "gnss_inconsistent" and res.estimate is None
    assert "Mahalanobis" in res.detail


def test_gating_fix_jump_then_odometry_contradiction_then_recovery(tile_cache):
    matcher = NoisyTruthMatcher(seed=11, noise_m=0.05)
    loc = Localizer(_config(jump_gate_max_age_s=3.0), matcher, tile_cache)
    for k in range(0, 101):
        loc.add_odom(OdomSample(int((1.0 + 0.1 * k) * NS_PER_S), SE2(0.0, 0.0, 0.0)))  # standing still
    loc.add_fix(_fix(1.0, 0.0, 0.0, std_m=5.0))
    matcher.truth = (LAT0, LON0, 0.3)
    assert loc.step(_frame(1.0)).ok
    # A GNSS jump of 500 m: rejected before any tile is fetched.
    loc.add_fix(_fix(2.0, 500.0, 0.0, std_m=5.0))
    calls = len(matcher.calls)
    res = loc.step(_frame(2.0))
    assert res.reason == "fix_jump"
    assert float(res.detail.split()[3]) == pytest.approx(500.0, abs=1.0)
    assert len(matcher.calls) == calls
    # Good GNSS again but the matcher claims 8 m of motion odometry does not see.
    loc.add_fix(_fix(2.5, 3.0, 0.0, std_m=5.0))
    matcher.truth = (*_latlon(8.0, 0.0), 0.3)
    res = loc.step(_frame(2.5))
    assert res.reason == "odometry_contradiction", res.detail
    # Consistent again: recovers.
    loc.add_fix(_fix(3.0, 1.0, 0.0, std_m=5.0))
    matcher.truth = (LAT0, LON0, 0.3)
    assert loc.step(_frame(3.0)).ok
    # A lasting GNSS offset re-initialises once the previous estimate is older than the gate age.
    loc.add_fix(_fix(7.0, 60.0, 0.0, std_m=5.0))
    matcher.truth = (*_latlon(60.0, 0.0), 0.3)
    res = loc.step(_frame(7.0))
    assert res.ok, res.detail


def test_stale_and_missing_fix(tile_cache):
    matcher = NoisyTruthMatcher(seed=12)
    loc = Localizer(_config(fix_max_age_s=1.0), matcher, tile_cache)
    assert loc.step(_frame(1.0)).reason == "no_fix"
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    res = loc.step(_frame(5.0))
    assert res.reason == "stale_fix" and "4.00 s" in res.detail


def test_a_matcher_raising_any_exception_rejects_the_frame(tile_cache):
    class Oom(NoisyTruthMatcher):
        def match(self, *args, **kw):
            raise RuntimeError("CUDA out of memory")

    loc = Localizer(_config(), Oom(seed=1), tile_cache)
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    res = loc.step(_frame(1.0))
    assert res.estimate is None and res.reason == "matcher_failed" and "RuntimeError: CUDA out of memory" in res.detail


def test_matcher_unavailable(tile_cache):
    loc = Localizer(_config(), None, tile_cache)
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    res = loc.step(_frame(1.0))
    assert res.reason == "matcher_failed" and "unavailable" in res.detail


def test_tile_server_down_then_back(tile_root, tmp_path):
    server = serve_directory(tile_root)
    port = server.port
    url = server.url_template()
    server.shutdown()
    matcher = NoisyTruthMatcher(seed=13, noise_m=0.05)
    with TileCache(url, tmp_path / "cache", TileCacheConfig(zoom=ZOOM, retries=0, timeout_s=1.0,
                                                              negative_ttl_s=0.0)) as cache:
        loc = Localizer(_config(), matcher, cache)
        loc.add_fix(_fix(1.0, 0.0, 0.0))
        matcher.truth = (LAT0, LON0, 0.0)
        res = loc.step(_frame(1.0))
        assert res.reason == "tiles_unavailable", res.detail
        from xview_localizer.tiles.server import TileServer

        with TileServer(root=tile_root, port=port):
            res = loc.step(_frame(1.0))
            assert res.ok, res.detail


def test_map_projection_round_trip():
    for kind in ("utm", "enu"):
        proj = MapProjection(kind, LAT0, LON0)
        assert proj.forward(LAT0, LON0) == pytest.approx((0.0, 0.0), abs=1e-6)
        lat, lon = _latlon(300.0, -200.0)
        x, y = proj.forward(lat, lon)
        assert proj.inverse(x, y) == pytest.approx((lat, lon), abs=1e-9)
    assert MapProjection("enu", LAT0, LON0).convergence_rad(*_latlon(300.0, -200.0)) == pytest.approx(0, abs=1e-4)


def test_inputs_are_validated():
    with pytest.raises(GeometryError, match="finite"):
        FixSample(1, float("nan"), 13.0)
    with pytest.raises(GeometryError, match="uint8"):
        Frame(1, np.zeros((4, 4), np.uint8), CAMERA, T_BASE_CAMERA)
    with pytest.raises(GeometryError, match="4x4"):
        Frame(1, IMAGE, CAMERA, np.eye(3))


def test_core_imports_without_rclpy():
    code = textwrap.dedent(
        """
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name == "rclpy" or name.startswith("rclpy."):
                    raise ImportError("blocked")
        sys.meta_path.insert(0, _Block())
        import xview_localizer.pipeline.localizer, xview_localizer.pipeline.config  # noqa: F401
        assert not any(m.startswith("rclpy") for m in sys.modules)
        print("OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_real_dense_flow_matcher_runs_in_the_pipeline(tile_cache, tmp_path):
    """Integration with the real matcher API (untrained, random weights: no accuracy claim):
    load_matcher -> Matcher.match -> Correspondences -> Procrustes -> gating, on CPU."""
    torch = pytest.importorskip("torch")
    from xview_localizer.core.camera import kitti_like_T_base_camera
    from xview_localizer.matcher.checkpoint import save_checkpoint
    from xview_localizer.matcher.dense_flow import DenseFlowMatcher, preset
    from xview_localizer.matcher.inference import load_matcher
    from xview_localizer.pipeline.localizer import REASONS

    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "random.pt", DenseFlowMatcher(preset("compact", iters=2)))
    matcher = load_matcher(path, "cpu")
    camera = PinholeCamera.kitti_like(512, 160)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(160, 512, 3), dtype=np.uint8)
    loc = Localizer(_config(patch_size_px=256, patch_m_per_px=0.4, unknown_yaw_hypotheses=1), matcher, tile_cache)
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    res = loc.step(Frame(NS_PER_S, image, camera, kitti_like_T_base_camera(1.65, 0.0, 0.05)))
    assert res.ok or res.reason in REASONS, res.detail
    assert res.reason != "matcher_failed", res.detail
    assert res.correspondences is not None and len(res.correspondences) > 0
    assert res.timings_s["matcher"] > 0


def test_gating_yaw_far_from_the_gnss_course(tile_cache):
    """With the prior yaw known from the GNSS course (heading east), an estimate 60 deg off it is
    rejected as 'yaw_inconsistent'; one 5 deg off is accepted."""
    for yaw_off_deg, ok in ((60.0, False), (5.0, True)):
        matcher = NoisyTruthMatcher(seed=11, noise_m=0.05, outlier_fraction=0.0)
        loc = Localizer(_config(map_projection="enu"), matcher, tile_cache)
        loc.add_fix(_fix(0.0, -20.0, 0.0, std_m=1.0))
        loc.add_fix(_fix(2.0, 0.0, 0.0, std_m=1.0))  # 20 m east in 2 s: course = east (yaw 0)
        matcher.truth = (*_latlon(0.0, 0.0), math.radians(yaw_off_deg))
        res = loc.step(_frame(2.0))
        assert abs(matcher.calls[-1]["prior_yaw_rad"]) < math.radians(1.0)  # the matcher saw the course
        if ok:
            assert res.estimate is not None, res.detail
            assert math.degrees(res.estimate.T_map_base.yaw_rad) == pytest.approx(yaw_off_deg, abs=0.5)
        else:
            assert res.estimate is None and res.reason == "yaw_inconsistent", (res.reason, res.detail)
            assert "60.0 deg from the prior yaw" in res.detail


def test_unknown_yaw_with_equally_supported_disagreeing_hypotheses_is_rejected(tile_cache):
    """No prior yaw (one fix, no course): the matcher runs at 4 yaws. A matcher that just
    echoes the hypothesis gives 4 disagreeing, equally supported solutions -> 'yaw_ambiguous',
    never a pose that may be turned around. A matcher whose answer does not depend on the
    hypothesis (one consistent solution) is accepted."""

    class HypothesisEcho:  # TEST DOUBLE: always 'sees' the yaw it was given
        def __init__(self) -> None:
            self.rng = np.random.default_rng(0)

        def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad):
            src = self.rng.uniform(-15.0, 15.0, size=(100, 2))
            dst = SE2(0.0, 0.0, prior_yaw_rad).apply(src) + self.rng.normal(0.0, 0.1, size=src.shape)
            return Correspondences(src, dst, np.full(100, 0.9), True)

    loc = Localizer(_config(), HypothesisEcho(), tile_cache)
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    res = loc.step(_frame(1.0))
    assert res.estimate is None and res.reason == "yaw_ambiguous", (res.reason, res.detail)
    assert "no prior yaw" in res.detail

    matcher = NoisyTruthMatcher(seed=12, noise_m=0.1, outlier_fraction=0.0)
    loc = Localizer(_config(), matcher, tile_cache)
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    matcher.truth = (LAT0, LON0, 1.0)
    res = loc.step(_frame(1.0))
    assert len(matcher.calls) == 4  # four hypotheses ran
    assert res.estimate is not None, res.detail


def test_low_evidence_gate_rejects_an_indecisive_vote(tile_cache):
    """Issue 14: a matcher whose pose vote barely prefers its answer over a rival place/heading
    is rejected 'low_evidence' (threshold from the config, or calibrated into the checkpoint)."""
    matcher = NoisyTruthMatcher(seed=12, noise_m=0.05)
    matcher.truth = (LAT0, LON0, 0.0)
    matcher.last_evidence = {"vote_peak": 0.3, "vote_margin": 0.004, "vote_mass": 0.2}
    loc = Localizer(_config(min_vote_mass=0.3), matcher, tile_cache)
    loc.add_fix(_fix(1.0, 0.0, 0.0))
    res = loc.step(_frame(1.0))
    assert res.estimate is None and res.reason == "low_evidence" and "0.200" in res.detail
    assert res.evidence == matcher.last_evidence
    # a decisive vote passes; the checkpoint's calibrated threshold is used when the config says -1
    matcher.last_evidence = {"vote_peak": 0.3, "vote_margin": 0.05, "vote_mass": 0.8}
    assert loc.step(_frame(1.0)).ok
    # (one fix, no course yet: this frame has no prior yaw -> the unknown-yaw threshold applies)
    matcher.evidence_gate = {"min_vote_mass": 0.1, "min_vote_mass_unknown_yaw": 0.9}
    loc2 = Localizer(_config(min_vote_mass=-1.0), matcher, tile_cache)
    loc2.add_fix(_fix(1.0, 0.0, 0.0))
    assert loc2.min_vote_mass(yaw_known=True) == 0.1 and loc2.min_vote_mass(yaw_known=False) == 0.9
    assert loc2.step(_frame(1.0)).reason == "low_evidence"
    matcher.evidence_gate = {"min_vote_mass": 0.9, "min_vote_mass_unknown_yaw": 0.1}
    assert loc2.step(_frame(1.0)).ok
    loc3 = Localizer(_config(min_vote_mass=0.0), matcher, tile_cache)  # 0 = off
    loc3.add_fix(_fix(1.0, 0.0, 0.0))
    assert loc3.step(_frame(1.0)).ok


@pytest.mark.parametrize("reanchor_after", [3, 0])
def test_consistent_contradictions_reanchor_after_a_bad_accepted_estimate(tile_cache, reanchor_after):
    """One wrong estimate got through; the next ones agree with each other and with the GNSS but
    contradict it: after ``reanchor_after`` of them the localizer accepts the newest instead of
    rejecting every frame until the bad one ages out (0 = the old behaviour)."""
    matcher = NoisyTruthMatcher(seed=13, noise_m=0.05)
    loc = Localizer(_config(reanchor_after=reanchor_after, jump_gate_max_age_s=5.0), matcher, tile_cache)
    for k in range(0, 60):
        loc.add_odom(OdomSample(int((1.0 + 0.1 * k) * NS_PER_S), SE2(0.0, 0.0, 0.0)))  # standing still
    loc.add_fix(_fix(1.0, 0.0, 0.0, std_m=5.0))
    matcher.truth = (*_latlon(9.0, 0.0), 0.3)  # the bad one
    assert loc.step(_frame(1.0)).ok
    matcher.truth = (LAT0, LON0, 0.3)
    reasons = []
    for t in (1.2, 1.4, 1.6, 1.8):
        loc.add_fix(_fix(t, 0.0, 0.0, std_m=5.0))
        res = loc.step(_frame(t))
        reasons.append(res.reason)
    if reanchor_after == 3:
        assert reasons == ["odometry_contradiction", "odometry_contradiction", "", ""], reasons
        assert abs(res.estimate.T_map_base.x_m) < 1.0  # now anchored at the truth
    else:
        assert reasons == ["odometry_contradiction"] * 4


def test_inconsistent_contradictions_do_not_reanchor(tile_cache):
    matcher = NoisyTruthMatcher(seed=14, noise_m=0.05)
    loc = Localizer(_config(reanchor_after=3), matcher, tile_cache)
    for k in range(0, 60):
        loc.add_odom(OdomSample(int((1.0 + 0.1 * k) * NS_PER_S), SE2(0.0, 0.0, 0.0)))
    loc.add_fix(_fix(1.0, 0.0, 0.0, std_m=8.0))
    matcher.truth = (LAT0, LON0, 0.3)
    assert loc.step(_frame(1.0)).ok
    for k, t in enumerate((1.2, 1.4, 1.6, 1.8, 2.0)):  # jumping 8 m east / west: never agree
        loc.add_fix(_fix(t, 0.0, 0.0, std_m=8.0))
        matcher.truth = (*_latlon(8.0 if k % 2 == 0 else -8.0, 0.0), 0.3)
        assert loc.step(_frame(t)).reason == "odometry_contradiction"


# ----------------------------------------------------------------------------------------------
# Time buffers: pruned against the reference clock and the frames, never the newest stamp held
# ----------------------------------------------------------------------------------------------
DAY_S = 86_400.0


@pytest.mark.parametrize("with_clock", [True, False])
def test_fixes_a_day_in_the_future_are_rejected_and_evict_no_history(tile_cache, with_clock):
    """The issue's case: five fixes from a receiver clock a day ahead arrive amid good ones. Before
    the fix every later, correct fix fell out of the buffer ('stale_fix: nearest fix is 86396 s
    from the image stamp') for the next day. Now each is rejected on its own and the frames keep
    localizing from the good fixes, with the node clock as reference or, without one, the frames."""
    from xview_localizer.core.errors import LocalizationRejected

    matcher = NoisyTruthMatcher(seed=21, noise_m=0.05)
    loc = Localizer(_config(history_s=30.0, max_stamp_lead_s=5.0), matcher, tile_cache)
    matcher.truth = (LAT0, LON0, 0.2)

    def clock(t_s: float):
        return int(t_s * NS_PER_S) if with_clock else None

    for t in (1.0, 1.5, 2.0):
        assert loc.add_fix(_fix(t, 0.0, 0.0), now_ns=clock(t)) == "in_order"
    assert loc.step(_frame(2.0)).ok
    for k in range(5):
        t = 2.0 + 0.1 * k
        with pytest.raises(LocalizationRejected, match="ahead of") as exc:
            loc.add_fix(_fix(t + DAY_S, 0.0, 0.0), now_ns=clock(t))
        assert exc.value.reason == "fix_stamp_future"
    assert len(loc._fixes) == 3  # nothing evicted, nothing added
    reasons = []
    for k in range(1, 21):  # 2 s more of good fixes and frames at 10 Hz
        t = round(2.5 + 0.1 * k, 3)
        loc.add_fix(_fix(t, 0.0, 0.0), now_ns=clock(t))
        res = loc.step(_frame(t))
        reasons.append(res.reason)
    assert reasons == [""] * 20, reasons


def test_odometry_a_day_in_the_future_is_rejected_and_evicts_no_history(tile_cache):
    from xview_localizer.core.errors import LocalizationRejected

    loc = Localizer(_config(), NoisyTruthMatcher(seed=22), tile_cache)
    for k in range(11):
        t = 1.0 + 0.1 * k
        loc.add_odom(OdomSample(int(t * NS_PER_S), SE2(float(k), 0.0, 0.0)), now_ns=int(t * NS_PER_S))
    with pytest.raises(LocalizationRejected) as exc:
        loc.add_odom(OdomSample(int((2.0 + DAY_S) * NS_PER_S), SE2(0.0, 0.0, 0.0)), now_ns=int(2.0 * NS_PER_S))
    assert exc.value.reason == "odom_stamp_future"
    assert loc.latest_odom_stamp_ns() == 2 * NS_PER_S
    assert loc.odom_at(int(1.55 * NS_PER_S)).x_m == pytest.approx(5.5)


def test_time_buffers_reject_past_and_duplicate_stamps_and_name_out_of_order(tile_cache):
    from xview_localizer.core.errors import LocalizationRejected

    loc = Localizer(_config(history_s=10.0), NoisyTruthMatcher(seed=23), tile_cache)
    now = int(100.0 * NS_PER_S)
    assert loc.add_fix(_fix(99.0, 0.0, 0.0), now_ns=now) == "in_order"
    assert loc.add_fix(_fix(98.0, 0.0, 0.0), now_ns=now) == "out_of_order"
    with pytest.raises(LocalizationRejected) as exc:
        loc.add_fix(_fix(99.0, 5.0, 0.0), now_ns=now)
    assert exc.value.reason == "fix_stamp_duplicate"
    with pytest.raises(LocalizationRejected) as exc:
        loc.add_fix(_fix(89.0, 0.0, 0.0), now_ns=now)  # 11 s behind, history 10 s
    assert exc.value.reason == "fix_stamp_past"
    # the duplicate did not replace the first fix at 99 s
    assert loc._fixes.items[loc._fixes.stamps.index(99 * NS_PER_S)][1] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(LocalizationRejected) as exc:
        loc.add_odom(OdomSample(int(89.0 * NS_PER_S), SE2()), now_ns=now)
    assert exc.value.reason == "odom_stamp_past"


def test_time_buffers_are_pruned_against_the_frames_localized(tile_cache):
    """Without a clock the buffers keep ``history_s`` behind the frame being localized (and at
    least two samples), so a long run does not grow them without bound."""
    matcher = NoisyTruthMatcher(seed=24, noise_m=0.05)
    matcher.truth = (LAT0, LON0, 0.2)
    loc = Localizer(_config(history_s=2.0), matcher, tile_cache)
    for k in range(100):
        t = round(1.0 + 0.1 * k, 3)
        loc.add_fix(_fix(t, 0.0, 0.0))
        loc.add_odom(OdomSample(int(t * NS_PER_S), SE2()))
    assert len(loc._fixes) == 100  # no frame yet: nothing to prune against
    assert loc.step(_frame(10.9)).ok
    assert min(loc._fixes.stamps) >= int(8.9 * NS_PER_S) and len(loc._fixes) == 21
    assert min(loc._odom.stamps) >= int(8.9 * NS_PER_S)
    loc.reset()
    assert len(loc._fixes) == 0 and loc.last_estimate is None


def test_stamp_reference_follows_the_streams_not_a_few_bad_stamps():
    from xview_localizer.pipeline.timebase import StampReference

    ref = StampReference(window=31, min_samples=3)
    assert ref.reference_ns(0) is None
    clock = 1_700_000_000 * NS_PER_S  # node wall clock; the sensors stamp on a device clock at ~50 s
    for k in range(10):
        ref.observe(int((50.0 + 0.1 * k) * NS_PER_S), clock + k * NS_PER_S // 10)
    assert ref.reference_ns(clock + NS_PER_S) == pytest.approx(int(51.0 * NS_PER_S), abs=NS_PER_S // 10)
    for _ in range(5):  # five messages a day ahead do not move it
        ref.observe(int((51.0 + DAY_S) * NS_PER_S), clock + NS_PER_S)
    assert abs(ref.reference_ns(clock + NS_PER_S) - int(51.0 * NS_PER_S)) < NS_PER_S


def test_gnss_fix_goes_to_a_matcher_that_takes_a_position_prior(tile_cache):
    """vote_prior_sigma_scale: the fix's covariance (east / north) reaches the matcher in the
    patch frame (true-north ENU) unrotated, although the prior holds it in the UTM map frame,
    rotated by the grid convergence (~-1.27 deg here); scaled by the factor squared, with the
    fix's position as the mean (the patch is centred on it); 0 or a matcher without
    ``accepts_position_prior`` gets nothing."""

    class WithPrior(NoisyTruthMatcher):  # TEST DOUBLE: records the prior keywords
        accepts_position_prior = True

        def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad, **kw):
            self.kw = kw
            return super().match(ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad)

    cov_map = np.diag([16.0, 4.0])
    for scale, matcher_cls in ((1.5, WithPrior), (0.0, WithPrior), (1.5, NoisyTruthMatcher)):
        m = matcher_cls(seed=2)
        m.truth = (*_latlon(1.0, 2.0), 0.3)
        loc = Localizer(_config(vote_prior_sigma_scale=scale, max_gnss_mahalanobis=50.0), m, tile_cache)
        lat, lon = _latlon(1.0, 2.0)
        loc.add_fix(FixSample(NS_PER_S, lat, lon, 40.0, cov_map))
        res = loc.step(_frame(1.0))
        assert res.ok, res.detail
        kw = getattr(m, "kw", None)
        if scale == 0.0 or matcher_cls is NoisyTruthMatcher:
            assert not kw
            continue
        assert set(kw) == {"prior_xy_m", "prior_cov_xy_m2"}
        assert math.hypot(*kw["prior_xy_m"]) < 0.5  # the patch is cut around the fix
        cov = np.asarray(kw["prior_cov_xy_m2"])
        assert np.allclose(cov, cov.T)
        assert np.allclose(cov, 2.25 * cov_map, rtol=0.01, atol=0.01)
        prior_map = loc._prior_locked(NS_PER_S).cov_xy_m2  # the map frame: rotated by the convergence
        assert abs(prior_map[0, 1]) > 0.2


def test_a_fix_with_a_degenerate_covariance_still_gives_the_vote_a_usable_prior(tile_cache):
    """A receiver that reports a covariance of a few mm (or a nearly rank-one one; FixSample
    refuses zero variances): the vote prior is floored at
    MIN_VOTE_PRIOR_STD_M per axis, positive definite, and the frame localizes."""
    from xview_localizer.matcher.inference import position_information
    from xview_localizer.pipeline.localizer import MIN_VOTE_PRIOR_STD_M

    class WithPrior(NoisyTruthMatcher):  # TEST DOUBLE: checks the prior the real matcher would get
        accepts_position_prior = True

        def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad, **kw):
            self.info = position_information(kw["prior_cov_xy_m2"])  # raises for a bad one
            self.cov = kw["prior_cov_xy_m2"]
            return super().match(ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad)

    for cov_map in (np.eye(2) * 1e-6, np.array([[9.0, 3.0], [3.0, 1.0 + 1e-9]])):
        m = WithPrior(seed=3)
        m.truth = (*_latlon(0.0, 0.0), 0.1)
        loc = Localizer(_config(max_gnss_mahalanobis=50.0), m, tile_cache)
        loc.add_fix(FixSample(NS_PER_S, *_latlon(0.0, 0.0), 40.0, cov_map))
        res = loc.step(_frame(1.0))
        assert res.ok, res.detail
        assert np.linalg.eigvalsh(m.cov).min() >= MIN_VOTE_PRIOR_STD_M ** 2 * (1 - 1e-9)
