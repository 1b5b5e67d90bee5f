"""A faster inference runtime behind the same API (issue 15, requirement 3): torch.compile of
the ground encoders gives the eager outputs, and a compiler failure falls back to eager with
one warning. Real (tiny, seeded) torch models."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
from tiny_models import tiny_sparse

from xview_localizer.core.camera import PinholeCamera, T_base_camera_from_xyz_rpy
from xview_localizer.core.errors import ConfigError
from xview_localizer.matcher.factory import apply_runtime
from xview_localizer.matcher.inference import SparseMatcher, _CompiledOrEager
from xview_localizer.tiles.patch import PatchGeoref

CAMERA = PinholeCamera.from_intrinsics(128, 64, 70.0, 70.0, 63.5, 31.5)
T_BASE_CAMERA = T_base_camera_from_xyz_rpy(1.0, 0.0, 1.6, 0.0, 0.05, 0.0)


def _matcher() -> SparseMatcher:
    return tiny_sparse()


def _inputs():
    rng = np.random.default_rng(4)
    return (rng.integers(0, 256, (64, 128, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
            PatchGeoref(48.1, 11.5, 0.8, 64, 64))


def _match(m):
    g, s, geo = _inputs()
    return m.match(g, CAMERA, T_BASE_CAMERA, s, geo, 0.2, depth_kind="none")


def test_compiled_ground_encoder_gives_the_eager_outputs():
    eager = _match(_matcher())
    m = _matcher()
    assert apply_runtime(m, "compile") == "compile" and m.runtime == "compile"
    assert isinstance(m.model.ground_encoder, _CompiledOrEager)
    out = _match(m)
    if shutil.which("g++") or shutil.which("c++"):
        assert m.runtime_fallback == ""  # it really compiled
    else:  # no C++ compiler (a bare machine): inductor fails and the encoder runs eagerly
        assert m.runtime_fallback
    np.testing.assert_allclose(out.src_xy_m, eager.src_xy_m, atol=1e-4)
    np.testing.assert_allclose(out.dst_xy_m, eager.dst_xy_m, atol=1e-3)
    np.testing.assert_allclose(out.weight, eager.weight, atol=1e-4)
    m.use_runtime("eager")  # and back
    assert not isinstance(m.model.ground_encoder, _CompiledOrEager)
    np.testing.assert_allclose(_match(m).dst_xy_m, eager.dst_xy_m, atol=1e-5)


def test_a_compiler_failure_falls_back_to_eager_once(caplog):
    eager = _match(_matcher())
    m = _matcher()
    m.use_runtime("compile")

    def broken(x):
        raise RuntimeError("InductorError: no working C++ compiler found")

    m.model.ground_encoder.compiled = broken
    with caplog.at_level(logging.WARNING, logger="xview_localizer.matcher.inference"):
        first = _match(m)
        second = _match(m)
    assert "no working C++ compiler" in m.runtime_fallback
    assert sum("torch.compile of the ground encoder failed" in r.getMessage() for r in caplog.records) == 1
    for out in (first, second):
        np.testing.assert_allclose(out.dst_xy_m, eager.dst_xy_m, atol=1e-5)


def test_unknown_runtime_is_a_config_error():
    with pytest.raises(ConfigError, match="runtime must be one of"):
        _matcher().use_runtime("tensorrt")
    assert apply_runtime(object(), "compile") == ""  # custom matchers are left alone


def test_bf16_runtime_autocasts_the_network_on_cpu():
    """'bf16' is the opt-in runtime that changes outputs (slightly): the network runs under
    bfloat16 autocast, and back on 'eager' it gives the eager outputs again."""
    eager = _match(_matcher())
    m = _matcher()
    m.use_runtime("bf16")
    with m._autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
    out = _match(m)
    assert len(out) == len(eager) and np.all(np.isfinite(out.dst_xy_m))
    m.use_runtime("eager")
    with m._autocast():
        assert not torch.is_autocast_enabled("cpu")
    np.testing.assert_allclose(_match(m).dst_xy_m, eager.dst_xy_m, atol=1e-5)
