"""Every command in the README's shell blocks is checked (issue 17: "every README command is run
by a test or a docs check"):

- ``xview-localizer ...`` (also behind ``python -m ... -m xview_localizer.cli``) is parsed by the
  real argument parser: the subcommand exists and every option is known. A line that elides
  arguments (``...``) may lack required ones, nothing else.
- ``make T``: T is a Makefile target. ``localizer_node`` / ``ros2 run``: the console script
  exists and every ``-p NAME:=`` is a declared parameter. ``ros2 launch``: the launch file
  exists and every ``NAME:=`` is one of its arguments.
- ``scripts/...`` and ``python scripts/X.py``: the script exists; a Python script's ``--help``
  runs and names every option used.
- Tools of the outside world (git, pip, colcon, rosdep, mkdir, cd, cp, source) are listed in
  :data:`EXTERNAL`; any other program fails this test until a check is added for it.

What the commands *do* is tested elsewhere: ``make test`` is CI itself, ``make demo`` in
test_demo, replay / sim / train / benchmark / tiles in their own tests.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
EXTERNAL = {"git", "pip", "colcon", "rosdep", "mkdir", "cd", "cp", "source", "for", "done"}
ELLIPSIS = {"...", "…"}


def _commands() -> list[str]:
    """Shell command lines of the README's ``bash`` blocks: continuations joined, comments
    dropped, ``a && b`` / ``a; b`` split, ``for ... do X; done`` reduced to X."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            tokens = shlex.split(line, comments=True)
            if not tokens:
                continue
            split: list[str] = []
            for tok in tokens:  # "--write;" -> "--write", ";"
                split += [tok[:-1], ";"] if tok.endswith(";") and len(tok) > 1 else [tok]
            part: list[str] = []
            for tok in split + [";"]:
                if tok in ("&&", ";", "do", "done"):
                    if part and part[0] != "for":
                        out.append(shlex.join(part))
                    part = []
                else:
                    part.append(tok)
    return out


COMMANDS = _commands()


def _program(tokens: list[str]) -> tuple[str, list[str]]:
    """Skip ``NAME=value`` environment assignments: (program, its arguments)."""
    i = 0
    while i < len(tokens) and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[i]):
        i += 1
    return tokens[i], tokens[i + 1:]


class _ParseError(Exception):
    pass


def _parse_cli(args: list[str]) -> None:
    """Parse with the real ``xview-localizer`` parser; raise _ParseError with argparse's message."""
    from xview_localizer.cli import build_parser, iter_commands

    parser = build_parser()

    def error(message: str) -> None:
        raise _ParseError(message)

    for p in [parser] + [p for _, p in iter_commands(parser)]:
        p.error = error  # type: ignore[method-assign]
    _, unknown = parser.parse_known_args(args)
    if unknown:
        raise _ParseError(f"unrecognized arguments: {' '.join(unknown)}")


def _cli_args(args: list[str]) -> tuple[list[str], bool]:
    """README placeholders -> parseable tokens: ``[--opt v]`` brackets dropped, shell variables
    given a value; returns (tokens, whether the line elides arguments with ``...``)."""
    elided = any(a in ELLIPSIS for a in args)
    clean = []
    for a in args:
        if a in ELLIPSIS:
            continue
        a = a.strip("[]")
        a = re.sub(r"\$\(seq [^)]*\)|\$\w+", "1", a)
        if a:
            clean.append(a)
    return clean, elided


def _check_cli(args: list[str]) -> None:
    tokens, elided = _cli_args(args)
    if "$k" in " ".join(args):  # for k in none metric ...: use a real value
        tokens = ["none" if t == "1" else t for t in tokens]
    try:
        _parse_cli(tokens)
    except _ParseError as exc:
        if not (elided and "the following arguments are required" in str(exc)):
            raise AssertionError(f"xview-localizer {' '.join(args)}: {exc}") from None


def _parameter_names() -> set[str]:
    import dataclasses

    from xview_localizer.pipeline.config import LocalizerConfig, NodeConfig

    return ({f.name for f in dataclasses.fields(NodeConfig)} | {f.name for f in dataclasses.fields(LocalizerConfig)}
            | {"use_sim_time"})


def _check_node(args: list[str]) -> None:
    assert "localizer_node = " in (REPO / "setup.py").read_text() or "localizer_node=" in (REPO / "setup.py").read_text()
    names = _parameter_names()
    for i, a in enumerate(args):
        if a == "-p":
            name = args[i + 1].split(":=", 1)[0]
            assert name in names, f"localizer_node -p {name}: not a parameter"
        if a == "--params-file":
            assert (REPO / "config" / Path(args[i + 1]).name).is_file(), args[i + 1]


def _check_launch(args: list[str]) -> None:
    pkg, launch_file, *rest = args
    assert pkg == "xview_localizer"
    text = (REPO / "launch" / launch_file).read_text()
    declared = set(re.findall(r'DeclareLaunchArgument\("(\w+)"', text)) | set(re.findall(r'\("(\w+_topic)",', text))
    for a in rest:
        if ":=" in a:
            assert a.split(":=", 1)[0] in declared, f"ros2 launch ... {a}: not a launch argument of {launch_file}"


def _check_script(path: str, args: list[str]) -> None:
    script = REPO / path
    assert script.is_file(), f"{path}: no such script"
    if script.suffix != ".py":
        return
    options = {a.split("=", 1)[0] for a in args if a.startswith("--")}
    if not options:
        return
    res = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    for opt in options:
        assert opt in res.stdout, f"{path} {opt}: not in its --help"


def check_command(line: str) -> None:
    prog, args = _program(shlex.split(line))
    if prog == "xview-localizer":
        _check_cli(args)
    elif prog == "make":
        targets = set(re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))
        for a in args:
            if "=" not in a:
                assert a in targets, f"make {a}: no such target"
    elif prog == "localizer_node":
        _check_node(args)
    elif prog == "ros2" and args[0] == "run":
        assert args[1:3] == ["xview_localizer", "localizer_node"], line
        _check_node(args[3:])
    elif prog == "ros2" and args[0] == "launch":
        _check_launch(args[1:])
    elif prog in ("python", ".venv/bin/python") and args[0] == "-m":
        if "xview_localizer.cli" in args:
            _check_cli(args[args.index("xview_localizer.cli") + 1:])
        else:
            assert args[1] == "torch.distributed.run", line
    elif prog in ("python", ".venv/bin/python"):
        _check_script(args[0], args[1:])
    elif prog.startswith("scripts/"):
        _check_script(prog, args)
    else:
        assert prog in EXTERNAL, f"README command {line!r}: program {prog!r} has no check here; add one"


def test_readme_has_the_commands_this_test_expects():
    progs = {_program(shlex.split(c))[0] for c in COMMANDS}
    assert {"make", "xview-localizer", "localizer_node", "ros2"} <= progs, progs
    assert len(COMMANDS) >= 40


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command(line):
    check_command(line)


@pytest.mark.parametrize("bad", [
    "xview-localizer tiles patch --no-such-option 1 --url U --lat 1 --lon 2 --out p.png",
    "xview-localizer --offline tiles patch --url U --lat 1 --lon 2 --out p.png",
    "xview-localizer no-such-command",
    "make no-such-target",
    "localizer_node --ros-args -p min_weigth:=0.3",
    "ros2 launch xview_localizer localizer.launch.py no_such_arg:=1",
    "scripts/no_such_script.sh",
    ".venv/bin/python scripts/render_examples.py --no-such-option 3",
    "curl http://example.org",
])
def test_the_check_catches_a_wrong_command(bad):
    with pytest.raises(AssertionError):
        check_command(bad)


def test_cli_args_placeholders():
    tokens, elided = _cli_args(["replay", "b", "[--checkpoint", "dense_flow]", "..."])
    assert tokens == ["replay", "b", "--checkpoint", "dense_flow"] and elided


DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_paths_and_links_in_the_docs_exist(doc):
    """Every repository path a document names (``xview_localizer/...py``, ``test/...``,
    ``scripts/...``) and every relative Markdown link exists (after the layout change)."""
    text = doc.read_text()
    paths = set(re.findall(r"\b((?:xview_localizer|test|scripts)/[\w/]+\.(?:py|sh))\b", text))
    missing = sorted(p for p in paths if not (REPO / p).exists())
    links = {m for m in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) if not re.match(r"[a-z]+:", m)}
    broken = sorted(m for m in links if not (doc.parent / m).exists())
    assert not missing and not broken, f"{doc.name}: missing paths {missing}, broken links {broken}"
