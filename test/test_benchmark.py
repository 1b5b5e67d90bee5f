"""``xview-localizer benchmark`` (issue 14, requirement 4) on a tiny held-out set: the packaged
default matcher, dense-flow and the prior side by side, per set and orientation protocol, with the
localizer's per-frame gates; the low-evidence gate calibrated and stored in a checkpoint copy."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest

from xview_localizer.matcher.factory import packaged_checkpoint_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    from xview_localizer.sim.dataset import DatasetConfig, export_pairs
    from xview_localizer.sim.style import write_styled_world

    root = tmp_path_factory.mktemp("bench")
    out = {}
    for name, seed, family in (("train_styles", 1004, "town_grid"), ("heldout_styles", 2004, "winter_snow")):
        write_styled_world(seed, family, root / f"w{seed}", size_m=300.0, zoom_max=19, zoom_min=19)
        out[name] = export_pairs([root / f"w{seed}"], root / name,
                                 DatasetConfig(pairs=2, width_px=512, height_px=128, seed=seed), progress=False)
    return out


def test_benchmark_command_prints_the_side_by_side_table(sets, tmp_path):
    cand = tmp_path / "sparse_copy.pt"  # the gate is written into it
    shutil.copy(packaged_checkpoint_dir() / "sparse_depth_compact.pt", cand)
    cmd = [sys.executable, "-m", "xview_localizer.cli", "benchmark",
           "--set", f"train_styles={sets['train_styles']}", "--set", f"heldout_styles={sets['heldout_styles']}",
           "--matcher", f"default={cand}", "--matcher", "dense_flow=dense_flow",
           "--out", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "t.md"),
           "--calibrate-gate", "default", "--gate-set", "train_styles", "--write"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = (tmp_path / "t.md").read_text()
    for s in ("train_styles", "heldout_styles"):
        for o in ("known", "unknown"):
            for m in ("prior", "default", "dense_flow"):
                assert f"| {s} | {o} | {m} | 2 |" in table, (s, o, m)
    assert "low-evidence gate of 'default'" in proc.stdout
    r = json.loads((tmp_path / "r.json").read_text())
    blk = r["train_styles"]["known"]
    assert blk["prior"]["accepted_share"] == 1.0
    for m in ("default", "dense_flow"):
        assert 0.0 <= blk[m]["accepted_share"] <= 1.0
        assert math.isfinite(blk[m]["all"]["median_m"]) and blk[m]["all"]["n"] == 2
    # the prior row's errors are the pairs' offsets
    recs = [json.loads(x) for x in (sets["train_styles"] / "pairs.jsonl").read_text().splitlines()]
    offs = sorted(math.hypot(*rec["T_patch_base"][:2]) for rec in recs)
    assert blk["prior"]["all"]["median_m"] == pytest.approx(sum(offs) / 2, abs=1e-6)
    # the gate went into the copy, not the packaged checkpoint
    from xview_localizer.matcher.inference import load_matcher

    assert set(load_matcher(str(cand), "cpu").evidence_gate) == {"min_vote_mass", "min_vote_mass_unknown_yaw"}
    assert r["_meta"]["gate"]["matcher"] == "default"
    # recalibrating one orientation keeps the checkpoint's threshold for the other
    unknown_before = load_matcher(str(cand), "cpu").evidence_gate["min_vote_mass_unknown_yaw"]
    cmd = [sys.executable, "-m", "xview_localizer.cli", "benchmark", "--set", f"train_styles={sets['train_styles']}",
           "--matcher", f"default={cand}", "--orientation", "known", "--calibrate-gate", "default", "--write"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kept from the checkpoint (orientation not run here)" in proc.stdout
    gate = load_matcher(str(cand), "cpu").evidence_gate
    assert gate["min_vote_mass_unknown_yaw"] == unknown_before and "min_vote_mass" in gate


def test_calibrate_covariance_solves_the_shifted_pairs_too(sets, tmp_path):
    """The peak-inflation pass: the calibration pairs are solved a second time photometrically
    shifted (their frames are in the report); two pairs are too few for a fit, which the command
    says, and it still stores the scale. --no-peak-inflation skips the pass."""
    cand = tmp_path / "sparse_copy.pt"
    shutil.copy(packaged_checkpoint_dir() / "sparse_depth_compact.pt", cand)
    base = [sys.executable, "-m", "xview_localizer.cli", "calibrate-covariance", "--checkpoint", str(cand),
            "--dataset", str(sets["train_styles"]), "--depth-kind", "none"]
    proc = subprocess.run(base + ["--out", str(tmp_path / "c.json"), "--write"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "peak_inflation" in proc.stdout and "none (too few frames" in proc.stdout
    assert "stored covariance_scale" in proc.stdout
    rep = json.loads((tmp_path / "c.json").read_text())
    assert len(rep["frames_shifted"]) == len(rep["frames"]) > 0
    assert [f["sample_id"] for f in rep["frames_shifted"]] == [f["sample_id"] for f in rep["frames"]]
    assert all(math.isfinite(f["vote_peak"]) for f in rep["frames_shifted"])
    import torch  # the checkpoint keeps the summary, not the per-frame lists

    stored = torch.load(cand, weights_only=True)["covariance_calibration_by_depth"]["none"]
    assert "frames" not in stored and "frames_shifted" not in stored and "peak_inflation" in stored
    # the shift lowers how well the descriptors match
    assert (sum(f["vote_peak"] for f in rep["frames_shifted"]) < sum(f["vote_peak"] for f in rep["frames"]))
    proc = subprocess.run(base + ["--no-peak-inflation", "--out", str(tmp_path / "d.json")], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "peak_inflation" not in proc.stdout and json.loads((tmp_path / "d.json").read_text())["frames_shifted"] == []
    bad = subprocess.run(base + ["--shift-json", '{"p_hue": 2.0}'], capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "PhotometricAugment" in (bad.stdout + bad.stderr)
