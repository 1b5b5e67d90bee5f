"""Covariance calibration (xview_localizer.evaluation.calibration): NEES, the scale factor, storing it in a
checkpoint and the localizer applying it. The matcher here is a TEST DOUBLE producing
correspondences from the known true pose with noise that is correlated across points (like
dense flow), which makes the solver's independent-point covariance overconfident."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from localizer_doubles import NoisyTruthMatcher, write_tile_folder

from xview_localizer.core.camera import PinholeCamera, T_base_camera_from_xyz_rpy
from xview_localizer.core.errors import CheckpointError, XViewError
from xview_localizer.core.geo import LocalEnu
from xview_localizer.core.se2 import SE2
from xview_localizer.evaluation.calibration import (
    CHI2_3_MEDIAN,
    FrameNees,
    collect_nees,
    frame_nees,
    summarize_nees,
)
from xview_localizer.matcher.base import Correspondences
from xview_localizer.matcher.checkpoint import save_checkpoint, set_covariance_scale
from xview_localizer.matcher.dense_flow import DenseFlowMatcher, preset
from xview_localizer.matcher.inference import load_matcher
from xview_localizer.pipeline.config import LocalizerConfig
from xview_localizer.pipeline.localizer import FixSample, Frame, Localizer
from xview_localizer.tiles.cache import TileCache, TileCacheConfig

LAT0, LON0, ZOOM = 48.1, 11.5, 18


def test_frame_nees_values_and_singular_covariance():
    cov = np.diag([4.0, 1.0, 0.01])
    T_true = SE2(1.0, 2.0, 0.5)
    T_est = SE2(3.0, 3.0, 0.6)
    assert frame_nees(T_est, T_true, cov) == pytest.approx(4 / 4 + 1 / 1 + 0.01 / 0.01)
    wrap = SE2(1.0, 2.0, 0.5 + 2 * math.pi)  # wrapped yaw: zero error
    assert frame_nees(wrap, T_true, cov) == pytest.approx(0.0, abs=1e-12)
    assert frame_nees(T_est, T_true, np.zeros((3, 3))) == math.inf


def test_summary_scale_is_median_nees_over_chi2_median():
    frames = [FrameNees(str(i), 1.0, 1.0, v) for i, v in enumerate([10.0, 20.0, 30.0, 40.0, 5000.0])]
    s = summarize_nees(frames, n_frames=7)
    assert (s.n_frames, s.n_solved) == (7, 5)
    assert s.covariance_scale == pytest.approx(30.0 / CHI2_3_MEDIAN)
    assert s.median_nees_scaled == pytest.approx(CHI2_3_MEDIAN)
    assert s.frac_within_p95_raw == 0.0 and s.frac_within_p95_scaled == pytest.approx(0.8)
    # an already conservative covariance is never made smaller (min_scale 1)
    assert summarize_nees([FrameNees("a", 0.0, 0.0, 0.1)], 1).covariance_scale == 1.0
    with pytest.raises(XViewError, match="none of 3 frames"):
        summarize_nees([], 3)


@dataclass
class _Sample:
    id: str
    T_patch_base_se2: SE2
    prior_yaw_rad: float = 0.0
    ground_rgb: object = None
    camera: object = None
    T_base_camera: object = None
    sat_rgb: object = None
    georef: object = None
    depth_m: object = None


class _CorrelatedNoiseMatcher:
    """TEST DOUBLE: dst = T_true(src) + a per-frame common offset (sigma_common) + independent
    noise (sigma_point). The common part is invisible to an independent-point covariance."""

    def __init__(self, truths: dict, seed: int, sigma_common_m: float, sigma_point_m: float) -> None:
        self.truths, self.rng = truths, np.random.default_rng(seed)
        self.sigma_common_m, self.sigma_point_m = sigma_common_m, sigma_point_m
        self.current: SE2 | None = None

    def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad):
        T = self.current
        src = self.rng.uniform(-20.0, 20.0, size=(300, 2))
        dst = T.apply(src) + self.rng.normal(0, self.sigma_common_m, size=2) \
            + self.rng.normal(0, self.sigma_point_m, size=src.shape)
        return Correspondences(src, dst, np.ones(len(src)))


def _samples(n: int, seed: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield _Sample(str(i), SE2(*rng.uniform(-10, 10, size=2), float(rng.uniform(-3, 3))))


def _run(matcher, n: int, seed: int):
    def gen():
        for s in _samples(n, seed):
            matcher.current = s.T_patch_base_se2
            yield s
    return collect_nees(matcher, gen())


def test_correlated_noise_is_overconfident_and_the_scale_fixes_it():
    matcher = _CorrelatedNoiseMatcher({}, seed=1, sigma_common_m=1.0, sigma_point_m=0.5)
    frames, tried = _run(matcher, 120, seed=2)
    assert tried == 120 and len(frames) == 120
    s = summarize_nees(frames, tried)
    assert s.median_nees_raw > 20.0 and s.frac_within_p95_raw < 0.5
    assert s.covariance_scale > 8.0
    # the scale measured on one set makes a fresh set consistent
    frames2, _ = _run(_CorrelatedNoiseMatcher({}, seed=3, sigma_common_m=1.0, sigma_point_m=0.5), 120, seed=4)
    scaled = np.array([f.nees_raw for f in frames2]) / s.covariance_scale
    # one factor for x, y and yaw: the tail is not exactly chi-square(3) (the common offset moves
    # x/y only), but far closer than the raw covariance
    assert 0.75 <= float(np.mean(scaled <= 7.815)) <= 1.0
    assert 1.5 <= float(np.median(scaled)) <= 3.5


def test_depth_matcher_gets_the_depth_and_relative_solutions_become_base_poses():
    """A matcher that accepts depth (sparse-depth) gets the record's depth map and the depth
    kind; a camera-centred Sim(2) solution (relative depth) is turned into the base_link pose,
    as the localizer does (else every frame would be |c| = 1.6 m off)."""
    T_cam = T_base_camera_from_xyz_rpy(1.5, 0.4, 1.6, 0.0, 0.1, 0.0)
    c_xy = np.array([1.5, 0.4])

    class DepthDouble:  # TEST DOUBLE: camera-centred relative correspondences from the truth
        accepts_depth = True

        def __init__(self):
            self.calls, self.current, self.rng = [], None, np.random.default_rng(5)

        def match(self, ground_rgb, camera, T_base_camera, sat_rgb, georef, prior_yaw_rad, *, depth_m=None,
                  depth_kind="metric"):
            self.calls.append((depth_m, depth_kind))
            b = self.rng.uniform([3.0, -15.0], [40.0, 15.0], size=(200, 2))
            dst = self.current.apply(b) + self.rng.normal(0, 0.05, size=b.shape)
            return Correspondences((b - c_xy) / 0.4, dst, np.ones(len(b)), scale_known=False)

    matcher = DepthDouble()
    depth = np.full((4, 4), 7.0, np.float32)

    def gen():
        for smp in _samples(10, 6):
            smp.T_base_camera, smp.depth_m = T_cam, depth
            matcher.current = smp.T_patch_base_se2
            yield smp

    frames, tried = collect_nees(matcher, gen(), depth_kind="relative")
    assert tried == 10 and len(frames) == 10
    assert max(f.err_xy_m for f in frames) < 0.1 and max(f.err_yaw_deg for f in frames) < 0.5
    assert all(d is depth and k == "relative" for d, k in matcher.calls)
    matcher.calls.clear()
    collect_nees(matcher, gen(), depth_kind="none")
    assert all(d is None and k == "none" for d, k in matcher.calls)
    matcher.calls.clear()
    collect_nees(matcher, gen(), depth_kind="inverse")  # the record's metric depth is inverted
    assert all(k == "inverse" and np.allclose(d, 1.0 / 7.0) for d, k in matcher.calls)


def test_frames_the_localizer_would_reject_are_left_out():
    class Few:
        def match(self, *a):
            return Correspondences(np.zeros((5, 2)), np.zeros((5, 2)), np.ones(5))

    frames, tried = collect_nees(Few(), _samples(3, 0), LocalizerConfig(min_confident_matches=20))
    assert (frames, tried) == ([], 3)


def test_scale_stored_in_checkpoint_and_loaded(tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "m.pt", DenseFlowMatcher(preset("compact", iters=1)), half=True)
    assert load_matcher(path).covariance_scale == 1.0
    before = {k: v.clone() for k, v in torch.load(path, weights_only=True)["state_dict"].items()}
    set_covariance_scale(path, 123.5, {"median_nees_raw": 292.2})
    blob = torch.load(path, weights_only=True)
    assert blob["covariance_scale"] == 123.5 and blob["covariance_calibration"]["median_nees_raw"] == 292.2
    assert all(torch.equal(before[k], v) for k, v in blob["state_dict"].items())
    assert load_matcher(path).covariance_scale == 123.5
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(CheckpointError, match="covariance scale"):
            set_covariance_scale(path, bad)
    with pytest.raises(CheckpointError):
        set_covariance_scale(tmp_path / "missing.pt", 2.0)


class FixedEvidenceMatcher(NoisyTruthMatcher):
    """TEST DOUBLE: a NoisyTruthMatcher whose pose vote always reports ``evidence`` and whose
    checkpoint holds the covariance evidence ``model``."""

    def __init__(self, evidence: dict, model: dict, **kw):
        super().__init__(**kw)
        self.last_evidence = dict(evidence)
        self._model = dict(model)

    def covariance_evidence_for(self, depth_kind):
        return dict(self._model)


def _covariance_of_one_step(tmp_path, name: str, matcher, depth_m=None, **cfg_overrides) -> np.ndarray:
    """One localizer step with ``matcher`` (a NoisyTruthMatcher) on a synthetic tile folder;
    the estimate's (x, y, yaw) covariance in the map frame."""
    tiles = tmp_path / "tiles"
    if not tiles.is_dir():
        write_tile_folder(tiles, LAT0, LON0, ZOOM, radius_tiles=3, seed=1)
    camera = PinholeCamera.from_intrinsics(64, 32, 40.0, 40.0, 31.5, 15.5)
    T_base_camera = T_base_camera_from_xyz_rpy(1.5, 0.0, 1.6, 0.0, 0.1, 0.0)
    cfg = LocalizerConfig(patch_size_px=128, patch_m_per_px=0.5, datum_lat_deg=LAT0, datum_lon_deg=LON0,
                          map_projection="enu", cov_floor_xy_m2=1e-6, cov_floor_yaw_rad2=1e-6,
                          max_gnss_mahalanobis=50.0, **cfg_overrides)
    with TileCache(f"file://{tiles}/{{z}}/{{x}}/{{y}}.png", tmp_path / f"cache_{name}",
                   TileCacheConfig(zoom=ZOOM)) as cache:
        loc = Localizer(cfg, matcher, cache)
        lat, lon = (float(v) for v in LocalEnu(LAT0, LON0).inverse(3.0, -2.0))
        matcher.truth = (lat, lon, 0.4)
        loc.add_fix(FixSample(10**9, lat, lon, 40.0, np.eye(2) * 9.0))
        res = loc.step(Frame(10**9, np.zeros((32, 64, 3), np.uint8), camera, T_base_camera, depth_m))
        assert res.ok, res.detail
        return res.estimate.cov_xyyaw


def test_localizer_applies_the_matcher_covariance_scale(tmp_path):
    covs = []
    for scale in (None, 50.0):
        matcher = NoisyTruthMatcher(seed=4, noise_m=0.2, outlier_fraction=0.0)
        if scale is not None:
            matcher.covariance_scale = scale
        covs.append(_covariance_of_one_step(tmp_path, str(scale), matcher))
    assert np.allclose(covs[1], 50.0 * covs[0], rtol=1e-6)


def test_per_depth_kind_scales_stored_and_chosen_by_the_frame(tmp_path):
    """Sparse-depth checkpoints keep one scale per depth kind; the localizer uses the one of
    the frame's depth (flat ground = "none" when the frame has no depth map)."""
    from xview_localizer.matcher.sparse_depth import SparseDepthMatcher, sparse_preset

    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "s.pt", SparseDepthMatcher(sparse_preset("compact")), half=True)
    set_covariance_scale(path, 7.0, {"n": 1}, depth_kind="none")  # no global yet: becomes it too
    set_covariance_scale(path, 4.0, {"n": 2}, depth_kind="metric")  # metric sets the global
    set_covariance_scale(path, 3.0, {"n": 3}, depth_kind="relative")  # global stays 4
    blob = torch.load(path, weights_only=True)
    assert blob["covariance_scale"] == 4.0
    assert blob["covariance_scale_by_depth"] == {"none": 7.0, "metric": 4.0, "relative": 3.0}
    assert blob["covariance_calibration_by_depth"]["relative"] == {"n": 3}
    m = load_matcher(path)
    assert (m.covariance_scale_for("none"), m.covariance_scale_for("relative"), m.covariance_scale_for("inverse")) \
        == (7.0, 3.0, 4.0)

    class ByKind(NoisyTruthMatcher):  # TEST DOUBLE with per-kind scales, takes depth
        accepts_depth = True

        def covariance_scale_for(self, depth_kind):
            return {"metric": 2.0, "none": 10.0}[depth_kind]

        def match(self, *args, depth_m=None, depth_kind="metric"):
            return super().match(*args)

    covs = {name: _covariance_of_one_step(tmp_path, name, ByKind(seed=4, noise_m=0.2, outlier_fraction=0.0), depth,
                                          depth_kind="metric")
            for name, depth in (("metric", np.full((32, 64), 5.0, np.float32)), ("none", None))}
    assert np.allclose(covs["none"], 5.0 * covs["metric"], rtol=1e-6)


def test_evidence_factor_inflates_only_below_the_reference_mass():
    from xview_localizer.pipeline.solving import MAX_EVIDENCE_COV_FACTOR, evidence_covariance_factor

    model = {"vote_mass_ref": 0.6, "exponent": 2.0}
    assert evidence_covariance_factor({"vote_mass": 0.3}, model) == pytest.approx(4.0)
    assert evidence_covariance_factor({"vote_mass": 0.9}, model) == 1.0
    assert evidence_covariance_factor({"vote_mass": 0.0}, model) == MAX_EVIDENCE_COV_FACTOR
    assert evidence_covariance_factor({"vote_mass": 1e-9}, model) == MAX_EVIDENCE_COV_FACTOR
    # no model, no evidence, or invalid values: no inflation (never NaN)
    for ev, mo in (({"vote_mass": 0.3}, None), (None, model), ({"vote_mass": math.nan}, model),
                   ({"vote_mass": "x"}, model), ({"vote_mass": 0.3}, {"vote_mass_ref": 0.6, "exponent": math.inf}),
                   ({"vote_mass": 0.3}, {"vote_mass_ref": -1.0, "exponent": 2.0}), ({}, model)):
        assert evidence_covariance_factor(ev, mo) == 1.0


def test_fit_evidence_inflation_recovers_the_exponent_and_leaves_consistent_frames_alone():
    """Synthetic frames whose raw NEES grows like (0.6 / mass) ** 2 below the median mass 0.6:
    the fit finds p = 2, the inflated low half is as consistent as the high half, and the scale
    taken after inflation is the high half's (not pulled up by the low-mass frames)."""
    from xview_localizer.evaluation.calibration import fit_evidence_inflation, inflate_frames

    rng = np.random.default_rng(3)
    mass = np.concatenate([rng.uniform(0.2, 0.6, 200), rng.uniform(0.6, 0.95, 200)])
    base = 10.0 * rng.chisquare(3, size=400)  # raw covariance 10x too small everywhere
    nees = base * np.where(mass < 0.6, (0.6 / mass) ** 2, 1.0)
    frames = [FrameNees(str(i), 1.0, 1.0, float(e), float(m)) for i, (e, m) in enumerate(zip(nees, mass))]
    model = fit_evidence_inflation(frames)
    assert model is not None
    assert model["vote_mass_ref"] == pytest.approx(0.6, abs=0.02)
    assert model["exponent"] == pytest.approx(2.0, abs=0.5)
    plain = summarize_nees(frames, 400).covariance_scale
    inflated = summarize_nees(inflate_frames(frames, model), 400).covariance_scale
    assert inflated < plain and inflated == pytest.approx(10.0, rel=0.25)
    # frames whose NEES does not depend on the mass, or without a vote mass: no model
    flat = [FrameNees(str(i), 1.0, 1.0, float(e), float(m)) for i, (e, m) in enumerate(zip(base, mass))]
    flat_model = fit_evidence_inflation(flat)
    assert flat_model is None or flat_model["exponent"] <= 0.5
    assert fit_evidence_inflation([FrameNees(str(i), 1.0, 1.0, float(e)) for i, e in enumerate(nees)]) is None
    assert inflate_frames(frames, None) == frames


def test_evidence_model_stored_per_kind_and_applied_by_the_localizer(tmp_path):
    from xview_localizer.matcher.sparse_depth import SparseDepthMatcher, sparse_preset

    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "s.pt", SparseDepthMatcher(sparse_preset("compact")), half=True)
    set_covariance_scale(path, 7.0, {"n": 1}, depth_kind="none", evidence_model={"vote_mass_ref": 0.5, "exponent": 1.5})
    set_covariance_scale(path, 4.0, {"n": 2}, depth_kind="metric")
    m = load_matcher(path)
    assert m.covariance_evidence_for("none") == {"vote_mass_ref": 0.5, "exponent": 1.5}
    assert m.covariance_evidence_for("metric") == {}
    set_covariance_scale(path, 7.0, {"n": 1}, depth_kind="none")  # recalibrated without: removed
    assert load_matcher(path).covariance_evidence_for("none") == {}
    with pytest.raises(CheckpointError, match="exponent"):
        set_covariance_scale(path, 7.0, depth_kind="none", evidence_model={"vote_mass_ref": 0.5, "exponent": math.nan})

    model = {"vote_mass_ref": 0.6, "exponent": 2.0}
    covs = {mass: _covariance_of_one_step(tmp_path, f"m{mass}", FixedEvidenceMatcher(
        {"vote_peak": 0.1, "vote_margin": 0.1, "vote_mass": mass}, model, seed=4, noise_m=0.2, outlier_fraction=0.0))
        for mass in (0.9, 0.3)}
    assert np.allclose(covs[0.3], 4.0 * covs[0.9], rtol=1e-6)


def test_evidence_factor_peak_term_multiplies_the_mass_term_and_is_capped():
    from xview_localizer.pipeline.solving import MAX_EVIDENCE_COV_FACTOR, evidence_covariance_factor

    model = {"vote_mass_ref": 0.6, "exponent": 2.0, "vote_peak_ref": 0.5, "peak_exponent": 3.0}
    assert evidence_covariance_factor({"vote_mass": 0.9, "vote_peak": 0.25}, model) == pytest.approx(8.0)
    assert evidence_covariance_factor({"vote_mass": 0.3, "vote_peak": 0.25}, model) == pytest.approx(32.0)
    assert evidence_covariance_factor({"vote_mass": 0.3, "vote_peak": 0.7}, model) == pytest.approx(4.0)
    assert evidence_covariance_factor({"vote_mass": 0.3}, model) == pytest.approx(4.0)  # no peak: that term is 1
    peak_only = {"vote_peak_ref": 0.5, "peak_exponent": 3.0}
    assert evidence_covariance_factor({"vote_mass": 0.01, "vote_peak": 0.25}, peak_only) == pytest.approx(8.0)
    assert evidence_covariance_factor({"vote_mass": 1e-6, "vote_peak": 1e-6}, model) == MAX_EVIDENCE_COV_FACTOR
    assert evidence_covariance_factor({"vote_mass": 0.9, "vote_peak": -0.1}, model) == MAX_EVIDENCE_COV_FACTOR
    assert evidence_covariance_factor({"vote_mass": 0.9, "vote_peak": math.nan}, model) == 1.0


def test_fit_peak_inflation_recovers_the_exponent_from_shifted_frames_and_ignores_gated_ones():
    """Unshifted frames with peaks in [0.5, 0.8] and consistent NEES; shifted copies whose peaks
    fall to [0.25, 0.5] and whose raw NEES grows like (q_ref / peak) ** 3 below the unshifted
    10 % quantile: the fit finds q_ref there and r = 3, and frames below the gate's vote mass
    (whatever their NEES) do not move it."""
    from xview_localizer.evaluation.calibration import PEAK_REF_QUANTILE, fit_peak_inflation, inflate_frames

    rng = np.random.default_rng(5)
    peak_c = rng.uniform(0.5, 0.8, 300)
    q_ref = float(np.quantile(peak_c, PEAK_REF_QUANTILE))
    nees_c = 10.0 * rng.chisquare(3, 300) * np.where(peak_c < q_ref, (q_ref / peak_c) ** 3, 1.0)
    clean = [FrameNees(str(i), 1.0, 1.0, float(e), 0.9, float(p)) for i, (e, p) in enumerate(zip(nees_c, peak_c))]
    peak_s = rng.uniform(0.25, 0.55, 200)
    nees_s = 10.0 * rng.chisquare(3, 200) * np.where(peak_s < q_ref, (q_ref / peak_s) ** 3, 1.0)
    shifted = [FrameNees(f"s{i}", 1.0, 1.0, float(e), 0.9, float(p)) for i, (e, p) in enumerate(zip(nees_s, peak_s))]
    gated = [FrameNees(f"g{i}", 50.0, 30.0, 1e6, 0.1, 0.3) for i in range(100)]  # wild, but never published
    model = fit_peak_inflation(clean, shifted + gated, None, min_vote_mass=0.3)
    assert model is not None
    assert model["vote_peak_ref"] == pytest.approx(q_ref)
    assert model["peak_exponent"] == pytest.approx(3.0, abs=0.75)
    assert model["n_low_shifted"] > 100
    after = inflate_frames(clean + shifted, model)
    low = [f.nees_raw for f in after if f.vote_peak < q_ref]
    high = [f.nees_raw for f in after if f.vote_peak >= q_ref]
    assert np.median(low) == pytest.approx(np.median(high), rel=0.3)
    # peaks that say nothing about the NEES, or too few frames: no model
    flat = [FrameNees(f.sample_id, 1.0, 1.0, 10.0 * float(rng.chisquare(3)), 0.9, f.vote_peak) for f in clean + shifted]
    flat_model = fit_peak_inflation(flat[:300], flat[300:])
    assert flat_model is None or flat_model["peak_exponent"] <= 1.0
    assert fit_peak_inflation(clean[:10], shifted) is None


def test_shift_record_changes_the_pixels_deterministically_and_keeps_the_geometry():
    import dataclasses

    from xview_localizer.evaluation.calibration import DEFAULT_SHIFT, shift_record
    from xview_localizer.train.augment import PhotometricAugment

    @dataclasses.dataclass(frozen=True)
    class Rec:  # the fields shift_record touches, plus one it must leave alone
        id: str
        ground_rgb: np.ndarray
        sat_rgb: np.ndarray
        T_patch_base: tuple

    rng = np.random.default_rng(0)
    rec = Rec("000007", rng.integers(0, 256, (32, 64, 3), dtype=np.uint8), rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
              (1.0, 2.0, 0.3))
    shift = PhotometricAugment(**DEFAULT_SHIFT)
    a, b = shift_record(rec, shift, seed=1), shift_record(rec, shift, seed=1)
    assert np.array_equal(a.ground_rgb, b.ground_rgb) and np.array_equal(a.sat_rgb, b.sat_rgb)
    assert a.ground_rgb.dtype == np.uint8 and a.ground_rgb.shape == rec.ground_rgb.shape
    assert np.abs(a.ground_rgb.astype(int) - rec.ground_rgb).mean() > 5.0
    assert np.abs(a.sat_rgb.astype(int) - rec.sat_rgb).mean() > 5.0
    assert a.T_patch_base == rec.T_patch_base
    assert not np.array_equal(shift_record(rec, shift, seed=2).ground_rgb, a.ground_rgb)


def test_peak_inflation_model_stored_and_validated(tmp_path):
    from xview_localizer.matcher.sparse_depth import SparseDepthMatcher, sparse_preset

    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "s.pt", SparseDepthMatcher(sparse_preset("compact")), half=True)
    both = {"vote_mass_ref": 0.5, "exponent": 1.5, "vote_peak_ref": 0.52, "peak_exponent": 6.0}
    set_covariance_scale(path, 7.0, {"n": 1}, depth_kind="none", evidence_model=both)
    assert load_matcher(path).covariance_evidence_for("none") == both
    set_covariance_scale(path, 7.0, {"n": 1}, depth_kind="none", evidence_model={"vote_peak_ref": 0.52, "peak_exponent": 6.0})
    assert load_matcher(path).covariance_evidence_for("none") == {"vote_peak_ref": 0.52, "peak_exponent": 6.0}
    for bad in ({"vote_peak_ref": 0.52}, {"vote_mass_ref": 0.5, "exponent": 1.5, "peak_exponent": 6.0},
                {"vote_peak_ref": 0.52, "peak_exponent": -1.0}, {"median_nees_low": 3.0}):
        with pytest.raises(CheckpointError):
            set_covariance_scale(path, 7.0, depth_kind="none", evidence_model=bad)


def test_localizer_applies_the_peak_inflation(tmp_path):
    model = {"vote_peak_ref": 0.5, "peak_exponent": 2.0}  # peak-only
    covs = {peak: _covariance_of_one_step(tmp_path, f"p{peak}", FixedEvidenceMatcher(
        {"vote_peak": peak, "vote_margin": 0.1, "vote_mass": 0.9}, model, seed=4, noise_m=0.2, outlier_fraction=0.0))
        for peak in (0.6, 0.25)}
    assert np.allclose(covs[0.25], 4.0 * covs[0.6], rtol=1e-6)


def test_evidence_factor_uses_the_posterior_mass_when_the_vote_had_a_position_prior():
    from xview_localizer.pipeline.solving import evidence_covariance_factor

    model = {"vote_mass_ref": 0.6, "exponent": 2.0}
    # two equal places, the GNSS prior ruled one out: appearance mass 0.3, posterior mass 0.6
    assert evidence_covariance_factor({"vote_mass": 0.3, "vote_mass_posterior": 0.6}, model) == 1.0
    assert evidence_covariance_factor({"vote_mass": 0.3}, model) == pytest.approx(4.0)
