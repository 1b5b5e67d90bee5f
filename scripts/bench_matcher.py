#!/usr/bin/env python3
"""Benchmark the dense-flow matcher: per-stage latency and peak memory, both presets, CPU and
CUDA (when present), batch 1, inference (no grad; fp16 autocast on CUDA like the node).

Stages: sat_encoder, ground_encoders (ground + context), bev_projection (grid_sample +
RefineBlocks), correlation (all-pairs volume + pyramid), gru_iter_<k> (lookup + update), procrustes.
Each (preset, device) runs in a fresh subprocess so the CPU peak RSS (ru_maxrss) is its own.

    .venv/bin/python scripts/bench_matcher.py [--presets compact paper] [--devices cpu cuda]
                                              [--repeats 3] [--threads N] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench_one(preset_name: str, device: str, repeats: int, threads: int | None) -> dict:
    import resource

    import torch

    sys.path.insert(0, str(REPO))
    from xview_localizer.matcher.dense_flow import DenseFlowMatcher, preset

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = preset(preset_name)
    model = DenseFlowMatcher(cfg).to(device).eval()
    c = cfg.feature_cells
    dev = torch.device(device)
    ground = torch.rand(1, 3, *cfg.ground_size_px, device=dev)
    sat = torch.rand(1, 3, cfg.sat_size_px, cfg.sat_size_px, device=dev)
    grid = torch.rand(1, c, c, 2, device=dev) * 2 - 1
    valid = torch.ones(1, c, c, device=dev)
    m_px = torch.tensor([102.4 / cfg.sat_size_px], device=dev)
    yaw = torch.tensor([0.3], device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = torch.autocast("cuda", dtype=torch.float16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    runs: list[dict[str, float]] = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for r in range(repeats + 1):  # first run = warm-up
        times: dict[str, float] = {}
        sync()
        t_last = [time.perf_counter()]
        t0 = t_last[0]

        def on_stage(name: str, times=times, t_last=t_last) -> None:
            sync()
            now = time.perf_counter()
            times[name] = (now - t_last[0]) * 1e3
            t_last[0] = now

        with torch.no_grad(), amp:
            model(ground, grid, valid, sat, m_px, yaw, on_stage=on_stage)
        sync()
        times["total"] = (time.perf_counter() - t0) * 1e3
        if r > 0:
            runs.append(times)
    med = {k: sorted(run[k] for run in runs)[len(runs) // 2] for k in runs[0]}
    out = {
        "preset": preset_name,
        "device": device,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "ground_size_px": list(cfg.ground_size_px),
        "sat_size_px": cfg.sat_size_px,
        "iters": cfg.iters,
        "repeats": repeats,
        "latency_ms_median": {k: round(v, 2) for k, v in med.items()},
        "gru_iter_ms_mean": round(sum(v for k, v in med.items() if k.startswith("gru_iter_")) / cfg.iters, 2),
    }
    if dev.type == "cuda":
        out["peak_cuda_mem_MiB"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    out["peak_rss_MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["compact", "paper"])
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--one", nargs=2, metavar=("PRESET", "DEVICE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(bench_one(args.one[0], args.one[1], args.repeats, args.threads)))
        return 0
    devices = args.devices
    if devices is None:
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    for dev in devices:
        for p in args.presets:
            cmd = [sys.executable, __file__, "--one", p, dev, "--repeats", str(args.repeats)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{p}/{dev}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(res)
            lat = res["latency_ms_median"]
            stages = ", ".join(f"{k} {v:.1f}" for k, v in lat.items() if not k.startswith("gru_iter_") and k != "total")
            mem = f"peak RSS {res['peak_rss_MiB']:.0f} MiB" + (
                f", peak CUDA {res['peak_cuda_mem_MiB']:.0f} MiB" if "peak_cuda_mem_MiB" in res else "")
            print(f"[{p} on {res['device_name']}] total {lat['total']:.1f} ms | {stages} | "
                  f"GRU {res['gru_iter_ms_mean']:.1f} ms/iter x {res['iters']} | {mem} | {res['params_M']:.2f} M params")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
