"""The test side of a DDS test: an rclpy node in its own context and ROS domain, with the
plumbing every node test needs (spin for a while, wait until the node under test is on DDS,
read its /diagnostics statuses, shut down). Subclasses add their publishers and recorders and
say when the node under test is ready (:meth:`DdsHarness.node_ready`).

``diags`` holds ``(time.monotonic(), DiagnosticArray)`` pairs; a subclass subscribes to fill it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor

#: Name prefix of the node's diagnostic statuses.
STATUS_PREFIX = "xview_localizer: "
TEST_DIR = Path(__file__).resolve().parent
PARAMS_FILE = TEST_DIR.parent / "config" / "localizer.yaml"


def node_command() -> list[str]:
    """The ``localizer_node`` console script of this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "localizer_node"
    return [str(script)] if script.exists() else [sys.executable, "-m", "xview_localizer.ros.node"]


def start_node(domain_id: int, params: dict, remaps: Optional[dict] = None,
               params_file: Path = PARAMS_FILE) -> subprocess.Popen:
    """``localizer_node --ros-args --params-file params_file -p k:=v ... -r a:=b ...`` in its own
    ROS domain, test/ on PYTHONPATH (for the test doubles), stdout+stderr piped as text."""
    cmd = node_command() + ["--ros-args", "--params-file", str(params_file)]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    for k, v in (remaps or {}).items():
        cmd += ["-r", f"{k}:={v}"]
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain_id), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(TEST_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_node(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout_s: float = 15.0) -> tuple[int, str]:
    """Send ``sig`` (unless it has exited) and wait: (exit status, output). A hang fails."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:  # pragma: no cover - a hang is a failure, but clean up
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"node did not stop on {signal.Signals(sig).name}:\n{out}") from None
    return proc.returncode, out


class DdsHarness:
    node_name = "xview_test_harness"
    #: longest single ``spin_once`` wait of :meth:`spin_for` (s)
    spin_step_s = 0.02

    def __init__(self, domain_id: int) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(self.node_name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.diags: list[tuple[float, DiagnosticArray]] = []

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(self.spin_step_s, max(end - time.monotonic(), 0.0)))

    def node_ready(self) -> bool:
        """Whether the node under test is on DDS (subclasses: its subscriptions / publishers)."""
        raise NotImplementedError

    def wait_for_node(self, proc: subprocess.Popen, timeout_s: float = 30.0,
                      ready: Optional[Callable[[], bool]] = None) -> None:
        """Spin until ``ready()`` (default :meth:`node_ready`); fail if ``proc`` exits first."""
        ready = ready or self.node_ready
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise AssertionError(f"node exited early:\n{proc.communicate()[0]}")
            if ready():
                self.spin_for(0.3)
                return
            self.spin_for(0.1)
        raise AssertionError("node did not appear on DDS")

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()

    def statuses(self, since_s: float, key: str) -> list[DiagnosticStatus]:
        """Statuses named ``xview_localizer: <key>`` received at or after ``since_s`` (monotonic)."""
        return [s for t, arr in self.diags if t >= since_s for s in arr.status if s.name == STATUS_PREFIX + key]
