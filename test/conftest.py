"""Shared fixtures: a ``device`` fixture (CPU always, CUDA too when present), a per-process
ROS_DOMAIN_ID, and a free loopback port."""

from __future__ import annotations

import os
import socket

import pytest

# Each test process gets its own DDS domain (0..101 are valid for Fast DDS defaults; avoid 0).
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))


def _devices() -> list[str]:
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return devices


@pytest.fixture(params=_devices())
def device(request) -> str:
    """Torch device name; tests using it run once on CPU and once on CUDA when available."""
    return request.param


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
