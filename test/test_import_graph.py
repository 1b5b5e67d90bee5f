"""The package's import graph, read statically (issue 17): no cycles, subpackages import only
what their docstrings allow, and only ``xview_localizer/ros/`` imports ROS.

Every module under ``xview_localizer/`` is parsed with :mod:`ast`; EVERY import statement
counts, at module level or inside a function, a class or an ``if TYPE_CHECKING:`` block
(a lazy import is still a dependency). ``from X import name`` is an edge to ``X.name`` when that
is one of our modules, else to ``X``; an absolute ``xview_localizer.a.b.Thing`` is cut to the
longest prefix that is one of our modules. Edges go to the module named, not to the packages
above it (their ``__init__`` files import nothing).

The rules (:data:`ALLOWED`) are the "May import:" lines of the subpackage docstrings
(``xview_localizer/*/__init__.py``); :func:`test_allowed_table_matches_the_subpackage_docstrings`
keeps the two in step.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import pytest

PACKAGE = "xview_localizer"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

#: Subpackage -> the other subpackages of ours it may import (its own is always allowed).
#: ``""`` is the top level (``xview_localizer/__init__.py``, ``cli.py``). Any module whose name
#: ends in ``cli`` may also import the top-level ``xview_localizer.cli`` (the command helpers).
ALLOWED: dict[str, frozenset[str]] = {
    "": frozenset({"core"}),
    "core": frozenset(),
    "tiles": frozenset({"core"}),
    "matcher": frozenset({"core", "tiles"}),
    "pipeline": frozenset({"core", "matcher", "tiles"}),
    "sim": frozenset({"core", "tiles", "train"}),
    "train": frozenset({"core", "matcher", "tiles", "sim", "pipeline"}),
    "evaluation": frozenset({"core", "pipeline", "matcher", "tiles", "sim", "train"}),
    # the ROS edge: anything but the offline tools
    "ros": frozenset({"core", "tiles", "matcher", "pipeline"}),
}
#: The command-line helpers every ``*cli`` module may use.
TOP_CLI = f"{PACKAGE}.cli"

#: Import cycles that are tolerated, as sets of modules: none. Fix a new cycle instead of
#: adding it here.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()

#: Top-level names of ROS packages only ``ros/`` may import (plus every ``rosidl*`` and
#: ``*_msgs`` package, see :func:`is_ros_package`).
ROS_PACKAGES = frozenset({"rclpy", "tf2_ros", "builtin_interfaces", "rcl_interfaces"})


def is_ros_package(top_level: str) -> bool:
    """Whether the top-level package ``top_level`` is a ROS (rclpy / rosidl / message) package."""
    return top_level in ROS_PACKAGES or top_level.startswith("rosidl") or top_level.endswith("_msgs")


class Import(NamedTuple):
    """One import statement's target: ``module`` (ours, dotted) or ``external`` (top-level name)."""

    importer: str
    target: str  # our module name, or the external top-level package
    ours: bool
    line: int


def find_modules(package_dir: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: path}`` of every ``.py`` file under ``package_dir``."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = (package, *path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _ours(name: str, modules: dict[str, Path]) -> str:
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def module_imports(name: str, path: Path, modules: dict[str, Path], package: str) -> list[Import]:
    """Every import of module ``name`` (all statements, at any depth)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: list[Import] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                if node.level - 1 > len(base) - 1:
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for a in node.names:
                sub = f"{prefix}.{a.name}"
                targets.append(sub if sub in modules else prefix)
        else:
            continue
        for t in targets:
            if t == package or t.startswith(package + "."):
                out.append(Import(name, _ours(t, modules), True, node.lineno))
            else:
                out.append(Import(name, t.partition(".")[0], False, node.lineno))
    return out


def import_graph(package_dir: Path, package: str) -> tuple[dict[str, Path], list[Import]]:
    modules = find_modules(package_dir, package)
    imports = [imp for name, path in modules.items() for imp in module_imports(name, path, modules, package)]
    return modules, imports


def find_cycles(modules: dict[str, Path], imports: list[Import]) -> list[list[tuple[str, int]]]:
    """One cycle per strongly connected component of the module graph with more than one
    module (or a module importing itself): ``[(module, line of its import of the next), ...]``,
    the first module repeated at the end is implied."""
    edges: dict[str, dict[str, int]] = defaultdict(dict)
    for imp in imports:
        if imp.ours:
            edges[imp.importer].setdefault(imp.target, imp.line)
    # Tarjan, iterative
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in edges[v]:
                    sccs.append(sorted(comp))
    cycles = []
    for comp in sccs:
        members = set(comp)
        start = comp[0]
        # shortest path start -> ... -> start inside the component (BFS)
        prev: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(edges[v]):
                    if w == start:
                        found = v
                        break
                    if w in members and w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path = [found]
        while path[-1] != start:
            path.append(prev[path[-1]])
        path.reverse()
        cycles.append([(m, edges[m][path[(i + 1) % len(path)]]) for i, m in enumerate(path)])
    return cycles


def format_cycle(cycle: list[tuple[str, int]]) -> str:
    return " -> ".join(f"{m} (line {line})" for m, line in cycle) + f" -> {cycle[0][0]}"


def group_of(module: str) -> str:
    """The subpackage of ``xview_localizer.<sub>.…`` ('' for the top-level modules)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else ""


def layering_violations(imports: list[Import]) -> list[str]:
    """One line per import against :data:`ALLOWED` (sorted, no repeats)."""
    bad = set()
    for imp in imports:
        if not imp.ours or imp.target == imp.importer:
            continue
        src, dst = group_of(imp.importer), group_of(imp.target)
        if src == dst:
            continue
        if imp.target == TOP_CLI and imp.importer.rsplit(".", 1)[-1].endswith("cli"):
            continue
        if dst not in ALLOWED.get(src, frozenset()):
            bad.add(f"{imp.importer} (line {imp.line}) imports {imp.target}: "
                    f"{src or 'the top level'} may import {sorted(ALLOWED.get(src, ())) or 'nothing of ours'}")
    return sorted(bad)


def ros_violations(imports: list[Import]) -> list[str]:
    """One line per ROS import outside ``ros/`` (sorted, no repeats)."""
    return sorted({f"{imp.importer} (line {imp.line}) imports {imp.target}" for imp in imports
                   if not imp.ours and is_ros_package(imp.target) and group_of(imp.importer) != "ros"})


# ----------------------------------------------------------------------------------------------
# The package
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE_DIR, PACKAGE)


def test_the_graph_is_read(graph):
    modules, imports = graph
    assert f"{PACKAGE}.pipeline.messages" in modules and f"{PACKAGE}.core.correspondences" in modules
    pairs = {(i.importer, i.target) for i in imports if i.ours}
    # a relative import and an external one (lazy imports: the planted package below)
    assert (f"{PACKAGE}.core.procrustes", f"{PACKAGE}.core.correspondences") in pairs
    assert any(i.importer == f"{PACKAGE}.ros.node" and i.target == "rclpy" for i in imports)


def test_no_import_cycles(graph):
    modules, imports = graph
    cycles = find_cycles(modules, imports)
    new = [c for c in cycles if frozenset(m for m, _ in c) not in KNOWN_CYCLES]
    assert not new, "import cycles:\n" + "\n".join(format_cycle(c) for c in new)


def test_subpackages_import_only_what_they_may(graph):
    _, imports = graph
    bad = layering_violations(imports)
    assert not bad, "imports against the subpackage rules:\n" + "\n".join(bad)


def test_only_the_ros_subpackage_imports_ros(graph):
    _, imports = graph
    bad = ros_violations(imports)
    assert not bad, "ROS imports outside xview_localizer/ros/:\n" + "\n".join(bad)


def test_allowed_table_matches_the_subpackage_docstrings(graph):
    """Each subpackage docstring's "May import:" paragraph names exactly ALLOWED's subpackages
    (``:mod:`..name```); "Nothing else of ours" = none."""
    modules, _ = graph
    subpackages = {m.split(".")[1] for m in modules if m.count(".") == 1 and modules[m].name == "__init__.py"}
    assert subpackages == set(ALLOWED) - {""}, "a subpackage without a rule (or a rule without a subpackage)"
    for sub in sorted(subpackages):
        doc = ast.get_docstring(ast.parse((PACKAGE_DIR / sub / "__init__.py").read_text())) or ""
        m = re.search(r"May import:(.*?)(?:\n\s*\n|$)", doc, re.S)
        assert m, f"{PACKAGE}/{sub}/__init__.py: its docstring has no 'May import:' paragraph"
        named = set(re.findall(r":mod:`\.\.(\w+)`", m.group(1)))
        assert named == set(ALLOWED[sub]), (f"{sub}: docstring allows {sorted(named)}, "
                                            f"test_import_graph.ALLOWED {sorted(ALLOWED[sub])}")


# ----------------------------------------------------------------------------------------------
# The checker itself, on a planted package
# ----------------------------------------------------------------------------------------------
def test_checker_finds_planted_cycles_and_violations(tmp_path):
    pkg = tmp_path / PACKAGE
    for sub in ("core", "pipeline", "sim"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text('"""x"""\n')
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from . import b\n")
    (pkg / "core" / "b.py").write_text("def f():\n    from .a import thing  # lazy, still an edge\n")
    (pkg / "core" / "c.py").write_text("import numpy\nfrom xview_localizer.pipeline.p import Thing\n")
    (pkg / "pipeline" / "p.py").write_text("if True:\n    import sensor_msgs.msg\n")
    (pkg / "sim" / "s.py").write_text("def g():\n    import rclpy\n    from ..core import a\n")
    modules, imports = import_graph(pkg, PACKAGE)
    cycles = find_cycles(modules, imports)
    assert [format_cycle(c) for c in cycles] == [
        f"{PACKAGE}.core.a (line 1) -> {PACKAGE}.core.b (line 2) -> {PACKAGE}.core.a"]
    assert layering_violations(imports) == [
        f"{PACKAGE}.core.c (line 2) imports {PACKAGE}.pipeline.p: core may import nothing of ours"]
    assert ros_violations(imports) == [f"{PACKAGE}.pipeline.p (line 2) imports sensor_msgs",
                                               f"{PACKAGE}.sim.s (line 2) imports rclpy"]
