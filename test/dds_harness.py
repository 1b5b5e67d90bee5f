"""The test side of a DDS test: an rclpy node in its own context and ROS domain, with the
plumbing every node test needs (spin for a while, wait until the node under test is on DDS,
read its /diagnostics statuses, shut down). Subclasses add their publishers and recorders and
say when the node under test is ready (:meth:`DdsHarness.node_ready`).

``diags`` holds ``(time.monotonic(), DiagnosticArray)`` pairs; a subclass subscribes to fill it.
"""

from __future__ import annotations

import subprocess
import time
from typing import Callable, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor

#: Name prefix of the node's diagnostic statuses.
STATUS_PREFIX = "xview_localizer: "


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
