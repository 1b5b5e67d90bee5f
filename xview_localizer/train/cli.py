"""``xview-localizer train`` and ``xview-localizer evaluate`` (dense-flow and sparse-depth matchers).

    xview-localizer train --dataset DIR --out CKPT_DIR [--model dense-flow|sparse-depth]
                          [--preset compact] [--epochs N | --steps N]
                          [--batch-size B] [--lr LR] [--val-dataset DIR] [--resume]
                          [--depth-kind K] [--depth-scale-range LO HI] [--depth-noise F]
                          [--depth-holes F] [--unknown-orientation]
    xview-localizer evaluate --checkpoint C --dataset D [--out JSON] [--max-samples N]
                          [--depth-kind K] [--depth-scale-range LO HI] [--depth-noise F]
                          [--depth-holes F] [--unknown-orientation] [--seed S]

``evaluate`` reads the model type from the checkpoint; the depth options only matter for a
sparse-depth checkpoint (``--unknown-orientation`` for both: uniform prior yaw, same samples).

``--dataset`` is a pair directory from ``xview-localizer sim dataset`` or ``synthetic:N[:SEED]``.
Multi-process: ``torchrun --nproc_per_node K -m xview_localizer.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

__all__ = ["register", "run_train", "run_evaluate", "evaluate_checkpoint"]

# Copies of matcher.sparse_depth.DEPTH_KINDS / train.sparse_data.TRAIN_DEPTH_KINDS, so that
# building the parser does not import torch (tested to agree).
DEPTH_KINDS = ("metric", "relative", "inverse", "none")
TRAIN_DEPTH_KINDS = (*DEPTH_KINDS, "mixed")


def _add_depth_options(p: argparse.ArgumentParser, kinds: tuple[str, ...], default_kind: str) -> None:
    """The depth / orientation options shared by train and evaluate (sparse-depth)."""
    p.add_argument("--depth-kind", default=default_kind, choices=list(kinds),
                   help="sparse-depth: depth input: metric, relative (unknown scale), inverse (1/relative), "
                        f"none (flat ground){', mixed (one per step)' if 'mixed' in kinds else ''}")
    p.add_argument("--depth-scale-range", type=float, nargs=2, default=[0.3, 3.0], metavar=("LO", "HI"),
                   help="sparse-depth: relative/inverse depth scale drawn log-uniformly in [LO, HI]")
    p.add_argument("--depth-noise", type=float, default=0.0,
                   help="sparse-depth: multiplicative Gaussian depth noise (fraction, e.g. 0.05)")
    p.add_argument("--depth-holes", type=float, default=0.0,
                   help="sparse-depth: fraction of 8x8 px depth blocks set invalid")
    p.add_argument("--unknown-orientation", action="store_true",
                   help="prior yaw uniform in [-180, 180) deg instead of the data set's prior")


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import add_command, add_device_option

    p = add_command(sub, "train", help="train a matcher, dense-flow or sparse-depth (CPU/CUDA, torchrun for DDP)",
                    description="Train a matcher network (dense-flow or depth-prior sparse) on pairs: a pair "
                    "directory from 'xview-localizer sim dataset', synthetic:N[:SEED], kitti:PATH or "
                    "vigor:PATH. Writes OUT/model.pt, OUT/last.pt (for --resume) and a CSV log; with "
                    "--val-dataset the metrics are stored in the checkpoint. Several processes: torchrun "
                    "--nproc_per_node K -m xview_localizer.cli train ...",
                    examples=["xview-localizer train --model sparse-depth --dataset pairs/train --out runs/sd1 "
                              "--steps 2000 --val-dataset pairs/val"])
    p.add_argument("--model", default="dense-flow", choices=["dense-flow", "sparse-depth"],
                   help="which matcher to train (sparse-depth needs pair directories with depth)")
    p.add_argument("--dataset", required=True,
                   help="pair directory, synthetic:N[:SEED], kitti:PATH or vigor:PATH")
    p.add_argument("--split", default=None, help="kitti/vigor: split of --dataset (unset: train)")
    p.add_argument("--area", default=None, choices=["same", "cross"], help="vigor: same- or cross-area")
    p.add_argument("--orientation", default=None, choices=["known", "unknown"], help="vigor: heading known or not")
    p.add_argument("--val-split", default=None, help="kitti/vigor: split of --val-dataset (e.g. test1)")
    p.add_argument("--out", required=True, help="output directory (checkpoints, CSV log, metrics)")
    p.add_argument("--preset", default="compact", choices=["compact", "paper"], help="model preset")
    p.add_argument("--epochs", type=int, default=25, help="epochs (paper: 25)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step (per process)")
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (paper: 2e-5 with Adam)")
    p.add_argument("--iters", type=int, default=None, help="override the preset's GRU iterations")
    p.add_argument("--model-json", default=None,
                   help='JSON object of DenseFlowConfig (or SparseDepthConfig) fields overriding the preset, '
                        'e.g. \'{"feature_dim": 64}\'')
    p.add_argument("--switch-epoch", type=int, default=15,
                   help="epoch at which kappa 200->20 and beta 1->10 (paper: 15 of 25)")
    p.add_argument("--match-ce-weight", type=float, default=0.0,
                   help="sparse-depth: weight of the keypoint matching cross-entropy against the true "
                        "satellite cell (not in the paper's weak supervision; 0 = pose losses only)")
    p.add_argument("--vote-ce-weight", type=float, default=10.0,
                   help="sparse-depth: weight of the pose-vote cross-entropy against the hypothesis nearest "
                        "the true pose (pose-only supervision; 0 = solver pose losses only)")
    p.add_argument("--mixed-orientation", action="store_true",
                   help="sparse-depth: half the steps (seeded) search the whole circle without the prior yaw")
    p.add_argument("--scale-loss-weight", type=float, default=0.0,
                   help="sparse-depth: weight of |log(s / s_true)| for relative depth (0 = off)")
    p.add_argument("--corr-loss-weight", type=float, default=0.0,
                   help="weight of the correlation cross-entropy added to eq. 7 (not in the paper; "
                        "0 = paper losses only; the shipped compact checkpoint uses 1)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="end this session after this many minutes of training (checkpoint written; --resume "
                        "continues the same schedule)")
    p.add_argument("--stop-at-step", type=int, default=None, help="end this session at this global step")
    p.add_argument("--augment", action="store_true",
                   help="photometric augmentation of both views (train/augment.py PhotometricAugment defaults: "
                        "colour jitter, grayscale, gamma, noise, blur, cut-outs), seeded per step")
    p.add_argument("--augment-json", default=None,
                   help='PhotometricAugment fields as JSON (implies --augment), e.g. \'{"p_cutout": 0.5}\'')
    p.add_argument("--val-dataset", default=None, help="evaluated at the end, metrics stored in the checkpoint")
    p.add_argument("--val-max-samples", type=int, default=256, help="pairs of --val-dataset evaluated")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order, augmentation and init")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--log-every", type=int, default=10, help="log a CSV row every N steps")
    p.add_argument("--save-every", type=int, default=200, help="write OUT/last.pt every N steps")
    add_device_option(p, "training")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="fine-tune: start from this checkpoint's weights and preset (e.g. the packaged "
                        "default), with a fresh optimizer")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_depth_options(p, TRAIN_DEPTH_KINDS, "metric")
    p.set_defaults(handler=run_train)

    e = add_command(sub, "evaluate", help="evaluate a matcher checkpoint (table + JSON, prior baseline beside)",
                    description="Run a matcher checkpoint on a data set of pairs and print its accuracy "
                    "(position and yaw recall, median errors) beside the GNSS-prior baseline; the model type "
                    "is read from the checkpoint. The depth options only matter for a sparse-depth "
                    "checkpoint; --unknown-orientation works for both (uniform prior yaw, same samples).",
                    examples=["xview-localizer evaluate --dataset pairs/test --max-samples 200 --out eval.json",
                              "xview-localizer evaluate --checkpoint dense_flow --dataset pairs/test"])
    e.add_argument("--checkpoint", default="",
                   help="matcher checkpoint: '' = the packaged default (sparse_depth_compact.pt), a packaged "
                        "name (sparse_depth, dense_flow, or its file name), or a path to a .pt")
    e.add_argument("--dataset", required=True,
                   help="pair directory, synthetic:N[:SEED], kitti:PATH or vigor:PATH")
    e.add_argument("--split", default=None, help="kitti: train | test1 (same area) | test2 (cross area)")
    e.add_argument("--area", default=None, choices=["same", "cross"], help="vigor: same- or cross-area split")
    e.add_argument("--orientation", default=None, choices=["known", "unknown"],
                   help="vigor: known heading, or unknown (random circular roll of the panorama)")
    e.add_argument("--out", default=None, help="write the metrics as JSON here")
    e.add_argument("--batch-size", type=int, default=4, help="pairs per forward pass (memory vs speed; same results)")
    e.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N pairs (unset: all)")
    add_device_option(e, "the model")
    e.add_argument("--seed", type=int, default=0, help="seed of the depth / orientation draws")
    _add_depth_options(e, DEPTH_KINDS, "metric")
    e.set_defaults(handler=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from ..cli import resolve_device
    from ..core.errors import ConfigError
    from .losses import LossConfig
    from .losses_sparse import SparseLossConfig
    from .trainer import TrainConfig, train

    overrides: dict = {}
    if args.model_json:
        try:
            overrides = dict(json.loads(args.model_json))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--model-json: not a JSON object ({exc})") from exc
    if args.iters:
        if args.model != "dense-flow":
            raise ConfigError("--iters is a dense-flow option")
        overrides["iters"] = args.iters
    augment: dict = {}
    if args.augment or args.augment_json:
        from dataclasses import asdict

        from .augment import PhotometricAugment

        try:
            extra = dict(json.loads(args.augment_json)) if args.augment_json else {}
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--augment-json: not a JSON object ({exc})") from exc
        augment = {**asdict(PhotometricAugment()), **extra}
    tc = TrainConfig(
        augment=augment,
        max_minutes=args.max_minutes,
        stop_at_step=args.stop_at_step,
        dataset=args.dataset,
        out_dir=args.out,
        model=args.model,
        preset=args.preset,
        model_overrides=overrides,
        epochs=args.epochs,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        num_workers=args.num_workers,
        val_dataset=args.val_dataset,
        val_max_samples=args.val_max_samples,
        dataset_opts=_benchmark_opts(args.dataset, args.split or "train", args),
        val_dataset_opts=_benchmark_opts(args.val_dataset, args.val_split, args),
        resume=args.resume,
        init_checkpoint=args.init,
        log_every=args.log_every,
        save_every=args.save_every,
        amp=not args.no_amp,
        loss=LossConfig(switch_epoch=args.switch_epoch, corr_weight=args.corr_loss_weight),
        sparse_loss=SparseLossConfig(match_ce_weight=args.match_ce_weight, scale_weight=args.scale_loss_weight,
                                     vote_ce_weight=args.vote_ce_weight),
        progress=not args.no_progress,
        depth_kind=args.depth_kind,
        depth_scale_range=tuple(args.depth_scale_range),
        depth_noise_frac=args.depth_noise,
        depth_hole_frac=args.depth_holes,
        unknown_orientation=args.unknown_orientation,
        mixed_orientation=args.mixed_orientation,
    )
    metrics = train(tc, device=resolve_device(args.device))
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    if "val" in metrics:
        from .metrics import format_table

        print(format_table(metrics["val"]))
    print(f"checkpoint: {Path(args.out) / 'model.pt'}  steps: {metrics['steps']}")
    return 0


def _benchmark_opts(spec: str | None, split: str | None, args: argparse.Namespace) -> dict:
    """Loader options for ``kitti:``/``vigor:`` specs; none for pair directories / synthetic."""
    if not spec or not spec.startswith(("kitti:", "vigor:")):
        return {}
    opts = {"split": split, "area": args.area, "orientation": args.orientation}
    if spec.startswith("kitti:"):
        opts = {"split": split}
    return {k: v for k, v in opts.items() if v is not None}


def evaluate_checkpoint(model, dataset_spec: str, *, device: str = "cpu", depth_kind: str = "metric",
                        depth_scale_range: tuple[float, float] = (0.3, 3.0), depth_noise_frac: float = 0.0,
                        depth_hole_frac: float = 0.0, unknown_orientation: bool = False, seed: int = 0,
                        batch_size: int = 4, max_samples: int | None = None, progress: bool = False,
                        **benchmark_opts) -> dict:
    """The evaluate path: ``model`` (a loaded network of either type) on a data set with the
    given depth / orientation options -> ``{"model": metrics, "prior": metrics}``. Used by
    ``xview-localizer evaluate`` and scripts/robustness_table.py."""
    from .sparse_data import DepthAugment
    from .trainer import evaluate_model, open_dataset

    aug = DepthAugment(depth_kind, tuple(depth_scale_range), depth_noise_frac, depth_hole_frac,
                       unknown_orientation, seed)
    dataset = open_dataset(dataset_spec, model.cfg, aug, **benchmark_opts)
    return evaluate_model(model, dataset, device, batch_size, max_samples, progress=progress, depth_kind=depth_kind)


def run_evaluate(args: argparse.Namespace) -> int:

    from ..cli import resolve_device
    from ..matcher.checkpoint import load_model
    from ..matcher.factory import resolve_checkpoint_path
    from .metrics import format_table

    device = resolve_device(args.device)
    checkpoint = resolve_checkpoint_path(args.checkpoint, must_exist=True)  # '' / packaged name / path
    model, blob = load_model(checkpoint, device)
    model_name = blob.get("model", "dense-flow")
    options = {"depth_kind": args.depth_kind, "depth_scale_range": list(args.depth_scale_range),
               "depth_noise_frac": args.depth_noise, "depth_hole_frac": args.depth_holes,
               "unknown_orientation": args.unknown_orientation, "seed": args.seed}
    result = evaluate_checkpoint(model, args.dataset, device=device, batch_size=args.batch_size,
                                 max_samples=args.max_samples, progress=True, split=args.split, area=args.area,
                                 orientation=args.orientation, **options)
    print(f"model: {model_name}  " + "  ".join(f"{k}={v}" for k, v in options.items()))
    print(format_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"checkpoint": str(checkpoint), "dataset": args.dataset,
                                              "model_type": model_name, "options": options, **result}, indent=2))
    return 0
