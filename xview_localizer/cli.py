"""The ``xview-localizer`` command line: one entry point, subcommands registered by the
modules that implement them (each exposes ``register(subparsers)``; the handler it sets
returns an exit code). Heavy imports happen inside handlers, so ``--help`` is fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from .errors import XViewError

#: Modules that add subcommands. Each defines ``register(subparsers) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "xview_localizer.sim.cli",
    "xview_localizer.train.cli",
    "xview_localizer.tiles.cli",
    "xview_localizer.replay_cli",
    "xview_localizer.train.dataset_cli",
    "xview_localizer.calibration_cli",
    "xview_localizer.benchmark_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xview-localizer",
        description="Cross-view localization against satellite imagery: tiles, synthetic "
        "worlds, training, evaluation and rosbag replay.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except XViewError as exc:
        print(f"xview-localizer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("xview-localizer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
