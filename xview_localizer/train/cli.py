"""``xview-localizer train`` and ``xview-localizer evaluate`` (dense-flow matcher).

    xview-localizer train --dataset DIR --out CKPT_DIR [--preset compact] [--epochs N | --steps N]
                          [--batch-size B] [--lr LR] [--val-dataset DIR] [--resume]
    xview-localizer evaluate --checkpoint C --dataset D [--out JSON] [--max-samples N]

``--dataset`` is a pair directory from ``xview-localizer sim dataset`` or ``synthetic:N[:SEED]``.
Multi-process: ``torchrun --nproc_per_node K -m xview_localizer.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

__all__ = ["register", "run_train", "run_evaluate"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the dense-flow matcher (CPU/CUDA, torchrun for DDP)")
    p.add_argument("--dataset", required=True,
                   help="pair directory, synthetic:N[:SEED], kitti:PATH or vigor:PATH")
    p.add_argument("--split", default=None, help="kitti/vigor: split of --dataset (default train)")
    p.add_argument("--area", default=None, choices=["same", "cross"], help="vigor: same- or cross-area")
    p.add_argument("--orientation", default=None, choices=["known", "unknown"], help="vigor: heading known or not")
    p.add_argument("--val-split", default=None, help="kitti/vigor: split of --val-dataset (e.g. test1)")
    p.add_argument("--out", required=True, help="output directory (checkpoints, CSV log, metrics)")
    p.add_argument("--preset", default="compact", choices=["compact", "paper"], help="model preset")
    p.add_argument("--epochs", type=int, default=25, help="epochs (paper: 25)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (paper: 2e-5 with Adam)")
    p.add_argument("--iters", type=int, default=None, help="override the preset's GRU iterations")
    p.add_argument("--model-json", default=None,
                   help='JSON object of DenseFlowConfig fields overriding the preset, e.g. \'{"feature_dim": 64}\'')
    p.add_argument("--switch-epoch", type=int, default=15,
                   help="epoch at which kappa 200->20 and beta 1->10 (paper: 15 of 25)")
    p.add_argument("--val-dataset", default=None, help="evaluated at the end, metrics stored in the checkpoint")
    p.add_argument("--val-max-samples", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: CUDA when available")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="fine-tune: start from this checkpoint's weights and preset (e.g. the packaged "
                        "default), with a fresh optimizer")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run_train)

    e = sub.add_parser("evaluate", help="evaluate a dense-flow checkpoint (table + JSON, prior baseline beside)")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--dataset", required=True,
                   help="pair directory, synthetic:N[:SEED], kitti:PATH or vigor:PATH")
    e.add_argument("--split", default=None, help="kitti: train | test1 (same area) | test2 (cross area)")
    e.add_argument("--area", default=None, choices=["same", "cross"], help="vigor: same- or cross-area split")
    e.add_argument("--orientation", default=None, choices=["known", "unknown"],
                   help="vigor: known heading, or unknown (random circular roll of the panorama)")
    e.add_argument("--out", default=None, help="write the metrics as JSON here")
    e.add_argument("--batch-size", type=int, default=4)
    e.add_argument("--max-samples", type=int, default=None)
    e.add_argument("--device", default=None, choices=["cpu", "cuda"])
    e.set_defaults(handler=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .losses import LossConfig
    from .trainer import TrainConfig, train

    overrides: dict = {}
    if args.model_json:
        try:
            overrides = dict(json.loads(args.model_json))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"--model-json: not a JSON object ({exc})") from exc
    if args.iters:
        overrides["iters"] = args.iters
    tc = TrainConfig(
        dataset=args.dataset,
        out_dir=args.out,
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
        loss=LossConfig(switch_epoch=args.switch_epoch),
        progress=not args.no_progress,
    )
    metrics = train(tc, device=args.device)
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


def run_evaluate(args: argparse.Namespace) -> int:
    import torch

    from ..matcher.checkpoint import load_model
    from .metrics import format_table
    from .trainer import evaluate_model, open_dataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = load_model(args.checkpoint, device)
    dataset = open_dataset(args.dataset, model.cfg, split=args.split, area=args.area,
                           orientation=args.orientation)
    result = evaluate_model(model, dataset, device, args.batch_size, args.max_samples, progress=True)
    print(format_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"checkpoint": str(args.checkpoint), "dataset": args.dataset, **result},
                                             indent=2))
    return 0
