"""``xview-localizer tiles patch | prefetch | info`` through the real entry point, against a
real tile server on 127.0.0.1 and a real rosbag2 file."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from xview_localizer.cli import main
from xview_localizer.tiles.cache import TileCache, TileCacheConfig, tiles_along
from xview_localizer.tiles.patch import PatchGeoref
from xview_localizer.tiles.server import serve_directory
from xview_localizer.tiles.synthetic import MarkerWorld, write_pyramid

WORLD = MarkerWorld(49.01, 8.42)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    root = tmp_path_factory.mktemp("pyr")
    write_pyramid(WORLD, root, [19], radius_m=90.0)
    return root


@pytest.fixture
def server(pyramid):
    s = serve_directory(pyramid, port=0)
    yield s
    s.shutdown()


def test_patch_writes_png_and_georef(server, tmp_path, capsys):
    out = tmp_path / "out" / "patch.png"
    argv = ["tiles", "patch", "--url", server.url_template(), "--cache-dir", str(tmp_path / "c"),
            "--lat", "49.0101", "--lon", "8.4202", "--size-px", "128", "--m-per-px", "0.25", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert "zoom 19" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    georef = PatchGeoref.from_dict(meta)
    assert (georef.width_px, georef.m_per_px, meta["zoom"]) == (128, 0.25, 19)
    img = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    with TileCache(server.url_template(), tmp_path / "c", TileCacheConfig(offline=True)) as c:
        rgb, g = c.patch(49.0101, 8.4202, 128, 0.25)
    np.testing.assert_array_equal(img, rgb)
    assert g == georef


def test_prefetch_point_then_offline_patch_and_info(server, tmp_path, capsys):
    cache = ["--cache-dir", str(tmp_path / "c")]
    argv = ["tiles", "prefetch", "--url", server.url_template(), *cache,
            "--lat", "49.01", "--lon", "8.42", "--radius-m", "60", "--zoom", "19"]  # fmt: skip
    assert main(argv) == 0
    assert "0 failed" in capsys.readouterr().out
    n_req = len(server.requests)
    argv = ["tiles", "patch", "--url", server.url_template(), *cache, "--offline",
            "--lat", "49.01", "--lon", "8.42", "--size-px", "200", "--m-per-px", "0.2",
            "--out", str(tmp_path / "p.png")]  # fmt: skip
    assert main(argv) == 0 and len(server.requests) == n_req
    capsys.readouterr()
    assert main(["tiles", "info", *cache, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    (src,) = info["sources"].values()
    assert src["tiles"] == info["tiles"] == n_req >= 4
    assert src["hit_rate"] == pytest.approx(1.0)  # the offline patch hit only the cache
    assert main(["tiles", "info", *cache]) == 0
    assert "hit rate 100.0 %" in capsys.readouterr().out


def _write_fix_bag(path, fixes, topic="/gnss/fix"):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    NavSatFix = ts.types["sensor_msgs/msg/NavSatFix"]
    NavSatStatus = ts.types["sensor_msgs/msg/NavSatStatus"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    with Writer(path, version=9) as w:
        conn = w.add_connection(topic, "sensor_msgs/msg/NavSatFix", typestore=ts)
        for i, (lat, lon, status) in enumerate(fixes):
            msg = NavSatFix(
                header=Header(stamp=Time(sec=100 + i, nanosec=0), frame_id="gnss"),
                status=NavSatStatus(status=status, service=1),
                latitude=lat, longitude=lon, altitude=120.0,
                position_covariance=np.zeros(9), position_covariance_type=0,
            )  # fmt: skip
            w.write(conn, (100 + i) * 10**9, ts.serialize_cdr(msg, "sensor_msgs/msg/NavSatFix"))


def test_prefetch_along_bag_track(server, tmp_path, capsys):
    track = [(49.01 + 1e-5 * i, 8.42 + 2e-5 * i, 0) for i in range(20)]
    bag = tmp_path / "drive"
    _write_fix_bag(bag, track + [(10.0, 10.0, -1)])  # a no-fix message far away is ignored
    argv = ["tiles", "prefetch", "--url", server.url_template(), "--cache-dir", str(tmp_path / "c"),
            "--bag", str(bag), "--radius-m", "20", "--zoom", "19"]  # fmt: skip
    assert main(argv) == 0
    expected = tiles_along([(lat, lon) for lat, lon, _ in track], 20.0, 19)
    assert f"{len(expected)} tiles" in capsys.readouterr().out
    assert {r.path for r in server.requests} == {f"/{z}/{x}/{y}.png" for z, x, y in expected}
    # a wrong topic names what the bag has
    argv[argv.index("--bag") + 2 : argv.index("--bag") + 2] = ["--fix-topic", "/nope"]
    assert main(argv) == 1
    assert "/gnss/fix (sensor_msgs/msg/NavSatFix)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--lat", "49.01", "--radius-m", "10", "--zoom", "19"], 2, "--lat and --lon go together"),
        (["--lat", "49.01", "--lon", "8.42", "--radius-m", "-5", "--zoom", "19"], 2, "--radius-m"),
        (["--lat", "49.01", "--lon", "8.42", "--radius-m", "5", "--zoom", "40"], 2, "--zoom"),
        (["--lat", "95", "--lon", "8.42", "--radius-m", "5", "--zoom", "19"], 2, "--lat"),
    ],
)
def test_prefetch_bad_arguments(server, tmp_path, capsys, extra, code, message):
    argv = ["tiles", "prefetch", "--url", server.url_template(), "--cache-dir", str(tmp_path), *extra]
    assert main(argv) == code
    assert message in capsys.readouterr().err


def test_cli_errors_exit_nonzero(server, tmp_path, capsys):
    base = ["tiles", "patch", "--cache-dir", str(tmp_path / "c"), "--lat", "49.01", "--lon", "8.42",
            "--m-per-px", "0.2", "--out", str(tmp_path / "p.png")]  # fmt: skip
    with pytest.raises(SystemExit) as ei:  # argparse: missing --url / --size-px
        main(base)
    assert ei.value.code == 2
    assert main([*base, "--url", server.url_template(), "--size-px", "0"]) == 2
    assert "--size-px" in capsys.readouterr().err
    assert main([*base, "--url", "ftp://example.org/{z}/{x}/{y}.png", "--size-px", "64"]) == 1
    assert "unsupported scheme" in capsys.readouterr().err
    assert main([*base, "--url", server.url_template(), "--size-px", "64", "--offline"]) == 1
    err = capsys.readouterr().err
    assert "offline mode" in err and "19/" in err
    assert main([*base, "--url", server.url_template(), "--size-px", "64", "--header", "nocolon"]) == 2
    server.shutdown()
    argv = ["tiles", "prefetch", "--url", server.url_template(), "--cache-dir", str(tmp_path / "c"),
            "--lat", "49.01", "--lon", "8.42", "--radius-m", "10", "--zoom", "19", "--timeout-s", "0.5", "--retries", "0"]  # fmt: skip
    assert main(argv) == 1
    assert "failed 19/" in capsys.readouterr().err
