"""Typed config: unknown parameter names are reported with the nearest known one (ROS-free)."""

from __future__ import annotations

import pytest

from xview_localizer.core.errors import ConfigError
from xview_localizer.pipeline.config import describe_unknown_parameters, node_config_from_flat


def test_unknown_names_get_the_nearest_known_one():
    assert describe_unknown_parameters(["min_weigth", "zzz_qqq"]) == "min_weigth (did you mean min_weight?), zzz_qqq"
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\): patch_sise_px \(did you mean patch_size_px\?\)"):
        node_config_from_flat({"patch_sise_px": 256})


def test_replay_param_with_an_unknown_name_fails_with_the_nearest_name(tmp_path, capsys):
    from xview_localizer.cli import main

    params = tmp_path / "params.yaml"
    params.write_text("xview_localizer:\n  ros__parameters:\n    max_jump: 3.0\n")
    rc = main(["replay", str(tmp_path / "bag"), "--out", str(tmp_path / "r"), "-p", "min_weigth=0.3"])
    err = capsys.readouterr().err
    assert rc == 1 and "min_weigth (did you mean min_weight?)" in err, err
    rc = main(["replay", str(tmp_path / "bag"), "--out", str(tmp_path / "r"), "--params-file", str(params)])
    err = capsys.readouterr().err
    assert rc == 1 and "max_jump (did you mean max_jump_m?)" in err, err
    assert not (tmp_path / "r").exists()
