"""The ROS-free core must import in a process where importing rclpy fails."""

import subprocess
import sys
import textwrap

CORE_MODULES = [
    "xview_localizer.core.errors",
    "xview_localizer.core.geo",
    "xview_localizer.core.se2",
    "xview_localizer.core.procrustes",
    "xview_localizer.matcher.base",
    "xview_localizer.core.camera",
    "xview_localizer.tiles.cache",
    "xview_localizer.tiles.server",
    "xview_localizer.tiles.cli",
]


def test_core_imports_without_rclpy():
    code = textwrap.dedent(
        f"""
        import sys

        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name == "rclpy" or name.startswith("rclpy."):
                    raise ImportError("rclpy blocked for this test")
                return None

        sys.meta_path.insert(0, _Block())
        try:
            import rclpy  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("the rclpy blocker did not work")
        import importlib
        for name in {CORE_MODULES!r}:
            importlib.import_module(name)
        assert not any(m == "rclpy" or m.startswith("rclpy.") for m in sys.modules), "rclpy leaked in"
        print("OK")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("OK")
