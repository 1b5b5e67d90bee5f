"""Everything outside ``xview_localizer/ros/`` runs without ROS (issue 17): in a process where
importing rclpy, any ``rosidl*`` module, builtin_interfaces, rcl_interfaces, tf2_ros or any
``*_msgs`` package raises ImportError, every other module imports, and ``xview-localizer replay``
(``python -m xview_localizer.cli replay``) replays a small simulated bag with the packaged default
matcher and writes its report.

The block is a ``sys.meta_path`` finder put in front of every other finder by ``python -c``
before anything of ours is imported; the child process also checks at its end that none of
those modules got into ``sys.modules`` another way. (The static side of the same rule, over
every import statement, is test/test_import_graph.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Put first in every child: the finder that makes the ROS packages unimportable.
BLOCKER = textwrap.dedent(
    """
    import sys

    _BLOCKED_NAMES = ("rclpy", "builtin_interfaces", "rcl_interfaces", "tf2_ros")


    def _is_ros(name):
        top = name.partition(".")[0]
        return top in _BLOCKED_NAMES or top.startswith("rosidl") or top.endswith("_msgs")


    _attempts = []


    class _BlockRos:
        def find_spec(self, name, path=None, target=None):
            if _is_ros(name):
                _attempts.append(name)
                raise ImportError(f"{name} is blocked in this process (ROS-free check)")
            return None


    sys.meta_path.insert(0, _BlockRos())
    for _name in ("rclpy", "rosidl_runtime_py", "builtin_interfaces.msg", "sensor_msgs.msg", "tf2_msgs.msg"):
        try:
            __import__(_name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the ROS blocker did not block {_name}")
    del _attempts[:]


    def _check_no_ros_loaded():
        leaked = sorted(m for m in sys.modules if _is_ros(m))
        if leaked:
            raise SystemExit(f"ROS modules got imported: {leaked}")
        print("blocked import attempts:", sorted(set(_attempts)), file=sys.stderr)
    """
)


def _run_blocked(code: str, args: list[str] = (), timeout_s: float = 300.0) -> subprocess.CompletedProcess:
    """``python -c BLOCKER + code *args`` with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout_s, cwd=str(REPO), env=env)


def _modules_outside_ros() -> list[str]:
    pkg = REPO / "xview_localizer"
    names = []
    for path in sorted(pkg.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if len(parts) > 1 and parts[1] == "ros":
            continue
        names.append(".".join(parts))
    return names


def test_every_module_outside_ros_imports_without_ros():
    modules = _modules_outside_ros()
    assert "xview_localizer.pipeline.messages" in modules and "xview_localizer.evaluation.replay" in modules
    out = _run_blocked(
        """
        import importlib
        import sys

        for name in sys.argv[1:]:
            importlib.import_module(name)
        # the edge itself does need ROS: the blocker is real
        try:
            importlib.import_module("xview_localizer.ros.conversions")
        except ImportError:
            pass
        else:
            raise SystemExit("xview_localizer.ros.conversions imported without its message packages")
        _check_no_ros_loaded()
        print("OK", len(sys.argv) - 1)
        """,
        modules,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip().endswith(f"OK {len(modules)}"), out.stdout


# ----------------------------------------------------------------------------------------------
# xview-localizer replay with ROS blocked
# ----------------------------------------------------------------------------------------------
DRIVE_SECONDS = 4.0
CAMERA_RATE_HZ = 5.0
N_IMAGES = int(DRIVE_SECONDS * CAMERA_RATE_HZ)
#: The packaged (sparse) matcher's own satellite input; tiles at z18 (~0.39 m/px) need no upsampling.
REPLAY_PARAMS = ["-p", "patch_size_px=256", "-p", "patch_m_per_px=0.4", "-p", "device=cpu",
                 "-p", "matcher_runtime=eager"]


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory) -> Path:
    """A 4 s drive (20 images, 256 x 64, with depth) in a 300 m world, tiles at z18; the bag's
    sim.yaml names the tiles, so the replay needs no --tiles."""
    from xview_localizer.sim.aerial import write_tile_pyramid
    from xview_localizer.sim.bag import BagConfig, record_drive
    from xview_localizer.sim.drive import DriveConfig, GnssConfig, OdomConfig
    from xview_localizer.sim.world import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("rosfree_replay")
    world = generate_world(WorldConfig(seed=3, size_m=300.0))
    world.save(root / "world")
    write_tile_pyramid(world, root / "world" / "tiles", zoom_max=18, zoom_min=18, mbtiles=False, margin_m=64.0)
    drive = DriveConfig(seconds=DRIVE_SECONDS, rate_hz=CAMERA_RATE_HZ, seed=2, stop_probability=0.0,
                        speed_range_m_s=(8.0, 12.0))
    return record_drive(root / "world", root / "drive", drive_config=drive,
                        gnss_config=GnssConfig(rate_hz=CAMERA_RATE_HZ, seed=2, nofix_rate_per_min=0.0,
                                               outlier_probability=0.0),
                        odom_config=OdomConfig(seed=2), bag_config=BagConfig(depth=True), width_px=256,
                        height_px=64, world=world, progress=False)


def test_replay_cli_runs_without_ros(small_bag, tmp_path):
    out_dir = tmp_path / "report"
    out = _run_blocked(
        """
        import runpy
        import sys

        sys.argv = ["xview-localizer", *sys.argv[1:]]
        try:
            runpy.run_module("xview_localizer.cli", run_name="__main__", alter_sys=True)
            rc = 0
        except SystemExit as exc:
            rc = exc.code
        _check_no_ros_loaded()
        sys.exit(rc)
        """,
        ["replay", str(small_bag), "--out", str(out_dir), "--no-progress", *REPLAY_PARAMS],
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "Traceback" not in out.stderr, out.stderr[-4000:]
    assert "blocked import attempts: []" in out.stderr  # nothing even tried a ROS package
    report = json.loads((out_dir / "report.json").read_text())
    meta = report["meta"]
    # every message type was decoded: images, depth, camera_info, fixes, odometry, /tf_static, ground truth
    assert meta["images"]["in_bag"] == meta["images"]["localized"] == report["frames"]["total"] == N_IMAGES
    assert meta["input_problems"] == {}
    assert meta["extrinsics_source"] == "tf_static"
    assert meta["topics"]["odom"] == "/odom" and meta["topics"]["depth"] == "/camera/depth"
    assert meta["depth"]["frames_with_depth"] == N_IMAGES and meta["depth"]["invalid_messages"] == 0
    assert meta["checkpoint"] == "(packaged default)"
    assert report["has_ground_truth"] and report["frames"]["with_ground_truth"] == N_IMAGES
    assert not {"no_camera_info", "camera_info_mismatch", "image_invalid"} & set(report["rejected_by_reason"])
    # the packaged matcher ran on the decoded frames and published poses
    assert report["frames"]["accepted"] > 0 and report["metrics"]["xview"]["n_samples"] > 0
    assert (out_dir / "frames.csv").read_text().count("\n") == N_IMAGES + 1
