#!/usr/bin/env python3
"""Robustness table of the depth-prior sparse matcher (issue 6, docs/sparse_depth.md).

Runs the ``xview-localizer evaluate`` path (:func:`xview_localizer.train.cli.evaluate_checkpoint`)
over the rows

* depth: exact metric, metric + noise and holes, relative with a random scale (0.3-3x),
  no depth (flat ground);
* orientation: known (the data set's prior, +-10 deg) and unknown (prior yaw uniform in
  [-180, 180), the same draws for every model);

for the sparse-depth checkpoint, beside the dense-flow checkpoint (which takes no depth: one
row per orientation) and the prior-only baseline, on the same samples with the same metrics.
Prints a markdown table and writes every metric as JSON.

    .venv/bin/python scripts/robustness_table.py --sparse xview_localizer/checkpoints/sparse_depth_compact.pt \\
        --dense xview_localizer/checkpoints/dense_flow_compact.pt --dataset /tmp/xview_train/pairs_test \\
        --out /tmp/xview_train/robustness.json [--max-samples N] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: (row name, evaluate options) of the sparse-depth model.
DEPTH_ROWS = (
    ("metric depth (exact)", {"depth_kind": "metric"}),
    ("metric depth + 5% noise + 10% holes", {"depth_kind": "metric", "depth_noise_frac": 0.05,
                                              "depth_hole_frac": 0.1}),
    ("relative depth, scale 0.3-3x", {"depth_kind": "relative", "depth_scale_range": (0.3, 3.0)}),
    ("no depth (flat ground)", {"depth_kind": "none"}),
)
ORIENTATIONS = (("known (±10°)", False), ("unknown", True))
COLUMNS = (("xy_err_median_m", "xy median m", "{:.2f}"), ("xy_recall_1m", "xy ≤1 m", "{:.1%}"),
           ("xy_recall_5m", "xy ≤5 m", "{:.1%}"), ("yaw_err_median_deg", "yaw median °", "{:.1f}"),
           ("yaw_recall_1deg", "yaw ≤1°", "{:.1%}"), ("yaw_recall_5deg", "yaw ≤5°", "{:.1%}"))


def _row(model: str, depth: str, orientation: str, metrics: dict) -> str:
    cells = [fmt.format(metrics[key]) for key, _, fmt in COLUMNS]
    return "| " + " | ".join([model, depth, orientation, str(metrics["n_samples"]), *cells]) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sparse", required=True, help="sparse-depth checkpoint")
    ap.add_argument("--dense", default=None, help="dense-flow checkpoint (optional)")
    ap.add_argument("--dataset", required=True, help="held-out pair directory (with depth)")
    ap.add_argument("--out", default=None, help="write all metrics as JSON here")
    ap.add_argument("--max-samples", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="seed of the depth / orientation draws")
    ap.add_argument("--device", default=None, choices=["cpu", "cuda"])
    args = ap.parse_args(argv)

    import torch

    from xview_localizer.matcher.checkpoint import load_model, model_name_of
    from xview_localizer.train.cli import evaluate_checkpoint

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    sparse, _ = load_model(args.sparse, device)
    if model_name_of(sparse) != "sparse-depth":
        ap.error(f"--sparse {args.sparse} is a {model_name_of(sparse)} checkpoint")
    dense = None
    if args.dense:
        dense, _ = load_model(args.dense, device)
        if model_name_of(dense) != "dense-flow":
            ap.error(f"--dense {args.dense} is a {model_name_of(dense)} checkpoint")
    common = dict(device=device, seed=args.seed, batch_size=args.batch_size, max_samples=args.max_samples)

    rows: list[dict] = []
    for orient_name, unknown in ORIENTATIONS:
        prior = None
        for depth_name, opts in DEPTH_ROWS:
            res = evaluate_checkpoint(sparse, args.dataset, unknown_orientation=unknown, **opts, **common)
            rows.append({"model": "sparse-depth", "depth": depth_name, "orientation": orient_name,
                         "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
                         "metrics": res["model"]})
            prior = res["prior"]
        if dense is not None:
            res = evaluate_checkpoint(dense, args.dataset, unknown_orientation=unknown, **common)
            rows.append({"model": "dense-flow", "depth": "- (none used)", "orientation": orient_name,
                         "options": {}, "metrics": res["model"]})
            prior = res["prior"]
        rows.append({"model": "prior only", "depth": "-", "orientation": orient_name, "options": {},
                     "metrics": prior})

    header = "| model | depth | orientation | n | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (4 + len(COLUMNS))]
    lines += [_row(r["model"], r["depth"], r["orientation"], r["metrics"]) for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"sparse": str(args.sparse), "dense": args.dense, "dataset": args.dataset,
                                   "seed": args.seed, "rows": rows, "markdown": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
