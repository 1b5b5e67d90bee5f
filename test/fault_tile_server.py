"""TEST-ONLY: tile HTTP servers on 127.0.0.1 that can be told to fail in each way a real tile
source does (the runtime package's ``tiles.server.TileServer`` stays a plain server).

:class:`FaultInjectingTileServer` is the runtime ``TileServer`` (a folder or MBTiles file) with
faults added per request path: :meth:`~FaultInjectingTileServer.add_fault` applies a fault to
requests whose path matches a glob, a number of times or forever:

* ``status``: HTTP ``status`` (any), with ``Retry-After: retry_after`` when given;
* ``delay``: sleep ``delay_s`` before answering (beyond a read timeout);
* ``truncate``: 200 with the first ``keep_fraction`` of the body, Content-Length matching;
* ``cut``: 200 announcing the whole body, the first ``keep_fraction`` of it, then the
  connection closes (the response breaks off mid-body).

    server = serve_directory_with_faults(Path("tiles"))
    server.add_fault("status", "/19/*", times=2, status=500)         # 500 twice, then OK

:class:`FaultTileServer` is a standalone server whose tiles are made up and whose
:attr:`FaultTileServer.mode` switches what every request gets (the node's fault matrix). Every ``/{z}/{x}/{y}.png`` exists: a seeded random-texture PNG per tile, made on first request.
:attr:`FaultTileServer.mode` switches what every request gets:

* ``"ok"``: the tile;
* ``"status"``: HTTP :attr:`status` (500, 404, ...);
* ``"truncate"``: 200 with the first 30 % of the PNG (Content-Length matching);
* ``"garbage"``: 200 with random bytes and ``Content-Type: image/png``;
* ``"hang"``: accept the request, answer only after :attr:`hang_s` (a read timeout);
* ``"slow"``: the tile after :attr:`slow_s` (slow, not failing);
* ``"refused"``: nothing listens on the port (connection refused) until the mode changes.

HTTP/1.0 (one connection per request), so a mode change applies to the next request at once.
"""

from __future__ import annotations

import fnmatch
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from xview_localizer.tiles.server import TileServer

MODES = ("ok", "status", "truncate", "garbage", "hang", "slow", "refused")
FAULT_KINDS = ("status", "delay", "truncate", "cut")


# -- the runtime TileServer with per-path faults -----------------------------------------------
@dataclass
class Fault:
    """One injected fault; ``times`` None = forever."""

    kind: str
    path_glob: str = "*"
    times: Optional[int] = 1
    status: int = 500
    retry_after: Optional[str] = None
    delay_s: float = 0.0
    keep_fraction: float = 0.5


class _FaultHandler(TileServer.handler_class):
    """The runtime handler; a request whose path has a fault gets the fault instead."""

    _fault: Optional[Fault] = None

    def _serve(self, owner: "FaultInjectingTileServer", path: str) -> None:
        self._fault = fault = owner.take_fault(path)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay_s)
        elif fault is not None and fault.kind == "status":
            hdr = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._send(fault.status, f"injected HTTP {fault.status}".encode(), hdr)
            return
        super()._serve(owner, path)

    def _send(self, code: int, body: bytes = b"", headers: Optional[dict] = None) -> None:
        fault = self._fault
        if code != 200 or fault is None or fault.kind not in ("truncate", "cut"):
            super()._send(code, body, headers)
            return
        kept = body[: max(1, int(len(body) * fault.keep_fraction))]
        if fault.kind == "truncate":
            super()._send(code, kept, headers)
            return
        self.send_response(code)  # "cut": the whole length announced, part of the body sent
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(kept)
        self.close_connection = True


class FaultInjectingTileServer(TileServer):
    """:class:`TileServer` plus :meth:`add_fault` (see the module docstring)."""

    handler_class = _FaultHandler

    def __init__(self, *args, **kwargs) -> None:
        self._faults: list[Fault] = []
        super().__init__(*args, **kwargs)

    def add_fault(self, kind: str, path_glob: str = "*", times: Optional[int] = 1, **params) -> Fault:
        """Inject a fault (``kind`` in :data:`FAULT_KINDS`) for matching request paths."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = Fault(kind, path_glob, times, **params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, path: str) -> Optional[Fault]:
        """The first fault left for ``path`` (counted down), or None."""
        with self._lock:
            for f in self._faults:
                if fnmatch.fnmatchcase(path, f.path_glob) and (f.times is None or f.times > 0):
                    if f.times is not None:
                        f.times -= 1
                    return f
        return None


def serve_directory_with_faults(root: Path, port: int = 0, latency_s: float = 0.0) -> FaultInjectingTileServer:
    """Start serving ``root/{z}/{x}/{y}.<ext>`` on 127.0.0.1, faults injectable."""
    return FaultInjectingTileServer(root=root, port=port, latency_s=latency_s).start()


# -- a standalone server switched between failure modes ----------------------------------------


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: _Httpd

    def log_message(self, format, *args) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, code: int, body: bytes, content_type: str = "image/png") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        owner: FaultTileServer = self.server.owner  # type: ignore[attr-defined]
        owner._count(self.path)
        mode = owner.mode
        if mode == "hang":
            time.sleep(owner.hang_s)
            mode = owner.mode if owner.mode not in ("hang", "refused") else "status"
        if mode == "slow":
            time.sleep(owner.slow_s)
        if mode == "status":
            self._send(owner.status, f"injected HTTP {owner.status}".encode(), "text/plain")
            return
        if mode == "garbage":
            self._send(200, owner.rng_bytes(2000))
            return
        tile = owner.tile_png(self.path)
        if tile is None:
            self._send(404, b"no such tile", "text/plain")
            return
        self._send(200, tile[: max(1, int(0.3 * len(tile)))] if mode == "truncate" else tile)


class FaultTileServer:
    """See the module docstring. ``port=0`` binds a free port (kept across ``refused``)."""

    def __init__(self, port: int = 0, seed: int = 0) -> None:
        self.mode = "ok"
        self.status = 500
        self.hang_s = 5.0
        self.slow_s = 0.7
        self.requests = 0
        self._seed = seed
        self._tiles: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(seed)
        self._httpd: Optional[_Httpd] = None
        self._thread: Optional[threading.Thread] = None
        self.port = port
        self._listen()

    # -- control -----------------------------------------------------------------------
    @property
    def url_template(self) -> str:
        return f"http://127.0.0.1:{self.port}/{{z}}/{{x}}/{{y}}.png"

    def set_mode(self, mode: str, **kw) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        for k, v in kw.items():
            setattr(self, k, v)
        if mode == "refused" and self._httpd is not None:
            self._close()
        self.mode = mode
        if mode != "refused" and self._httpd is None:
            self._listen()

    def shutdown(self) -> None:
        if self._httpd is not None:
            self._close()

    # -- internals ---------------------------------------------------------------------
    def _listen(self) -> None:
        for _ in range(50):  # the old socket may linger for a moment
            try:
                httpd = _Httpd(("127.0.0.1", self.port), _Handler)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise OSError(f"cannot bind 127.0.0.1:{self.port} again")
        httpd.owner = self  # type: ignore[attr-defined]
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True,
                                        name=f"fault-tiles-{self.port}")
        self._thread.start()

    def _close(self) -> None:
        httpd, self._httpd = self._httpd, None
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # make sure nothing accepts any more (connection refused at once)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            assert s.connect_ex(("127.0.0.1", self.port)) != 0, "port still accepts"

    def _count(self, path: str) -> None:
        with self._lock:
            self.requests += 1

    def rng_bytes(self, n: int) -> bytes:
        with self._lock:
            return self._rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    def tile_png(self, path: str) -> Optional[bytes]:
        parts = path.split("?")[0].strip("/").split("/")
        try:
            z, x, y = int(parts[0]), int(parts[1]), int(parts[2].split(".")[0])
        except (ValueError, IndexError):
            return None
        key = f"{z}/{x}/{y}"
        with self._lock:
            png = self._tiles.get(key)
        if png is None:
            rng = np.random.default_rng([self._seed, z, x, y])
            small = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            tile = cv2.resize(small, (256, 256), interpolation=cv2.INTER_LINEAR)
            png = cv2.imencode(".png", tile)[1].tobytes()
            with self._lock:
                self._tiles[key] = png
        return png
