"""The report page in a real headless Chromium: the summary table comes first and every image
on the page loads and decodes.

Chromium comes from Debian (``make setup`` installs it when it is missing and apt-get exists).
Without it this test FAILS, unless ``XVIEW_SKIP_BROWSER_TEST=1`` is set (then it skips).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import report_fixtures as rf
from report_fixtures import image_sources

from xview_localizer.evaluation.report import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: Appended to a copy of index.html (same folder, so relative image paths resolve): after the
#: load event, writes every image's state into the DOM that --dump-dom prints: its natural
#: size and how many pixels of its LAST row are opaque once drawn on a canvas (a truncated
#: file keeps its header's size but leaves the undecoded rows transparent; the report's PNGs
#: are opaque). Reading a canvas back needs --allow-file-access-from-files for file:// pages.
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var out = [];
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    var r = {src: im.getAttribute('src'), complete: im.complete, w: im.naturalWidth, h: im.naturalHeight,
             last_row_opaque: -1};
    if (im.naturalWidth > 0) {
      try {
        var c = document.createElement('canvas');
        c.width = im.naturalWidth; c.height = im.naturalHeight;
        var g = c.getContext('2d');
        g.drawImage(im, 0, 0);
        var d = g.getImageData(0, c.height - 1, c.width, 1).data, n = 0;
        for (var k = 3; k < d.length; k += 4) { if (d[k] === 255) { n++; } }
        r.last_row_opaque = n;
      } catch (e) { r.error = String(e); }
    }
    out.push(r);
  }
  var pre = document.createElement('pre');
  pre.id = 'xview-img-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("XVIEW_SKIP_BROWSER_TEST") == "1":
        pytest.skip("no chromium and XVIEW_SKIP_BROWSER_TEST=1")
    pytest.fail("chromium is not installed: run `make setup` (installs Debian's chromium) or "
                "`apt-get install -y --no-install-recommends chromium`; set XVIEW_SKIP_BROWSER_TEST=1 to skip")


def _run(browser: str, profile: Path, *args: str) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={profile}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env={**os.environ, "HOME": str(profile)})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(autouse=True)
def _tile_cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("XVIEW_TILE_CACHE", str(tmp_path / "tile_cache"))


def test_report_page_loads_in_headless_chromium(tmp_path):
    browser = _browser()
    data, _ = rf.synthetic_eval(tmp_path)
    out = tmp_path / "report"
    report = write_report(data, out)
    page = (out / "index.html").read_text()

    # every <img> names an existing, decodable, non-empty image file
    srcs = image_sources(page)
    assert len(srcs) == len(report["plots"]) + len(report["panels"]) >= 10
    for src in srcs:
        f = out / src
        assert f.is_file() and f.stat().st_size > 0, src
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        assert img is not None and min(img.shape[:2]) > 100, src

    profile = tmp_path / "chromium-profile"
    dom = _run(browser, profile, "--virtual-time-budget=10000", "--dump-dom", (out / "index.html").as_uri())
    tables = re.findall(r"<table[^>]*>", dom)
    assert tables and "summary" in tables[0], tables[:2]  # the summary table is the page's first table
    assert dom.index('id="summary"') < dom.index("trajectory.png") < dom.index("panels/")
    assert "median position error (m)" in dom and "GNSS-only" in dom

    # the browser's view of the images: loaded, with their files' size, decoded to the last row
    check = out / "_browser_check.html"
    check.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = _run(browser, profile, "--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
               check.as_uri())
    m = re.search(r'<pre id="xview-img-check">(.*?)</pre>', dom, re.S)
    assert m, "the check script did not run"
    states = json.loads(html.unescape(m.group(1)))
    assert [s["src"] for s in states] == srcs
    for s in states:
        f = cv2.imread(str(out / s["src"]))
        assert s["complete"] and (s["w"], s["h"]) == (f.shape[1], f.shape[0]), s
        assert s["last_row_opaque"] == s["w"], s

    # and it renders: a screenshot that is not blank
    shot = tmp_path / "page.png"
    _run(browser, profile, f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars",
         (out / "index.html").as_uri())
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2400, 1280)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50
