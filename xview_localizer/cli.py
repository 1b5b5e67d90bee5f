"""The ``xview-localizer`` command line: one entry point, subcommands registered by the
modules that implement them (each exposes ``register(subparsers)``; the handler it sets
returns an exit code). Heavy imports happen inside handlers, so ``--help`` is fast."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap
from typing import Optional, Sequence

from .core.errors import XViewError


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and examples as written (line breaks kept); every option with a default
    worth showing gets ``(default: ...)`` appended (not for None, False, '' or [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or default is False or default == "" or default == []:
            return action.help or ""
        return super()._get_help_string(action)


#: The values of every command's ``--device`` (and of the node's ``device`` parameter).
DEVICES = ("auto", "cpu", "cuda")


def add_device_option(parser: argparse.ArgumentParser, what: str, default: Optional[str] = "auto",
                      default_note: str = "") -> None:
    """``--device {auto,cpu,cuda}`` with the same meaning in every command: ``auto`` = CUDA when
    torch sees a GPU, else the CPU (:func:`resolve_device`)."""
    note = f" (default: {default_note})" if default_note else ""
    parser.add_argument("--device", default=default, choices=DEVICES,
                        help=f"torch device of {what}: auto = CUDA when available, else cpu{note}")


def resolve_device(device: Optional[str]) -> str:
    """``'auto'`` (or None / '') -> ``'cuda'`` when torch sees a GPU, else ``'cpu'``; other values
    unchanged. Imports torch only for ``auto``."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def add_command(sub: argparse._SubParsersAction, name: str, *, help: str, description: str,
                examples: Sequence[str], **kwargs) -> argparse.ArgumentParser:
    """Add subcommand ``name``: ``help`` is its line in the parent's list, ``description`` one
    plain-text paragraph (wrapped here), ``examples`` command lines shown under "example:" at the end."""
    epilog = "example" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(f"  {e}" for e in examples)
    return sub.add_parser(name, help=help, description=textwrap.fill(description, width=100), epilog=epilog,
                          formatter_class=HelpFormatter, **kwargs)


def iter_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """``(path, parser)`` of every subcommand below ``parser``, depth first (``("sim", "world")``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield prefix + (name,), child
                yield from iter_commands(child, prefix + (name,))


#: Modules that add subcommands. Each defines ``register(subparsers) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "xview_localizer.sim.cli",
    "xview_localizer.train.cli",
    "xview_localizer.tiles.cli",
    "xview_localizer.evaluation.replay_cli",
    "xview_localizer.train.dataset_cli",
    "xview_localizer.evaluation.calibration_cli",
    "xview_localizer.evaluation.benchmark_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xview-localizer",
        description=textwrap.fill("Cross-view localization against satellite imagery: tiles, synthetic "
                                  "worlds, training, evaluation and rosbag replay. Run 'xview-localizer COMMAND "
                                  "--help' for a command's options and an example.", width=100),
        epilog="example:\n  xview-localizer replay bags/w1_d7 --out reports/w1_d7",
        formatter_class=HelpFormatter,
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
