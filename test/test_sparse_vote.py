"""Tests of the pose vote of the depth-prior sparse matcher (vote_pose, yaw_hypotheses,
match_descriptors centred on the vote's prediction, vote_ce_loss)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xview_localizer.core.errors import ConfigError, GeometryError
from xview_localizer.matcher.sparse_depth import (
    SparseDepthConfig,
    SparseDepthMatcher,
    match_descriptors,
    pose_from_correspondences,
    sat_cell_to_patch_m,
    sparse_preset,
    vote_pose,
    yaw_hypotheses,
)
from xview_localizer.train.losses_sparse import SparseLossConfig, vote_ce_loss

CELLS, M_CELL = 64, 1.6
CFG = sparse_preset("compact")


def _oracle_similarity(src, yaw_rad, t_xy, scale, gen, distractors=3):
    """(1, K, CELLS, CELLS) similarity maps with a peak (1.0) at each keypoint's true cell and
    ``distractors`` equally strong wrong peaks per keypoint elsewhere (an ambiguous texture)."""
    k = src.shape[1]
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    east = scale * (c * src[0, :, 0] - s * src[0, :, 1]) + t_xy[0]
    north = scale * (s * src[0, :, 0] + c * src[0, :, 1]) + t_xy[1]
    half = (CELLS - 1) / 2
    j = torch.round(east / M_CELL + half).long()
    i = torch.round(half - north / M_CELL).long()
    sim = torch.zeros(1, k, CELLS, CELLS)
    inside = (i >= 0) & (i < CELLS) & (j >= 0) & (j < CELLS)
    sim[0, torch.arange(k)[inside], i[inside], j[inside]] = 1.0
    for _ in range(distractors):
        ri = torch.randint(0, CELLS, (k,), generator=gen)
        rj = torch.randint(0, CELLS, (k,), generator=gen)
        sim[0, torch.arange(k), ri, rj] = 1.0
    return sim


def _src(gen, k=80):
    # points 5..30 m ahead, +-15 m sideways (base_link, metres)
    return torch.rand(1, k, 2, generator=gen) * torch.tensor([25.0, 30.0]) + torch.tensor([5.0, -15.0])


@pytest.mark.parametrize("yaw_known", [True, False])
@pytest.mark.parametrize("yaw_deg", [-172.0, -40.0, 95.0])
def test_vote_finds_true_pose_among_ambiguous_matches(yaw_known, yaw_deg):
    """Each keypoint has its true cell and 3 equally strong wrong cells: the global argmax of a
    keypoint is right only 1 time in 4, the vote's consensus is right."""
    gen = torch.Generator().manual_seed(1)
    src = _src(gen)
    yaw_rad = math.radians(yaw_deg)
    t = (6.4, -9.6)  # on the 2-cell translation grid
    sim = _oracle_similarity(src, yaw_rad, t, 1.0, gen)
    prior = torch.tensor([yaw_rad + math.radians(7.0)]) if yaw_known else None
    vote = vote_pose(sim, src, torch.ones(1, src.shape[1]), True, torch.tensor([M_CELL]), prior, CFG,
                     torch.tensor(20.0))
    step = CFG.known_yaw_step_deg if yaw_known else 360.0 / CFG.unknown_yaw_bins
    # the max-pooled lookup tolerates a cell, so neighbouring yaw bins can tie: within 1.5 bins
    assert abs(math.degrees(math.remainder(float(vote.best_yaw_rad[0]) - yaw_rad, 2 * math.pi))) <= 1.5 * step
    # the predicted keypoint cells are within a couple of cells of the true ones
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    half = (CELLS - 1) / 2
    u_true = half + (c * src[0, :, 0] - s * src[0, :, 1] + t[0]) / M_CELL
    v_true = half - (s * src[0, :, 0] + c * src[0, :, 1] + t[1]) / M_CELL
    err = torch.hypot(vote.best_centre_cells[0, :, 0] - u_true, vote.best_centre_cells[0, :, 1] - v_true)
    assert float(err.median()) < 2.0, err
    # centred windows + Procrustes recover the pose to well under a cell
    desc_sim = sim.flatten(2) * 20.0
    uv, conf, _ = _match_from_similarity(desc_sim, vote.best_centre_cells)
    dst = sat_cell_to_patch_m(uv, CELLS, torch.tensor([M_CELL]))
    pose, _ = pose_from_correspondences(src, dst, conf, True, torch.zeros(1, 2))
    assert math.hypot(float(pose[0, 0]) - t[0], float(pose[0, 1]) - t[1]) < 1.0
    assert abs(math.remainder(float(pose[0, 2]) - yaw_rad, 2 * math.pi)) < math.radians(2.0)


def _match_from_similarity(logits, centre):
    """match_descriptors on one-hot 'descriptors' whose dot products are ``logits``: the
    satellite features are the identity basis over cells."""
    b, k, p = logits.shape
    sat = torch.eye(p).reshape(1, p, CELLS, CELLS)
    desc = logits / 20.0
    return match_descriptors(desc, sat, torch.tensor(20.0), 3, centre)


def test_vote_recovers_relative_depth_scale():
    gen = torch.Generator().manual_seed(2)
    src_m = _src(gen)
    s_true = 2.0  # metres per relative unit
    src_rel = src_m / s_true
    sim = _oracle_similarity(src_rel, 0.3, (-3.2, 3.2), s_true, gen)
    vote = vote_pose(sim, src_rel, torch.ones(1, src_rel.shape[1]), False, torch.tensor([M_CELL]),
                     torch.tensor([0.3]), CFG, torch.tensor(20.0))
    assert vote.logits.shape[2] == CFG.vote_scales
    assert abs(math.log(float(vote.best_scale[0]) / s_true)) < 0.2


def test_match_descriptors_window_follows_given_centre():
    """With a centre, the soft-argmax window sits there even when the global argmax is
    elsewhere; without one it sits at the global argmax."""
    sat = F.normalize(torch.randn(1, 8, 16, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    desc = sat[0, :, 2, 3][None, None]  # the feature of cell (row 2, col 3)
    uv, conf, _ = match_descriptors(desc, sat, torch.tensor(50.0), 1)
    assert torch.allclose(uv[0, 0], torch.tensor([3.0, 2.0]), atol=0.2)
    uv_c, conf_c, _ = match_descriptors(desc, sat, torch.tensor(50.0), 1, torch.tensor([[[12.2, 11.8]]]))
    assert abs(float(uv_c[0, 0, 0]) - 12) <= 1.0 and abs(float(uv_c[0, 0, 1]) - 12) <= 1.0
    assert float(conf_c) < float(conf)
    # a centre far off the map: window empty, confidence 0, nothing NaN
    uv_o, conf_o, _ = match_descriptors(desc, sat, torch.tensor(50.0), 1, torch.tensor([[[1e9, float("nan")]]]))
    assert torch.isfinite(uv_o).all() and float(conf_o) == 0.0


def test_yaw_hypotheses_known_and_unknown():
    h = yaw_hypotheses(torch.tensor([0.5, -3.0]), 2, CFG, torch.device("cpu"))
    n = 2 * int(CFG.known_yaw_range_deg / CFG.known_yaw_step_deg) + 1
    assert h.shape == (2, n)
    assert torch.allclose(h[:, n // 2], torch.tensor([0.5, -3.0]))
    u = yaw_hypotheses(None, 3, CFG, torch.device("cpu"))
    assert u.shape == (3, CFG.unknown_yaw_bins) and float(u.min()) >= -math.pi - 1e-6 and float(u.max()) < math.pi
    assert torch.allclose(u[0, 1] - u[0, 0], torch.tensor(2 * math.pi / CFG.unknown_yaw_bins))


def test_vote_ce_loss_low_at_truth_high_elsewhere_and_pose_only():
    gen = torch.Generator().manual_seed(3)
    src = _src(gen)
    yaw_rad, t = 1.0, (3.2, 6.4)
    sim = _oracle_similarity(src, yaw_rad, t, 1.0, gen, distractors=0)

    class Out:  # the fields vote_ce_loss reads
        scale_known = True

    out = Out()
    out.vote = vote_pose(sim, src, torch.ones(1, src.shape[1]), True, torch.tensor([M_CELL]), torch.tensor([yaw_rad]),
                         CFG, torch.tensor(50.0))
    good = vote_ce_loss(out, torch.tensor([[t[0], t[1], yaw_rad]]))
    bad = vote_ce_loss(out, torch.tensor([[t[0] - 12.8, t[1] + 12.8, yaw_rad]]))
    assert float(good) < 2.0 and float(bad) > float(good) + 5.0, (float(good), float(bad))
    out.vote = None
    assert float(vote_ce_loss(out, torch.zeros(1, 3))) == 0.0


def test_vote_config_validation_and_bad_prior_shape():
    for bad in ({"vote_radius_cells": -1}, {"vote_step_cells": 0}, {"unknown_yaw_bins": 0},
                {"known_yaw_step_deg": 0.0}, {"vote_scale_range": (2.0, 1.0)}, {"init_vote_inv_temperature": -1.0}):
        with pytest.raises(ConfigError):
            sparse_preset("compact", **bad)
    with pytest.raises(ConfigError, match="vote_ce_weight"):
        SparseLossConfig(vote_ce_weight=float("nan"))
    cfg = SparseDepthConfig(name="tiny", ground_size_px=(32, 96), sat_size_px=64, encoder_widths=(8, 16, 16),
                            feature_dim=16, num_keypoints=8)
    assert SparseDepthConfig.from_dict(cfg.to_dict()) == cfg
    model = SparseDepthMatcher(cfg)
    n = cfg.ground_cells[0] * cfg.ground_cells[1]
    args = (torch.rand(1, 3, 32, 96), torch.rand(1, 3, 64, 64), torch.tensor([0.5]),
            torch.tensor([[0.0, 0.0, -1.0]]).repeat(1, n, 1) + torch.tensor([1.0, 0.0, 0.0]),
            torch.ones(1, n, dtype=torch.bool), torch.tensor([[0.0, 0.0, 1.6]]), torch.zeros(1, n, 2))
    with pytest.raises(GeometryError, match="prior_yaw_rad"):
        model(*args, prior_yaw_rad=torch.zeros(2))
    out = model(*args, prior_yaw_rad=torch.zeros(1))
    assert out.vote is not None and torch.isfinite(out.T_patch_base).all()


def test_vote_evidence_margin_is_small_for_a_rival_and_large_for_a_lone_peak():
    """The low-evidence gate's input: a lone peak has a large margin; an equally good rival
    place (far in translation) or heading (far in yaw) drives it to ~0; near hypotheses do not
    count as rivals."""
    from xview_localizer.matcher.sparse_depth import PoseVote, SparseDepthConfig, vote_evidence

    cfg = SparseDepthConfig()
    j, t_side = 5, 9
    g = torch.arange(-(t_side // 2), t_side // 2 + 1, dtype=torch.float32) * cfg.vote_step_cells
    gv, gu = torch.meshgrid(g, g, indexing="ij")
    offsets = torch.stack([gu.reshape(-1), gv.reshape(-1)], -1)
    yaws = torch.deg2rad(torch.arange(-2, 3, dtype=torch.float32) * cfg.known_yaw_step_deg)[None]
    inv_t = torch.tensor(20.0)

    def vote(scores):
        logits = scores.reshape(1, j, 1, -1) * inv_t
        z = torch.zeros(1)
        return PoseVote(logits, yaws, torch.ones(1), offsets, torch.zeros(1, 1, 2), z, torch.ones(1), torch.ones(1),
                        torch.zeros(1, 2))

    centre = (t_side * t_side) // 2
    lone = torch.full((j, t_side * t_side), 0.1)
    lone[2, centre] = 0.5
    lone[2, centre + 1] = 0.45  # a neighbour (one step away): not a rival
    ev = vote_evidence(vote(lone), inv_t, cfg)
    assert ev["vote_peak"][0] == pytest.approx(0.5) and ev["vote_margin"][0] == pytest.approx(0.4, abs=1e-5)
    rival = lone.clone()
    rival[2, 0] = 0.49  # the far corner: another place
    assert vote_evidence(vote(rival), inv_t, cfg)["vote_margin"][0] == pytest.approx(0.01, abs=1e-5)
    heading = lone.clone()
    heading[0, centre] = 0.495  # -5 deg at the same place: two yaw steps, not a rival ...
    assert vote_evidence(vote(heading), inv_t, cfg)["vote_margin"][0] == pytest.approx(0.4, abs=1e-5)
    m = vote_evidence(vote(lone), inv_t, cfg)["vote_mass"][0]
    assert 0.0 < m <= 1.0


@pytest.mark.parametrize("r", [1, 2])
def test_max_filter2d_equals_max_pool2d(r):
    from xview_localizer.matcher.sparse_depth import max_filter2d

    x = torch.randn(3, 5, 17, 13, generator=torch.Generator().manual_seed(r))
    want = F.max_pool2d(x.reshape(15, 1, 17, 13), 2 * r + 1, 1, r).reshape(3, 5, 17, 13)
    assert torch.equal(max_filter2d(x, r), want)
    assert torch.equal(max_filter2d(x, 0), x)


def _reference_scores(sim, src, w, scale_known, m_per_cell, prior, cfg):
    """The vote's hypothesis scores, written the plain way: every (yaw, scale, offset, keypoint)
    cell rounded on its own, outside cells masked."""
    from xview_localizer.matcher.sparse_depth import max_filter2d, yaw_hypotheses

    b, k, hs, ws = sim.shape
    s = max_filter2d(sim, cfg.vote_pool_cells).reshape(b, k, -1)
    yaws = yaw_hypotheses(prior, b, cfg, sim.device)
    lo, hi = cfg.vote_scale_range
    scales = torch.ones(1) if scale_known else torch.exp(torch.linspace(math.log(lo), math.log(hi), cfg.vote_scales))
    n = cfg.vote_radius_cells // cfg.vote_step_cells
    g = torch.arange(-n, n + 1, dtype=torch.float32) * cfg.vote_step_cells
    gv, gu = torch.meshgrid(g, g, indexing="ij")
    cy, sy = torch.cos(yaws)[..., None], torch.sin(yaws)[..., None]
    east = cy * src[:, None, :, 0] - sy * src[:, None, :, 1]
    north = sy * src[:, None, :, 0] + cy * src[:, None, :, 1]
    m = m_per_cell.view(b, 1, 1, 1)
    du = scales.view(1, 1, -1, 1) * east[:, :, None] / m
    dv = -scales.view(1, 1, -1, 1) * north[:, :, None] / m
    c = (hs - 1) / 2.0
    u = torch.round(c + du[..., None, :] + gu.reshape(1, 1, 1, -1, 1)).long()
    v = torch.round(c + dv[..., None, :] + gv.reshape(1, 1, 1, -1, 1)).long()
    inside = (u >= 0) & (u < ws) & (v >= 0) & (v < hs)
    idx = (v.clamp(0, hs - 1) * ws + u.clamp(0, ws - 1)).reshape(b, -1, k).transpose(1, 2)
    picked = torch.gather(s, 2, idx) * inside.reshape(b, -1, k).transpose(1, 2).float()
    return (picked * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-6)


@pytest.mark.parametrize("scale_known,known_yaw", [(True, True), (True, False), (False, True)])
def test_vote_index_arithmetic_equals_the_plain_formula(scale_known, known_yaw):
    cfg = SparseDepthConfig()
    g = torch.Generator().manual_seed(3)
    sim = torch.rand(2, 32, 64, 64, generator=g) * 2 - 1
    src = (torch.rand(2, 32, 2, generator=g) - 0.5) * 120  # reaching far outside the map too
    w = torch.rand(2, 32, generator=g)
    mpc = torch.tensor([1.6, 1.2])
    prior = torch.tensor([0.3, -2.0]) if known_yaw else None
    vote = vote_pose(sim, src, w, scale_known, mpc, prior, cfg, torch.tensor(1.0), torch.zeros(2, 2))
    want = _reference_scores(sim, src, w, scale_known, mpc, prior, cfg)
    assert torch.allclose(vote.logits.reshape(2, -1), want, atol=1e-5)


def test_position_prior_picks_the_place_near_the_fix_of_two_equal_ones():
    """The same scene fits two places 16 m apart equally well (a repeated street): with a flat
    prior the vote cannot tell them apart; a Gaussian prior (sigma 4 m) about either place makes
    that one win, and the evidence keeps the appearance's mass (the prior does not make the
    vote confident) while the posterior mass near the winner grows."""
    from xview_localizer.matcher.sparse_depth import vote_evidence

    gen = torch.Generator().manual_seed(3)
    src = _src(gen)
    places = ((6.4, -9.6), (6.4, 6.4))
    sim = torch.maximum(_oracle_similarity(src, 0.2, places[0], 1.0, gen, 0),
                        _oracle_similarity(src, 0.2, places[1], 1.0, gen, 0))
    args = (sim, src, torch.ones(1, src.shape[1]), True, torch.tensor([M_CELL]), torch.tensor([0.2]), CFG,
            torch.tensor(20.0))
    inv_t = torch.tensor(20.0)
    flat = vote_pose(*args)
    flat_ev = vote_evidence(flat, inv_t, CFG)
    info = torch.eye(2)[None] / 4.0 ** 2
    for want in places:
        vote = vote_pose(*args, None, info, torch.tensor([want]))
        t = vote.offset_cells[vote.logits.reshape(-1).argmax() % vote.logits.shape[-1]] * M_CELL
        assert math.hypot(float(t[0]) - want[0], float(-t[1]) - want[1]) < 2 * M_CELL, (t, want)
        ev = vote_evidence(vote, inv_t, CFG)
        assert ev["vote_peak"][0] == pytest.approx(flat_ev["vote_peak"][0], abs=0.05)
        assert ev["vote_mass"][0] < 0.75  # half the appearance's mass is at the other place
        assert ev["vote_mass_posterior"][0] > ev["vote_mass"][0] + 0.2
    assert "vote_mass_posterior" not in flat_ev


def test_position_log_prior_places_base_link_for_relative_depth():
    """For relative depth the translation places the camera centre: base_link is at t - R(yaw)
    cam_xy, and the log density is -0.5 d^T Lambda d about the mean."""
    from xview_localizer.matcher.sparse_depth import position_log_prior

    info = torch.tensor([[[0.25, 0.0], [0.0, 1.0]]])
    yaws = torch.tensor([[0.0, math.pi / 2]])
    offsets = torch.tensor([[0.0, 0.0], [2.0, -1.0]])  # (du, dv) cells
    lp = position_log_prior(info, yaws, offsets, torch.tensor([1.5]), torch.tensor([[1.0, 0.0]]),
                            torch.tensor([[0.5, 0.5]]))
    assert lp.shape == (1, 2, 1, 2)
    for j, yaw in enumerate((0.0, math.pi / 2)):
        for k, (du, dv) in enumerate(((0.0, 0.0), (2.0, -1.0))):
            east, north = du * 1.5 - math.cos(yaw) * 1.0, -dv * 1.5 - math.sin(yaw) * 1.0
            de, dn = east - 0.5, north - 0.5
            assert float(lp[0, j, 0, k]) == pytest.approx(-0.5 * (0.25 * de * de + dn * dn), abs=1e-5)
