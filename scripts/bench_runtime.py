#!/usr/bin/env python3
"""Which inference runtime pays on this machine (issue 15, requirement 3)? For both packaged
matchers, the per-frame network work with the satellite features already at hand (what a frame
costs with area features): the ground encoder(s) and the matching stages, under

* ``eager``        - torch eager under ``torch.no_grad`` (what the node ran before),
* ``inference``    - ``torch.inference_mode`` (no autograd bookkeeping at all),
* ``channels_last``- weights and images in NHWC memory format,
* ``compile``      - ``torch.compile`` of the ground encoder(s) (inductor, C++ on CPU),
* ``bf16``         - CPU autocast to bfloat16 (accuracy checked),
* ``onnxruntime``  - the ground encoder(s) exported to ONNX, run by ONNX Runtime
  (``pip install onnxruntime``; skipped when absent),
* ``int8``         - dynamic int8 quantization: the encoders are convolutions, which dynamic
  quantization does not touch (only Linear/LSTM), so the row shows it changes nothing.

Each variant's outputs are compared with eager on ``--pairs`` held-out pairs: the largest pose
difference (m, deg) and, with ``--eval-pairs DIR``, the median position error of a benchmark
run (so "accuracy must not drop by more than 2 %" is checked where it matters).

    .venv/bin/python scripts/bench_runtime.py [--threads 2] [--repeats 20] [--json OUT.json]
        [--eval-pairs /tmp/xview_styled/pairs_test_heldout_styles] [--pairs 40]

Timings: median (and p90) of ``--repeats`` calls after warm-up, batch 1, one process, the
variants interleaved round-robin so machine noise hits them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = ("eager", "inference", "channels_last", "compile", "bf16", "onnxruntime", "int8")


def _onnx_encoder(module, example, path: Path):
    """Export ``module`` (one image in, one or two tensors out) to ONNX and wrap an ORT session
    as a torch-in / torch-out callable, or None when onnxruntime is missing."""
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        return None
    torch.onnx.export(module, (example,), str(path), input_names=["image"], opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(x):
        outs = sess.run(None, {"image": x.detach().cpu().numpy()})
        t = [torch.from_numpy(o) for o in outs]
        return t[0] if len(t) == 1 else tuple(t)

    return run


def _as_module(fn):
    """A plain callable as an ``nn.Module`` (a model's child must be one)."""
    import torch

    class _Fn(torch.nn.Module):
        def forward(self, x):
            return fn(x)

    return _Fn()


def _variant(name: str, matcher, tmp: Path):
    """Patch ``matcher`` for a variant; returns (context manager factory, description) or None."""
    import torch

    model = matcher.model
    sparse = hasattr(model, "score_head")
    h, w = model.cfg.ground_size_px
    example = torch.rand(1, 3, h, w)
    if name in ("eager", "int8"):
        if name == "int8":
            q = torch.ao.quantization.quantize_dynamic(model.ground_encoder, {torch.nn.Linear}, dtype=torch.qint8)
            model.ground_encoder = q
        return contextlib.nullcontext
    if name == "inference":
        return torch.inference_mode
    if name == "channels_last":
        model.to(memory_format=torch.channels_last)
        enc = model.ground_encoder
        fwd = enc.forward
        enc.forward = lambda x: fwd(x.contiguous(memory_format=torch.channels_last))
        return contextlib.nullcontext
    if name == "bf16":  # the wrapper's own autocast (off on CPU) would override an outer one
        matcher._autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext
    if name == "compile":
        model.ground_encoder = torch.compile(model.ground_encoder, dynamic=False)
        if not sparse:
            model.context_encoder = torch.compile(model.context_encoder, dynamic=False)
        return contextlib.nullcontext
    if name == "onnxruntime":
        enc = _onnx_encoder(model.ground_encoder, example, tmp / f"{'sparse' if sparse else 'dense'}_ground.onnx")
        if enc is None:
            return None
        if not sparse:
            ctx = _onnx_encoder(model.context_encoder, example, tmp / "dense_context.onnx")
            model.context_encoder = _as_module(ctx)
        model.ground_encoder = _as_module(enc)
        return contextlib.nullcontext
    raise ValueError(name)


def _frame_inputs(matcher):
    """A synthetic frame (timing does not depend on content) and its satellite features."""
    from xview_localizer.core.camera import PinholeCamera, kitti_like_T_base_camera
    from xview_localizer.tiles.patch import PatchGeoref

    rng = np.random.default_rng(0)
    cam = PinholeCamera.from_intrinsics(512, 128, 393.0, 393.0, 255.5, 63.5)
    ground = rng.integers(0, 256, (128, 512, 3), dtype=np.uint8)
    s = matcher.sat_input_size_px
    sat = rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    geo = PatchGeoref(49.0, 8.4, 0.4, s, s)
    feats = matcher.encode_sat_area(sat)
    return ground, cam, kitti_like_T_base_camera(), sat, geo, feats


def _pose_of(matcher, rec, yaw):
    kw = {"depth_m": None, "depth_kind": "none"} if getattr(matcher, "accepts_depth", False) else {}
    corr = matcher.match(rec.ground_rgb, rec.camera, rec.T_base_camera, rec.sat_rgb, rec.georef, yaw, **kw)
    return np.asarray(matcher.last_T_patch_base[0], float), corr


def main(argv: list[str] | None = None) -> int:
    import torch

    from xview_localizer.matcher.factory import resolve_checkpoint_path
    from xview_localizer.matcher.inference import load_matcher

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--matchers", nargs="+", default=["sparse_depth", "dense_flow"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--eval-pairs", type=Path, default=None, help="pair directory for the accuracy check")
    ap.add_argument("--pairs", type=int, default=40, help="pairs of --eval-pairs to compare on")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--tmp", type=Path, default=Path("/tmp/xview_bench_runtime"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.tmp.mkdir(parents=True, exist_ok=True)
    recs = []
    if args.eval_pairs:
        from xview_localizer.train.pairs import PairDataset

        ds = PairDataset(args.eval_pairs, load_depth=False)
        recs = [ds[i] for i in range(min(args.pairs, len(ds)))]

    results: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                                 "torch": torch.__version__}, "rows": []}
    for mname in args.matchers:
        ckpt = resolve_checkpoint_path(mname)
        ref = load_matcher(ckpt, "cpu")
        ground, cam, T, sat, geo, feats = _frame_inputs(ref)
        ref_poses = [_pose_of(ref, r, float(r.prior_yaw_rad))[0] for r in recs]
        runners = {}
        for v in args.variants:
            m = load_matcher(ckpt, "cpu")
            try:
                ctx = _variant(v, m, args.tmp)
            except Exception as exc:  # noqa: BLE001 - a runtime that fails here is a result too
                print(f"[{mname}] {v}: unavailable ({type(exc).__name__}: {str(exc)[:120]})", flush=True)
                results["rows"].append({"matcher": mname, "variant": v, "error": f"{type(exc).__name__}: {exc}"})
                continue
            if ctx is None:
                print(f"[{mname}] {v}: skipped (onnxruntime not installed)", flush=True)
                continue
            t0 = time.perf_counter()
            with ctx():
                for _ in range(3):  # warm-up (compile happens here)
                    m.match(ground, cam, T, sat, geo, 0.3, sat_features=feats)
            runners[v] = (m, ctx, time.perf_counter() - t0)
        times = {v: [] for v in runners}
        stages = {v: {} for v in runners}
        for _ in range(args.repeats):
            for v, (m, ctx, _w) in runners.items():
                with ctx():
                    t0 = time.perf_counter()
                    m.match(ground, cam, T, sat, geo, 0.3, sat_features=feats)
                    times[v].append(time.perf_counter() - t0)
                for k, s in m.last_timings_s.items():
                    stages[v].setdefault(k, []).append(s)
        base = statistics.median(times["eager"]) if "eager" in times else None
        for v, (m, ctx, warm_s) in runners.items():
            ts = sorted(times[v])
            row = {"matcher": mname, "variant": v, "p50_ms": 1e3 * statistics.median(ts),
                   "p90_ms": 1e3 * ts[int(0.9 * (len(ts) - 1))], "warmup_s": warm_s,
                   "stages_p50_ms": {k: 1e3 * statistics.median(x) for k, x in stages[v].items()}}
            if base:
                row["speedup"] = base / statistics.median(ts)
            if recs:
                with ctx():
                    poses = [_pose_of(m, r, float(r.prior_yaw_rad))[0] for r in recs]
                d = np.array([np.hypot(*(p[:2] - q[:2])) for p, q in zip(poses, ref_poses)])
                dyaw = np.array([abs(math.remainder(p[2] - q[2], 2 * math.pi)) for p, q in zip(poses, ref_poses)])
                err = np.array([np.hypot(p[0] - r.T_patch_base_se2.x_m, p[1] - r.T_patch_base_se2.y_m)
                                for p, r in zip(poses, recs)])
                err_ref = np.array([np.hypot(p[0] - r.T_patch_base_se2.x_m, p[1] - r.T_patch_base_se2.y_m)
                                    for p, r in zip(ref_poses, recs)])
                row.update({"max_pose_diff_m": float(d.max()), "max_yaw_diff_deg": float(np.degrees(dyaw.max())),
                            "median_err_m": float(np.median(err)), "median_err_eager_m": float(np.median(err_ref)),
                            "accuracy_change_pct": 100.0 * (float(np.median(err)) / max(float(np.median(err_ref)), 1e-9) - 1.0)})
            results["rows"].append(row)
    print(f"\nCPU {results['machine']['cpu']}, torch {torch.__version__}, {args.threads} threads, "
          f"median of {args.repeats} (ms, network work per frame with satellite features given)")
    print("| matcher | runtime | p50 ms | p90 ms | speed-up | max pose diff (m / deg) | median err change |")
    print("|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        if "error" in r:
            print(f"| {r['matcher']} | {r['variant']} | - | - | - | unavailable: {r['error'][:60]} | - |")
            continue
        acc = (f"{r['max_pose_diff_m']:.3f} / {r['max_yaw_diff_deg']:.2f}" if "max_pose_diff_m" in r else "-")
        chg = f"{r['accuracy_change_pct']:+.1f} %" if "accuracy_change_pct" in r else "-"
        print(f"| {r['matcher']} | {r['variant']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
              f"{r.get('speedup', float('nan')):.2f}x | {acc} | {chg} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
