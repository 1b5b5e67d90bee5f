"""package.xml declares exactly what the code imports: every ROS package and rosdep-installable
Python package imported by the installed code (``xview_localizer/``, ``launch/``) is an
``exec_depend`` and nothing else is; what only the tests import is a ``test_depend``. Imports are
read with ``ast`` (also those inside functions and ``try`` blocks)."""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_XML = REPO / "package.xml"
#: Installed code (setup.py: the package and the launch files).
RUNTIME_DIRS = ("xview_localizer", "launch")
#: Python modules -> their rosdep key (each checked against ros/rosdistro rosdep/python.yaml).
PYTHON_KEYS = {
    "cv2": "python3-opencv",
    "hypothesis": "python3-hypothesis",
    "matplotlib": "python3-matplotlib",
    "mpl_toolkits": "python3-matplotlib",  # ships with matplotlib
    "numpy": "python3-numpy",
    "pyproj": "python3-pyproj",
    "pytest": "python3-pytest",
    "requests": "python3-requests",
    "tqdm": "python3-tqdm",
    "urllib3": "python3-urllib3",
    "yaml": "python3-yaml",
}
#: Installed by pip, not rosdep (package.xml says so in a comment): torch is pinned by the README
#: (rosdep's python3-pytorch-pip is an end-of-life alias to an unpinned torch); rosbags has no key.
PIP_ONLY = {"torch", "rosbags"}
#: ROS packages are imported under their package name (rclpy, *_msgs, *_interfaces, tf2_ros, ...).
ROS_PACKAGE_SUFFIXES = ("_msgs", "_interfaces", "_srvs")
ROS_PACKAGES = {"rclpy", "tf2_ros", "launch", "launch_ros", "ament_index_python", "rosidl_runtime_py",
                "message_filters", "cv_bridge", "image_transport", "rosbag2_py"}


def _imports(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level names of the absolute imports in ``paths`` -> the files importing them."""
    found: dict[str, set[str]] = {}
    for f in paths:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(f.relative_to(REPO)))
    return found


def _keys(imports: dict[str, set[str]], local: set[str]) -> dict[str, set[str]]:
    """rosdep keys the imports need -> the files needing them (stdlib, local and pip-only left out)."""
    keys: dict[str, set[str]] = {}
    unknown = {}
    for name, files in imports.items():
        if name in sys.stdlib_module_names or name in local or name in PIP_ONLY:
            continue
        if name in PYTHON_KEYS:
            key = PYTHON_KEYS[name]
        elif name in ROS_PACKAGES or name.endswith(ROS_PACKAGE_SUFFIXES):
            key = name
        else:
            unknown[name] = sorted(files)
            continue
        keys.setdefault(key, set()).update(files)
    assert not unknown, (f"imports this test cannot map to a rosdep key: {unknown}; declare them in "
                         "package.xml and add them to PYTHON_KEYS, ROS_PACKAGES or PIP_ONLY")
    return keys


def _py_files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (REPO / d).rglob("*.py"))


@pytest.fixture(scope="module")
def package():
    root = ET.parse(PACKAGE_XML).getroot()
    assert root.get("format") == "3"
    deps = {tag: [e.text.strip() for e in root.findall(tag)] for tag in
            ("depend", "exec_depend", "build_depend", "test_depend", "build_export_depend")}
    comments = []
    for el in ET.parse(PACKAGE_XML, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))).iter():
        if el.tag is ET.Comment:
            comments.append(el.text or "")
    return deps, " ".join(comments)


def test_exec_depends_are_exactly_what_the_installed_code_imports(package):
    deps, _ = package
    exec_deps = deps["exec_depend"] + deps["depend"]
    assert len(exec_deps) == len(set(exec_deps)), "a dependency is declared twice"
    needed = _keys(_imports(_py_files(*RUNTIME_DIRS)), local={"xview_localizer"})
    missing = {k: sorted(v)[:3] for k, v in needed.items() if k not in exec_deps}
    assert not missing, f"imported but not an exec_depend of package.xml: {missing}"
    extra = sorted(set(exec_deps) - set(needed))
    assert not extra, f"exec_depend in package.xml but not imported by {RUNTIME_DIRS}: {extra}"
    # what the issue named explicitly
    for key in ("builtin_interfaces", "rcl_interfaces", "ament_index_python", "rclpy", "tf2_ros",
                "launch", "launch_ros"):
        assert key in exec_deps


def test_test_depends_cover_what_only_the_tests_import(package):
    deps, _ = package
    local = {p.stem for p in (REPO / "test").glob("*.py")} | {"xview_localizer"}
    needed = _keys(_imports(_py_files("test")), local=local)
    runtime = set(deps["exec_depend"] + deps["depend"])
    wanted = {k for k in needed if k not in runtime}
    assert set(deps["test_depend"]) == wanted, (sorted(deps["test_depend"]), sorted(wanted))


def test_no_end_of_life_or_unknown_rosdep_keys(package):
    deps, comments = package
    declared = [k for ks in deps.values() for k in ks]
    assert "python3-pytorch-pip" not in declared  # EOL alias; installed an unpinned torch
    python_keys = [k for k in declared if k.startswith("python3-")]
    assert set(python_keys) <= set(PYTHON_KEYS.values()), set(python_keys) - set(PYTHON_KEYS.values())
    # the pip-only dependencies are named in a comment, and torch's pin is the README's
    for name in sorted(PIP_ONLY):
        assert name in comments, f"package.xml does not say how {name} is installed"
    readme = (REPO / "README.md").read_text()
    assert "torch==2.13.0" in comments and "torch==2.13.0" in readme
