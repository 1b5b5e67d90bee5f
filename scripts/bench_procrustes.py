#!/usr/bin/env python3
"""Benchmark xview_localizer.core.procrustes: speed at N points (numpy and torch CPU, with and
without IRLS) and accuracy at a noise level with a fraction of gross outliers.

Usage:
    .venv/bin/python scripts/bench_procrustes.py [--out bench_procrustes.json]
        [--n-points 4096] [--repeats 20] [--trials 50] [--sigma-m 0.5] [--outlier-frac 0.3]

Prints a table and writes a JSON file (default ``bench_procrustes.json`` in the cwd).
Accuracy scenes: a random SE2 truth (|t| <= 5 m, any yaw), src uniform in +-20 m, dst =
T(src) + N(0, sigma^2) per axis, then ``outlier_frac`` of dst replaced by uniform +-50 m.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from xview_localizer.core import procrustes as P
from xview_localizer.core.se2 import SE2


def _scene(seed: int, n: int, sigma_m: float, outlier_frac: float):
    rng = np.random.default_rng(seed)
    T = SE2(rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-math.pi, math.pi))
    src = rng.uniform(-20.0, 20.0, (n, 2))
    dst = T.apply(src) + rng.normal(0.0, sigma_m, (n, 2))
    n_out = int(round(outlier_frac * n))
    idx = rng.permutation(n)[:n_out]
    dst[idx] = rng.uniform(-50.0, 50.0, (n_out, 2))
    w = rng.uniform(0.5, 1.0, n)
    return T, src, dst, w


def _time_ms(fn, repeats: int) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def run(n_points: int, repeats: int, trials: int, sigma_m: float, outlier_frac: float) -> dict:
    _, src, dst, w = _scene(0, n_points, sigma_m, outlier_frac)
    src_t = torch.tensor(src[None], dtype=torch.float32)
    dst_t = torch.tensor(dst[None], dtype=torch.float32)
    w_t = torch.tensor(w[None], dtype=torch.float32)
    plain = P.ProcrustesConfig(kernel="none")
    robust = P.ProcrustesConfig(kernel="cauchy")
    timing = {
        "numpy_weighted_fit": _time_ms(lambda: P.weighted_procrustes(src, dst, w), repeats),
        "numpy_solve_no_irls": _time_ms(lambda: P.solve_arrays(src, dst, w, config=plain), repeats),
        "numpy_solve_irls_cauchy": _time_ms(lambda: P.solve_arrays(src, dst, w, config=robust), repeats),
        "torch_cpu_fit_B1": _time_ms(lambda: P.procrustes_torch(src_t, dst_t, w_t), repeats),
        "torch_cpu_irls_cauchy_5it_B1": _time_ms(
            lambda: P.robust_procrustes_torch(src_t, dst_t, w_t, iterations=5), repeats
        ),
    }
    last = P.solve_arrays(src, dst, w, config=robust)
    timing["numpy_solve_irls_cauchy"]["iterations"] = last.iterations

    acc: dict[str, dict] = {}
    for name, cfg in (("none", plain), ("huber", P.ProcrustesConfig(kernel="huber")), ("cauchy", robust)):
        xy, yaw = [], []
        for k in range(trials):
            T, s, d, ww = _scene(1000 + k, n_points, sigma_m, outlier_frac)
            res = P.solve_arrays(s, d, ww, config=cfg)
            xy.append(math.hypot(res.T_patch_base.x_m - T.x_m, res.T_patch_base.y_m - T.y_m))
            yaw.append(math.degrees(abs(math.remainder(res.T_patch_base.yaw_rad - T.yaw_rad, 2 * math.pi))))
        acc[f"numpy_{name}"] = {
            "xy_err_mean_m": float(np.mean(xy)), "xy_err_max_m": float(np.max(xy)),
            "yaw_err_mean_deg": float(np.mean(yaw)), "yaw_err_max_deg": float(np.max(yaw)),
        }
    xy, yaw = [], []
    for k in range(trials):
        T, s, d, ww = _scene(1000 + k, n_points, sigma_m, outlier_frac)
        pose, _ = P.robust_procrustes_torch(
            torch.tensor(s[None]), torch.tensor(d[None]), torch.tensor(ww[None]), iterations=5
        )
        xy.append(math.hypot(pose.x_m.item() - T.x_m, pose.y_m.item() - T.y_m))
        yaw.append(math.degrees(abs(math.remainder(pose.yaw_rad.item() - T.yaw_rad, 2 * math.pi))))
    acc["torch_cauchy_5it"] = {
        "xy_err_mean_m": float(np.mean(xy)), "xy_err_max_m": float(np.max(xy)),
        "yaw_err_mean_deg": float(np.mean(yaw)), "yaw_err_max_deg": float(np.max(yaw)),
    }
    return {
        "config": {
            "n_points": n_points, "repeats": repeats, "trials": trials,
            "sigma_m": sigma_m, "outlier_frac": outlier_frac,
        },
        "machine": {
            "python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
        },
        "timing": timing,
        "accuracy": acc,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench_procrustes.json"), help="JSON output path")
    ap.add_argument("--n-points", type=int, default=4096, help="correspondences per solve")
    ap.add_argument("--repeats", type=int, default=20, help="timed repetitions per method")
    ap.add_argument("--trials", type=int, default=50, help="seeded accuracy trials")
    ap.add_argument("--sigma-m", type=float, default=0.5, help="inlier noise per axis (m)")
    ap.add_argument("--outlier-frac", type=float, default=0.3, help="fraction of gross outliers")
    args = ap.parse_args(argv)
    if args.n_points < 10 or args.repeats < 1 or args.trials < 1 or not 0 <= args.outlier_frac < 0.9:
        ap.error("need --n-points >= 10, --repeats >= 1, --trials >= 1, 0 <= --outlier-frac < 0.9")
    result = run(args.n_points, args.repeats, args.trials, args.sigma_m, args.outlier_frac)
    print(f"N = {args.n_points} correspondences")
    for name, t in result["timing"].items():
        print(f"  {name:32s} median {t['median_ms']:8.3f} ms   min {t['min_ms']:8.3f} ms")
    print(f"accuracy, sigma {args.sigma_m} m, {args.outlier_frac:.0%} outliers, {args.trials} trials:")
    for name, a in result["accuracy"].items():
        print(
            f"  {name:18s} xy mean {a['xy_err_mean_m']:.4f} m (max {a['xy_err_max_m']:.4f})   "
            f"yaw mean {a['yaw_err_mean_deg']:.4f} deg (max {a['yaw_err_max_deg']:.4f})"
        )
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
