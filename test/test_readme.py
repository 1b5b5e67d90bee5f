"""README's "Python API (no ROS)" snippet runs as written (tile URL and data swapped for a tiny
synthetic input): the packaged matcher is loaded, a fix and a frame go in, a step result comes out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from localizer_doubles import write_tile_folder

README = Path(__file__).resolve().parents[1] / "README.md"
LAT, LON = 52.5, 13.4


def _python_api_snippet() -> str:
    text = README.read_text()
    section = text.split("## Python API (no ROS)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section holds one python block"
    return blocks[0]


def test_readme_python_api_snippet_runs(tmp_path, monkeypatch, capsys):
    from xview_localizer.pipeline.localizer import REASONS, StepResult

    code = _python_api_snippet()
    assert len(code.strip().splitlines()) <= 14
    url = "file:///data/tiles/{z}/{x}/{y}.png"
    assert url in code
    write_tile_folder(tmp_path / "tiles", LAT, LON, zoom=19, radius_tiles=3)
    monkeypatch.setenv("XVIEW_TILE_CACHE", str(tmp_path / "cache"))
    code = code.replace(url, f"file://{tmp_path}/tiles/{{z}}/{{x}}/{{y}}.png")
    rng = np.random.default_rng(0)
    namespace = {"stamp_ns": 1_000_000_000, "lat_deg": LAT, "lon_deg": LON,
                 "image_rgb": rng.integers(0, 256, size=(375, 1242, 3), dtype=np.uint8)}
    exec(compile(code, str(README), "exec"), namespace)
    result = namespace["result"]
    assert isinstance(result, StepResult)
    assert "matcher" in result.timings_s, (result.reason, result.detail)  # it went through the matcher
    assert result.estimate is not None or result.reason in REASONS
    out = capsys.readouterr().out
    assert out.startswith("rejected: ") or "SE2" in out or "[" in out
