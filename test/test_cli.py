"""The ``xview-localizer`` command line: every subcommand, found from the parser itself, has a
help that exits 0 with a usage line, a one-paragraph description without reST markup, an
example, and the defaults of its options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xview_localizer.cli import build_parser, iter_commands, main

COMMANDS = [path for path, _ in iter_commands(build_parser())]


def test_commands_are_discovered():
    # the groups and their leaves (a command module that stops registering fails here)
    for expected in [("sim", "world"), ("tiles", "patch"), ("dataset", "from-bag"), ("replay",), ("evaluate",),
                     ("train",), ("calibrate-covariance",), ("benchmark",)]:
        assert expected in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_subcommand_help_exits_0_with_description_and_example(path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: xview-localizer {' '.join(path)} ")
    usage, _, rest = out.partition("\n\n")
    description = rest.split("\n\n")[0]
    assert len(description.split()) >= 15, f"no one-paragraph description: {description!r}"
    assert "\nexample" in out and f"  xview-localizer {' '.join(path)}" in out.split("\nexample")[-1]
    assert "``" not in out and ":func:" not in out and ":class:" not in out


def test_defaults_are_shown_and_evaluate_options_have_help(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--batch-size BATCH_SIZE pairs per forward pass" in out and "(default: 4)" in out
    assert "--max-samples MAX_SAMPLES evaluate only the first N pairs" in out
    assert "--checkpoint CHECKPOINT matcher checkpoint: '' = the packaged default" in out
    with pytest.raises(SystemExit):
        main(["tiles", "prefetch", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "requests in flight (default: 6)" in out and "(default 6)" not in out


def test_console_script_help_exits_0():
    proc = subprocess.run([sys.executable, "-m", "xview_localizer.cli", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: xview-localizer")
    for path in COMMANDS:
        if len(path) == 1:
            assert f"\n    {path[0]}" in proc.stdout


def test_every_device_option_takes_the_same_values():
    """Issue 17: ``--device`` means the same in every command (auto / cpu / cuda), like the node's
    ``device`` parameter."""
    import dataclasses

    from xview_localizer.cli import DEVICES, resolve_device
    from xview_localizer.pipeline.config import NodeConfig

    seen = []
    for path, parser in iter_commands(build_parser()):
        for action in parser._actions:
            if "--device" in action.option_strings:
                seen.append(path)
                assert tuple(action.choices) == DEVICES, (path, action.choices)
    assert {("replay",), ("evaluate",), ("benchmark",), ("train",), ("sim", "drive")} <= set(seen), seen
    device_field = {f.name: f for f in dataclasses.fields(NodeConfig)}["device"]
    assert tuple(device_field.metadata["choices"]) == DEVICES
    assert resolve_device("cpu") == "cpu" and resolve_device("auto") in ("cpu", "cuda")
