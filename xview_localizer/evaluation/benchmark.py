"""Side-by-side evaluation of matchers on held-out pair sets, as the localizer runs them
(issue 14, requirement 4; ROS-free). CLI: ``xview-localizer benchmark``.

For every pair set (e.g. held-out worlds in the training styles, held-out worlds in held-out
styles), every orientation protocol (``known``: the pair's prior yaw, KITTI +-10 deg; ``unknown``:
no yaw for a matcher that searches the circle, ``unknown_yaw_hypotheses`` tries for one that does
not, a yaw drawn uniformly for the prior row) and every matcher, each pair is localized like one
frame of :class:`~xview_localizer.pipeline.localizer.Localizer`:

* match, keep confident correspondences, robust Procrustes (``solve_confident``), camera-centred
  conversion for relative depth; several yaw tries -> the best-supported one, ambiguity check;
* the per-frame gates of the localizer: ``too_few_matches`` / ``solver_degenerate``, the
  low-evidence gate (``low_evidence``, sparse-depth vote margin), the GNSS gate (Mahalanobis of
  estimate vs prior with the prior's covariance: the uniform +-``offset_range_m`` box has sigma
  ``offset / sqrt(3)`` per axis), the prior-yaw gate when the yaw is known;
* covariance = solver covariance x the checkpoint's calibrated scale for the depth kind (with
  its evidence inflation) x ``cov_inflation``, floored as published.

Errors are reported over ALL pairs (a rejected or failed frame counts with the prior's pose, as
a filter would keep the GNSS) and over the ACCEPTED ones, next to the prior's error on the same
accepted pairs; NEES (3 dof) of the accepted ones. The prior row is the patch centre with the
prior yaw. Temporal gates (odometry, fix jumps) need a drive: ``make demo`` / ``replay``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from ..core import procrustes
from ..core.errors import LocalizationRejected
from ..core.se2 import wrap_angle_rad
from ..pipeline.config import LocalizerConfig
from ..pipeline.localizer import (
    check_yaw_ambiguity,
    floor_covariance,
    gate_threshold,
    match_and_solve_all,
    matcher_covariance_scale,
    yaw_tries,
)
from ..train.metrics import pose_errors
from .calibration import pair_depth_kwargs

__all__ = ["PairOutcome", "localize_pair", "run_benchmark", "summarize", "format_markdown", "calibrate_gate",
           "gate_table", "apply_gate"]


@dataclass
class PairOutcome:
    """One pair through one matcher: the pose used (estimate, or prior when rejected), whether
    the localizer would publish it, why not, the NEES and covariance of an accepted one, the vote
    evidence."""

    sample_id: str
    T_true: tuple[float, float, float]
    T_used: tuple[float, float, float]
    T_prior: tuple[float, float, float]
    accepted: bool
    reason: str = ""
    nees: float = float("nan")
    evidence: dict = field(default_factory=dict)
    T_est: Optional[tuple[float, float, float]] = None
    cov_xyyaw: Optional[list] = None  # 3x3 (x, y, yaw) covariance as published, accepted ones only


def localize_pair(matcher: Any, rec: Any, cfg: LocalizerConfig, *, prior_yaw_rad: Optional[float],
                  depth_kind: str, prior_sigma_m: float, min_vote_mass: float = 0.0,
                  pcfg: Optional[procrustes.ProcrustesConfig] = None) -> PairOutcome:
    """Localize one :class:`~xview_localizer.train.pairs.PairSample` (see the module docstring).
    ``prior_yaw_rad`` None = unknown orientation. ``min_vote_mass`` > 0 enables the gate."""
    pcfg = pcfg or procrustes.ProcrustesConfig()
    T = rec.T_patch_base_se2
    T_true = (T.x_m, T.y_m, T.yaw_rad)
    T_prior = (0.0, 0.0, float(rec.prior_yaw_rad if prior_yaw_rad is None else prior_yaw_rad))
    out = PairOutcome(str(rec.id), T_true, T_prior, T_prior, False)
    depth_kw = pair_depth_kwargs(matcher, rec, depth_kind)
    cands, first = match_and_solve_all(matcher, rec.ground_rgb, rec.camera, rec.T_base_camera, rec.sat_rgb,
                                       rec.georef, yaw_tries(matcher, prior_yaw_rad, cfg), depth_kw, cfg, pcfg)
    if not cands:
        out.reason = first.reason if first else "matcher_failed"
        return out
    best = max(cands, key=lambda c: c[3])
    sol, evidence = best[2], best[4] or {}
    out.evidence = evidence
    est = sol.T_patch_base
    out.T_est = (est.x_m, est.y_m, est.yaw_rad)
    try:
        check_yaw_ambiguity(best, cands, cfg)
    except LocalizationRejected as rej:
        out.reason = rej.reason
        return out
    if min_vote_mass > 0 and evidence and evidence.get("vote_mass", math.inf) < min_vote_mass:
        out.reason = "low_evidence"
        return out
    scale = matcher_covariance_scale(matcher, depth_kind, evidence)
    cov = floor_covariance(cfg.cov_inflation * scale * np.asarray(sol.cov_xyyaw, float),
                            cfg.cov_floor_xy_m2, cfg.cov_floor_yaw_rad2)
    d = np.array([est.x_m, est.y_m])  # the prior is the patch centre
    s = cov[:2, :2] + np.eye(2) * prior_sigma_m ** 2
    if math.sqrt(max(float(d @ np.linalg.solve(s, d)), 0.0)) > cfg.max_gnss_mahalanobis:
        out.reason = "gnss_inconsistent"
        return out
    if prior_yaw_rad is not None and abs(wrap_angle_rad(est.yaw_rad - prior_yaw_rad)) > cfg.max_prior_yaw_deviation_rad:
        out.reason = "yaw_inconsistent"
        return out
    e = np.array([est.x_m - T.x_m, est.y_m - T.y_m, float(wrap_angle_rad(est.yaw_rad - T.yaw_rad))])
    try:
        out.nees = float(e @ np.linalg.solve(cov, e))
    except np.linalg.LinAlgError:
        out.nees = float("inf")
    out.accepted = True
    out.T_used = out.T_est
    out.cov_xyyaw = cov.tolist()
    return out


def _metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    if len(gt) == 0:
        return {"n": 0}
    e = pose_errors(pred, gt)
    r = lambda x, t: float(np.mean(x <= t))  # noqa: E731
    return {"n": int(len(gt)), "median_m": float(np.median(e["xy_m"])), "mean_m": float(np.mean(e["xy_m"])),
            "lat_r1": r(e["lateral_m"], 1.0), "lat_r5": r(e["lateral_m"], 5.0),
            "lon_r1": r(e["longitudinal_m"], 1.0), "lon_r5": r(e["longitudinal_m"], 5.0),
            "yaw_median_deg": float(np.median(e["yaw_deg"])), "yaw_r1": r(e["yaw_deg"], 1.0)}


def summarize(outcomes: Sequence[PairOutcome]) -> dict[str, Any]:
    """Metrics over all pairs (the pose used), over the accepted ones, the prior on those, the
    acceptance share, rejection reasons and the NEES band (3 dof) of the accepted."""
    gt = np.array([o.T_true for o in outcomes], float).reshape(-1, 3)
    used = np.array([o.T_used for o in outcomes], float).reshape(-1, 3)
    prior = np.array([o.T_prior for o in outcomes], float).reshape(-1, 3)
    acc = np.array([o.accepted for o in outcomes], bool)
    nees = np.array([o.nees for o in outcomes if o.accepted], float)
    reasons: dict[str, int] = {}
    for o in outcomes:
        if not o.accepted:
            reasons[o.reason] = reasons.get(o.reason, 0) + 1
    res = {"all": _metrics(used, gt), "accepted": _metrics(used[acc], gt[acc]),
           "prior_on_accepted": _metrics(prior[acc], gt[acc]), "accepted_share": float(acc.mean()) if len(acc) else 0.0,
           "rejected": reasons}
    if len(nees):
        res["nees_per_dof"] = {"median": float(np.median(nees) / 3), "mean": float(np.mean(nees) / 3),
                               "p10": float(np.percentile(nees, 10) / 3), "p90": float(np.percentile(nees, 90) / 3)}
    return res


def run_benchmark(matchers: dict[str, Any], sets: dict[str, Any], *, orientations: Sequence[str] = ("known", "unknown"),
                  depth_kind: str = "none", max_samples: Optional[int] = None, cfg: Optional[LocalizerConfig] = None,
                  seed: int = 0, gates: Optional[dict[str, float]] = None, progress=None) -> dict[str, Any]:
    """``{set: {orientation: {"prior": summary, matcher: summary, ...}}}`` plus per-pair
    outcomes under ``"_pairs"``. ``matchers``: name -> loaded matcher; ``sets``: name ->
    PairDataset; ``gates``: name -> the matcher's ``evidence_gate`` dict (absent = off)."""
    cfg = cfg or LocalizerConfig()
    gates = gates or {}
    result: dict[str, Any] = {}
    pairs_out: dict[str, Any] = {}
    for sname, ds in sets.items():
        n = len(ds) if max_samples is None else min(len(ds), max_samples)
        recs = [ds[i] for i in range(n)]
        offset = float(getattr(ds, "meta", {}).get("offset_range_m", 20.0))
        sigma = max(offset / math.sqrt(3.0), 0.5)
        rng = np.random.default_rng([seed, 23])
        random_yaws = rng.uniform(-math.pi, math.pi, n)
        result[sname] = {}
        for orient in orientations:
            prior_yaws = [float(r.prior_yaw_rad) for r in recs] if orient == "known" else [float(y) for y in random_yaws]
            block: dict[str, Any] = {}
            prior_out = [PairOutcome(str(r.id), (r.T_patch_base_se2.x_m, r.T_patch_base_se2.y_m, r.T_patch_base_se2.yaw_rad),
                                     (0.0, 0.0, y), (0.0, 0.0, y), True) for r, y in zip(recs, prior_yaws)]
            block["prior"] = summarize(prior_out)
            for mname, m in matchers.items():
                outs = []
                for r, y in zip(recs, prior_yaws):
                    o = localize_pair(m, r, cfg, prior_yaw_rad=y if orient == "known" else None,
                                      depth_kind=depth_kind, prior_sigma_m=sigma,
                                      min_vote_mass=gate_threshold(gates.get(mname), orient == "known"))
                    o.T_prior = (0.0, 0.0, y)
                    if not o.accepted:
                        o.T_used = o.T_prior
                    outs.append(o)
                    if progress:
                        progress()
                block[mname] = summarize(outs)
                pairs_out[f"{sname}/{orient}/{mname}"] = [asdict(o) for o in outs]
            result[sname][orient] = block
    result["_pairs"] = pairs_out
    return result


def apply_gate(result: dict[str, Any], matcher: str, gate: dict) -> dict[str, Any]:
    """``result`` with matcher ``matcher``'s rows re-summarized as if its low-evidence gate had
    been ``gate``: accepted pairs with a smaller vote mass become 'low_evidence'
    (the gate runs before the GNSS and yaw gates, so nothing else changes). Per-pair outcomes
    of ``result`` must have been collected without that gate."""
    out = {k: v for k, v in result.items()}
    pairs = dict(result["_pairs"])
    for key, rows in result["_pairs"].items():
        sname, orient, mname = key.split("/")
        if mname != matcher:
            continue
        thr = gate_threshold(gate, orient == "known")
        new = []
        for p in rows:
            o = PairOutcome(**{**p, "T_true": tuple(p["T_true"]), "T_used": tuple(p["T_used"]),
                               "T_prior": tuple(p["T_prior"]),
                               "T_est": None if p["T_est"] is None else tuple(p["T_est"])})
            if o.accepted and thr > 0 and o.evidence and o.evidence.get("vote_mass", math.inf) < thr:
                o.accepted, o.reason, o.nees, o.T_used = False, "low_evidence", float("nan"), o.T_prior
                o.cov_xyyaw = None
            new.append(o)
        out[sname] = {**out[sname], orient: {**out[sname][orient], mname: summarize(new)}}
        pairs[key] = [asdict(o) for o in new]
    out["_pairs"] = pairs
    return out


def format_markdown(result: dict[str, Any]) -> str:
    """The status table: one row per (set, orientation, matcher)."""
    head = ("| set | orientation | matcher | n | median m | mean m | lat ≤1 m | lat ≤5 m | lon ≤1 m | lon ≤5 m | "
            "yaw median ° | yaw ≤1° | accepted | accepted median / mean m | prior on accepted median / mean m | "
            "NEES/dof median [p10, p90] |")
    lines = [head, "|" + "---|" * 16]
    for sname, block in result.items():
        if sname.startswith("_"):
            continue
        for orient, rows in block.items():
            for mname, s in rows.items():
                a, acc, pa = s["all"], s["accepted"], s["prior_on_accepted"]
                if not a.get("n"):
                    continue
                accs = (f"{acc['median_m']:.2f} / {acc['mean_m']:.2f}" if acc.get("n") else "-")
                pas = (f"{pa['median_m']:.2f} / {pa['mean_m']:.2f}" if pa.get("n") else "-")
                ne = s.get("nees_per_dof")
                nes = f"{ne['median']:.2f} [{ne['p10']:.2f}, {ne['p90']:.2f}]" if ne and mname != "prior" else "-"
                lines.append(
                    f"| {sname} | {orient} | {mname} | {a['n']} | {a['median_m']:.2f} | {a['mean_m']:.2f} | "
                    f"{a['lat_r1']:.0%} | {a['lat_r5']:.0%} | {a['lon_r1']:.0%} | {a['lon_r5']:.0%} | "
                    f"{a['yaw_median_deg']:.1f} | {a['yaw_r1']:.0%} | {s['accepted_share']:.0%} | {accs} | {pas} | {nes} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# low-evidence gate
# ----------------------------------------------------------------------------------------------
def _gate_rows(pairs: Iterable[dict]) -> list[tuple[float, float, float]]:
    """(vote mass, estimate error m, prior error m) of the pairs the other gates accepted."""
    rows = []
    for p in pairs:
        if p.get("T_est") is None or not p.get("evidence"):
            continue
        if not p["accepted"] and p["reason"] != "low_evidence":
            continue
        t, e, pr = p["T_true"], p["T_est"], p["T_prior"]
        rows.append((float(p["evidence"]["vote_mass"]), math.hypot(e[0] - t[0], e[1] - t[1]),
                     math.hypot(pr[0] - t[0], pr[1] - t[1])))
    return rows


def gate_table(pairs: Iterable[dict], thresholds: Sequence[float]) -> list[dict[str, float]]:
    """Precision / recall of the gate at each threshold, over the pairs the other gates accept:
    "good" = the estimate beats the prior. precision = good share of the kept; recall = kept
    share of the good; bad_rejected = rejected share of the bad."""
    return _gate_table(_gate_rows(pairs), thresholds)


def _gate_table(rows: list[tuple[float, float, float]], thresholds: Sequence[float]) -> list[dict[str, float]]:
    good = [r for r in rows if r[1] < r[2]]
    bad = [r for r in rows if r[1] >= r[2]]
    out = []
    for thr in thresholds:
        kept = [r for r in rows if r[0] >= thr]
        kept_good = [r for r in kept if r[1] < r[2]]
        out.append({"min_vote_mass": float(thr), "n": len(rows), "kept": len(kept),
                    "precision": len(kept_good) / len(kept) if kept else float("nan"),
                    "recall": len(kept_good) / len(good) if good else float("nan"),
                    "bad_rejected": (len(bad) - (len(kept) - len(kept_good))) / len(bad) if bad else float("nan"),
                    "kept_median_m": float(np.median([r[1] for r in kept])) if kept else float("nan"),
                    "kept_mean_m": float(np.mean([r[1] for r in kept])) if kept else float("nan")})
    return out


def calibrate_gate(pairs: Iterable[dict], target_precision: float = 0.97, min_recall: float = 0.5) -> float:
    """The smallest vote-mass threshold whose kept pairs beat the prior with at least
    ``target_precision`` while keeping ``min_recall`` of the good ones (0 when no gate is needed,
    the threshold of best precision above ``min_recall`` when the target cannot be met)."""
    rows = _gate_rows(pairs)
    if not rows:
        return 0.0
    cands = sorted({0.0, *[r[0] for r in rows]})
    best_thr, best_prec = 0.0, -1.0
    for row in _gate_table(rows, cands):
        if row["recall"] >= min_recall and row["precision"] >= target_precision:
            return row["min_vote_mass"]
        if row["recall"] >= min_recall and row["precision"] > best_prec:
            best_thr, best_prec = row["min_vote_mass"], row["precision"]
    return best_thr


def write_json(result: dict[str, Any], path: Path) -> None:
    Path(path).write_text(json.dumps(result, indent=1, default=float))
