"""``xview-localizer benchmark``: the default matcher, dense-flow and the prior side by side on
held-out pair sets, as the localizer runs them (:mod:`xview_localizer.evaluation.benchmark`).

    xview-localizer benchmark --set train_styles=PAIRS_A --set heldout_styles=PAIRS_B \\
        [--matcher default=] [--matcher dense_flow=dense_flow] [--matcher new=run/model.pt] \\
        [--orientation known unknown] [--depth-kind none] [--max-samples N] \\
        [--out report.json] [--markdown table.md] \\
        [--calibrate-gate NAME --gate-set SET [--write]]

Matchers default to ``default=`` (the packaged default, ``checkpoint_path: ''``) and
``dense_flow=dense_flow``. ``--calibrate-gate NAME`` picks the low-evidence threshold of matcher
NAME on set ``--gate-set`` (known orientation), prints the precision / recall table on every set
and, with ``--write``, stores it in NAME's checkpoint (``evidence_gate``); the matchers' rows
then use it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import add_command, add_device_option

    p = add_command(sub, "benchmark", help="default matcher vs dense-flow vs prior on held-out pair sets (status table)",
                    description="Run matchers (by default the packaged default and dense-flow) and the "
                    "GNSS prior side by side on held-out pair sets, as the localizer runs them, with known "
                    "and unknown orientation, and print the status table (Markdown). --calibrate-gate NAME "
                    "picks the low-evidence threshold of matcher NAME on --gate-set (known orientation), "
                    "prints its precision / recall table and, with --write, stores it in NAME's checkpoint.",
                    examples=["xview-localizer benchmark --set train_styles=pairs/a --set heldout_styles=pairs/b "
                              "--max-samples 100 --markdown table.md",
                              "xview-localizer benchmark --set heldout=pairs/b --matcher new=runs/sd1/model.pt "
                              "--calibrate-gate new --write"])
    p.add_argument("--set", action="append", required=True, metavar="NAME=DIR", help="a held-out pair folder")
    p.add_argument("--matcher", action="append", default=None, metavar="NAME=CHECKPOINT",
                   help="a matcher ('' = packaged default, 'dense_flow', or a path); default: default= and "
                        "dense_flow=dense_flow")
    p.add_argument("--runtime", action="append", default=[], metavar="NAME=RUNTIME",
                   help="inference runtime of matcher NAME (eager | compile | bf16; default eager)")
    p.add_argument("--orientation", nargs="+", default=["known", "unknown"], choices=["known", "unknown"],
                   help="prior yaw known (the pairs') or unknown (uniform)")
    p.add_argument("--depth-kind", default="none", choices=["metric", "relative", "inverse", "none"],
                   help="what the sparse matcher gets (none = flat ground, the default node setting)")
    p.add_argument("--max-samples", type=int, default=None, help="pairs per set (unset: all)")
    add_device_option(p, "the matchers")
    p.add_argument("--seed", type=int, default=0, help="seed of the unknown-orientation prior yaws")
    p.add_argument("--out", default=None, help="JSON report (all figures and per-pair outcomes)")
    p.add_argument("--markdown", default=None, help="also write the table as Markdown here")
    p.add_argument("--calibrate-gate", default=None, metavar="NAME", help="calibrate matcher NAME's gate")
    p.add_argument("--gate-set", default=None, help="pair set the gate is calibrated on (default: the first)")
    p.add_argument("--target-precision", type=float, default=0.98,
                   help="share of kept frames that must beat the prior on the gate set")
    p.add_argument("--write", action="store_true", help="store the calibrated gate in that checkpoint")
    p.set_defaults(handler=run)


def _pairs(spec: str, what: str) -> tuple[str, str]:
    from ..core.errors import ConfigError

    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise ConfigError(f"--{what} expects NAME=VALUE, got {spec!r}")
    return name, value


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..cli import resolve_device
    from ..core.errors import ConfigError
    from ..matcher.factory import resolve_checkpoint_path
    from ..matcher.inference import load_matcher
    from ..pipeline.localizer import gate_threshold
    from ..train.pairs import PairDataset
    from . import benchmark as bm

    specs = args.matcher or ["default=", "dense_flow=dense_flow"]
    paths, matchers = {}, {}
    for spec in specs:  # checkpoints first: a misspelt one fails before the sets are read
        name, ckpt = _pairs(spec, "matcher")
        paths[name] = resolve_checkpoint_path(ckpt, must_exist=True)
        matchers[name] = load_matcher(str(paths[name]), resolve_device(args.device))
    for spec in args.runtime:
        name, runtime = _pairs(spec, "runtime")
        if name not in matchers:
            raise ConfigError(f"--runtime {spec!r}: no --matcher named {name!r} (have {sorted(matchers)})")
        matchers[name].use_runtime(runtime)
    sets = {}
    for spec in args.set:
        name, folder = _pairs(spec, "set")
        sets[name] = PairDataset(Path(folder), load_depth=True)
    gates = {name: dict(getattr(m, "evidence_gate", {}) or {}) for name, m in matchers.items()}
    total = sum(min(len(d), args.max_samples or len(d)) for d in sets.values()) * len(args.orientation) * len(matchers)
    bar = tqdm(total=total, desc="benchmark")
    t0 = time.perf_counter()
    stored_gate: dict = {}
    if args.calibrate_gate:
        # gate-free run first: the threshold comes from the raw evidence of every pair
        stored_gate = gates.get(args.calibrate_gate, {})
        gates[args.calibrate_gate] = {}
    result = bm.run_benchmark(matchers, sets, orientations=args.orientation, depth_kind=args.depth_kind,
                              max_samples=args.max_samples, seed=args.seed, gates=gates, progress=lambda: bar.update(1))
    bar.close()
    meta = {"matchers": {k: str(v) for k, v in paths.items()}, "sets": {k: str(d.root) for k, d in sets.items()},
            "depth_kind": args.depth_kind, "gates": gates, "seconds": time.perf_counter() - t0}
    if args.calibrate_gate:
        name = args.calibrate_gate
        gate_set = args.gate_set or next(iter(sets))
        gate = {}
        for orient, key in (("known", "min_vote_mass"), ("unknown", "min_vote_mass_unknown_yaw")):
            pairs = result["_pairs"].get(f"{gate_set}/{orient}/{name}")
            if pairs is not None:
                gate[key] = bm.calibrate_gate(pairs, target_precision=args.target_precision)
        tables = {}
        for key, pairs in result["_pairs"].items():
            if key.endswith(f"/{name}"):
                thr = gate_threshold(gate, key.split("/")[1] == "known")
                tables[key] = bm.gate_table(pairs, sorted({0.0, thr, *[round(thr * f, 3) for f in (0.5, 0.75, 1.25)]}))
        meta["gate"] = {"matcher": name, "calibrated_on": gate_set, **gate, "tables": tables}
        print(f"\nlow-evidence gate of {name!r}: {gate} (calibrated on {gate_set})")
        print("| pairs | min_vote_mass | kept / n | precision (kept beat the prior) | recall (good kept) | bad rejected |"
              " kept median / mean m |")
        print("|---|---|---|---|---|---|---|")
        for key, rows in tables.items():
            for r in rows:
                print(f"| {key} | {r['min_vote_mass']:.3f} | {r['kept']} / {r['n']} | {r['precision']:.0%} | "
                      f"{r['recall']:.0%} | {r['bad_rejected']:.0%} | {r['kept_median_m']:.2f} / {r['kept_mean_m']:.2f} |")
        # an orientation not benchmarked here keeps the threshold the checkpoint has for it
        kept = {k: v for k, v in stored_gate.items() if k not in gate}
        if kept:
            print(f"kept from the checkpoint (orientation not run here): {kept}")
            gate = {**kept, **gate}
        if args.write:
            from ..matcher.checkpoint import set_evidence_gate

            set_evidence_gate(paths[name], gate,
                              {"calibrated_on": str(sets[gate_set].root), "target_precision": args.target_precision})
            print(f"stored evidence_gate in {paths[name]}")
        # the table with the calibrated gate applied to that matcher's rows
        gates[name] = gate
        result = bm.apply_gate(result, name, gate)
    table = bm.format_markdown(result)
    print()
    print(table)
    result["_meta"] = meta
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        bm.write_json(result, Path(args.out))
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    print(json.dumps({k: v for k, v in meta.items() if k != "gate"}, default=str))
    return 0
