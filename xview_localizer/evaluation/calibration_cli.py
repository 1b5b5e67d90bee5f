"""``xview-localizer calibrate-covariance``: measure and store a checkpoint's covariance scale.

    xview-localizer calibrate-covariance --checkpoint C --dataset PAIRS [--max-samples N]
                                         [--out JSON] [--write] [--device cpu|cuda]
                                         [--depth-kind metric|relative|inverse|none]

Runs the matcher on held-out pairs the way the localizer does (:mod:`xview_localizer.evaluation.calibration`),
prints the NEES figures before and after scaling, writes them as JSON (``--out``) and, with
``--write``, stores ``covariance_scale`` in the checkpoint (atomically; weights untouched).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import add_command, add_device_option

    p = add_command(sub, "calibrate-covariance",
                    help="measure a checkpoint's covariance scale (NEES on held-out pairs) and store it",
                    description="Run the matcher on held-out pairs the way the localizer does, print the "
                    "NEES (normalised estimation error squared) figures of its covariance before and after "
                    "scaling, write them as JSON (--out) and, with --write, store the covariance_scale in "
                    "the checkpoint (atomically; the weights are untouched).",
                    examples=["xview-localizer calibrate-covariance --dataset pairs/heldout --out nees.json",
                              "xview-localizer calibrate-covariance --checkpoint runs/sd1/model.pt "
                              "--dataset pairs/heldout --write"])
    p.add_argument("--checkpoint", default="",
                   help="matcher checkpoint: '' = the packaged default (sparse_depth_compact.pt), a packaged "
                        "name (sparse_depth, dense_flow, or its file name), or a path to a .pt")
    p.add_argument("--dataset", required=True, help="pair directory (xview-localizer sim dataset), held out")
    p.add_argument("--max-samples", type=int, default=200, help="use at most this many pairs")
    p.add_argument("--out", default=None, help="JSON report path")
    p.add_argument("--write", action="store_true", help="store covariance_scale in the checkpoint")
    add_device_option(p, "the matcher")
    p.add_argument("--depth-kind", default="metric", choices=["metric", "relative", "inverse", "none"],
                   help="sparse-depth checkpoints: the depth the matcher gets (the pairs' metric depth map, "
                        "used as is for relative/inverse; none = flat ground); ignored for dense-flow")
    p.add_argument("--evidence-inflation", action=argparse.BooleanOptionalAction, default=True,
                   help="sparse-depth: also fit the covariance inflation for frames with a low pose-vote "
                        "mass (stored per depth kind; --no-evidence-inflation removes it)")
    p.add_argument("--peak-inflation", action=argparse.BooleanOptionalAction, default=True,
                   help="sparse-depth: also solve the pairs photometrically shifted (--shift-json) and fit the "
                        "covariance inflation for frames whose pose-vote peak is below nearly all unshifted "
                        "ones, the sign of an unseen look (stored per depth kind; --no-peak-inflation removes it)")
    p.add_argument("--shift-json", default=None,
                   help="the photometric shift for --peak-inflation, as PhotometricAugment fields in JSON "
                        "(default: calibration.DEFAULT_SHIFT, every colour transform, hue up to 120 deg)")
    p.add_argument("--seed", type=int, default=0, help="seed of the photometric shift")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..cli import resolve_device
    from ..matcher.checkpoint import set_covariance_scale
    from ..matcher.factory import resolve_checkpoint_path
    from ..matcher.inference import load_matcher
    from ..train.pairs import PairDataset
    from ..core.errors import ConfigError
    from ..pipeline.solving import gate_threshold
    from ..train.augment import PhotometricAugment
    from .calibration import (DEFAULT_SHIFT, collect_nees, fit_evidence_inflation, fit_peak_inflation,
                              inflate_frames, shift_record, summarize_nees)

    checkpoint = resolve_checkpoint_path(args.checkpoint, must_exist=True)  # '' / packaged name / path
    matcher = load_matcher(checkpoint, resolve_device(args.device))
    pairs = PairDataset(Path(args.dataset), load_depth=bool(getattr(matcher, "accepts_depth", False)))
    n = min(len(pairs), int(args.max_samples))
    samples = (pairs[i] for i in range(n))
    frames, tried = collect_nees(matcher, tqdm(samples, total=n, desc="calibrate"), depth_kind=args.depth_kind)
    model = fit_evidence_inflation(frames) if args.evidence_inflation else None
    peak, frames_shifted = None, []
    if args.peak_inflation and getattr(matcher, "accepts_depth", False):
        try:
            shift = PhotometricAugment(**(json.loads(args.shift_json) if args.shift_json else DEFAULT_SHIFT))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--shift-json: not PhotometricAugment fields in JSON: {exc}") from exc
        samples = (pairs[i] for i in range(n))
        frames_shifted, _ = collect_nees(matcher, tqdm(samples, total=n, desc="calibrate, shifted"),
                                         depth_kind=args.depth_kind,
                                         transform=lambda rec: shift_record(rec, shift, args.seed))
        peak = fit_peak_inflation(frames, frames_shifted, model,
                                  min_vote_mass=gate_threshold(getattr(matcher, "evidence_gate", None), True))
    full = {**{k: model[k] for k in ("vote_mass_ref", "exponent") if model},
            **{k: peak[k] for k in ("vote_peak_ref", "peak_exponent") if peak}} or None
    summary = summarize_nees(inflate_frames(frames, full), tried)
    width = max(len(k) for k in summary.to_dict())
    for k, v in summary.to_dict().items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if model is not None:
        print(f"{'evidence_inflation':<{width}}  (vote_mass_ref / vote_mass) ** {model['exponent']:g} below vote mass "
              f"{model['vote_mass_ref']:.3f}: median raw NEES of the low-mass half {model['median_nees_low_raw']:.4g} "
              f"-> {model['median_nees_low']:.4g} (high-mass half {model['median_nees_high']:.4g})")
    elif args.evidence_inflation and getattr(matcher, "accepts_depth", False):
        print(f"{'evidence_inflation':<{width}}  none (too few frames with a vote mass, or the low-mass half is not less consistent)")
    if peak is not None:
        print(f"{'peak_inflation':<{width}}  (vote_peak_ref / vote_peak) ** {peak['peak_exponent']:g} below vote peak "
              f"{peak['vote_peak_ref']:.3f}: median NEES of the {peak['n_low']} frames below "
              f"({peak['n_low_shifted']} of them shifted) {peak['median_nees_low_raw']:.4g} -> {peak['median_nees_low']:.4g} "
              f"({peak['n_high']} above: {peak['median_nees_high']:.4g})")
    elif frames_shifted:
        print(f"{'peak_inflation':<{width}}  none (too few frames on either side of the peak threshold, or the "
              "low-peak frames are not less consistent)")
    report = {"checkpoint": str(checkpoint), "dataset": str(args.dataset), **summary.to_dict(),
              "evidence_inflation": model, "peak_inflation": peak, "frames": [f.__dict__ for f in frames],
              "frames_shifted": [f.__dict__ for f in frames_shifted]}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    if args.write:
        kind = args.depth_kind if getattr(matcher, "accepts_depth", False) else None
        runtime_model = full if kind else None
        set_covariance_scale(checkpoint, summary.covariance_scale,
                             {k: v for k, v in report.items() if k not in ("frames", "frames_shifted")},
                             depth_kind=kind,
                             evidence_model=runtime_model)
        where = f" for depth kind {kind!r}" if kind else ""
        print(f"stored covariance_scale {summary.covariance_scale:.4g}{where} in {checkpoint}")
    return 0
