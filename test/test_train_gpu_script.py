"""``scripts/train_gpu.sh`` (issue 14, requirement 6) at a tiny CPU configuration: parallel styled
data, time-boxed resumable fine-tuning, covariance and gate calibration, the benchmark table; the
outputs land in the folder given as its argument."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_train_gpu_script_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu_out"
    env = {**os.environ, "TINY": "1", "DEVICE": "cpu", "JOBS": "2", "PY": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "train_gpu.sh"), str(out)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    blob = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert blob["model"] == "sparse-depth" and blob["step"] == 3
    assert set(blob["covariance_scale_by_depth"]) == {"none", "metric"} and "evidence_gate" in blob
    report = json.loads((out / "benchmark.json").read_text())
    assert set(report) >= {"train_styles", "heldout_styles", "_meta"}
    assert set(report["train_styles"]["known"]) == {"prior", "candidate", "default", "dense_flow"}
    assert "| heldout_styles | unknown | candidate |" in (out / "benchmark.md").read_text()
    t = json.loads((out / "timings.json").read_text())
    assert t["device"] == "cpu" and t["total_s"] > 0
    assert (out / "train" / "last.pt").is_file() and (out / "train" / "train_log.csv").is_file()
